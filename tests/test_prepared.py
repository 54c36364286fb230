"""The PostgreSQL store's prepared statements (`sgcache.store.prepared`):
a read sent as EXECUTE must answer exactly what its text would."""

from __future__ import annotations

import datetime
from typing import Any

import psycopg2
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sgcache.store import open_store
from sgcache.store.pgadapter import to_pyformat
from sgcache.store.prepared import SessionStatements, literal_type, statement_key, to_numbered
from sgcache.testing.pg import fresh_postgres_url

#: values of every Python type the planner sends, and a few edges
VALUES = [
    None, "text", "", 0, -5, 2**31 - 1, 2**31, -(2**31), 2**40, 2**63, 1.5, -1.5, 1e-7, 1e300,
    float("inf"), float("-inf"), float("nan"), True, False,
    datetime.datetime(2026, 1, 2, 3, 4, 5), datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc),
    datetime.date(2026, 1, 2),
    [1, 2], [3], [1, 2**31], [2**63, 1], [-(2**31)], ["a", "b"], [""], ["it's", "%_\\"],
]


class StatementTextTests(unittest.TestCase):
    def test_numbered_placeholders(self) -> None:
        self.assertEqual(to_numbered("a = ? AND b LIKE 'x%?' AND \"c?\" = ?"),
                         "a = $1 AND b LIKE 'x%%?' AND \"c?\" = $2")

    def test_types_not_sent_as_literals_are_not_prepared(self) -> None:
        for value in ([], [True], [1, "2"], [1.5], [None], ["a", None], [[1]], b"x", {"a": 1}, object()):
            self.assertIsNone(literal_type(value), value)
            self.assertIsNone(statement_key("SELECT ?", [1, value]))

    def test_same_text_other_types_is_another_statement(self) -> None:
        self.assertNotEqual(statement_key("SELECT ?", [1]), statement_key("SELECT ?", [1.0]))
        self.assertEqual(statement_key("SELECT ?", [1]), statement_key("SELECT ?", [2]))

    def test_prepare_once_then_execute(self) -> None:
        st = SessionStatements()
        st.bind("session")
        key = statement_key("SELECT ? WHERE ? > 1", ["a", 2])
        text, preparing = st.query(key)
        self.assertTrue(preparing)
        self.assertRegex(text, r"^PREPARE (sgq_\w+) \(unknown, integer\) AS SELECT \$1 WHERE \$2 > 1; "
                               r"EXECUTE \1 \(%s, %s\)$")
        name = text.split()[1]
        self.assertEqual(st.query(key), (f"EXECUTE {name} (%s, %s)", False))
        self.assertEqual(len(st), 1)

    def test_a_new_session_starts_empty(self) -> None:
        st = SessionStatements()
        st.bind("one")
        key = statement_key("SELECT 1", [])
        st.query(key)
        st.bind("one")
        self.assertFalse(st.query(key)[1])
        st.bind("two")
        self.assertTrue(st.query(key)[1])

    def test_full_cache_drops_everything(self) -> None:
        st = SessionStatements(capacity=2)
        st.bind("s")
        for i in range(2):
            self.assertFalse(st.query(statement_key(f"SELECT {i}", []))[0].startswith("DEALLOCATE"))
        text, _ = st.query(statement_key("SELECT 9", []))
        self.assertTrue(text.startswith("DEALLOCATE ALL; PREPARE "), text)
        self.assertEqual(len(st), 1)

    def test_failures(self) -> None:
        st = SessionStatements()
        st.bind("s")
        key = statement_key("SELECT ?", [1])
        st.query(key)
        st.failed(key, preparing=True)
        self.assertIsNone(st.query(key), "a statement that cannot be prepared runs as text")
        other = statement_key("SELECT ? + 1", [1])
        st.query(other)
        self.assertFalse(st.query(other)[1])
        st.failed(other, preparing=False)
        self.assertTrue(st.query(other)[1], "an EXECUTE that failed is prepared anew")


