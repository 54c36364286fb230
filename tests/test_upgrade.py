"""Layout upgrades (sgcache.store.upgrade), on both stores, from the stores
the last release of layout version 1 wrote (commit a4632b4; the dumps in
tests/fixtures/layout-v1, made by its make.py):

* opening a v1 store upgrades it in place: layout version 2, no
  ``_event_id`` left, every row as it was, the same tables and indexes as a
  fresh store of the same schema; SQLite leaves a copy of the v1 file next
  to it; opening it again changes nothing;
* a store of a newer layout than this code's is refused with one line and
  left as it was, by the store and by a daemon started on it;
* a failing step leaves the store as it was (the opening transaction rolls
  back), and the next start upgrades it;
* every version below `LAYOUT_VERSION` has its step;
* end to end: a daemon started on the upgraded store, in front of an
  emulator holding the site the old daemons cached, answers reads of every
  type locally, exactly as the site does, without any rescan, and goes on
  from the stored event cursor.
"""

from __future__ import annotations

import glob
import os
import sqlite3
import subprocess
import sys
from typing import Any

import psycopg2
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.config import ConfigError
from sgcache.schema import Schema
from sgcache.service import SgcacheService
from sgcache.store import StoreError, layout, open_store, parse_store_url, upgrade
from sgcache.store.postgres import DATA_GENERATION_KEY
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.sitestate import load_site, read_site

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "layout-v1")
SCHEMA_PATH = os.path.join(FIXTURES, "schema.yml")
SCHEMA = Schema.load(SCHEMA_PATH)
SITE = read_site(os.path.join(FIXTURES, "site.json"))

#: the entity tables of the v1 stores (each with an ``_event_id`` column)
ENTITY_TABLES = ["ApiUser", "Asset", "HumanUser", "Project", "Sequence", "Shot"]
#: the client script of site.json (the cache's is CACHE_SCRIPT)
USER_SCRIPT = ("test", "key")

EVENT_ID = upgrade.EVENT_ID_COLUMN
#: seconds `twistd sgcache` gets to give up on a store it refuses
TWISTD_TIMEOUT = 15


def one_line(testcase: unittest.TestCase, error: BaseException) -> str:
    text = str(error)
    testcase.assertTrue(text.strip(), "an empty error")
    testcase.assertNotIn("\n", text.strip(), f"not one line: {text!r}")
    return text


REAL_STEPS = list(upgrade.STEPS)


