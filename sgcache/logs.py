"""The daemon's log level. twistd writes every event it is given, debug
included; sgcache's own loggers (`logger`) pass theirs through a filter at
`set_level`'s level (info unless ``--log-level`` says otherwise), so debug
lines -- one per passed-through read, one per page a scan applies -- reach
the log only when asked for. The daemon's log writer applies the same level
to every event (`at_level`), whoever logged it.

Text a client sent goes into a log line only through `clip`: bounded, and
writable (a lone surrogate would make the log file's UTF-8 writer fail)."""

from __future__ import annotations

import datetime
from collections import deque
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    formatEvent,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_filtered = FilteringLogObserver(globalLogPublisher, [_predicate])

#: the last warnings and errors of sgcache's own loggers (status page)
RECENT_PROBLEMS: deque[dict[str, Any]] = deque(maxlen=30)


def _observer(event: dict[str, Any]) -> None:
    level = event.get("log_level")
    if level is not None and level >= LogLevel.warn:
        try:
            text = formatEvent(event)
        except Exception:
            text = str(event.get("log_format"))
        when = datetime.datetime.fromtimestamp(event.get("log_time") or 0, datetime.timezone.utc)
        RECENT_PROBLEMS.append({
            "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "level": level.name,
            "source": str(event.get("log_namespace", "")), "text": clip(text, 500),
        })
    _filtered(event)

LEVELS = ("debug", "info", "warn", "error", "critical")


def logger(namespace: str) -> Logger:
    """The Logger for one sgcache module: ``log = logger(__name__)``."""
    return Logger(namespace=namespace, observer=_observer)


def set_level(name: str) -> None:
    """Drop sgcache's events below `name` (one of `LEVELS`)."""
    _predicate.setLogLevelForNamespace(None, LogLevel.levelWithName(name))


def at_level(event: dict[str, Any]) -> bool:
    """Whether `event` is at or above `set_level`'s level (or has none): the
    daemon's log writer (`sgcache.logformat`) keeps those only, so other
    libraries' debug lines (the demo's emulator) stay out of it too."""
    level = event.get("log_level")
    return level is None or level >= _predicate.logLevelForNamespace("")


def one_line(error: BaseException) -> str:
    """An error's message on one line (its class name when empty)."""
    text = " ".join(str(error).split())
    return text or error.__class__.__name__


def clip(text: object, limit: int = 200) -> str:
    """`text` for a log line: at most `limit` characters (and a note of how
    many there were), anything UTF-8 cannot hold escaped."""
    value = text if isinstance(text, str) else repr(text)
    if len(value) > limit:
        value = f"{value[:limit]}... ({len(value)} chars)"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
