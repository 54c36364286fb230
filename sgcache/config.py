"""Daemon settings: one table of options, each settable on the command line,
as ``SGCACHE_<NAME>`` in the environment, or in a YAML config file
(``--config``), in that order of precedence. Validation produces one clear
line naming the option (`ConfigError`), never a traceback.
"""

from __future__ import annotations

import datetime
import os
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlparse

import yaml
from twisted.internet import endpoints
from twisted.python import usage


class ConfigError(ValueError):
    """A setting is wrong; str() is the one line to show."""


def _url(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        parsed = urlparse(str(value))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"--{name}: {value!r} is not an http(s) URL")
        return str(value).rstrip("/")

    return check


def _db(value: Any) -> str:
    text = str(value)
    if not (text.startswith("sqlite:") or text.startswith("postgresql:") or text.startswith("postgres:")):
        raise ConfigError(f"--db: {text!r} must start with sqlite:/// or postgresql://")
    return text


def _number(name: str, ok: Callable[[float], bool], rule: str) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"--{name}: {value!r} is not a number")
        if not ok(number):
            raise ConfigError(f"--{name}: {rule}")
        return number

    return check


def _positive(name: str) -> Callable[[Any], float]:
    return _number(name, lambda n: n > 0, "must be greater than 0")


def _not_negative(name: str) -> Callable[[Any], float]:
    return _number(name, lambda n: 0 <= n < float("inf"), "must be 0 or more (and finite)")


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"expected a boolean, got {value!r}")


def _listen(value: Any) -> str:
    text = str(value)
    from twisted.internet import reactor

    try:
        endpoints.serverFromString(reactor, text)
    except (IndexError, KeyError) as e:
        if not text.startswith("systemd:"):
            raise ConfigError(f"--listen: {text!r} is not a Twisted endpoint string ({e})")
        # a right systemd: string, in a process that was handed no such
        # socket (Twisted reads LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES)
        raise ConfigError(f"--listen: {text}: no such socket was handed to this process (start it through "
                          f"its socket unit, contrib/sgcache.socket with contrib/sgcache@.service: systemd "
                          f"hands the socket over with LISTEN_FDS and LISTEN_PID)")
    except Exception as e:
        raise ConfigError(f"--listen: {text!r} is not a Twisted endpoint string ({e})")
    return text


def _admin_listen(value: Any) -> str:
    text = str(value).strip()
    if not text or text.lower() in ("off", "none"):
        return ""
    from twisted.internet import reactor

    try:
        endpoints.serverFromString(reactor, text)
    except Exception as e:
        raise ConfigError(f"--admin-listen: {text!r} is not a Twisted endpoint string ({e})")
    return text


def _log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("text", "json"):
        raise ConfigError(f"--log-format: {value!r} is not one of text, json")
    return text


def _share(name: str) -> Callable[[Any], float]:
    return _number(name, lambda n: 0.0 <= n <= 1.0, "must be between 0 and 1")


def _shadow_action(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("log", "passthrough"):
        raise ConfigError(f"--shadow-action: {value!r} is not one of log, passthrough")
    return text


def _role(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("all", "web", "sync"):
        raise ConfigError(f"--role: {value!r} is not one of all, web, sync")
    return text


def _log_level(value: Any) -> str:
    from sgcache.logs import LEVELS

    text = str(value).strip().lower()
    if text not in LEVELS:
        raise ConfigError(f"--log-level: {value!r} is not one of {', '.join(LEVELS)}")
    return text


def parse_timezone(value: Any) -> datetime.tzinfo:
    """``UTC``, a fixed offset (``+10:00``, ``-05:30``) or an IANA zone name
    (``America/Los_Angeles``) -> tzinfo; ValueError when none of those."""
    text = str(value).strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return datetime.timezone.utc
    match = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})", text)
    if match:
        sign, hours, minutes = match.groups()
        offset = datetime.timedelta(hours=int(hours), minutes=int(minutes))
        if offset >= datetime.timedelta(hours=24):
            raise ValueError(f"{text!r} is not a UTC offset")
        return datetime.timezone(-offset if sign == "-" else offset)
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{text!r} is not UTC, an offset like +10:00, or a time zone name") from None


