"""Exponential back-off for the sync loops (event poller, scanner).

Upstream trouble -- timeouts, HTTP 5xx, connection resets, authentication
faults -- and store trouble (a PostgreSQL restart) are all handled the same
way by a sync loop: wait, try again, wait longer each time (capped), and go
back to the normal pace after the first success. `Backoff` holds that
schedule; `sleep` waits on the reactor passed in, and can be cancelled so a
stopping service does not hang.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from sgcache.site.faults import ERR_AUTH, Fault
from sgcache.site.client import UpstreamError


class Backoff:
    """Delays ``initial, initial*factor, ...`` capped at `maximum`."""

    def __init__(self, initial: float = 1.0, maximum: float = 60.0, factor: float = 2.0):
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.failures = 0

    def next_delay(self) -> float:
        """Record one more failure; the delay to wait before retrying."""
        delay = min(self.initial * self.factor ** self.failures, self.maximum)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def describe(error: BaseException) -> str:
    """A one-line classification of a sync failure, for logs and status."""
    if isinstance(error, Fault):
        kind = "auth" if error.error_code == ERR_AUTH else "fault"
        return f"{kind}: {error.message}"
    if isinstance(error, UpstreamError):
        return f"upstream: {error}"
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0] if text else ''}"


class Sleeper:
    """Cancellable waits on a reactor (``await sleeper.sleep(s)``); several
    may wait at once (scan workers backing off), `wake` ends them all."""

    def __init__(self, reactor: Any):
        self.reactor = reactor
        self._pending: set[defer.Deferred] = set()

    async def sleep(self, seconds: float) -> bool:
        """Wait; False when woken early by `wake` (or cancelled)."""
        d = task.deferLater(self.reactor, max(0.0, seconds), lambda: True)
        self._pending.add(d)
        try:
            return bool(await d)
        except defer.CancelledError:
            return False
        finally:
            self._pending.discard(d)

    def wake(self) -> None:
        """End the current waits now (stop, or work to do)."""
        for d in list(self._pending):
            if not d.called:
                d.cancel()
