"""The event poller against the emulator over HTTP: one test per event edge
case (New, Change, in_create, multi-entity add/remove, backrefs, retirement,
revival, uncached types, schema changes, holes filled late or given up, a
truncated or rewound log, restarts with open holes), atomic progress when
the store fails mid-apply, and back-off on upstream trouble.

The poller runs on a `Clock` (hole timeouts, back-off delays) while its
upstream client uses the real reactor; after each poll the store's served
reads are compared with the emulator's.
"""

from __future__ import annotations

import json
import os

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from sgcache.sync import poller as poller_module
from sgcache.sync.poller import CURSOR_KEY, HOLES_KEY, RESCAN_KEY, EventPoller
from sgcache.schema import Schema
from sgcache.store import apply as store_apply
from sgcache.store import open_store
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import start_emulator
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.eventlog import EventContext
from sgcache.testing.syncdump import differences, emulator_dump, store_dump
from sgcache.site.client import Upstream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
TYPES = ["Project", "Sequence", "Shot", "Task", "HumanUser", "Asset"]
PROJECT = {"type": "Project", "id": 1}


def inject_event(emulator, event_type: str, entity, meta: dict) -> int:
    """Write an event the emulator's own writes never produce."""
    return emulator.events.write(EventContext(user=None, now=emulator.now()), event_type, entity=entity, meta=meta)


