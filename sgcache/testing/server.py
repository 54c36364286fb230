"""The Shotgun emulator's HTTP face: JSON-RPC at ``POST [prefix]/api3/json``
and, in test mode, the control endpoints ``POST /_emulator/<action>``.

Routes are thin: parse the envelope, apply the transport-level test knobs
(throttle, latency, injected failures, counters and transport figures), call
`Emulator.call`, render JSON. Requests are served concurrently: the latency
wait is a timer per request, and nothing else yields to the reactor.
Every refusal is a Shotgun fault body with HTTP 200; a malformed request
never produces a traceback page. Control actions are listed in
`EmulatorServer.CONTROL_ACTIONS` and documented in docs/emulator.md.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from typing import Any, Callable

from klein import Klein
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IRequest

from sgcache.site import faults
from sgcache.site.faults import Fault
from sgcache.logs import clip
from sgcache.testing.emulator import Emulator

log = Logger()

#: Responses at least this large are gzipped when the client accepts it.
GZIP_THRESHOLD = 4096


#: methods that change nothing: with ``includes_work`` their latency is the
#: response time (see `Emulator.set_latency`)
RESPONSE_TIMED = frozenset({"info", "read", "summarize", "text_search", "schema_read", "schema_entity_read",
                            "schema_field_read"})

class EmulatorServer:
    """The Klein app serving one `Emulator`."""

    app = Klein()

    def __init__(self, emulator: Emulator, reactor: IReactorTime, test_mode: bool = False):
        self.emulator = emulator
        self.reactor = reactor
        self.test_mode = test_mode

    def resource(self) -> Any:
        return self.app.resource()

    # -- JSON-RPC ----------------------------------------------------------
    @app.route("/api3/json", methods=["POST"])
    async def rpc(self, request: IRequest) -> bytes:
        return await self._rpc(request)

    @app.route("/<path:prefix>/api3/json", methods=["POST"])
    async def rpc_prefixed(self, request: IRequest, prefix: str) -> bytes:
        return await self._rpc(request)

    async def _rpc(self, request: IRequest) -> bytes:
        """One RPC: counted, throttled, then served (and measured)."""
        controls = self.emulator.controls
        raw = request.content.read()  # type: ignore[attr-defined]
        controls.bytes_in += len(raw)
        try:
            method, params = self._parse(request, raw)
        except Fault as fault:
            controls.count("<invalid>")
            return self._sent(request, self._json(request, fault.to_wire()))
        controls.count(method)
        if controls.should_throttle():
            controls.throttled += 1
            log.debug("throttling a {method} request", method=clip(method, 80))
            request.setResponseCode(429)
            request.setHeader(b"retry-after", _retry_after(controls.throttle_retry_after))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return self._sent(request, b"emulator: too many requests in flight, retry later\n")
        controls.enter()
        try:
            data = await self._serve(request, method, params)
        finally:
            # Also when cancelled: a dropped connection (or a reset) ends it.
            controls.leave()
        return self._sent(request, data)

    def _sent(self, request: IRequest, data: bytes) -> bytes:
        """Count a response body about to be written."""
        controls = self.emulator.controls
        controls.bytes_out += len(data)
        if b"gzip" in (request.responseHeaders.getRawHeaders(b"content-encoding") or []):  # type: ignore[attr-defined]
            controls.gzipped += 1
        return data

    async def _serve(self, request: IRequest, method: str, params: list) -> bytes:
        controls = self.emulator.controls
        if controls.latency > 0 and controls.latency_includes_work and method in RESPONSE_TIMED:
            # the latency is the response time: answer now, send it later
            due = self.reactor.seconds() + controls.latency
            data = await self._answer(request, method, params)
            await task.deferLater(self.reactor, max(0.0, due - self.reactor.seconds()), lambda: None)
            return data
        if controls.latency > 0:
            await task.deferLater(self.reactor, controls.latency, lambda: None)
        return await self._answer(request, method, params)

    async def _answer(self, request: IRequest, method: str, params: list) -> bytes:
        controls = self.emulator.controls
        plan = controls.take_failure(method)
        if plan is not None:
            if plan.reset:
                log.debug("resetting the connection of a {method} request", method=method)
                request.transport.abortConnection()  # type: ignore[attr-defined]
                # Never answered; Klein cancels this when the connection drops.
                return await defer.Deferred()
            log.debug("failing a {method} request with HTTP {status}", method=method, status=plan.status)
            request.setResponseCode(plan.status)
            if plan.retry_after is not None:
                request.setHeader(b"retry-after", _retry_after(plan.retry_after))
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"emulator: injected failure {plan.status}\n".encode()
        try:
            result = self.emulator.call(method, params)
        except Fault as fault:
            log.debug("{method} refused: {message}", method=clip(method, 80), message=clip(fault.message, 300))
            return self._json(request, fault.to_wire())
        except Exception:
            log.failure("emulator error in {method}", method=clip(method, 80))
            return self._json(request, Fault(f"API {method}() internal error in the emulator").to_wire())
        body = result if method == "info" else {"results": result}
        return self._json(request, body)

    def _parse(self, request: IRequest, raw: bytes) -> tuple[str, list]:
        encoding = (request.getHeader(b"content-encoding") or b"").lower()
        if encoding in (b"gzip", b"deflate"):
            try:
                raw = gzip.decompress(raw) if encoding == b"gzip" else zlib.decompress(raw)
            except (OSError, EOFError, zlib.error):
                raise Fault("request body is not valid " + encoding.decode(), faults.ERR_BAD_REQUEST) from None
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise Fault("request body is not valid JSON", faults.ERR_BAD_REQUEST) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("method_name"), str):
            raise Fault("request must be a JSON object with a string 'method_name'", faults.ERR_BAD_REQUEST)
        params = payload.get("params", [])
        if not isinstance(params, list):
            raise Fault("'params' must be a list", faults.ERR_BAD_REQUEST)
        return payload["method_name"], params

    def _json(self, request: IRequest, body: Any) -> bytes:
        try:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (echoed in a fault): escaped
            data = json.dumps(body, separators=(",", ":")).encode("ascii")
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        accept = (request.getHeader(b"accept-encoding") or b"").lower()
        if len(data) >= GZIP_THRESHOLD and b"gzip" in accept:
            data = gzip.compress(data, compresslevel=1)
            request.setHeader(b"content-encoding", b"gzip")
        return data

    # -- test controls -----------------------------------------------------
    @app.route("/_emulator/<action>", methods=["POST", "GET"])
    def control(self, request: IRequest, action: str) -> bytes:
        return self._control(request, action)

    @app.route("/<path:prefix>/_emulator/<action>", methods=["POST", "GET"])
    def control_prefixed(self, request: IRequest, prefix: str, action: str) -> bytes:
        return self._control(request, action)

    def _control(self, request: IRequest, action: str) -> bytes:
        if not self.test_mode or action not in self.CONTROL_ACTIONS:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"not found\n"
        try:
            raw = request.content.read() or b"{}"  # type: ignore[attr-defined]
            try:
                args = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise Fault("control request body is not valid JSON", faults.ERR_BAD_REQUEST) from None
            if not isinstance(args, dict):
                raise Fault("control request body must be a JSON object", faults.ERR_BAD_REQUEST)
            result = self.CONTROL_ACTIONS[action](self.emulator, args)
        except Fault as fault:
            request.setResponseCode(400)
            return self._json(request, fault.to_wire())
        except (TypeError, ValueError, KeyError) as e:
            request.setResponseCode(400)
            return self._json(request, Fault(f"bad arguments for {action}: {e}", faults.ERR_BAD_REQUEST).to_wire())
        log.info("emulator control {action}", action=action)
        return self._json(request, {"ok": True, "result": result})

    CONTROL_ACTIONS: dict[str, Callable[[Emulator, dict], Any]] = {
        "reset": lambda em, a: em.reset(keep_schema=bool(a.get("keep_schema", False))),
        "seed": lambda em, a: em.seed(a.get("entities", []), events=bool(a.get("events", False)),
                                      script=a.get("script")),
        "latency": lambda em, a: em.set_latency(a.get("seconds", 0), bool(a.get("includes_work", False))),
        "fail": lambda em, a: em.fail_next(a.get("count", 1), a.get("status", 500),
                                           bool(a.get("reset", False)), a.get("methods"),
                                           retry_after=a.get("retry_after")),
        "throttle": lambda em, a: em.set_throttle(a["max_in_flight"], a.get("retry_after", 1)),
        "counters": lambda em, a: _counters(em, bool(a.get("reset", False)), bool(a.get("figures", True))),
        "hold_events": lambda em, a: em.hold_events(a.get("ids", []), a.get("count", 0)),
        "release_events": lambda em, a: em.release_events(a.get("ids")),
        "skip_event_ids": lambda em, a: em.skip_event_ids(a.get("count", 1)),
        "truncate_events": lambda em, a: em.truncate_events(int(a["below"])),
        "generate_events": lambda em, a: em.set_generate_events(a.get("enabled", True)),
        "clock": lambda em, a: _clock(em, a),
        "create_field": lambda em, a: em.create_field(a["entity_type"], a["name"], a["data_type"],
                                                      a.get("properties"), script=a.get("script")),
        "update_field": lambda em, a: em.update_field(a["entity_type"], a["field_name"], a.get("properties") or {},
                                                      script=a.get("script")),
        "delete_field": lambda em, a: em.delete_field(a["entity_type"], a["field_name"], script=a.get("script")),
        "change_field_type": lambda em, a: em.change_field_type(
            a["entity_type"], a["field_name"], a["data_type"], convert=a.get("convert"),
            properties=a.get("properties"), values=a.get("values"), script=a.get("script")),
        "column_id": lambda em, a: em.column_id(a["entity_type"], a["field_name"]),
    }


def _retry_after(seconds: float) -> bytes:
    """A ``Retry-After`` value: whole seconds, rounded up."""
    return str(math.ceil(seconds)).encode()


def _counters(emulator: Emulator, reset: bool, figures: bool) -> dict[str, int]:
    counts = emulator.counters(figures=figures)
    if reset:
        emulator.reset_counters()
    return counts


def _clock(emulator: Emulator, args: dict) -> str:
    if "now" in args:
        emulator.set_clock(args["now"])
    if args.get("advance"):
        emulator.advance_clock(float(args["advance"]))
    return emulator.now().strftime("%Y-%m-%dT%H:%M:%SZ")
