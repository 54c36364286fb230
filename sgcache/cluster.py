"""Several daemons on one PostgreSQL store, the daemon's side of it: what a
`sgcache.service.SgcacheService` does there that a lone daemon does not.
`sgcache.store.leadership` runs the election rounds; `Cluster` owns

* the start (`start`): stand for election (``--role web`` only records
  itself), announce this daemon to the others (`announce`), then sync as
  a lone daemon would if elected (the daemon's `take_over`), else follow;
* the changes of part: `elected` (a follower takes the sync over),
  `deposed` (the sync stops at once; under twistd the process exits, to
  stand again);
* following (`follow`): serve by the schema and field states the store
  records, waited for on a new store (`wait_for_stored_schema`), followed
  when another daemon changes them (`catalog_changed`), loaded once every
  cached field is served (`check_loaded`);
* kept answers (`shared_generation`): reused under the store's data
  generation while other daemons share the store;
* the announcement (`announce`): another daemon learns that this one
  exists at its next election round; until then, alone as it saw it, it
  reuses kept answers without reading the data generation, and a write
  through this daemon would end them by ``NOTIFY`` only (asynchronous).
  So, after its first round, a daemon holds its write-backs (a client's
  write is answered once applied) and its readiness until every other
  live daemon has read the nodes table since its registration
  (`Leadership.announce`): at most about one round, logged;
* what a daemon that does not sync shows of the sync (`StoredSync`): the
  event cursor, its event's time, the holes, when the store was last known
  complete and the last poll error, as the syncing daemon records them in
  the store, read again after each election round; the event lag is the
  one it records with its node (`Leadership.leader_lag`).

The daemon is duck-typed: the service's parts (``store``, ``cache``,
``keeper``, ``poller``, ``scanner``, ``pruner``), its state (``running``,
``syncing``, ``ready``, ``loaded``, ``port``, ``schema``) and its
``take_over`` / ``event_lag`` / ``exit_failed``.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer

from sgcache import lifecycle
from sgcache.logs import logger, one_line
from sgcache.schema.effective import diff as diff_schemas
from sgcache.schema.types import format_timestamp
from sgcache.site.backoff import Sleeper
from sgcache.store.leadership import ANNOUNCE_ROUNDS, Leadership
from sgcache.sync.poller import (
    CAUGHT_UP_KEY, CURSOR_KEY, CURSOR_TIME_KEY, HOLES_KEY, LAST_ERROR_KEY, parse_wire_time,
)
from sgcache.web.storagecheck import FreshRead, StorageCheck

log = logger(__name__)

__all__ = ["Cluster", "StoredSync"]


class Cluster:
    """One daemon's part in a cluster on a PostgreSQL store (module docstring)."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        store, cache = daemon.store, daemon.cache
        self.leadership = Leadership(
            daemon.reactor, store, daemon.role, daemon.settings.get("failover_seconds") or 10.0,
            on_elected=self.elected, on_deposed=self.deposed)
        self.leadership.lag = daemon.poller.lag_seconds
        self.leadership.on_round = self._round_done
        daemon.poller.on_first_caught_up = self.leadership.round_soon
        #: the store's data generation, read for local reads while other
        #: daemons share the store (one query answers the calls that wait)
        self.fresh_generation = FreshRead(store.data_generation)
        cache.shared_generation = self.shared_generation(self.fresh_generation)
        cache.status_sources.append(self.status)
        #: the sync as the store records it (shown while this daemon does not sync)
        self.stored = StoredSync(daemon.reactor, store)
        #: write-backs wait for the announcement
        self.announced = False
        self._announce_waiters: list[defer.Deferred] = []
        cache.writeback.hold = self.wait_announced

    def status(self) -> dict[str, Any]:
        """The election's status, with the reads of the data generation
        local reads waited for (calls) and the queries that answered them."""
        out = self.leadership.status()
        fresh = self.fresh_generation
        out["cluster"]["generation_reads"] = {"calls": fresh.calls, "queries": fresh.queries}
        return out

    # -- the start ---------------------------------------------------------------
    async def start(self) -> None:
        """Stand for election (unless ``--role web``); once the others know
        this daemon, the one elected syncs as a lone daemon would; the
        others serve by the schema and catalog the store records,
        following the leader's changes (`follow`)."""
        d = self.daemon
        d.store.on_catalog_change = self.catalog_changed
        self.leadership.start()
        leads = await self.leadership.first_round
        await self.announce()
        if leads:
            await d.take_over()
            return
        log.info("serving as a follower ({role}); {leader} syncs the store", role=d.role,
                 leader=(self.leadership.leader or {}).get("node") or "another daemon")
        if d.cache.answers.enabled:
            await d.store.track_changes()
        await self.wait_for_stored_schema()
        await d.cache.refresh_info()
        await self.stored.refresh_soon()
        lifecycle.notify("STATUS=serving; another daemon syncs the store")
        if not d.ready.called:
            d.ready.callback(d.port)
        self.check_loaded()

    async def announce(self) -> None:
        """Wait (at most about one round) until every other live daemon
        knows this one; write-backs wait for it, and so does the start."""
        leadership = self.leadership
        try:
            if leadership.registered_at is not None and not leadership.others_alive():
                return
            others = sum(1 for node in leadership.nodes if node["alive"] and not node["this"])
            log.info("waiting for the other daemons on the store ({count}) to see this one (at most "
                     "{most:.1f}s); write-backs wait meanwhile", count=others,
                     most=ANNOUNCE_ROUNDS * leadership.interval)
            try:
                waited, unaware = await leadership.announce()
            except Exception as e:
                if not self.daemon.running:
                    raise
                waited, unaware = 0.0, [f"(not known: {one_line(e)})"]
            if unaware:
                log.warn("{nodes} did not see this daemon within {waited:.1f}s (stuck, gone, or an older "
                         "sgcache); until they do, their kept answers may miss this daemon's writes for "
                         "up to their next election round", nodes=", ".join(unaware), waited=waited)
            else:
                log.info("every other daemon on the store sees this one (after {waited:.2f}s)", waited=waited)
        finally:
            self._announced()

    def _announced(self) -> None:
        """The announcement is over: write-backs held go on."""
        self.announced = True
        waiters, self._announce_waiters = self._announce_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def wait_announced(self) -> defer.Deferred:
        """Fires once the announcement is over (the write-backs' hold)."""
        if self.announced:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._announce_waiters.append(d)
        return d

    def stop(self) -> defer.Deferred:
        """Leave the election (the sync stopped: another daemon may take
        it over now); write-backs held no longer wait."""
        self._announced()
        return defer.ensureDeferred(self.leadership.stop())

    async def wait_for_stored_schema(self) -> None:
        """A follower needs the schema the leader records: read it, every
        second until there is one (a new store whose leader is starting)."""
        d = self.daemon
        sleeper, told = Sleeper(d.reactor), False
        while True:
            try:
                return await self.follow()
            except Exception as e:
                if not d.running or d.syncing:
                    raise
                if not told:
                    log.info("waiting for the schema the store records: {error}", error=one_line(e))
                    told = True
                d.cache.loading_message = f"waiting for the daemon that syncs: {one_line(e)}"
                await sleeper.sleep(1.0)

    # -- changes of part -----------------------------------------------------------
    async def elected(self, epoch: int) -> None:
        """This daemon was elected after its start-up: take the sync over."""
        log.info("taking the sync over (epoch {epoch})", epoch=epoch)
        try:
            await self.daemon.take_over()
        except Exception as e:
            if self.daemon.running:
                raise
            log.info("taking the sync over ended by the stop: {error}", error=one_line(e))

    def deposed(self, why: str) -> None:
        """This daemon lost the election (its connection failed): its sync
        stops now (its transactions are fenced anyway). Under twistd it
        exits for its supervisor to start it again as a candidate; in
        process it goes on serving as a follower."""
        d = self.daemon
        d.syncing = False
        d.keeper.stop()
        for part in (d.poller, d.scanner, d.pruner):
            part.stop()
        defer.ensureDeferred(self.follow()).addErrback(lambda f: None)
        if d.exit_on_start_failure and d.running:
            d.exit_failed(f"stopped syncing: {why}; exiting to stand again")

    # -- following -------------------------------------------------------------------
    async def follow(self) -> None:
        """Serve by what the store records (the leader's schema and field
        states); every local read is checked against the storage
        generation it was planned at (`Cache.storage_check`)."""
        d = self.daemon
        async with d.cache.schema_lock:
            generation = await d.store.storage_generation()
            recorded = await d.store.recorded_schema()
            if not len(recorded):
                raise RuntimeError("the store holds no schema yet (the daemon that syncs has not started)")
            if d.keeper.schema is None or diff_schemas(d.keeper.schema, recorded):
                d.keeper._use(recorded)
                d.schema = recorded
                d.cache.use_schema(recorded, {})
            await d.cache.refresh_catalog_locked()
            d.cache.storage_check = StorageCheck(d.store, generation, lambda: d.syncing)

    def catalog_changed(self) -> None:
        """Another daemon changed the stored schema or field states."""
        d = self.daemon
        if d.syncing or not d.running:
            return
        done = defer.ensureDeferred(self.follow())
        done.addCallback(lambda _: self.check_loaded())
        done.addErrback(lambda f: log.warn("following the stored schema failed: {error}",
                                           error=f.getErrorMessage()))

    def check_loaded(self) -> None:
        """A follower is loaded once every cached field is served."""
        d = self.daemon
        if d.loaded.called or d.syncing:
            return
        if all(not waiting for _, _, waiting in d.cache.field_readiness()):
            d.cache.serving = True
            d.cache.loading_message = "serving"
            log.info("store loaded by the daemon that syncs; serving reads from the cache")
            d.loaded.callback(None)
        else:
            d.cache.loading_message = "waiting for the daemon that syncs to load the store"

    def shared_generation(self, fresh: FreshRead) -> Any:
        """The store's data generation while other daemons share the store
        (their writes end kept answers before their notification comes); a
        constant while this daemon is alone on it (its own writes and the
        notifications of admin commands do)."""
        leadership = self.leadership

        def shared() -> defer.Deferred:
            return fresh() if leadership.others_alive() else defer.succeed("alone")
        return shared

    # -- what a daemon that does not sync shows ---------------------------------------
    def sync_view(self) -> Any:
        """The poller, or while this daemon does not sync, the store's record
        of the syncing daemon's (the same attributes: ``cursor``,
        ``cursor_time``, ``holes``, ``caught_up_at``)."""
        d = self.daemon
        return d.poller if d.syncing else self.stored

    def poller_status(self) -> dict[str, Any]:
        """The poller's part of `info`'s block; from the store's record while
        this daemon does not sync."""
        d = self.daemon
        own = d.poller.status()
        return own if d.syncing else self.stored.status(own, d.event_lag())

    def _round_done(self) -> None:
        if not self.daemon.syncing:
            self.stored.refresh_soon()


