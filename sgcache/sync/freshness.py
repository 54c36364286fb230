"""The read fence: stale re-reads that carry the same `updated_at` as what
the store holds never overwrite it.

The store refuses a change whose `updated_at` is older than the stored one
(in the apply's transaction, against the row it locked), but Shotgun's
`updated_at` has one-second resolution: a slow scan page, or a poller's
re-read, read before an update and applied after a younger read applied
that update, can carry the same second, and would win. So every sync
reader (poller, scanner, write-back, link fill) takes a *ticket* before it
sends its upstream read, and applies what it read with that ticket: the
entities applied are stamped with it, and an apply drops the changes of
entities already stamped by a younger read (a larger ticket).

Why that is exact: a read that must win is one sent after a write it has
to show was known (the write-back's re-read after the site acknowledged
the write; the poller's re-read after it read the write's event). Its
ticket is taken after that moment, so it is larger than the ticket of any
read sent before the write, which is the only kind that can carry the
state before the write. Two reads sent concurrently are not ordered by the
fence (either may see the newer state); the write between them has an
event, whose re-read comes later with a larger ticket.

`Freshness` is what the readers use: ``await ticket()`` before the read,
``await apply(store, changes, ticket, state)`` for the result, ``done``
when the read is applied or abandoned. Two implementations:

* `LocalFreshness` -- in memory, for one process (SQLite, which is single
  process; tests; the admin commands' one-shot readers);
* `SharedFreshness` -- in PostgreSQL, shared by every daemon on the store
  (a write-back through one daemon races the leader's poller and scanner,
  in another process). Tickets come from one sequence; the stamps live in
  a table, checked and written inside the apply's own transaction under
  row locks (`sgcache.store.readstamps`), so the check is made in the
  database, against every daemon's applies, not in one process's memory.

`SharedFreshness`, ordering. A ticket must be taken (its ``nextval`` must
have run) before the read is sent, and a ticket taken later must be larger:
so one ``nextval`` per read, awaited before the read goes, and no blocks of
values handed out ahead (a daemon using a value reserved before another
daemon's ticket would carry an "older" ticket for a read triggered later:
a poller's re-read of a write's event, dropped against a write-back's
stamp that predates the write, would lose the write until the next event).
The sequence has ``CACHE 1`` for the same reason. The cost is one round
trip to PostgreSQL (a fraction of a millisecond) before a site read that
takes tens to hundreds of milliseconds, and in the apply one upsert of a
stamp per entity plus one small read (a 500-row scan page: a few
milliseconds more).

`SharedFreshness`, bounded. Stamps are pruned; a pruned stamp must never
let an older read that is still open win. Each daemon knows its open
tickets, and records a *floor* in its ``_sgcache_nodes`` row every
election round (`sgcache.store.leadership`): a ticket no read of it that
is open now, or opened later, is below. The floor is the least of: its
open tickets; for each ticket asked for but not yet received, the lower
bound it had when asked (a ``nextval`` that runs after the request left
exceeds every ticket this daemon had seen then); and, with nothing open,
the value of a ``nextval`` the round takes first (every later ticket
exceeds it). A daemon's floor never moves down. The leader prunes the
stamps below the least floor of the daemons seen within a grace period (a
minute, or six election rounds if longer: `Leadership.floor_grace`),
after recording that least floor as the store's horizon. A daemon that is gone (killed) holds the
pruning back for the grace period only; a read that stays open long holds
it back (its daemon's floor) while it is open, so stamps accumulate
meanwhile but none it needs goes. A daemon not seen for the grace period
whose read is still open (its election connection hung while its pool
worked) may find its stamps pruned: its apply sees a ticket below the
horizon and is refused as a whole (`StaleRead`: write-back gives up, the
write's event brings it; the poller and the scanner read again). Until a
daemon's first round recorded a floor, its tickets wait (at most a few
rounds) so that its first reads are covered too.

Deletes are fenced like any change: a delete from a read a younger read
overtook is dropped (the younger read saw the entity).
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

from twisted.internet import defer

from sgcache.logs import logger
from sgcache.schema.changes import EntityChange
from sgcache.store.readstamps import StaleRead

log = logger(__name__)

__all__ = ["Freshness", "LocalFreshness", "SharedFreshness", "StaleRead"]


class Freshness:
    """The fence's interface (module docstring); `for_store` picks the
    implementation a store needs."""

    #: changes dropped because a younger read was applied to their entity
    dropped = 0

    @staticmethod
    def for_store(store: Any) -> "Freshness":
        """The fence for the sync readers of a daemon on `store`: shared
        through the database on PostgreSQL, in memory on SQLite."""
        if getattr(store, "dialect", None) == "postgresql":
            return SharedFreshness(store)
        return LocalFreshness()

    def ticket(self) -> "defer.Deferred[int]":
        """A ticket, to take before the upstream read is sent; `done` it
        after applying (or abandoning) the read."""
        raise NotImplementedError

    async def apply(
        self, store: Any, changes: Sequence[EntityChange], ticket: int | None,
        state: dict[str, str] | None = None,
    ) -> list[EntityChange]:
        """Apply (`IStore.apply`, with `state`) the changes a read with
        `ticket` produced, but those of entities a younger read was
        applied to; the changes applied. No ticket: all of them, unfenced."""
        if ticket is None:
            await store.apply(changes, state)
            return list(changes)
        return await self._apply_fenced(store, changes, ticket, state)

    async def _apply_fenced(
        self, store: Any, changes: Sequence[EntityChange], ticket: int, state: dict[str, str] | None,
    ) -> list[EntityChange]:
        """`apply` with a ticket: the implementation's fence."""
        raise NotImplementedError

    def done(self, ticket: int) -> None:
        """The read with this ticket is applied (or abandoned)."""
        raise NotImplementedError


