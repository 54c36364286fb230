"""The upstream Shotgun site, as seen from the daemon: one pooled HTTP
client used for both forwarding client requests unchanged (`forward`,
`relay`) and the cache's own calls with its own credentials (`call`).

Every request goes through the site gate (`sgcache.site.gate`): one limit
on requests at the site at once, clients first, and a pause when the site
throttles. The cache's own calls ask for gzip and inflate it (`treq`);
clients' requests carry their own ``Accept-Encoding`` and get the site's
bytes as sent, compressed or not (`_RawHTTP`).

Upstream trouble never becomes a gateway status that the client would retry:
`forward` turns connection failures and 502/504 answers into a Shotgun fault
for every method but `read`/`info`-style idempotent ones (see
`IDEMPOTENT_METHODS`), since a write that reached the site must not be
applied twice.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass
from typing import IO, Any

import treq
from hyperlink import EncodedURL
from treq.client import HTTPClient
from treq.cookies import IndexableCookieJar
from twisted.internet import defer
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse

from sgcache.site.gate import CLIENT, SYNC, SiteGate, retry_after

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
}
DROP_RESPONSE_HEADERS = {
    b"content-length",
    b"connection",
    b"keep-alive",
    b"transfer-encoding",
}
#: statuses by which a site throttles (with Retry-After for 503)
THROTTLE_STATUSES = (429, 503)
#: times one of the cache's own calls is sent again after a throttled answer
THROTTLE_RETRIES = 8
#: the longest inflated body of one of the cache's own calls, or of a
#: passed-through answer the cache inspects (write-back, credentials)
MAX_INFLATED = 1 << 30


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
    #: the body as the site sent it (compressed when it said so)
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        for key, values in self.headers:
            if key.lower() == name and values:
                return values[0]
        return None

    def content_type(self) -> bytes:
        return self.header(b"content-type") or b"application/json"

    def decoded(self) -> bytes:
        """The body, inflated when the site gzipped it (for the cache's own
        look at a passed-through answer); raises ValueError when it cannot
        be inflated."""
        encoding = (self.header(b"content-encoding") or b"").strip().lower()
        if encoding in (b"", b"identity"):
            return self.body
        if encoding not in (b"gzip", b"x-gzip", b"deflate"):
            raise ValueError(f"unknown content-encoding {encoding!r}")
        try:
            if encoding == b"deflate":
                inflater = zlib.decompressobj()
            else:
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = inflater.decompress(self.body, MAX_INFLATED)
        except zlib.error as e:
            raise ValueError(f"body is not valid {encoding.decode()}: {e}") from None
        if inflater.unconsumed_tail:
            raise ValueError("inflated body too large")
        return out


class _RawHTTP:
    """Requests through an `Agent` whose answers come back as the site sent
    them: no decoding (treq's client inflates gzip and asks for it), no
    cookies. The subset of treq's ``request`` that `Upstream` uses."""

    def __init__(self, agent: Any, reactor: Any):
        self.agent = agent
        self.reactor = reactor

    def request(self, method: str, url: str, data: Any = None, headers: Headers | None = None,
                timeout: float | None = None, **_: Any) -> defer.Deferred:
        if data is None or IBodyProducer.providedBy(data):
            producer = data
        else:
            producer = FileBodyProducer(io.BytesIO(data))
        d = self.agent.request(method.encode("ascii"), url.encode("ascii"), headers or Headers(), producer)
        if timeout:
            d.addTimeout(timeout, self.reactor)
        return d


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
        gate: SiteGate | None = None,
        agent: Any = None,
    ):
        self.reactor = reactor
        self.set_base_url(base_url)
        self.script_name = script_name
        self.api_key = api_key
        self.timeout = timeout
        self.pool = pool or HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 16
        self.pool.retryAutomatically = False
        agent = agent if agent is not None else Agent(reactor, pool=self.pool)
        #: a treq HTTPClient for the cache's own calls (gzip asked for and
        #: inflated; tests pass treq.testing.StubTreq)
        self.http = http or HTTPClient(agent, cookiejar=_NoCookies())
        #: clients' requests: the site's bytes as sent
        self.raw = http or _RawHTTP(agent, reactor)
        #: requests at the site at once, and the site's throttling
        self.gate = gate or SiteGate(reactor)
        #: the proxy the site is reached through (`make_upstream`)
        self.proxy: Any = None
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
        self, method: str, url: str, body: bytes | None, headers: Headers | None, raw: bool = False
    ) -> UpstreamResponse:
        """One request; `raw`: a client's, its answer's bytes as sent."""
        client = self.raw if raw else self.http
        try:
            response = await client.request(
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

    def _throttled(self, status: int, headers: Any) -> float | None:
        """Seconds the site asks to wait (429, or 503 with Retry-After),
        the gate paused for them; None for any other answer."""
        delay = retry_after(headers, self.reactor.seconds()) if status in THROTTLE_STATUSES else None
        if delay is None and status == 429:
            delay = 1.0
        if delay is None:
            if status < 500:
                self.gate.answered()
            return None
        self.gate.pause(delay)
        return delay

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
        await self.gate.acquire(CLIENT)
        try:
            response = await self.raw.request(
                verb, url, data=None if body is None else FileBodyProducer(body),
                headers=forwarded_headers(request_headers),
                reactor=self.reactor, timeout=self.timeout, allow_redirects=False, unbuffered=True,
            )
        except defer.CancelledError:
            raise UpstreamError(f"upstream {self.base_url} did not answer within {self.timeout:g}s")
        except Exception as e:
            raise UpstreamError(f"upstream {self.base_url} unreachable: {e.__class__.__name__}: {e}")
        finally:
            # the slot covers the wait for the answer's head; its body
            # streams at the client's pace
            self.gate.release(CLIENT)
        self._throttled(response.code, response.headers)
        return response

    async def forward(self, method_name: str, body: bytes, request_headers: Headers, path: str = "/api3/json") -> UpstreamResponse:
        """Send a client's RPC body upstream unchanged; return what came back.

        Raises `Fault` (never a gateway status) when the upstream is down,
        or when it answered 502/504 to a non-idempotent method.
        """
        headers = forwarded_headers(request_headers)
        method_name = clip(method_name, 80)  # a client's text, in logs and faults
        await self.gate.acquire(CLIENT)
        try:
            response = await self.request("POST", self.base_url + path, body, headers, raw=True)
        except UpstreamError as e:
            log.warn("passthrough of {method} failed: {error}", method=method_name, error=str(e))
            raise Fault(
                f"sgcache: the Shotgun site is unreachable ({e}); the {method_name} request was not answered",
                ERR_UPSTREAM,
            )
        finally:
            self.gate.release(CLIENT)
        # the client gets the throttled answer as is (its own retry rules);
        # the cache's own traffic waits as asked
        self._throttled(response.status, response.headers)
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

    def with_lane(self, lane: str) -> "LanedUpstream":
        """This upstream, its `call`s in `lane` of the gate (scans: ``scan``)."""
        return LanedUpstream(self, lane)

    async def call(self, method_name: str, args: Any = None, auth: dict | None = None, lane: str = SYNC) -> Any:
        """One RPC with the cache's own credentials; returns `results`.
        It waits for a slot of `lane` at the gate; a throttled answer (429,
        503 with Retry-After) pauses the gate and the call is sent again
        once the site's wait is over (up to `THROTTLE_RETRIES` times).

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
        attempt = 0
        while True:
            if self._abandoning:
                raise UpstreamError(f"request to {self.base_url} abandoned: sgcache is stopping")
            sending = defer.ensureDeferred(self._gated(lane, payload, headers))
            self._calls.add(sending)
            try:
                response = await sending
            finally:
                self._calls.discard(sending)
            delay = self._throttled(response.status, response.headers)
            if delay is None:
                break
            attempt += 1
            if attempt > THROTTLE_RETRIES:
                raise UpstreamError(
                    f"upstream throttled {method_name} {attempt} times in a row (HTTP {response.status})",
                    response.status,
                )
            log.info("the site throttled {method} (HTTP {status}); sending it again in {delay:.1f}s",
                     method=method_name, status=response.status, delay=delay)
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

    async def _gated(self, lane: str, payload: bytes, headers: Headers) -> UpstreamResponse:
        await self.gate.acquire(lane)
        try:
            return await self.request("POST", self.api_url, payload, headers)
        finally:
            self.gate.release(lane)


class LanedUpstream:
    """An `Upstream` whose `call`s go in one lane of the site gate; every
    other attribute is the upstream's."""

    def __init__(self, upstream: Upstream, lane: str):
        self._upstream = upstream
        self._lane = lane

    def call(self, method_name: str, args: Any = None, auth: dict | None = None) -> Any:
        return self._upstream.call(method_name, args, auth, lane=self._lane)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)


