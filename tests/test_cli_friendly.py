"""The ``sgcache`` admin command as an operator meets it: commands that read
a store never create one (one line naming --db instead), `status` speaks in
words and units (no "None"), `status --demo` says where the demo's status
is, no error suggests --demo, and a closed stdout (``| head``) ends any
command quietly. Commands run as real subprocesses.
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import sys
import time

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.admin.commands import status_lines
from sgcache.admin.common import duration
from sgcache.demo import demo_entities
from sgcache.schema import Schema
from sgcache.store import open_store
from sgcache.sync.poller import CAUGHT_UP_KEY, CURSOR_KEY, CURSOR_TIME_KEY
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import start_emulator
from sgcache.testing.pg import base_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASIC = os.path.join(ROOT, "schema", "basic.yml")
NO_SITE = ("--shotgun", "http://127.0.0.1:1", "--script-name", "a", "--api-key", "b")


def environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def sgcache(*args: str, cwd: str = ROOT, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run the command (blocking: call from a thread when the reactor runs)."""
    return subprocess.run([sys.executable, "-m", "sgcache.admin.cli", *args], cwd=cwd, env=environ(),
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120)


def one_error_line(test: unittest.TestCase, run: subprocess.CompletedProcess) -> str:
    test.assertEqual(run.returncode, 2, (run.stdout, run.stderr))
    lines = run.stderr.strip().splitlines()
    test.assertEqual(len(lines), 1, run.stderr)
    test.assertTrue(lines[0].startswith("sgcache: error: "), lines[0])
    test.assertNotIn("Traceback", run.stderr)
    return lines[0]