class PreparedReadTests(unittest.TestCase):
    async def setUp(self) -> None:
        self.url = await fresh_postgres_url(self)
        conn = psycopg2.connect(self.url)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, x DOUBLE PRECISION, "
                        "s TEXT, d DATE, ts TIMESTAMP)")
            cur.execute("INSERT INTO t SELECT i, i, i / 2.0, 'v' || i, DATE '2026-01-01' + i, "
                        "TIMESTAMP '2026-01-01' + i * INTERVAL '1 hour' FROM generate_series(1, 9) i")
        conn.close()
        self.store = open_store(self.url, reactor)
        await self.store.open()
        self.addCleanup(self.store.close)

    def as_text(self, sql: str, params: list) -> list[tuple]:
        """The answer of the query sent as text, as it was before statements."""
        conn = psycopg2.connect(self.url)
        try:
            with conn.cursor() as cur:
                cur.execute(to_pyformat(sql), params)
                return cur.fetchall()
        finally:
            conn.close()

    def connections(self) -> list[Any]:
        return list(self.store._pool.every)

    async def test_literal_types_are_what_postgresql_infers(self) -> None:
        for value in VALUES:
            [(inferred, declared)] = self.as_text("SELECT pg_typeof(?)::text, ?::regtype::text",
                                                  [value, literal_type(value)])
            self.assertEqual(inferred, declared, value)

    async def test_answers_equal_the_texts(self) -> None:
        queries = [
            ("SELECT id FROM t WHERE n > ? ORDER BY id", [1.5]),   # 2, not 1.5 rounded to 2
            ("SELECT id FROM t WHERE n > ? ORDER BY id", [7]),
            ("SELECT id FROM t WHERE x = ? ORDER BY id", [1]),
            ("SELECT id FROM t WHERE x >= ? ORDER BY id", [float("inf")]),
            ("SELECT id FROM t WHERE lower(s) LIKE ? ORDER BY id", ["v1%"]),
            ("SELECT id FROM t WHERE d > ? ORDER BY id", ["2026-01-07"]),
            ("SELECT id FROM t WHERE d > ? ORDER BY id", [datetime.date(2026, 1, 7)]),
            ("SELECT id FROM t WHERE ts < ? ORDER BY id", [datetime.datetime(2026, 1, 1, 4)]),
            ("SELECT id FROM t WHERE ts < ? ORDER BY id", ["2026-01-01 04:00"]),
            ("SELECT id, ? FROM t WHERE s = ? OR ? ORDER BY id", [None, "v3", False]),
            ("SELECT id FROM t WHERE id = ANY(?::BIGINT[]) ORDER BY id", ["{2,5}"]),
            ("SELECT id FROM t WHERE id = ANY(?) ORDER BY id", [[2, 5, 2**40]]),
            ("SELECT id FROM t WHERE n = ANY(?) ORDER BY id", [[1, 3]]),
            ("SELECT ?", [[1, 2**31]]),
            ("SELECT id FROM t WHERE s = ANY(?) ORDER BY id", [["v2", "v7", "it's"]]),
            ("SELECT ?", [["a", "b"]]),
            ("SELECT count(*), '50%' FROM t WHERE s <> '?'", []),
            ("SELECT ?", ["untyped"]),
        ]
        for _ in range(3):  # prepared, then executed, then executed again
            for sql, params in queries:
                self.assertEqual(await self.store.fetch(sql, params), self.as_text(sql, params), (sql, params))

    async def test_statements_are_reused(self) -> None:
        sql = "SELECT id FROM t WHERE n = ?"
        for i in range(1, 10):
            self.assertEqual(await self.store.fetch(sql, [i]), [(i,)])
        prepared = 0
        for conn in self.connections():
            rows = await conn.runQuery("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                                       ["%WHERE n = $1;%"])
            prepared += rows[0][0]
            self.assertLessEqual(rows[0][0], 1)
        self.assertGreaterEqual(prepared, 1)

    async def test_what_cannot_be_prepared_still_answers(self) -> None:
        sql = "SELECT ? IS NULL, ? IS NULL"  # the server cannot type these
        for _ in range(2):
            self.assertEqual(await self.store.fetch(sql, [None, "x"]), [(True, False)])
        with self.assertRaises(psycopg2.Error):
            await self.store.fetch("SELECT nonsense FROM t WHERE n = ?", [1])

    async def test_statements_dropped_behind_the_stores_back(self) -> None:
        sql = "SELECT id FROM t WHERE n = ?"
        for _ in range(3):
            self.assertEqual(await self.store.fetch(sql, [4]), [(4,)])
        for conn in self.connections():
            await conn.runOperation("DEALLOCATE ALL")
        for _ in range(3):
            self.assertEqual(await self.store.fetch(sql, [5]), [(5,)])

    async def test_connection_killed_during_a_read(self) -> None:
        reading = self.store.fetch("SELECT n FROM t, pg_sleep(?) WHERE n = ?", [0.4, 3])
        await task.deferLater(reactor, 0.15, lambda: None)
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            self.assertGreaterEqual(len(cur.fetchall()), 1)
        conn.close()
        # the read is retried on a connection that lives
        self.assertEqual(await reading, [(3,)])
        self.assertEqual(await self.store.fetch("SELECT n FROM t WHERE n = ?", [4]), [(4,)])

    async def test_column_changed_under_a_prepared_statement(self) -> None:
        # a schema sync may change a column's type: the statement's cached
        # plan no longer fits ("cached plan must not change result type")
        sql = "SELECT n, s FROM t WHERE id = ?"
        for _ in range(3):
            self.assertEqual(await self.store.fetch(sql, [2]), [(2, "v2")])
        conn = psycopg2.connect(self.url)
        with conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE t ALTER COLUMN n TYPE TEXT")
        conn.close()
        for _ in range(3):
            self.assertEqual(await self.store.fetch(sql, [2]), [("2", "v2")])

    async def test_many_reads_at_once(self) -> None:
        # more reads than connections: each finished read hands its
        # connection to the next one waiting, from inside its callbacks
        sql = "SELECT n FROM t WHERE n = ?"
        reads = [self.store.fetch(sql, [1 + i % 9]) for i in range(600)]
        results = await defer.gatherResults(reads)
        self.assertEqual(results, [[(1 + i % 9,)] for i in range(600)])

    async def test_full_cache_starts_over(self) -> None:
        for conn in self.connections():
            conn.statements.capacity = 2
        for round_ in range(2):
            for i in range(1, 6):
                self.assertEqual(await self.store.fetch(f"SELECT id FROM t WHERE n = ? AND {i} = {i}", [i]),
                                 [(i,)])
        for conn in self.connections():
            rows = await conn.runQuery("SELECT count(*) FROM pg_prepared_statements")
            self.assertLessEqual(rows[0][0], 2)
