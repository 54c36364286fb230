"""How the daemon's log is written: one bounded record per event, as text
(twistd's layout, ``TIME [SOURCE] MESSAGE``) or, with ``--log-format json``,
as one JSON object per line for journald and log shippers::

    {"time": "2026-01-02T03:04:05.678Z", "level": "info", "source": "sgcache.service",
     "message": "serving the Shotgun API on 127.0.0.1:8010"}

(``traceback`` is added for a failure, ``system`` for events of twisted's
legacy log that name one.) JSON lines are ASCII.

Every record is bounded, whoever logged it: the message is clipped to
`MESSAGE_LIMIT` characters and a traceback to `TRACEBACK_LIMIT` (its end,
where the error is, kept), each with a note of the full length; a text line
is at most `TEXT_LINE_LIMIT` characters, a JSON line `JSON_LINE_LIMIT`.

`runner_observer` hooks this into the runner: twistd reads its observer from
the Application's `ILogObserver` component after `makeService` has returned
(`sgcache.tap` sets it), with the same choice of file as twistd's own
(``--logfile``, ``-`` for stdout); ``twist`` (``python -m twisted``) takes a
file observer factory from its options, which is replaced. ``--syslog`` and
``--logger`` are left to twistd.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
from typing import Any, Callable, IO

from twisted.logger import FileLogObserver, ILogObserver, formatEvent, formatTime, timeFormatRFC3339
from zope.interface import implementer

#: characters of an event's message kept
MESSAGE_LIMIT = 2000
#: characters of a traceback kept (its end)
TRACEBACK_LIMIT = 8000
#: characters of one line of text (a message or traceback line) kept
TEXT_LINE_LIMIT = MESSAGE_LIMIT + 200
#: characters of one JSON line, at most
JSON_LINE_LIMIT = 16384

FORMATS = ("text", "json")

Event = dict[str, Any]


# -- the parts of a record -------------------------------------------------------


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, with a note of how many there were;
    anything UTF-8 cannot hold escaped."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} chars)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clip_end(text: str, limit: int) -> str:
    """The last `limit` characters of `text`, after a note of what was left out."""
    if len(text) <= limit:
        return text
    return f"... ({len(text) - limit} of {len(text)} chars left out)\n{text[-limit:]}"


def message_of(event: Event, limit: int = MESSAGE_LIMIT) -> str:
    """The event's formatted text, bounded."""
    try:
        text = formatEvent(event)
    except Exception:  # formatEvent does not raise; a broken __str__ is caught anyway
        text = f"(unformattable event: {event.get('log_format')!r})"
    return clip(text, limit)


def traceback_of(event: Event, limit: int = TRACEBACK_LIMIT) -> str | None:
    """The traceback of the event's failure (None without one), bounded:
    each line to `TEXT_LINE_LIMIT`, the whole to its last `limit` chars."""
    failure = event.get("log_failure")
    if failure is None:
        return None
    try:
        text = failure.getTraceback()
    except Exception as e:
        text = f"(no traceback: {e.__class__.__name__})"
    lines = [clip(line, TEXT_LINE_LIMIT) for line in text.rstrip("\n").split("\n")]
    return clip_end("\n".join(lines), limit)


def level_of(event: Event) -> str:
    level = event.get("log_level")
    return getattr(level, "name", "-") if level is not None else "-"


def system_of(event: Event) -> str:
    """What twistd's text shows in brackets: the legacy log's system, else
    ``namespace#level``."""
    system = event.get("log_system")
    if system is not None:
        return clip(str(system), 200)
    return f"{clip(str(event.get('log_namespace', '-')), 200)}#{level_of(event)}"


