"""Reaching the Shotgun site through an HTTP proxy (``--shotgun-proxy``):
the proxy setting (`parse_proxy`, the format of shotgun_api3's
``http_proxy``), the tunnel (`TunnelingEndpointFactory`: ``CONNECT
host:port`` to the proxy, then the site's own HTTP, or TLS then HTTP, over
the same connection -- what httplib2 does for shotgun_api3, for both
schemes), the `Agent` the site client uses (`make_agent`) and the TLS
policy for the site (`tls_policy`: the platform's roots, or only those of a
CA file).

The tunnel is an endpoint: the connection pool asks it for a connection as
it would ask a TCP one, and keeps it (the tunnel with it) for the next
request.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IStreamClientEndpoint,
    ITLSTransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from sgcache.logs import clip, logger

log = logger(__name__)

#: what `parse_proxy` accepts, for its error messages
PROXY_FORMAT = "[http://][user:password@]host[:port] (port 8080 if not given)"
DEFAULT_PORT = 8080
#: the proxy's answer to CONNECT (status line and headers) may not be longer
MAX_ANSWER = 64 * 1024


@dataclass(frozen=True)
class ProxySetting:
    """An HTTP proxy that tunnels (CONNECT), with its Basic credentials."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None

    def describe(self) -> str:
        """``host:port``, for log lines and errors (never the password)."""
        return _authority(self.host, self.port)

    def authorization(self) -> bytes | None:
        """The ``Proxy-Authorization`` header value, or None without
        credentials (as httplib2: both a user and a password, maybe empty)."""
        if self.user is None or self.password is None:
            return None
        token = base64.b64encode(f"{self.user}:{self.password}".encode("utf-8"))
        return b"Basic " + token

    def __repr__(self) -> str:
        user = f", user={self.user!r}" if self.user is not None else ""
        return f"ProxySetting({self.describe()}{user})"


