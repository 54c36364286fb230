"""The JSON-RPC endpoint clients talk to: ``POST [prefix]/api3/json``.

Routes are thin: parse the envelope, then hand the call to `Cache`
(`sgcache.cache`) which answers locally or passes it through. Every other
path (uploads, thumbnails, file serving) is forwarded to the site as it is.
No request ever gets a traceback: bad input becomes a Shotgun fault.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from klein import Klein
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from .faults import ERR_BAD_REQUEST, Fault
from .logs import logger

log = logger(__name__)

API_SUFFIX = b"/api3/json"


JSON_CONTENT_TYPE = b"application/json; charset=utf-8"


def encode_json(payload: Any) -> bytes:
    """The bytes of a JSON answer."""
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def _json_body(request: IRequest, payload: Any) -> bytes:
    request.setHeader(b"content-type", JSON_CONTENT_TYPE)
    return encode_json(payload)


def parse_envelope(body: bytes, content_encoding: bytes | None = None) -> tuple[str, Any, Any]:
    """Return (method_name, auth, args) of an RPC body, or raise Fault."""
    if content_encoding and b"gzip" in content_encoding.lower():
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            raise Fault("request body is not valid gzip", ERR_BAD_REQUEST)
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Fault("request body is not valid JSON", ERR_BAD_REQUEST)
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

    def __init__(self, cache: Any):
        self.cache = cache

    def resource(self) -> Any:
        return self.app.resource()

    @app.route("/", branch=True, methods=["POST"])
    async def post(self, request: IRequest) -> bytes:
        if not request.path.rstrip(b"/").endswith(API_SUFFIX):
            return await self._forward_other(request)
        body = request.content.read()
        try:
            method, auth, args = parse_envelope(
                body, request.getHeader(b"content-encoding")
            )
        except Fault as fault:
            log.info("refused a malformed request: {message}", message=fault.message)
            return _json_body(request, fault.to_wire())
        try:
            reply = await self.cache.handle(method, auth, args, body, request.requestHeaders)
        except Fault as fault:
            return _json_body(request, fault.to_wire())
        except Exception:
            log.failure("unexpected error answering {method}", method=method)
            fault = Fault(f"sgcache: internal error answering {method}; see the service log", 500)
            return _json_body(request, fault.to_wire())
        if isinstance(reply, RawReply):
            request.setResponseCode(reply.status)
            for name, values in reply.headers:
                request.responseHeaders.setRawHeaders(name, values)
            return reply.body
        return _json_body(request, reply)

    @app.route("/", branch=True, methods=["GET", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"])
    async def other(self, request: IRequest) -> bytes:
        return await self._forward_other(request)

    async def _forward_other(self, request: IRequest) -> bytes:
        """Forward a non-RPC request (upload, thumbnail, file serve...)."""
        try:
            response = await self.cache.forward_http(
                request.method.decode("ascii"),
                request.uri.decode("latin-1"),
                request.content.read(),
                request.requestHeaders,
            )
        except Fault as fault:
            request.setResponseCode(503)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return fault.message.encode("utf-8")
        request.setResponseCode(response.status)
        for name, values in response.headers:
            request.responseHeaders.setRawHeaders(name, values)
        return response.body


class RawReply:
    """An answer already encoded: relayed from upstream byte for byte, or
    read locally."""

    def __init__(self, status: int, headers: list[tuple[bytes, list[bytes]]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body


__all__ = ["RPCResource", "RawReply", "parse_envelope", "encode_json", "JSON_CONTENT_TYPE", "Headers"]
