"""One limit on how many requests the daemon has at the site at once
(``--site-max-concurrency``), shared by every kind of traffic, and the
site's own throttling (HTTP 429/503 with ``Retry-After``).

Three lanes:

* ``client`` -- clients' requests passed through (RPC and relayed). They
  never wait here: the site would have had them without sgcache, and a
  client must not queue behind the cache's own work. They count, though:
  while clients have requests at the site, sync traffic has fewer slots
  (never fewer than one, so the event poller always moves).
* ``sync`` -- event polls, entity re-reads after events and write-backs,
  link fills, credential checks, schema and info reads: served first.
* ``scan`` -- scan pages: served last, and never more than ``limit - 1`` at
  once when the limit allows, so a poll finds a slot without waiting for a
  scan page.

A throttled answer (429, or 503 with ``Retry-After``) to any request pauses
the ``sync`` and ``scan`` lanes until the time the site asked for; the
request that got it is retried by its caller (`Upstream.call`), so nothing
is lost. It also halves the window of the cache's own traffic (at most once
per pause: the answers of one burst count once), which then grows back by
one slot per `GROWTH` good answers in a row per slot, up to the limit: a
site that throttles at N requests at once settles near N instead of
throttling every retried burst again.
"""

from __future__ import annotations

import calendar
import email.utils
from collections import deque
from typing import Any

from twisted.internet import defer

CLIENT, SYNC, SCAN = "client", "sync", "scan"
LANES = (CLIENT, SYNC, SCAN)
#: the longest pause a Retry-After may ask for (a bad header must not stop
#: sync for a day)
MAX_PAUSE = 300.0
#: good answers in a row, per slot of the window, before it grows by one
GROWTH = 16


def retry_after(headers: list[tuple[bytes, list[bytes]]] | Any, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an
    HTTP date), capped at `MAX_PAUSE`; None when absent or unreadable."""
    raw: list[bytes] = []
    if hasattr(headers, "getRawHeaders"):
        raw = headers.getRawHeaders(b"retry-after") or []
    else:
        for name, values in headers:
            if name.lower() == b"retry-after":
                raw = list(values)
    if not raw:
        return None
    text = raw[0].decode("latin-1", "replace").strip()
    try:
        seconds = float(int(text))
    except ValueError:
        parsed = email.utils.parsedate_tz(text)
        if parsed is None:
            return None
        seconds = calendar.timegm(parsed[:9]) - (parsed[9] or 0) - now
    return min(max(seconds, 0.0), MAX_PAUSE)


class SiteGate:
    """Slots for requests to the site, by lane (see the module docstring)."""

    def __init__(self, reactor: Any, limit: int = 8):
        self.reactor = reactor
        self.limit = max(1, int(limit))
        self.in_flight = {lane: 0 for lane in LANES}
        #: most requests at the site at once, per lane and in all
        self.peak = {lane: 0 for lane in LANES}
        self.peak_total = 0
        self._waiting: dict[str, deque[defer.Deferred]] = {SYNC: deque(), SCAN: deque()}
        #: reactor time before which sync and scan requests wait (throttled)
        self.paused_until = 0.0
        self.throttled = 0
        #: how many sync and scan requests may be at the site at once now:
        #: the limit, or less after the site throttled (see the docstring)
        self.window = self.limit
        self._good = 0
        self._wakeup: Any = None

    # -- slots -------------------------------------------------------------
    def _room(self, lane: str) -> bool:
        if self.reactor.seconds() < self.paused_until:
            return False
        own = self.in_flight[SYNC] + self.in_flight[SCAN]
        usable = min(self.window, self.limit - min(self.in_flight[CLIENT], self.limit - 1))
        if own >= usable:
            return False
        if lane == SCAN:
            if self._waiting[SYNC]:
                return False
            if self.window > 1 and self.in_flight[SCAN] >= self.window - 1:
                return False
        return True

    def acquire(self, lane: str) -> defer.Deferred:
        """Fires (with None) when a request of `lane` may go to the site;
        call `release(lane)` once it is answered. Cancellable."""
        if lane == CLIENT or (self._room(lane) and not self._queued_before(lane)):
            self._take(lane)
            return defer.succeed(None)

        def cancelled(d: defer.Deferred) -> None:
            try:
                self._waiting[lane].remove(d)
            except ValueError:
                pass

        d: defer.Deferred = defer.Deferred(cancelled)
        self._waiting[lane].append(d)
        self._schedule_wakeup()
        return d

    def _queued_before(self, lane: str) -> bool:
        return bool(self._waiting[SYNC]) or (lane == SCAN and bool(self._waiting[SCAN]))

    def release(self, lane: str) -> None:
        self.in_flight[lane] = max(0, self.in_flight[lane] - 1)
        self._admit()

    def _take(self, lane: str) -> None:
        self.in_flight[lane] += 1
        self.peak[lane] = max(self.peak[lane], self.in_flight[lane])
        self.peak_total = max(self.peak_total, sum(self.in_flight.values()))

    def _admit(self) -> None:
        for lane in (SYNC, SCAN):
            queue = self._waiting[lane]
            while queue and self._room(lane):
                d = queue.popleft()
                self._take(lane)
                d.callback(None)
        self._schedule_wakeup()

    # -- throttling ----------------------------------------------------------
    def pause(self, seconds: float) -> None:
        """The site asked to wait `seconds`: sync and scan requests wait."""
        self.throttled += 1
        now = self.reactor.seconds()
        if now >= self.paused_until:  # the first of a burst: the window halves once
            self.window = max(1, self.window // 2)
        self._good = 0
        until = now + max(0.0, min(seconds, MAX_PAUSE))
        if until > self.paused_until:
            self.paused_until = until
        self._schedule_wakeup()

    def answered(self) -> None:
        """A request got an answer that was not throttled: after `GROWTH`
        of them in a row per slot, the window grows by one slot."""
        if self.window >= self.limit:
            return
        self._good += 1
        if self._good >= GROWTH * self.window:
            self._good = 0
            self.window += 1
            self._admit()

    def _schedule_wakeup(self) -> None:
        now = self.reactor.seconds()
        if self.paused_until <= now or not (self._waiting[SYNC] or self._waiting[SCAN]):
            return
        if self._wakeup is not None and self._wakeup.active():
            return
        self._wakeup = self.reactor.callLater(self.paused_until - now, self._admit)

    def status(self) -> dict[str, Any]:
        now = self.reactor.seconds()
        return {
            "limit": self.limit,
            "window": self.window,
            "in_flight": dict(self.in_flight),
            "waiting": {lane: len(q) for lane, q in self._waiting.items()},
            "peak": dict(self.peak, total=self.peak_total),
            "throttled": self.throttled,
            "paused_for": round(max(0.0, self.paused_until - now), 1),
        }
