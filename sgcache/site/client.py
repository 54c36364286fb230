"""The upstream Shotgun site, as seen from the daemon: one pooled `treq`
client used for both forwarding client requests unchanged (`forward`) and
the cache's own calls with its own credentials (`call`).

Upstream trouble never becomes a gateway status that the client would retry:
`forward` turns connection failures and 502/504 answers into a Shotgun fault
for every method but `read`/`info`-style idempotent ones (see
`IDEMPOTENT_METHODS`), since a write that reached the site must not be
applied twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Any

import treq
from hyperlink import EncodedURL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet import defer
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from sgcache.site.faults import ERR_AUTH, ERR_UPSTREAM, Fault
from sgcache.site.health import SiteHealth
from sgcache.logs import clip, logger

log = logger(__name__)

#: Methods whose repetition is harmless: a 502/504 from upstream may reach the
#: client unchanged (it retries them).
IDEMPOTENT_METHODS = frozenset(
    [
        "info",
        "read",
        "summarize",
        "schema_read",
        "schema_entity_read",
        "schema_field_read",
        "query_display_name_cache",
        "note_thread_contents",
        "activity_stream",
        "followers",
        "following",
        "preferences_read",
        "work_schedule_read",
    ]
)

#: Request headers not forwarded (hop-by-hop, or recomputed by treq).
DROP_REQUEST_HEADERS = {
    b"host",
    b"content-length",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"te",
    b"upgrade",
    b"proxy-connection",
    b"accept-encoding",
}
DROP_RESPONSE_HEADERS = {
    b"content-length",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
    b"content-encoding",
}


def forwarded_headers(headers: Headers) -> Headers:
    """A client's request headers as the site gets them (hop-by-hop ones
    left out)."""
    out = Headers()
    for name, values in headers.getAllRawHeaders():
        if name.lower() not in DROP_REQUEST_HEADERS:
            out.setRawHeaders(name, values)
    return out


def is_origin_form(target: bytes) -> bool:
    """An origin-form request-target (RFC 9112 3.2.1): an absolute path and
    query, in printable ASCII. Only these are relayed: anything else
    (``.evil.net/x``, ``:8080/x``, ``http://other/x``, ``*``) appended to the
    site's URL could name another host or port."""
    return target.startswith(b"/") and all(0x20 < byte < 0x7F for byte in target)


class _NoCookies(IndexableCookieJar):
    """A cookie jar that keeps nothing. The daemon's one HTTP client carries
    every client's requests; a cookie the site sets in answer to one client
    (a web login through the relay) must never ride along on another's."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Any) -> None:
        pass


class UpstreamError(Exception):
    """The upstream could not be reached or answered with an HTTP error."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, list[bytes]]]
    body: bytes

    def content_type(self) -> bytes:
        for name, values in self.headers:
            if name.lower() == b"content-type" and values:
                return values[0]
        return b"application/json"


class Upstream:
    """A pooled HTTP client for one Shotgun site."""

    def __init__(
        self,
        reactor: Any,
        base_url: str,
        script_name: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        pool: HTTPConnectionPool | None = None,
        http: Any = None,
    ):
        self.reactor = reactor
        self.set_base_url(base_url)
        self.script_name = script_name
        self.api_key = api_key
        self.timeout = timeout
        self.pool = pool or HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.pool.retryAutomatically = False
        #: a treq HTTPClient (tests pass treq.testing.StubTreq)
        self.http = http or HTTPClient(Agent(reactor, pool=self.pool), cookiejar=_NoCookies())
        #: the cache's own requests in flight (`call`), and whether they are
        #: being abandoned because the daemon stops
        self._calls: set[defer.Deferred] = set()
        self._abandoning = False
        #: whether the site answers (every request tells)
        self.health = SiteHealth(reactor)

    def set_base_url(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_url = self.base_url + "/api3/json"
        self._origin = _origin(self.base_url)

    async def close(self) -> None:
        await self.pool.closeCachedConnections()

    def abandon_calls(self) -> None:
        """Cancel the cache's own requests in flight and refuse new ones:
        the daemon is stopping and should not wait up to `timeout` for a
        slow site. They are reads (events, entities, counts) and nothing is
        written from half of one: the event cursor and scan progress only
        move with what was applied. Clients' requests (`forward`) are left
        alone: a write in flight may be applied by the site either way."""
        self._abandoning = True
        for d in list(self._calls):
            d.cancel()

    # -- raw requests ------------------------------------------------------
    async def request(
        self, method: str, url: str, body: bytes | None, headers: Headers | None
    ) -> UpstreamResponse:
        try:
            response = await self.http.request(
                method,
                url,
                data=body,
                headers=headers,
                reactor=self.reactor,
                timeout=self.timeout,
                allow_redirects=False,
            )
            content = await treq.content(response)
        except defer.CancelledError:
            if self._abandoning:
                raise UpstreamError(f"request to {self.base_url} abandoned: sgcache is stopping")
            message = f"upstream {self.base_url} did not answer within {self.timeout:g}s"
            self.health.failed("timeout", message)
            raise UpstreamError(message)
        except Exception as e:  # connection refused, reset, DNS, TLS...
            message = f"upstream {self.base_url} unreachable: {e.__class__.__name__}: {e}"
            self.health.failed("connect", message)
            raise UpstreamError(message)
        self.health.answered(response.code)
        headers_out = [
            (name, values)
            for name, values in response.headers.getAllRawHeaders()
            if name.lower() not in DROP_RESPONSE_HEADERS
        ]
        return UpstreamResponse(response.code, headers_out, content)

    async def relay(self, verb: str, target: bytes, body: IO[bytes] | None, request_headers: Headers) -> IResponse:
        """Send a non-RPC request (upload, thumbnail, file serving) to the
        site: `target` is the client's origin-form request-target, appended
        to the site's URL; `body` a file read as it is sent. The response
        comes back unbuffered (its body is the caller's to deliver).

        Raises ValueError for a target that is not origin-form or that would
        leave the site's scheme, host and port; UpstreamError when the site
        cannot be reached."""
        if not is_origin_form(target):
            raise ValueError("the request-target is not an absolute path")
        url = self.base_url + target.decode("ascii")
        if _origin(url) != self._origin:
            raise ValueError("the request-target leaves the site")
        try:
            return await self.http.request(
                verb, url, data=None if body is None else FileBodyProducer(body),
                headers=forwarded_headers(request_headers),
                reactor=self.reactor, timeout=self.timeout, allow_redirects=False, unbuffered=True,
            )
        except defer.CancelledError:
            raise UpstreamError(f"upstream {self.base_url} did not answer within {self.timeout:g}s")
        except Exception as e:
            raise UpstreamError(f"upstream {self.base_url} unreachable: {e.__class__.__name__}: {e}")

    async def forward(self, method_name: str, body: bytes, request_headers: Headers, path: str = "/api3/json") -> UpstreamResponse:
        """Send a client's RPC body upstream unchanged; return what came back.

        Raises `Fault` (never a gateway status) when the upstream is down,
        or when it answered 502/504 to a non-idempotent method.
        """
        headers = forwarded_headers(request_headers)
        method_name = clip(method_name, 80)  # a client's text, in logs and faults
        try:
            response = await self.request("POST", self.base_url + path, body, headers)
        except UpstreamError as e:
            log.warn("passthrough of {method} failed: {error}", method=method_name, error=str(e))
            raise Fault(
                f"sgcache: the Shotgun site is unreachable ({e}); the {method_name} request was not answered",
                ERR_UPSTREAM,
            )
        if response.status in (502, 504) and method_name not in IDEMPOTENT_METHODS:
            log.warn(
                "upstream answered {status} to {method}; reported as a fault so the client does not retry it",
                status=response.status,
                method=method_name,
            )
            raise Fault(
                f"sgcache: the Shotgun site answered HTTP {response.status} to {method_name}; "
                "it may or may not have been applied",
                ERR_UPSTREAM,
            )
        return response

    # -- the cache's own calls -----------------------------------------------
    def auth_params(self) -> dict[str, Any]:
        return {"script_name": self.script_name, "script_key": self.api_key}

    async def call(self, method_name: str, args: Any = None, auth: dict | None = None) -> Any:
        """One RPC with the cache's own credentials; returns `results`.

        Raises `Fault` for a Shotgun fault body, `UpstreamError` for transport
        trouble and HTTP errors.
        """
        if method_name == "info":
            params: list[Any] = []
        else:
            params = [auth if auth is not None else self.auth_params()]
            if args is not None:
                params.append(args)
        payload = json.dumps({"method_name": method_name, "params": params}).encode("utf-8")
        headers = Headers({b"content-type": [b"application/json; charset=utf-8"]})
        if self._abandoning:
            raise UpstreamError(f"request to {self.base_url} abandoned: sgcache is stopping")
        sending = defer.ensureDeferred(self.request("POST", self.api_url, payload, headers))
        self._calls.add(sending)
        try:
            response = await sending
        finally:
            self._calls.discard(sending)
        if response.status >= 300:
            raise UpstreamError(
                f"upstream answered HTTP {response.status} to {method_name}", response.status
            )
        try:
            decoded = json.loads(response.body) if response.body else None
        except ValueError:
            raise UpstreamError(f"upstream answered {method_name} with a body that is not JSON")
        if isinstance(decoded, dict) and decoded.get("exception"):
            raise Fault(str(decoded.get("message")), int(decoded.get("error_code") or 0))
        if isinstance(decoded, dict) and "results" in decoded:
            return decoded["results"]
        return decoded


def is_auth_fault(error: BaseException) -> bool:
    return isinstance(error, Fault) and error.error_code == ERR_AUTH


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, as the HTTP client will read it."""
    parsed = EncodedURL.from_text(url)
    return parsed.scheme.lower(), parsed.host.lower(), parsed.port
