"""Tests for sgcache.config: precedence and one-line validation errors."""

import os

from twisted.trial import unittest

import datetime

from sgcache.config import ConfigError, Options, parse_timezone, resolve

HERE = os.path.dirname(os.path.abspath(__file__))
BASIC = os.path.join(os.path.dirname(HERE), "schema", "basic.yml")


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return dict(options)


REQUIRED = ["--schema", BASIC, "--shotgun", "https://site.example", "--script-name", "s", "--api-key", "k"]


class ResolveTests(unittest.TestCase):
    def test_defaults(self):
        out = resolve(parse(*REQUIRED), environ={})
        self.assertEqual(out["db"], "sqlite:///sgcache.sqlite")
        self.assertEqual(out["listen"], "tcp:8010:interface=127.0.0.1")
        self.assertEqual(out["poll_interval"], 2.0)
        self.assertFalse(out["demo"])
        self.assertEqual(out["log_level"], "info")
        self.assertEqual(out["site_timezone"], "UTC")
        self.assertIsNone(out["access_log"])
        self.assertEqual(out["answer_cache_mb"], 64.0)
        self.assertEqual(resolve(parse(*REQUIRED, "--answer-cache-mb", "0"), environ={})["answer_cache_mb"], 0.0)
        self.assertEqual(resolve(parse(*REQUIRED, "--log-level", "DEBUG"), environ={})["log_level"], "debug")

    def test_environment_fills_missing_options(self):
        out = resolve(
            parse("--schema", BASIC),
            environ={
                "SGCACHE_SHOTGUN": "https://env.example/",
                "SGCACHE_SCRIPT_NAME": "envscript",
                "SGCACHE_API_KEY": "envkey",
                "SGCACHE_DB": "postgresql://u@h:5432/db",
            },
        )
        self.assertEqual(out["shotgun"], "https://env.example")
        self.assertEqual(out["script_name"], "envscript")
        self.assertEqual(out["db"], "postgresql://u@h:5432/db")

    def test_command_line_beats_environment_beats_file(self):
        path = self.mktemp()
        with open(path, "w") as fh:
            fh.write("shotgun: https://file.example\nscript_name: filescript\napi_key: filekey\n")
            fh.write("poll_interval: 7\n")
        out = resolve(
            parse("--config", path, "--schema", BASIC, "--script-name", "cli"),
            environ={"SGCACHE_SCRIPT_NAME": "env", "SGCACHE_API_KEY": "envkey"},
        )
        self.assertEqual(out["script_name"], "cli")
        self.assertEqual(out["api_key"], "envkey")
        self.assertEqual(out["shotgun"], "https://file.example")
        self.assertEqual(out["poll_interval"], 7.0)

    def assertOneLine(self, exc, option):
        message = str(exc)
        self.assertNotIn("\n", message)
        self.assertIn(option, message)

    def test_bad_values_name_the_option(self):
        cases = [
            (["--db", "mysql://x"], "--db"),
            (["--shotgun", "not a url"], "--shotgun"),
            (["--listen", "nonsense:1:2"], "--listen"),
            (["--poll-interval", "-1"], "--poll-interval"),
            (["--schema", "/does/not/exist.yml"], "--schema"),
            (["--log-level", "chatty"], "--log-level"),
            (["--site-timezone", "Mars/Olympus_Mons"], "--site-timezone"),
            (["--site-timezone", "+25:00"], "--site-timezone"),
            (["--answer-cache-mb", "-1"], "--answer-cache-mb"),
            (["--answer-cache-mb", "inf"], "--answer-cache-mb"),
            (["--answer-cache-mb", "lots"], "--answer-cache-mb"),
            (["--max-request-mb", "0"], "--max-request-mb"),
            (["--max-upload-mb", "-1"], "--max-upload-mb"),
            (["--read-budget-ms", "-5"], "--read-budget-ms"),
            (["--pg-pool-size", "0"], "--pg-pool-size"),
            (["--pg-pool-size", "two"], "--pg-pool-size"),
            (["--auth-ttl", "0"], "--auth-ttl"),
            (["--api-key-file", "/does/not/exist"], "--api-key-file"),
        ]
        for extra, option in cases:
            argv = list(REQUIRED) + extra
            exc = self.assertRaises(ConfigError, resolve, parse(*argv), {})
            self.assertOneLine(exc, option)

    def test_hardening_defaults(self):
        out = resolve(parse(*REQUIRED), environ={})
        self.assertEqual((out["max_request_mb"], out["max_upload_mb"], out["read_budget_ms"]), (16.0, 2048.0, 1000.0))
        self.assertEqual((out["pg_pool_size"], out["auth_ttl"]), (4, 60.0))
        self.assertEqual((out["serve_scripts"], out["pass_scripts"]), ("*", ""))
        out = resolve(parse(*REQUIRED, "--serve-scripts", " render , farm-* ,", "--pass-scripts", "x"), environ={})
        self.assertEqual((out["serve_scripts"], out["pass_scripts"]), ("render,farm-*", "x"))

    def test_api_key_file(self):
        path = self.mktemp()
        with open(path, "w") as fh:
            fh.write("  the-key  \nignored\n")
        argv = [a for a in REQUIRED if a not in ("--api-key", "k")] + ["--api-key-file", path]
        self.assertEqual(resolve(parse(*argv), environ={})["api_key"], "the-key")
        # the environment works too; the key is given once
        self.assertEqual(resolve(parse(*argv[:-2]), environ={"SGCACHE_API_KEY_FILE": path})["api_key"], "the-key")
        exc = self.assertRaises(ConfigError, resolve, parse(*REQUIRED, "--api-key-file", path), {})
        self.assertOneLine(exc, "--api-key-file")
        with open(path, "w") as fh:
            fh.write("\n")
        exc = self.assertRaises(ConfigError, resolve, parse(*argv), {})
        self.assertOneLine(exc, "--api-key-file")

    def test_missing_required(self):
        exc = self.assertRaises(ConfigError, resolve, parse(), {})
        self.assertOneLine(exc, "--shotgun")

    def test_demo_needs_nothing_else(self):
        out = resolve(parse("--demo"), environ={})
        self.assertTrue(out["demo"])

    def test_unknown_key_in_config_file(self):
        path = self.mktemp()
        with open(path, "w") as fh:
            fh.write("shotgunn: https://typo.example\n")
        exc = self.assertRaises(ConfigError, resolve, parse("--config", path), {})
        self.assertOneLine(exc, "shotgunn")


