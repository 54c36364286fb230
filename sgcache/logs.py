"""The daemon's log level. twistd writes every event it is given, debug
included; sgcache's own loggers (`logger`) pass theirs through a filter at
`set_level`'s level (info unless ``--log-level`` says otherwise), so debug
lines -- one per passed-through read, one per page a scan applies -- reach
the log only when asked for."""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_predicate])

LEVELS = ("debug", "info", "warn", "error", "critical")


def logger(namespace: str) -> Logger:
    """The Logger for one sgcache module: ``log = logger(__name__)``."""
    return Logger(namespace=namespace, observer=_observer)


def set_level(name: str) -> None:
    """Drop sgcache's events below `name` (one of `LEVELS`)."""
    _predicate.setLogLevelForNamespace(None, LogLevel.levelWithName(name))
