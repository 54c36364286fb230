"""Several daemons on one PostgreSQL store (`sgcache.store.leadership`):
one is elected to sync, the others serve what it keeps; when the leader
loses its election connection another takes over within the failover
time, and the deposed one can no longer commit a sync transaction
(fencing). In-process daemons in front of the emulator, through the real
client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Callable

import psycopg2
from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.store.leadership import Deposed
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

SCHEMA = Schema.from_dict({"entities": {
    "Shot": {"fields": {"code": "text", "sg_cut_in": "number", "description": "text"}}}
})

SHOTS = [{"type": "Shot", "id": n, "fields": {"code": f"sh{n:03d}", "sg_cut_in": n}} for n in range(1, 21)]

FAILOVER = 1.5


async def wait_for(what: str, ok: Callable[[], bool], seconds: float = 15.0) -> None:
    waited = 0.0
    while not ok():
        if waited > seconds:
            raise AssertionError(f"{what}: not within {seconds:g}s")
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


def _terminate_election_session(dsn: str) -> int:
    """Kill the session holding the leader's advisory lock (as PostgreSQL
    does when the leader's host is cut off); its backend pid."""
    with psycopg2.connect(dsn) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            pids = [row[0] for row in cur.fetchall()]
            assert len(pids) == 1, pids
            cur.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
    return pids[0]