def wire_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class NoStoreTests(unittest.TestCase):
    def workdir(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return path

    def test_reading_commands_never_create_a_sqlite_store(self):
        where = self.workdir()
        path = os.path.join(where, "missing.sqlite")
        db = "sqlite:///" + path
        expected = f"sgcache: error: --db: no store at {path} (start the daemon, or give --db)"
        for args in (("status", "--db", db), ("status", "--json", "--db", db),
                     ("log", "Shot", "1", "--schema", BASIC, "--db", db),
                     ("reprocess", "--events", "1..5", "--schema", BASIC, "--db", db, *NO_SITE)):
            self.assertEqual(one_error_line(self, sgcache(*args)), expected, args)
            self.assertEqual(os.listdir(where), [], args)

    def test_status_without_options_looks_for_the_default_store(self):
        where = self.workdir()
        line = one_error_line(self, sgcache("status", cwd=where))
        self.assertEqual(line, "sgcache: error: --db: no store at "
                               f"{os.path.join(where, 'sgcache.sqlite')} (start the daemon, or give --db)")
        self.assertEqual(os.listdir(where), [])

    def test_missing_postgresql_database_is_one_line_naming_db(self):
        base = base_url()
        db = base.rsplit("/", 1)[0] + "/sgcache_no_such_database_here"
        line = one_error_line(self, sgcache("status", "--db", db))
        self.assertTrue(line.startswith("sgcache: error: --db: cannot open the store: "), line)
        self.assertNotIn("status failed", line)

    def test_no_error_suggests_demo(self):
        for args in (("log", "Shot", "1"), ("reprocess", "--events", "1..2"), ("scan", "--full")):
            line = one_error_line(self, sgcache(*args))
            self.assertNotIn("--demo", line, args)
            self.assertIn("required", line, args)
        self.assertIn("--schema", one_error_line(self, sgcache("log", "Shot", "1")))
        self.assertIn("--shotgun, --script-name, --api-key", one_error_line(self, sgcache("scan", "--full")))

    def test_status_demo_says_where_the_demo_status_is(self):
        line = one_error_line(self, sgcache("status", "--demo"))
        self.assertIn("in memory", line)
        self.assertIn("--db", line)
        self.assertNotIn("--demo", sgcache("status", "--help").stdout, "not an option to offer")


class StatusTextTests(unittest.TestCase):
    def test_durations_for_people(self):
        cases = [(None, "-"), (0.04, "0.0 s"), (3.21, "3.2 s"), (12.4, "12 s"), (119, "119 s"), (180, "3 min"),
                 (7199, "119 min"), (7200, "2 h"), (7500, "2 h 5 min"), (3 * 86400, "3 d"),
                 (3 * 86400 + 4 * 3600 + 59, "3 d 4 h")]
        for seconds, text in cases:
            self.assertEqual(duration(seconds), text, seconds)
        self.assertEqual(duration(None, "never"), "never")

    def test_nothing_known_yet_reads_as_words(self):
        report = {"event_cursor": None, "types": {"Shot": {"rows": 0, "retired": 0, "fields_ready": 0, "fields": 3}},
                  "sync": {"last_event_created_at": None, "event_lag_seconds": None, "caught_up_at": None,
                           "newest_event_age_seconds": None, "holes": [], "last_poll_error": None,
                           "rescan_requested": None, "scan_pending": None, "watermarks": {}}}
        text = "\n".join(status_lines(report))
        self.assertNotIn("None", text)
        self.assertIn("event cursor: -", text)
        self.assertIn("lag: never", text)
        self.assertNotRegex(text, r"\bNones?\b|\bnulls?\b")

    def test_pending_work_reads_as_words(self):
        report = {"event_cursor": "12", "types": {},
                  "sync": {"last_event_created_at": "2026-01-02T03:04:05Z", "event_lag_seconds": 130.0,
                           "caught_up_at": "2026-01-02T03:05:00Z", "newest_event_age_seconds": 7300.0,
                           "holes": [7, 9], "last_poll_error": "upstream: timeout",
                           "rescan_requested": {"reason": "event log truncated", "since": None},
                           "scan_pending": {"mode": "full", "types": ["Shot", "Task"], "reason": "schema change"},
                           "watermarks": {}}}
        text = "\n".join(status_lines(report))
        self.assertIn("event cursor: 12 (newest event created 2026-01-02T03:04:05Z, 2 h 1 min ago)", text)
        self.assertIn("lag: 2 min (the cache was last known complete at 2026-01-02T03:05:00Z)", text)
        self.assertIn("holes: 7, 9; last poll error: upstream: timeout", text)
        self.assertIn("rescan requested: event log truncated", text)
        self.assertIn("scan pending: full scan of 2 types (schema change)", text)
        self.assertNotIn("None", text)


class StoreCommandTests(unittest.TestCase):
    async def make_store(self, state: dict[str, str] | None = None) -> str:
        path = os.path.abspath(self.mktemp()) + ".sqlite"
        store = open_store("sqlite:///" + path, reactor)
        await store.open()
        try:
            await store.sync_schema(Schema.load(BASIC))
            if state:
                await store.set_state(state)
        finally:
            await store.close()
        return "sqlite:///" + path

    def test_status_of_a_store_never_polled(self):
        async def go():
            db = await self.make_store()
            run = await deferToThread(sgcache, "status", "--db", db)  # no --schema needed
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertNotIn("None", run.stdout)
            self.assertIn("lag: never", run.stdout)
            self.assertRegex(run.stdout, r"(?m)^Shot +0 rows \(0 retired\)")
            report = json.loads((await deferToThread(sgcache, "status", "--json", "--db", db)).stdout)
            self.assertIsNone(report["sync"]["event_lag_seconds"])
            self.assertIsNone(report["sync"]["newest_event_age_seconds"])

        return defer.ensureDeferred(go())

    def test_lag_is_the_time_since_the_cache_was_complete(self):
        async def go():
            now = time.time()
            newest = now - 3 * 3600
            db = await self.make_store({CURSOR_KEY: "4411", CURSOR_TIME_KEY: wire_time(newest),
                                        CAUGHT_UP_KEY: repr(now - 125)})
            report = json.loads((await deferToThread(sgcache, "status", "--json", "--db", db)).stdout)
            sync = report["sync"]
            self.assertLess(abs(sync["event_lag_seconds"] - 125), 30)
            self.assertEqual(sync["caught_up_at"], wire_time(now - 125))
            age = now - calendar.timegm(time.strptime(wire_time(newest), "%Y-%m-%dT%H:%M:%SZ"))
            self.assertLess(abs(sync["newest_event_age_seconds"] - age), 30)
            text = (await deferToThread(sgcache, "status", "--db", db)).stdout
            self.assertIn("event cursor: 4411 (newest event created", text)
            self.assertRegex(text, r"(?m)^lag: 2 min \(the cache was last known complete at ")
            self.assertRegex(text, r", (2 h 59 min|3 h|3 h 0 min) ago\)")
            self.assertNotIn("None", text)

        return defer.ensureDeferred(go())


class BrokenPipeTests(unittest.TestCase):
    timeout = 180

    async def loaded_store(self) -> str:
        """A store `sgcache scan --full` loaded (and created) from the demo project."""
        schema = Schema.load(BASIC)
        site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        site.emulator.seed([i for i in demo_entities() if i["type"] in schema])
        path = os.path.abspath(self.mktemp()) + ".sqlite"
        db = "sqlite:///" + path
        run = await deferToThread(sgcache, "scan", "--full", "--schema", BASIC, "--db", db, "--shotgun", site.url,
                                  "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1])
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertTrue(os.path.exists(path), "scan creates the store")
        return db

    def test_closed_stdout_ends_quietly(self):
        async def go():
            db = await self.loaded_store()
            for args in (("log", "Shot", "201", "--schema", BASIC, "--db", db), ("status", "--db", db),
                         ("status", "--json", "--db", db), ("--help",)):
                read, write = os.pipe()
                os.close(read)  # the reader is gone before anything is written
                try:
                    run = await deferToThread(sgcache, *args, stdout=write)
                finally:
                    os.close(write)
                self.assertEqual(run.stderr, "", args)
                # argparse drops its own output quietly (--help: 0)
                self.assertIn(run.returncode, (0, 141) if args == ("--help",) else (141,), args)

        return defer.ensureDeferred(go())

    def test_log_piped_to_head(self):
        async def go():
            db = await self.loaded_store()
            command = [sys.executable, "-m", "sgcache.admin.cli", "log", "Shot", "201", "--schema", BASIC, "--db", db]

            def pipeline() -> tuple[str, str, int]:
                log = subprocess.Popen(command, cwd=ROOT, env=environ(), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
                head = subprocess.run(["head", "-1"], stdin=log.stdout, stdout=subprocess.PIPE, text=True,
                                      timeout=120)
                log.stdout.close()
                err = log.stderr.read().decode()
                log.stderr.close()
                return head.stdout, err, log.wait(120)

            out, err, code = await deferToThread(pipeline)
            self.assertEqual(err, "")
            self.assertIn(code, (0, 141))
            self.assertRegex(out, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ  scan ")

        return defer.ensureDeferred(go())