class TimezoneTests(unittest.TestCase):
    def test_forms(self):
        self.assertIs(parse_timezone("UTC"), datetime.timezone.utc)
        self.assertEqual(parse_timezone("+10:00"), datetime.timezone(datetime.timedelta(hours=10)))
        self.assertEqual(parse_timezone("-0530"), datetime.timezone(-datetime.timedelta(hours=5, minutes=30)))
        la = parse_timezone("America/Los_Angeles")
        summer = datetime.datetime(2024, 7, 1, 12, tzinfo=datetime.timezone.utc).astimezone(la)
        winter = datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone.utc).astimezone(la)
        self.assertEqual((summer.utcoffset(), winter.utcoffset()),
                         (-datetime.timedelta(hours=7), -datetime.timedelta(hours=8)))
        for bad in ("", "nowhere", "+24:00", "10"):
            self.assertRaises(ValueError, parse_timezone, bad)


class SystemdListenTests(unittest.TestCase):
    """``--listen systemd:...``: the socket systemd hands over (socket
    activation, contrib/sgcache.socket) is taken; a process handed none is
    told so in one line."""

    assertOneLine = ResolveTests.assertOneLine

    def test_no_socket_handed_over(self):
        # this process was started by no socket unit
        exc = self.assertRaises(ConfigError, resolve,
                                parse(*REQUIRED, "--listen", "systemd:domain=INET:index=0"), {})
        self.assertOneLine(exc, "--listen")
        self.assertIn("no such socket was handed to this process", str(exc))
        self.assertIn("LISTEN_FDS", str(exc))
        # a wrong string is still one
        exc = self.assertRaises(ConfigError, resolve, parse(*REQUIRED, "--listen", "systemd:domain=INET"), {})
        self.assertOneLine(exc, "--listen")
        self.assertIn("is not a Twisted endpoint string", str(exc))

    def test_a_handed_over_socket_is_taken(self):
        import socket
        import subprocess
        import sys

        code = (
            "import sys\n"
            "from sgcache.config import ConfigError, Options, resolve\n"
            "for listen in sys.argv[1:]:\n"
            "    options = Options()\n"
            f"    options.parseOptions({REQUIRED!r} + ['--listen', listen])\n"
            "    try:\n"
            "        print(resolve(dict(options), {})['listen'])\n"
            "    except ConfigError as e:\n"
            "        print(e)\n"
        )
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        root = os.path.dirname(HERE)
        result = subprocess.run(
            [sys.executable, "-m", "sgcache.testing.socketlaunch", str(listening.fileno()), "--",
             sys.executable, "-c", code, "systemd:domain=INET:index=0", "systemd:domain=INET:name=sgcache.socket",
             "systemd:domain=INET:index=1", "systemd:domain=NOPE:index=0"],
            pass_fds=[listening.fileno()], cwd=root, env=dict(os.environ, PYTHONPATH=root),
            capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[:2], ["systemd:domain=INET:index=0", "systemd:domain=INET:name=sgcache.socket"])
        # one socket handed over: no second; and a wrong family is a wrong string
        self.assertTrue(lines[2].startswith("--listen: systemd:domain=INET:index=1: no such socket"), lines)
        self.assertTrue(lines[3].startswith("--listen: 'systemd:domain=NOPE:index=0' is not a Twisted endpoint"),
                        lines)
