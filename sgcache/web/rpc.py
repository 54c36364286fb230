"""The JSON-RPC endpoint clients talk to: ``POST [prefix]/api3/json``.

Routes are thin: parse the envelope, then hand the call to `Cache`
(`sgcache.web.dispatch`) which answers locally or passes it through. Every other
path (uploads, thumbnails, file serving) is relayed to the site as it is,
streamed both ways, and only as an origin-form request-target (an absolute
path) to exactly the site's scheme, host and port: anything else gets 400
without touching the site.

No request ever gets a traceback or an HTTP 500 of the daemon's making: bad
input becomes a Shotgun fault. Bodies are held to limits (`Limits`): the raw
body (counted as it arrives, `sgcache.web.httpsite`), the body once inflated
(inflated incrementally, refused as soon as it is over), and JSON nesting.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from typing import Any

from klein import Klein
from twisted.internet import defer, protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from sgcache.site.faults import ERR_BAD_REQUEST, Fault
from sgcache.web.compress import Compressor
from sgcache.logs import clip, logger
from sgcache.site.client import DROP_RESPONSE_HEADERS

log = logger(__name__)

API_SUFFIX = b"/api3/json"

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"

#: deepest JSON nesting of an RPC body (a read's filters nest two levels
#: per group: 100 allows far more groups than the planner serves)
MAX_JSON_DEPTH = 100


@dataclass(frozen=True)
class Limits:
    """What one request may send. `request_bytes`: an RPC body, as sent and
    once inflated; `relay_bytes`: the body of anything relayed to the site
    (uploads; None: no limit)."""

    request_bytes: int = 16 * 2**20
    relay_bytes: int | None = 2 * 2**30
    #: answers the daemon makes are gzipped from this size up for clients
    #: that ask (None: never; ``--gzip-min-kb``)
    gzip_min_bytes: int | None = 16 * 1024


def encode_json(payload: Any) -> bytes:
    """The bytes of a JSON answer (lone surrogates, which UTF-8 cannot
    carry, as ``\\ud800`` escapes: JSON text all the same)."""
    try:
        return json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload).encode("ascii")


def _json_body(request: IRequest, payload: Any) -> bytes:
    request.setHeader(b"content-type", JSON_CONTENT_TYPE)
    return encode_json(payload)


def inflate(body: bytes, limit: int) -> bytes:
    """A gzip body inflated, refused (`Fault`) as soon as it passes `limit`
    bytes: never more than `limit` + 1 bytes are made."""
    out: list[bytes] = []
    made = 0
    rest = body
    try:
        while True:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(rest, limit + 1 - made)
            made += len(chunk)
            out.append(chunk)
            if made > limit or inflater.unconsumed_tail:
                raise Fault(
                    f"request body inflates to more than {limit // 2**20} MB (--max-request-mb)",
                    ERR_BAD_REQUEST,
                )
            if not inflater.eof:
                raise Fault("request body is not valid gzip", ERR_BAD_REQUEST)
            rest = inflater.unused_data
            if not rest:
                return b"".join(out)
    except zlib.error:
        raise Fault("request body is not valid gzip", ERR_BAD_REQUEST) from None


def _too_deep(value: Any, limit: int) -> bool:
    """True when JSON containers nest deeper than `limit` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def parse_envelope(
    body: bytes, content_encoding: bytes | None = None, max_bytes: int = Limits.request_bytes
) -> tuple[str, Any, Any]:
    """Return (method_name, auth, args) of an RPC body, or raise Fault."""
    if content_encoding and b"gzip" in content_encoding.lower():
        body = inflate(body, max_bytes)
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Fault("request body is not valid JSON", ERR_BAD_REQUEST)
    except RecursionError:
        raise Fault(f"request body nests deeper than {MAX_JSON_DEPTH} levels", ERR_BAD_REQUEST)
    # only a body with that many brackets can nest that deep
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and _too_deep(envelope, MAX_JSON_DEPTH):
        raise Fault(f"request body nests deeper than {MAX_JSON_DEPTH} levels", ERR_BAD_REQUEST)
    if not isinstance(envelope, dict):
        raise Fault("request body must be a JSON object", ERR_BAD_REQUEST)
    method = envelope.get("method_name")
    if not isinstance(method, str) or not method:
        raise Fault("request has no method_name", ERR_BAD_REQUEST)
    params = envelope.get("params", [])
    if not isinstance(params, list):
        raise Fault("params must be a list", ERR_BAD_REQUEST)
    auth = params[0] if params else None
    args = params[1] if len(params) > 1 else None
    if method == "info":
        auth, args = None, None
    elif auth is not None and not isinstance(auth, dict):
        raise Fault("the first param must be the authentication mapping", ERR_BAD_REQUEST)
    return method, auth, args


