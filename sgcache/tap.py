"""What `twistd sgcache` runs: its options and `makeService`, which
resolves the settings and builds the service tree -- the daemon
(`sgcache.service`), and with ``--demo`` the in-process demo site in front
of it (`sgcache.demo`). Top of the house: the one module that wires the
demo and the daemon together.

Under twistd the tree's root also hands twistd the log writer
(`sgcache.logformat`: ``--log-format``, bounded lines, ``--log-level`` for
every event): twistd reads it from its Application after `makeService`.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application import service
from twisted.logger import ILogObserver

from sgcache.config import ConfigError, Options, resolve
from sgcache.logformat import runner_observer
from sgcache.logs import at_level
from sgcache.schema import Schema, SchemaError
from sgcache.service import SgcacheService

__all__ = ["Options", "Root", "makeService", "build"]


class Root(service.MultiService):
    """The service tree's root. Given to twistd's Application, it sets the
    Application's log observer (`log_observer`, when there is one)."""

    daemon: Any = None
    log_observer: Any = None

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if self.log_observer is not None and hasattr(parent, "setComponent"):
            parent.setComponent(ILogObserver, self.log_observer)


def build(settings: dict[str, Any], reactor: Any) -> Root:
    """A ready-to-start service tree from resolved settings."""
    parent = Root()
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
    parent.daemon = daemon
    return parent


def log_writer(options: Options, settings: dict[str, Any]) -> Any:
    """The observer for twistd's log (None: the runner's own); a log file
    that cannot be opened is a `ConfigError`."""
    try:
        return runner_observer(options.parent, settings["log_format"], at_level)
    except OSError as e:
        raise ConfigError(f"--logfile: {e.filename or ''}: {e.strerror or e}")


def makeService(options: Options, reactor: Any = None) -> service.IService:
    """What twistd runs: the settings resolved, the tree built and the
    runner's log writer chosen; a wrong setting stops it with one line."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    try:
        settings = resolve(dict(options))
        parent = build(settings, reactor)
        parent.daemon.exit_on_start_failure = True
        parent.daemon.handle_sighup = True
        parent.log_observer = log_writer(options, settings)
        return parent
    except ConfigError as e:
        sys.stderr.write(f"sgcache: {e}\n")
        raise SystemExit(2)