class StoredSync:
    """The sync's state as the store records it (the keys the poller keeps,
    `sgcache.sync.poller`), for a daemon that does not sync; the poller's
    attribute names."""

    def __init__(self, reactor: Any, store: Any) -> None:
        self.reactor = reactor
        self.store = store
        self.cursor: int | None = None
        self.cursor_time: str | None = None
        self.holes: dict[int, float] = {}
        #: when the store was last known complete (the syncing daemon's clock)
        self.caught_up_at: float | None = None
        self.last_error: str | None = None
        #: reactor time of the last read (None: never read)
        self.read_at: float | None = None
        self._reading: defer.Deferred | None = None

    def refresh_soon(self) -> defer.Deferred:
        """Read again in the background (unless a read runs); a failure
        leaves the last values (the store may be the trouble). Fires when
        the read in progress ends."""
        if self._reading is None or self._reading.called:
            self._reading = defer.ensureDeferred(self.refresh())
            self._reading.addErrback(lambda f: log.debug("reading the stored sync state failed: {error}",
                                                         error=f.getErrorMessage()))
        ended: defer.Deferred = defer.Deferred()
        self._reading.addBoth(lambda result: (ended.callback(None), result)[1])
        return ended

    async def refresh(self) -> None:
        get = self.store.get_state
        cursor = await get(CURSOR_KEY)
        cursor_time = await get(CURSOR_TIME_KEY)
        holes = json.loads(await get(HOLES_KEY) or "{}")
        caught_up = await get(CAUGHT_UP_KEY)
        error = await get(LAST_ERROR_KEY)
        self.cursor = None if cursor is None else int(cursor)
        self.cursor_time = cursor_time or None
        self.holes = {int(k): float(v) for k, v in holes.items()}
        try:
            self.caught_up_at = float(caught_up) if caught_up else None
        except ValueError:
            self.caught_up_at = None
        self.last_error = json.loads(error)[1] if error else None
        self.read_at = self.reactor.seconds()

    def status(self, own: dict[str, Any], lag: float | None) -> dict[str, Any]:
        """`own` (this daemon's idle poller's status) with the store's record
        and `lag` (the syncing daemon's, `Leadership.leader_lag`); its own
        counters (events, poll errors) stay: they are this daemon's."""
        created = parse_wire_time(self.cursor_time)
        now = self.reactor.seconds()
        return dict(
            own,
            event_cursor=self.cursor,
            last_event_id=self.cursor,
            last_event_created_at=self.cursor_time,
            event_lag_seconds=None if lag is None else round(lag, 1),
            caught_up_at=format_timestamp(self.caught_up_at),
            newest_event_age_seconds=None if created is None else round(max(0.0, now - created), 1),
            holes=sorted(self.holes),
            last_poll_error=self.last_error,
            event_figures_from="store",
            event_figures_age_seconds=None if self.read_at is None else round(now - self.read_at, 1),
        )
