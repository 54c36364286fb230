"""Convergence: after random mixes of creates, updates (scalar, entity,
multi-entity add / remove / set), deletes and revives -- some through the
cache, some straight to the site, some with events off (only scans can see
those), some whose events arrive late (holes) -- and a sync (poll +
incremental scan), every cached type read through the cache (the read
planner over the store, active and retired, every cached field) equals the
same read from the site.

`InProcess*` runs the daemon in-process; `Chaos*` runs it as a subprocess
(``python -m twisted sgcache``) against the emulator served by this process,
and kills it with SIGKILL at random points, makes the emulator fail or go
slow, and (PostgreSQL) kills its database connections. Seeds are fixed.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool

from sgcache.schema import Schema
from sgcache.store import open_store
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import _admin, fresh_postgres_url
from sgcache.testing.syncdump import count_mismatches, differences, emulator_dump, store_dump

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_PATH = os.path.join(ROOT, "schema", "basic.yml")
SCHEMA = Schema.load(SCHEMA_PATH)
USER = ("pipeline", "pipeline-key")
PROJECT = {"type": "Project", "id": 1}
STATUSES = ["wtg", "ip", "fin", None]


def seed(emulator: Any) -> None:
    emulator.seed(
        [{"type": "Project", "id": 1, "fields": {"name": "Demo"}}]
        + [{"type": "HumanUser", "id": 100 + i, "fields": {"name": f"u{i}", "login": f"u{i}"}} for i in range(4)]
        + [{"type": "Sequence", "id": 10 + i, "fields": {"code": f"SQ{i}", "project": PROJECT}} for i in range(3)]
        + [{"type": "Shot", "id": 200 + i, "fields": {"code": f"sh{i:03d}", "project": PROJECT,
                                                      "sg_sequence": {"type": "Sequence", "id": 10 + i % 3}}}
           for i in range(12)]
        + [{"type": "Asset", "id": 300 + i, "fields": {"code": f"as{i}", "project": PROJECT}} for i in range(4)]
        + [{"type": "Task", "id": 500 + i, "fields": {"content": f"t{i}", "project": PROJECT,
                                                      "entity": {"type": "Shot", "id": 200 + i}}}
           for i in range(6)]
    )


class Workload:
    """Random operations against the site, by way of a writer function."""

    def __init__(self, rng: random.Random, emulator: Any):
        self.rng = rng
        self.emulator = emulator
        self.counts: dict[str, int] = {}

    def live(self, etype: str, retired: bool = False) -> list[int]:
        return sorted(i for i, r in self.emulator.db[etype].items() if bool(r.get("__retired")) == retired)

    def pick(self) -> tuple[str, tuple]:
        """One random operation as (method, args) for a shotgun_api3-like API."""
        r = self.rng
        shots, tasks, users = self.live("Shot"), self.live("Task"), self.live("HumanUser")
        seqs, assets = self.live("Sequence"), self.live("Asset")
        roll = r.random()
        if roll < 0.15 or not shots:
            if r.random() < 0.5:
                data = {"code": f"n{r.randrange(10**6)}", "project": PROJECT,
                        "sg_sequence": {"type": "Sequence", "id": r.choice(seqs)} if seqs else None}
                return "create", ("Shot", data)
            data = {"content": f"t{r.randrange(10**6)}", "project": PROJECT,
                    "entity": {"type": "Shot", "id": r.choice(shots)} if shots else None,
                    "task_assignees": [{"type": "HumanUser", "id": u} for u in r.sample(users, 2)]}
            return "create", ("Task", data)
        if roll < 0.35:
            return "update", ("Shot", r.choice(shots), {"sg_status_list": r.choice(STATUSES),
                                                        "description": f"d{r.randrange(1000)}"})
        if roll < 0.45:
            value = {"type": "Sequence", "id": r.choice(seqs)} if r.random() < 0.8 else None
            return "update", ("Shot", r.choice(shots), {"sg_sequence": value})
        if roll < 0.55 and tasks:
            target = r.choice(shots + assets)
            etype = "Shot" if target in shots else "Asset"
            return "update", ("Task", r.choice(tasks), {"entity": {"type": etype, "id": target}})
        if roll < 0.72 and tasks:
            mode = r.choice(["add", "remove", "set"])
            value = [{"type": "HumanUser", "id": u} for u in r.sample(users, r.randint(1, 2))]
            return "update", ("Task", r.choice(tasks), {"task_assignees": value}, {"task_assignees": mode})
        if roll < 0.8 and assets:
            value = [{"type": "Shot", "id": s} for s in r.sample(shots, min(2, len(shots)))]
            return "update", ("Asset", r.choice(assets), {"shots": value},
                              {"shots": r.choice(["add", "remove", "set"])})
        if roll < 0.9:
            etype = r.choice(["Shot", "Task"])
            ids = shots if etype == "Shot" else tasks
            if ids:
                return "delete", (etype, r.choice(ids))
        etype = r.choice(["Shot", "Task"])
        retired = self.live(etype, retired=True)
        if retired:
            return "revive", (etype, r.choice(retired))
        return "update", ("Shot", r.choice(shots), {"description": "x"})

    def direct(self, method: str, args: tuple) -> Any:
        """Apply straight to the site (the emulator's Python API)."""
        if method == "update" and len(args) == 4:
            return self.emulator.update(args[0], args[1], args[2], multi_entity_update_modes=args[3])
        return getattr(self.emulator, method)(*args)

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1


def via_client(sg: Any, method: str, args: tuple) -> Any:
    if method == "update" and len(args) == 4:
        return sg.update(args[0], args[1], args[2], multi_entity_update_modes=args[3])
    return getattr(sg, method)(*args)


def report(test: Any, name: str, **numbers: Any) -> None:
    line = f"[convergence] {name}: " + ", ".join(f"{k}={v}" for k, v in numbers.items())
    sys.stderr.write(line + "\n")
    test.addCleanup(lambda: None)


# -- in-process daemon ------------------------------------------------------------------


class InProcessMixin:
    runs = 3
    ops_per_run = 60

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER]), page_size=50)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator

    async def test_random_mixes_converge(self):
        total_ops = total_events = 0
        mismatches = 0
        for run in range(self.runs):
            self.emulator.reset()
            self.emulator.set_clock(None)
            seed(self.emulator)
            daemon = await start_daemon(SCHEMA, self.site.url, await self.store_url())
            sg = client(daemon.url, *USER)
            try:
                await deferToThread(sg.find_one, "Project", [])
                rng = random.Random(1000 + run)
                work = Workload(rng, self.emulator)
                first_event = self.emulator.events.next_id
                held = False
                for i in range(self.ops_per_run):
                    method, args = work.pick()
                    route = rng.random()
                    if route < 0.1 and not held:
                        self.emulator.hold_events(count=rng.randint(1, 3))
                        held = True
                    quiet = route > 0.85
                    self.emulator.set_generate_events(not quiet)
                    try:
                        if 0.1 <= route < 0.4:
                            await deferToThread(via_client, sg, method, args)
                            work.count("via_cache")
                        else:
                            work.direct(method, args)
                            work.count("quiet" if quiet else "direct")
                    except Exception:  # a refused op (e.g. revive of a live row) is fine
                        work.count("refused")
                    finally:
                        self.emulator.set_generate_events(True)
                    if rng.random() < 0.2:
                        await daemon.service.poller.poll()
                    if held and rng.random() < 0.3:
                        self.emulator.release_events()
                        held = False
                    if rng.random() < 0.05:
                        await daemon.service.scanner.incremental_scan()
                self.emulator.release_events()
                await daemon.service.poller.poll()
                await daemon.service.scanner.incremental_scan()
                await daemon.service.poller.poll()
                ours = await store_dump(daemon.store, SCHEMA)
                theirs = emulator_dump(self.emulator, SCHEMA)
                mismatches += count_mismatches(ours, theirs)
                self.assertEqual(differences(ours, theirs), [], f"run {run}")
                total_ops += self.ops_per_run
                total_events += self.emulator.events.next_id - first_event
            finally:
                sg.close()
                await daemon.stop()
        report(self, type(self).__name__, runs=self.runs, operations=total_ops, events=total_events,
               mismatches=mismatches)


