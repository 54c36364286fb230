"""The daemon's log (sgcache/logformat.py): ``--log-format json`` writes one
bounded JSON object per line, text lines are bounded too, events below
``--log-level`` stay out whoever logged them, and the demo is quiet (no line
per request to its emulator). The runner tests start a real
``twistd -n sgcache --demo`` and read what it writes to stdout.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys

import shotgun_api3
from twisted.application import service
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import ILogObserver, Logger, LogLevel, jsonFileLogObserver
from twisted.python.failure import Failure
from twisted.trial import unittest

from sgcache import logformat
from sgcache.demo import DEMO_SCRIPT
from sgcache.logs import at_level, set_level
from sgcache.tap import Root

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TWISTD = ("-c", "from twisted.scripts.twistd import run; run()")
#: the longest line either format may write (a text line: its time and
#: source, then at most TEXT_LINE_LIMIT characters and a note)
LINE_BOUND = max(logformat.JSON_LINE_LIMIT, logformat.TEXT_LINE_LIMIT + 300)


def event(text: str = "hello", level: LogLevel = LogLevel.info, **more) -> dict:
    return {"log_format": "{text}", "text": text, "log_level": level, "log_namespace": "sgcache.test",
            "log_time": 1767323045.678, **more}


def failure(message: str) -> Failure:
    try:
        raise ValueError(message)
    except ValueError:
        return Failure()


class FormatTests(unittest.TestCase):
    def test_json_line_has_the_keys(self):
        line = logformat.format_json(event("serving on 127.0.0.1:8010"))
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertEqual(json.loads(line), {"time": "2026-01-02T03:04:05.678Z", "level": "info",
                                            "source": "sgcache.test", "message": "serving on 127.0.0.1:8010"})

    def test_long_message_is_clipped_with_its_length(self):
        text = "x" * 50_000
        record = json.loads(logformat.format_json(event(text)))
        self.assertLessEqual(len(record["message"]), logformat.MESSAGE_LIMIT + 40)
        self.assertIn("(50000 chars)", record["message"])
        line = logformat.format_text(event(text))
        self.assertLessEqual(max(len(x) for x in line.splitlines()), LINE_BOUND)
        self.assertIn("(50000 chars)", line)

    def test_failure_has_a_bounded_traceback(self):
        huge = "boom " * 20_000
        record = json.loads(logformat.format_json(event("it failed", LogLevel.critical, log_failure=failure(huge))))
        self.assertEqual((record["level"], record["message"]), ("critical", "it failed"))
        self.assertIn("ValueError: boom", record["traceback"])
        self.assertIn("chars", record["traceback"])  # the note of what was cut
        self.assertLessEqual(len(record["traceback"]), logformat.TRACEBACK_LIMIT + 100)
        text = logformat.format_text(event("it failed", LogLevel.critical, log_failure=failure(huge)))
        lines = text.splitlines()
        self.assertIn("it failed", lines[0])
        self.assertTrue(all(x.startswith("\t") for x in lines[1:]), "continuation lines are indented")
        self.assertLessEqual(max(len(x) for x in lines), LINE_BOUND)
        self.assertLessEqual(len(text), logformat.MESSAGE_LIMIT + logformat.TRACEBACK_LIMIT + 1000)

    def test_json_is_ascii_and_bounded_whatever_the_text(self):
        # non-ASCII escapes to six characters each: the line is cut shorter
        for text in ("é" * 30_000, "\ud800" * 30_000, "\n" * 30_000, "😀" * 30_000):
            line = logformat.format_json(event(text, log_failure=failure(text)))
            line.encode("ascii")
            self.assertLessEqual(len(line), logformat.JSON_LINE_LIMIT)
            record = json.loads(line)
            self.assertIn("traceback", record)

    def test_text_survives_a_lone_surrogate(self):
        line = logformat.format_text(event("bad \ud800 text"))
        line.encode("utf-8")
        self.assertIn("bad \\ud800 text", line)

    def test_unformattable_event_is_still_a_line(self):
        class Broken:
            def __str__(self):
                raise RuntimeError("no")

        record = json.loads(logformat.format_json(event(Broken())))
        self.assertIn("Unable to format event", record["message"])

    def test_legacy_system_is_kept(self):
        record = json.loads(logformat.format_json(event("x", log_system="HTTPChannel,0,127.0.0.1")))
        self.assertEqual(record["system"], "HTTPChannel,0,127.0.0.1")
        self.assertIn("[HTTPChannel,0,127.0.0.1] x", logformat.format_text(event("x", log_system="HTTPChannel,0,127.0.0.1")))

    def test_empty_event_writes_nothing(self):
        self.assertIsNone(logformat.format_json({"log_level": LogLevel.info}))
        self.assertIsNone(logformat.format_text({"log_level": LogLevel.info}))


class ObserverTests(unittest.TestCase):
    def test_observer_keeps_events_at_the_level(self):
        self.addCleanup(set_level, "info")
        out = io.StringIO()
        observer = logformat.BoundedFileLogObserver(out, "json", at_level)
        log = Logger(namespace="some.library", observer=observer)
        log.debug("debug from anyone: left out at info")
        log.info("info line")
        set_level("debug")
        log.debug("debug line")
        messages = [json.loads(line)["message"] for line in out.getvalue().splitlines()]
        self.assertEqual(messages, ["info line", "debug line"])

    def test_logged_failure_through_a_logger(self):
        out = io.StringIO()
        log = Logger(namespace="sgcache.x", observer=logformat.BoundedFileLogObserver(out, "json"))
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("division failed for {who}", who="me")
        record = json.loads(out.getvalue())
        self.assertEqual((record["level"], record["source"], record["message"]),
                         ("critical", "sgcache.x", "division failed for me"))
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_unknown_format_is_refused(self):
        self.assertRaises(ValueError, logformat.BoundedFileLogObserver, io.StringIO(), "xml")

    def test_runner_observer_for_twistd(self):
        twistd = {"nodaemon": True, "logfile": "-", "syslog": False, "logger": None}
        observer = logformat.runner_observer(twistd, "json")
        self.assertTrue(ILogObserver.providedBy(observer))
        self.assertEqual(observer.log_format, "json")
        self.assertIsNone(logformat.runner_observer(dict(twistd, syslog=True), "json"), "syslog: twistd's")
        self.assertIsNone(logformat.runner_observer(dict(twistd, logger="x.y"), "json"), "--logger: twistd's")
        self.assertIsNone(logformat.runner_observer(dict(twistd, nodaemon=False), "json"),
                          "a daemon cannot log to stdout: twistd says so")
        self.assertIsNone(logformat.runner_observer(None, "json"), "not under a runner")

    def test_runner_observer_for_a_twistd_log_file(self):
        previous = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        path = os.path.abspath(self.mktemp())
        twistd = {"nodaemon": False, "logfile": path, "syslog": False, "logger": None}
        observer = logformat.runner_observer(twistd, "json")
        self.addCleanup(observer.out_file.close)
        observer(event("to the file"))
        self.assertEqual(json.loads(open(path).read())["message"], "to the file")
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL, "SIGUSR1 rotates, as twistd's")

    def test_runner_observer_for_twist(self):
        twist = {"logFile": sys.stdout, "fileLogObserverFactory": jsonFileLogObserver}
        self.assertIsNone(logformat.runner_observer(twist, "json"))
        out = io.StringIO()
        twist["fileLogObserverFactory"](out)(event("through twist"))
        self.assertEqual(json.loads(out.getvalue())["message"], "through twist")

    def test_root_gives_the_application_its_observer(self):
        application = service.Application("sgcache")
        root = Root()
        root.log_observer = logformat.BoundedFileLogObserver(io.StringIO(), "json")
        root.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), root.log_observer)
        self.assertIn(root, list(service.IServiceCollection(application)))
        bare = service.Application("sgcache")
        Root().setServiceParent(bare)
        self.assertIsNone(bare.getComponent(ILogObserver, None))


class Twistd:
    """A real ``twistd -n sgcache --demo ...`` writing its log to a file."""

    def __init__(self, test: unittest.TestCase, *args: str):
        self.test = test
        workdir = os.path.abspath(test.mktemp())
        os.makedirs(workdir)
        self.output = os.path.join(workdir, "stdout")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        argv = [sys.executable, *TWISTD, "-n", "--pidfile=", "--logfile", "-", "sgcache", "--demo",
                "--listen", "tcp:0:interface=127.0.0.1", "--admin-listen", "", *args]
        with open(self.output, "w") as out:
            self.proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
        test.addCleanup(self.kill)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)

    def text(self) -> str:
        with open(self.output, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    async def wait_for(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = reactor.seconds() + timeout
        while True:
            found = re.search(pattern, self.text())
            if found:
                return found
            if self.proc.poll() is not None:
                self.test.fail(f"twistd stopped ({self.proc.returncode}): {self.text()[-3000:]}")
            if reactor.seconds() > deadline:
                self.test.fail(f"no {pattern!r} in the log: {self.text()[-3000:]}")
            await task.deferLater(reactor, 0.1, lambda: None)

    async def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        deadline = reactor.seconds() + 30
        while self.proc.poll() is None:
            self.test.assertLess(reactor.seconds(), deadline, "twistd did not stop on SIGTERM")
            await task.deferLater(reactor, 0.1, lambda: None)
        return self.text()


def read_twice(port: int) -> None:
    """Two reads through the real client (from a thread)."""
    sg = shotgun_api3.Shotgun(f"http://127.0.0.1:{port}", *DEMO_SCRIPT)
    try:
        assert len(sg.find("Shot", [["sg_status_list", "is", "ip"]], ["code", "sg_sequence"])) == 3
        assert len(sg.find("Task", [], ["content"])) == 58
    finally:
        sg.close()


class TwistdLogTests(unittest.TestCase):
    timeout = 120

    def test_json_log_of_a_real_twistd(self):
        return defer.ensureDeferred(self._json_log())

    def test_demo_is_quiet(self):
        return defer.ensureDeferred(self._quiet_demo())

    async def _json_log(self):
        daemon = Twistd(self, "--log-format", "json")
        port = int((await daemon.wait_for(r"serving the Shotgun API on 127\.0\.0\.1:(\d+)")).group(1))
        await daemon.wait_for("store loaded")
        await deferToThread(read_twice, port)
        text = await daemon.stop()
        lines = text.splitlines()
        self.assertGreater(len(lines), 5)
        records = []
        for line in lines:
            self.assertLessEqual(len(line), logformat.JSON_LINE_LIMIT, line[:200])
            line.encode("ascii")
            record = json.loads(line)
            self.assertLessEqual({"time", "level", "source", "message"}, set(record), record)
            self.assertRegex(record["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            records.append(record)
        self.assertIn("sgcache.service", {r["source"] for r in records})
        self.assertTrue(any("serving the Shotgun API" in r["message"] for r in records))
        self.assertEqual({r["level"] for r in records} - {"info", "warn"}, set(), "nothing below info")
        self.assertFalse(any("log_format" in r for r in records), "no twisted JSON record slipped in")

    async def _quiet_demo(self):
        daemon = Twistd(self)
        port = int((await daemon.wait_for(r"serving the Shotgun API on 127\.0\.0\.1:(\d+)")).group(1))
        await daemon.wait_for("store loaded")
        await deferToThread(read_twice, port)
        await task.deferLater(reactor, 4.5, lambda: None)  # two event polls at the demo's 2 s
        text = await daemon.stop()
        lines = text.splitlines()
        per_request = [line for line in lines if "HTTP/1.1" in line or "/api3/json" in line]
        self.assertEqual(per_request, [], "no line per request to the demo site")
        self.assertFalse([line for line in lines if "#debug]" in line], "no debug lines at info")
        self.assertNotIn("Starting factory <twisted.web.server.Site", text)
        self.assertLess(len(lines), 70, text)
        self.assertLessEqual(max(len(line) for line in lines), LINE_BOUND)
        self.assertIn("Server Shut Down.", lines[-1])