class ClusterTests(unittest.TestCase):
    timeout = 90

    async def start(self) -> None:
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, ("test", "key")]))
        self.addCleanup(self.site.stop)
        self.site.emulator.seed(SHOTS)
        self.db = await fresh_postgres_url(self)
        self.direct = client(self.site.url)

    async def daemon(self, wait_ready: bool = True, **settings: Any) -> Any:
        running = await start_daemon(SCHEMA, self.site.url, self.db, wait_ready=wait_ready,
                                     settings={"failover_seconds": FAILOVER, **settings})
        self.addCleanup(running.stop)
        return running

    def read(self, sg: Any, **kw: Any) -> Any:
        from twisted.internet.threads import deferToThread

        return deferToThread(lambda: sg.find("Shot", [], ["code", "sg_cut_in", "description"],
                                             order=[{"field_name": "id", "direction": "asc"}], **kw))

    async def test_one_daemon_syncs_and_the_other_serves_what_it_keeps(self):
        await self.start()
        a = await self.daemon()
        b = await self.daemon()
        self.assertTrue(a.service.syncing)
        self.assertFalse(b.service.syncing)
        self.assertTrue(a.service.leadership.leading)
        self.assertFalse(b.service.leadership.leading)
        await wait_for("both nodes listed", lambda: len(b.service.leadership.nodes) == 2)
        cluster = b.service.status_snapshot()["sgcache"]["cluster"]
        self.assertEqual(cluster["leader"]["node"], a.service.leadership.node)
        self.assertEqual(sorted(n["leading"] for n in cluster["nodes"]), [False, True])
        # the status page shows it
        import urllib.request

        from twisted.internet.threads import deferToThread

        from sgcache.testing.daemon import admin_url

        page = await deferToThread(lambda: urllib.request.urlopen(admin_url(b) + "/", timeout=10).read().decode())
        self.assertIn("<h2", page)
        self.assertIn("Cluster", page)
        self.assertIn(a.service.leadership.node, page)
        metrics = [await deferToThread(
            lambda d=d: urllib.request.urlopen(admin_url(d) + "/metrics", timeout=10).read().decode())
            for d in (a, b)]
        self.assertIn("\nsgcache_syncing 1.0", metrics[0])
        self.assertIn("\nsgcache_syncing 0.0", metrics[1])
        self.assertIn("\nsgcache_sync_leaders_seen 1.0", metrics[1])
        # `sgcache status`, a process of its own, reads the same from the store
        from tests.test_commands import python

        out, err, code = await python("-m", "sgcache.admin.cli", "status", "--db", self.db)
        out = out.decode()
        self.assertEqual(code, 0, err)
        self.assertIn(f"sync leader: {a.service.leadership.node} since ", out)
        self.assertIn(f"node {b.service.leadership.node}", out)

        # ready by the leader's event lag, as it records it in the store
        await wait_for("the follower ready", lambda: b.service.readiness()[0])
        self.assertLess(b.service.leadership.leader_lag(), 60)

        want = await self.read(self.direct)
        self.assertEqual(await self.read(client(b.url)), want)  # vouches for the script
        local_before = b.cache.counters["read.local"]
        self.assertEqual(await self.read(client(b.url), limit=5), want[:5])
        self.assertEqual(b.cache.counters["read.local"], local_before + 1, "the follower answers locally")

        # a change at the site: the leader's poll applies it, the follower's
        # next read (its kept answer dropped by the notification) sees it
        self.site.emulator.update("Shot", 3, {"description": "changed at the site"})
        await a.service.poller.poll()
        await wait_for("the follower heard the write", lambda: b.store.read_generation() is not None)
        self.assertEqual(await self.read(client(b.url)), await self.read(self.direct))

        # a write through the follower is seen by the next read on the leader
        sg_b = client(b.url)
        from twisted.internet.threads import deferToThread

        await deferToThread(sg_b.update, "Shot", 4, {"description": "written through the follower"})
        rows = await self.read(client(a.url))
        self.assertEqual(rows[3]["description"], "written through the follower")
        self.assertEqual(rows, await self.read(self.direct))

    async def test_a_write_through_one_daemon_ends_another_daemons_kept_answers_at_once(self):
        """Even when the other daemon's notification has not arrived (here:
        never does), its next read does not reuse an answer kept from
        before the write: it reads the store's data generation first."""
        await self.start()
        a = await self.daemon()
        b = await self.daemon()
        await wait_for("both see each other", lambda: a.service.leadership.others_alive()
                       and b.service.leadership.others_alive())
        b.store._listener._on_notify = lambda channels: None  # b hears nothing from now on
        sg_a, sg_b = client(a.url), client(b.url)
        await self.read(sg_a)
        await self.read(sg_b)  # vouch
        await self.read(sg_b)
        hits = b.cache.answers.hits
        await self.read(sg_b)
        self.assertEqual(b.cache.answers.hits, hits + 1, "b reuses its kept answer")
        await deferToThread(sg_a.update, "Shot", 6, {"description": "written through a"})
        rows = await self.read(sg_b)
        self.assertEqual(rows[5]["description"], "written through a")
        self.assertEqual(rows, await self.read(self.direct))
        # the status counts those reads of the store's data generation
        reads = b.service.status_snapshot()["sgcache"]["cluster"]["generation_reads"]
        self.assertGreaterEqual(reads["calls"], 2)
        self.assertTrue(1 <= reads["queries"] <= reads["calls"], reads)

    async def test_a_follower_shows_the_event_cursor_the_store_records(self):
        """A follower's poller does not run: its status, status page and
        metrics show the cursor, the newest event's time, when the store
        was last known complete and the lag as the syncing daemon records
        them, read again after its election rounds."""
        import json
        import urllib.request

        from sgcache.testing.daemon import admin_url

        await self.start()
        self.site.emulator.set_generate_events(True)
        a = await self.daemon()
        b = await self.daemon()
        self.site.emulator.update("Shot", 2, {"description": "an event"})
        self.site.emulator.update("Shot", 3, {"description": "another"})
        await a.service.poller.poll()
        cursor = a.service.poller.cursor
        self.assertGreater(cursor, 0)

        def status(d: Any) -> Any:
            return deferToThread(lambda: json.loads(
                urllib.request.urlopen(admin_url(d) + "/status.json", timeout=10).read()))

        await wait_for("the follower read the cursor the leader recorded",
                       lambda: b.service.status_snapshot()["sgcache"]["event_cursor"] == cursor)
        await wait_for("the leader's lag recorded", lambda: b.service.event_lag() is not None)
        lead, follow = await status(a), await status(b)
        self.assertIsNone(lead["sgcache"].get("event_figures_from"))
        block = follow["sgcache"]
        self.assertEqual(block["event_figures_from"], "store")
        self.assertEqual(block["event_cursor"], cursor)
        self.assertEqual(block["last_event_id"], cursor)
        self.assertEqual(block["last_event_created_at"], a.service.poller.cursor_time)
        self.assertIsNotNone(block["last_event_created_at"])
        self.assertEqual(block["caught_up_at"], lead["sgcache"]["caught_up_at"])
        self.assertIsNotNone(block["caught_up_at"])
        self.assertIsNotNone(block["newest_event_age_seconds"])
        self.assertIsNotNone(block["event_lag_seconds"])
        self.assertLess(block["event_lag_seconds"], 60)
        self.assertEqual(block["holes"], [])
        self.assertEqual(follow["lag"]["caught_up_at"], lead["lag"]["caught_up_at"])
        self.assertIsNotNone(follow["lag"]["caught_up_at"])
        # the status page and the metrics
        page = await deferToThread(lambda: urllib.request.urlopen(admin_url(b) + "/", timeout=10).read().decode())
        self.assertIn("the daemon that syncs (as it records it in the store", page)
        self.assertRegex(page, rf"event cursor</t[hd]>\s*<td[^>]*>{cursor}<")
        metrics = await deferToThread(
            lambda: urllib.request.urlopen(admin_url(b) + "/metrics", timeout=10).read().decode())
        self.assertIn(f"\nsgcache_event_cursor {float(cursor)}", metrics)
        self.assertRegex(metrics, r"\nsgcache_event_caught_up_timestamp_seconds \d")
        # the leader moves on: the follower follows within a round
        self.site.emulator.update("Shot", 4, {"description": "a third"})
        await a.service.poller.poll()
        self.assertGreater(a.service.poller.cursor, cursor)
        await wait_for("the follower read the new cursor", lambda: b.service.status_snapshot()["sgcache"][
            "event_cursor"] == a.service.poller.cursor, seconds=3 * FAILOVER)

    async def test_a_write_through_a_daemon_just_started_is_seen_by_the_next_read_elsewhere(self):
        """C is alone on the store (its kept answers are reused without
        reading the store's data generation) and hears no notification; B
        starts right after one of C's election rounds, so C's next round
        is a whole round away. B is ready only once C knows it (C read the
        nodes table since B registered): a write through B is then seen
        by the next read on C."""
        failover = 6.0  # rounds every 2 s
        await self.start()
        c = await self.daemon(failover_seconds=failover)
        c.store._listener._on_notify = lambda channels: None  # c hears nothing from now on
        sg_c = client(c.url)
        await self.read(sg_c)  # vouch
        await self.read(sg_c)
        hits = c.cache.answers.hits
        await self.read(sg_c)
        self.assertEqual(c.cache.answers.hits, hits + 1, "c reuses its kept answer")
        self.assertFalse(c.service.leadership.others_alive())
        # just after one of c's rounds
        read_at = c.service.leadership.read_at
        await wait_for("a round of c's", lambda: c.service.leadership.read_at != read_at)
        started = reactor.seconds()
        b = await self.daemon(failover_seconds=failover)
        self.assertLess(reactor.seconds() - started, 2.0 * failover / 3 + 2.0, "the wait is bounded")
        sg_b = client(b.url)
        await self.read(sg_b)  # vouch
        await deferToThread(sg_b.update, "Shot", 7, {"description": "written through b"})
        rows = await self.read(sg_c)
        self.assertEqual(rows[6]["description"], "written through b")
        self.assertEqual(rows, await self.read(self.direct))
        self.assertTrue(c.service.leadership.others_alive(), "b was ready once c knew it")

    async def test_a_follower_takes_over_and_the_deposed_leader_cannot_commit(self):
        await self.start()
        a = await self.daemon()
        b = await self.daemon()
        old_epoch = a.service.leadership.epoch
        self.assertIsNotNone(old_epoch)

        started = reactor.seconds()
        _terminate_election_session(self.db)
        await wait_for("the leader deposed", lambda: a.service.leadership.deposed is not None)
        await wait_for("the follower elected", lambda: b.service.leadership.leading)
        took = reactor.seconds() - started
        self.assertLess(took, 3 * FAILOVER + 1, "taken over within about the failover time")
        self.assertGreater(b.service.leadership.epoch, old_epoch)
        self.assertFalse(a.service.syncing)
        await wait_for("the new leader syncs", lambda: b.service.syncing and b.service.poller.cursor is not None)

        # fencing: the deposed daemon's sync transactions are refused, its
        # write-back (not sync) still applies
        with self.assertRaises(Deposed):
            await a.store.apply([], {"event_cursor": "1"})
        with self.assertRaises(Deposed):
            await a.store.set_state({"event_cursor": "1"})

        # the new leader follows the site; both answer what the site has
        self.site.emulator.update("Shot", 5, {"description": "after the takeover"})
        await b.service.poller.poll()
        want = await self.read(self.direct)
        self.assertEqual((await self.read(client(b.url)))[4]["description"], "after the takeover")
        self.assertEqual(await self.read(client(a.url)), want)
        self.assertEqual(await self.read(client(b.url)), want)

    async def test_a_follower_taking_over_with_another_schema_changes_the_store_safely(self):
        """The follower's own schema (here without Shot.description) takes
        effect when it is elected: what it drops stops being served before
        the store drops it, and reads of it pass through from then on."""
        await self.start()
        await self.daemon()  # leads, records the wide schema
        narrow = Schema.from_dict({"entities": {"Shot": {"fields": {"code": "text", "sg_cut_in": "number"}}}})
        running = await start_daemon(narrow, self.site.url, self.db, settings={"failover_seconds": FAILOVER})
        self.addCleanup(running.stop)
        b = running
        # following, it serves what the store records (description too)
        self.assertIn("description", b.service.schema["Shot"].fields)
        sg_b = client(b.url)
        await self.read(sg_b)
        local = b.cache.counters["read.local"]
        self.assertEqual(await self.read(sg_b, limit=3), (await self.read(self.direct))[:3])
        self.assertEqual(b.cache.counters["read.local"], local + 1)

        _terminate_election_session(self.db)
        await wait_for("the follower elected", lambda: b.service.leadership.leading)
        await wait_for("the new leader syncs", lambda: b.service.syncing and b.service.loaded.called)
        await wait_for("its schema applied", lambda: "description" not in b.store._synced.types.get("Shot", {}))
        self.assertNotIn("description", b.service.schema["Shot"].fields)
        # a read of the dropped field passes through, right; the others stay local
        passed = b.cache.counters["passthrough"]
        self.assertEqual(await self.read(sg_b), await self.read(self.direct))
        self.assertGreater(b.cache.counters["passthrough"], passed)
        local = b.cache.counters["read.local"]
        rows = await deferToThread(sg_b.find, "Shot", [["sg_cut_in", "greater_than", 10]], ["code"])
        self.assertEqual(len(rows), 10)
        self.assertEqual(b.cache.counters["read.local"], local + 1)

    async def test_a_web_daemon_never_syncs(self):
        await self.start()
        web = await self.daemon(role="web", wait_ready=False)
        # nobody syncs yet: the web daemon waits for a leader's store
        self.assertFalse(web.service.syncing)
        self.assertFalse(web.service.leadership.leading)
        lead = await self.daemon(role="sync")
        self.assertTrue(lead.service.syncing)
        self.assertIsNone(lead.service.port, "--role sync has no client port")
        await wait_for("the web daemon serves", lambda: web.service.loaded.called)
        self.assertEqual(await self.read(client(web.url)), await self.read(self.direct))
        # it never stood for election: the sync daemon leads, alone
        self.assertFalse(web.service.syncing)
        self.assertFalse(web.service.leadership.leading)
        await wait_for("the web daemon sees the leader", lambda: web.service.leadership.leader is not None)
        self.assertEqual(web.service.leadership.leader["node"], lead.service.leadership.node)