async def wait_for(condition, timeout: float = 10.0) -> None:
    """Let the real reactor run until `condition()` holds."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition never held")
        await task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


class PollerMixin:
    page_size = 500

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, ("test", "key")]))
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(
            [{"type": "Project", "id": 1, "fields": {"name": "Demo"}}]
            + [{"type": "HumanUser", "id": 100 + i, "fields": {"name": n, "login": n}} for i, n in enumerate("abc")]
            + [{"type": "Sequence", "id": 10, "fields": {"code": "SQ10", "project": PROJECT}}]
        )
        self.store = open_store(await self.store_url(), reactor)
        await self.store.open()
        self.addCleanup(lambda: self.store.close())
        await self.store.sync_schema(SCHEMA)
        self.upstream = Upstream(reactor, self.site.url, *CACHE_SCRIPT)
        self.addCleanup(lambda: defer.ensureDeferred(self.upstream.close()))
        self.clock = task.Clock()
        self.clock.advance(reactor.seconds())
        self.gaps: list[tuple] = []
        self.poller = self.make_poller()
        await self.poller.initialize()
        # what existed before the cursor: loaded as a scan would
        from sgcache.sync.scanner import Scanner

        await Scanner(reactor, SCHEMA, self.store, self.upstream).full_scan(TYPES)

    def make_poller(self) -> EventPoller:
        return EventPoller(
            self.clock, SCHEMA, self.store, self.upstream, page_size=self.page_size,
            hole_timeout=300.0, on_gap=lambda *a: self.gaps.append(a),
        )

    async def assertSynced(self, types=TYPES):
        ours = await store_dump(self.store, SCHEMA, types, mark_ready=True)
        theirs = emulator_dump(self.emulator, SCHEMA, types)
        self.assertEqual(differences(ours, theirs), [])

    async def poll(self) -> int:
        return await self.poller.poll()

    # -- event kinds ----------------------------------------------------------
    async def test_new_and_in_create(self):
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT,
                                             "sg_sequence": {"type": "Sequence", "id": 10},
                                             "description": "made"})
        self.assertGreater(await self.poll(), 2)  # New + in_create Changes + backref
        await self.assertSynced()
        self.assertEqual(self.poller.counters["new"], 1)
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = ?', [shot["id"]])
        self.assertEqual(rows, [("sh010",)])

    async def test_change(self):
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        self.emulator.update("Shot", shot["id"], {"code": "renamed", "sg_status_list": "ip"})
        await self.poll()
        await self.assertSynced()
        self.assertGreaterEqual(self.poller.counters["change"], 2)

    async def test_multi_entity_add_remove_set(self):
        task_ = self.emulator.create("Task", {"content": "t", "project": PROJECT,
                                              "task_assignees": [{"type": "HumanUser", "id": 100}]})
        await self.poll()
        self.emulator.update("Task", task_["id"], {"task_assignees": [{"type": "HumanUser", "id": 102}]},
                             multi_entity_update_modes={"task_assignees": "add"})
        await self.poll()
        await self.assertSynced()
        self.emulator.update("Task", task_["id"], {"task_assignees": [{"type": "HumanUser", "id": 100}]},
                             multi_entity_update_modes={"task_assignees": "remove"})
        await self.poll()
        await self.assertSynced()
        self.emulator.update("Task", task_["id"], {"task_assignees": [{"type": "HumanUser", "id": 101},
                                                                      {"type": "HumanUser", "id": 100}]})
        await self.poll()
        await self.assertSynced()

    async def test_backref(self):
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        self.emulator.create("Task", {"content": "t", "project": PROJECT, "entity": {"type": "Shot", "id": shot["id"]}})
        other = self.emulator.create("Shot", {"code": "sh020", "project": PROJECT})
        await self.poll()
        await self.assertSynced()
        # moving the task: both shots' task lists change by backref events
        tid = self.emulator.find_one("Task", [])["id"]
        self.emulator.update("Task", tid, {"entity": {"type": "Shot", "id": other["id"]}})
        await self.poll()
        await self.assertSynced()

    async def test_retirement_and_revival(self):
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        self.emulator.create("Task", {"content": "t", "project": PROJECT, "entity": {"type": "Shot", "id": shot["id"]}})
        await self.poll()
        self.emulator.delete("Shot", shot["id"])
        await self.poll()
        await self.assertSynced()
        self.assertEqual(self.poller.counters["retirement"], 1)
        rows = await self.store.fetch('SELECT "_active" FROM "Shot" WHERE id = ?', [shot["id"]])
        self.assertEqual(rows, [(0,)])
        self.emulator.revive("Shot", shot["id"])
        await self.poll()
        await self.assertSynced()
        self.assertEqual(self.poller.counters["revival"], 1)

    async def test_change_to_an_entity_the_cache_lacks_fetches_it(self):
        self.emulator.set_generate_events(False)
        shot = self.emulator.create("Shot", {"code": "quiet", "project": PROJECT})
        self.emulator.set_generate_events(True)
        self.emulator.update("Shot", shot["id"], {"description": "loud"})
        await self.poll()
        await self.assertSynced()

    async def test_uncached_type_and_schema_change_are_skipped_and_counted(self):
        inject_event(self.emulator, "Shotgun_CustomEntity42_Change",
                     {"type": "CustomEntity42", "id": 3}, {"entity_type": "CustomEntity42", "entity_id": 3})
        inject_event(self.emulator, "Shotgun_DisplayColumn_New", {"type": "DisplayColumn", "id": 9},
                     {"entity_type": "DisplayColumn", "entity_id": 9})
        inject_event(self.emulator, "Toolkit_App_Startup", None, {})
        before = self.poller.cursor
        self.assertEqual(await self.poll(), 3)
        self.assertEqual(self.poller.cursor, before + 3)
        self.assertEqual(self.poller.counters["skipped_uncached"], 1)
        self.assertEqual(self.poller.counters["schema_changes"], 1)
        self.assertEqual(self.poller.counters["skipped_other"], 1)
        self.assertEqual(await self.store.get_state(CURSOR_KEY), str(before + 3))

    async def test_no_pause_while_catching_up(self):
        self.poller.page_size = 5
        for i in range(8):
            self.emulator.create("Shot", {"code": f"s{i}", "project": PROJECT})
        applied = await self.poll()  # one call, many pages
        self.assertGreater(applied, 5 * 3)
        await self.assertSynced()

    def cap_site_pages(self, size: int) -> None:
        """The site answers at most `size` entities a page (its
        api_max_entities_per_page), below the poller's page size."""
        self.emulator.page_size = self.emulator.engine.max_page_size = size

    async def test_site_pages_smaller_than_ours(self):
        # a page of 3 when 500 were asked is not the end of the log
        self.cap_site_pages(3)
        for i in range(8):
            self.emulator.create("Shot", {"code": f"s{i}", "project": PROJECT})
        applied = await self.poll()
        self.assertGreaterEqual(applied, 8 * 3)
        await self.assertSynced()

    # -- holes -------------------------------------------------------------
    async def test_holes_filled_through_small_site_pages(self):
        self.cap_site_pages(3)
        await self.poll()
        self.emulator.hold_events(count=7)
        shots = [self.emulator.create("Shot", {"code": f"h{i}", "project": PROJECT}) for i in range(4)]
        await self.poll()
        self.assertEqual(len(self.poller.holes), 7)
        self.emulator.release_events()
        await self.poll()
        self.assertEqual(self.poller.holes, {})
        self.assertEqual(self.poller.counters["holes_filled"], 7)
        self.assertEqual(len(shots), 4)
        await self.assertSynced()

    async def test_hole_filled_late(self):
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        self.emulator.hold_events(count=1)
        self.emulator.update("Shot", shot["id"], {"code": "late"})
        other = self.emulator.create("Shot", {"code": "sh020", "project": PROJECT})
        await self.poll()
        self.assertEqual(len(self.poller.holes), 1)
        hole = sorted(self.poller.holes)[0]
        self.assertEqual(json.loads(await self.store.get_state(HOLES_KEY)), {str(hole): self.clock.seconds()})
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = ?', [shot["id"]])
        self.assertEqual(rows, [("sh010",)])  # its event is not visible yet
        self.assertTrue(await self.store.fetch('SELECT id FROM "Shot" WHERE id = ?', [other["id"]]))
        self.emulator.release_events()
        self.clock.advance(30)
        await self.poll()
        self.assertEqual(self.poller.holes, {})
        self.assertEqual(self.poller.counters["holes_filled"], 1)
        await self.assertSynced()

    async def test_hole_given_up(self):
        self.emulator.skip_event_ids(1)
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        self.assertEqual(len(self.poller.holes), 1)
        self.clock.advance(299)
        await self.poll()
        self.assertEqual(len(self.poller.holes), 1)
        self.clock.advance(2)
        await self.poll()
        self.assertEqual(self.poller.holes, {})
        self.assertEqual(self.poller.counters["holes_given_up"], 1)
        self.assertEqual(await self.store.get_state(HOLES_KEY), "{}")

    async def test_restart_keeps_waiting_for_holes(self):
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        self.emulator.hold_events(count=1)
        self.emulator.update("Shot", shot["id"], {"code": "late"})
        self.emulator.create("Shot", {"code": "sh020", "project": PROJECT})
        await self.poll()
        holes = dict(self.poller.holes)
        self.assertEqual(len(holes), 1)
        # a new process: cursor and holes come from the store
        self.poller = self.make_poller()
        await self.poller.initialize()
        self.assertEqual(self.poller.holes, holes)
        self.emulator.release_events()
        await self.poll()
        self.assertEqual(self.poller.holes, {})
        await self.assertSynced()

    # -- truncated / rewound log ----------------------------------------------------
    async def test_truncated_log_requests_a_rescan(self):
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        cursor = self.poller.cursor
        lost = self.emulator.create("Shot", {"code": "lost", "project": PROJECT})
        self.emulator.truncate_events(below=self.emulator.events.next_id)  # cursor's event gone
        kept = self.emulator.create("Shot", {"code": "kept", "project": PROJECT})
        await self.poll()
        self.assertEqual(len(self.gaps), 1)
        self.assertIn("truncated", self.gaps[0][0])
        self.assertIn(f"event {cursor} is gone", self.gaps[0][0])
        self.assertTrue(json.loads(await self.store.get_state(RESCAN_KEY))["reason"])
        self.assertTrue(await self.store.fetch('SELECT id FROM "Shot" WHERE id = ?', [kept["id"]]))
        self.assertFalse(await self.store.fetch('SELECT id FROM "Shot" WHERE id = ?', [lost["id"]]))
        # the rescan catches what the lost events said
        from sgcache.sync.scanner import Scanner

        scanner = Scanner(reactor, SCHEMA, self.store, self.upstream)
        await scanner.incremental_scan(TYPES, since=self.gaps[0][1], reason=self.gaps[0][0], answers_request=True)
        self.assertEqual(await self.store.get_state(RESCAN_KEY), "")
        await self.assertSynced()
        # later polls are normal again
        self.emulator.create("Shot", {"code": "after", "project": PROJECT})
        await self.poll()
        self.assertEqual(len(self.gaps), 1)
        await self.assertSynced()

    async def test_rewound_log_requests_a_rescan(self):
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        self.emulator.truncate_events(below=10**9)
        self.emulator.events.next_id = 1  # a restored site: ids start again
        self.emulator.advance_clock(60)
        self.emulator.create("Shot", {"code": "again", "project": PROJECT})
        await self.poll()
        self.assertEqual(len(self.gaps), 1)
        self.assertIn("rewound", self.gaps[0][0])
        self.assertEqual(self.poller.cursor, self.emulator.events.next_id - 1)

    # -- atomic progress ---------------------------------------------------------------
    async def test_store_failure_mid_apply_commits_nothing(self):
        await self.poll()
        cursor = self.poller.cursor
        shot = self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        original = store_apply.write_state
        calls = []

        async def broken(cur, items):
            calls.append(items)
            raise RuntimeError("disk on fire")

        self.patch(store_apply, "write_state", broken)
        with self.assertRaises(RuntimeError):
            await self.poll()
        self.assertTrue(calls)  # the rows were written in the transaction, then rolled back
        self.assertEqual(await self.store.fetch('SELECT id FROM "Shot" WHERE id = ?', [shot["id"]]), [])
        self.assertEqual(await self.store.get_state(CURSOR_KEY), str(cursor))
        self.assertEqual(self.poller.cursor, cursor)
        self.patch(store_apply, "write_state", original)
        await self.poll()
        await self.assertSynced()

    # -- resilience -------------------------------------------------------------------------
    async def test_upstream_failures_back_off_and_recover(self):
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        self.emulator.fail_next(1, status=503)
        self.emulator.fail_next(1, status=500)
        self.emulator.fail_next(1, reset=True)
        self.poller.interval = 3600
        self.poller.start()
        self.addCleanup(self.poller.stop)
        for expected, delay in ((1, 1.0), (2, 2.0), (3, 4.0)):
            await wait_for(lambda: self.poller.errors == expected)
            self.assertEqual(self.poller.backoff.failures, expected)
            self.clock.advance(delay)
        await wait_for(lambda: self.poller.caught_up_at is not None)
        self.assertEqual(self.poller.backoff.failures, 0)
        await self.assertSynced()
        status = self.poller.status()
        self.assertEqual(status["poll_errors"], 3)
        self.assertIsNotNone(status["event_lag_seconds"])

    async def test_auth_failure_backs_off_and_recovers(self):
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        self.upstream.api_key = "wrong"
        self.poller.interval = 3600
        self.poller.start()
        self.addCleanup(self.poller.stop)
        await wait_for(lambda: self.poller.errors == 1)
        self.assertIn("auth", self.poller.last_error)
        self.upstream.api_key = CACHE_SCRIPT[1]
        self.clock.advance(1)
        await wait_for(lambda: self.poller.caught_up_at is not None)
        await self.assertSynced()

    async def test_status_reports_lag_and_holes(self):
        self.emulator.skip_event_ids(1)
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        status = self.poller.status()
        self.assertEqual(status["last_event_id"], self.poller.cursor)
        self.assertEqual(len(status["holes"]), 1)
        created = poller_module.parse_wire_time(status["last_event_created_at"])
        self.assertEqual(status["newest_event_age_seconds"], round(max(0.0, self.clock.seconds() - created), 1))
        # lag: since the last poll that read to the end of the log
        self.assertEqual(status["event_lag_seconds"], 0.0)
        self.clock.advance(30)
        self.assertEqual(self.poller.status()["event_lag_seconds"], 30.0)

    async def test_lag_stays_low_on_a_quiet_site_and_grows_while_polls_fail(self):
        """The lag is the time since the cache was last known complete, not
        the age of the newest event: a quiet night does not raise it."""
        self.emulator.create("Shot", {"code": "sh010", "project": PROJECT})
        await self.poll()
        # a quiet night: no new events (2 s more: the event was stamped by
        # the site's real clock, after this test's clock was set at setUp)
        self.clock.advance(3 * 3600 + 2)
        await self.poll()
        status = self.poller.status()
        self.assertEqual(status["event_lag_seconds"], 0.0)
        self.assertGreaterEqual(status["newest_event_age_seconds"], 3 * 3600)
        # the site goes away: the lag grows from the last complete poll
        self.emulator.fail_next(1, status=503)
        with self.assertRaises(Exception):
            await self.poll()
        self.clock.advance(120)
        self.assertEqual(self.poller.status()["event_lag_seconds"], 120.0)
        # kept in the store: a restarted poller knows when it was complete
        kept = await self.store.get_state(poller_module.CAUGHT_UP_KEY)
        self.assertEqual(float(kept), self.poller.caught_up_at)
        self.poller.cursor = None
        self.poller.caught_up_at = None
        await self.poller.initialize()
        self.assertEqual(self.poller.lag_seconds(), 120.0)


class SQLitePollerTests(PollerMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresPollerTests(PollerMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
