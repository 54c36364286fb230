"""The scanner against the emulator over HTTP: full scans (hard deletes,
projects), incremental scans (watermarks, changes made without events,
retirements that do not move updated_at), resuming after a crash, stale
pages refused, missing link targets fetched, back-off, update log.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sgcache.sync import scanner as scanner_module
from sgcache.sync.poller import EventPoller
from sgcache.sync.scanner import PENDING_KEY, PROGRESS_PREFIX, SLICE_PREFIX, WATERMARK_PREFIX, Scanner
from sgcache.schema import Schema
from sgcache.store import open_store
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import start_emulator
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.syncdump import differences, emulator_dump, store_dump
from sgcache.site.client import Upstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
TYPES = ["Project", "Sequence", "Shot", "Task", "HumanUser", "Asset", "ApiUser"]
P1, P2 = {"type": "Project", "id": 1}, {"type": "Project", "id": 2}


class Crash(Exception):
    pass


def first_page_of_shot_100(entity_type, conditions, return_only, after_id, *rest) -> bool:
    """A scan's `_read` of the page that holds Shot 100 (its type may be
    read in several slices at once)."""
    return entity_type == "Shot" and return_only == "active" and after_id < 100 and not rest


class ScanFixture:
    """An emulator with Projects, Shots and Tasks, a store, an upstream and
    a scanner; subclasses give the store URL."""

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT]), page_size=7)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(
            [{"type": "Project", "id": p, "fields": {"name": f"P{p}"}} for p in (1, 2)]
            + [{"type": "Shot", "id": 100 + i, "fields": {"code": f"sh{i:03d}", "project": P1 if i % 3 else P2}}
               for i in range(30)]
            + [{"type": "Task", "id": 500 + i, "fields": {"content": f"t{i}", "project": P1,
                                                          "entity": {"type": "Shot", "id": 100 + i}}}
               for i in range(10)]
        )
        self.store = open_store(await self.store_url(), reactor)
        await self.store.open()
        self.addCleanup(lambda: self.store.close())
        await self.store.sync_schema(SCHEMA)
        self.upstream = Upstream(reactor, self.site.url, *CACHE_SCRIPT)
        self.addCleanup(lambda: defer.ensureDeferred(self.upstream.close()))
        self.scanner = self.make_scanner()

    def make_scanner(self, **kw) -> Scanner:
        kw.setdefault("page_size", 7)
        return Scanner(reactor, SCHEMA, self.store, self.upstream, **kw)

    async def assertSynced(self, types=TYPES):
        ours = await store_dump(self.store, SCHEMA, types, mark_ready=True)
        theirs = emulator_dump(self.emulator, SCHEMA, types)
        self.assertEqual(differences(ours, theirs), [])

    def hold_first_call(self, owner: object, name: str, which=lambda *args: True) -> tuple[defer.Deferred, defer.Deferred]:
        """Make the first call of the async callable `owner.name` (for which
        `which(*args)` holds) wait, after it has done its work (an upstream
        read), until the returned `release` fires; `done` fires once that
        work is done."""
        original = getattr(owner, name)
        done, release = defer.Deferred(), defer.Deferred()

        async def slow(*args, **kw):
            result = await original(*args, **kw)
            if not done.called and which(*args):
                done.callback(None)
                await release
            return result

        self.patch(owner, name, slow)
        return done, release


class ScannerMixin(ScanFixture):
    """Scanner behaviour: full, incremental, resumable, fenced."""

    async def test_full_scan_refreshes_planner_statistics(self):
        await self.scanner.full_scan(["Shot", "Task"])
        if self.store.dialect == "postgresql":
            rows = await self.store.fetch(
                "SELECT relname, reltuples FROM pg_class WHERE relname IN ('Shot', 'Task__task_assignees') "
                "ORDER BY relname", [])
            self.assertEqual([r[0] for r in rows], ["Shot", "Task__task_assignees"])
            self.assertEqual(rows[0][1], 30)  # -1 until a table is analyzed
            self.assertGreaterEqual(rows[1][1], 0)
        else:
            rows = await self.store.fetch("SELECT DISTINCT tbl FROM sqlite_stat1 ORDER BY tbl", [])
            self.assertIn(("Shot",), rows)
            self.assertIn(("Task",), rows)

    async def test_full_scan_loads_and_removes_hard_deletes(self):
        self.emulator.delete("Shot", 105)
        self.assertEqual(await self.scanner.full_scan(TYPES), 42 + len(self.emulator.db["ApiUser"]))
        await self.assertSynced()
        states = await self.store.field_states()
        self.assertEqual(set(states["Shot"].values()), {"ready"})
        self.assertTrue(await self.store.get_state(WATERMARK_PREFIX + "Shot"))
        self.assertEqual(await self.store.get_state(PENDING_KEY), "")
        # hard deletes (gone from the site altogether), at the start, middle and end
        for eid in (110, 113, 129, 115):
            del self.emulator.db["Shot"][eid]
        await self.scanner.full_scan(["Shot"])
        await self.assertSynced()
        self.assertEqual(self.scanner.removed, 4)

    async def test_full_scan_of_some_projects(self):
        await self.scanner.full_scan(TYPES)
        del self.emulator.db["Shot"][101]  # project 1
        del self.emulator.db["Shot"][102]  # project 1
        del self.emulator.db["Shot"][103]  # project 2: not scanned, stays
        self.emulator.update("Shot", 104, {"code": "p1 change"})
        await self.scanner.full_scan(["Shot", "Project", "HumanUser"], projects=[1])
        ids = {r[0] for r in await self.store.fetch('SELECT id FROM "Shot"', [])}
        self.assertNotIn(101, ids)
        self.assertNotIn(102, ids)
        self.assertIn(103, ids)
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = 104', [])
        self.assertEqual(rows, [("p1 change",)])

    async def test_incremental_scan_sees_changes_made_without_events(self):
        await self.scanner.full_scan(TYPES)
        # move the watermarks well past the seeded rows' updated_at
        self.emulator.advance_clock(600)
        for etype, eid in (("Shot", 100), ("Task", 500)):
            self.emulator.update(etype, eid, {"description" if etype == "Shot" else "content": "bump"})
        await self.scanner.incremental_scan(TYPES)
        self.assertEqual(self.scanner.reconciled, 0)
        self.emulator.advance_clock(120)
        self.emulator.set_generate_events(False)
        self.emulator.update("Shot", 110, {"code": "quiet"})
        self.emulator.create("Shot", {"code": "new quiet", "project": P1})
        self.emulator.delete("Shot", 111)   # no updated_at change: found by the fingerprint
        self.emulator.delete("Task", 505)
        self.emulator.revive("Task", 505)
        self.emulator.delete("Task", 506)
        reads = self.emulator.counters().get("read", 0)
        await self.scanner.incremental_scan(TYPES)
        await self.assertSynced()
        self.assertGreater(self.scanner.reconciled, 0)
        # the incremental read only what moved (plus the overlap), not everything
        self.assertLess(self.emulator.counters()["read"] - reads, 30)

    async def test_resume_after_a_crash(self):
        await self.scanner.full_scan(TYPES)
        original = self.scanner._apply_page
        calls = []

        async def crashing(*args, **kw):
            calls.append(1)
            if len(calls) == 3:
                raise Crash()
            return await original(*args, **kw)

        self.scanner._apply_page = crashing
        self.scanner.max_failures = 1
        for eid in (111, 128):  # hard deletes before and after the crash point
            del self.emulator.db["Shot"][eid]
        self.emulator.update("Shot", 127, {"code": "changed"})
        with self.assertRaises(Exception):
            await self.scanner.full_scan(["Shot"])
        # the type's plan (its id slices), and each slice's last page
        progress = json.loads(await self.store.get_state(PROGRESS_PREFIX + "Shot"))
        self.assertEqual(progress["slices"], [[0, None]])
        piece = json.loads(await self.store.get_state(SLICE_PREFIX + "Shot:0"))
        self.assertGreater(piece["after_id"], 100)
        # a new process resumes from the saved page
        self.scanner = self.make_scanner()
        self.assertIsNotNone(await self.scanner.resume())
        await self.assertSynced(["Shot"])
        self.assertEqual(self.scanner.removed, 2)
        self.assertIsNone(await self.scanner.resume())

    def sliced_scanner(self) -> tuple[Scanner, list]:
        """A scanner with 4 workers and a slice per page expected (30 Shots,
        7 a page: 5 slices); the list gets every plan's slices."""
        self.patch(scanner_module, "SLICE_PAGES", 1)
        scanner = self.make_scanner(concurrency=4)
        plans: list = []
        original = scanner._slice_bounds

        def recording(*args):
            bounds = original(*args)
            plans.append(bounds)
            return bounds

        scanner._slice_bounds = recording
        return scanner, plans

    async def test_a_sliced_full_scan_finds_hard_deletes_in_every_slice(self):
        self.emulator.delete("Shot", 124)   # retired, then gone from the site
        self.emulator.delete("Shot", 125)   # retired, then revived
        self.emulator.delete("Shot", 126)   # retired, stays retired
        await self.scanner.full_scan(TYPES)
        self.scanner, plans = self.sliced_scanner()
        # gone from the site altogether: first and last ids, both sides of
        # slice bounds, a whole slice's worth in the middle
        gone = (100, 105, 106, 111, 112, 113, 114, 115, 116, 117, 123, 124, 129)
        for eid in gone:
            del self.emulator.db["Shot"][eid]
        self.emulator.update("Shot", 110, {"code": "changed"})
        self.emulator.delete("Shot", 119)   # active, now retired
        self.emulator.revive("Shot", 125)
        await self.scanner.full_scan(["Shot"])
        await self.assertSynced(["Shot"])  # (Tasks link some of the gone Shots)
        self.assertEqual(self.scanner.removed, len(gone))
        # 16 active Shots: 3 slices of active rows, and one of retired ones
        self.assertEqual(plans[-1][0], [0, None, "retired"])
        self.assertEqual(len(plans[-1]), 4, plans)
        # the slices span the type's ids on the site (101..128), not 0..128
        self.assertEqual(plans[-1][1][1], 100 + 9)

    async def test_a_concurrent_scan_killed_mid_way_resumes_with_no_gap_and_no_duplicate(self):
        await self.scanner.full_scan(TYPES)
        self.scanner, plans = self.sliced_scanner()
        gone = (101, 108, 116, 121, 129)  # one in each slice
        for eid in gone:
            del self.emulator.db["Shot"][eid]
        self.emulator.update("Shot", 112, {"code": "changed"})
        original = self.scanner._apply_page
        calls = []

        async def crashing(run, piece, entities, *args, **kw):
            calls.append(1)
            if len(calls) == 4:
                raise Crash()
            return await original(run, piece, entities, *args, **kw)

        self.scanner._apply_page = crashing
        self.scanner.max_failures = 1
        with self.assertRaises(Exception):
            await self.scanner.full_scan(["Shot"])
        await task.deferLater(reactor, 0.2, lambda: None)  # let pages in flight land
        # what the kill left behind: the plan, and each slice's position
        progress = json.loads(await self.store.get_state(PROGRESS_PREFIX + "Shot"))
        self.assertEqual(len(progress["slices"]), 5)  # 25 Shots: 4 pages, 4 slices, and the retired
        done: set[int] = set()
        for index, bounds in enumerate(progress["slices"]):
            if len(bounds) > 2:
                continue  # the retired rows' slice
            low, high = bounds
            raw = await self.store.get_state(SLICE_PREFIX + f"Shot:{index}")
            state = json.loads(raw) if raw else {"phase": 0, "after_id": low}
            top = high if high is not None else 10 ** 9
            if state.get("done") or state["phase"] > 0:
                done |= {i for i in self.emulator.db["Shot"] if low < i <= top}
            else:
                done |= {i for i in self.emulator.db["Shot"] if low < i <= int(state["after_id"])}
        self.assertTrue(done, "no page was applied before the kill")
        # a new process resumes: it reads only what was not applied
        self.scanner = self.make_scanner(concurrency=4)
        resumed: list[int] = []
        original = self.scanner._apply_page

        async def recording(run, piece, entities, has_next, phase_index, *args, **kw):
            if phase_index == 0:
                resumed.extend(int(e["id"]) for e in entities)
            return await original(run, piece, entities, has_next, phase_index, *args, **kw)

        self.scanner._apply_page = recording
        self.assertIsNotNone(await self.scanner.resume())
        await self.assertSynced(["Shot"])
        self.assertEqual(self.scanner.removed, len(gone))
        self.assertTrue(resumed, "the kill left nothing to resume")
        self.assertEqual(len(resumed), len(set(resumed)))                  # no page twice
        self.assertEqual(set(resumed) & done, set())                       # no duplicate
        self.assertEqual(set(resumed) | done, set(self.emulator.db["Shot"]))  # no gap
        self.assertIsNone(await self.scanner.resume())

    async def test_slow_scan_page_with_older_data_does_not_win(self):
        await self.scanner.full_scan(TYPES)
        poller = EventPoller(reactor, SCHEMA, self.store, self.upstream, freshness=None)
        await poller.initialize()
        read, release = self.hold_first_call(self.scanner, "_read", first_page_of_shot_100)
        scan = self.scanner.full_scan(["Shot"])  # first page read with the old values
        await read
        self.emulator.advance_clock(5)
        self.emulator.update("Shot", 100, {"code": "newer"})
        await poller.poll()
        release.callback(None)
        await scan
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = 100', [])
        self.assertEqual(rows, [("newer",)])

    async def test_same_second_stale_page_refused_by_the_fence(self):
        await self.scanner.full_scan(TYPES)
        poller = EventPoller(reactor, SCHEMA, self.store, self.upstream, freshness=self.scanner.freshness)
        await poller.initialize()
        self.emulator.set_clock(self.emulator.now())  # frozen: everything in one second
        read, release = self.hold_first_call(self.scanner, "_read", first_page_of_shot_100)
        scan = self.scanner.full_scan(["Shot"])
        await read
        self.emulator.update("Shot", 100, {"code": "same second"})
        await poller.poll()
        release.callback(None)
        await scan
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = 100', [])
        self.assertEqual(rows, [("same second",)])
        self.assertGreater(self.scanner.freshness.dropped, 0)

    async def test_missing_link_targets_are_fetched(self):
        await self.scanner.full_scan(["Shot", "Project"])
        self.emulator.advance_clock(120)
        self.emulator.update("Shot", 100, {"sg_sequence": self.emulator.create("Sequence", {"code": "SQ"})})
        await self.scanner.incremental_scan(["Shot"])
        rows = await self.store.fetch('SELECT code FROM "Sequence"', [])
        self.assertEqual(rows, [("SQ",)])

    async def test_failures_back_off_and_recover(self):
        clock = task.Clock()
        scanner = self.make_scanner()
        scanner._sleeper.reactor = clock
        self.emulator.fail_next(2, status=502, methods=["read"])
        scan = scanner.full_scan(["Shot", "ApiUser", "Project", "Task"])
        while scanner.errors < 1:
            await task.deferLater(reactor, 0.01, lambda: None)
        clock.advance(1)
        while scanner.errors < 2:
            await task.deferLater(reactor, 0.01, lambda: None)
        clock.advance(2)
        self.assertEqual(await scan, 40 + len(self.emulator.db["ApiUser"]) + 2)
        await self.assertSynced(["Shot"])

    async def test_update_log(self):
        await self.scanner.full_scan(TYPES)
        entries = await self.store.update_log("Shot", 100)
        self.assertEqual([(e["source"], e["fields"]) for e in entries], [("scan", "*")])
        await self.scanner.full_scan(TYPES)  # nothing moved: nothing logged
        self.assertEqual(len(await self.store.update_log("Shot", 100)), 1)
        poller = EventPoller(reactor, SCHEMA, self.store, self.upstream)
        await poller.initialize()
        self.emulator.advance_clock(5)
        self.emulator.update("Shot", 100, {"code": "c", "description": "d"})
        await poller.poll()
        last = (await self.store.update_log("Shot", 100))[-1]
        self.assertEqual((last["source"], last["fields"]), ("event", "code,description"))
        self.assertEqual(last["event_id"], poller.cursor)
        self.assertGreater(await self.store.prune_update_log(reactor.seconds() + 1), 40)
        self.assertEqual(await self.store.update_log("Shot", 100), [])


class SQLiteScannerTests(ScannerMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresScannerTests(ScannerMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
