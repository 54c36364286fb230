"""`sgcache log TYPE ID` and `sgcache reprocess --events FROM..TO [--kind K]`
(sgcache/admin_sync.py), with `sgcache scan --full` / `sgcache status`, run
as real subprocesses against an emulator served by the test process."""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from sgcache.demo import demo_entities
from sgcache.schema import Schema
from sgcache.store import open_store
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import start_emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASIC = os.path.join(ROOT, "schema", "basic.yml")
SHOTS = list(range(201, 213))  # the demo project's twelve shots


def python(*args: str) -> defer.Deferred:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
    environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
    return getProcessOutputAndValue(sys.executable, list(args), env=environ, path=ROOT)


def sgcache(*args: str) -> defer.Deferred:
    return python("-m", "sgcache.admin.cli", *args)


class AdminSyncTests(unittest.TestCase):
    async def _loaded_site(self):
        """An emulator with the demo project (no events) and a store loaded
        from it by `sgcache scan --full`. Pages of 5 make reads page."""
        self.schema = Schema.load(BASIC)
        self.site = await start_emulator(self.schema, scripts=dict([CACHE_SCRIPT]), page_size=5)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.site.emulator.seed([i for i in demo_entities() if i["type"] in self.schema])
        self.db = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
        self.upstream = ("--shotgun", self.site.url, "--script-name", CACHE_SCRIPT[0],
                         "--api-key", CACHE_SCRIPT[1])
        out, err, code = await sgcache("scan", "--full", "--schema", BASIC, "--db", self.db, *self.upstream)
        self.assertEqual(code, 0, err)
        self.assertEqual(self._events(), [], "seeding wrote no events")

    def _events(self) -> list[dict]:
        table = self.site.emulator.db["EventLogEntry"]
        return [table[i] for i in sorted(table)]

    def _next_event(self) -> int:
        return self.site.emulator.events.next_id

    async def _reprocess(self, events: str, *more: str) -> str:
        out, err, code = await sgcache(
            "reprocess", "--events", events, *more, "--schema", BASIC, "--db", self.db, *self.upstream
        )
        self.assertEqual(code, 0, err)
        self.assertNotIn(b"Traceback", err)
        return out.decode()

    async def _log(self, etype: str, eid: int) -> list[dict]:
        out, err, code = await sgcache("log", etype, str(eid), "--json", "--schema", BASIC, "--db", self.db)
        self.assertEqual(code, 0, err)
        return json.loads(out)

    async def _shots(self) -> dict[int, tuple[str, int]]:
        """Shot id -> (code, _active), as the store holds them."""
        store = open_store(self.db, reactor)
        await store.open()
        try:
            rows = await store.fetch('SELECT "id", "code", "_active" FROM "Shot"')
        finally:
            await store.close()
        return {int(i): (code, int(active)) for i, code, active in rows}

    async def _status(self) -> dict:
        out, err, code = await sgcache("status", "--json", "--schema", BASIC, "--db", self.db)
        self.assertEqual(code, 0, err)
        return json.loads(out)

    def _change_site(self) -> tuple[int, int]:
        """Rename shots 201..206 and retire 207: 8 events (six changes, and
        the retirement_date change + Retirement pair). Their id range."""
        first = self._next_event()
        for sid in SHOTS[:6]:
            self.site.emulator.update("Shot", sid, {"code": f"renamed_{sid}"})
        self.site.emulator.delete("Shot", 207)
        last = self._next_event() - 1
        kinds = [e["event_type"] for e in self._events() if first <= e["id"] <= last]
        self.assertEqual(kinds, ["Shotgun_Shot_Change"] * 7 + ["Shotgun_Shot_Retirement"])
        return first, last

    # -- reprocess ----------------------------------------------------------------

    def test_reprocess_applies_the_events_of_the_range(self):
        async def go():
            await self._loaded_site()
            before = await self._shots()
            self.assertEqual(len(before), 12)
            self.assertTrue(all(active == 1 for _, active in before.values()))
            first, last = self._change_site()
            # nothing polls: the store has not seen the changes yet
            self.assertEqual(await self._shots(), before)

            out = await self._reprocess(f"{first}..{last}")
            # more than one page of events (the site pages by 5)
            self.assertIn("reprocessed 8 events (7 entities re-read)", out)
            after = await self._shots()
            for sid in SHOTS[:6]:
                self.assertEqual(after[sid], (f"renamed_{sid}", 1))
            self.assertEqual(after[207], (before[207][0], 0))
            for sid in SHOTS[7:]:
                self.assertEqual(after[sid], before[sid])

            status = await self._status()
            self.assertEqual(status["types"]["Shot"]["rows"], 12)
            self.assertEqual(status["types"]["Shot"]["retired"], 1)
            # reprocess does not move the event cursor (the daemon's poller owns it)
            self.assertIsNone(status["event_cursor"])

            # applying the same range again is harmless
            out = await self._reprocess(f"{first}..{last}")
            self.assertIn("reprocessed 8 events (7 entities re-read)", out)
            self.assertEqual(await self._shots(), after)

        return defer.ensureDeferred(go())

    def test_reprocess_stays_inside_the_range(self):
        async def go():
            await self._loaded_site()
            before = await self._shots()
            first, last = self._change_site()
            # the second and third change events only
            out = await self._reprocess(f"{first + 1}..{first + 2}")
            self.assertIn("reprocessed 2 events (2 entities re-read)", out)
            after = await self._shots()
            self.assertEqual(after[201], before[201])
            self.assertEqual(after[202], ("renamed_202", 1))
            self.assertEqual(after[203], ("renamed_203", 1))
            self.assertEqual(after[204], before[204])
            self.assertEqual(after[207], before[207])
            # FROM..FROM is one event; a range past the log's end is fine
            out = await self._reprocess(f"{first}..{first}")
            self.assertIn("reprocessed 1 events (1 entities re-read)", out)
            self.assertEqual((await self._shots())[201], ("renamed_201", 1))
            out = await self._reprocess(f"{last + 1}..{last + 100}")
            self.assertIn("reprocessed 0 events (0 entities re-read)", out)

        return defer.ensureDeferred(go())

    def test_kind_retirement_only_reapplies_retirements(self):
        async def go():
            await self._loaded_site()
            before = await self._shots()
            first, last = self._change_site()
            out = await self._reprocess(f"{first}..{last}", "--kind", "retirement")
            self.assertIn("reprocessed 1 events (1 entities re-read)", out)
            after = await self._shots()
            self.assertEqual(after[207], (before[207][0], 0))
            for sid in SHOTS[:6]:
                self.assertEqual(after[sid], before[sid], "a change event was applied")
            entries = await self._log("Shot", 207)
            self.assertEqual([(e["source"], e["fields"]) for e in entries[1:]], [("event", "retirement")])
            self.assertEqual(entries[-1]["event_id"], last)
            self.assertEqual([e["source"] for e in await self._log("Shot", 201)], ["scan"])

            # the kind is matched case-insensitively; change picks the rest
            out = await self._reprocess(f"{first}..{last}", "--kind", "Change")
            self.assertIn("reprocessed 7 events (7 entities re-read)", out)
            after = await self._shots()
            for sid in SHOTS[:6]:
                self.assertEqual(after[sid], (f"renamed_{sid}", 1))

        return defer.ensureDeferred(go())

    def test_revival_is_reprocessed(self):
        async def go():
            await self._loaded_site()
            first, _ = self._change_site()
            await self._reprocess(f"{first}..{self._next_event() - 1}")
            self.assertEqual((await self._shots())[207][1], 0)
            revival = self._next_event()
            self.site.emulator.revive("Shot", 207)
            self.assertEqual(self._events()[-1]["event_type"], "Shotgun_Shot_Revival")
            out = await self._reprocess(f"{first}..{revival}", "--kind", "revival")
            self.assertIn("reprocessed 1 events (1 entities re-read)", out)
            self.assertEqual((await self._shots())[207][1], 1)
            self.assertEqual((await self._status())["types"]["Shot"]["retired"], 0)
            entries = await self._log("Shot", 207)
            self.assertEqual((entries[-1]["fields"], entries[-1]["event_id"]), ("revival", revival))

        return defer.ensureDeferred(go())

    # -- log ------------------------------------------------------------------------

    def test_log_shows_changes_with_their_source(self):
        async def go():
            await self._loaded_site()
            first, last = self._change_site()
            await self._reprocess(f"{first}..{last}")

            entries = await self._log("Shot", 201)
            self.assertEqual([(e["source"], e["fields"], e["event_id"]) for e in entries],
                             [("scan", "*", None), ("event", "code", first)])
            self.assertLess(entries[0]["seq"], entries[1]["seq"])
            self.assertLessEqual(entries[0]["at"], entries[1]["at"])
            retired = await self._log("Shot", 207)
            self.assertEqual([(e["source"], e["fields"], e["event_id"]) for e in retired],
                             [("scan", "*", None), ("event", "retirement,retirement_date", last)])

            # the text form: one line per entry, oldest first
            out, err, code = await sgcache("log", "Shot", "201", "--schema", BASIC, "--db", self.db)
            self.assertEqual(code, 0, err)
            lines = out.decode().splitlines()
            self.assertEqual(len(lines), 2, out)
            self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  scan\s+\*$")
            self.assertRegex(lines[1], rf"^\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\dZ  event\s+event {first}\s+code$")

            # --limit keeps the newest
            out, err, code = await sgcache("log", "Shot", "201", "--limit", "1", "--json",
                                           "--schema", BASIC, "--db", self.db)
            self.assertEqual(code, 0, err)
            self.assertEqual([e["source"] for e in json.loads(out)], ["event"])

            # an entity the log knows nothing of
            out, err, code = await sgcache("log", "Shot", "99999", "--schema", BASIC, "--db", self.db)
            self.assertEqual(code, 0, err)
            self.assertEqual(out.decode().strip(), "no update-log entries for Shot 99999")
            self.assertEqual(await self._log("Shot", 99999), [])

        return defer.ensureDeferred(go())

    # -- bad arguments -------------------------------------------------------------------

    def test_bad_arguments_are_one_line_and_status_2(self):
        db = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
        # nothing listens there: validation must come first
        upstream = ("--shotgun", "http://127.0.0.1:1", "--script-name", "a", "--api-key", "b")
        cases = [
            (("reprocess", "--events", "5", "--schema", BASIC, "--db", db, *upstream), "--events"),
            (("reprocess", "--events", "x..y", "--schema", BASIC, "--db", db, *upstream), "--events"),
            (("reprocess", "--events", "9..3", "--schema", BASIC, "--db", db, *upstream), "--events"),
            (("reprocess", "--events", "1..", "--schema", BASIC, "--db", db, *upstream), "--events"),
            (("reprocess", "--events", "1..5", "--kind", "bogus", "--schema", BASIC, "--db", db, *upstream),
             "--kind"),
            (("reprocess", "--events", "1..5", "--db", db, *upstream), "--schema"),
            (("log", "NoSuchType", "1", "--schema", BASIC, "--db", db), "NoSuchType"),
        ]

        async def go():
            for args, mention in cases:
                out, err, code = await sgcache(*args)
                text = err.decode()
                self.assertEqual(code, 2, (args, out, err))
                self.assertNotIn("Traceback", text + out.decode())
                lines = text.strip().splitlines()
                self.assertEqual(len(lines), 1, (args, text))
                self.assertIn(mention, lines[0], args)
                self.assertTrue(lines[0].startswith("sgcache: error: "), (args, text))

        return defer.ensureDeferred(go())


