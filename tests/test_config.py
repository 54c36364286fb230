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