def parse_proxy(text: str) -> ProxySetting:
    """``[user:password@]host[:port]`` as shotgun_api3's ``http_proxy``: split
    on the last ``@`` (a password may hold one), the credentials on the first
    ``:``, port 8080 unless given; also an ``http://`` in front and a ``/``
    behind. `ValueError` (one line) for anything else."""

    def bad(why: str) -> ValueError:
        return ValueError(f"proxy {clip(text, 100)!r}: {why}; expected {PROXY_FORMAT}")

    value = text.strip()
    if not value:
        raise bad("empty")
    scheme, sep, rest = value.partition("://")
    if sep:
        if scheme.lower() != "http":
            raise bad(f"scheme {scheme}:// is not supported (the proxy is spoken to in plain HTTP)")
        value = rest
    if value.endswith("/"):
        value = value[:-1]
    user = password = None
    credentials, at, server = value.rpartition("@")
    if at:
        user, colon, password = credentials.partition(":")
        if not colon:
            raise bad("credentials must be user:password")
    if "/" in server or "?" in server or "#" in server:
        raise bad("a proxy address has no path")
    host, colon, port_text = server.partition(":")
    if not host:
        raise bad("no host")
    if re.search(r"[\s@\[\]]", host):
        raise bad(f"bad host {clip(host, 60)!r}")
    port = DEFAULT_PORT
    if colon:
        if not re.fullmatch(r"[0-9]{1,5}", port_text):
            raise bad(f"bad port {clip(port_text, 20)!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise bad(f"port {port} out of range")
    return ProxySetting(host, port, user, password)


class ProxyError(ConnectError):
    """The proxy did not open the tunnel: it refused CONNECT (the status line
    is in the message), answered with something not HTTP, closed before
    answering, or did not answer in time."""

    def __init__(self, message: str):
        super().__init__(string=message)

    def __str__(self) -> str:
        return str(self.args[0])


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class _Tunnel(Protocol):
    """The connection to the proxy: asks for the tunnel, reads the answer,
    then hands the connection to the real protocol and passes everything
    through to it (data, and the end of the connection)."""

    def __init__(self, endpoint: TunnelingEndpoint, factory: IProtocolFactory):
        self._endpoint = endpoint
        self._factory = factory
        self._buffer = b""
        self._inner: IProtocol | None = None
        self._timer: IDelayedCall | None = None
        #: fires with the real protocol once the tunnel is open
        self.ready: defer.Deferred[IProtocol] = defer.Deferred(self._cancel)

    # -- before the hand-off

    def connectionMade(self) -> None:
        ep = self._endpoint
        request = [b"CONNECT %s HTTP/1.1" % ep.target.encode("ascii"), b"Host: %s" % ep.target.encode("ascii")]
        auth = ep.proxy.authorization()
        if auth is not None:
            request.append(b"Proxy-Authorization: " + auth)
        self.transport.write(b"\r\n".join(request) + b"\r\n\r\n")
        if ep.timeout is not None:
            self._timer = ep.reactor.callLater(ep.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(f"did not answer CONNECT to {self._endpoint.target} within {self._endpoint.timeout:g}s")

    def _cancel(self, _: defer.Deferred) -> None:
        # Deferred.cancel: the caller gave up (errback with CancelledError follows)
        self._stop_timer()
        self.transport.abortConnection()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _fail(self, why: str) -> None:
        self._stop_timer()
        self.transport.abortConnection()
        if not self.ready.called:
            self.ready.errback(ProxyError(f"proxy {self._endpoint.proxy.describe()} {why}"))

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self.ready.called:  # failed or cancelled: the connection is going
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_ANSWER:
                self._fail(f"answered CONNECT to {self._endpoint.target} with over {MAX_ANSWER} bytes of headers")
            return
        head, rest = self._buffer[:end], self._buffer[end + 4:]
        self._buffer = b""
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        match = re.fullmatch(r"HTTP/1\.[01] ([0-9]{3})(?: .*)?", status)
        if match is None:
            self._fail(f"answered CONNECT to {self._endpoint.target} with something not HTTP: {clip(status, 100)}")
        elif not 200 <= int(match.group(1)) < 300:
            self._fail(f"refused CONNECT to {self._endpoint.target}: {clip(status, 200)}")
        else:
            self._established(rest)

    def _established(self, rest: bytes) -> None:
        self._stop_timer()
        ep = self._endpoint
        transport = self.transport
        if ep.creator is not None:
            if rest:
                # a TLS server never speaks first
                self._fail(f"sent {len(rest)} bytes after opening the tunnel to {ep.target}, before TLS")
                return
            if not ITLSTransport.providedBy(transport):
                self._fail(f"connection cannot start TLS ({type(transport).__name__})")
                return
            # from here on the transport encrypts what is written and this
            # protocol receives the plain text; it is not made again
            transport.startTLS(ep.creator)
        inner = self._factory.buildProtocol(transport.getPeer())
        if inner is None:
            transport.abortConnection()
            self.ready.errback(ConnectError(string="the protocol factory refused the connection"))
            return
        log.debug("tunnel to {target} open through proxy {proxy}", target=ep.target, proxy=ep.proxy.describe())
        self._inner = inner
        inner.makeConnection(transport)
        self.ready.callback(inner)
        if rest:
            inner.dataReceived(rest)

    # -- both

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_timer()
        if self._inner is not None:
            inner, self._inner = self._inner, None
            inner.connectionLost(reason)
        elif not self.ready.called:
            self.ready.errback(ProxyError(
                f"proxy {self._endpoint.proxy.describe()} closed the connection before answering "
                f"CONNECT to {self._endpoint.target}: {reason.getErrorMessage()}"))


class _TunnelFactory(Factory):
    noisy = False

    def __init__(self, endpoint: TunnelingEndpoint, factory: IProtocolFactory):
        self._endpoint = endpoint
        self._factory = factory

    def buildProtocol(self, addr: Any) -> _Tunnel:
        return _Tunnel(self._endpoint, self._factory)

    # the wrapped factory is started and stopped with this one (as the
    # standard endpoints do for theirs)
    def startFactory(self) -> None:
        self._factory.doStart()

    def stopFactory(self) -> None:
        self._factory.doStop()


@implementer(IStreamClientEndpoint)
class TunnelingEndpoint:
    """A connection to `target` (``host:port``) through `proxy`; TLS over the
    tunnel when `creator` (a client connection creator) is given."""

    def __init__(self, reactor: Any, proxy: ProxySetting, target: str, creator: Any | None,
                 timeout: float | None = 30):
        self.reactor = reactor
        self.proxy = proxy
        self.target = target
        self.creator = creator
        self.timeout = timeout

    def __repr__(self) -> str:
        tls = " (TLS)" if self.creator is not None else ""
        return f"<TunnelingEndpoint {self.target}{tls} via proxy {self.proxy.describe()}>"

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred[IProtocol]:
        """Fires with the protocol built by `protocolFactory` once the tunnel
        is open (its TLS handshake, if any, still to come, as with
        ``wrapClientTLS``), or fails with `ProxyError` (or the TCP connection's
        own error). Cancelling closes the connection to the proxy."""
        kwargs = {} if self.timeout is None else {"timeout": self.timeout}
        tcp = HostnameEndpoint(self.reactor, self.proxy.host, self.proxy.port, **kwargs)
        connecting = tcp.connect(_TunnelFactory(self, protocolFactory))
        # while the tunnel is asked for, cancelling this one cancels `ready`
        return connecting.addCallback(lambda tunnel: tunnel.ready)


@implementer(IAgentEndpointFactory)
class TunnelingEndpointFactory:
    """`Agent.usingEndpointFactory`'s endpoints through an HTTP proxy: a
    CONNECT tunnel for both schemes, TLS (from `contextFactory`, an
    `IPolicyForHTTPS`) over the tunnel for ``https``. `timeout` bounds the
    TCP connection to the proxy and, separately, the wait for its answer."""

    def __init__(self, reactor: Any, proxy: ProxySetting, contextFactory: IPolicyForHTTPS | None = None,
                 timeout: float | None = 30):
        self._reactor = reactor
        self._proxy = proxy
        self._policy = contextFactory if contextFactory is not None else BrowserLikePolicyForHTTPS()
        self._timeout = timeout

    def endpointForURI(self, uri: Any) -> TunnelingEndpoint:
        try:
            host = uri.host.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"the host of {uri.toBytes()!r} is not ASCII")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if uri.scheme == b"http":
            creator = None
        elif uri.scheme == b"https":
            creator = self._policy.creatorForNetloc(uri.host, uri.port)
        else:
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        return TunnelingEndpoint(self._reactor, self._proxy, _authority(host, uri.port), creator, self._timeout)


def make_agent(reactor: Any, pool: HTTPConnectionPool | None, proxy: ProxySetting | None,
               tls_policy: IPolicyForHTTPS | None = None) -> Agent:
    """The site client's `Agent`: direct, or through `proxy`; `tls_policy`
    (default: the platform's roots, hostname checked) for ``https`` sites."""
    policy = tls_policy if tls_policy is not None else BrowserLikePolicyForHTTPS()
    if proxy is None:
        return Agent(reactor, contextFactory=policy, pool=pool)
    return Agent.usingEndpointFactory(reactor, TunnelingEndpointFactory(reactor, proxy, policy), pool=pool)


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL)


def tls_policy(ca_file: str | None) -> IPolicyForHTTPS:
    """The site's TLS policy: the platform's trusted roots (None), or only the
    PEM CA certificates of `ca_file`; the hostname is checked either way.
    `ValueError` (one line) when the file cannot be read or holds no
    certificate."""
    if ca_file is None:
        return BrowserLikePolicyForHTTPS()
    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    try:
        with open(ca_file, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise ValueError(f"CA file {ca_file!r}: cannot be read ({e.strerror or e})") from None
    certificates = []
    for number, block in enumerate(_PEM_CERT.findall(data), 1):
        try:
            certificates.append(Certificate.loadPEM(block))
        except Exception as e:
            raise ValueError(f"CA file {ca_file!r}: certificate {number} is not valid PEM ({clip(e, 100)})") from None
    if not certificates:
        raise ValueError(f"CA file {ca_file!r}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")
    return BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(certificates))