def _timezone(value: Any) -> str:
    try:
        parse_timezone(value)
    except ValueError as e:
        raise ConfigError(f"--site-timezone: {e}")
    return str(value).strip()


def _readable_file(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value)
        try:
            with open(text, "rb"):
                pass
        except OSError as e:
            raise ConfigError(f"--{name}: cannot read {text}: {e.strerror}")
        return text

    return check


def _proxy(value: Any) -> str:
    """A proxy as shotgun_api3's ``http_proxy`` takes it (parsed fully by
    `sgcache.site.proxy.parse_proxy` when the daemon starts)."""
    text = str(value).strip()
    if not text or "/" in text.removeprefix("http://").rstrip("/"):
        raise ConfigError(f"--shotgun-proxy: {value!r} is not [user:password@]host[:port]")
    return text


def _int_at_least(name: str, low: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"--{name}: {value!r} is not a whole number")
        if number < low:
            raise ConfigError(f"--{name}: must be {low} or more")
        return number

    return check


def _writable_file(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).strip()
        if not text:
            return ""
        try:
            with open(text, "ab"):
                pass
        except OSError as e:
            raise ConfigError(f"--{name}: cannot write {text}: {e.strerror}")
        return text

    return check


def _patterns(value: Any) -> str:
    return ",".join(parse_patterns(value))


