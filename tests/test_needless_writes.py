"""No needless writes: an apply that would change nothing writes no row, no
link, no update-log entry, and leaves the read generation (and other
processes: NOTIFY) alone; only the rows that differ are written. Run on
both stores; every write to the entity and link tables is recorded by
triggers, so "nothing written" means exactly that."""

from __future__ import annotations

import datetime
import math
import os
from typing import Any

import psycopg2
from twisted.internet import reactor, task
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.schema.changes import SOURCE_EVENT, SOURCE_SCAN, EntityChange
from sgcache.schema.types import DATA_TYPES
from sgcache.store import open_store
from sgcache.store.layout import quote
from sgcache.testing.fixtures import FIXTURE_SCHEMA
from sgcache.testing.pg import fresh_postgres_url

UTC = datetime.timezone.utc


def A(n: int, name: str | None = None) -> dict:
    link: dict[str, Any] = {"type": "Asset", "id": n}
    if name is not None:
        link["name"] = name
    return link


#: per cacheable data type: (a value, another wire form of what it is
#: stored as, a value stored differently)
VALUES: dict[str, tuple[Any, Any, Any]] = {
    "text": ("abc", "abc", "abc "),
    "color": ("255,0,0", "255,0,0", "pipeline_step"),
    "entity_type": ("Shot", "Shot", "shot"),
    "list": ("a", "a", "b"),
    "status_list": ("ip", "ip", "fin"),
    "uuid": ("0f8c2a52-5b3c-4e0e-9d5e-000000000001", "0f8c2a52-5b3c-4e0e-9d5e-000000000001",
             "0f8c2a52-5b3c-4e0e-9d5e-000000000002"),
    "number": (5, 5.0, 6),
    "duration": (90, 90.0, 91),
    "percent": (50, 50.0, 0),
    "timecode": (1000, 1000.0, -1000),
    "float": (1, 1.0, 1.0000000000000002),
    "currency": (2.5, 2.5, 0.0),
    "checkbox": (True, 1, False),
    "date": ("2024-03-01", datetime.date(2024, 3, 1), "2024-03-02"),
    "date_time": ("2024-01-01T00:00:00Z", datetime.datetime(2024, 1, 1, tzinfo=UTC),
                  "2024-01-01T00:00:01Z"),
    "entity": (A(1, "one"), A(1, "renamed"), A(2)),
    "multi_entity": ([A(1), A(2)], [A(1, "x"), A(2), A(1)], [A(2), A(1)]),
    "tag_list": ([{"type": "Tag", "id": 1, "name": "x"}], [{"name": "x", "id": 1, "type": "Tag"}],
                 [{"type": "Tag", "id": 1, "name": "x "}]),
    "url": ({"url": "http://x/", "name": "x", "link_type": "web"},
            {"link_type": "web", "name": "x", "url": "http://x/"},
            {"url": "http://x/", "name": "x", "link_type": "upload"}),
    # equal in Python, not as stored: 1 is not 1.0 in JSON text
    "serializable": ({"a": 1}, {"a": 1}, {"a": 1.0}),
}

CACHEABLE = sorted(name for name, dtype in DATA_TYPES.items() if dtype.cacheable)


def fname(dtype: str) -> str:
    return f"f_{dtype}"


def field_spec(dtype: str) -> Any:
    if dtype in ("entity", "multi_entity"):
        return {"type": dtype, "entity_types": ["Asset"]}
    if dtype in ("list", "status_list"):
        return {"type": dtype, "valid_values": ["a", "b", "ip", "fin"]}
    return dtype


def make_schema() -> Schema:
    fields: dict[str, Any] = {"code": "text", "updated_at": "date_time"}
    fields.update({fname(dtype): field_spec(dtype) for dtype in CACHEABLE})
    return Schema.from_dict({"entities": {"Thing": {"fields": fields}, "Asset": {"fields": {"code": "text"}}}})


