"""What `contrib/` ships, checked: the systemd unit passes `systemd-analyze
verify` (where systemd is installed) and says what the daemon does
(Type=notify, a state directory, reload by SIGHUP, a stop timeout above
--stop-timeout's default); every metric the Prometheus alert rules name is
one a running daemon exposes (PostgreSQL store: the pool metrics too), and
so is every metric docs/operations.md names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import yaml
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.config import SETTINGS
from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import start_emulator
from sgcache.testing.pg import fresh_postgres_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "contrib", "sgcache.service")
RULES = os.path.join(ROOT, "contrib", "prometheus", "sgcache-alerts.yml")


def unit_settings() -> dict[str, str]:
    out = {}
    for line in open(UNIT):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


class UnitTests(unittest.TestCase):
    def test_the_unit_says_what_the_daemon_does(self):
        unit = unit_settings()
        self.assertEqual(unit["Type"], "notify")
        self.assertEqual(unit["StateDirectory"], "sgcache")
        self.assertEqual(unit["WorkingDirectory"], "/var/lib/sgcache")
        self.assertEqual(unit["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertIn("twistd --nodaemon", unit["ExecStart"])
        stop_default = {s.name: s.default for s in SETTINGS}["stop-timeout"]
        self.assertGreater(float(unit["TimeoutStopSec"]), stop_default)

    def test_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise unittest.SkipTest("systemd-analyze is not installed here")
        # the unit as installed, with this checkout's twistd in ExecStart
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            raise unittest.SkipTest(f"no twistd script beside {sys.executable}")
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "sgcache.service")
        with open(path, "w") as fh:
            fh.write(open(UNIT).read().replace("/opt/sgcache/venv/bin/twistd", twistd))
        result = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
        problems = [line for line in (result.stdout + result.stderr).splitlines()
                    if "sgcache.service" in line]
        self.assertEqual((result.returncode, problems), (0, []), result.stdout + result.stderr)


class AlertRuleTests(unittest.TestCase):
    async def test_every_metric_the_rules_name_is_exposed(self):
        rules = yaml.safe_load(open(RULES))
        exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
        self.assertTrue(all("alert" in rule and "annotations" in rule
                            for group in rules["groups"] for rule in group["rules"]))
        named = {name for expr in exprs for name in re.findall(r"\bsgcache_[a-z_]+", expr)}
        self.assertGreater(len(named), 5)
        path = os.path.abspath(self.mktemp()) + ".yml"
        with open(path, "w") as fh:
            fh.write("entities:\n  Shot:\n    fields: {code: text}\n")
        schema = Schema.load(path)
        site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        daemon = await start_daemon(schema, site.url, await fresh_postgres_url(self), settings={"schema": path})
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))

        def read() -> None:  # one read, passed through: request metrics have samples
            body = json.dumps({"method_name": "read", "params": [
                {"script_name": CACHE_SCRIPT[0], "script_key": CACHE_SCRIPT[1]},
                {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "and", "conditions": []},
                 "paging": {"entities_per_page": 10, "current_page": 1}, "return_only": "active"}]}).encode()
            urllib.request.urlopen(urllib.request.Request(daemon.url + "/api3/json", data=body), timeout=10).read()

        await deferToThread(read)

        def scrape() -> str:
            with urllib.request.urlopen(admin_url(daemon) + "/metrics", timeout=10) as response:
                return response.read().decode()

        text = await deferToThread(scrape)
        exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
        self.assertEqual(sorted(named - exposed), [])
        # and every metric docs/operations.md names (histograms by _count)
        documented = set(re.findall(r"\bsgcache_[a-z_]*[a-z]", open(os.path.join(ROOT, "docs", "operations.md")).read()))
        self.assertGreater(len(documented), 20)
        self.assertEqual(sorted(n for n in documented if n not in exposed and n + "_count" not in exposed), [])
