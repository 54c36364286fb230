"""Request bodies held to their limit as they arrive (sgcache.web.httpsite), on a
real listening port: declared lengths, chunked bodies, the RPC limit and
the relay limit. The relay limit being applied to a relayed path (and the
smaller RPC limit to the RPC path) is what shows Twisted still tells the
request-target before the body (the channel's private ``_path``)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.resource import Resource

from sgcache.web.rpc import Limits
from sgcache.web.httpsite import DaemonSite
from sgcache.testing.rawhttp import raw_request, request_bytes


class Report(Resource):
    """Answers with what the request kept: ``over_limit <bytes kept>``."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        kept = request.content.read()
        return b"%d %d" % (int(getattr(request, "over_limit", False)), len(kept))


class LimitTests(unittest.TestCase):
    def setUp(self) -> None:
        site = DaemonSite(Report(), limits=Limits(request_bytes=1000, relay_bytes=5000))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)

    async def send(self, target: bytes, body: bytes, **kwargs: Any) -> bytes:
        data = request_bytes("POST", target, body, **kwargs)
        response = await deferToThread(raw_request, self.port.getHost().port, data)
        assert response is not None
        self.assertEqual(response.status, 200)
        return response.body

    def test_rpc_bodies(self) -> defer.Deferred:
        async def go() -> None:
            self.assertEqual(await self.send(b"/api3/json", b"x" * 1000), b"0 1000")
            self.assertEqual(await self.send(b"/api3/json", b"x" * 1001), b"1 0")
            self.assertEqual(await self.send(b"/prefix/api3/json?x=1", b"x" * 1001), b"1 0")
            # chunked: no declared length, counted as it arrives
            self.assertEqual(await self.send(b"/api3/json", b"x" * 900, chunked=True), b"0 900")
            self.assertEqual(await self.send(b"/api3/json", b"x" * 20000, chunked=True), b"1 0")

        return defer.ensureDeferred(go())

    def test_relayed_bodies_have_their_own_limit(self) -> defer.Deferred:
        async def go() -> None:
            self.assertEqual(await self.send(b"/upload/upload_file", b"x" * 5000), b"0 5000")
            self.assertEqual(await self.send(b"/upload/upload_file", b"x" * 4000, chunked=True), b"0 4000")
            self.assertEqual(await self.send(b"/upload/upload_file", b"x" * 5001), b"1 0")
            self.assertEqual(await self.send(b"/upload/upload_file", b"x" * 9000, chunked=True), b"1 0")

        return defer.ensureDeferred(go())