MULTI_TABLE = "Thing__" + fname("multi_entity")
#: the tables whose writes are recorded, and the column naming the entity
WATCHED = (("Thing", "id"), (MULTI_TABLE, "parent_id"))


def first_values() -> dict[str, Any]:
    return {fname(dtype): VALUES[dtype][0] for dtype in CACHEABLE}


def stored_form(dtype: str, value: Any) -> Any:
    """What a value reads back as from the store (as apply writes it)."""
    if dtype == "entity":
        return None if value is None else (value["type"], value["id"])
    if dtype == "multi_entity":
        seen: list = []
        for link in value or []:
            if (link["type"], link["id"]) not in seen:
                seen.append((link["type"], link["id"]))
        return seen
    return DATA_TYPES[dtype].encode(value)


class CoverageTests(unittest.TestCase):
    def test_every_cacheable_type_has_values(self) -> None:
        self.assertEqual(sorted(VALUES), CACHEABLE)
        fixture = Schema.load(FIXTURE_SCHEMA)
        used = {f.data_type for e in fixture.entities.values() for f in e.fields.values()}
        self.assertLessEqual({t for t in used if t in DATA_TYPES and DATA_TYPES[t].cacheable}, set(VALUES))

    def test_the_differing_values_differ_as_stored(self) -> None:
        for dtype, (first, same, other) in VALUES.items():
            self.assertEqual(stored_form(dtype, first), stored_form(dtype, same), dtype)
            self.assertNotEqual(repr(stored_form(dtype, first)), repr(stored_form(dtype, other)), dtype)


