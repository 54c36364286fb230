"""Hostile and heavy input against a running daemon (both stores): the relay
never reaches past the site, `info` always answers, limits answer with
faults, heavy reads pass through within the read budget, any error of the
local read path passes through, and credentials follow the site.

The daemon runs in-process in front of the emulator, whose HTTP face is
wrapped by a recorder (every request it gets, and a few non-RPC pages of
its own); clients are the real `shotgun_api3` client, and raw sockets for
what no client would send.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from typing import Any

import shotgun_api3
import treq
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from sgcache.schema import Schema
from sgcache.testing.certs import self_signed
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.emulator import Emulator
from sgcache.testing.harness import client
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.rawhttp import raw_request, request_bytes
from sgcache.testing.server import EmulatorServer

from .test_e2e import seed_items

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
USER_SCRIPT = ("pipeline", "pipeline-key")


class RecordingSite(Resource):
    """The emulator's HTTP face, recording every request; a few non-RPC
    pages of its own: ``/set-cookie`` (sets one), ``/big`` (20 MB),
    ``/upload/...`` (echoes the body's length)."""

    isLeaf = True
    BIG = bytes(range(256)) * (20 * 2**20 // 256)

    def __init__(self, emulator: Emulator):
        super().__init__()
        self.inner = EmulatorServer(emulator, reactor, test_mode=True).resource()
        self.seen: list[tuple[bytes, bytes, dict]] = []

    def render(self, request: Any) -> Any:
        headers = {k.lower(): v for k, v in request.requestHeaders.getAllRawHeaders()}
        self.seen.append((request.method, request.uri, headers))
        if request.path == b"/set-cookie":
            request.addCookie(b"_session_id", b"secret-of-the-first-client", path=b"/")
            return b"logged in"
        if request.path == b"/big":
            return self.BIG
        if request.path.startswith(b"/upload/"):
            return b"%d" % len(request.content.read())
        return self.inner.render(request)

    def relayed(self) -> list[tuple[bytes, bytes, dict]]:
        return [s for s in self.seen if not s[1].endswith(b"/api3/json")]


class HardeningMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.emulator = Emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), page_size=7, clock=reactor)
        self.emulator.seed(seed_items())
        self.recorder = RecordingSite(self.emulator)
        site = Site(self.recorder)
        site.displayTracebacks = False
        self.site_port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.site_port.stopListening)
        self.site_url = f"http://127.0.0.1:{self.site_port.getHost().port}"
        self.db_url = await self.store_url()
        self.daemon = None
        await self.start()
        self.direct = client(self.site_url, *USER_SCRIPT)
        self.addCleanup(self.direct.close)

    async def start(self, **settings: Any) -> None:
        """(Re)start the daemon with `settings`, and vouch for the script."""
        if self.daemon is not None:
            await self.daemon.stop()
        self.daemon = await start_daemon(SCHEMA, self.site_url, self.db_url, settings=settings)
        daemon = self.daemon
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        self.cache = daemon.cache
        self.port = daemon.service.port.getHost().port
        self.sg = client(daemon.url, *USER_SCRIPT)
        self.addCleanup(self.sg.close)
        await deferToThread(self.sg.find_one, "Project", [])  # vouches for the script

    def reads(self) -> int:
        return self.emulator.counters().get("read", 0)

    async def raw(self, method: str, target: bytes, body: bytes = b"", port: int | None = None,
                  **kwargs: Any) -> Any:
        data = request_bytes(method, target, body, **kwargs)
        return await deferToThread(raw_request, port or self.port, data)

    async def rpc(self, method: str, args: Any, auth: Any = None, **kwargs: Any) -> Any:
        """A raw RPC through the cache (or to `port`): its decoded answer."""
        auth = auth if auth is not None else {"script_name": USER_SCRIPT[0], "script_key": USER_SCRIPT[1]}
        body = json.dumps({"method_name": method, "params": [auth, args]}).encode()
        response = await self.raw("POST", b"/api3/json", body, **kwargs)
        self.assertEqual(response.status, 200, response.body[:200])
        return json.loads(response.body)

    async def both(self, call: Any) -> tuple[Any, Any]:
        """`call(sg)` through the cache and straight to the site; a fault is
        an answer too."""
        def run(sg: Any) -> Any:
            try:
                return call(sg)
            except shotgun_api3.Fault as e:
                return ("fault", type(e).__name__, str(e))

        return await deferToThread(run, self.sg), await deferToThread(run, self.direct)

    # -- the relay -----------------------------------------------------------------
    async def test_relay_sends_only_absolute_paths_to_the_site(self) -> None:
        for target in (b".attacker.example/x", b":8080/x", b"@attacker.example/x",
                       b"http://127.0.0.1:1/x", b"*", b"x/../y", b"/a b"):
            response = await self.raw("GET", target, headers={"Authorization": "Basic c2VjcmV0"})
            self.assertIsNotNone(response, target)
            # ("*" is answered by Twisted itself, before any resource)
            self.assertEqual(response.status, 405 if target == b"*" else 400, target)
        self.assertEqual(self.recorder.relayed(), [])
        # an absolute path (even one that starts with //) goes to the site itself
        for target in (b"/thumbnail/Shot/1", b"//attacker.example/x"):
            response = await self.raw("GET", target, headers={"Authorization": "Basic c2VjcmV0"})
            self.assertEqual(response.status, 404, target)
        self.assertEqual([(m, t, h.get(b"authorization")) for m, t, h in self.recorder.relayed()],
                         [(b"GET", b"/thumbnail/Shot/1", [b"Basic c2VjcmV0"]),
                          (b"GET", b"//attacker.example/x", [b"Basic c2VjcmV0"])])

    async def test_a_cookie_the_site_sets_for_one_client_never_reaches_another(self) -> None:
        response = await self.raw("GET", b"/set-cookie")
        self.assertIn(b"set-cookie", response.headers)  # relayed to its client...
        await self.raw("GET", b"/thumbnail/Shot/1")
        await self.raw("GET", b"/thumbnail/Shot/1", headers={"Cookie": "mine=1"})
        cookies = [h.get(b"cookie") for _, _, h in self.recorder.relayed()]
        self.assertEqual(cookies, [None, None, [b"mine=1"]])  # ...and kept by nobody

    async def test_relayed_bodies_stream_both_ways(self) -> None:
        response = await treq.get(f"{self.daemon.url}/big", persistent=False)
        self.assertEqual(response.code, 200)
        self.assertEqual(await response.content(), RecordingSite.BIG)
        upload = os.urandom(3 * 2**20)
        response = await treq.post(f"{self.daemon.url}/upload/upload_file", upload, persistent=False)
        self.assertEqual(await response.content(), b"%d" % len(upload))

    async def test_relayed_bodies_over_the_limit_get_413(self) -> None:
        await self.start(max_upload_mb=1)
        response = await self.raw("POST", b"/upload/upload_file", b"x" * (2**20 + 1))
        self.assertEqual(response.status, 413)
        self.assertEqual(self.recorder.relayed(), [])

    # -- info and what it shows ----------------------------------------------------------
    async def test_info_survives_any_read_and_shows_no_client_text(self) -> None:
        names = ["\ud800", "nope\udfff", "x" * 5000] + [f"sg_unknown_{i}" for i in range(3000)]
        for name in names:
            answer = await self.rpc("read", {"type": "Shot", "return_fields": ["code", name]})
            self.assertEqual(len(answer["results"]["entities"]), 25)  # the site ignores the name
        for value in ("\ud800", "secret-filter-value"):
            await self.rpc("read", {"type": "Shot", "return_fields": ["code"],
                                    "filters": {"logical_operator": "and", "conditions": [
                                        {"path": "sg_nope", "relation": "is", "values": [value]}]}})
        # a new client starts with info: it works
        fresh = client(self.daemon.url, *USER_SCRIPT)
        self.addCleanup(fresh.close)
        info = await deferToThread(fresh.info)
        block = json.dumps(info["sgcache"], default=str)
        for text in ("nope", "sg_unknown", "sg_nope", "secret-filter-value", "xxxx", "\\ud800"):
            self.assertNotIn(text, block)
        self.assertEqual(info["sgcache"]["passthrough_reasons"]["return field not cached"], len(names))
        self.assertLess(len(info["sgcache"]["passthrough_reasons"]), 10)
        # every distinct unknown method is one counter at most
        for i in range(200):
            await self.rpc(f"no_such_method_{i}", {})
        self.assertLess(len(self.cache.counters), 30)

    # -- limits --------------------------------------------------------------------------
    async def test_limits_answer_with_faults(self) -> None:
        await self.start(max_request_mb=1)
        args = {"type": "Shot", "return_fields": ["code"]}
        auth = {"script_name": USER_SCRIPT[0], "script_key": USER_SCRIPT[1]}
        big = json.dumps({"method_name": "read", "params": [auth, args], "pad": "x" * 2**20}).encode()
        bomb = gzip.compress(b'{"method_name": "read", "params": [{}, {}], "pad": "' + b"x" * (64 * 2**20) + b'"}')
        deep = b'{"method_name": "read", "params": [{}, ' + b"[" * 50000 + b"]" * 50000 + b"]}"
        cases = [
            (big, {}), (big, {"chunked": True}),
            (bomb, {"headers": {"Content-Encoding": "gzip"}}),
            (deep, {}),
            (b"\xff\xfe{}", {}),
        ]
        before = self.reads()
        for body, kwargs in cases:
            response = await self.raw("POST", b"/api3/json", body, **kwargs)
            self.assertEqual(response.status, 200)
            answer = json.loads(response.body)
            self.assertEqual((answer["exception"], answer["error_code"]), (True, 400), answer)
        self.assertEqual(self.reads(), before)  # none reached the site
        # a compressed body within the limit is answered
        ok = gzip.compress(json.dumps({"method_name": "read", "params": [auth, args]}).encode())
        response = await self.raw("POST", b"/api3/json", ok, headers={"Content-Encoding": "gzip"})
        self.assertEqual(len(json.loads(response.body)["results"]["entities"]), 25)

    # -- reads the probe once broke: now the site's answer, or an exact local one ---------
    async def test_reads_that_once_failed_locally(self) -> None:
        def read(args: dict) -> Any:
            return lambda sg: sg._call_rpc("read", {"type": "Shot", "return_fields": ["code"], **args})

        def wire(*conditions: list, op: str = "and") -> dict:
            return {"filters": {"logical_operator": op, "conditions": [
                {"path": c[0], "relation": c[1], "values": c[2:]} for c in conditions]}}

        calls = [
            read({"return_only": ["active"]}),
            read({"return_only": {"a": 1}}),
            read({"paging": {"entities_per_page": 5, "current_page": 2**62},
                  "return_paging_info_without_counts": True}),
            read(wire(["id", "in", 2**63, 2**64, 201])),
            read(wire(["id", "is", -(2**70)])),
            read(wire(["sg_sequence", "is", {"type": "Sequence", "id": 2**63}])),
            read(wire(["created_at", "in_calendar_day", 10**9])),
            read(wire(["created_at", "in_last", 10**12, "DAY"])),
            read(wire(*[["code", "is", f"sh{i:03d}"] for i in range(2000)], op="or")),
            read(wire(["id", "in", *range(50000)])),
            read(wire(["code", "is", "sh\x00001"])),
            lambda sg: sg.find("Shot", [["assets.Asset.shots.Shot.code", "contains", "0010"]], ["code"]),
        ]
        for call in calls:
            via_cache, direct = await self.both(call)
            self.assertEqual(via_cache, direct)
        # lone surrogates: no client can send them, a raw body can
        args = {"type": "Shot", "return_fields": ["code"]}
        for auth, args in [
            ({"script_name": "\ud800", "script_key": "key\udfff"}, args),
            (None, {**args, **wire(["code", "contains", "\ud800"])}),
            (None, {**args, **wire(["code", "in", "a", "\udfff"])}),
        ]:
            via_cache = await self.rpc("read", args, auth=auth)
            direct = await self.rpc("read", args, auth=auth, port=self.site_port.getHost().port)
            self.assertEqual(via_cache, direct)
        self.assertEqual(self.cache.status()["reads_failed_locally"], 0)
        # the two multi-entity hops are answered locally now
        before = self.reads()
        await deferToThread(self.sg.find, "Shot", [["assets.Asset.shots.Shot.code", "contains", "0010"]], ["code"])
        self.assertEqual(self.reads(), before, dict(self.cache.passthrough_reasons))

    async def test_any_error_in_the_local_read_passes_through(self) -> None:
        import sgcache.web.dispatch

        def broken(*args: Any) -> Any:
            raise RuntimeError("a bug in the local read path")

        self.patch(sgcache.web.dispatch, "execute", broken)
        via_cache, direct = await self.both(lambda sg: sg.find("Shot", [["code", "is", "sh000"]], ["code"]))
        self.assertEqual(via_cache, direct)
        self.assertEqual(len(via_cache), 1)
        self.assertEqual(self.cache.passthrough_reasons["local read failed"], 1)
        self.assertEqual(self.cache.status()["reads_failed_locally"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    # -- the read budget -----------------------------------------------------------------
    async def test_a_read_over_its_budget_passes_through_and_so_does_its_shape(self) -> None:
        shots = [{"type": "Shot", "id": 10_000 + i, "fields": {"code": f"bulk{i:05d}"}} for i in range(3000)]
        self.emulator.seed(shots)
        await self.start(read_budget_ms=1)
        await self.daemon.service.scanner.full_scan(["Shot"])
        await self.cache.refresh_catalog()

        def heavy(word: str) -> Any:
            conditions = [["sg_sequence.Sequence.code", "contains", f"{word}{i}"] for i in range(300)]
            conditions.append(["code", "is", "bulk00042"])
            return lambda sg: sg.find("Shot", conditions, ["code"], filter_operator="any")

        # start() restarted the daemon, which took back the script's vouching
        # from the store: its own reads were local, under the same 1 ms budget
        # (counted from here on)
        reasons = Counter(self.cache.passthrough_reasons)
        stopped, shapes = self.cache.slow.stopped, len(self.cache.slow)
        via_cache, direct = await self.both(heavy("x"))
        self.assertEqual(via_cache, direct)
        self.assertEqual([r["code"] for r in via_cache], ["bulk00042"])
        self.assertEqual(self.cache.passthrough_reasons["read over its time budget"]
                         - reasons["read over its time budget"], 1)
        # the same shape with other values is not tried locally again
        via_cache, direct = await self.both(heavy("y"))
        self.assertEqual(via_cache, direct)
        self.assertEqual(self.cache.passthrough_reasons["read shape over its time budget recently"]
                         - reasons["read shape over its time budget recently"], 1)
        self.assertEqual(self.cache.status()["reads_over_budget"] - stopped, 1)
        self.assertEqual(self.cache.status()["slow_shapes"] - shapes, 1)

    # -- credentials ---------------------------------------------------------------------
    async def test_a_revoked_key_stops_being_served_within_one_ttl(self) -> None:
        ttl = 1.0
        await self.start(auth_ttl=ttl)
        credentials = self.cache.credentials
        before = self.reads()
        await deferToThread(self.sg.find, "Shot", [], ["code"])
        self.assertEqual(self.reads(), before)
        # past half the TTL, a read is answered locally and checks the key
        # again in the background
        await task.deferLater(reactor, ttl * 0.6, lambda: None)
        await deferToThread(self.sg.find, "Shot", [], ["code"])
        self.assertEqual(credentials.checks, 1)
        self.assertEqual(self.reads(), before + 1)  # the check, not the client's read
        while credentials._checking:
            await task.deferLater(reactor, 0.01, lambda: None)
        # the site revokes the key
        del self.emulator.scripts[USER_SCRIPT[0]]
        revoked_at = reactor.seconds()
        while True:
            try:
                await deferToThread(self.sg.find, "Shot", [], ["code"])
            except shotgun_api3.AuthenticationFault:
                break
            self.assertLess(reactor.seconds() - revoked_at, ttl + 0.5, "a revoked key was served too long")
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertLessEqual(reactor.seconds() - revoked_at, ttl + 0.5)
        self.assertEqual(len(credentials), 0)

    async def test_scripts_outside_the_policy_always_pass_through(self) -> None:
        for settings in ({"pass_scripts": "pipe*"}, {"serve_scripts": "render, farm-*"}):
            await self.start(**settings)
            before = self.reads()
            refused = self.cache.passthrough_reasons["script not served locally (policy)"]
            await deferToThread(self.sg.find_one, "Shot", [], ["code"])
            self.assertEqual(self.reads(), before + 1)
            self.assertEqual(self.cache.passthrough_reasons["script not served locally (policy)"], refused + 1)
        await self.start(serve_scripts="render, pipe*", pass_scripts="farm-*")
        before = self.reads()
        await deferToThread(self.sg.find_one, "Shot", [], ["code"])
        self.assertEqual(self.reads(), before)

    async def test_user_requests_pass_through(self) -> None:
        auth = {"script_name": USER_SCRIPT[0], "script_key": USER_SCRIPT[1], "sudo_as_login": "ann"}
        await self.rpc("read", {"type": "Shot", "return_fields": ["code"]}, auth=auth)
        self.assertEqual(self.cache.passthrough_reasons["request on behalf of a user"], 1)


class SQLiteHardeningTests(HardeningMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresHardeningTests(HardeningMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)


class TLSTests(unittest.TestCase):
    """The README's production setup: the daemon listens with TLS (an
    ``ssl:`` endpoint) and the real client verifies it (``ca_certs``)."""

    async def test_clients_talk_to_the_daemon_over_tls(self) -> None:
        emulator = Emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), clock=reactor)
        emulator.seed(seed_items())
        site_port = reactor.listenTCP(0, Site(EmulatorServer(emulator, reactor).resource()), interface="127.0.0.1")
        self.addCleanup(site_port.stopListening)
        key, cert = self_signed(os.path.abspath(self.mktemp()))
        daemon = await start_daemon(
            SCHEMA, f"http://127.0.0.1:{site_port.getHost().port}",
            "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite",
            settings={"listen": f"ssl:0:privateKey={key}:certKey={cert}:interface=127.0.0.1"})
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        url = f"https://localhost:{daemon.service.port.getHost().port}"
        sg = client(url, *USER_SCRIPT, ca_certs=cert)
        self.addCleanup(sg.close)
        await deferToThread(sg.find_one, "Project", [])  # vouches for the script
        before = emulator.counters().get("read", 0)
        shot = await deferToThread(sg.find_one, "Shot", [["code", "is", "sh000"]], ["code"])
        self.assertEqual(shot, {"type": "Shot", "id": 200, "code": "sh000"})
        self.assertEqual(emulator.counters().get("read", 0), before)  # answered locally, over TLS
        # a client that does not trust the certificate is refused by its own check
        untrusting = client(url, *USER_SCRIPT)
        self.addCleanup(untrusting.close)
        with self.assertRaises(Exception) as refused:
            await deferToThread(untrusting.find_one, "Shot", [], ["code"])
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(refused.exception))