class RPCResource:
    """The Klein app in front of a `Cache`."""

    app = Klein()

    def __init__(self, cache: Any, limits: Limits = Limits()):
        self.cache = cache
        self.limits = limits
        self.compressor = Compressor(limits.gzip_min_bytes)

    def resource(self) -> Any:
        return self.app.resource()

    def _observe(self, method: str, note: dict[str, str], started: float) -> None:
        observe = getattr(self.cache, "observe", None)
        if observe is not None:
            try:
                observe(method, note.get("outcome", "fault"), note.get("reason", ""),
                        time.perf_counter() - started)
            except Exception:
                log.failure("recording a request's metrics failed")

    @app.route("/", branch=True, methods=["POST"])
    async def post(self, request: IRequest) -> bytes:
        if not request.path.rstrip(b"/").endswith(API_SUFFIX):
            return await self._relay(request)
        if getattr(request, "over_limit", False):
            log.info("refused a request body over {mb} MB", mb=self.limits.request_bytes // 2**20)
            fault = Fault(
                f"request body over {self.limits.request_bytes // 2**20} MB (--max-request-mb)", ERR_BAD_REQUEST
            )
            return _json_body(request, fault.to_wire())
        body = request.content.read()
        started = time.perf_counter()
        try:
            method, auth, args = parse_envelope(
                body, request.getHeader(b"content-encoding"), self.limits.request_bytes
            )
        except Fault as fault:
            log.info("refused a malformed request: {message}", message=clip(fault.message))
            self._observe("(malformed)", {"outcome": "fault"}, started)
            return _json_body(request, fault.to_wire())
        note: dict[str, str] = {}
        try:
            reply = await self.cache.handle(method, auth, args, body, request.requestHeaders, note)
        except Fault as fault:
            note["outcome"] = "fault"
            return _json_body(request, fault.to_wire())
        except Exception:
            note["outcome"] = "fault"
            log.failure("unexpected error answering {method}", method=clip(method, 80))
            fault = Fault("sgcache: internal error answering the request; see the service log", 500)
            return _json_body(request, fault.to_wire())
        finally:
            self._observe(method, note, started)
            site = getattr(getattr(self.cache, "upstream", None), "health", None)
            header = site.header() if site is not None else None
            if header is not None:
                request.setHeader(b"x-sgcache-site", header)
        if isinstance(reply, RawReply):
            request.setResponseCode(reply.status)
            for name, values in reply.headers:
                request.responseHeaders.setRawHeaders(name, values)
            if reply.relayed or reply.status != 200:
                return reply.body  # the site's bytes as sent
            return self.compressor.answer(request, reply.body)
        return self.compressor.answer(request, _json_body(request, reply))

    @app.route("/", branch=True, methods=["GET", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"])
    async def other(self, request: IRequest) -> bytes:
        return await self._relay(request)

    async def _relay(self, request: IRequest) -> bytes | None:
        """Relay a non-RPC request (upload, thumbnail, file serve...)."""
        if getattr(request, "over_limit", False):
            return _plain(request, 413, "sgcache: request body over the limit (--max-upload-mb)\n")
        body = request.content
        body.seek(0, 2)
        has_body = body.tell() > 0
        body.seek(0)
        try:
            response = await self.cache.relay(
                request.method.decode("ascii", "replace"), request.uri, body if has_body else None,
                request.requestHeaders,
            )
        except ValueError as e:
            log.info("refused to relay a request: {error}", error=str(e))
            return _plain(request, 400, f"sgcache: bad request-target ({e})\n")
        except Fault as fault:
            return _plain(request, 503, fault.message + "\n")
        except Exception:
            log.failure("unexpected error relaying a request")
            return _plain(request, 502, "sgcache: internal error relaying the request; see the service log\n")
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in DROP_RESPONSE_HEADERS:
                request.responseHeaders.setRawHeaders(name, values)
        await _stream(response, request)
        return None


def _plain(request: IRequest, status: int, text: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text.encode("utf-8")


async def _stream(response: Any, request: IRequest) -> None:
    """Write an upstream response's body to the client as it arrives, the
    upstream paused while the client's connection is full; a client that
    goes away stops it."""
    done: defer.Deferred = defer.Deferred()
    relay = _BodyRelay(request, done)
    gone = request.notifyFinish()
    gone.addErrback(lambda _: relay.client_gone())
    response.deliverBody(relay)
    await done


class _BodyRelay(protocol.Protocol):
    def __init__(self, request: Any, done: defer.Deferred):
        self.request = request
        self.done = done
        self.gone = False

    def connectionMade(self) -> None:
        if not self.gone:
            self.request.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        if not self.gone:
            self.request.write(data)

    def client_gone(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.stopProducing()

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        if not self.gone:
            self.request.unregisterProducer()
            if not reason.check(ResponseDone, PotentialDataLoss):
                # the client must not take a cut-off body for a whole one
                log.info("the site's answer to a relayed request ended early: {reason}",
                         reason=reason.getErrorMessage())
                self.request.channel.transport.abortConnection()
        self.done.callback(None)


class RawReply:
    """An answer already encoded: relayed from upstream byte for byte, or
    read locally."""

    def __init__(self, status: int, headers: list[tuple[bytes, list[bytes]]], body: bytes,
                 relayed: bool = False):
        self.status = status
        self.headers = headers
        self.body = body
        #: the site's answer, to go to the client as the site sent it
        self.relayed = relayed


__all__ = ["RPCResource", "RawReply", "Limits", "parse_envelope", "encode_json", "JSON_CONTENT_TYPE", "Headers"]
