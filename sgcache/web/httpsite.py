"""The daemon's HTTP site: what reaches the endpoint (`sgcache.web.rpc`) at all.

* Only origin-form request-targets (an absolute path and query) are served:
  anything else (``.evil.net/x``, ``http://other/x``, ``*``) is answered 400
  here, before any resource sees it.
* Request bodies are held to a limit as they arrive (`LimitedRequest`).
  Twisted keeps a body whole (in memory below 100 kB, in a temporary file
  above) and hands the request over once it is complete; `LimitedRequest`
  counts the bytes as they arrive, and a body whose declared length is over
  its limit, or that grows past it, is kept no further (what arrives next is
  dropped, not stored): the request is marked `over_limit` and the endpoint
  answers it with a refusal once it is complete (a Shotgun fault for an RPC,
  413 for a relayed request). The limit depends on the request-target, which
  Twisted knows before the body but only as its channel's private ``_path``
  (``tests/test_httpsite.py`` fails should that change): RPC bodies
  (``.../api3/json``) get `Limits.request_bytes`, anything relayed to the
  site `Limits.relay_bytes`.
* One access-log line per request only when an access log is configured.
* POST bodies are never parsed as forms.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from sgcache.lifecycle import Connections
from sgcache.web.rpc import API_SUFFIX, Limits
from sgcache.site.client import is_origin_form


class LimitedRequest(Request):
    """A `Request` whose body is kept only up to its limit."""

    #: set on a subclass by `limited_request`
    limits = Limits()
    #: the body went over its limit (and is not kept)
    over_limit = False
    _received = 0
    _body_limit: int | None = None

    def _limit_for_target(self) -> int | None:
        target = getattr(self.channel, "_path", None)
        if not isinstance(target, bytes):
            # unknown: hold it to the smaller limit
            return self.limits.request_bytes
        path = target.split(b"?", 1)[0].rstrip(b"/")
        if path.endswith(API_SUFFIX):
            return self.limits.request_bytes
        return self.limits.relay_bytes

    def gotLength(self, length: int | None) -> None:
        self._body_limit = self._limit_for_target()
        if length is not None and self._body_limit is not None and length > self._body_limit:
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.over_limit:
            return
        self._received += len(data)
        if self._body_limit is not None and self._received > self._body_limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def _refuse(self) -> None:
        self.over_limit = True
        content = getattr(self, "content", None)
        if content is not None:
            content.close()
        self.content = io.BytesIO()


def limited_request(limits: Limits) -> Any:
    """A request factory (for `Site.requestFactory`) holding bodies to `limits`."""
    return type("LimitedRequest", (LimitedRequest,), {"limits": limits})


class _BadTarget(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(400)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"sgcache: the request-target must be an absolute path\n"


class DaemonSite(Site):
    """The endpoint's site: an access-log line per request only when an
    access log file is configured. Twisted's default would put one in the
    daemon's own log for every request -- at farm rates that is most of the
    log, and a tenth of the time of a local read.

    POST bodies are not parsed as forms (``parsePOSTFormSubmission``):
    nothing here reads ``request.args``, uploads are forwarded as the bytes
    they are, and Twisted parses every POST's Content-Type through the
    `email` package to decide whether to -- about a fifth of the daemon's
    CPU per local read (py-spy, find-one loop)."""

    displayTracebacks = False
    noisy = False  # no "Starting factory" lines

    def __init__(self, resource: Any, logPath: str | None = None, limits: Limits = Limits()):
        super().__init__(resource, logPath=logPath, parsePOSTFormSubmission=False)
        self.requestFactory = limited_request(limits)
        #: open connections, cut when the daemon stops (`sgcache.lifecycle`)
        self.connections = Connections()

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            self.connections.add(protocol)
        return protocol

    def getResourceFor(self, request: Any) -> Any:
        if not is_origin_form(request.uri):
            return _BadTarget()
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        if self.logPath:
            super().log(request)
