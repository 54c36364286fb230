"""Fuzzing the running daemon (both stores) with what careless and hostile
clients send: mutated read bodies (wrong types, huge numbers, NaN, lone
surrogates, NUL, deep and wide filters), broken envelopes, invalid UTF-8,
compressed and broken-compressed bodies, odd request-targets, methods and
headers -- over raw sockets, in front of the emulator.

Every answer must be a result or a Shotgun-style fault, never an HTTP 5xx of
the daemon's making and never a hang; no read may fail in the local path
(`reads_failed_locally`: each would be a bug, even though it passes
through); `info` keeps answering the real client; the process's memory
stays within the documented bound (README, "Limits and memory").

``SGCACHE_FUZZ_EXAMPLES`` examples per store (default 1500, as CI runs);
a long run::

    SGCACHE_FUZZ_EXAMPLES=20000 .venv/bin/python -m twisted.trial tests.test_fuzz
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.read.reasons import REASONS
from sgcache.read.relations import RELATIONS as _RELATIONS_BY_TYPE
from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.rawhttp import raw_request, request_bytes

from .test_e2e import seed_items

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
USER_SCRIPT = ("pipeline", "pipeline-key")
EXAMPLES = int(os.environ.get("SGCACHE_FUZZ_EXAMPLES", "1500"))
ANSWERS_MB = 8
#: what the daemon may grow by (MB) once loaded: its answer cache, the plan
#: cache (16), SQLite's statement cache (~32) and what one request being
#: parsed holds (up to ~10 x --max-request-mb): README, "Limits and memory"
GROWTH_MB = ANSWERS_MB + 16 + 32 + 10 * 16

TYPES = ["Shot", "Task", "Asset", "Sequence", "HumanUser", "Project", "Version", "NoSuchType"]
FIELDS = {t: sorted(SCHEMA[t].fields) if t in SCHEMA else ["code"] for t in TYPES}
RELATIONS = sorted(set(
    "is is_not contains not_contains starts_with ends_with in not_in less_than greater_than between "
    "not_between in_last not_in_last in_next not_in_next in_calendar_day in_calendar_week "
    "in_calendar_month in_calendar_year type_is type_is_not name_contains name_not_contains name_is "
    "nonsense".split()))
ODD_TEXT = ["\ud800", "\udfff x", "a\x00b", "", "%", "_", "Σσς", "İ", "é" * 3, "x" * 300, "SH001", "sh0"]
ODD_NUMBERS = [0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, float("inf"), float("nan")]

leaf = st.one_of(
    st.none(), st.booleans(), st.sampled_from(ODD_NUMBERS), st.integers(-5, 300),
    st.sampled_from(ODD_TEXT), st.text(max_size=6),
)
json_value = st.recursive(
    leaf,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(["type", "id", "name", "x"]) | st.text(max_size=4),
                                               children, max_size=4)),
    max_leaves=10,
)


@st.composite
def path(draw: Any, etype: str) -> Any:
    if draw(st.integers(0, 15)) == 0:
        return draw(json_value)
    fields = FIELDS.get(etype, ["code"])
    name = draw(st.sampled_from(fields + ["id", "nope", "\ud800"]) if draw(st.integers(0, 5)) == 0
                else st.sampled_from(fields))
    if draw(st.integers(0, 3)) == 0:
        spec = SCHEMA.get_field(etype, name) if etype in SCHEMA else None
        targets = list(spec.link_types) if spec is not None and spec.link_types else ["Shot"]
        target = draw(st.sampled_from(targets + ["Nope"] if draw(st.integers(0, 5)) == 0 else targets))
        return f"{name}.{target}.{draw(path(target)) if target in SCHEMA else 'code'}"
    return name


@st.composite
def values(draw: Any) -> Any:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return [draw(json_value)]
    if kind == 1:
        return [{"type": draw(st.sampled_from(TYPES)), "id": draw(st.sampled_from(ODD_NUMBERS + [200, 11]))}]
    if kind == 2:
        return list(range(draw(st.sampled_from([0, 3, 2000, 12000]))))
    if kind == 3:
        return [draw(st.integers(-3, 3)), draw(st.sampled_from(["DAY", "WEEK", "FORTNIGHT", 5]))]
    if kind == 4:
        return [draw(st.sampled_from(ODD_NUMBERS))]
    if kind == 5:
        return draw(st.lists(leaf, max_size=3))
    return [draw(st.sampled_from(["sh0", "SH001", "fin", "ip", "", None, 3, 1000, "2026-03-01"]))]


@st.composite
def condition(draw: Any, etype: str, depth: int = 0) -> Any:
    roll = draw(st.integers(0, 19))
    if roll == 0 and depth < 3:
        subs = draw(st.lists(condition(etype, depth + 1), max_size=3))
        return {"logical_operator": draw(st.sampled_from(["and", "or", "or", "xor"])), "conditions": subs}
    if roll == 1:
        return draw(json_value)
    name = draw(path(etype))
    spec = SCHEMA.get_field(etype, name) if etype in SCHEMA and isinstance(name, str) else None
    valid = sorted(_RELATIONS_BY_TYPE.get(spec.data_type, ())) if spec is not None else []
    relation = draw(st.sampled_from(valid if valid and roll > 6 else RELATIONS))
    return {"path": name, "relation": relation, "values": draw(values())}


@st.composite
def filters(draw: Any, etype: str) -> Any:
    roll = draw(st.integers(0, 19))
    if roll == 0:
        return draw(json_value)
    if roll == 1:
        # many conditions, or deeply nested groups
        n = draw(st.sampled_from([50, 600, 2000]))
        conds = [{"path": "code", "relation": "contains", "values": [f"x{i}"]} for i in range(n)]
        return {"logical_operator": "or", "conditions": conds}
    if roll == 2:
        node: Any = {"path": "code", "relation": "is", "values": ["sh000"]}
        for _ in range(draw(st.sampled_from([5, 20, 45]))):
            node = {"logical_operator": "and", "conditions": [node]}
        return node
    if roll == 3:  # the client's list form
        return [[draw(path(etype)), draw(st.sampled_from(RELATIONS)), *draw(values())]]
    return {"logical_operator": draw(st.sampled_from(["and", "or"])),
            "conditions": draw(st.lists(condition(etype), max_size=4))}


@st.composite
def read_args(draw: Any) -> Any:
    etype = draw(st.sampled_from(TYPES))
    args: dict[str, Any] = {"type": etype}
    if draw(st.booleans()):
        args["return_fields"] = draw(st.lists(path(etype), max_size=5))
    if draw(st.booleans()):
        args["filters"] = draw(filters(etype))
    if draw(st.integers(0, 2)) == 0:
        args["sorts"] = draw(st.lists(st.fixed_dictionaries(
            {"field_name": path(etype), "direction": st.sampled_from(["asc", "desc", "up", None])}), max_size=3))
    if draw(st.booleans()):
        args["paging"] = {
            "entities_per_page": draw(st.sampled_from([1, 7, 7, 500, 500, 0, -1, 2**62, "5", None])),
            "current_page": draw(st.sampled_from([1, 1, 1, 2, 2**62, 0, -3, 1.5, None]))}
    for key, choices in (("return_only", ["active", "retired", "active", "archived", ["active"], {"a": 1}]),
                         ("include_archived_projects", [False, False, True, None, "no"]),
                         ("return_paging_info_without_counts", [True, True, False, 1]),
                         ("return_paging_info", [True, True, False]),
                         ("api_return_image_urls", [True]),
                         ("additional_filter_presets", [[{"preset_name": "LATEST"}], "x"]),
                         ("grouping", [[]])):
        if draw(st.integers(0, 9)) == 0:
            args[key] = draw(st.sampled_from(choices))
    if draw(st.integers(0, 19)) == 0:
        key = draw(st.sampled_from(sorted(args)))
        args[key] = draw(json_value)
    return args


GOOD_AUTH = {"script_name": USER_SCRIPT[0], "script_key": USER_SCRIPT[1]}
auths = st.sampled_from([GOOD_AUTH] * 24 + [
    {"script_name": USER_SCRIPT[0], "script_key": "wrong"},
    {"script_name": "\ud800", "script_key": "\udfff"},
    {**GOOD_AUTH, "sudo_as_login": "ann"},
    {"session_token": "x"}, {}, None, "nope", [1]])


@st.composite
def envelope(draw: Any) -> Any:
    method = draw(st.sampled_from(["read"] * 32 + ["info", "summarize", "create", "update", "batch",
                                                   "schema_read", "no_such_method", ""]))
    args = draw(read_args()) if method in ("read", "summarize") else draw(json_value)
    env: Any = {"method_name": method, "params": [draw(auths), args]}
    roll = draw(st.integers(0, 29))
    if roll == 0:
        env["params"] = draw(json_value)
    elif roll == 1:
        env["method_name"] = draw(json_value)
    elif roll == 2:
        env = draw(json_value)
    return env


#: bodies built once: over the default 16 MB limit, and a gzip bomb
BIG = json.dumps({"method_name": "read", "params": [GOOD_AUTH, {"type": "Shot"}], "pad": "x" * (17 * 2**20)})
BOMB = gzip.compress(b'{"method_name": "read", "params": [{}, {}], "pad": "' + b"x" * (200 * 2**20) + b'"}')

TARGETS = [b"/api3/json"] * 60 + [b"/studio/api3/json", b"/api3/json/", b"/api3/json?x=1", b"/upload/upload_file",
                                  b"/thumbnail/Shot/1", b"//evil.example/x", b"/%00", b".evil.example/x",
                                  b":8080/x", b"http://evil.example/x"]


@st.composite
def request(draw: Any) -> tuple[bytes, dict]:
    """(the request's bytes, what was sent)."""
    target = draw(st.sampled_from(TARGETS))
    verb = draw(st.sampled_from(["POST"] * 40 + ["GET", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"]))
    headers = {}
    roll = draw(st.integers(0, 79))
    if roll == 0:
        body = BIG.encode()
    elif roll == 1:
        body, headers["Content-Encoding"] = BOMB, "gzip"
    elif roll == 2:
        body = draw(st.binary(max_size=64))
    else:
        text = json.dumps(draw(envelope()), ensure_ascii=draw(st.booleans()))
        body = text.encode("utf-8", "surrogatepass")
        encoding = draw(st.integers(0, 19))
        if encoding == 0:
            body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
        elif encoding == 1:
            body, headers["Content-Encoding"] = gzip.compress(body)[:-6], "gzip"
        elif encoding == 2:
            headers["Content-Encoding"] = "gzip"
    for name, value in draw(st.lists(st.sampled_from([
            ("Content-Type", "text/plain"), ("Content-Type", "multipart/form-data"), ("Cookie", "a=b"),
            ("Authorization", "Basic eDp5"), ("Accept-Encoding", "gzip"), ("X-Forwarded-For", "1.2.3.4"),
            ("Connection", "keep-alive, Upgrade"), ("Content-Encoding", "deflate")]), max_size=2)):
        headers[name] = value
    chunked = draw(st.integers(0, 19)) == 0
    return request_bytes(verb, target, body, headers=headers, chunked=chunked), {
        "verb": verb, "target": target, "body": body[:300], "headers": headers, "chunked": chunked}


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FuzzMixin:
    timeout = 3600

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        # no test controls: a fuzzed relay must not reset the site
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), page_size=7,
                                         test_mode=False)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.site.emulator.seed(seed_items())
        # the daemon runs as deployed, in a process of its own (its memory is
        # measured alone)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable, "-m", "twisted", "--log-file", os.path.abspath(self.mktemp()) + ".log",
            "--log-format", "text", "sgcache", "--shotgun", self.site.url, "--script-name", CACHE_SCRIPT[0],
            "--api-key", CACHE_SCRIPT[1], "--schema", os.path.join(ROOT, "schema", "basic.yml"),
            "--db", await self.store_url(), "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--admin-listen", "tcp:0:interface=127.0.0.1",
            "--poll-interval", "3600", "--scan-interval", "86400", "--answer-cache-mb", str(ANSWERS_MB),
        ]
        self.proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: defer.ensureDeferred(self.stop()))
        self.sg = client(self.url, *USER_SCRIPT, timeout_secs=60)
        self.addCleanup(self.sg.close)
        deadline = reactor.seconds() + 60
        while not await self.serving():
            self.assertIsNone(self.proc.poll(), "the daemon exited")
            self.assertLess(reactor.seconds(), deadline, "the daemon did not start serving")
            await task.deferLater(reactor, 0.1, lambda: None)
        await deferToThread(self.sg.find_one, "Project", [])  # vouches for the script

    async def serving(self) -> bool:
        try:
            response = await deferToThread(raw_request, self.port, request_bytes(
                "POST", b"/api3/json", b'{"method_name": "info", "params": []}'), timeout=5)
        except OSError:
            return False
        return response is not None and json.loads(response.body)["results"]["sgcache"]["serving"]

    async def stop(self) -> None:
        self.proc.terminate()
        deadline = reactor.seconds() + 30
        while self.proc.poll() is None and reactor.seconds() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        if self.proc.poll() is None:
            self.proc.kill()

    def test_every_answer_is_a_result_or_a_fault(self) -> defer.Deferred:
        port, emulator = self.port, self.site.emulator
        stats: Counter[str] = Counter()
        lock = threading.Lock()
        rss_before = _rss_mb(self.proc.pid)

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(request())
        def check(sent: tuple[bytes, dict]) -> None:
            data, what = sent
            with lock:
                calls = sum(emulator.counters().values())
                response = raw_request(port, data, timeout=60)
                passed = sum(emulator.counters().values()) > calls
            # the site's HTTP layer (Twisted, here) refuses a multipart body
            # that is not one with a 400 of its own, before any RPC
            multipart = what["headers"].get("Content-Type") == "multipart/form-data"
            assert response is not None, f"no answer to {what!r}"
            assert response.status < 500, f"HTTP {response.status} for {what!r}: {response.body[:300]!r}"
            stats[f"HTTP {response.status}"] += 1
            rpc = what["target"].split(b"?")[0].rstrip(b"/").endswith(b"/api3/json")
            if rpc and what["verb"] == "POST" and what["target"].startswith(b"/"):
                if response.status == 400 and multipart:
                    stats["the site's own 400"] += 1
                    return
                assert response.status == 200, f"HTTP {response.status} for {what!r}"
                body = response.body
                if response.headers.get(b"content-encoding") == b"gzip":
                    # the client said Accept-Encoding: gzip (and the answer is large)
                    assert b"gzip" in what["headers"].get("Accept-Encoding", "").encode(), what
                    body = gzip.decompress(body)
                answer = json.loads(body)
                assert isinstance(answer, dict), answer
                if "exception" in answer:
                    assert answer["exception"] is True and isinstance(answer["message"], str) \
                        and isinstance(answer["error_code"], int), answer
                    assert "internal error" not in answer["message"], (answer, what)
                    stats["faults"] += 1
                else:
                    assert "results" in answer or "version" in answer, answer
                    stats["results"] += 1
                    stats["local" if not passed else "passed through"] += 1

        async def after(_: Any) -> None:
            # a client that starts now (the setUp one's connection has been
            # idle longer than the daemon keeps it)
            fresh = client(self.url, *USER_SCRIPT, timeout_secs=60)
            self.addCleanup(fresh.close)
            info = await deferToThread(fresh.info)
            block = info["sgcache"]
            grown = _rss_mb(self.proc.pid) - rss_before
            print(f"\n[{type(self).__name__}] {dict(sorted(stats.items()))}")
            print(f"    reasons {dict(list(block['passthrough_reasons'].items())[:8])}")
            print(f"    RSS {rss_before:.0f} MB after loading, grew {grown:.0f} MB")
            self.assertTrue(block["serving"])
            self.assertEqual(block["reads_failed_locally"], 0)
            self.assertTrue(set(block["passthrough_reasons"]) <= set(REASONS), block["passthrough_reasons"])
            self.assertGreater(stats["results"], EXAMPLES // 10)
            self.assertGreater(stats["local"], EXAMPLES // 20)
            self.assertLess(grown, GROWTH_MB, f"the daemon's memory grew {grown:.0f} MB")

        d = deferToThread(check)
        d.addCallback(lambda _: defer.ensureDeferred(after(_)))
        return d


class SQLiteFuzzTests(FuzzMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresFuzzTests(FuzzMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