class InProcessSQLiteConvergence(InProcessMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class InProcessPostgresConvergence(InProcessMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)


# -- chaos: the daemon as a subprocess, killed at random -----------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ChaosMixin:
    seed_value = 7
    ops = 150
    kills = 4

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER]), page_size=50)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        seed(self.emulator)
        self.db = await self.store_url()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.logfile = os.path.abspath(self.mktemp()) + ".log"
        self.addCleanup(lambda: defer.ensureDeferred(self.kill()))
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        self.http = treq.client.HTTPClient(Agent(reactor, pool=pool))

    def spawn(self) -> None:
        args = [
            sys.executable, "-m", "twisted", "--log-file", self.logfile, "--log-format", "text", "sgcache",
            "--shotgun", self.site.url, "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1],
            "--schema", SCHEMA_PATH, "--db", self.db, "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--admin-listen", "tcp:0:interface=127.0.0.1",
            "--poll-interval", "0.2", "--scan-interval", "1.5", "--scan-overlap", "5",
        ]
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the daemon and wait for it to exit, without blocking the
        reactor: the emulator it talks to runs on this reactor, and a daemon
        stopping on SIGTERM first finishes the poll it has in flight."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            deadline = time.time() + 10
            while self.proc.poll() is None:
                if time.time() > deadline:
                    self.proc.kill()
                    self.fail(f"the daemon did not exit within 10 s of signal {sig}")
                await self.sleep(0.05)
        self.proc = None

    async def status(self) -> dict | None:
        try:
            response = await self.http.post(
                f"http://127.0.0.1:{self.port}/api3/json",
                data=b'{"method_name": "info", "params": []}',
                headers={b"content-type": [b"application/json"]}, timeout=2)
            body = await response.json()
            return (body.get("results") or body).get("sgcache")
        except Exception:
            return None

    async def sleep(self, seconds: float) -> None:
        await task.deferLater(reactor, seconds, lambda: None)

    async def kill_db_connections(self) -> None:
        name = self.db.rsplit("/", 1)[1]
        from sgcache.testing.pg import base_url

        await _admin(base_url(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE datname = '{name}' AND pid <> pg_backend_pid()")

    async def test_chaos_converges(self):
        rng = random.Random(self.seed_value)
        work = Workload(rng, self.emulator)
        first_event = self.emulator.events.next_id
        self.spawn()
        kill_at = sorted(rng.sample(range(5, self.ops), self.kills))
        chaos_log: list[str] = []
        held = False
        for i in range(self.ops):
            if i in kill_at:
                await self.kill()
                chaos_log.append(f"SIGKILL at op {i}")
                await self.sleep(rng.uniform(0.0, 0.3))
                self.spawn()
            roll = rng.random()
            if roll < 0.04:
                self.emulator.fail_next(rng.randint(1, 4), status=rng.choice([500, 502, 503]))
                chaos_log.append("upstream 5xx")
            elif roll < 0.06:
                self.emulator.fail_next(1, reset=True)
                chaos_log.append("upstream reset")
            elif roll < 0.08:
                self.emulator.set_latency(0.3)
                chaos_log.append("upstream slow")
            elif roll < 0.10 and self.db.startswith("postgres"):
                await self.kill_db_connections()
                chaos_log.append("pg_terminate_backend")
            elif roll < 0.14 and not held:
                self.emulator.hold_events(count=rng.randint(1, 3))
                held = True
            if held and rng.random() < 0.15:
                self.emulator.release_events()
                held = False
            method, args = work.pick()
            quiet = rng.random() < 0.15
            self.emulator.set_generate_events(not quiet)
            try:
                work.direct(method, args)
                work.count("quiet" if quiet else "direct")
            except Exception:
                work.count("refused")
            finally:
                self.emulator.set_generate_events(True)
            await self.sleep(rng.uniform(0.0, 0.06))
            if rng.random() < 0.1:
                self.emulator.set_latency(0)
        self.emulator.release_events()
        self.emulator.set_latency(0)
        self.emulator.controls.failures.clear()
        last_op = time.time()
        newest = self.emulator.events.next_id - 1
        if self.proc is None or self.proc.poll() is not None:
            self.spawn()
        # converge: the cursor at the newest event, no holes, a scan finished after the last op
        deadline = time.time() + 60
        while True:
            status = await self.status()
            scan = (status or {}).get("scan") or {}
            last = scan.get("last") or {}
            if (status and status.get("serving") and (status.get("event_cursor") or 0) >= newest
                    and not status.get("holes") and not scan.get("running")
                    and (last.get("finished_at") or 0) > last_op + 1):
                break
            if time.time() > deadline:
                self.fail(f"no convergence: {status}")
            await self.sleep(0.2)
        await self.kill(signal.SIGTERM)
        store = open_store(self.db, reactor)
        await store.open()
        try:
            ours = await store_dump(store, SCHEMA)
        finally:
            await store.close()
        theirs = emulator_dump(self.emulator, SCHEMA)
        mismatches = count_mismatches(ours, theirs)
        report(self, type(self).__name__, operations=self.ops, events=self.emulator.events.next_id - first_event,
               kills=self.kills, chaos=len(chaos_log), mismatches=mismatches, **work.counts)
        self.assertEqual(differences(ours, theirs), [])


class ChaosSQLiteConvergence(ChaosMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class ChaosPostgresConvergence(ChaosMixin, unittest.TestCase):
    seed_value = 11

    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
