"""The update log: what apply changed, when, and why.

`sgcache.store.apply.apply_changes` writes one ``_sgcache_updates`` row per
applied change in the same transaction as the change itself: entity type
and id, the fields (``*`` for a whole re-read row, the event's attribute
names for an event, ``(deleted)``), the source (``event`` / ``scan`` /
``passthrough``), the event id and the time. Only changes that wrote
something are logged, whatever found them: a re-read of an unchanged row
(a periodic scan, an event already applied by a write-back) writes nothing
and logs nothing, so the log does not flood.

The store reads it (``store.update_log``, for ``sgcache log``); this module
keeps it to a configurable age (`Pruner`, for the daemon).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from sgcache.site.backoff import Sleeper, describe
from sgcache.logs import logger

log = logger(__name__)

DAY = 86400.0


class Pruner:
    """Deletes update-log entries older than `days`, every `every` seconds."""

    def __init__(self, reactor: Any, store: Any, days: float = 7.0, every: float = 3600.0):
        self.reactor = reactor
        self.store = store
        self.days = days
        self.every = every
        self.pruned = 0
        self._sleeper = Sleeper(reactor)
        self._running = False
        self._loop: defer.Deferred | None = None

    async def prune(self) -> int:
        before = self.reactor.seconds() - self.days * DAY
        count = await self.store.prune_update_log(before)
        self.pruned += count
        if count:
            log.info("update log: pruned {count} entries older than {days} days", count=count, days=self.days)
        return count

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        self._loop = defer.ensureDeferred(self._run())

    def stop(self) -> defer.Deferred:
        self._running = False
        self._sleeper.wake()
        loop, self._loop = self._loop, None
        return loop if loop is not None else defer.succeed(None)

    async def _run(self) -> None:
        while self._running:
            try:
                await self.prune()
            except Exception as e:
                log.warn("update log pruning failed: {error}", error=describe(e))
            # a stop that came during the prune found no wait to wake
            if self._running:
                await self._sleeper.sleep(self.every)
