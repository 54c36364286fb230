"""What `contrib/` ships, checked: the systemd unit passes `systemd-analyze
verify` (where systemd is installed) and says what the daemon does
(Type=notify, a state directory, reload by SIGHUP, a stop timeout above
--stop-timeout's default); so do the units for several processes on one
port (sgcache.socket, the sgcache@.service template: the socket handed over,
an admin port per instance, options the daemon's parser takes); every metric the Prometheus alert rules name is
one a running daemon exposes (PostgreSQL store: the pool metrics too), and
so is every metric docs/operations.md names."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request

import yaml
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.config import SETTINGS, Options, _admin_listen
from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import start_emulator
from sgcache.testing.pg import fresh_postgres_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "contrib", "sgcache.service")
SOCKET = os.path.join(ROOT, "contrib", "sgcache.socket")
TEMPLATE = os.path.join(ROOT, "contrib", "sgcache@.service")
RULES = os.path.join(ROOT, "contrib", "prometheus", "sgcache-alerts.yml")


def unit_settings(path: str = UNIT) -> dict[str, str]:
    out = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def sgcache_options(exec_start: str) -> dict:
    """ExecStart's options after `sgcache`, parsed by the daemon's parser."""
    words = shlex.split(exec_start)
    options = Options()
    options.parseOptions(words[words.index("sgcache") + 1:])
    return dict(options)


def analyze_verify(testcase: unittest.TestCase, units: list[str]) -> None:
    """`systemd-analyze verify` on `units` as installed (side by side, with
    this checkout's twistd in ExecStart): no problem reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise unittest.SkipTest("systemd-analyze is not installed here")
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(twistd):
        raise unittest.SkipTest(f"no twistd script beside {sys.executable}")
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    paths = []
    for unit in units:
        path = os.path.join(directory, os.path.basename(unit))
        with open(path, "w") as fh:
            fh.write(open(unit).read().replace("/opt/sgcache/venv/bin/twistd", twistd))
        paths.append(path)
    result = subprocess.run([analyze, "verify"] + paths, capture_output=True, text=True, timeout=60)
    # a template's problems name it, or its instance (sgcache@i.service)
    names = [os.path.basename(unit).split("@")[0] + "@" if "@" in unit else os.path.basename(unit)
             for unit in units]
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if any(name in line for name in names)]
    testcase.assertEqual((result.returncode, problems), (0, []), result.stdout + result.stderr)


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
        analyze_verify(self, [UNIT])


class SeveralProcessesUnitTests(unittest.TestCase):
    """contrib/sgcache.socket and contrib/sgcache@.service: N processes
    serving one port (tests/test_sockets.py runs two daemons so)."""

    def test_the_socket_unit(self):
        unit = unit_settings(SOCKET)
        self.assertEqual(unit["ListenStream"], "127.0.0.1:8010")
        # one listening socket handed to every instance, not one per connection
        self.assertEqual(unit.get("Accept", "no"), "no")
        # systemd starts a socket's service on traffic and needs one: an
        # instance of the template, not sgcache.service (the single process)
        self.assertRegex(unit["Service"], r"^sgcache@\d+\.service$")
        self.assertEqual(unit["WantedBy"], "sockets.target")

    def test_the_template_unit(self):
        unit = unit_settings(TEMPLATE)
        single = unit_settings(UNIT)
        self.assertEqual(unit["Sockets"], "sgcache.socket")
        self.assertIn("sgcache.socket", unit["Requires"].split())
        self.assertIn("sgcache.socket", unit["After"].split())
        # what the daemon does is as for the single process
        for key in ("Type", "NotifyAccess", "StateDirectory", "WorkingDirectory", "EnvironmentFile",
                    "ExecReload", "TimeoutStopSec", "TimeoutStartSec", "User", "Restart"):
            self.assertEqual(unit[key], single[key], key)
        self.assertIn("twistd --nodaemon --pidfile= --logfile=- sgcache --config /etc/sgcache/sgcache.yml",
                      unit["ExecStart"])
        # the options parse with the daemon's parser; each instance's admin
        # port is its instance name, the client socket the one handed over
        options = sgcache_options(unit["ExecStart"].replace("%i", "8111"))
        self.assertEqual(options["config"], "/etc/sgcache/sgcache.yml")
        self.assertEqual(options["listen"], "systemd:domain=INET:index=0")
        self.assertEqual(_admin_listen(options["admin-listen"]), "tcp:8111:interface=127.0.0.1")
        # the family the socket unit listens on (an IPv4 address: INET)
        listen = unit_settings(SOCKET)["ListenStream"]
        self.assertEqual(ipaddress.ip_address(listen.rpartition(":")[0]).version, 4)
        # the socket's Service= is an instance of this template with a port
        port = int(re.fullmatch(r"sgcache@(\d+)\.service", unit_settings(SOCKET)["Service"]).group(1))
        self.assertTrue(1024 < port < 65536 and port != int(listen.rpartition(":")[2]))

    def test_the_single_unit_stays_off_the_socket(self):
        # sgcache.service listens on its own (the options' --listen)
        self.assertNotIn("Sockets", unit_settings(UNIT))
        self.assertNotIn("systemd:", unit_settings(UNIT)["ExecStart"])

    def test_systemd_analyze_verify(self):
        # the socket's Service= must load (from the template beside it)
        analyze_verify(self, [SOCKET, TEMPLATE])


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
