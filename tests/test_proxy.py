"""The site through an HTTP proxy (`sgcache.site.proxy`): the proxy setting
reads as shotgun_api3's ``http_proxy`` does, and a `treq` client on
`make_agent` reaches a small site over http and https through a real
CONNECT proxy (`sgcache.testing.connectproxy`), keeps its tunnel for the
next request, and fails with one line when the proxy refuses, the target is
unreachable, or the site's certificate is not trusted.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import shotgun_api3
import treq
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import URI, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import Site

from sgcache.site.proxy import (
    ProxyError,
    ProxySetting,
    TunnelingEndpointFactory,
    make_agent,
    parse_proxy,
    tls_policy,
)
from sgcache.testing.harness import TrackingFactory
from sgcache.testing.certs import self_signed
from sgcache.testing.connectproxy import start_connect_proxy
from sgcache.testing.rawhttp import raw_request


class ParseProxyTests(unittest.TestCase):
    #: shotgun_api3's own ``http_proxy`` examples, and what it makes of them
    SHOTGUN_FORMS = [
        ("123.456.789.012", ProxySetting("123.456.789.012", 8080, None, None)),
        ("123.456.789.012:3456", ProxySetting("123.456.789.012", 3456, None, None)),
        ("foo:bar@123.456.789.012:3456", ProxySetting("123.456.789.012", 3456, "foo", "bar")),
        ("proxy.example", ProxySetting("proxy.example", 8080, None, None)),
        ("user:p@ss@proxy.example:3128", ProxySetting("proxy.example", 3128, "user", "p@ss")),
        ("user:pa:ss@proxy.example", ProxySetting("proxy.example", 8080, "user", "pa:ss")),
        ("user:@proxy.example:3128", ProxySetting("proxy.example", 3128, "user", "")),
    ]

    def test_the_forms_shotgun_api3_accepts(self) -> None:
        for text, expected in self.SHOTGUN_FORMS:
            self.assertEqual(parse_proxy(text), expected, text)
            sg = shotgun_api3.Shotgun("https://site.example", "script", "key", http_proxy=text, connect=False)
            c = sg.config
            self.assertEqual((c.proxy_server, c.proxy_port, c.proxy_user, c.proxy_pass),
                             (expected.host, expected.port, expected.user, expected.password), text)

    def test_a_url_form_too(self) -> None:
        self.assertEqual(parse_proxy("http://u:p@proxy.example:3128/"), ProxySetting("proxy.example", 3128, "u", "p"))
        self.assertEqual(parse_proxy("HTTP://proxy.example"), ProxySetting("proxy.example", 8080, None, None))
        self.assertEqual(parse_proxy("  10.0.0.1:3128\n"), ProxySetting("10.0.0.1", 3128, None, None))

    def test_bad_settings_say_the_format_in_one_line(self) -> None:
        for text, why in [
            ("", "empty"), ("   ", "empty"), ("proxy.example:port", "bad port"), ("proxy.example:", "bad port"),
            ("proxy.example:0", "out of range"), ("proxy.example:65536", "out of range"),
            ("proxy.example:31:28", "bad port"), ("https://proxy.example:3128", "https://"),
            ("socks5://proxy.example", "socks5://"), ("proxy.example:3128/path", "no path"),
            ("http://proxy.example/path/", "no path"), ("user@proxy.example", "user:password"),
            (":3128", "no host"), ("u:p@", "no host"), ("proxy example", "bad host"),
        ]:
            with self.assertRaises(ValueError, msg=text) as raised:
                parse_proxy(text)
            message = str(raised.exception)
            self.assertIn(why, message, text)
            self.assertIn("[user:password@]host[:port]", message)
            self.assertNotIn("\n", message)

    def test_the_password_is_never_shown(self) -> None:
        setting = parse_proxy("alice:s3cret@10.0.0.1:3128")
        self.assertEqual(setting.describe(), "10.0.0.1:3128")
        self.assertNotIn("s3cret", repr(setting))
        self.assertEqual(setting.authorization(), b"Basic " + base64.b64encode(b"alice:s3cret"))
        self.assertIsNone(parse_proxy("10.0.0.1").authorization())


class Hello(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[bytes] = []

    def render_GET(self, request: Any) -> bytes:
        self.requests.append(request.uri)
        return b"hello " + request.uri


class ThroughProxyTests(unittest.TestCase):
    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.key, self.cert = self_signed(os.path.abspath(self.mktemp()))
        self.hello = Hello()
        self.sites: list[TrackingFactory] = []
        self.http_port = await self.listen("tcp:0:interface=127.0.0.1")
        self.https_port = await self.listen(f"ssl:0:privateKey={self.key}:certKey={self.cert}:interface=127.0.0.1")

    async def listen(self, description: str) -> int:
        factory = TrackingFactory(Site(self.hello))
        port = await serverFromString(reactor, description).listen(factory)
        self.addCleanup(factory.drop_all)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def proxy(self, **credentials: Any) -> Any:
        proxy = await start_connect_proxy(reactor, **credentials)
        self.addCleanup(lambda: defer.ensureDeferred(proxy.stop()))
        return proxy

    def client(self, proxy: ProxySetting | None, ca_file: str | None = None) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.retryAutomatically = False  # as the site client's
        self.addCleanup(pool.closeCachedConnections)
        return HTTPClient(make_agent(reactor, pool, proxy, tls_policy(ca_file)))

    async def get(self, http: HTTPClient, url: str) -> bytes:
        response = await http.get(url)
        self.assertEqual(response.code, 200)
        return await treq.content(response)

    async def test_an_http_site_through_the_tunnel_kept_for_the_next_request(self) -> None:
        proxy = await self.proxy()
        http = self.client(proxy.setting)
        url = f"http://127.0.0.1:{self.http_port}"
        self.assertEqual(await self.get(http, url + "/one"), b"hello /one")
        self.assertEqual(await self.get(http, url + "/two"), b"hello /two")
        self.assertEqual(proxy.tunnels, [f"127.0.0.1:{self.http_port}"])  # one tunnel, two requests
        self.assertEqual(self.hello.requests, [b"/one", b"/two"])  # origin-form, as to the site itself
        self.assertGreater(proxy.bytes_up, 0)
        self.assertGreater(proxy.bytes_down, 0)
        self.assertEqual(proxy.refused, 0)

    async def test_an_https_site_through_the_tunnel_kept_for_the_next_request(self) -> None:
        proxy = await self.proxy()
        http = self.client(proxy.setting, ca_file=self.cert)
        url = f"https://localhost:{self.https_port}"
        self.assertEqual(await self.get(http, url + "/one"), b"hello /one")
        self.assertEqual(await self.get(http, url + "/two"), b"hello /two")
        self.assertEqual(proxy.tunnels, [f"localhost:{self.https_port}"])
        self.assertEqual(self.hello.requests, [b"/one", b"/two"])

    async def test_without_a_proxy_the_agent_goes_direct(self) -> None:
        http = self.client(None, ca_file=self.cert)
        self.assertEqual(await self.get(http, f"https://localhost:{self.https_port}/x"), b"hello /x")
        self.assertEqual(await self.get(http, f"http://127.0.0.1:{self.http_port}/y"), b"hello /y")

    async def test_proxy_credentials(self) -> None:
        proxy = await self.proxy(user="alice", password="p@ss:word")
        url = f"https://localhost:{self.https_port}/x"
        right = self.client(proxy.setting, ca_file=self.cert)
        self.assertEqual(await self.get(right, url), b"hello /x")
        for setting in (ProxySetting("127.0.0.1", proxy.port, "alice", "wrong"),
                        ProxySetting("127.0.0.1", proxy.port, None, None)):
            failed = await self.assertFailure(defer.ensureDeferred(self.get(self.client(setting, self.cert), url)),
                                              ProxyError)
            self.assertIsInstance(failed, ConnectError)
            self.assertEqual(
                str(failed),
                f"proxy 127.0.0.1:{proxy.port} refused CONNECT to localhost:{self.https_port}: "
                "HTTP/1.1 407 Proxy Authentication Required")
        self.assertEqual(proxy.refused, 2)
        self.assertEqual(len(proxy.tunnels), 1)
        self.assertEqual(self.hello.requests, [b"/x"])

    async def test_an_unreachable_target_is_the_proxys_502(self) -> None:
        proxy = await self.proxy()
        closed = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        dead = closed.getHost().port
        await closed.stopListening()
        failed = await self.assertFailure(
            defer.ensureDeferred(self.get(self.client(proxy.setting), f"http://127.0.0.1:{dead}/")), ProxyError)
        self.assertIn(f"refused CONNECT to 127.0.0.1:{dead}: HTTP/1.1 502 Bad Gateway", str(failed))
        self.assertEqual(proxy.tunnels, [])

    async def test_an_untrusted_certificate_fails_through_the_tunnel(self) -> None:
        proxy = await self.proxy()
        _, other = self_signed(os.path.abspath(self.mktemp()))
        url = f"https://localhost:{self.https_port}/x"
        failed = await self.assertFailure(defer.ensureDeferred(self.get(self.client(proxy.setting, other), url)),
                                          ResponseNeverReceived)
        self.assertIn("certificate verify failed", str(failed.reasons[0].value))
        self.assertEqual(proxy.tunnels, [f"localhost:{self.https_port}"])  # the tunnel opened; TLS refused
        self.assertEqual(self.hello.requests, [])

    async def test_the_test_proxy_answers_other_methods_with_405(self) -> None:
        proxy = await self.proxy()
        answer = await deferToThread(
            raw_request, proxy.port,
            f"GET http://127.0.0.1:{self.http_port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        self.assertEqual(answer.status, 405)
        self.assertEqual(proxy.refused, 1)


class FakeProxy(Factory):
    """A "proxy" that reads the CONNECT request, then answers `answer` (None:
    never; b"": hangs up), recording what it got and its connections."""

    noisy = False

    def __init__(self, answer: bytes | None):
        self.answer = answer
        self.received = b""
        self.made: list[Protocol] = []
        self.lost: list[Protocol] = []

    def buildProtocol(self, addr: Any) -> Protocol:
        return _FakeProxyProtocol(self)


class _FakeProxyProtocol(Protocol):
    def __init__(self, fake: FakeProxy):
        self.fake = fake
        self.answered = False

    def connectionMade(self) -> None:
        self.fake.made.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.fake.received += data
        if self.answered or b"\r\n\r\n" not in self.fake.received or self.fake.answer is None:
            return
        self.answered = True
        if self.fake.answer:
            self.transport.write(self.fake.answer)
        else:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.fake.lost.append(self)


class Recorder(Protocol):
    """The real protocol behind the tunnel: what it was given."""

    def __init__(self) -> None:
        self.made = 0
        self.data = b""

    def makeConnection(self, transport: Any) -> None:
        self.made += 1
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class TunnelTests(unittest.TestCase):
    """The tunnel against a scripted proxy: what it sends, the hand-off, and
    each way a proxy can fail it."""

    def start(self, answer: bytes | None) -> FakeProxy:
        fake = FakeProxy(answer)
        port = reactor.listenTCP(0, fake, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: [p.transport.abortConnection() for p in fake.made if p not in fake.lost])
        fake.port = port.getHost().port  # type: ignore[attr-defined]
        return fake

    def connect(self, fake: FakeProxy, url: bytes = b"http://site.example:8000/", timeout: float = 30,
                user: str | None = None, password: str | None = None) -> defer.Deferred:
        setting = ProxySetting("127.0.0.1", fake.port, user, password)  # type: ignore[attr-defined]
        factory = TunnelingEndpointFactory(reactor, setting, tls_policy(None), timeout=timeout)
        return factory.endpointForURI(URI.fromBytes(url)).connect(Factory.forProtocol(Recorder))

    async def closed(self, fake: FakeProxy) -> None:
        """Until the proxy has seen every connection to it closed."""
        while len(fake.lost) < len(fake.made) or not fake.made:
            await deferLater(reactor, 0.01)

    async def test_the_request_and_the_hand_off(self) -> None:
        fake = self.start(b"HTTP/1.0 200 Connection established\r\nVia: test\r\n\r\nEARLY")
        inner = await self.connect(fake, user="alice", password="p@ss:word")
        self.assertEqual(fake.received, b"CONNECT site.example:8000 HTTP/1.1\r\nHost: site.example:8000\r\n"
                         b"Proxy-Authorization: Basic YWxpY2U6cEBzczp3b3Jk\r\n\r\n")
        self.assertIsInstance(inner, Recorder)
        self.assertEqual(inner.made, 1)
        # what came after the answer's headers, delivered once the connection is handed over
        await deferLater(reactor, 0)
        self.assertEqual(inner.data, b"EARLY")
        inner.transport.write(b"through")
        while not fake.received.endswith(b"through"):
            await deferLater(reactor, 0.01)
        inner.transport.loseConnection()
        await self.closed(fake)

    async def test_bytes_before_tls_fail_an_https_tunnel(self) -> None:
        fake = self.start(b"HTTP/1.1 200 OK\r\n\r\n\x16\x03\x01")
        failed = await self.assertFailure(self.connect(fake, b"https://site.example/"), ProxyError)
        self.assertEqual(str(failed), f"proxy 127.0.0.1:{fake.port} sent 3 bytes after opening the tunnel "
                         "to site.example:443, before TLS")
        await self.closed(fake)

    async def test_an_answer_that_is_not_http(self) -> None:
        fake = self.start(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        failed = await self.assertFailure(self.connect(fake), ProxyError)
        self.assertEqual(str(failed), f"proxy 127.0.0.1:{fake.port} answered CONNECT to site.example:8000 "
                         "with something not HTTP: SSH-2.0-OpenSSH_9.6")
        await self.closed(fake)

    async def test_connecting_can_be_cancelled(self) -> None:
        fake = self.start(None)
        connecting = self.connect(fake)
        while not fake.received:
            await deferLater(reactor, 0.01)
        connecting.cancel()
        await self.assertFailure(connecting, defer.CancelledError)
        await self.closed(fake)  # the connection to the proxy is closed

    async def test_a_proxy_that_never_answers_times_out(self) -> None:
        fake = self.start(None)
        failed = await self.assertFailure(self.connect(fake, timeout=0.2), ProxyError)
        self.assertEqual(str(failed), f"proxy 127.0.0.1:{fake.port} did not answer CONNECT to site.example:8000 "
                         "within 0.2s")
        await self.closed(fake)

    async def test_a_proxy_that_hangs_up_before_answering(self) -> None:
        fake = self.start(b"")
        failed = await self.assertFailure(self.connect(fake), ProxyError)
        self.assertIn(f"proxy 127.0.0.1:{fake.port} closed the connection before answering CONNECT to "
                      "site.example:8000", str(failed))
        await self.closed(fake)


class TLSPolicyTests(unittest.TestCase):
    def test_a_ca_file_without_certificates(self) -> None:
        path = self.mktemp()
        with open(path, "w") as fh:
            fh.write("not a certificate\n")
        with self.assertRaises(ValueError) as raised:
            tls_policy(path)
        self.assertIn("no PEM certificate", str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            tls_policy(path + ".missing")
        self.assertIn("cannot be read", str(raised.exception))

    def test_a_ca_file_with_certificates(self) -> None:
        _, first = self_signed(os.path.abspath(self.mktemp()))
        _, second = self_signed(os.path.abspath(self.mktemp()))
        both = self.mktemp()
        with open(both, "wb") as fh:
            fh.write(open(first, "rb").read() + open(second, "rb").read())
        self.assertIsNotNone(tls_policy(both).creatorForNetloc(b"localhost", 443))

