"""The admin listener (``--admin-listen``, by default on 127.0.0.1 only, a
port of its own so clients of the Shotgun endpoint cannot reach it).

Routes:

* ``GET /``: the status page (HTML, refreshes itself; `sgcache.web.statuspage`);
* ``GET /status.json``: the same figures as JSON (info's ``sgcache`` block);
* ``GET /metrics``: Prometheus metrics (`sgcache.web.metrics`);
* ``GET /healthz``: the process is up and its reactor turns (200);
* ``GET /readyz``: 200 when reads are served and the lag is under
  ``--ready-lag-seconds``, 503 with the reason otherwise;
* ``GET /schema/plan``: what a schema reload would do now (nothing changes);
* ``POST /schema/reload``: read the schema file and rules again and apply
  them (what ``sgcache schema reload`` and SIGHUP do);
* ``GET /shadow``: the shadow checks' figures and kept mismatches;
* ``POST /shadow/clear``: forget the confirmed mismatches (``sgcache
  shadow clear``).

A bad schema file or rules file is a 400 with one line; the daemon goes on
with the schema it runs on.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest
from twisted.web.server import Site

from sgcache.logs import logger
from sgcache.schema import SchemaError

log = logger(__name__)


class AdminResource:
    """The Klein app of the admin listener, for one running daemon.

    `daemon` is the `SgcacheService` (duck-typed: ``keeper`` with ``async
    plan()`` / ``async reload(why)``; ``cache.status()``; ``readiness()``;
    ``metrics``, a `sgcache.web.metrics.Metrics`)."""

    app = Klein()

    def __init__(self, daemon: Any):
        self.daemon = daemon

    def resource(self) -> Any:
        return self.app.resource()

    @app.route("/", methods=["GET", "HEAD"])
    def status_page(self, request: IRequest) -> bytes:
        from sgcache.web.statuspage import render

        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return render(self.daemon.status_snapshot())

    @app.route("/status.json", methods=["GET"])
    def status_json(self, request: IRequest) -> bytes:
        return _json(request, 200, self.daemon.status_snapshot())

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        body, content_type = self.daemon.metrics.exposition(request.getHeader(b"accept"))
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        return _json(request, 200, {"ok": True})

    @app.route("/readyz", methods=["GET", "HEAD"])
    def readyz(self, request: IRequest) -> bytes:
        ready, reasons = self.daemon.readiness()
        return _json(request, 200 if ready else 503, {"ready": ready, "reasons": reasons})

    @app.route("/schema/plan", methods=["GET"])
    async def schema_plan(self, request: IRequest) -> bytes:
        return await self._schema(request, "plan")

    @app.route("/schema/reload", methods=["POST"])
    async def schema_reload(self, request: IRequest) -> bytes:
        return await self._schema(request, "reload")

    @app.route("/shadow", methods=["GET"])
    async def shadow_report(self, request: IRequest) -> bytes:
        """The shadow checks' figures and the mismatches the store keeps."""
        return _json(request, 200, {"figures": self.daemon.shadow.status(),
                                    "mismatches": await self.daemon.store.shadow_mismatches()})

    @app.route("/shadow/clear", methods=["POST"])
    async def shadow_clear(self, request: IRequest) -> bytes:
        """Forget the confirmed mismatches: their shapes are served locally
        again (``--shadow-action passthrough``), the table is emptied."""
        shapes = self.daemon.shadow.clear()
        rows = await self.daemon.store.clear_shadow_mismatches()
        log.info("shadow mismatches cleared ({shapes} shapes passing through, {rows} rows kept)",
                 shapes=shapes, rows=rows)
        return _json(request, 200, {"shapes_cleared": shapes, "rows_cleared": rows})

    async def _schema(self, request: IRequest, action: str) -> bytes:
        keeper = self.daemon.keeper
        try:
            if action == "plan":
                report = await keeper.plan()
            else:
                report = await keeper.reload("sgcache schema reload")
        except SchemaError as e:
            log.warn("schema {action} refused: {error}", action=action, error=str(e))
            return _json(request, 400, {"error": str(e)})
        except Exception:
            log.failure("schema {action} failed", action=action)
            return _json(request, 500, {"error": f"schema {action} failed; see the service log"})
        return _json(request, 200, report)


def admin_site(daemon: Any) -> Site:
    site = Site(AdminResource(daemon).resource())
    site.noisy = False
    site.log = lambda request: None  # no access log for the admin port
    return site


def _json(request: IRequest, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1, sort_keys=True, default=str).encode("utf-8") + b"\n"
