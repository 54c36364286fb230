"""The commands users type: `twistd sgcache` (start-up errors, --demo) and
`sgcache scan --full` / `sgcache status`, run as real subprocesses against an
emulator served by the test process."""

from __future__ import annotations

import os
import sys

import shotgun_api3
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from sgcache.demo import DemoSite, bundled_schema_path, demo_entities
from sgcache.schema import Schema
from sgcache.tap import build
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import start_emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASIC = os.path.join(ROOT, "schema", "basic.yml")


def python(*args: str, env: dict | None = None) -> defer.Deferred:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
    environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
    environ.update(env or {})
    return getProcessOutputAndValue(sys.executable, list(args), env=environ, path=ROOT)


TWISTD = ("-c", "from twisted.scripts.twistd import run; run()")


class TwistdTests(unittest.TestCase):
    def test_plugin_is_listed(self):
        async def go():
            out, err, code = await python(*TWISTD, "--help")
            self.assertEqual(code, 0, err)
            self.assertIn(b"sgcache", out)
            self.assertIn(b"sgcache-emulator", out)

        return defer.ensureDeferred(go())

    def test_wrong_option_is_one_clear_line(self):
        async def go():
            out, err, code = await python(
                *TWISTD, "-n", "--pidfile=", "sgcache", "--demo", "--db", "mysql://nope"
            )
            self.assertNotEqual(code, 0)
            lines = [line for line in err.decode().splitlines() if line.strip()]
            self.assertIn("sgcache: --db:", lines[-1])
            self.assertNotIn("Traceback", err.decode() + out.decode())

        return defer.ensureDeferred(go())

    def test_unreachable_store_stops_with_one_line_and_status_1(self):
        async def go():
            out, err, code = await python(
                *TWISTD, "-n", "--pidfile=", "sgcache", "--schema", BASIC,
                "--shotgun", "http://127.0.0.1:1", "--script-name", "a", "--api-key", "b",
                "--db", "postgresql://postgres@127.0.0.1:5432/sgcache_no_such_database",
            )
            self.assertEqual(code, 1)
            text = out.decode() + err.decode()
            self.assertIn("sgcache: --db: cannot open the store", text)
            self.assertNotIn("Traceback", text)

        return defer.ensureDeferred(go())

    def test_bad_schema_file_is_one_clear_line(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as fh:
            fh.write("entities:\n  Shot:\n    fields:\n      code: nonsense\n")

        async def go():
            out, err, code = await python(
                *TWISTD, "-n", "--pidfile=", "sgcache", "--schema", path,
                "--shotgun", "http://127.0.0.1:1", "--script-name", "a", "--api-key", "b",
            )
            self.assertNotEqual(code, 0)
            text = err.decode() + out.decode()
            self.assertIn("Shot.code", text)
            self.assertIn("nonsense", text)
            self.assertNotIn("Traceback", text)

        return defer.ensureDeferred(go())


class DemoTests(unittest.TestCase):
    def test_demo_serves_the_demo_project(self):
        async def go():
            settings = {
                "demo": True, "schema": None, "db": "sqlite:///sgcache.sqlite", "shotgun": None,
                "script_name": None, "api_key": None, "listen": "tcp:0:interface=127.0.0.1",
                "poll_interval": 3600.0, "info_refresh": 300.0,
            }
            parent = build(settings, reactor)
            parent.startService()
            self.addCleanup(parent.stopService)
            daemon = parent.daemon
            port = await daemon.ready
            await daemon.loaded
            self.assertEqual(daemon.store.dialect, "sqlite")
            # connect=False: the first call (info) must not run on the reactor thread
            sg = shotgun_api3.Shotgun(f"http://127.0.0.1:{port.getHost().port}", "demo", "demo", connect=False)
            self.addCleanup(sg.close)
            shots = await deferToThread(sg.find, "Shot", [], ["code", "sg_sequence", "tasks"])
            self.assertEqual(len(shots), 12)
            self.assertEqual(shots[0]["sg_sequence"]["name"], "SEQ010")
            tasks = await deferToThread(sg.find, "Task", [["entity", "is", shots[0]]], ["content", "step"])
            self.assertEqual(sorted(t["step"]["name"] for t in tasks), ["Animation", "Comp", "Layout", "Lighting"])
            self.assertGreater(daemon.cache.counters["read.local"], 0)

        return defer.ensureDeferred(go())

    def test_demo_data_links_resolve(self):
        schema = Schema.load(bundled_schema_path())
        ids = {(i["type"], i["id"]) for i in demo_entities()}
        for item in demo_entities():
            self.assertIn(item["type"], schema)
            for value in item["fields"].values():
                links = value if isinstance(value, list) else [value]
                for link in links:
                    if isinstance(link, dict) and "id" in link:
                        self.assertIn((link["type"], link["id"]), ids)

    def test_demo_site_settings(self):
        site = DemoSite(reactor)
        settings = site.apply({"schema": None, "db": "sqlite:///sgcache.sqlite"})
        self.assertEqual(settings["db"], "sqlite://:memory:")
        self.assertEqual((settings["script_name"], settings["api_key"]), ("demo", "demo"))


class AdminCommandTests(unittest.TestCase):
    def test_scan_full_then_status(self):
        async def go():
            schema = Schema.load(BASIC)
            site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT]), page_size=5)
            self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
            site.emulator.seed([i for i in demo_entities() if i["type"] in schema])
            db = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
            out, err, code = await python(
                "-m", "sgcache.admin.cli", "scan", "--full", "--schema", BASIC, "--db", db,
                "--shotgun", site.url, "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1],
            )
            self.assertEqual(code, 0, err)
            self.assertRegex(out.decode(), r"(?m)^Shot: .*\b12 entities")
            self.assertIn(b"full scan done", out)
            out, err, code = await python("-m", "sgcache.admin.cli", "status", "--schema", BASIC, "--db", db)
            self.assertEqual(code, 0, err)
            shot_line = [line for line in out.decode().splitlines() if line.startswith("Shot ")][0]
            self.assertIn("12 rows", shot_line)
            # a wrong option: one line, exit 2
            out, err, code = await python("-m", "sgcache.admin.cli", "scan", "--full", "--db", db)
            self.assertEqual(code, 2)
            self.assertEqual(len(err.decode().strip().splitlines()), 1)

        return defer.ensureDeferred(go())



