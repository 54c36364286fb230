"""Unit tests for the endpoint (sgcache.web.rpc) and the upstream client
(sgcache.site.client), in memory: StubTreq in front of the Klein resource, and
StubTreq standing in for the site."""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from sgcache.site.faults import ERR_BAD_REQUEST, ERR_UPSTREAM, Fault
from sgcache.web.rpc import RawReply, RPCResource, encode_json, parse_envelope
from sgcache.site.client import Upstream, UpstreamError


def run(coro):
    return defer.ensureDeferred(coro)


class FakeCache:
    """Records calls; answers as told."""

    def __init__(self, reply=None, error=None):
        self.calls = []
        self.reply = reply if reply is not None else {"results": {"ok": True}}
        self.error = error

    async def handle(self, method, auth, args, body, headers, note=None):
        self.calls.append((method, auth, args))
        if self.error is not None:
            raise self.error
        return self.reply

    async def relay(self, verb, target, body, headers):
        self.calls.append(("http", verb, target.decode()))
        raise Fault("site down", ERR_UPSTREAM)


class EnvelopeTests(unittest.TestCase):
    def test_read_envelope(self):
        body = json.dumps({"method_name": "read", "params": [{"script_name": "a", "script_key": "b"}, {"type": "Shot"}]})
        method, auth, args = parse_envelope(body.encode())
        self.assertEqual(method, "read")
        self.assertEqual(auth, {"script_name": "a", "script_key": "b"})
        self.assertEqual(args, {"type": "Shot"})

    def test_info_has_no_auth(self):
        self.assertEqual(parse_envelope(b'{"method_name": "info", "params": []}'), ("info", None, None))

    def test_gzip_body(self):
        import gzip

        body = gzip.compress(b'{"method_name": "info", "params": []}')
        self.assertEqual(parse_envelope(body, b"gzip")[0], "info")

    def test_bad_bodies_are_faults(self):
        for body in [b"{not json", b"[1, 2]", b'{"params": []}', b'{"method_name": "read", "params": {}}',
                     b'{"method_name": "read", "params": ["x"]}', b"\xff\xfe"]:
            fault = self.assertRaises(Fault, parse_envelope, body)
            self.assertEqual(fault.error_code, ERR_BAD_REQUEST)


class LimitTests(unittest.TestCase):
    def test_a_gzip_bomb_is_refused_while_inflating(self):
        import gzip

        bomb = gzip.compress(b"[" + b" " * (64 * 2**20) + b"]")
        self.assertLess(len(bomb), 2**20)
        fault = self.assertRaises(Fault, parse_envelope, bomb, b"gzip", 2**20)
        self.assertEqual(fault.error_code, ERR_BAD_REQUEST)
        self.assertIn("--max-request-mb", fault.message)
        # just under the limit is fine, in several members too
        body = b'{"method_name": "info", "params": []}'
        self.assertEqual(parse_envelope(gzip.compress(body) + gzip.compress(b" "), b"gzip", len(body) + 1)[0], "info")
        fault = self.assertRaises(Fault, parse_envelope, gzip.compress(body), b"gzip", len(body) - 1)
        self.assertIn("--max-request-mb", fault.message)

    def test_broken_gzip_is_a_fault(self):
        import gzip

        whole = gzip.compress(b'{"method_name": "info", "params": []}')
        for body in (whole[:-9], whole[:5], b"not gzip at all", whole + b"junk"):
            fault = self.assertRaises(Fault, parse_envelope, body, b"gzip")
            self.assertEqual(fault.error_code, ERR_BAD_REQUEST)

    def test_deep_json_is_a_fault(self):
        for depth in (101, 5000, 200000):
            body = b'{"method_name": "read", "params": [{}, ' + b"[" * depth + b"]" * depth + b"]}"
            fault = self.assertRaises(Fault, parse_envelope, body)
            self.assertEqual(fault.error_code, ERR_BAD_REQUEST)
            self.assertIn("nests deeper", fault.message)
        body = b'{"method_name": "read", "params": [{}, ' + b"[" * 90 + b"]" * 90 + b"]}"
        self.assertEqual(parse_envelope(body)[0], "read")
        wide = b'{"method_name": "read", "params": [{}, [' + b",".join([b"[1]"] * 5000) + b"]]}"
        self.assertEqual(len(parse_envelope(wide)[2]), 5000)

    def test_client_text_in_log_lines_is_bounded_and_writable(self):
        from sgcache.logs import clip

        line = clip("\ud800" + "x" * 500, 100)
        line.encode("utf-8")
        self.assertTrue(line.startswith("\\ud800x"))
        self.assertTrue(line.endswith("... (501 chars)"))
        self.assertLess(len(line), 130)
        self.assertEqual(clip("plain"), "plain")

    def test_answers_encode_whatever_text_they_hold(self):
        self.assertEqual(json.loads(encode_json({"a": "\ud800", "b": "é"})), {"a": "\ud800", "b": "é"})
        self.assertEqual(encode_json({"b": "é"}), '{"b": "é"}'.encode("utf-8"))


