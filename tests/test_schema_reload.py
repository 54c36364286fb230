"""Live schema changes as an operator makes them: `sgcache schema plan` and
`sgcache schema reload` against a running daemon's admin listener, SIGHUP
to a real `twistd sgcache`, a bad file refused with the daemon unchanged,
and a file field the site lacks reported, never served as null.

(tests/test_schema_live.py reads continuously through every kind of change.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from sgcache.admin.cli import main as cli_main
from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import client, start_emulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SITE_YAML = """\
entities:
  Project:
    fields: {name: text}
  Shot:
    fields: {code: text, description: text, sg_cut_in: number, project: {type: entity, entity_types: [Project]}}
  Asset:
    fields: {code: text, project: {type: entity, entity_types: [Project]}}
"""

#: what the cache caches at first: no description, no Asset
FILE_YAML = """\
entities:
  Project:
    fields: {name: text}
  Shot:
    fields: {code: text, sg_cut_in: number, project: {type: entity, entity_types: [Project]}}
"""


def write(path: str, text: str) -> str:
    with open(path, "w") as fh:
        fh.write(text)
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(argv))
    return code, out.getvalue(), err.getvalue()


async def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.05, lambda: None)


class ReloadTests(unittest.TestCase):
    async def start(self, file_text: str = FILE_YAML):
        site = await start_emulator(Schema.load(write(os.path.abspath(self.mktemp()) + ".yml", SITE_YAML)),
                                    scripts=dict([CACHE_SCRIPT, ("user", "key")]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        site.emulator.seed([{"type": "Project", "id": 1, "fields": {"name": "P"}}]
                           + [{"type": "Shot", "fields": {"code": f"sh{i}", "description": f"d{i}", "sg_cut_in": i,
                                                          "project": {"type": "Project", "id": 1}}}
                              for i in range(4)])
        self.schema_path = write(os.path.abspath(self.mktemp()) + ".yml", file_text)
        url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
        daemon = await start_daemon(Schema.load(self.schema_path), site.url, url,
                                    settings={"schema": self.schema_path})
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        sg = client(daemon.url, "user", "key")
        self.addCleanup(sg.close)
        direct = client(site.url, "user", "key")
        self.addCleanup(direct.close)
        await deferToThread(sg.find, "Shot", [], ["code"])  # vouches for "user"
        return site, daemon, sg, direct

    def test_plan_then_reload_through_the_command(self):
        async def go():
            site, daemon, sg, direct = await self.start()
            admin = admin_url(daemon)
            code, out, err = await deferToThread(run_cli, "schema", "plan", "--admin", admin)
            self.assertEqual(code, 0, err)
            self.assertIn("no change", out)
            write(self.schema_path, FILE_YAML.replace("sg_cut_in: number,", "sg_cut_in: number, description: text,")
                  + "  Asset:\n    fields: {code: text}\n")
            code, out, err = await deferToThread(run_cli, "schema", "plan", "--admin", admin)
            self.assertEqual(code, 0, err)
            self.assertIn("add type Asset", out)
            self.assertIn("add field Shot.description", out)
            # a plan changes nothing
            self.assertNotIn("Asset", daemon.service.keeper.schema)
            self.assertNotIn("description", daemon.service.keeper.schema["Shot"].fields)

            code, out, err = await deferToThread(run_cli, "schema", "reload", "--admin", admin)
            self.assertEqual(code, 0, err)
            self.assertIn("schema reload applied", out)
            self.assertIn("add field Shot.description", out)
            self.assertIn("Asset", daemon.service.keeper.schema)
            await wait_for(lambda: not daemon.cache.status()["loading"], "the new fields to load")
            local = daemon.cache.counters["read.local"]
            got = await deferToThread(sg.find, "Shot", [], ["code", "description"], order=[{"field_name": "id"}])
            want = await deferToThread(direct.find, "Shot", [], ["code", "description"], order=[{"field_name": "id"}])
            self.assertEqual(got, want)
            self.assertEqual(daemon.cache.counters["read.local"], local + 1)
            status = daemon.cache.status()["schema"]
            self.assertEqual(status["changes_applied"], 1)
            self.assertIn("add type Asset: table created, scanned in full, served once loaded",
                          status["last_change"]["changes"])

            code, out, err = await deferToThread(run_cli, "schema", "plan", "--admin", admin, "--json")
            self.assertEqual(code, 0, err)
            self.assertEqual(json.loads(out)["changes"], ["no change"])

        return defer.ensureDeferred(go())

    def test_a_bad_file_is_refused_and_nothing_changes(self):
        async def go():
            site, daemon, sg, direct = await self.start()
            before = daemon.service.keeper.schema
            write(self.schema_path, "entities:\n  Shot:\n    fields: {code: nonsense}\n")
            code, out, err = await deferToThread(run_cli, "schema", "reload", "--admin", admin_url(daemon))
            self.assertEqual(code, 2)
            self.assertIn("the daemon refused", err)
            self.assertIn("nonsense", err)
            self.assertEqual(len(err.strip().splitlines()), 1, err)
            self.assertIs(daemon.service.keeper.schema, before)
            local = daemon.cache.counters["read.local"]
            await deferToThread(sg.find, "Shot", [], ["code"])
            self.assertEqual(daemon.cache.counters["read.local"], local + 1)

        return defer.ensureDeferred(go())

    def test_an_unreachable_daemon_is_one_line(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code, out, err = run_cli("schema", "reload", "--admin", f"http://127.0.0.1:{port}")
        self.assertEqual(code, 2)
        self.assertIn("cannot reach the daemon's admin listener", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)

    def test_a_file_field_the_site_lacks_is_reported_and_not_served(self):
        async def go():
            site, daemon, sg, direct = await self.start(
                FILE_YAML.replace("sg_cut_in: number,", "sg_cut_in: number, sg_typo: text,"))
            self.assertNotIn("sg_typo", daemon.service.keeper.schema["Shot"].fields)
            problems = daemon.cache.status()["schema"]["problems"]
            self.assertIn("Shot.sg_typo: in the schema file, not on the site (not served)", problems)
            columns = (await daemon.store.describe_storage())["Shot"]["columns"]
            self.assertNotIn("sg_typo", columns)
            # the site leaves the key out (never a null of ours)
            got = await deferToThread(sg.find, "Shot", [], ["code", "sg_typo"])
            self.assertEqual(got, await deferToThread(direct.find, "Shot", [], ["code", "sg_typo"]))
            self.assertNotIn("sg_typo", got[0])
            self.assertEqual(daemon.cache.passthrough_reasons["return field not cached"], 1)

        return defer.ensureDeferred(go())


    def test_a_command_line_scan_keeps_what_the_rules_added(self):
        """`sgcache scan` runs on the schema the daemon synced (file + rules),
        not on the file alone: it must not drop the rules' columns."""
        async def go():
            site, daemon, sg, direct = await self.start()
            rules = write(os.path.abspath(self.mktemp()), "+ Shot.description\n")
            daemon.service.keeper.rules_path = rules
            await daemon.service.keeper.reload("test")
            await wait_for(lambda: not daemon.cache.status()["loading"], "Shot.description to load")
            db = daemon.service.settings["db"]
            await daemon.stop()
            out, err, code = await getProcessOutputAndValue(
                sys.executable, ["-m", "sgcache.admin.cli", "scan", "--full", "--schema", self.schema_path,
                                 "--db", db, "--shotgun", site.url, "--script-name", CACHE_SCRIPT[0],
                                 "--api-key", CACHE_SCRIPT[1]],
                env={**{k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")},
                     "PYTHONPATH": ROOT}, path=ROOT)
            self.assertEqual(code, 0, err)
            from sgcache.store import open_store
            store = open_store(db, reactor)
            await store.open()
            self.addCleanup(lambda: defer.ensureDeferred(store.close()))
            self.assertIn("description", (await store.describe_storage())["Shot"]["columns"])
            self.assertEqual((await store.field_states())["Shot"]["description"], "ready")

        return defer.ensureDeferred(go())


class SighupTests(unittest.TestCase):
    def test_sighup_reloads_a_running_twistd(self):
        async def go():
            site_schema = Schema.load(write(os.path.abspath(self.mktemp()) + ".yml", SITE_YAML))
            site = await start_emulator(site_schema, scripts=dict([CACHE_SCRIPT]))
            self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
            schema_path = write(os.path.abspath(self.mktemp()) + ".yml", FILE_YAML)
            logfile = os.path.abspath(self.mktemp()) + ".log"
            ports = []
            for _ in range(2):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    ports.append(s.getsockname()[1])
            args = [
                sys.executable, "-m", "twisted", "--log-file", logfile, "--log-format", "text", "sgcache",
                "--shotgun", site.url, "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1],
                "--schema", schema_path, "--db", "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite",
                "--listen", f"tcp:{ports[0]}:interface=127.0.0.1",
                "--admin-listen", f"tcp:{ports[1]}:interface=127.0.0.1", "--poll-interval", "3600",
            ]
            env = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
            env["PYTHONPATH"] = ROOT
            errors = open(os.path.abspath(self.mktemp()), "w+")
            self.addCleanup(errors.close)
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=errors, stderr=errors)

            def kill():
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(20)
            self.addCleanup(kill)
            admin = f"http://127.0.0.1:{ports[1]}"

            def plan() -> dict | None:
                try:
                    with urllib.request.urlopen(admin + "/schema/plan", timeout=5) as response:
                        return json.loads(response.read())
                except OSError:
                    return None

            deadline = reactor.seconds() + 30
            while await deferToThread(plan) is None:
                if proc.poll() is not None:
                    errors.seek(0)
                    self.fail(f"twistd sgcache stopped: {errors.read()[-3000:]}")
                self.assertLess(reactor.seconds(), deadline, "the daemon did not start")
                await task.deferLater(reactor, 0.2, lambda: None)
            write(schema_path, FILE_YAML + "  Asset:\n    fields: {code: text}\n")
            self.assertIn("add type Asset: table created, scanned in full, served once loaded",
                          (await deferToThread(plan))["changes"])
            proc.send_signal(signal.SIGHUP)
            deadline = reactor.seconds() + 30
            while (await deferToThread(plan))["changes"] != ["no change"]:
                self.assertLess(reactor.seconds(), deadline, "SIGHUP did not reload")
                await task.deferLater(reactor, 0.2, lambda: None)
            text = open(logfile).read()
            self.assertIn("SIGHUP: reloading the schema", text)
            self.assertIn("schema change: add type Asset", text)
            self.assertIsNone(proc.poll())

        return defer.ensureDeferred(go())