class StoreHelpers:
    """Loading the v1 dump and looking inside a store behind its back; the
    store-specific halves say how."""

    # -- what the store-specific halves provide --------------------------------------------------
    async def fresh_url(self) -> str:
        raise NotImplementedError

    def load_dump(self, url: str) -> None:
        """Load the v1 dump into the empty store at `url` (its own connection)."""
        raise NotImplementedError

    def raw(self, url: str, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        """(column names, rows) of `sql`, behind the store's back; commits."""
        raise NotImplementedError

    def table_names(self, url: str) -> list[str]:
        raise NotImplementedError

    def columns(self, url: str, table: str) -> list[str]:
        """The table's columns, in order."""
        raise NotImplementedError

    def describe(self, url: str) -> dict[str, Any]:
        """Tables (columns in order, with types), indexes and constraints:
        what two stores must agree on to be the same layout."""
        raise NotImplementedError

    def backups(self, url: str) -> list[str]:
        """Backup copies next to the store (SQLite)."""
        return []

    # -- helpers --------------------------------------------------------------------
    async def v1_url(self) -> str:
        url = await self.fresh_url()
        self.load_dump(url)
        return url

    async def open(self, url: str) -> Any:
        store = open_store(url, reactor)
        await store.open()
        self.addCleanup(store.close)
        return store

    async def open_refused(self, url: str) -> str:
        store = open_store(url, reactor)
        with self.assertRaises(StoreError) as ctx:
            await store.open()
        await store.close()
        return one_line(self, ctx.exception)

    def version(self, url: str) -> str | None:
        _, rows = self.raw(url, "SELECT value FROM _sgcache_meta WHERE key = 'layout_version'")
        return rows[0][0] if rows else None

    def set_version(self, url: str, value: int) -> None:
        self.raw(url, f"UPDATE _sgcache_meta SET value = '{value}' WHERE key = 'layout_version'")

    def tables_with_event_id(self, url: str) -> list[str]:
        return sorted(t for t in self.table_names(url) if EVENT_ID in self.columns(url, t))

    def rows(self, url: str) -> dict[str, list]:
        """Every row of every table (the update log's included), with
        ``_event_id``, the layout version and the data generation (a count
        of committed writes, PostgreSQL's: `PostgresStore.data_generation`)
        left out."""
        out = {}
        for table in sorted(self.table_names(url)):
            names, rows = self.raw(url, f"SELECT * FROM {layout.quote(table)}")
            kept = [
                tuple(sorted((n, v) for n, v in zip(names, row) if n != EVENT_ID))
                for row in rows
            ]
            if table == "_sgcache_meta":
                kept = [r for r in kept if ("key", layout.LAYOUT_VERSION_KEY) not in r
                        and ("key", DATA_GENERATION_KEY) not in r]
            if table in CREATED_EMPTY_AT_OPEN and not kept:
                continue
            out[table] = sorted(kept, key=repr)
        return out

    def assertUntouched(self, url: str, rows: dict, layout_before: dict) -> None:
        self.assertEqual(self.version(url), "1")
        self.assertEqual(self.tables_with_event_id(url), ENTITY_TABLES)
        self.assertEqual(self.rows(url), rows)
        self.assertEqual(self.describe(url), layout_before)


#: bookkeeping tables any open creates when missing, empty (the shadow
#: checks' mismatches; PostgreSQL's read stamps and their prune horizon):
#: an upgrade that adds them leaves every row of the store as it was
CREATED_EMPTY_AT_OPEN = {"_sgcache_shadow", "_sgcache_read_stamps", "_sgcache_read_horizon"}


class UpgradeTestsMixin(StoreHelpers):
    """The upgrade suite, run on both stores."""

    # -- the upgrade ---------------------------------------------------------------------
    async def test_the_fixture_is_a_v1_store(self) -> None:
        url = await self.v1_url()
        self.assertEqual(self.version(url), "1")
        self.assertEqual(self.tables_with_event_id(url), ENTITY_TABLES)
        _, rows = self.raw(url, 'SELECT count(*) FROM "Shot"')
        self.assertEqual(rows[0][0], len(SITE["rows"]["Shot"]))

    async def test_v1_store_is_upgraded_in_place(self) -> None:
        url = await self.v1_url()
        before = self.rows(url)
        self.assertTrue(all(before[t] for t in ENTITY_TABLES))
        await self.open(url)
        self.assertEqual(self.version(url), str(layout.LAYOUT_VERSION))
        self.assertEqual(self.tables_with_event_id(url), [])
        self.assertEqual(self.rows(url), before)

    async def test_second_open_is_a_no_op(self) -> None:
        url = await self.v1_url()
        store = await self.open(url)
        await store.close()
        rows, described, backups = self.rows(url), self.describe(url), self.backups(url)

        async def must_not_run(*args: Any) -> None:
            raise AssertionError("an upgrade ran on an upgraded store")

        self.patch(upgrade, "run_steps", must_not_run)
        await self.open(url)
        self.assertEqual(self.version(url), str(layout.LAYOUT_VERSION))
        self.assertEqual(self.rows(url), rows)
        self.assertEqual(self.describe(url), described)
        self.assertEqual(self.backups(url), backups)

    async def test_upgraded_store_is_what_a_fresh_one_is(self) -> None:
        """After the daemon's schema sync, an upgraded store has the tables,
        columns, indexes and constraints a new store of the same schema has,
        and every field stays ready (nothing to reload)."""
        url = await self.v1_url()
        store = await self.open(url)
        summary = await store.sync_schema(SCHEMA)
        self.assertEqual({k: v for k, v in summary.items() if v}, {})
        states = await store.field_states()
        self.assertEqual(sorted(states), ENTITY_TABLES)
        self.assertEqual(
            {(t, f) for t, fields in states.items() for f, s in fields.items() if s != layout.FIELD_READY},
            set(),
        )
        fresh_url = await self.fresh_url()
        fresh = await self.open(fresh_url)
        await fresh.sync_schema(SCHEMA)
        self.assertEqual(self.describe(url), self.describe(fresh_url))

    # -- refusals ---------------------------------------------------------------------------
    async def test_newer_layout_is_refused_and_left_untouched(self) -> None:
        url = await self.v1_url()
        newer = layout.LAYOUT_VERSION + 1
        self.set_version(url, newer)
        rows, described = self.rows(url), self.describe(url)
        message = await self.open_refused(url)
        self.assertIn(
            f"database layout version {newer} is newer than this sgcache understands "
            f"({layout.LAYOUT_VERSION})", message,
        )
        self.assertEqual(self.version(url), str(newer))
        self.assertEqual(self.tables_with_event_id(url), ENTITY_TABLES)
        self.assertEqual(self.rows(url), rows)
        self.assertEqual(self.describe(url), described)
        self.assertEqual(self.backups(url), [])

    async def test_daemon_refuses_a_newer_layout(self) -> None:
        """The daemon (in-process) stops at start with one line naming the
        store, before it listens or contacts the site."""
        url = await self.v1_url()
        self.set_version(url, layout.LAYOUT_VERSION + 1)
        rows = self.rows(url)
        daemon = SgcacheService(reactor, {
            "schema": SCHEMA_PATH, "db": url, "shotgun": "http://127.0.0.1:1",
            "script_name": CACHE_SCRIPT[0], "api_key": CACHE_SCRIPT[1],
            "listen": "tcp:0:interface=127.0.0.1", "poll_interval": 3600.0,
            "info_refresh": 300.0, "demo": False,
        }, SCHEMA)
        daemon.startService()
        self.addCleanup(daemon.stopService)
        with self.assertRaises(ConfigError) as ctx:
            await daemon.ready
        message = one_line(self, ctx.exception)
        self.assertIn("--db: cannot open the store: ", message)
        self.assertIn(f"database layout version {layout.LAYOUT_VERSION + 1} is newer than this sgcache", message)
        self.assertFalse(daemon.cache.serving)
        self.assertEqual(self.rows(url), rows)
        self.assertEqual(self.backups(url), [])

    async def test_twistd_never_starts_on_a_newer_layout(self) -> None:
        """`twistd sgcache` on a store of a newer layout: leaves with status
        1 and one line, no traceback; the store as it was. (The store is
        opened before the site is contacted: no site needed.)"""
        url = await self.v1_url()
        self.set_version(url, layout.LAYOUT_VERSION + 1)
        rows = self.rows(url)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
        environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
        args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                "-n", "--pidfile=", "sgcache", "--schema", SCHEMA_PATH, "--db", url,
                "--shotgun", "http://127.0.0.1:1", "--script-name", "a", "--api-key", "b",
                "--listen", "tcp:0:interface=127.0.0.1"]
        try:
            done = await deferToThread(
                subprocess.run, args, env=environ, cwd=ROOT, capture_output=True, timeout=TWISTD_TIMEOUT
            )
        except subprocess.TimeoutExpired as e:
            output = (e.stdout or b"").decode(errors="replace")
            self.fail(f"twistd still running after {TWISTD_TIMEOUT} s (killed); its log:\n{output}")
        text = done.stdout.decode() + done.stderr.decode()
        self.assertEqual(done.returncode, 1, text)
        self.assertNotIn("Traceback", text)
        # twistd -n logs its stderr as lines of the log
        said = [line for line in text.splitlines() if "sgcache: --db: cannot open the store: " in line]
        self.assertEqual(len(said), 1, text)
        self.assertIn(f"database layout version {layout.LAYOUT_VERSION + 1} is newer", said[0])
        self.assertEqual(self.rows(url), rows)
        self.assertEqual(self.backups(url), [])

    async def test_missing_step_is_refused_and_left_untouched(self) -> None:
        url = await self.v1_url()
        rows, described = self.rows(url), self.describe(url)
        self.patch(upgrade, "STEPS", [])
        message = await self.open_refused(url)
        self.assertIn(
            f"database layout version 1 has no upgrade path to {layout.LAYOUT_VERSION} "
            "(no step from version 1)", message,
        )
        self.assertUntouched(url, rows, described)
        self.assertEqual(self.backups(url), [])

    async def test_failing_step_rolls_back(self) -> None:
        url = await self.v1_url()
        rows, described = self.rows(url), self.describe(url)

        async def half_then_fail(cur: Any) -> str:
            await cur.execute(f'ALTER TABLE "Shot" DROP COLUMN "{EVENT_ID}"')
            await cur.execute("CREATE TABLE upgrade_probe (x INTEGER)")
            await cur.execute("UPDATE _sgcache_state SET value = '999' WHERE key = 'event_cursor'")
            raise StoreError("the step broke on purpose")

        self.patch(upgrade, "STEPS", [upgrade.Step(1, "a step that fails", half_then_fail)])
        message = await self.open_refused(url)
        self.assertIn("layout upgrade 1 -> 2 (a step that fails) failed: the step broke on purpose", message)
        self.assertUntouched(url, rows, described)
        self.assertNotIn("upgrade_probe", self.table_names(url))

        # the next start, with the real steps, upgrades it
        self.patch(upgrade, "STEPS", REAL_STEPS)
        await self.open(url)
        self.assertEqual(self.version(url), str(layout.LAYOUT_VERSION))
        self.assertEqual(self.tables_with_event_id(url), [])
        self.assertEqual(self.rows(url), rows)

    async def test_database_error_in_a_step_is_one_line_and_rolls_back(self) -> None:
        url = await self.v1_url()
        rows, described = self.rows(url), self.describe(url)

        async def bad_sql(cur: Any) -> str:
            await cur.execute(f'ALTER TABLE "Asset" DROP COLUMN "{EVENT_ID}"')
            await cur.execute("UPDATE no_such_table SET x = 1")
            return "never"

        self.patch(upgrade, "STEPS", [upgrade.Step(1, "a step with bad SQL", bad_sql)])
        message = await self.open_refused(url)
        self.assertIn("layout upgrade 1 -> 2 (a step with bad SQL) failed: ", message)
        self.assertIn("no_such_table", message)
        self.assertUntouched(url, rows, described)