class ResourceTests(unittest.TestCase):
    def request(self, cache, path="/api3/json", body=b'{"method_name": "read", "params": [{}, {}]}'):
        stub = StubTreq(RPCResource(cache).resource())
        return stub, stub.post("http://cache.test" + path, data=body)

    def test_routes_rpc_under_any_prefix(self):
        async def go():
            for path in ("/api3/json", "/studio/shotgun/api3/json", "/api3/json/"):
                cache = FakeCache()
                stub, d = self.request(cache, path)
                response = await d
                self.assertEqual(response.code, 200)
                self.assertEqual(response.headers.getRawHeaders(b"content-type")[0][:16], b"application/json")
                self.assertEqual(json.loads(await stub.content(response)), {"results": {"ok": True}})
                self.assertEqual(cache.calls[0][0], "read")

        return run(go())

    def test_malformed_body_gets_a_fault_not_a_500(self):
        async def go():
            cache = FakeCache()
            stub, d = self.request(cache, body=b"garbage")
            response = await d
            self.assertEqual(response.code, 200)
            body = json.loads(await stub.content(response))
            self.assertEqual(body["exception"], True)
            self.assertEqual(body["error_code"], ERR_BAD_REQUEST)
            self.assertEqual(cache.calls, [])

        return run(go())

    def test_unexpected_errors_become_faults(self):
        async def go():
            stub, d = self.request(FakeCache(error=RuntimeError("boom")))
            response = await d
            body = json.loads(await stub.content(response))
            self.assertTrue(body["exception"])
            self.assertNotIn("Traceback", body["message"])
            self.assertNotIn("boom", body["message"])
            self.flushLoggedErrors(RuntimeError)

        return run(go())

    def test_raw_replies_are_relayed(self):
        async def go():
            reply = RawReply(503, [(b"content-type", [b"text/plain"])], b"maintenance")
            stub, d = self.request(FakeCache(reply=reply))
            response = await d
            self.assertEqual(response.code, 503)
            self.assertEqual(await stub.content(response), b"maintenance")

        return run(go())

    def test_non_rpc_paths_are_forwarded(self):
        async def go():
            cache = FakeCache()
            stub = StubTreq(RPCResource(cache).resource())
            response = await stub.get("http://cache.test/thumbnail/Shot/1")
            self.assertEqual(response.code, 503)
            self.assertEqual(cache.calls, [("http", "GET", "/thumbnail/Shot/1")])

        return run(go())


class Site(Resource):
    """A fake upstream: answers every POST with a fixed status and body."""

    isLeaf = True

    def __init__(self, status=200, body=None):
        super().__init__()
        self.status = status
        self.body = body if body is not None else {"results": {"entities": []}}
        self.requests = []

    def render_POST(self, request):
        self.requests.append((request.path, request.content.read(), request.requestHeaders))
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.body).encode()


class UpstreamTests(unittest.TestCase):
    def upstream(self, site):
        return Upstream(Clock(), "http://site.test/", "cache", "key", http=StubTreq(site))

    def test_call_sends_the_caches_credentials_and_unwraps_results(self):
        async def go():
            site = Site(body={"results": {"entities": [{"type": "Shot", "id": 1}]}})
            result = await self.upstream(site).call("read", {"type": "Shot"})
            self.assertEqual(result, {"entities": [{"type": "Shot", "id": 1}]})
            path, body, _ = site.requests[0]
            self.assertEqual(path, b"/api3/json")
            payload = json.loads(body)
            self.assertEqual(payload["params"][0], {"script_name": "cache", "script_key": "key"})

        return run(go())

    def test_call_raises_faults_and_http_errors(self):
        async def go():
            fault = {"exception": True, "message": "nope", "error_code": 102}
            with self.assertRaises(Fault) as caught:
                await self.upstream(Site(body=fault)).call("read", {})
            self.assertEqual(caught.exception.error_code, 102)
            with self.assertRaises(UpstreamError):
                await self.upstream(Site(status=500)).call("read", {})

        return run(go())

    def test_forward_relays_reads_unchanged_even_on_502(self):
        async def go():
            site = Site(status=502, body={"x": 1})
            headers = Headers({b"content-type": [b"application/json"], b"host": [b"cache.test"]})
            response = await self.upstream(site).forward("read", b'{"raw": true}', headers)
            self.assertEqual(response.status, 502)
            self.assertEqual(site.requests[0][1], b'{"raw": true}')
            # the client's Host header is not forwarded to the site
            self.assertNotIn(b"cache.test", site.requests[0][2].getRawHeaders(b"host") or [])

        return run(go())

    def test_forward_never_answers_502_or_504_to_a_write(self):
        async def go():
            for status in (502, 504):
                for method in ("create", "update", "delete", "revive", "batch", "upload_url"):
                    with self.assertRaises(Fault) as caught:
                        await self.upstream(Site(status=status)).forward(method, b"{}", Headers())
                    self.assertEqual(caught.exception.error_code, ERR_UPSTREAM)
                    self.assertIn(str(status), caught.exception.message)

        return run(go())

    def test_forward_reports_an_unreachable_site_as_a_fault(self):
        async def go():
            class Broken:
                def request(self, *args, **kwargs):
                    return defer.fail(ConnectionRefusedError("refused"))

            upstream = Upstream(Clock(), "http://site.test", "cache", "key", http=Broken())
            with self.assertRaises(Fault) as caught:
                await upstream.forward("update", b"{}", Headers())
            self.assertIn("unreachable", caught.exception.message)

        return run(go())