class NeedlessWritesMixin:
    """Subclasses say how to make a store and watch its writes."""

    async def store_url(self) -> str:
        raise NotImplementedError

    async def settle(self) -> None:
        """Let any notification of a write arrive."""

    def install_write_log(self, store: Any) -> None:
        raise NotImplementedError

    def writes(self) -> list[tuple[str, str, int]]:
        """(table, INSERT/UPDATE/DELETE, entity id) of every row written
        since the last call, in order."""
        raise NotImplementedError

    async def store(self) -> Any:
        self.url = await self.store_url()
        store = open_store(self.url, reactor)
        await store.open()
        self.addCleanup(store.close)
        await store.sync_schema(make_schema())
        await store.track_changes()
        self.install_write_log(store)
        return store

    async def log_seq(self, store: Any) -> int:
        rows = await store.fetch("SELECT COALESCE(MAX(seq), 0) FROM _sgcache_updates", [])
        return int(rows[0][0])

    async def logged_since(self, store: Any, seq: int) -> list[tuple[str, int]]:
        rows = await store.fetch(
            "SELECT entity_type, entity_id FROM _sgcache_updates WHERE seq > ? ORDER BY seq", [seq]
        )
        return [(t, int(i)) for t, i in rows]

    async def column(self, store: Any, eid: int, dtype: str) -> Any:
        name = fname(dtype)
        if dtype == "multi_entity":
            rows = await store.fetch(
                f"SELECT child_type, child_id FROM {quote(MULTI_TABLE)} WHERE parent_id = ? "
                "ORDER BY position", [eid])
            return [tuple(r) for r in rows]
        if dtype == "entity":
            rows = await store.fetch(
                f'SELECT {quote(name + "__type")}, {quote(name + "__id")} FROM "Thing" WHERE "id" = ?',
                [eid])
            return None if rows[0] == (None, None) else tuple(rows[0])
        rows = await store.fetch(f'SELECT {quote(name)} FROM "Thing" WHERE "id" = ?', [eid])
        return rows[0][0]

    async def expect_unchanged(self, store: Any, changes: list, state: dict | None = None,
                               what: str = "") -> None:
        """Applying `changes` writes nothing and moves nothing."""
        await self.settle()  # notifications of earlier writes heard
        self.writes()
        generation, seq = store.read_generation(), await self.log_seq(store)
        applied = await store.apply(changes, state)
        await self.settle()
        result = store.last_apply
        self.assertEqual((result.written, result.unchanged), (0, applied), what)
        self.assertEqual(self.writes(), [], what)
        self.assertEqual(await self.logged_since(store, seq), [], what)
        self.assertEqual(store.read_generation(), generation, what)

    async def expect_written(self, store: Any, changes: list, ids: list[int], what: str = "") -> list:
        """Applying `changes` writes the rows `ids` (only), logs them, and
        moves the read generation; the writes made."""
        self.writes()
        generation, seq = store.read_generation(), await self.log_seq(store)
        await store.apply(changes)
        self.assertEqual(store.last_apply.written, len(ids), what)
        made = self.writes()
        self.assertTrue(made, what)
        self.assertEqual(sorted({eid for _, _, eid in made}), sorted(ids), what)
        self.assertEqual(
            sorted(await self.logged_since(store, seq)), sorted(("Thing", i) for i in ids), what
        )
        self.assertNotEqual(store.read_generation(), generation, what)
        return made

    # -- every data type ----------------------------------------------------------
    async def test_each_type_same_value_writes_nothing_and_another_is_written(self) -> None:
        store = await self.store()
        for n, dtype in enumerate(CACHEABLE, start=1):
            first, same, other = VALUES[dtype]
            name = fname(dtype)
            await store.apply([EntityChange("Thing", n, {"code": "t", name: first})])
            self.assertEqual(await self.column(store, n, dtype), stored_form(dtype, first), dtype)
            await self.expect_unchanged(
                store, [EntityChange("Thing", n, {"code": "t", name: first})], what=f"{dtype} again")
            await self.expect_unchanged(
                store, [EntityChange("Thing", n, {name: same}, source=SOURCE_EVENT)],
                what=f"{dtype} as {same!r}")
            made = await self.expect_written(
                store, [EntityChange("Thing", n, {name: other})], [n], what=f"{dtype} to {other!r}")
            self.assertEqual(await self.column(store, n, dtype), stored_form(dtype, other), dtype)
            if dtype == "multi_entity":
                # the links are replaced; the row itself is left alone
                self.assertEqual({table for table, _, _ in made}, {MULTI_TABLE}, dtype)
            else:
                self.assertEqual(made, [("Thing", "UPDATE", n)], dtype)
            # and back: a change again
            await self.expect_written(
                store, [EntityChange("Thing", n, {name: first})], [n], what=f"{dtype} back")
            self.assertEqual(await self.column(store, n, dtype), stored_form(dtype, first), dtype)

    async def test_a_whole_row_reapplied_writes_nothing(self) -> None:
        store = await self.store()
        values = {"code": "x", "updated_at": "2024-05-01T10:00:00Z", **first_values()}
        full = EntityChange("Thing", 1, values, updated_at=values["updated_at"], complete=True,
                            source=SOURCE_SCAN)
        self.assertEqual(await store.apply([full]), 1)
        self.assertEqual(store.last_apply.written, 1)
        await self.expect_unchanged(store, [full], what="the same change")
        same = {"code": "x", "updated_at": "2024-05-01T10:00:00Z",
                **{fname(dtype): VALUES[dtype][1] for dtype in CACHEABLE}}
        await self.expect_unchanged(
            store, [EntityChange("Thing", 1, same, updated_at=same["updated_at"], complete=True)],
            what="other wire forms of the same values")
        # a newer updated_at alone is a change
        await self.expect_written(
            store, [EntityChange("Thing", 1, dict(values, updated_at="2024-05-01T10:00:01Z"),
                                 complete=True)], [1])

    # -- batches ------------------------------------------------------------------
    async def test_only_the_rows_that_differ_are_written(self) -> None:
        store = await self.store()

        def page(code_of_3: str) -> list:
            return [
                EntityChange("Thing", i, {"code": code_of_3 if i == 3 else f"c{i}", **first_values()},
                             complete=True, source=SOURCE_SCAN)
                for i in range(1, 6)
            ]

        await store.apply(page("c3"))
        written, unchanged = store.rows_written, store.rows_unchanged
        await self.expect_unchanged(store, page("c3"))
        self.assertEqual((store.rows_written, store.rows_unchanged), (written, unchanged + 5))
        made = await self.expect_written(store, page("moved"), [3])
        self.assertEqual(made, [("Thing", "UPDATE", 3)])
        self.assertEqual(store.last_apply.unchanged, 4)
        self.assertEqual(await store.fetch('SELECT "code" FROM "Thing" WHERE "id" = 3', []), [("moved",)])

    async def test_a_large_batch_written_in_parts(self) -> None:
        # more rows than a part (PostgreSQL plans and writes 125 at a time)
        store = await self.store()
        changes = [EntityChange("Thing", i, {"code": f"c{i}", fname("multi_entity"): [A(i % 7)]},
                                complete=True) for i in range(1, 301)]
        await store.apply(changes)
        await self.expect_unchanged(store, changes)
        for i in (1, 126, 300):
            changes[i - 1] = EntityChange("Thing", i, {"code": f"c{i}", fname("multi_entity"): [A(99)]},
                                          complete=True)
        await self.expect_written(store, changes, [1, 126, 300])
        self.assertEqual(await self.column(store, 126, "multi_entity"), [("Asset", 99)])
        self.assertEqual(await self.column(store, 127, "multi_entity"), [("Asset", 127 % 7)])

    async def test_one_entity_twice_in_a_batch(self) -> None:
        store = await self.store()
        await store.apply([EntityChange("Thing", 1, {"code": "a"})])
        await self.expect_written(store, [EntityChange("Thing", 1, {"code": "b"}),
                                          EntityChange("Thing", 1, {"code": "b"})], [1])
        self.assertEqual((store.last_apply.written, store.last_apply.unchanged), (1, 1))
        # there and back again within one batch: both written, the last wins
        await store.apply([EntityChange("Thing", 1, {"code": "c"}), EntityChange("Thing", 1, {"code": "b"})])
        self.assertEqual(store.last_apply.written, 2)
        self.assertEqual(await store.fetch('SELECT "code" FROM "Thing" WHERE "id" = 1', []), [("b",)])
        # inserted then set to what it was inserted with: one write
        await store.apply([EntityChange("Thing", 2, {"code": "n"}), EntityChange("Thing", 2, {"code": "n"})])
        self.assertEqual((store.last_apply.written, store.last_apply.unchanged), (1, 1))
        # deleted and re-created as it was: written (the row was replaced)
        await store.apply([EntityChange("Thing", 2, delete=True), EntityChange("Thing", 2, {"code": "n"})])
        self.assertEqual(store.last_apply.written, 2)
        self.assertEqual(await store.fetch('SELECT "code", "_complete" FROM "Thing" WHERE "id" = 2', []),
                         [("n", 0)])

    # -- links, flags, partial changes, deletes --------------------------------------
    async def test_multi_entity_order_and_duplicates(self) -> None:
        store = await self.store()
        links = fname("multi_entity")
        await store.apply([EntityChange("Thing", 1, {links: [A(1), A(2), A(3)]})])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {links: [A(1), A(2, "b"), A(1), A(3)]})])
        await self.expect_written(store, [EntityChange("Thing", 1, {links: [A(1), A(3), A(2)]})], [1])
        self.assertEqual(await self.column(store, 1, "multi_entity"),
                         [("Asset", 1), ("Asset", 3), ("Asset", 2)])
        await self.expect_written(store, [EntityChange("Thing", 1, {links: [A(1), A(3)]})], [1])
        await self.expect_written(store, [EntityChange("Thing", 1, {links: [{"type": "Shot", "id": 1}, A(3)]})],
                                  [1])
        await self.expect_written(store, [EntityChange("Thing", 1, {links: []})], [1])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {links: None})])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {links: []})])

    async def test_links_stored_out_of_order_are_rewritten(self) -> None:
        # positions other than 0..n-1 are never written; if found, the
        # same links are written again (as apply writes them)
        store = await self.store()
        links = fname("multi_entity")
        await store.apply([EntityChange("Thing", 1, {links: [A(1), A(2)]})])
        self.raw(f"UPDATE {quote(MULTI_TABLE)} SET position = position + 5")
        await self.expect_written(store, [EntityChange("Thing", 1, {links: [A(1), A(2)]})], [1])
        self.assertEqual(await store.fetch(f"SELECT position FROM {quote(MULTI_TABLE)} ORDER BY position", []),
                         [(0,), (1,)])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {links: [A(1), A(2)]})])

    async def test_active_and_complete_flags(self) -> None:
        store = await self.store()
        await store.apply([EntityChange("Thing", 1, {"code": "a"})])
        self.assertEqual(await store.fetch('SELECT "_active", "_complete" FROM "Thing"', []), [(1, 0)])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, active=True)])
        await self.expect_written(store, [EntityChange("Thing", 1, active=False)], [1])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {"code": "a"}, active=False)])
        await self.expect_written(store, [EntityChange("Thing", 1, {"code": "a"}, active=True)], [1])
        await self.expect_written(store, [EntityChange("Thing", 1, {"code": "a"}, complete=True)], [1])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {"code": "a"}, complete=True)])
        # complete=False never takes the flag back
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {"code": "a"})])
        self.assertEqual(await store.fetch('SELECT "_active", "_complete" FROM "Thing"', []), [(1, 1)])

    async def test_a_partial_change_is_compared_on_its_fields(self) -> None:
        store = await self.store()
        await store.apply([EntityChange("Thing", 1, {"code": "a", **first_values()}, complete=True)])
        for dtype in CACHEABLE:
            await self.expect_unchanged(
                store, [EntityChange("Thing", 1, {fname(dtype): VALUES[dtype][1]})], what=dtype)
        # NULL is None, and a field never set is NULL
        await store.apply([EntityChange("Thing", 2, {"code": "b"})])
        for dtype in CACHEABLE:
            if dtype == "checkbox":
                continue  # None is stored as 0, not NULL
            await self.expect_unchanged(
                store, [EntityChange("Thing", 2, {fname(dtype): None})], what=f"{dtype} None")
        await self.expect_written(store, [EntityChange("Thing", 2, {fname("checkbox"): None})], [2])
        self.assertEqual(await self.column(store, 2, "checkbox"), 0)
        await self.expect_unchanged(store, [EntityChange("Thing", 2, {fname("checkbox"): False})])
        await self.expect_written(store, [EntityChange("Thing", 1, {fname("text"): None})], [1])
        self.assertIsNone(await self.column(store, 1, "text"))

    async def test_deletes(self) -> None:
        store = await self.store()
        await self.expect_unchanged(store, [EntityChange("Thing", 7, delete=True)], what="never stored")
        self.assertEqual(store.last_apply.applied, 1)
        await store.apply([EntityChange("Thing", 7, {"code": "a", fname("multi_entity"): [A(1)]})])
        made = await self.expect_written(store, [EntityChange("Thing", 7, delete=True)], [7])
        self.assertEqual(sorted({(t, op) for t, op, _ in made}), [("Thing", "DELETE"), (MULTI_TABLE, "DELETE")])
        await self.expect_unchanged(store, [EntityChange("Thing", 7, delete=True)], what="gone")
        # links left without their row (never written so) are deleted
        self.raw(f"INSERT INTO {quote(MULTI_TABLE)} (parent_id, child_type, child_id, position) "
                 "VALUES (8, 'Asset', 1, 0)")
        await self.expect_written(store, [EntityChange("Thing", 8, delete=True)], [8])
        self.assertEqual(await store.fetch(f"SELECT COUNT(*) FROM {quote(MULTI_TABLE)}", []), [(0,)])

    async def test_stale_and_uncached_changes_write_nothing(self) -> None:
        store = await self.store()
        await store.apply([EntityChange("Thing", 1, {"code": "new", "updated_at": "2024-01-02T00:00:00Z"})])
        await self.expect_unchanged(store, [
            EntityChange("Thing", 1, {"code": "old"}, updated_at="2024-01-01T00:00:00Z"),
            EntityChange("Version", 1, {"code": "v"}),
        ])
        self.assertEqual(store.last_apply.skipped_stale, 1)

    # -- state and the read generation -------------------------------------------------
    async def test_the_state_of_an_unchanged_apply_is_written(self) -> None:
        store = await self.store()
        change = EntityChange("Thing", 1, {"code": "a"})
        await store.apply([change], {"cursor": "1"})
        await self.expect_unchanged(store, [change], {"cursor": "2"})
        self.assertEqual(await store.get_state("cursor"), "2")
        await self.expect_unchanged(store, [], {"cursor": "3"})
        self.assertEqual(await store.get_state("cursor"), "3")
        # with a change, both
        await self.expect_written(store, [EntityChange("Thing", 1, {"code": "b"})], [1])

    async def test_another_store_hears_only_real_writes(self) -> None:
        store = await self.store()
        other = open_store(self.url, reactor)  # another process's store
        await other.open()
        self.addCleanup(other.close)
        await other.track_changes()
        await store.apply([EntityChange("Thing", 1, {"code": "a"})])
        await self.until(lambda: other.read_generation() is not None)
        await self.settle()
        before = other.read_generation()
        state = None if self.state_is_heard else {"k": "v"}
        await store.apply([EntityChange("Thing", 1, {"code": "a"})], state)
        await self.settle()
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(other.read_generation(), before)
        await store.apply([EntityChange("Thing", 1, {"code": "b"})])
        await self.until(lambda: other.read_generation() != before)

    async def until(self, done: Any, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if done():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"not within {timeout}s")

    # -- values Python calls equal, or that do not compare equal to themselves ---------
    async def test_conservative_values(self) -> None:
        store = await self.store()
        ratio = fname("float")
        await store.apply([EntityChange("Thing", 1, {ratio: 0.0, fname("serializable"): {"a": 1},
                                                     fname("text"): "1"})])
        # -0.0 == 0.0 in Python: written, never taken for the same
        await self.expect_written(store, [EntityChange("Thing", 1, {ratio: -0.0})], [1], what="-0.0")
        # the stores keep 0.0 for it (SQLite stores a whole REAL as an
        # integer; PostgreSQL's rows-as-JSON path goes through numeric):
        # -0.0 is then written each time (needless, never wrong)
        kept = await self.column(store, 1, "float")
        self.assertEqual(kept, 0.0)
        if math.copysign(1.0, kept) < 0:
            await self.expect_unchanged(store, [EntityChange("Thing", 1, {ratio: -0.0})], what="-0.0 kept")
            await self.expect_written(store, [EntityChange("Thing", 1, {ratio: 0.0})], [1], what="0.0")
        else:
            await self.expect_written(store, [EntityChange("Thing", 1, {ratio: -0.0})], [1], what="-0.0 again")
            await self.expect_unchanged(store, [EntityChange("Thing", 1, {ratio: 0.0})], what="0.0 kept")
        # NaN equals nothing: always written
        await store.apply([EntityChange("Thing", 1, {ratio: float("nan")})])
        await self.expect_written(store, [EntityChange("Thing", 1, {ratio: float("nan")})], [1])
        # 1 == 1.0 == True in Python, not in JSON text
        for value in ({"a": 1.0}, {"a": True}, {"a": 1}):
            await self.expect_written(
                store, [EntityChange("Thing", 1, {fname("serializable"): value})], [1], what=repr(value))
        # a number given to a text field is not the text stored
        await self.expect_written(store, [EntityChange("Thing", 1, {fname("text"): "1.0"})], [1])
        await self.expect_written(store, [EntityChange("Thing", 1, {fname("text"): "1.0 "})], [1])
        await self.expect_unchanged(store, [EntityChange("Thing", 1, {fname("text"): "1.0 "})])


