"""Service wiring for `twistd sgcache`: builds the store, the upstream
client, the cache, the listener and the timers from resolved settings, and
nothing else. The reactor is a parameter so tests can run it in-process.

Start-up order: open the store, take back what it kept of the site (its
info, the credentials it vouched for: `sgcache.web.sitememory`), start
listening (so a daemon started while the site is down answers at once:
local reads for what it holds, a Shotgun fault naming the cause for the
rest; systemd is told READY then), resolve the effective schema (the file, the rules, the site's
schema: `sgcache.schemakeeper`) and sync it into the store, serve the fields
ready, fetch the site's info, fix the event cursor, then
start the poller and load (scan in full) the types with fields not loaded
yet. Reads are answered per field as soon as their type is loaded; reads of
what is still loading pass through. Waits on the site are retried with
back-off for as long as it takes; a failure of our own (the store, a port)
ends the process with one line (`ConfigError`).

On PostgreSQL several daemons share the store and one elected at a time
syncs; what that changes (the election, following the one that syncs, a
joining daemon announced to the others) is `sgcache.cluster`'s.

Stopping always ends within ``--stop-timeout``: listeners close, requests
in progress get part of it, then connections, site calls and store
connections still open are cut (`sgcache.lifecycle`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from twisted.application import internet, service
from twisted.internet import defer, endpoints

from sgcache import lifecycle
from sgcache.cluster import Cluster
from sgcache.config import ConfigError, parse_patterns, parse_timezone
from sgcache.logs import logger, one_line, set_level
from sgcache.schema import Schema
from sgcache.schema.effective import diff as diff_schemas
from sgcache.schemakeeper import SchemaKeeper
from sgcache.site.client import make_upstream
from sgcache.store import layout, open_store
from sgcache.store.onedaemon import AlreadyServed, DaemonLock
from sgcache.sync.freshness import Freshness
from sgcache.sync.poller import CURSOR_KEY, HOLES_KEY, EventPoller
from sgcache.sync.scanner import Scanner
from sgcache.sync.updatelog import Pruner
from sgcache.web.answers import Answers
from sgcache.web.credentials import DEFAULT_TTL, Credentials
from sgcache.web.dispatch import ANSWERS_BYTES, Cache
from sgcache.web.adminsite import admin_site
from sgcache.web.metrics import Metrics
from sgcache.web.sitememory import SiteMemory
from sgcache.web.shadow import ShadowChecks
from sgcache.web.httpsite import DaemonSite
from sgcache.web.rpc import Limits, RPCResource

log = logger(__name__)

__all__ = ["SgcacheService"]


class SgcacheService(service.MultiService):
    """The daemon: store + upstream + cache + scanner, started in order."""

    def __init__(self, reactor: Any, settings: dict[str, Any], schema: Schema | None):
        super().__init__()
        self.reactor = reactor
        self.settings = settings
        #: the schema file as loaded (None: rules alone); the daemon runs on
        #: the effective schema the keeper resolves from it at start
        self.file_schema = schema
        schema = schema if schema is not None else Schema(source="(the site's, not read yet)")
        self.schema = schema
        self.store = open_store(settings["db"], reactor, settings.get("pg_pool_size"))
        budget_ms = settings.get("read_budget_ms", 1000.0)
        read_budget = budget_ms / 1000.0 if budget_ms else None
        self.store.set_read_budget(read_budget)
        try:
            self.upstream = make_upstream(reactor, settings)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        # write-back, poller and scanner share a fence against same-second
        # stale re-reads
        freshness = Freshness.for_store(self.store)
        answers_mb = settings.get("answer_cache_mb")
        self.cache = Cache(
            reactor, schema, self.store, self.upstream, freshness=freshness,
            tz=parse_timezone(settings.get("site_timezone") or "UTC"),
            answers=Answers(ANSWERS_BYTES if answers_mb is None else int(answers_mb * 2**20)),
            credentials=Credentials(
                reactor, ttl=settings.get("auth_ttl") or DEFAULT_TTL,
                serve=parse_patterns(settings.get("serve_scripts") or "*"),
                deny=parse_patterns(settings.get("pass_scripts")),
                users=parse_patterns(settings.get("serve_users")),
                outage_grace=3600.0 * settings.get("auth_outage_hours", 24.0),
            ),
        )
        self.cache.credentials.site_down = lambda: self.upstream.health.reachable is False
        self.memory = SiteMemory(reactor, self.store, self.cache)
        self.cache.read_budget = read_budget
        self.scanner = Scanner(
            reactor, schema, self.store, self.upstream,
            overlap=settings.get("scan_overlap", 60.0),
            interval=settings.get("scan_interval", 600.0),
            freshness=freshness,
            concurrency=settings.get("scan_concurrency", 4),
        )
        self.poller = EventPoller(
            reactor, schema, self.store, self.upstream,
            interval=settings["poll_interval"],
            hole_timeout=settings.get("hole_timeout", 300.0),
            on_gap=self.scanner.request_incremental,
            freshness=freshness,
        )
        self.shadow = self.cache.shadow = ShadowChecks(
            reactor, self.upstream, self.cache.local_answer, self._applied_through,
            self.store.record_shadow_mismatch, rate=settings.get("shadow_rate", 0.01),
            action=settings.get("shadow_action") or "log")
        self.cache.status_sources.append(lambda: {"shadow": self.shadow.status()})
        self.pruner = Pruner(reactor, self.store, days=settings.get("update_log_days", 7.0))
        schema_path = settings.get("schema")
        self.keeper = SchemaKeeper(
            reactor, schema_path if schema_path and os.path.exists(schema_path) else None,
            settings.get("schema_rules"), self.cache, self.store, self.upstream, self.scanner, self.poller,
        )
        # a scan marks fields ready only while no schema change is applied
        self.scanner.schema_lock = self.cache.schema_lock
        self.keeper.refuse_apply = self._why_not_schema
        self.scanner.on_type_loaded = self._type_loaded
        self.poller.on_schema_change = self.keeper.site_changed
        self.cache.status_sources.append(self._event_status)
        self.cache.status_sources.append(self.scanner.status)
        self.cache.status_sources.append(self.keeper.status)
        self.metrics = Metrics(self)
        self.cache.observe = self.metrics.observe_request
        #: SIGHUP reloads the schema (set by `twistd sgcache`, not in tests)
        self.handle_sighup = False
        #: fires with the client port once it listens (before the site is asked)
        self.listening: defer.Deferred = defer.Deferred()
        self.ready: defer.Deferred = defer.Deferred()
        self.loaded: defer.Deferred = defer.Deferred()
        self._starting: defer.Deferred | None = None
        #: fires when the upstream is up (the demo's in-process emulator)
        self.upstream_ready: defer.Deferred | None = None
        #: under twistd: a start-up failure stops the process with one line
        self.exit_on_start_failure = False
        #: SQLite: the file's one-daemon lock, held until the stop
        self.daemon_lock: DaemonLock | None = None
        self.role = settings.get("role") or "all"
        #: this daemon runs the sync (the poller, the scanner): always on
        #: SQLite, while elected on PostgreSQL
        self.syncing = False
        #: PostgreSQL: this daemon's part among those sharing the store
        #: (`sgcache.cluster`); None on SQLite (it always syncs)
        self.cluster: Cluster | None = Cluster(self) if self.store.dialect == "postgresql" else None
        #: its part in electing the one that syncs (`sgcache.store.leadership`)
        self.leadership = self.cluster.leadership if self.cluster is not None else None
        set_level(settings.get("log_level") or "info")
        upload_mb = settings.get("max_upload_mb", 2048.0)
        limits = Limits(
            request_bytes=int(settings.get("max_request_mb", 16.0) * 2**20),
            relay_bytes=int(upload_mb * 2**20) if upload_mb else None,
            gzip_min_bytes=int(settings.get("gzip_min_kb", 16.0) * 1024) or None,
        )
        rpc = self.rpc = RPCResource(self.cache, limits)
        self.cache.status_sources.append(lambda: {"gzip": rpc.compressor.status(),
                                                  "site_requests": self.upstream.gate.status()})
        site = DaemonSite(rpc.resource(), logPath=settings.get("access_log"),
                          limits=limits)
        self.site = site
        self.listener = internet.StreamServerEndpointService(
            endpoints.serverFromString(reactor, settings["listen"]), site
        )
        self.listener._raiseSynchronously = True
        self.admin_listener = None
        if settings.get("admin_listen"):
            self.admin_listener = internet.StreamServerEndpointService(
                endpoints.serverFromString(reactor, settings["admin_listen"]), admin_site(self)
            )
            self.admin_listener._raiseSynchronously = True
        info_timer = internet.TimerService(settings["info_refresh"], self._refresh_info)
        info_timer.clock = reactor
        info_timer.setServiceParent(self)
        self.info_timer = info_timer

    # -- what the admin listener shows ----------------------------------------
    def readiness(self) -> tuple[bool, list[str]]:
        """(ready, reasons it is not): ready when every cached type is
        served and the event lag is under ``--ready-lag-seconds``."""
        reasons = []
        if not self.cache.serving:
            reasons.append(f"not serving yet: {self.cache.loading_message}")
        lag = self.event_lag()
        limit = self.settings.get("ready_lag_seconds", 300.0)
        if lag is None and self.leadership is not None and not self.syncing:
            reasons.append("no daemon syncing the store was seen recently")
        elif lag is None:
            reasons.append("the event log was never read up to the site's newest event")
        elif limit and lag > limit:
            reasons.append(f"event lag {lag:.0f} s is over --ready-lag-seconds {limit:g}")
        return not reasons, reasons

    def event_lag(self) -> float | None:
        """Seconds since the store was last known complete: this daemon's
        poller's; on PostgreSQL, when it does not sync (or has not read
        the log to its end since it took over), as the daemons that sync
        record it in the store."""
        if self.leadership is None:
            return self.poller.lag_seconds()
        if not self.syncing:
            return self.leadership.leader_lag()
        lag = self.poller.lag_seconds()
        # just elected: as the previous leader left it, until a poll ends
        return lag if lag is not None else self.leadership.leader_lag(others=True)

    def sync_view(self) -> Any:
        """Where the status and the metrics read the event cursor, the holes
        and when the store was last known complete: the poller, or on a
        daemon that does not sync, the store's record of the syncing one's
        (`sgcache.cluster.StoredSync`)."""
        return self.poller if self.cluster is None else self.cluster.sync_view()

    def _event_status(self) -> dict[str, Any]:
        return self.poller.status() if self.cluster is None else self.cluster.poller_status()

    def status_snapshot(self) -> dict[str, Any]:
        """Everything the status page and ``/status.json`` show."""
        from sgcache.web.snapshot import snapshot

        return snapshot(self)

    def _refresh_info(self) -> defer.Deferred:
        if not self.running or self._starting is None or not self._starting.called:
            return defer.succeed(None)
        return defer.ensureDeferred(self._refresh_site())

    def _why_not_schema(self) -> str | None:
        """Only the daemon that syncs changes the store's schema (the
        others follow what it records)."""
        if self.leadership is None or self.syncing:
            return None
        leader = (self.leadership.leader or {}).get("node") or "another daemon"
        return f"this daemon does not sync the store ({leader} does): reload the schema there"

    async def _applied_through(self) -> tuple[int | None, set[int]]:
        """(the stored event cursor, the holes below it): what the store
        holds of the event log, whichever daemon syncs it (shadow checks)."""
        cursor = await self.store.get_state(CURSOR_KEY)
        holes = await self.store.get_state(HOLES_KEY)
        return (None if cursor is None else int(cursor)), {int(h) for h in json.loads(holes or "{}")}

    async def _refresh_site(self) -> None:
        await self.cache.refresh_info()
        if self._why_not_schema():
            return
        # the site's schema is checked with its info: a field the file
        # names that the site lost stops being served
        await self.keeper.check_site("periodic check")

    async def _type_loaded(self, entity_type: str) -> None:
        """A scan loaded a type: serve its fields now."""
        await self.cache.refresh_catalog()

    def _sighup(self) -> None:
        log.info("SIGHUP: reloading the schema")
        d = defer.ensureDeferred(self.keeper.reload("SIGHUP"))
        d.addErrback(lambda f: log.error("schema reload (SIGHUP) refused: {error}", error=f.getErrorMessage()))

    def startService(self) -> None:
        super().startService()
        if self.handle_sighup and hasattr(signal, "SIGHUP"):
            # the handler only hands over to the reactor thread
            signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self._sighup))
        self._starting = defer.ensureDeferred(self._start())
        self._starting.addErrback(self._start_failed)

    async def _start(self) -> None:
        if self.upstream_ready is not None:
            self.upstream.set_base_url(await self.upstream_ready)
        self._lock_sqlite_file()
        try:
            await self.store.open()
        except Exception as e:
            raise ConfigError(f"--db: cannot open the store: {one_line(e)}") from e
        await self.memory.load()
        self.memory.start()
        await self._listen()
        # listening: every call gets an answer from here on (local for what
        # the store holds, else the site's, else a fault naming the cause);
        # systemd may go on -- reading the site and an initial load can take
        # long, and /readyz tells when the cache is loaded and current
        # (once the reactor runs: under twistd this point can come before it
        # installs its SIGTERM handler, and a stop must always be clean)
        self.reactor.callWhenRunning(lifecycle.notify, "READY=1\nSTATUS=listening; reading the site's schema")
        if self.cluster is not None:
            await self.cluster.start()
        else:
            await self.take_over()

    async def take_over(self) -> None:
        """Sync, from the schema on: the start of a lone daemon (SQLite, or
        the one elected at start), or a follower's when it is elected."""
        self.syncing = True
        served = self.keeper.schema  # a follower's: the one the store records
        self.schema = await self._retrying(
            "reading the site's schema", lambda: self.keeper.start(self.file_schema))
        if served is not None:
            # this daemon served by the recorded schema: what the new one
            # drops or retypes stops being served before the store changes
            change = diff_schemas(served, self.schema)
            async with self.cache.schema_lock:
                self.cache.use_schema(self.schema, change.stop_serving())
        self.cache.storage_check = None
        await self.store.sync_schema(self.schema)
        if self.cache.answers.enabled:
            await self.store.track_changes()
        log.info("store {dialect} ready ({types} types, {fields} fields cached)", dialect=self.store.dialect,
                 types=len(self.schema), fields=sum(len(e.fields) for e in self.schema))
        await self.cache.refresh_catalog()
        await self._start_syncing(self.port)

    async def _start_syncing(self, port: Any) -> None:
        """This daemon syncs (SQLite; the elected one on PostgreSQL): the
        site's info, the event cursor, then the initial load."""
        self.syncing = True
        await self.cache.refresh_info()
        if self.cache.info_kept:
            log.warn("the site is unreachable; info answered from the copy kept in the store, reads of what "
                     "the store holds answered for scripts the site vouched for before")
        lifecycle.notify("STATUS=serving what the store holds; " + self.cache.loading_message)
        # the cursor is fixed before any scan, so no change between the scan
        # and the first poll is missed; upstream trouble here is waited out
        await self._retrying("reading the event cursor", self.poller.initialize)
        if not self.ready.called:
            self.ready.callback(port)
        await self._initial_load()

    def _lock_sqlite_file(self) -> None:
        """SQLite: this daemon alone on the file (`sgcache.store.onedaemon`)."""
        path = getattr(self.store, "path", None)
        if self.store.dialect != "sqlite" or not path or path == ":memory:":
            return
        lock = DaemonLock(path)
        try:
            lock.acquire()
        except AlreadyServed as e:
            raise ConfigError(f"--db: {e}") from None
        except OSError as e:
            raise ConfigError(f"--db: cannot open the store: cannot make its lock file {lock.path}: "
                              f"{e.strerror or e}") from None
        self.daemon_lock = lock

    async def _listen(self) -> Any:
        """Open the client port and the admin port; a port that cannot be
        had is a `ConfigError` naming its option. ``--role sync``: no
        client port."""
        port = None
        if self.role != "sync":
            port = await self._open(self.listener, "listen", "serving the Shotgun API")
        self.port = port
        if self.admin_listener is not None:
            self.admin_port = await self._open(self.admin_listener, "admin_listen", "admin listener")
        self.listening.callback(port)
        return port

    async def _open(self, listener: Any, option: str, what: str) -> Any:
        """Start `listener` (the endpoint of ``--<option>``): its port."""
        try:
            listener.setServiceParent(self)
            port = await listener._waitingForPort
        except Exception as e:
            raise ConfigError(f"--{option.replace('_', '-')}: cannot listen on {self.settings[option]}: "
                              f"{one_line(e)}") from e
        log.info("{what} on {host}:{port}", what=what, host=port.getHost().host, port=port.getHost().port)
        return port

    async def _initial_load(self) -> None:
        await self.scanner.load_watermarks()
        # events are applied from the start: a type is served as soon as it
        # is loaded, and must stay current while the others load
        self.poller.start()
        self.pruner.start()
        # a scan a crash interrupted goes on where it stopped
        await self._retrying("resuming an interrupted scan", self.scanner.resume)
        states = await self.store.field_states()
        pending = sorted(
            etype for etype, fields in states.items()
            if any(state != layout.FIELD_READY for state in fields.values())
        )
        if pending:
            self.cache.loading_message = f"initial load of {len(pending)} types"
            log.info("loading {count} entity types from the site; each is served once loaded, reads of "
                     "the others pass through meanwhile", count=len(pending))
            await self.scanner.full_scan(pending)
            await self.cache.refresh_catalog()
        self.scanner.start()
        self.cache.serving = True
        self.cache.loading_message = "serving"
        log.info("store loaded; serving reads from the cache")
        lifecycle.notify("STATUS=serving; every cached type loaded")
        if not self.loaded.called:
            self.loaded.callback(None)

    async def _retrying(self, what: str, op: Any) -> Any:
        """`op()` retried with exponential back-off until it succeeds (or
        the service stops)."""
        from sgcache.site.backoff import Backoff, Sleeper, describe

        backoff, sleeper = Backoff(1.0, 60.0), Sleeper(self.reactor)
        while True:
            try:
                return await op()
            except Exception as e:
                if not self.running:
                    raise
                delay = backoff.next_delay()
                log.warn("{what} failed ({error}); retrying in {delay:.0f}s",
                         what=what, error=describe(e), delay=delay)
                self.cache.loading_message = f"{what}: {describe(e)} (retrying)"
                lifecycle.notify("STATUS=" + self.cache.loading_message[:200])
                await sleeper.sleep(delay)
                if not self.running:
                    raise defer.CancelledError(f"{what}: sgcache is stopping")

    def _start_failed(self, failure: Any) -> None:
        if not self.running:
            # stopped while starting: what failed then is the stop's doing
            log.info("start-up ended by the stop: {error}", error=failure.getErrorMessage()[:300])
            return
        if failure.check(ConfigError):
            log.error("sgcache failed to start: {error}", error=failure.getErrorMessage())
        else:
            log.failure("sgcache failed to start", failure)
        if self.exit_on_start_failure:
            self.exit_failed(failure.getErrorMessage())
            return
        if not self.ready.called:
            self.ready.errback(failure)
        elif not self.loaded.called:
            self.loaded.errback(failure)
        self.cache.loading_message = f"start-up failed: {failure.getErrorMessage()}"

    def exit_failed(self, message: str) -> None:
        """Under twistd: say `message` and stop; the process then leaves
        with status 1."""
        # the real stderr (twistd sends sys.stderr to its log, which has
        # the line already): what a shell or systemd shows as the cause
        err = sys.__stderr__ or sys.stderr
        err.write(f"sgcache: {message}\n")
        err.flush()
        # twistd has no exit status of its own: leave with 1 once the
        # services are stopped, so systemd sees a failure
        self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
        if self.reactor.running:
            self.reactor.stop()
        else:
            # failed while twistd starts its services (SQLite opens
            # synchronously): stop as soon as the reactor runs
            self.reactor.callWhenRunning(self.reactor.stop)

    def stopService(self) -> defer.Deferred:
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        """Stop in a bounded time (``--stop-timeout``): whatever has not
        ended by then is cut, and the stop goes on."""
        limit = float(self.settings.get("stop_timeout") or 10.0)
        deadline = self.reactor.seconds() + limit
        left = lambda share=1.0: max(0.0, (deadline - self.reactor.seconds()) * share)  # noqa: E731
        lifecycle.notify("STOPPING=1")
        # not running from here on (a start-up step waiting on the site ends)
        closing = service.MultiService.stopService(self)
        if self._starting is not None and not self._starting.called:
            self._starting.cancel()
        self.keeper.stop()
        self.shadow.stop()
        stopping = [self.poller.stop(), self.scanner.stop(), self.pruner.stop()]
        # listeners close; requests in progress get half the time left
        await lifecycle.within(self.reactor, left(0.5), closing, "closing the ports")
        cut = await self.site.connections.drain(self.reactor, left(0.5))
        if cut:
            log.warn("stopping: {count} requests still in progress were cut", count=cut)
        # a poll or scan waiting on a slow site ends now, not at its timeout
        self.upstream.abandon_calls()
        await lifecycle.within(self.reactor, left(0.5), defer.DeferredList(stopping, consumeErrors=True),
                               "the poller and the scanner")
        if self.cluster is not None:
            # the sync stopped: another daemon may take it over now
            await lifecycle.within(self.reactor, left(0.3), self.cluster.stop(), "leaving the election")
        await lifecycle.within(self.reactor, left(0.3), self.memory.stop(), "keeping the credentials")
        await lifecycle.within(self.reactor, left(0.5), self.upstream.close(), "closing connections to the site")
        if not await lifecycle.within(self.reactor, left(), self.store.close(), "closing the store"):
            abort = getattr(self.store, "abort", None)
            if abort is not None:
                abort()
        if self.daemon_lock is not None:
            self.daemon_lock.release()


def _exit_failed() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
