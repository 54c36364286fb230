"""After-the-read checks of the stored schema's generation, for a daemon
that serves what another one syncs (several daemons on one PostgreSQL
store).

A local read planned on a catalog built at generation G is exact only if
the store still was at G when it ended: another daemon's schema change
(tables and columns dropped or replaced, `IStore.sync_schema`) moves the
generation in the transaction that makes it. So the generation is read
after the read. One query answers every read that ended before it was
sent: reads ending while one is in flight wait for the next, so under load
the store sees about one such query per query time, not one per read.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet import defer
from twisted.python.failure import Failure


class StorageCheck:
    """`Cache.storage_check` for a catalog built at `generation`."""

    def __init__(self, store: Any, generation: str, skip: Callable[[], bool] = lambda: False):
        self.store = store
        self.generation = generation
        #: True while the check is not needed (this daemon syncs itself)
        self.skip = skip
        self._waiting: list[defer.Deferred] = []
        self._running = False
        #: generation queries made, and reads they answered
        self.queries = 0
        self.checks = 0

    def __call__(self) -> defer.Deferred:
        """Fires True when the store is still at the generation (a failed
        query: False, the read passes through)."""
        if self.skip():
            return defer.succeed(True)
        self.checks += 1
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
            same = not isinstance(result, Failure) and result == self.generation
            for waiter in waiters:
                waiter.callback(same)
            if self._waiting:
                self._query()

        defer.ensureDeferred(self.store.storage_generation()).addBoth(done)
