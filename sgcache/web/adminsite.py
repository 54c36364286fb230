"""The admin listener (``--admin-listen``, by default on 127.0.0.1 only, a
port of its own so clients of the Shotgun endpoint cannot reach it).

Routes (JSON answers):

* ``GET /schema/plan``: what a schema reload would do now (nothing changes);
* ``POST /schema/reload``: read the schema file and rules again and apply
  them (what ``sgcache schema reload`` and SIGHUP do);
* ``GET /healthz``: the process is up.

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
    """The Klein app of the admin listener. `keeper` has ``async plan()``
    and ``async reload(why)`` returning JSON-able reports, raising
    `SchemaError` for a file that cannot be used."""

    app = Klein()

    def __init__(self, keeper: Any):
        self.keeper = keeper

    def resource(self) -> Any:
        return self.app.resource()

    @app.route("/healthz", methods=["GET", "HEAD"])
    def healthz(self, request: IRequest) -> bytes:
        return _json(request, 200, {"ok": True})

    @app.route("/schema/plan", methods=["GET"])
    async def schema_plan(self, request: IRequest) -> bytes:
        return await self._schema(request, "plan")

    @app.route("/schema/reload", methods=["POST"])
    async def schema_reload(self, request: IRequest) -> bytes:
        return await self._schema(request, "reload")

    async def _schema(self, request: IRequest, action: str) -> bytes:
        try:
            if action == "plan":
                report = await self.keeper.plan()
            else:
                report = await self.keeper.reload("sgcache schema reload")
        except SchemaError as e:
            log.warn("schema {action} refused: {error}", action=action, error=str(e))
            return _json(request, 400, {"error": str(e)})
        except Exception:
            log.failure("schema {action} failed", action=action)
            return _json(request, 500, {"error": f"schema {action} failed; see the service log"})
        return _json(request, 200, report)


def admin_site(keeper: Any) -> Site:
    site = Site(AdminResource(keeper).resource())
    site.noisy = False
    site.log = lambda request: None  # no access log for the admin port
    return site


def _json(request: IRequest, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    return json.dumps(body, indent=1, sort_keys=True).encode("utf-8") + b"\n"
