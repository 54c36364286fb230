"""Reads of the store's shared generations, for several daemons on one
PostgreSQL store, answered after the moment they are asked for.

* `StorageCheck`: a daemon that serves what another one syncs checks,
  after each local read, that the stored schema's generation is still the
  one its catalog was built at: another daemon's schema change (tables and
  columns dropped or replaced, `IStore.sync_schema`) moves it in the
  transaction that makes it.
* The data generation (`FreshRead` of `PostgresStore.data_generation`):
  every transaction that may change a read's answer moves it; a kept
  answer is reused only while it has not moved since the answer was read
  (`Cache.shared_generation`), so a write through one daemon is never
  hidden by another's kept answer, even before its NOTIFY arrives.

Both ask the database. One query answers every caller that asked before
it was sent: callers asking while one is in flight wait for the next, so
under load the store sees about one such query per query time, not one
per read.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure


class FreshRead:
    """`fetch()`'s value, from a query sent after the call."""

    def __init__(self, fetch: Callable[[], Any]):
        self.fetch = fetch
        self._waiting: list[defer.Deferred] = []
        self._running = False
        #: queries made, and calls they answered
        self.queries = 0
        self.calls = 0

    def __call__(self) -> defer.Deferred:
        """Fires with the value (or the query's failure)."""
        self.calls += 1
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        if not self._running:
            self._query()
        return d

    def _query(self) -> None:
        waiters, self._waiting = self._waiting, []
        self._running = True
        self.queries += 1

        def done(result: Any) -> None:
            self._running = False
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
            if self._waiting:
                self._query()

        defer.ensureDeferred(defer.maybeDeferred(self.fetch)).addBoth(done)


class StorageCheck:
    """`Cache.storage_check` for a catalog built at `generation`."""

    def __init__(self, store: Any, generation: str, skip: Callable[[], bool] = lambda: False):
        self.generation = generation
        #: True while the check is not needed (this daemon syncs itself)
        self.skip = skip
        self._read = FreshRead(store.storage_generation)

    @property
    def queries(self) -> int:
        return self._read.queries

    @property
    def checks(self) -> int:
        return self._read.calls

    def __call__(self) -> defer.Deferred:
        """Fires True when the store is still at the generation (a failed
        query: False, the read passes through)."""
        if self.skip():
            return defer.succeed(True)
        return self._read().addCallbacks(lambda value: value == self.generation, lambda _: False)