def parse_patterns(value: Any) -> tuple[str, ...]:
    """``"a, b*"`` or a list -> ("a", "b*")."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _schema(value: Any) -> str:
    text = str(value)
    if not os.path.exists(text):
        raise ConfigError(f"--schema: {text} does not exist")
    return text


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    check: Callable[[Any], Any] = str
    flag: bool = False


SETTINGS = [
    Setting("schema", None, "Schema file (YAML, or a schema_read JSON dump / directory); re-read on "
            "SIGHUP / `sgcache schema reload`.", _schema),
    Setting("schema-rules", None, "Schema rules file (`+ Type.field` / `- Type.glob` lines, as `sgcache "
            "schema filter --rules` takes): the site's fields they include are cached too, new ones as "
            "the site gets them.", _readable_file("schema-rules")),
    Setting("db", "sqlite:///sgcache.sqlite", "Store URL: sqlite:///PATH or postgresql://USER@HOST:PORT/DB.", _db),
    Setting("shotgun", None, "Base URL of the Shotgun site.", _url("shotgun")),
    Setting("script-name", None, "The cache's own API script name (for syncing)."),
    Setting("api-key", None, "The cache's own API script key (prefer --api-key-file or "
            "SGCACHE_API_KEY: a command line shows in ps)."),
    Setting("api-key-file", None, "A file holding the cache's own API script key (its first line).",
            _readable_file("api-key-file")),
    Setting("shotgun-proxy", None, "HTTP proxy to reach the site through ([user:password@]host[:port], "
            "port 8080 by default; CONNECT tunnels, as shotgun_api3's http_proxy).", _proxy),
    Setting("shotgun-ca-file", None, "PEM file of the CA certificates to trust for an https site (and a "
            "TLS-inspecting proxy); default: the system's.", _readable_file("shotgun-ca-file")),
    Setting("site-max-concurrency", 8, "Most requests the cache's own work (polls, scans, re-reads) has at "
            "the site at once; clients' passed-through requests never wait for it, and take its slots "
            "while they run.", _int_at_least("site-max-concurrency", 1)),
    Setting("scan-concurrency", 4, "Scan pages read at once (id slices of a type, and several types), "
            "within --site-max-concurrency.", _int_at_least("scan-concurrency", 1)),
    Setting("gzip-min-kb", 16.0, "Answers the cache makes are gzipped from this size (KB) up for clients "
            "that accept gzip (0: never).", _not_negative("gzip-min-kb")),
    Setting("role", "all", "What this daemon does: all (serve and stand for election to sync), web "
            "(serve only), sync (stand for election only; no client port). On PostgreSQL one daemon of "
            "those that stand syncs at a time; SQLite takes one daemon, role all.", _role),
    Setting("failover-seconds", 10.0, "PostgreSQL: seconds within which another daemon takes the sync over "
            "when the one syncing dies or loses the database.", _positive("failover-seconds")),
    Setting("listen", "tcp:8010:interface=127.0.0.1", "Twisted endpoint to serve clients on.", _listen),
    Setting("admin-listen", "tcp:8011:interface=127.0.0.1", "Twisted endpoint of the admin listener "
            "(schema plan/reload; keep it private); empty: off.", _admin_listen),
    Setting("poll-interval", 2.0, "Seconds between event-log polls (none while catching up).", _positive("poll-interval")),
    Setting("scan-interval", 600.0, "Seconds between incremental scans (changes events miss).", _positive("scan-interval")),
    Setting("scan-overlap", 60.0, "Seconds an incremental scan reaches back before its watermark.", _positive("scan-overlap")),
    Setting("hole-timeout", 300.0, "Seconds to wait for a missing event id before giving it up.", _positive("hole-timeout")),
    Setting("update-log-days", 7.0, "Days the update log (sgcache log) is kept.", _positive("update-log-days")),
    Setting("access-log", None, "File for one HTTP access-log line per request (off when unset; "
            "`info` counts reads either way).", _writable_file("access-log")),
    Setting("site-timezone", "UTC", "The site's time zone, for calendar-day/week/month/year filters: "
            "UTC, an offset like +10:00, or a zone name like America/Los_Angeles.", _timezone),
    Setting("log-level", "info", "Lowest level of sgcache's own log lines: debug, info, warn, error "
            "(debug: one line per passed-through read, with its reason).", _log_level),
    Setting("log-format", "text", "Log lines as text, or json: one JSON object per line (journald, "
            "log shippers).", _log_format),
    Setting("ready-lag-seconds", 300.0, "/readyz on the admin listener answers 503 while the event lag "
            "(seconds since the cache was last known complete) is over this (0: lag not checked).",
            _not_negative("ready-lag-seconds")),
    Setting("stop-timeout", 10.0, "Longest a stop may take (seconds): past it, connections and work "
            "still open are cut.", _positive("stop-timeout")),
    Setting("answer-cache-mb", 64.0, "Memory (MB) for answers to repeated identical reads, reused until "
            "the store changes (0: off).", _not_negative("answer-cache-mb")),
    Setting("info-refresh", 300.0, "Seconds between refreshes of the site's info.", _positive("info-refresh")),
    Setting("max-request-mb", 16.0, "Largest RPC body (MB), as sent and once inflated; larger ones get a "
            "fault.", _positive("max-request-mb")),
    Setting("max-upload-mb", 2048.0, "Largest body of a request relayed to the site (uploads), in MB "
            "(0: no limit); larger ones get HTTP 413.", _not_negative("max-upload-mb")),
    Setting("read-budget-ms", 1000.0, "Longest a local read's statement may run (ms); past it the read "
            "passes through, and reads of its shape do for 5 minutes (0: no limit).",
            _not_negative("read-budget-ms")),
    Setting("pg-pool-size", 4, "PostgreSQL connections for clients' reads (writes and sync have two "
            "of their own).", _int_at_least("pg-pool-size", 1)),
    Setting("auth-ttl", 60.0, "Seconds the site's acceptance of a script key is trusted; keys in use are "
            "checked again in the background before then.", _positive("auth-ttl")),
    Setting("auth-outage-hours", 24.0, "While the site is unreachable, scripts it vouched for within "
            "this many hours keep their local answers (also after a restart; 0: none).",
            _not_negative("auth-outage-hours")),
    Setting("serve-scripts", "*", "Scripts whose reads may be answered locally: comma-separated names "
            "or globs.", _patterns),
    Setting("pass-scripts", "", "Scripts whose reads always pass through (wins over --serve-scripts).",
            _patterns),
    Setting("serve-users", "", "Users whose reads may be answered locally, without the site's per-user "
            "permissions and project access: comma-separated logins (globs) for login/password and a "
            "script's sudo_as_login; '*' also serves session tokens. Empty (the default): users' reads "
            "pass through.", _patterns),
    Setting("shadow-rate", 0.01, "Share of local answers asked again of the site in the background and "
            "compared (shadow checks; 0: off, 1: every one), with the cache's own credentials, after its "
            "own sync requests.", _share("shadow-rate")),
    Setting("shadow-action", "log", "What a confirmed shadow mismatch does besides its log line, metric and "
            "row (`sgcache shadow report`): log, or passthrough (reads of that shape pass through until a "
            "restart or `sgcache shadow clear`).", _shadow_action),
    Setting("demo", False, "Run an in-process emulator with a demo project as the site.", _bool, flag=True),
]


class Options(usage.Options):
    """`twistd sgcache` options (also SGCACHE_<NAME> and --config FILE)."""

    optParameters = [["config", "c", None, "YAML config file with any of the options below."]] + [
        [s.name, None, None, f"{s.help} [default: {s.default}]"] for s in SETTINGS if not s.flag
    ]
    optFlags = [[s.name, None, s.help] for s in SETTINGS if s.flag]

    def postOptions(self) -> None:
        # Validation happens in resolve(), called by makeService, so that a
        # wrong value is reported as one line rather than the usage text.
        pass


def resolve(options: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge command line, environment and config file; validate; return
    a dict keyed by option name with underscores (``script_name``)."""
    environ = os.environ if environ is None else environ
    file_values: dict[str, Any] = {}
    config_path = options.get("config") or environ.get("SGCACHE_CONFIG")
    if config_path:
        try:
            with open(config_path) as fh:
                loaded = yaml.safe_load(fh) or {}
        except OSError as e:
            raise ConfigError(f"--config: cannot read {config_path}: {e.strerror}")
        except yaml.YAMLError as e:
            raise ConfigError(f"--config: {config_path} is not valid YAML: {e}")
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {config_path} must hold a mapping of option: value")
        known = {s.name for s in SETTINGS} | {s.name.replace("-", "_") for s in SETTINGS}
        for key, value in loaded.items():
            if key not in known:
                raise ConfigError(f"--config: {config_path}: unknown option {key!r}")
            file_values[key.replace("_", "-")] = value
    out: dict[str, Any] = {}
    for s in SETTINGS:
        env_name = "SGCACHE_" + s.name.upper().replace("-", "_")
        value = options.get(s.name)
        if s.flag and not value:
            value = None
        if value is None and env_name in environ:
            value = environ[env_name]
        if value is None and s.name in file_values:
            value = file_values[s.name]
        if value is None:
            value = s.default
        if value is not None:
            try:
                value = s.check(value)
            except ConfigError:
                raise
            except Exception as e:
                raise ConfigError(f"--{s.name}: {e}")
        out[s.name.replace("-", "_")] = value
    if out["api_key_file"]:
        if out["api_key"]:
            raise ConfigError("--api-key-file: give the key once (--api-key or --api-key-file)")
        with open(out["api_key_file"], encoding="utf-8", errors="replace") as fh:
            key = fh.readline().strip()
        if not key:
            raise ConfigError(f"--api-key-file: {out['api_key_file']} holds no key")
        out["api_key"] = key
    if out["role"] != "all" and str(out["db"]).startswith("sqlite:"):
        raise ConfigError(f"--role {out['role']}: SQLite takes one daemon doing everything (--role all); "
                          "roles are for several daemons on one PostgreSQL store")
    if not out["demo"]:
        missing = [n for n in ("shotgun", "script_name", "api_key") if not out[n]]
        if not out["schema"] and not out["schema_rules"]:
            missing.insert(0, "schema")
        if missing:
            names = ", ".join("--" + m.replace("_", "-") for m in missing)
            raise ConfigError(f"{names}: required (or use --demo)")
    return out
