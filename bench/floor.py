"""The read benchmark's floor: a trivial Klein endpoint, in its own process,
that answers every JSON-RPC call with a canned body -- the cost of the
client, HTTP and JSON alone, with no query behind it.

    python bench/floor.py --port 8030

``POST /api3/json`` answers `info` with the info body and every other
method with the read body; ``POST /_floor/info`` and ``POST /_floor/body``
replace those bodies with the request's bytes. Started by ``reads.py``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from klein import Klein
from twisted.internet import endpoints, task
from twisted.web.server import Site


class Floor:
    app = Klein()

    def __init__(self) -> None:
        self.info = b'{"results": {"version": [8, 0, 0]}}'
        self.body = b'{"results": null}'

    @app.route("/api3/json", methods=["POST"])
    def rpc(self, request: Any) -> bytes:
        payload = json.loads(request.content.read())
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return self.info if payload.get("method_name") == "info" else self.body

    @app.route("/_floor/<what>", methods=["POST"])
    def set_body(self, request: Any, what: str) -> bytes:
        data = request.content.read()
        if what == "info":
            self.info = data
        else:
            self.body = data
        return b"ok"


def main(reactor: Any, port: int) -> Any:
    # as lean as the daemon's site: no form parsing of POST bodies (which
    # costs a stock Twisted site ~0.1 ms a request), so the floor stays the
    # lowest cost of the client, HTTP and JSON
    site = Site(Floor().app.resource(), parsePOSTFormSubmission=False)
    site.log = lambda request: None  # no access log, as the daemon by default
    endpoints.serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(site)
    return task.Deferred()  # runs until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    task.react(main, [parser.parse_args().port])