class RegistryTests(unittest.TestCase):
    """Every layout version below the current one has exactly one step, and
    they chain to the current version."""

    def test_every_older_version_has_a_step(self) -> None:
        versions = [step.from_version for step in upgrade.STEPS]
        self.assertEqual(versions, list(range(1, layout.LAYOUT_VERSION)))
        for step in upgrade.STEPS:
            self.assertEqual(step.to_version, step.from_version + 1)
            self.assertTrue(step.what)

    def test_steps_chain_to_the_current_version(self) -> None:
        for version in range(1, layout.LAYOUT_VERSION + 1):
            steps = upgrade.steps_from(version, "db")
            self.assertEqual([s.from_version for s in steps], list(range(version, layout.LAYOUT_VERSION)))

    def test_a_version_without_a_step_is_one_line(self) -> None:
        with self.assertRaises(StoreError) as ctx:
            upgrade.steps_from(0, "db")
        self.assertEqual(
            one_line(self, ctx.exception),
            f"db: database layout version 0 has no upgrade path to {layout.LAYOUT_VERSION} "
            "(no step from version 0)",
        )

    def test_backup_names_never_overwrite(self) -> None:
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.assertEqual(upgrade.backup_path(path, 1), path + ".layout-v1.backup")
        open(path + ".layout-v1.backup", "w").close()
        self.assertEqual(upgrade.backup_path(path, 1), path + ".layout-v1.backup.1")
        open(path + ".layout-v1.backup.1", "w").close()
        self.assertEqual(upgrade.backup_path(path, 1), path + ".layout-v1.backup.2")


