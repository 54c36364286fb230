"""sgcache.service: start-up order and the initial load."""

from __future__ import annotations

import os
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from sgcache.logs import set_level
from sgcache.read.reasons import CREDENTIALS, NOT_READY, REASONS
from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.emulator import Emulator
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.server import EmulatorServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))


class InitialLoadTests(unittest.TestCase):
    def test_each_type_is_served_as_soon_as_it_is_loaded(self):
        async def go():
            site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, ("user", "key")]))
            self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
            site.emulator.seed([{"type": "Shot", "fields": {"code": f"sh{i}"}} for i in range(5)]
                               + [{"type": "Version", "fields": {"code": f"v{i}"}} for i in range(3)])
            # slow site: the initial load takes a while
            site.emulator.set_latency(0.05)
            url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
            daemon = await start_daemon(SCHEMA, site.url, url, wait_loaded=False)
            self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
            sg = client(daemon.url, "user", "key")
            self.addCleanup(sg.close)
            direct = client(site.url, "user", "key")
            self.addCleanup(direct.close)
            self.assertFalse(daemon.cache.serving)
            first = await deferToThread(sg.find, "Shot", [], ["code"])  # vouches for "user"
            self.assertEqual(await deferToThread(sg.find, "Shot", [], ["code"]), first)
            self.assertEqual(len(first), 5)
            self.assertEqual(daemon.cache.counters["read.local"], 0)
            self.assertEqual(
                {REASONS[phrase] for phrase in daemon.cache.passthrough_reasons},
                {CREDENTIALS, NOT_READY}, daemon.cache.passthrough_reasons)
            # types load in name order: Shot is served while Version (and
            # the rest) still load
            while not daemon.cache.catalog.type_ready("Shot"):
                self.assertFalse(daemon.service.loaded.called, "Shot never served before the end of the load")
                await task.deferLater(reactor, 0.01, lambda: None)
            self.assertFalse(daemon.service.loaded.called)
            self.assertFalse(daemon.cache.catalog.type_ready("Version"))
            self.assertIn("Version", daemon.cache.status()["loading"])
            self.assertEqual(await deferToThread(sg.find, "Shot", [], ["code"]), first)
            self.assertEqual(daemon.cache.counters["read.local"], 1)
            versions = await deferToThread(sg.find, "Version", [], ["code"])
            self.assertEqual(versions, await deferToThread(direct.find, "Version", [], ["code"]))
            self.assertEqual(daemon.cache.counters["read.local"], 1)
            await daemon.service.loaded
            self.assertTrue(daemon.cache.serving)
            self.assertEqual(daemon.cache.status()["loading"], {})
            site.emulator.set_latency(0)
            self.assertEqual(await deferToThread(sg.find, "Version", [], ["code"]), versions)
            self.assertEqual(daemon.cache.counters["read.local"], 2)

        return defer.ensureDeferred(go())

    def test_a_loaded_store_is_not_scanned_again_on_restart(self):
        async def go():
            site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT]))
            self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
            site.emulator.seed([{"type": "Shot", "fields": {"code": "a"}}])
            url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
            daemon = await start_daemon(SCHEMA, site.url, url)
            await daemon.stop()
            reads_before = site.emulator.counters().get("read", 0)
            daemon = await start_daemon(SCHEMA, site.url, url)
            self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
            self.assertTrue(daemon.cache.serving)
            # only the event poller's reads, no scan of the 20 types
            self.assertLess(site.emulator.counters().get("read", 0) - reads_before, 5)

        return defer.ensureDeferred(go())


async def start_logged(case: unittest.TestCase, settings: dict) -> tuple[Any, Any, Any, list[str]]:
    """Emulator + daemon (`settings`) + a client, and every log line
    published from now on: (site, daemon, client, lines)."""
    site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, ("user", "key")]))
    case.addCleanup(lambda: defer.ensureDeferred(site.stop()))
    url = "sqlite:///" + os.path.abspath(case.mktemp()) + ".sqlite"
    daemon = await start_daemon(SCHEMA, site.url, url, settings=settings)
    case.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
    logged: list[str] = []

    def observe(event: dict) -> None:
        logged.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    sg = client(daemon.url, "user", "key")
    case.addCleanup(sg.close)
    return site, daemon, sg, logged


class AccessLogTests(unittest.TestCase):
    """One line per request in `--access-log` when set; nothing in the
    daemon's own log either way (the lines logged are the emulator's own,
    one per request it received)."""

    async def _two_reads(self, settings: dict) -> tuple[int, int]:
        """(access lines logged, requests the emulator served) for two reads."""
        site, daemon, sg, logged = await start_logged(self, settings)
        site.emulator.reset_counters()
        del logged[:]
        await deferToThread(sg.find, "Shot", [], ["code"])
        await deferToThread(sg.find, "Shot", [], ["code"])
        await daemon.stop()
        served = sum(site.emulator.counters().values())
        self.assertGreaterEqual(served, 1)  # the first read goes upstream
        return len([line for line in logged if "POST /api3/json" in line]), served

    def test_no_access_log_by_default(self):
        async def go():
            logged, served = await self._two_reads({})
            self.assertEqual(logged, served)

        return defer.ensureDeferred(go())

    def test_access_log_file_when_configured(self):
        async def go():
            path = os.path.abspath(self.mktemp())
            logged, served = await self._two_reads({"access_log": path})
            self.assertEqual(logged, served)
            with open(path) as fh:
                lines = [line for line in fh if '"POST /api3/json HTTP/1.1" 200' in line]
            self.assertGreaterEqual(len(lines), 2)

        return defer.ensureDeferred(go())