class SQLiteNeedlessWritesTests(NeedlessWritesMixin, unittest.TestCase):
    #: another connection's ``PRAGMA data_version`` moves with any commit,
    #: bookkeeping state included
    state_is_heard = True

    async def store_url(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return "sqlite:///" + os.path.join(path, "cache.sqlite")

    def install_write_log(self, store: Any) -> None:
        conn = self.conn = store._conn
        conn.execute("CREATE TEMP TABLE test_writes (tbl TEXT, op TEXT, id INTEGER)")
        for table, col in WATCHED:
            for op in ("INSERT", "UPDATE", "DELETE"):
                row = "OLD" if op == "DELETE" else "NEW"
                conn.execute(
                    f'CREATE TEMP TRIGGER "w_{table}_{op}" AFTER {op} ON main.{quote(table)} '
                    f"BEGIN INSERT INTO test_writes VALUES ('{table}', '{op}', {row}.{col}); END"
                )

    def writes(self) -> list[tuple[str, str, int]]:
        rows = self.conn.execute("SELECT tbl, op, id FROM test_writes ORDER BY rowid").fetchall()
        self.conn.execute("DELETE FROM test_writes")
        return [tuple(r) for r in rows]

    def raw(self, sql: str) -> None:
        self.conn.execute(sql)


class PostgresNeedlessWritesTests(NeedlessWritesMixin, unittest.TestCase):
    state_is_heard = False

    async def store_url(self) -> str:
        return await fresh_postgres_url(self)

    async def settle(self) -> None:
        await task.deferLater(reactor, 0.2, lambda: None)

    def install_write_log(self, store: Any) -> None:
        self.conn = psycopg2.connect(self.url)
        self.conn.autocommit = True
        self.addCleanup(self.conn.close)
        self.raw("CREATE TABLE test_writes (seq BIGSERIAL, tbl TEXT, op TEXT, id BIGINT)")
        self.raw(
            "CREATE FUNCTION test_note_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO test_writes (tbl, op, id) VALUES (TG_TABLE_NAME, TG_OP, "
            "((CASE WHEN TG_OP = 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END) "
            "->> TG_ARGV[0])::bigint); RETURN NULL; END $$"
        )
        for table, col in WATCHED:
            self.raw(f"CREATE TRIGGER test_writes AFTER INSERT OR UPDATE OR DELETE ON {quote(table)} "
                     f"FOR EACH ROW EXECUTE FUNCTION test_note_write('{col}')")

    def raw(self, sql: str) -> list:
        with self.conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description is not None else []

    def writes(self) -> list[tuple[str, str, int]]:
        rows = self.raw("DELETE FROM test_writes RETURNING seq, tbl, op, id")
        return [(t, op, int(i)) for _, t, op, i in sorted(rows)]

    async def test_no_notify_for_an_unchanged_apply(self) -> None:
        store = await self.store()
        listener = psycopg2.connect(self.url)
        listener.autocommit = True
        self.addCleanup(listener.close)
        with listener.cursor() as cur:
            cur.execute("LISTEN sgcache_changes")

        async def heard() -> int:
            await task.deferLater(reactor, 0.2, lambda: None)
            listener.poll()
            n = len(listener.notifies)
            listener.notifies.clear()
            return n

        await store.apply([EntityChange("Thing", 1, {"code": "a", fname("multi_entity"): [A(1)]})])
        self.assertEqual(await heard(), 1)
        await store.apply([EntityChange("Thing", 1, {"code": "a", fname("multi_entity"): [A(1)]})],
                          {"k": "v"})
        self.assertEqual(await heard(), 0)
        await store.apply([EntityChange("Thing", 1, delete=True), EntityChange("Thing", 1, delete=True)])
        self.assertEqual(await heard(), 1)
        await store.apply([EntityChange("Thing", 1, delete=True)])
        self.assertEqual(await heard(), 0)
