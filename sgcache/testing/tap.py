"""twistd wiring for the Shotgun emulator: ``twistd -n sgcache-emulator
--schema PATH --listen tcp:8020 --script name:key [--test-mode]``.

`Options` parses the command line; `makeService` only wires: it loads the
schema, builds the `Emulator` and its `EmulatorServer`, and listens on the
endpoint string.
"""

from __future__ import annotations

from typing import Any

from twisted.application import internet, service
from twisted.internet import endpoints
from twisted.python import usage
from twisted.web.server import Site

from sgcache.config import parse_timezone
from sgcache.schema import SchemaError
from sgcache.testing.emulator import Emulator, load_schema
from sgcache.testing.server import EmulatorServer


class Options(usage.Options):
    synopsis = "--schema PATH [--listen ENDPOINT] [--script NAME:KEY ...] [--test-mode]"
    longdesc = "An in-memory Shotgun (ShotGrid) JSON-RPC site, for tests and development."

    optParameters = [
        ["schema", None, None, "schema: our YAML, a schema_read JSON dump, or a dump directory"],
        ["listen", None, "tcp:8020", "endpoint to listen on (twisted endpoint string)"],
        ["page-size", None, 500, "api_max_entities_per_page reported by info", int],
        ["timezone", None, "UTC", "the site's time zone (UTC, +10:00, America/Los_Angeles)"],
    ]
    optFlags = [
        ["test-mode", None, "enable the POST /_emulator/<action> test controls"],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["scripts"] = {}
        self["users"] = {}

    def opt_script(self, value: str) -> None:
        """accept script NAME with key KEY (NAME:KEY; repeatable)"""
        name, sep, key = value.partition(":")
        if not sep or not name or not key:
            raise usage.UsageError(f"--script wants NAME:KEY, got {value!r}")
        self["scripts"][name] = key

    def opt_user(self, value: str) -> None:
        """accept HumanUser LOGIN with password PASSWORD (LOGIN:PASSWORD; repeatable)"""
        login, sep, password = value.partition(":")
        if not sep or not login:
            raise usage.UsageError(f"--user wants LOGIN:PASSWORD, got {value!r}")
        self["users"][login] = password

    def postOptions(self) -> None:
        if not self["schema"]:
            raise usage.UsageError("--schema is required")
        if self["page-size"] < 1:
            raise usage.UsageError("--page-size must be at least 1")
        try:
            self["tz"] = parse_timezone(self["timezone"])
        except ValueError as e:
            raise usage.UsageError(f"--timezone: {e}")
        if not self["scripts"] and not self["users"]:
            raise usage.UsageError("give at least one --script NAME:KEY (or --user)")


def makeService(config: Options, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        source = load_schema(config["schema"])
    except SchemaError as e:
        raise usage.UsageError(str(e)) from None
    emulator = Emulator(
        source.schema,
        scripts=config["scripts"],
        users=config["users"],
        page_size=config["page-size"],
        schema_read=source.schema_read,
        schema_entity_read=source.schema_entity_read,
        clock=reactor,
        tz=config["tz"],
    )
    server = EmulatorServer(emulator, reactor, test_mode=config["test-mode"])
    site = Site(server.resource())
    site.displayTracebacks = False
    parent = service.MultiService()
    listener = internet.StreamServerEndpointService(
        endpoints.serverFromString(reactor, config["listen"]), site
    )
    listener.setServiceParent(parent)
    return parent
