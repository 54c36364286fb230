"""What `twistd sgcache` runs: its options and `makeService`, which
resolves the settings and builds the service tree -- the daemon
(`sgcache.service`), and with ``--demo`` the in-process demo site in front
of it (`sgcache.demo`). Top of the house: the one module that wires the
demo and the daemon together.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service

from sgcache.config import ConfigError, Options, resolve
from sgcache.schema import Schema, SchemaError
from sgcache.service import SgcacheService

__all__ = ["Options", "makeService", "build"]


def build(settings: dict[str, Any], reactor: Any) -> service.MultiService:
    """A ready-to-start service tree from resolved settings."""
    parent = service.MultiService()
    if settings["demo"]:
        from sgcache.demo import DemoSite

        demo = DemoSite(reactor)
        demo.setServiceParent(parent)
        settings = demo.apply(settings)
    schema = None
    if settings["schema"]:
        try:
            schema = Schema.load(settings["schema"])
        except SchemaError as e:
            raise ConfigError(f"--schema: {e}")
    daemon = SgcacheService(reactor, settings, schema)
    if settings["demo"]:
        daemon.upstream_ready = demo.ready
    daemon.setServiceParent(parent)
    parent.daemon = daemon  # type: ignore[attr-defined]
    return parent


def makeService(options: Options, reactor: Any = None) -> service.IService:
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        settings = resolve(dict(options))
        parent = build(settings, reactor)
        parent.daemon.exit_on_start_failure = True  # type: ignore[attr-defined]
        parent.daemon.handle_sighup = True  # type: ignore[attr-defined]
        return parent
    except ConfigError as e:
        sys.stderr.write(f"sgcache: {e}\n")
        raise SystemExit(2)
