"""A small real HTTP CONNECT proxy for tests (Twisted protocols, no threads):
`start_connect_proxy` listens on 127.0.0.1 (a free port) and tunnels
``CONNECT host:port`` to the target, recording what it did.

Answers: ``407`` when credentials are required and missing or wrong, ``405``
for any method but CONNECT, ``400`` for a request it cannot read, ``502``
when the target cannot be reached, else ``200 Connection established`` and
bytes both ways (each side the other's producer: a slow reader pauses the
other socket). It never looks inside a tunnel.

`RunningProxy.stop` stops listening and drops every connection (both sides
of each tunnel), waiting until they are gone, so trial's reactor is left
clean.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from sgcache.site.proxy import ProxySetting

MAX_REQUEST = 16 * 1024


@dataclass
class RunningProxy:
    """A CONNECT proxy listening on 127.0.0.1, and what it saw."""

    port: int
    setting: ProxySetting
    listening: IListeningPort | None = None
    #: "host:port" of every tunnel opened, in order
    tunnels: list[str] = field(default_factory=list)
    #: requests answered with anything but 200
    refused: int = 0
    #: tunnelled bytes, client to target and back
    bytes_up: int = 0
    bytes_down: int = 0
    user: str | None = None
    password: str | None = None
    reactor: Any = None
    _open: set[Protocol] = field(default_factory=set)
    _idle: list[defer.Deferred] = field(default_factory=list)

    def _opened(self, proto: Protocol) -> None:
        self._open.add(proto)

    def _closed(self, proto: Protocol) -> None:
        self._open.discard(proto)
        if not self._open:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    async def stop(self) -> None:
        """Stop listening and drop every connection, both sides."""
        if self.listening is not None:
            stopped = self.listening.stopListening()
            self.listening = None
            if stopped is not None:
                await stopped
        if self._open:
            d: defer.Deferred = defer.Deferred()
            self._idle.append(d)
            for proto in list(self._open):
                proto.transport.abortConnection()
            await d


class _Target(Protocol):
    """The proxy's connection to the target of a tunnel."""

    def __init__(self, client: _Client):
        self.client = client

    def connectionMade(self) -> None:
        self.client.proxy._opened(self)

    def dataReceived(self, data: bytes) -> None:
        self.client.proxy.bytes_down += len(data)
        self.client.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.client.proxy._closed(self)
        self.client.transport.loseConnection()


class _Client(Protocol):
    """A client of the proxy: its request, then the tunnel's client side."""

    def __init__(self, proxy: RunningProxy):
        self.proxy = proxy
        self.buffer = b""
        self.target: _Target | None = None
        self.state = "request"  # -> connecting -> tunnel | done

    def connectionMade(self) -> None:
        self.proxy._opened(self)

    def answer(self, status: bytes, *headers: bytes) -> None:
        if status != b"200 Connection established":
            self.proxy.refused += 1
        self.transport.write(b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n")

    def refuse(self, status: bytes, *headers: bytes) -> None:
        self.state = "done"
        self.answer(status, b"Content-Length: 0", b"Connection: close", *headers)
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.state == "tunnel":
            assert self.target is not None
            self.proxy.bytes_up += len(data)
            self.target.transport.write(data)
            return
        if self.state != "request":  # connecting (paused): keep; done: drop
            if self.state == "connecting":
                self.buffer += data
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_REQUEST:
                self.refuse(b"400 Bad Request")
            return
        head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.refuse(b"400 Bad Request")
            return
        method, target = parts[0], parts[1].decode("latin-1")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if method != b"CONNECT":
            self.refuse(b"405 Method Not Allowed", b"Allow: CONNECT")
            return
        if self.proxy.user is not None:
            expected = b"Basic " + base64.b64encode(f"{self.proxy.user}:{self.proxy.password}".encode("utf-8"))
            if headers.get(b"proxy-authorization") != expected:
                self.refuse(b"407 Proxy Authentication Required", b'Proxy-Authenticate: Basic realm="test"')
                return
        match = re.fullmatch(r"\[?([^\[\]]+?)\]?:([0-9]{1,5})", target)
        if match is None:
            self.refuse(b"400 Bad Request")
            return
        self.state = "connecting"
        self.transport.pauseProducing()
        endpoint = HostnameEndpoint(self.proxy.reactor, match.group(1), int(match.group(2)), timeout=5)
        factory = Factory.forProtocol(lambda: _Target(self))
        factory.noisy = False
        connecting = endpoint.connect(factory)
        connecting.addCallbacks(lambda target_proto: self.opened(target, target_proto), self.unreachable)

    def unreachable(self, reason: Failure) -> None:
        if self.state == "connecting":
            self.transport.resumeProducing()
            self.refuse(b"502 Bad Gateway")

    def opened(self, target: str, proto: _Target) -> None:
        if self.state != "connecting":  # the client went away meanwhile
            proto.transport.loseConnection()
            return
        self.state, self.target = "tunnel", proto
        self.proxy.tunnels.append(target)
        self.answer(b"200 Connection established")
        # each side is the other's producer: back-pressure both ways
        self.transport.registerProducer(proto.transport, True)
        proto.transport.registerProducer(self.transport, True)
        early, self.buffer = self.buffer, b""
        if early:
            self.dataReceived(early)
        self.transport.resumeProducing()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.proxy._closed(self)
        self.state = "done"
        if self.target is not None:
            self.target.transport.loseConnection()


class _ProxyFactory(Factory):
    noisy = False

    def __init__(self, proxy: RunningProxy):
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> _Client:
        return _Client(self.proxy)


async def start_connect_proxy(reactor: Any, user: str | None = None, password: str | None = None) -> RunningProxy:
    """A CONNECT proxy on 127.0.0.1 (a free port); with `user`, it requires
    those Basic credentials (``407`` otherwise)."""
    proxy = RunningProxy(port=0, setting=ProxySetting("127.0.0.1", 0, user, password),
                         user=user, password=password if user is not None else None, reactor=reactor)
    listening = reactor.listenTCP(0, _ProxyFactory(proxy), interface="127.0.0.1")
    proxy.listening = listening
    proxy.port = listening.getHost().port
    proxy.setting = ProxySetting("127.0.0.1", proxy.port, user, password)
    return proxy
