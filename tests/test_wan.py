"""Sync at WAN speed, end to end (the daemon in-process, the emulator over
HTTP, the real client): concurrent scans within the site request limit,
the site's throttling (429, 503 + Retry-After), gzip both ways (the
cache's own calls, passed-through answers relayed as the site sent them,
local answers for clients that ask), no needless writes on an idle
incremental scan, a watermark for every type, and the site reached through
an HTTP CONNECT proxy (http and https). Both stores where the store matters.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from typing import Any

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from sgcache.schema import Schema
from sgcache.sync.scanner import WATERMARK_PREFIX
from sgcache.testing.certs import self_signed
from sgcache.testing.connectproxy import start_connect_proxy
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.syncdump import differences, emulator_dump, store_dump

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
TYPES = [e.name for e in SCHEMA]
USER_SCRIPT = ("pipeline", "pipeline-key")
PROJECT = {"type": "Project", "id": 1}


def seed(shots: int = 240) -> list[dict]:
    items: list[dict] = [{"type": "Project", "id": 1, "fields": {"name": "Demo"}}]
    items += [{"type": "Sequence", "id": 10 + i, "fields": {"code": f"SQ{i}", "project": PROJECT}}
              for i in range(4)]
    items += [{"type": "Shot", "id": 100 + i * 3, "fields": {
        "code": f"sh{i:04d}", "project": PROJECT, "sg_sequence": {"type": "Sequence", "id": 10 + i % 4},
        # long enough that pages go over the emulator's gzip threshold
        "description": f"shot {i} " + "lorem ipsum dolor sit amet " * 25,
    }} for i in range(shots)]
    items += [{"type": "Task", "id": 2000 + i, "fields": {
        "content": f"task {i}", "project": PROJECT, "entity": {"type": "Shot", "id": 100 + (i % shots) * 3},
    }} for i in range(60)]
    return items


async def post(url: str, body: bytes, headers: dict[bytes, list[bytes]]) -> tuple[int, Headers, bytes]:
    """A raw POST (no decoding): status, headers, body as sent."""
    agent = Agent(reactor)
    response = await agent.request(b"POST", url.encode() + b"/api3/json", Headers(headers),
                                   FileBodyProducer(io.BytesIO(body)))
    return response.code, response.headers, await readBody(response)


def rpc_body(method: str, args: Any, auth: tuple[str, str] = USER_SCRIPT) -> bytes:
    return json.dumps({"method_name": method, "params": [
        {"script_name": auth[0], "script_key": auth[1]}, args]}).encode()


def big_read() -> dict:
    return {"type": "Shot", "return_fields": ["code", "description", "sg_sequence"],
            "filters": {"logical_operator": "and", "conditions": []},
            "sorts": [{"field_name": "id", "direction": "asc"}],
            "paging": {"entities_per_page": 500, "current_page": 1}, "return_only": "active"}


class WanMixin:
    """Subclasses give the store."""

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self) -> Any:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), page_size=7)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(seed())
        self.db_url = await self.store_url()
        self.daemon: Any = None

    async def start(self, site_url: str | None = None, **settings: Any) -> Any:
        settings.setdefault("scan_concurrency", 4)
        daemon = await start_daemon(SCHEMA, site_url or self.site.url, self.db_url, settings=settings)
        self.daemon = daemon
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        self.sg = client(daemon.url, *USER_SCRIPT)
        self.addCleanup(self.sg.close)
        return daemon

    async def assertSynced(self) -> None:
        ours = await store_dump(self.daemon.store, SCHEMA, TYPES, mark_ready=True)
        theirs = emulator_dump(self.emulator, SCHEMA, TYPES)
        self.assertEqual(differences(ours, theirs), [])

    def counters(self) -> dict[str, int]:
        return self.emulator.counters(figures=True)

    # -- concurrency -----------------------------------------------------------
    async def test_a_concurrent_load_stays_within_the_site_limit(self) -> None:
        self.emulator.set_latency(0.02)
        self.emulator.reset_counters()
        daemon = await self.start(site_max_concurrency=3, scan_concurrency=4)
        await self.assertSynced()
        gate = daemon.service.upstream.gate
        # pages were read at once, never more than the limit at the site
        self.assertGreaterEqual(gate.peak["scan"], 2)
        self.assertLessEqual(gate.peak_total, 3)
        self.assertLessEqual(self.counters()["<max_in_flight>"], 3)
        # several slices per type and several types at once
        status = daemon.service.scanner.status()["scan"]
        self.assertEqual(status["concurrency"], 4)

    async def test_a_throttling_site_slows_the_load_and_loses_nothing(self) -> None:
        self.emulator.set_latency(0.02)
        self.emulator.set_throttle(1, retry_after=1)
        daemon = await self.start(site_max_concurrency=4, scan_concurrency=4)
        await self.assertSynced()
        self.assertGreater(self.counters().get("<throttled>", 0), 0)
        self.assertGreater(daemon.service.upstream.gate.throttled, 0)
        self.assertEqual(daemon.service.scanner.errors, 0)  # waited as asked, never failed
        self.emulator.set_throttle(None)

    async def test_503_with_retry_after_is_waited_out_by_the_poller(self) -> None:
        daemon = await self.start()
        poller = daemon.service.poller
        await deferToThread(client(self.site.url, *USER_SCRIPT).update, "Shot", 100, {"code": "moved"})
        self.emulator.fail_next(2, status=503, methods=["read"], retry_after=1)
        started = reactor.seconds()
        await poller.poll()
        self.assertGreaterEqual(reactor.seconds() - started, 1.0)
        self.assertEqual(poller.errors, 0)
        rows = await daemon.store.fetch('SELECT code FROM "Shot" WHERE id = 100', [])
        self.assertEqual(rows, [("moved",)])

    # -- no needless writes -------------------------------------------------------
    async def test_an_idle_incremental_scan_keeps_the_kept_answers(self) -> None:
        daemon = await self.start()
        await deferToThread(self.sg.find_one, "Project", [])  # vouches for the script
        for filters in ([], [["code", "starts_with", "sh00"]], [["sg_sequence.Sequence.code", "is", "SQ1"]]):
            await deferToThread(self.sg.find, "Shot", filters, ["code", "description"])
        kept = daemon.cache.answers
        before = (len(kept), daemon.store.read_generation())
        self.assertGreaterEqual(before[0], 3)
        reads = self.counters().get("read", 0)
        self.emulator.advance_clock(5)
        await daemon.service.scanner.incremental_scan()
        self.assertGreater(self.counters().get("read", 0), reads)  # it did read the site
        self.assertEqual((len(kept), daemon.store.read_generation()), before)
        hits = kept.hits
        shots = await deferToThread(self.sg.find, "Shot", [], ["code", "description"])
        pages = -(-len(shots) // 7)  # the client pages by the site's page size
        self.assertEqual(kept.hits, hits + pages)  # every page a kept answer

    async def test_every_type_gets_a_watermark(self) -> None:
        # the site's time is its newest event's (a real site always has one)
        self.emulator.create("Sequence", {"code": "SQ9", "project": PROJECT})
        daemon = await self.start()
        self.assertEqual(len(self.emulator.db.get("Asset") or {}), 0)
        for name in TYPES:
            self.assertTrue(await daemon.store.get_state(WATERMARK_PREFIX + name), name)
        # so the next incremental scan of an empty type reads only what changed
        reads = self.counters().get("read", 0)
        await daemon.service.scanner.incremental_scan(["Asset", "ApiUser"])
        self.assertEqual(daemon.service.scanner.type_scans["Asset"]["mode"], "incremental")
        self.assertEqual(daemon.service.scanner.type_scans["ApiUser"]["mode"], "incremental")
        self.assertLessEqual(self.counters().get("read", 0) - reads, 6)

    # -- compression ----------------------------------------------------------------
    async def test_the_caches_own_calls_are_gzipped(self) -> None:
        self.emulator.reset_counters()
        await self.start()
        counts = self.counters()
        self.assertGreater(counts.get("<gzipped>", 0), 0)

    async def test_passed_through_answers_are_relayed_as_the_site_sent_them(self) -> None:
        daemon = await self.start(pass_scripts=USER_SCRIPT[0])
        body = rpc_body("read", big_read())
        compressor = daemon.service.rpc.compressor
        made = compressor.count
        gzipped = self.counters().get("<gzipped>", 0)
        status, headers, raw = await post(daemon.url, body, {b"accept-encoding": [b"gzip"],
                                                             b"content-type": [b"application/json"]})
        self.assertEqual(status, 200)
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(self.counters()["<gzipped>"], gzipped + 1)  # the site's gzip
        self.assertEqual(compressor.count, made)  # not the cache's
        _, _, direct = await post(self.site.url, body, {b"content-type": [b"application/json"]})
        self.assertEqual(json.loads(gzip.decompress(raw)), json.loads(direct))
        # a client that does not ask gets it plain
        status, headers, plain = await post(daemon.url, body, {b"content-type": [b"application/json"]})
        self.assertIsNone(headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(json.loads(plain), json.loads(direct))
        # and the real client reads it either way
        via_cache = await deferToThread(self.sg.find, "Shot", [], ["code", "description"])
        self.assertEqual(len(via_cache), 240)

    async def test_local_answers_are_gzipped_for_clients_that_ask(self) -> None:
        daemon = await self.start(gzip_min_kb=2)
        await deferToThread(self.sg.find_one, "Project", [])  # vouches for the script
        reads = self.counters().get("read", 0)
        body = rpc_body("read", big_read())
        status, headers, raw = await post(daemon.url, body, {b"accept-encoding": [b"gzip, deflate"],
                                                             b"content-type": [b"application/json"]})
        self.assertEqual(self.counters().get("read", 0), reads)  # answered locally
        self.assertEqual(headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        self.assertEqual(headers.getRawHeaders(b"vary"), [b"Accept-Encoding"])
        _, _, direct = await post(self.site.url, body, {b"content-type": [b"application/json"]})
        self.assertEqual(json.loads(gzip.decompress(raw)), json.loads(direct))
        self.assertLess(len(raw), len(direct) / 3)
        # again (a kept answer): the same compressed bytes
        _, _, again = await post(daemon.url, body, {b"accept-encoding": [b"gzip"],
                                                    b"content-type": [b"application/json"]})
        self.assertEqual(again, raw)
        # small answers and clients that do not ask: plain
        small = rpc_body("read", dict(big_read(), paging={"entities_per_page": 1, "current_page": 1}))
        _, headers, _ = await post(daemon.url, small, {b"accept-encoding": [b"gzip"],
                                                       b"content-type": [b"application/json"]})
        self.assertIsNone(headers.getRawHeaders(b"content-encoding"))
        _, headers, plain = await post(daemon.url, body, {b"accept-encoding": [b"gzip;q=0"],
                                                          b"content-type": [b"application/json"]})
        self.assertIsNone(headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(json.loads(plain), json.loads(direct))
        # the real client (httplib2 asks for gzip) gets the same entities
        via_cache = await deferToThread(self.sg.find, "Shot", [], ["code", "description", "sg_sequence"])
        direct_sg = client(self.site.url, *USER_SCRIPT)
        self.addCleanup(direct_sg.close)
        self.assertEqual(via_cache, await deferToThread(direct_sg.find, "Shot", [],
                                                        ["code", "description", "sg_sequence"]))
        self.assertGreater(daemon.service.rpc.compressor.count, 0)


class SQLiteWanTests(WanMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresWanTests(WanMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)


class ProxyTests(unittest.TestCase):
    """The site reached only through an HTTP CONNECT proxy (as
    shotgun_api3's ``http_proxy``), http and https."""

    def setUp(self) -> Any:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), page_size=50)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(seed(40))
        self.db_url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"

    async def run_through(self, site_url: str, target: str, **settings: Any) -> None:
        proxy = await start_connect_proxy(reactor, user="studio", password="p@ss:word")
        self.addCleanup(lambda: defer.ensureDeferred(proxy.stop()))
        settings["shotgun_proxy"] = f"studio:p@ss:word@127.0.0.1:{proxy.port}"
        daemon = await start_daemon(SCHEMA, site_url, self.db_url, settings=settings)
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        sg = client(daemon.url, *USER_SCRIPT)
        self.addCleanup(sg.close)
        # loaded through the proxy; reads (local and passed through) and a write
        self.assertIn(target, proxy.tunnels)
        self.assertGreater(proxy.bytes_down, 10_000)
        shots = await deferToThread(sg.find, "Shot", [], ["code"])
        self.assertEqual(len(shots), 40)
        await deferToThread(sg.update, "Shot", 100, {"code": "via proxy"})
        self.assertEqual((await deferToThread(sg.find_one, "Shot", [["id", "is", 100]], ["code"]))["code"],
                         "via proxy")
        self.assertEqual(self.emulator.db["Shot"][100]["code"], "via proxy")
        self.assertEqual(proxy.refused, 0)

    async def test_http_site_through_a_proxy(self) -> None:
        port = self.site.url.rsplit(":", 1)[1]
        await self.run_through(self.site.url, f"127.0.0.1:{port}")

    async def test_https_site_through_a_proxy(self) -> None:
        key, cert = self_signed(self.mktemp())
        endpoint = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        site = Site(self.site.server.resource())
        port = await endpoint.listen(site)
        self.addCleanup(port.stopListening)
        number = port.getHost().port
        await self.run_through(f"https://localhost:{number}", f"localhost:{number}", shotgun_ca_file=cert)

    async def test_a_proxy_that_refuses_is_one_line_in_the_status(self) -> None:
        proxy = await start_connect_proxy(reactor, user="studio", password="right")
        self.addCleanup(lambda: defer.ensureDeferred(proxy.stop()))
        daemon = await start_daemon(SCHEMA, self.site.url, self.db_url, wait_ready=False, settings={
            "shotgun_proxy": f"studio:wrong@127.0.0.1:{proxy.port}"})
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        health = daemon.service.upstream.health
        while health.last_error is None:
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertIn("407", health.last_error)
        self.assertGreater(proxy.refused, 0)

    def test_a_bad_proxy_setting_is_one_line(self) -> None:
        from sgcache.config import ConfigError
        from sgcache.service import SgcacheService

        with self.assertRaises(ConfigError) as caught:
            SgcacheService(reactor, {"db": self.db_url, "shotgun": self.site.url, "script_name": "c",
                                     "api_key": "k", "shotgun_proxy": "host:notaport"}, SCHEMA)
        self.assertIn("[user:password@]host[:port]", str(caught.exception))
        self.assertEqual(len(str(caught.exception).splitlines()), 1)