def iso_time(when: float | None) -> str:
    """``2026-01-02T03:04:05.678Z`` (UTC)."""
    moment = datetime.datetime.fromtimestamp(when or 0, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the two formats -----------------------------------------------------------------


def format_text(event: Event) -> str | None:
    """twistd's text layout, every line bounded (None: nothing to write)."""
    message = message_of(event)
    traceback = traceback_of(event)
    if not message and traceback is None:
        return None
    body = "\n".join(clip(line, TEXT_LINE_LIMIT) for line in message.split("\n"))
    if traceback is not None:
        body = f"{body}\n{traceback}"
    stamp = formatTime(event.get("log_time"), timeFormatRFC3339)
    return f"{stamp} [{system_of(event)}] {body}".replace("\n", "\n\t") + "\n"


def format_json(event: Event) -> str | None:
    """One JSON object and a newline, at most `JSON_LINE_LIMIT` characters
    (the message and traceback cut shorter when escaping makes them longer)."""
    message_limit, traceback_limit = MESSAGE_LIMIT, TRACEBACK_LIMIT
    while True:
        line = _json_line(event, message_limit, traceback_limit)
        if line is None or len(line) < JSON_LINE_LIMIT or message_limit < 10:
            return line
        message_limit, traceback_limit = message_limit // 2, traceback_limit // 2


def _json_line(event: Event, message_limit: int, traceback_limit: int) -> str | None:
    record: dict[str, Any] = {
        "time": iso_time(event.get("log_time")),
        "level": level_of(event),
        "source": clip(str(event.get("log_namespace", "-")), 200),
        "message": message_of(event, message_limit),
    }
    traceback = traceback_of(event, traceback_limit)
    if not record["message"] and traceback is None:
        return None
    if traceback is not None:
        record["traceback"] = traceback
    system = event.get("log_system")
    if system is not None and system != "-":
        record["system"] = clip(str(system), 200)
    return json.dumps(record, ensure_ascii=True) + "\n"


# -- observers -----------------------------------------------------------------------


@implementer(ILogObserver)
class BoundedFileLogObserver:
    """Writes each event `keep` accepts to `out_file` in `log_format`
    ("text" or "json")."""

    def __init__(self, out_file: IO[Any], log_format: str, keep: Callable[[Event], bool] | None = None):
        if log_format not in FORMATS:
            raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
        self.log_format = log_format
        self.out_file = out_file
        self._keep = keep
        self._file = FileLogObserver(out_file, format_json if log_format == "json" else format_text)

    def __call__(self, event: Event) -> None:
        if self._keep is None or self._keep(event):
            self._file(event)


def runner_observer(
    runner_options: Any, log_format: str, keep: Callable[[Event], bool] | None = None
) -> ILogObserver | None:
    """The observer twistd should log to (its Application's `ILogObserver`
    component), given twistd's options (the plugin options' ``parent``).

    Under ``twist`` its file observer factory is replaced here and None is
    returned; None too when the runner is neither, or twistd logs to syslog
    or through ``--logger``."""
    if runner_options is None:
        return None
    if "fileLogObserverFactory" in runner_options:  # twist
        runner_options["fileLogObserverFactory"] = lambda out: BoundedFileLogObserver(out, log_format, keep)
        return None
    if "nodaemon" not in runner_options:
        return None
    if runner_options.get("syslog") or runner_options.get("logger"):
        return None
    out_file = twistd_log_file(runner_options)
    if out_file is None:
        return None
    return BoundedFileLogObserver(out_file, log_format, keep)


def twistd_log_file(options: Any) -> IO[Any] | None:
    """The file twistd itself would log to: stdout with ``--logfile -`` (or
    no --logfile) under ``--nodaemon``, else ``--logfile`` (default
    ``twistd.log``), rotated on SIGUSR1 as twistd does. None where twistd
    refuses (a daemon logging to stdout): it says so itself."""
    name = options.get("logfile") or ""
    nodaemon = options.get("nodaemon")
    if name == "-" or (nodaemon and not name):
        return sys.stdout if nodaemon else None
    from twisted.python import logfile

    log_file = logfile.LogFile.fromFullPath(os.path.abspath(name or "twistd.log"))
    if hasattr(signal, "SIGUSR1") and not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            from twisted.internet import reactor

            reactor.callFromThread(log_file.rotate)  # type: ignore[attr-defined]

        signal.signal(signal.SIGUSR1, rotate)
    return log_file