SCHEMA_YAML = """\
entities:
  Shot:
    fields: {code: text, sg_cut_in: number, description: text}
"""


class Node:
    """One `twistd sgcache` process, its log in a file."""

    def __init__(self, test: unittest.TestCase, schema: str, db: str, site: str):
        from tests.test_lifecycle import ROOT, free_port

        port, admin = free_port(), free_port()
        self.url, self.admin = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        self.log_path = os.path.abspath(test.mktemp()) + ".log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_") and k != "NOTIFY_SOCKET"}
        env["PYTHONPATH"] = ROOT
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "--nodaemon", "--pidfile=",
             "--logfile=-", "sgcache", "--schema", schema, "--db", db, "--shotgun", site,
             "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1],
             "--listen", f"tcp:{port}:interface=127.0.0.1", "--admin-listen", f"tcp:{admin}:interface=127.0.0.1",
             "--poll-interval", "0.3", "--failover-seconds", str(FAILOVER)],
            cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT)
        test.addCleanup(self.kill)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()

    @property
    def log(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()

    async def status(self) -> dict:
        import json
        import urllib.request

        from twisted.internet.threads import deferToThread

        def get() -> dict:
            try:
                with urllib.request.urlopen(self.admin + "/status.json", timeout=5) as response:
                    return json.loads(response.read())
            except OSError:
                return {}
        status = await deferToThread(get)
        return dict(status.get("sgcache", {}).get("cluster", {}), ready=status.get("ready", {}).get("ready"),
                    types=status.get("types", []), event_cursor=status.get("sgcache", {}).get("event_cursor"))

    async def until(self, what: str, ok: Callable[[dict], bool], seconds: float = 30.0) -> dict:
        started = reactor.seconds()
        while True:
            state = await self.status()
            if state and ok(state):
                return state
            if reactor.seconds() - started > seconds:
                raise AssertionError(f"{what}: not within {seconds:g}s (last: {state})\n{self.log[-3000:]}")
            await task.deferLater(reactor, 0.1, lambda: None)

    def terms(self) -> list[tuple[int, float]]:
        """(epoch, start) of every term this daemon led, from its log."""
        import datetime
        import re

        out = []
        for at, epoch in re.findall(r"leading the sync of this store from (\S+) \(epoch (\d+)", self.log):
            out.append((int(epoch), datetime.datetime.fromisoformat(at).timestamp()))
        return out


def serving(state: dict) -> bool:
    return "leading" in state and bool(state["types"]) and all(t["serving"] for t in state["types"])


class KilledLeaderTests(unittest.TestCase):
    """Real `twistd sgcache` processes on one PostgreSQL store: the leader
    is killed with -9, another takes the sync over within the failover
    time and follows the site from where the dead one stopped."""

    timeout = 180

    async def site_and_store(self) -> tuple[Any, str, str]:
        site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, ("test", "key")]))
        self.addCleanup(site.stop)
        site.emulator.seed(SHOTS)
        site.emulator.set_generate_events(True)
        db = await fresh_postgres_url(self)
        schema = os.path.abspath(self.mktemp()) + ".yml"
        with open(schema, "w") as fh:
            fh.write(SCHEMA_YAML)
        return site, db, schema

    async def test_the_leader_killed_with_minus_9(self):
        from twisted.internet.threads import deferToThread

        site, db, schema = await self.site_and_store()
        first = Node(self, schema, db, site.url)
        await first.until("the first daemon leads and is loaded", lambda s: s.get("leading") and serving(s))
        second = Node(self, schema, db, site.url)
        state = await second.until("the second daemon follows", serving)
        self.assertFalse(state["leading"])
        self.assertEqual(len([n for n in state["nodes"] if n["alive"]]), 2)

        first.proc.kill()  # -9
        killed = reactor.seconds()
        state = await second.until("the second daemon takes over", lambda s: s.get("leading"))
        took = reactor.seconds() - killed
        self.assertLessEqual(took, FAILOVER + 2.0, f"failover took {took:.1f}s")
        self.assertGreaterEqual(state["epoch"], 2)

        # the new leader follows the site's events
        site.emulator.update("Shot", 7, {"description": "after the leader died"})
        newest = (await deferToThread(client(site.url).find, "EventLogEntry", [], ["id"],
                                      order=[{"field_name": "id", "direction": "desc"}], limit=1))[0]["id"]
        await second.until("the new leader applied the site's newest event",
                           lambda s: s.get("event_cursor") is not None and int(s["event_cursor"]) >= newest)
        sg = client(second.url)
        for _ in range(100):
            rows = await deferToThread(sg.find, "Shot", [["id", "is", 7]], ["description"])
            if rows and rows[0]["description"] == "after the leader died":
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("the new leader did not apply the site's change")
        second.proc.send_signal(signal.SIGTERM)
        await deferToThread(second.proc.wait, 30)
        # (twistd ends by the signal it stopped for)
        self.assertIn(second.proc.returncode, (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", second.log)
        self.assertNotIn("Traceback", second.log)

    async def test_three_daemons_random_writes_and_repeated_leader_kills(self):
        """Random writes at the site and through different daemons while
        the leader is killed (-9) again and again: the store ends equal to
        the site (every Shot, active and retired, through every daemon),
        terms never overlap (each starts after the previous leader died),
        a write through one daemon is seen by the next read on another."""
        import random
        import time

        from twisted.internet.threads import deferToThread

        site, db, schema = await self.site_and_store()
        nodes = [Node(self, schema, db, site.url)]
        await nodes[0].until("the first daemon loads the store", lambda s: s.get("leading") and serving(s))
        for _ in range(2):
            nodes.append(Node(self, schema, db, site.url))
            await nodes[-1].until("a daemon follows", serving)
        everyone = list(nodes)
        direct = client(site.url)
        rng = random.Random(17)
        fields = ["code", "sg_cut_in", "description"]
        died: dict[int, float] = {}  # epoch -> when its leader was killed
        counter = 0

        async def leader() -> tuple[Node, dict]:
            for node in nodes:
                if node.proc.poll() is None:
                    state = await node.status()
                    if state.get("leading"):
                        return node, state
            raise AssertionError("no daemon leads")

        for round_ in range(3):
            for _ in range(8):
                counter += 1
                ids = [s["id"] for s in await deferToThread(direct.find, "Shot", [], [])]
                target = rng.choice(ids)
                through = rng.choice([None] + nodes)
                sg = direct if through is None else client(through.url)
                action = rng.random()
                if action < 0.6:
                    await deferToThread(sg.update, "Shot", target, {"description": f"write {counter}"})
                    if through is not None:
                        # the next read on another daemon sees it (a read
                        # shape it never answered: no kept answer to reuse)
                        other = rng.choice([n for n in nodes if n is not through])
                        rows = await deferToThread(client(other.url).find, "Shot", [["id", "is", target]],
                                                   ["description", "code"][: 1 + counter % 2])
                        self.assertEqual(rows[0]["description"], f"write {counter}")
                elif action < 0.85:
                    await deferToThread(sg.create, "Shot", {"code": f"new{counter}", "sg_cut_in": counter})
                else:
                    await deferToThread(sg.delete, "Shot", target)
            old, state = await leader()
            died[state["epoch"]] = time.time()
            old.proc.kill()  # -9
            killed = reactor.seconds()
            survivors = [n for n in nodes if n is not old]
            for _ in range(200):
                states = [await n.status() for n in survivors]
                if any(s.get("leading") for s in states):
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
            else:
                self.fail(f"round {round_}: nobody took over")
            took = reactor.seconds() - killed
            self.assertLessEqual(took, FAILOVER + 2.0, f"round {round_}: failover took {took:.1f}s")
            # the killed one comes back (as systemd would start it), a follower
            nodes = survivors + [Node(self, schema, db, site.url)]
            everyone.append(nodes[-1])
            await nodes[-1].until("the restarted daemon follows", serving)

        # every event applied: the leader's cursor reaches the site's newest
        newest = (await deferToThread(direct.find, "EventLogEntry", [], ["id"],
                                      order=[{"field_name": "id", "direction": "desc"}], limit=1))[0]["id"]
        head, _ = await leader()
        await head.until("the leader applied every event",
                         lambda s: s.get("event_cursor") is not None and int(s["event_cursor"]) >= newest)
        order = [{"field_name": "id", "direction": "asc"}]
        want = await deferToThread(direct.find, "Shot", [], fields, order=order)
        want_retired = await deferToThread(direct.find, "Shot", [], fields, order=order, retired_only=True)
        for node in nodes:
            sg = client(node.url)
            await deferToThread(sg.find, "Shot", [], ["id"])  # vouches for the script
            self.assertEqual(await deferToThread(sg.find, "Shot", [], fields, order=order), want)
            self.assertEqual(await deferToThread(sg.find, "Shot", [], fields, order=order, retired_only=True),
                             want_retired)

        # terms: distinct epochs, each began after the previous leader died
        terms = sorted(t for node in everyone for t in node.terms())
        self.assertGreaterEqual(len(terms), 4)
        self.assertEqual(len({e for e, _ in terms}), len(terms))
        for (epoch, start), (next_epoch, next_start) in zip(terms, terms[1:]):
            self.assertLess(start, next_start)
            if epoch in died:
                self.assertGreaterEqual(next_start, died[epoch] - 0.05,
                                        f"epoch {next_epoch} began before epoch {epoch}'s leader died")


class StorageCheckTests(unittest.TestCase):
    """`StorageCheck`: reads that end while a generation query is in flight
    wait for the next one (sent after they ended), and one query answers
    them all."""

    def test_one_query_answers_the_reads_that_ended_before_it(self):
        from twisted.internet import defer

        from sgcache.web.storagecheck import StorageCheck

        class Store:
            def __init__(self):
                self.asked: list[defer.Deferred] = []

            def storage_generation(self):
                d = defer.Deferred()
                self.asked.append(d)
                return d

        store = Store()
        check = StorageCheck(store, "7")
        first = check()
        self.assertEqual(len(store.asked), 1)
        # these end while the first query is in flight: not covered by it
        later = [check(), check(), check()]
        self.assertEqual(len(store.asked), 1)
        store.asked[0].callback("7")
        self.assertTrue(self.successResultOf(first))
        self.assertEqual(len(store.asked), 2, "one more query for the three")
        self.assertNoResult(later[0])
        store.asked[1].callback("8")  # another daemon changed the schema meanwhile
        self.assertEqual([self.successResultOf(d) for d in later], [False, False, False])
        # a failed query: not sure, the read passes through
        failing = check()
        store.asked[2].errback(RuntimeError("connection lost"))
        self.assertFalse(self.successResultOf(failing))
        self.assertEqual((check.queries, check.checks), (3, 5))
        # while this daemon syncs, no query
        syncing = StorageCheck(store, "7", lambda: True)
        self.assertTrue(self.successResultOf(syncing()))
        self.assertEqual(len(store.asked), 3)
