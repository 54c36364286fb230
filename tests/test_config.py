"""Tests for sgcache.config: precedence and one-line validation errors."""

import os

from twisted.trial import unittest

from sgcache.config import ConfigError, Options, resolve

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
        self.assertIsNone(out["access_log"])
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
        ]
        for extra, option in cases:
            argv = list(REQUIRED) + extra
            exc = self.assertRaises(ConfigError, resolve, parse(*argv), {})
            self.assertOneLine(exc, option)

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