# -- the stores ----------------------------------------------------------------------------


def v1_lower(value: Any) -> Any:
    """The SQLite ``lower`` the v1 store registered (a4632b4,
    sgcache/store/sqlite.py ``_py_lower``): Python's, not SQLite's ASCII one."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return value.lower()
    return str(value).lower()


class SQLiteHelpers(StoreHelpers):
    async def fresh_url(self) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        return "sqlite:///" + os.path.join(directory, "cache.sqlite")

    def path(self, url: str) -> str:
        return parse_store_url(url)[1]

    def load_dump(self, url: str) -> None:
        with open(os.path.join(FIXTURES, "store.sqlite.sql"), encoding="utf-8") as f:
            script = f.read()
        conn = sqlite3.connect(self.path(url))
        try:
            # the dump's expression indexes are rebuilt as it loads: with
            # the lower() the v1 store was written with, or the identifier
            # indexes would not match what the store looks up
            conn.create_function("lower", 1, v1_lower, deterministic=True)
            conn.executescript(script)
        finally:
            conn.close()

    def raw(self, url: str, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        conn = sqlite3.connect(self.path(url), isolation_level=None)
        conn.create_function("lower", 1, v1_lower, deterministic=True)
        try:
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description or ()]
            return names, cur.fetchall()
        finally:
            conn.close()

    def table_names(self, url: str) -> list[str]:
        _, rows = self.raw(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
        return sorted(r[0] for r in rows if not r[0].startswith("sqlite_"))

    def columns(self, url: str, table: str) -> list[str]:
        _, rows = self.raw(url, f"PRAGMA table_info({layout.quote(table)})")
        return [r[1] for r in rows]

    def describe(self, url: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in self.table_names(url):
            _, cols = self.raw(url, f"PRAGMA table_info({layout.quote(table)})")
            out[table] = [tuple(c[1:6]) for c in cols]  # name, type, notnull, default, pk
        _, indexes = self.raw(
            url, "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        )
        out["indexes"] = indexes
        return out

    def backups(self, url: str) -> list[str]:
        return sorted(glob.glob(glob.escape(self.path(url)) + ".layout-v*.backup*"))


class SQLiteUpgradeTests(SQLiteHelpers, UpgradeTestsMixin, unittest.TestCase):
    async def test_backup_is_the_v1_store(self) -> None:
        url = await self.v1_url()
        rows, described = self.rows(url), self.describe(url)
        await self.open(url)
        path = self.path(url)
        self.assertEqual(self.backups(url), [path + ".layout-v1.backup"])
        backup = "sqlite:///" + path + ".layout-v1.backup"
        self.assertEqual(self.version(backup), "1")
        self.assertEqual(self.tables_with_event_id(backup), ENTITY_TABLES)
        self.assertEqual(self.rows(backup), rows)
        self.assertEqual(self.describe(backup), described)
        # and it is a store the previous release can be put back on
        self.assertEqual(self.raw(backup, "PRAGMA integrity_check")[1], [("ok",)])

    async def test_upgraded_file_is_sound(self) -> None:
        url = await self.v1_url()
        await self.open(url)
        self.assertEqual(self.raw(url, "PRAGMA integrity_check")[1], [("ok",)])

    async def test_old_sqlite_cannot_drop_columns(self) -> None:
        """SQLite before 3.35 has no DROP COLUMN: the upgrade says so in one
        line and leaves the store as it was."""
        url = await self.v1_url()
        rows, described = self.rows(url), self.describe(url)
        self.patch(upgrade.sqlite3, "sqlite_version_info", (3, 34, 1))
        message = await self.open_refused(url)
        self.assertIn("layout upgrade 1 -> 2 (entity tables lose the unused _event_id column) failed: "
                      "dropping a column needs SQLite 3.35.0 or later", message)
        self.assertUntouched(url, rows, described)

    async def test_failed_upgrade_keeps_its_backup(self) -> None:
        url = await self.v1_url()

        async def fail(cur: Any) -> str:
            raise StoreError("no")

        self.patch(upgrade, "STEPS", [upgrade.Step(1, "fails", fail)])
        await self.open_refused(url)
        path = self.path(url)
        self.assertEqual(self.backups(url), [path + ".layout-v1.backup"])
        # the next attempt takes a copy of its own, next to the first
        self.patch(upgrade, "STEPS", REAL_STEPS)
        await self.open(url)
        self.assertEqual(self.backups(url), [path + ".layout-v1.backup", path + ".layout-v1.backup.1"])
        self.assertEqual(self.version("sqlite:///" + path + ".layout-v1.backup.1"), "1")


class PostgresHelpers(StoreHelpers):
    async def fresh_url(self) -> str:
        # a database of its own, dropped at the end (skips without a
        # server, fails under CI=true)
        return await fresh_postgres_url(self)

    def load_dump(self, url: str) -> None:
        with open(os.path.join(FIXTURES, "store.postgresql.sql"), encoding="utf-8") as f:
            script = f.read()
        # the dump sets search_path for its session: a connection of its own
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(script)
        finally:
            conn.close()

    def raw(self, url: str, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                names = [d[0] for d in cur.description or ()]
                return names, cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def table_names(self, url: str) -> list[str]:
        _, rows = self.raw(url, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return sorted(r[0] for r in rows)

    def columns(self, url: str, table: str) -> list[str]:
        _, rows = self.raw(
            url,
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            (table,),
        )
        return [r[0] for r in rows]

    def describe(self, url: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # columns in order (a dropped column leaves a gap in the positions,
        # not in the order)
        _, cols = self.raw(
            url,
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY table_name, ordinal_position",
        )
        for table, *rest in cols:
            out.setdefault(table, []).append(tuple(rest))
        _, out["indexes"] = self.raw(
            url,
            "SELECT indexname, tablename, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() ORDER BY indexname",
        )
        _, out["constraints"] = self.raw(
            url,
            "SELECT c.conname, t.relname, pg_get_constraintdef(c.oid) FROM pg_constraint AS c "
            "JOIN pg_class AS t ON t.oid = c.conrelid JOIN pg_namespace AS n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema() ORDER BY c.conname",
        )
        return out


class PostgresUpgradeTests(PostgresHelpers, UpgradeTestsMixin, unittest.TestCase):
    async def test_concurrent_opens_upgrade_once(self) -> None:
        """Two processes starting on one v1 database: the first upgrades
        while holding the version's row, the second waits for it and finds
        the store upgraded."""
        url = await self.v1_url()
        rows = self.rows(url)
        ran: list[int] = []
        real_run = upgrade.run_steps

        async def counting(cur: Any, version: int, where: str) -> None:
            ran.append(version)
            await real_run(cur, version, where)

        self.patch(upgrade, "run_steps", counting)
        stores = [open_store(url, reactor) for _ in range(2)]
        for store in stores:
            self.addCleanup(store.close)
        await defer.gatherResults([defer.ensureDeferred(s.open()) for s in stores])
        self.assertEqual(ran, [1])
        self.assertEqual(self.version(url), str(layout.LAYOUT_VERSION))
        self.assertEqual(self.tables_with_event_id(url), [])
        self.assertEqual(self.rows(url), rows)


# -- end to end --------------------------------------------------------------------------


class ServesAfterUpgradeMixin(StoreHelpers):
    """A daemon started on an upgraded v1 store serves at once."""

    def setUp(self) -> Any:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.assertEqual(list(SITE["scripts"].items())[0], CACHE_SCRIPT)
        # the store the old daemons left, and the site they cached
        self.url = await self.v1_url()
        self.site = await start_emulator(SCHEMA, scripts=SITE["scripts"], page_size=7)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        load_site(self.emulator, SITE)
        self.emulator.set_clock(SITE["now"])
        self.daemon = await start_daemon(SCHEMA, self.site.url, self.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.daemon.stop()))
        # the poller's first poll (at start) is done: from here on, the
        # emulator's read counter counts the clients' reads
        await self.daemon.service.poller.poll()
        self.sg = client(self.daemon.url, *USER_SCRIPT, convert_datetimes_to_utc=False)
        self.direct = client(self.site.url, *USER_SCRIPT, convert_datetimes_to_utc=False)
        self.addCleanup(self.sg.close)
        self.addCleanup(self.direct.close)
        # a script's first read passes through: the site vouches for it
        await deferToThread(self.sg.find_one, "Project", [])

    def site_reads(self) -> int:
        return self.emulator.counters().get("read", 0)

    async def assertLocal(self, method: str, *args: Any, **kwargs: Any) -> Any:
        before = self.site_reads()
        via_cache = await deferToThread(getattr(self.sg, method), *args, **kwargs)
        self.assertEqual(
            self.site_reads(), before,
            f"{method}{args} reached the site: {dict(self.daemon.cache.passthrough_reasons)}",
        )
        direct = await deferToThread(getattr(self.direct, method), *args, **kwargs)
        self.assertEqual(via_cache, direct, f"{method}{args}")
        return via_cache

    def fields(self, entity_type: str) -> list[str]:
        return sorted(SCHEMA.entities[entity_type].fields)

    async def test_upgraded_store_serves_without_a_reload(self) -> None:
        daemon, scanner = self.daemon, self.daemon.service.scanner
        # upgraded, and loaded without a scan: every field was ready
        self.assertEqual(self.version(self.url), str(layout.LAYOUT_VERSION))
        self.assertEqual(self.tables_with_event_id(self.url), [])
        self.assertIsNone(scanner.last_scan)
        self.assertEqual(scanner.scanned, 0)
        self.assertEqual(daemon.service.poller.cursor, SITE["next_event_id"] - 1)
        local_before = daemon.cache.counters["read.local"]
        # (the vouching read of setUp passed through)
        reasons_before = dict(daemon.cache.passthrough_reasons)

        by_id = [{"field_name": "id", "direction": "asc"}]
        reads: dict[str, tuple] = {}
        for entity in SCHEMA:
            # every field of every type of the fixture
            reads[entity.name] = ("find", entity.name, [], self.fields(entity.name), {"order": by_id})
        for n, filters in enumerate([
            [["sg_status_list", "is", "ip"]],
            [["sg_status_list", "in", ["fin", "wtg"]]],
            [["sg_sequence", "is", {"type": "Sequence", "id": 11}]],
            [["sg_sequence", "is", None]],
            [["assets", "is", {"type": "Asset", "id": 40}]],
            [["code", "contains", "sh0"]],
            [["sg_cut_in", "greater_than", 1005]],
            [["sg_ratio", "less_than", 8.0]],
            [["sg_flag", "is", True]],
            [["sg_date", "greater_than", "2024-04-01"]],
            [["sg_when", "is", None]],
            [["sg_kind", "is", "CG"]],
            [["tag_list", "is", "hero"]],
            [["project.Project.name", "is", "élan"]],
            [["sg_sequence.Sequence.code", "is", "SQ01"]],
        ]):
            reads[f"Shot filter {n}"] = ("find", "Shot", filters, self.fields("Shot"), {})
        reads.update({
            "Shot sorted": ("find", "Shot", [], ["code", "sg_cut_in", "sg_sequence.Sequence.code"], {
                "order": [{"field_name": "sg_cut_in", "direction": "desc"},
                          {"field_name": "code", "direction": "asc"}]}),
            "Shot retired": ("find", "Shot", [], ["code"], {"retired_only": True}),
            "Shot page": ("find", "Shot", [], ["code"], {
                "limit": 4, "page": 2, "order": [{"field_name": "code", "direction": "asc"}]}),
            "Asset of a shot": ("find", "Asset", [["shots", "is", {"type": "Shot", "id": 105}]],
                                self.fields("Asset"), {}),
            "Asset by code": ("find", "Asset", [["code", "starts_with", "tree"]], ["code", "shots"], {}),
            "Sequence of a project": ("find", "Sequence", [["project", "is", {"type": "Project", "id": 1}]],
                                      ["code", "shots"], {}),
            "a HumanUser": ("find_one", "HumanUser", [["login", "is", "bob"]], self.fields("HumanUser"), {}),
        })
        answers = {}
        for label, (method, etype, filters, fields, kwargs) in reads.items():
            answers[label] = await self.assertLocal(method, etype, filters, fields, **kwargs)
        # the fixture's rows are all there, live ones in the default reads
        for etype in SCHEMA.entities:
            live = [row["id"] for row in SITE["rows"][etype] if not row["__retired"]]
            self.assertEqual([r["id"] for r in answers[etype]], live, etype)
        self.assertEqual([r["id"] for r in answers["Shot retired"]], [107])
        # every filter matches some rows (an empty answer proves little)
        self.assertEqual([label for label, answer in answers.items() if not answer], [])
        self.assertEqual(answers["a HumanUser"]["name"], "Bob Roy")

        # one per request: the client reads a find in pages
        self.assertGreaterEqual(daemon.cache.counters["read.local"] - local_before, len(reads))
        info = await deferToThread(self.sg.info)
        block = info["sgcache"]
        self.assertTrue(block["serving"])
        self.assertEqual(block["loading"], {})
        self.assertGreaterEqual(block["reads_local"], len(reads))
        self.assertEqual(block["passthrough_reasons"], reasons_before)
        self.assertIsNone(block["scan"]["last"])
        # no field went back to pending, no scan ran meanwhile
        states = await daemon.store.field_states()
        self.assertEqual(
            {(t, f) for t, fields in states.items() for f, s in fields.items() if s != layout.FIELD_READY},
            set(),
        )
        self.assertIsNone(scanner.last_scan)

    async def test_events_go_on_from_the_stored_cursor(self) -> None:
        self.emulator.advance_clock(5)
        await deferToThread(self.direct.update, "Shot", 100, {"code": "sh000 (v2)", "sg_status_list": "fin"})
        self.emulator.advance_clock(5)
        await deferToThread(self.direct.update, "Asset", 44, {"shots": [{"type": "Shot", "id": 100}]})
        applied = await self.daemon.service.poller.poll()
        self.assertGreaterEqual(applied, 2)
        self.assertGreaterEqual(self.daemon.service.poller.cursor, SITE["next_event_id"] + 1)
        shot = await self.assertLocal("find_one", "Shot", [["id", "is", 100]], self.fields("Shot"))
        self.assertEqual(shot["code"], "sh000 (v2)")
        self.assertEqual(shot["assets"], [{"type": "Asset", "id": 44, "name": "rock_4"}])
        await self.assertLocal("find", "Asset", [["shots", "is", {"type": "Shot", "id": 100}]], ["code", "shots"])
        self.assertIsNone(self.daemon.service.scanner.last_scan)


class SQLiteServesAfterUpgradeTests(SQLiteHelpers, ServesAfterUpgradeMixin, unittest.TestCase):
    pass


class PostgresServesAfterUpgradeTests(PostgresHelpers, ServesAfterUpgradeMixin, unittest.TestCase):
    pass
