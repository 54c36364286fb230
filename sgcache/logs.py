"""The daemon's log level. twistd writes every event it is given, debug
included; sgcache's own loggers (`logger`) pass theirs through a filter at
`set_level`'s level (info unless ``--log-level`` says otherwise), so debug
lines -- one per passed-through read, one per page a scan applies -- reach
the log only when asked for.

Text a client sent goes into a log line only through `clip`: bounded, and
writable (a lone surrogate would make the log file's UTF-8 writer fail)."""

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


def clip(text: object, limit: int = 200) -> str:
    """`text` for a log line: at most `limit` characters (and a note of how
    many there were), anything UTF-8 cannot hold escaped."""
    value = text if isinstance(text, str) else repr(text)
    if len(value) > limit:
        value = f"{value[:limit]}... ({len(value)} chars)"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