def is_auth_fault(error: BaseException) -> bool:
    return isinstance(error, Fault) and error.error_code == ERR_AUTH


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, as the HTTP client will read it."""
    parsed = EncodedURL.from_text(url)
    return parsed.scheme.lower(), parsed.host.lower(), parsed.port


def make_upstream(reactor: Any, settings: dict[str, Any]) -> Upstream:
    """The daemon's (or a CLI command's) `Upstream` from its settings: the
    site, the cache's credentials, ``--shotgun-proxy``,
    ``--shotgun-ca-file`` and ``--site-max-concurrency``. Raises
    ValueError (one line) for a proxy or CA file that cannot be used."""
    from sgcache.site import proxy as proxies  # its TLS imports only when used

    pool = HTTPConnectionPool(reactor, persistent=True)
    setting = settings.get("shotgun_proxy")
    through = proxies.parse_proxy(setting) if setting else None
    policy = proxies.tls_policy(settings.get("shotgun_ca_file"))
    agent = proxies.make_agent(reactor, pool, through, policy)
    gate = SiteGate(reactor, settings.get("site_max_concurrency") or 8)
    upstream = Upstream(reactor, settings["shotgun"], settings.get("script_name"), settings.get("api_key"),
                        pool=pool, gate=gate, agent=agent)
    upstream.proxy = through
    return upstream