class LogLevelTests(unittest.TestCase):
    """sgcache's debug lines (one per passed-through read) reach the log only
    at ``--log-level debug``."""

    async def _passthrough_lines(self, settings: dict) -> list[str]:
        self.addCleanup(set_level, "info")
        _site, daemon, sg, logged = await start_logged(self, settings)
        await deferToThread(sg.find, "Shot", [], ["code"])  # not yet vouched for: upstream
        self.assertEqual(daemon.cache.passthrough_reasons["credentials not yet vouched for by the site"], 1)
        return [line for line in logged if line.startswith("read passes through")]

    def test_debug_lines_dropped_at_info(self):
        async def go():
            self.assertEqual(await self._passthrough_lines({}), [])

        return defer.ensureDeferred(go())

    def test_debug_lines_kept_at_debug(self):
        async def go():
            self.assertEqual(await self._passthrough_lines({"log_level": "debug"}),
                             ["read passes through: credentials not yet vouched for by the site"])

        return defer.ensureDeferred(go())


class StopTests(unittest.TestCase):
    def test_stop_does_not_wait_for_a_slow_site(self):
        async def go():
            site, daemon, _sg, _logged = await start_logged(self, {"poll_interval": 0.05})
            # the site stops answering; wait for the poller to be waiting on it
            latency = 30.0
            site.emulator.set_latency(latency)
            upstream = daemon.service.upstream
            for _ in range(200):
                if upstream._calls:
                    break
                await task.deferLater(reactor, 0.01, lambda: None)
            self.assertTrue(upstream._calls, "no poll went upstream")
            started = reactor.seconds()
            await daemon.stop()
            # a stop that waited for the site would take the whole latency
            self.assertLess(reactor.seconds() - started, latency / 3)
            self.assertFalse(upstream._calls)
            with self.assertRaises(Exception) as caught:
                await upstream.call("info")
            self.assertIn("sgcache is stopping", str(caught.exception))

        return defer.ensureDeferred(go())


class _RecordingSite(Resource):
    """The emulator's resource, except that POSTs under ``/upload/`` are
    recorded (Content-Type and body as received) and answered ``1``."""

    isLeaf = True

    def __init__(self, inner: Any):
        super().__init__()
        self.inner = inner
        self.uploads: list[tuple[bytes | None, bytes]] = []

    def render(self, request: Any) -> Any:
        if request.path.startswith(b"/upload/"):
            self.uploads.append((request.getHeader(b"content-type"), request.content.read()))
            return b"1\n"
        return self.inner.render(request)


class UploadForwardTests(unittest.TestCase):
    """Non-RPC POSTs (the client's uploads) reach the site byte for byte;
    the daemon's site does not parse them as forms."""

    def test_multipart_and_form_posts_are_forwarded_as_sent(self):
        async def go():
            emulator = Emulator(SCHEMA, scripts=dict([CACHE_SCRIPT]), clock=reactor)
            recording = _RecordingSite(EmulatorServer(emulator, reactor).resource())
            # the stand-in site records whatever arrives, parsed or not
            port = reactor.listenTCP(0, Site(recording, parsePOSTFormSubmission=False), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            site_url = f"http://127.0.0.1:{port.getHost().port}"
            url = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
            daemon = await start_daemon(SCHEMA, site_url, url)
            self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
            boundary = b"----sgcache-test"
            multipart = (
                b"--" + boundary + b"\r\n"
                b'Content-Disposition: form-data; name="file"; filename="a.mov"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n"
                + bytes(range(256)) * 64 + b"\r\n"
                b"--" + boundary + b'\r\nContent-Disposition: form-data; name="thumb_image"\r\n\r\n1\r\n'
                b"--" + boundary + b"--\r\n"
            )
            sent = [
                (b"multipart/form-data; boundary=" + boundary, multipart),
                (b"application/x-www-form-urlencoded", b"a=1&b=%20x&a=2"),
                # not valid multipart: the site judges it, not the daemon
                # (Twisted's form parsing would answer 400 itself)
                (b"multipart/form-data", b"not a multipart body"),
            ]
            for content_type, body in sent:
                response = await treq.post(
                    daemon.url + "/upload/upload_file", body, headers={b"Content-Type": [content_type]},
                    persistent=False,
                )
                self.assertEqual(response.code, 200)
                self.assertEqual(await response.content(), b"1\n")
            self.assertEqual(recording.uploads, sent)

        return defer.ensureDeferred(go())
