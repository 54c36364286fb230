"""The daemon's life as systemd sees it: readiness and stopping
notifications (``Type=notify``: `notify`, the sd_notify datagram protocol
on ``$NOTIFY_SOCKET``, no library needed), and a stop that always ends in a
bounded time (`within`, `drain`): in-flight requests get a grace period,
then every connection still open is cut.
"""

from __future__ import annotations

import os
import socket
import weakref
from typing import Any

from twisted.internet import defer, task

from sgcache.logs import logger

log = logger(__name__)


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` (``"READY=1"``, ``"STOPPING=1"``, ``"STATUS=..."``) to
    systemd when it asked for notifications; False when it did not (or the
    socket is gone: never an error for the daemon)."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.sendto(state.encode("utf-8", "replace")[:2048], address)
        return True
    except OSError as e:
        log.warn("could not notify systemd ({state}): {error}", state=state.split("=")[0], error=str(e))
        return False


async def within(reactor: Any, seconds: float, d: Any, what: str) -> bool:
    """Wait for `d` at most `seconds`; True if it fired (its failure is
    logged, not raised), False if the time ran out (`d` is cancelled)."""
    d = defer.ensureDeferred(d) if not isinstance(d, defer.Deferred) else d
    outcome: list[bool] = []
    timer = reactor.callLater(max(0.0, seconds), lambda: (outcome.append(False), d.cancel()))
    try:
        await d
    except defer.CancelledError:
        if outcome == [False]:
            log.warn("stopping: {what} did not end within {seconds:g}s; cut", what=what, seconds=seconds)
            return False
    except Exception as e:
        log.warn("stopping: {what} failed: {error}", what=what, error=str(e)[:300])
    finally:
        if timer.active():
            timer.cancel()
    return not outcome


class Connections:
    """The open connections of a site (their HTTP channels, weakly held)."""

    def __init__(self) -> None:
        self._channels: weakref.WeakSet = weakref.WeakSet()

    def add(self, protocol: Any) -> None:
        # Site's protocols wrap the HTTP/1.1 channel (for an HTTP/2 upgrade)
        self._channels.add(getattr(protocol, "_channel", protocol))

    def open(self) -> list[Any]:
        return [c for c in self._channels if getattr(c, "transport", None) is not None
                and getattr(c.transport, "connected", False)]

    def busy(self) -> int:
        """Connections with a request in progress."""
        return sum(1 for c in self.open() if getattr(c, "requests", None))

    async def drain(self, reactor: Any, grace: float) -> int:
        """Let requests in progress finish for up to `grace` seconds, then
        cut every connection still open; returns how many were cut while
        busy."""
        deadline = reactor.seconds() + grace
        while self.busy() and reactor.seconds() < deadline:
            await task.deferLater(reactor, 0.05, lambda: None)
        busy = self.busy()
        cut = self.open()
        for channel in cut:
            channel.transport.abortConnection()
        if cut:
            await task.deferLater(reactor, 0, lambda: None)  # they close on the next turn
        return busy