class LocalFreshness(Freshness):
    """Tickets from a counter, and the newest ticket applied per entity, in
    this process's memory."""

    def __init__(self) -> None:
        self._seq = 0
        self._open: set[int] = set()
        self._applied: dict[tuple[str, int], int] = {}
        self.dropped = 0

    def ticket(self) -> "defer.Deferred[int]":
        self._seq += 1
        self._open.add(self._seq)
        return defer.succeed(self._seq)

    async def _apply_fenced(
        self, store: Any, changes: Sequence[EntityChange], ticket: int, state: dict[str, str] | None,
    ) -> list[EntityChange]:
        fresh = self.fresh(changes, ticket)
        if fresh or state or not changes:
            await store.apply(fresh, state)
        self.applied(fresh, ticket)
        return fresh

    def fresh(self, changes: Sequence[EntityChange], ticket: int) -> list[EntityChange]:
        """`changes` without those a younger read already applied."""
        out = []
        for change in changes:
            if self._applied.get((change.entity_type, int(change.entity_id)), 0) > ticket:
                self.dropped += 1
                continue
            out.append(change)
        return out

    def applied(self, changes: Sequence[EntityChange], ticket: int) -> None:
        for change in changes:
            key = (change.entity_type, int(change.entity_id))
            if self._applied.get(key, 0) < ticket:
                self._applied[key] = ticket

    def done(self, ticket: int) -> None:
        """Forget what no open read can be older than."""
        self._open.discard(ticket)
        if not self._open:
            self._applied.clear()
        else:
            oldest = min(self._open)
            if len(self._applied) > 10000:
                self._applied = {k: v for k, v in self._applied.items() if v > oldest}


class SharedFreshness(Freshness):
    """The fence in PostgreSQL (module docstring): tickets from the store's
    sequence, stamps checked and written by the store's apply. Sets itself
    as the store's `read_fence`, whose `floor` the election rounds record."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.dropped = 0
        #: applies refused because the read was older than the horizon
        self.refused = 0
        #: tickets received and not done
        self._open: set[int] = set()
        #: tickets asked for, not received yet: request -> lower bound
        self._asking: dict[int, int] = {}
        self._asks = itertools.count()
        #: every ticket not received yet is at least this
        self._next_at_least = 0
        #: fires once a floor of this daemon is recorded (None: not waited for)
        self._recorded: defer.Deferred | None = None
        self._give_up: Any = None
        store.read_fence = self

    # -- the floor (election rounds) -------------------------------------------
    def attach(self, reactor: Any, wait: float) -> None:
        """A daemon's election rounds record this fence's floor: tickets
        wait for the first (at most `wait` seconds, then go unprotected:
        an apply of theirs is then refused if pruning overtook it)."""
        if self._recorded is not None:
            return
        self._recorded = defer.Deferred()
        self._give_up = reactor.callLater(wait, self._stop_waiting)

    def _stop_waiting(self) -> None:
        self._give_up = None
        if self._recorded is not None and not self._recorded.called:
            log.warn("no election round recorded this daemon's read floor yet; reads go on without it")
            self._recorded.callback(None)

    def floor(self, taken: int) -> int:
        """This daemon's floor, given a ticket `taken` just now (by the
        round, outside any read): no read open now or later is below it."""
        self._saw(taken)
        return min([*self._open, *self._asking.values(), self._next_at_least])

    def recorded(self) -> None:
        """A floor of this daemon (from `floor`) is in the store."""
        if self._give_up is not None and self._give_up.active():
            self._give_up.cancel()
        self._give_up = None
        if self._recorded is not None and not self._recorded.called:
            self._recorded.callback(None)

    def _saw(self, ticket: int) -> None:
        if ticket + 1 > self._next_at_least:
            self._next_at_least = ticket + 1

    # -- Freshness ---------------------------------------------------------------------
    def ticket(self) -> "defer.Deferred[int]":
        # cancelling (a scan page abandoned) does not stop the nextval: its
        # ticket, when it comes, is just never opened
        out: defer.Deferred = defer.Deferred(lambda d: None)
        if self._recorded is None or self._recorded.called:
            self._take(out)
        else:
            def go(result: Any) -> Any:
                if not out.called:
                    self._take(out)
                return result

            self._recorded.addCallback(go)
        return out

    def _take(self, out: defer.Deferred) -> None:
        """Ask for a ticket (it goes to `out`, unless cancelled)."""
        ask = next(self._asks)
        self._asking[ask] = self._next_at_least

        def got(ticket: int) -> None:
            self._asking.pop(ask, None)
            self._saw(ticket)
            if not out.called:
                self._open.add(ticket)
                out.callback(ticket)

        def failed(failure: Any) -> None:
            self._asking.pop(ask, None)
            if not out.called:
                out.errback(failure)

        self.store.take_ticket().addCallbacks(got, failed)

    async def _apply_fenced(
        self, store: Any, changes: Sequence[EntityChange], ticket: int, state: dict[str, str] | None,
    ) -> list[EntityChange]:
        if not changes and not state:
            return []
        try:
            await store.apply(changes, state, ticket=ticket)
        except StaleRead:
            self.refused += 1
            raise
        # (read at once: the store's next apply cannot have run yet)
        fresher = store.last_apply.fresher
        if not fresher:
            return list(changes)
        self.dropped += store.last_apply.skipped_fresher
        return [c for c in changes if (c.entity_type, int(c.entity_id)) not in fresher]

    def done(self, ticket: int) -> None:
        self._open.discard(ticket)