PG_SCHEMA_YAML = """\
entities:
  Shot:
    fields: {code: text, description: text}
"""


class AdminSyncPostgresTests(unittest.TestCase):
    """On PostgreSQL, `sgcache scan` and `sgcache reprocess` use the read
    fence the daemons share (`SharedFreshness`): a re-read a younger read
    of another process overtook is not applied over it."""

    timeout = 120

    async def _store(self):
        store = open_store(self.db, reactor)
        await store.open()
        self.addCleanup(store.close)
        return store

    async def _codes(self, store) -> dict[int, str]:
        return {int(i): code for i, code in await store.fetch('SELECT "id", "code" FROM "Shot"')}

    async def _younger_read_applied(self, store, entity_id: int, code: str) -> None:
        """What a daemon's write-back with a younger ticket left: the row
        and its stamp."""
        from sgcache.store.readstamps import STAMPS

        async def work(cur) -> None:
            await cur.execute('UPDATE "Shot" SET "code" = ? WHERE "id" = ?', [code, entity_id])
            await cur.execute(f"INSERT INTO {STAMPS} (entity_type, entity_id, ticket) VALUES ('Shot', ?, ?) "
                              "ON CONFLICT (entity_type, entity_id) DO UPDATE SET ticket = excluded.ticket",
                              [entity_id, 10 ** 12])

        await store._transaction("a younger read", work, changes_reads=False)

    def test_scan_and_reprocess_use_the_shared_fence(self):
        async def go():
            from sgcache.testing.pg import fresh_postgres_url

            self.db = await fresh_postgres_url(self)
            schema_path = os.path.abspath(self.mktemp()) + ".yml"
            with open(schema_path, "w") as fh:
                fh.write(PG_SCHEMA_YAML)
            schema = Schema.load(schema_path)
            site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT]))
            self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
            site.emulator.seed([{"type": "Shot", "id": n, "fields": {"code": f"sh{n:03d}"}} for n in range(1, 9)])
            upstream = ("--schema", schema_path, "--db", self.db, "--shotgun", site.url,
                        "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1])
            out, err, code = await sgcache("scan", "--full", *upstream)
            self.assertEqual(code, 0, err)
            store = await self._store()
            self.assertEqual((await self._codes(store))[3], "sh003")

            # scan: Shot 3's stored copy is from a younger read than the
            # scan's (same updated_at): kept; Shot 4, changed at the site, is not
            await self._younger_read_applied(store, 3, "younger")
            site.emulator.update("Shot", 4, {"code": "changed"})
            out, err, code = await sgcache("scan", "--full", *upstream)
            self.assertEqual(code, 0, err)
            codes = await self._codes(store)
            self.assertEqual((codes[3], codes[4], codes[5]), ("younger", "changed", "sh005"))

            # reprocess: the same for the entities of the events
            site.emulator.set_generate_events(True)
            first = site.emulator.events.next_id
            site.emulator.update("Shot", 5, {"code": "event5"})
            site.emulator.update("Shot", 6, {"code": "event6"})
            await self._younger_read_applied(store, 5, "younger5")
            out, err, code = await sgcache("reprocess", "--events", f"{first}..{first + 10}", *upstream)
            self.assertEqual(code, 0, err)
            self.assertIn("reprocessed 2 events (2 entities re-read)", out.decode())
            codes = await self._codes(store)
            self.assertEqual((codes[5], codes[6]), ("younger5", "event6"))

            # the commands took part in the store's cluster (their read
            # floors), and left no node behind
            self.assertEqual(await store.fetch("SELECT node FROM _sgcache_nodes"), [])
            self.assertEqual(await store.fetch("SELECT count(*) FROM _sgcache_read_horizon"), [(1,)],
                             "their rounds pruned (no daemon leads)")

        return defer.ensureDeferred(go())
