"""The production store: PostgreSQL through txpostgres (psycopg2 in async
mode, no threads). What it needs of txpostgres's internals is in one place,
`sgcache.store.pgadapter`.

Two small pools: clients' reads run on the read pool (`read`; size
``--pg-pool-size``), whose connections stop any statement that runs past
the read budget (``statement_timeout``); writes and the cache's own queries
(`fetch`) run on the sync pool, so neither waits for the other.
Each connection has its own dead-connection detector: when the server drops
it (restart, ``pg_terminate_backend``, network cut) the connection reconnects
in the background with backoff, and the pool hands out live connections
first. Operations that fail because their connection died are retried a few
times; that is safe for writes too, because `apply` is idempotent (links are
set-like, stale changes are refused by updated_at).

Reads run as statements prepared once per connection (`prepared`), which
saves PostgreSQL parsing and planning them each time.

Writes (apply, schema sync, state) are serialized within the process and
lock the rows they read (``SELECT ... FOR UPDATE``) against other processes.
Those that may change a read's answer end with ``NOTIFY sgcache_changes``;
a daemon (`track_changes`) listens on a connection of its own, so that
`read_generation` moves when another process wrote, and is None while that
connection is down.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
from twisted.internet import defer, task
from twisted.python.failure import Failure
from zope.interface import implementer

from sgcache.logs import logger
from sgcache.schema import Schema
from sgcache.schema.changes import EntityChange
from sgcache.store import layout
from sgcache.store.apply import ApplyResult, apply_changes, set_field_states
from sgcache.store.catalog import (
    META_FIELDS_GENERATION,
    Synced,
    current_synced,
    describe_storage,
    load_recorded,
    ensure_layout,
    load_synced,
    log_sync_summary,
    read_field_states,
    sync_schema,
    write_state,
)
from sgcache.store.dialect import POSTGRESQL
from sgcache.store.interface import IStore, ReadTimeout, StoreError, returns_deferred
from sgcache.store.leadership import FENCE_SQL, LAYOUT_LOCK_KEY, Deposed
from sgcache.store.pgadapter import (
    Listener,
    ListenerDetector,
    Pool,
    connection_failed,
    first_line,
    to_pyformat,
)
from sgcache.store.queries import NamedQueries, analyze_statements, count_sql, ids_sql, require_type
from sgcache.store import readstamps, shadowlog
from sgcache.store.updatelog import clock_now, prune_update_log

log = logger(__name__)

T = TypeVar("T")

#: every write that may change a read's answer notifies this channel on commit
CHANGES_CHANNEL = "sgcache_changes"
#: and a change of the stored schema or of field states this one too (other
#: daemons follow the catalog: `on_catalog_change`)
CATALOG_CHANNEL = "sgcache_catalog"

#: moved, in the same transaction, by every write that may change a read's
#: answer (`data_generation`: kept answers across daemons)
DATA_GENERATION_KEY = "data_generation"
DATA_GENERATION_BUMP = (
    f"INSERT INTO _sgcache_meta (key, value) VALUES ('{DATA_GENERATION_KEY}', '1') ON CONFLICT (key) "
    "DO UPDATE SET value = (_sgcache_meta.value::bigint + 1)::text"
)

#: ``_sgcache_state`` keys a daemon writes for itself (the site's info, the
#: credentials it vouched for): not sync state, never fenced
NODE_STATE_KEYS = frozenset({"site_info", "site_credentials"})

#: TCP keepalives for the listening connection, which is idle for hours: a
#: firewall that drops idle connections' state would otherwise cut it
#: silently (notifications lost, nobody told); with them a dead peer is found
#: within about a minute, and the connection reconnects. (No effect over a
#: unix socket.)
_LISTENER_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                        "keepalives_count": 3}

#: connections for clients' reads, by default (--pg-pool-size)
DEFAULT_READ_POOL = 4
#: connections for writes and the cache's own queries: one write at a time
#: (writes are serialized) and one query beside it
SYNC_POOL = 2

def _wrote(result: ApplyResult) -> bool:
    """An apply's transaction may change what a read answers."""
    return result.written > 0


def _changed(changed: bool) -> bool:
    """A transaction that says whether it wrote something."""
    return changed


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class _Cursor:
    """`SQLCursor` over a txpostgres cursor inside runInteraction."""

    dialect = POSTGRESQL

    def __init__(self, cursor: Any):
        self._cursor = cursor

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        c = await self._cursor.execute(to_pyformat(sql), tuple(params))
        return c.fetchall() if c.description is not None else []

    async def table_columns(self, table_name: str) -> set[str]:
        rows = await self.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(?) "
            "AND attnum > 0 AND NOT attisdropped",
            [layout.quote(table_name)],
        )
        return {row[0] for row in rows}

    async def table_names(self) -> set[str]:
        rows = await self.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {row[0] for row in rows}

    async def table_indexes(self, table_name: str) -> dict[str, str]:
        # the primary key's index belongs to the table, not to a field; told
        # by pg_index, not by its name (the server shortens "<table>_pkey"
        # to 63 bytes for a long table name)
        rows = await self.execute(
            "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index x "
            "JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = to_regclass(?) AND NOT x.indisprimary",
            [layout.quote(table_name)])
        return {row[0]: row[1] for row in rows}

    async def drop_column(self, table_name: str, column: str) -> None:
        # indexes on the column (keys or predicate) go with it
        await self.execute(f"ALTER TABLE {layout.quote(table_name)} DROP COLUMN {layout.quote(column)}")


class _ReadCursor:
    """`SQLCursor` for read-only shared queries outside a transaction."""

    dialect = POSTGRESQL

    def __init__(self, store: "PostgresStore"):
        self._store = store

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self._store.fetch(sql, params)

    async def table_columns(self, table_name: str) -> set[str]:
        raise NotImplementedError


@implementer(IStore)
class PostgresStore(NamedQueries):
    """`IStore` on a PostgreSQL database given by a libpq URL."""

    dialect = "postgresql"
    #: reads wait on the server, the reactor serves others meanwhile
    reads_block = False

    def __init__(self, dsn: str, reactor: Any, pool_size: int = DEFAULT_READ_POOL, attempts: int = 8):
        self.dsn = dsn
        self._reactor = reactor
        #: connections for clients' reads (`read`)
        self._pool_size = max(1, pool_size)
        #: tries of one operation whose connection keeps dying
        self._attempts = max(1, attempts)
        #: the sync pool: writes and the cache's own queries (`fetch`)
        self._pool: Pool | None = None
        #: the read pool: clients' reads, under statement_timeout
        self._read_pool: Pool | None = None
        self._read_budget: float | None = None
        self._synced: Synced | None = None
        self._write_lock = defer.DeferredLock()
        #: moves on every write of this process and every notification of
        #: another's (see read_generation)
        self._generation = 0
        self._listener: Listener | None = None
        #: the listener is connected and listening
        self._listening = False
        #: operations retried on a dead connection (the metrics)
        self.connection_retries = 0
        #: what the last successful `apply` did (see IStore.last_apply)
        self.last_apply: ApplyResult | None = None
        #: applied changes that wrote something / nothing, since created
        #: (see IStore.rows_written)
        self.rows_written = 0
        self.rows_unchanged = 0
        #: the leader epoch this daemon syncs at (`sgcache.store.leadership`):
        #: when set, every sync transaction checks it first and fails with
        #: `Deposed` once another daemon was elected; None: not fenced
        self.fence_epoch: int | None = None
        #: called when another daemon changed the stored schema or field
        #: states (a notification on `CATALOG_CHANNEL`)
        self.on_catalog_change: Callable[[], Any] | None = None
        #: the daemon's shared read fence (`sgcache.sync.freshness.SharedFreshness`
        #: sets itself here), whose floor the election rounds record
        self.read_fence: Any = None

    def __repr__(self) -> str:
        return f"<PostgresStore {redact(self.dsn)}>"

    # -- plumbing ----------------------------------------------------------------
    def _the_pool(self) -> Pool:
        if self._pool is None:
            raise StoreError(f"{redact(self.dsn)}: the store is not open")
        return self._pool

    def _the_read_pool(self) -> Pool:
        if self._read_pool is None:
            raise StoreError(f"{redact(self.dsn)}: the store is not open")
        return self._read_pool

    def _retriable(self, error: BaseException, attempt: int) -> bool:
        return self._pool is not None and connection_failed(error) and attempt < self._attempts

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]],
                        first_error: BaseException | None = None) -> T:
        """Run `op`, again when its connection died (a few times, backing off
        once every pooled connection had its chance). `first_error`: `op`
        already failed once with it (and `_retriable` said so)."""
        attempt = 1
        error = first_error
        while True:
            if error is not None:
                delay = 0.0 if attempt < SYNC_POOL else min(0.1 * 2 ** (attempt - SYNC_POOL), 2.0)
                log.info(
                    "{what} failed on a dead PostgreSQL connection ({error}); retry {attempt}",
                    what=what, error=first_line(error), attempt=attempt,
                )
                attempt += 1
                self.connection_retries += 1
                # Even with no delay, let the reactor notice closed sockets.
                await task.deferLater(self._reactor, delay, lambda: None)
            try:
                return await op()
            except Exception as e:
                if not self._retriable(e, attempt):
                    raise
                error = e

    async def _transaction(self, what: str, work: Callable[[_Cursor], Awaitable[T]],
                           changes_reads: bool | Callable[[T], bool] = True, fenced: bool = False,
                           catalog: bool | Callable[[T], bool] = False) -> T:
        """Run `work` in one transaction (serialized with other writes).
        `changes_reads`: it may change what a read answers (not only
        bookkeeping state): it notifies listeners (`CHANGES_CHANNEL`) on
        commit, and the read generation moves. A callable says so of
        `work`'s result, attempt by attempt: the generation moves if any
        attempt (maybe committed before its connection died) said so, or
        failed before it could say. `fenced`: a sync transaction, refused
        (`Deposed`) unless this daemon still leads at `fence_epoch`.
        `catalog`: it may change the stored schema or field states (other
        daemons are told on `CATALOG_CHANNEL`)."""
        moved = [changes_reads is True]
        epoch = self.fence_epoch if fenced else None

        async def notifying(cur: _Cursor) -> T:
            if epoch is not None:
                rows = await cur.execute(FENCE_SQL)
                if not rows or int(rows[0][0]) != epoch:
                    raise Deposed(f"{what} refused: this daemon no longer leads the sync (its epoch "
                                  f"{epoch}, the store's {rows[0][0] if rows else None})")
            try:
                result = await work(cur)
            except BaseException:
                moved[0] = moved[0] or changes_reads is not False
                raise
            changes = changes_reads(result) if callable(changes_reads) else changes_reads
            if changes:
                moved[0] = True
                await cur.execute(DATA_GENERATION_BUMP)
                await cur.execute(f"NOTIFY {CHANGES_CHANNEL}")
            if catalog(result) if callable(catalog) else catalog:
                await cur.execute(f"NOTIFY {CATALOG_CHANNEL}")
            return result

        def once() -> defer.Deferred:
            return self._the_pool().runInteraction(
                lambda c: defer.ensureDeferred(notifying(_Cursor(c)))
            )

        async def locked() -> T:
            try:
                return await self._retrying(what, once)
            finally:
                # committed, or maybe committed (a connection lost during
                # COMMIT): either way answers read before may be stale
                if moved[0]:
                    self._generation += 1

        return await self._write_lock.run(lambda: defer.ensureDeferred(locked()))

    def pool_stats(self) -> dict[str, dict[str, int]]:
        """Per pool ("read", "sync"): connections, in use, requests waiting."""
        out = {}
        for name, pool in (("read", self._read_pool), ("sync", self._pool)):
            if pool is None:
                continue
            semaphore = pool._semaphore
            out[name] = {
                "size": semaphore.limit,
                "in_use": semaphore.limit - semaphore.tokens,
                "waiting": len(semaphore.waiting),
            }
        return out

    # -- IStore -----------------------------------------------------------------------
    @returns_deferred
    async def open(self) -> None:
        if self._pool is not None:
            return
        budget_ms = None if self._read_budget is None else max(1, int(self._read_budget * 1000))
        pool = Pool(self._reactor, self.dsn, SYNC_POOL)
        read_pool = Pool(self._reactor, self.dsn, self._pool_size, statement_timeout_ms=budget_ms)
        results = await defer.DeferredList(
            [c.connect(*p.connargs, **p.connkw) for p in (pool, read_pool) for c in p.connections],
            consumeErrors=True,
        )
        errors = [r for ok, r in results if not ok]
        if errors:
            await pool.shut()
            await read_pool.shut()
            raise StoreError(
                f"cannot connect to PostgreSQL at {redact(self.dsn)}: {first_line(errors[0].value)}"
            )
        self._pool = pool
        self._read_pool = read_pool
        try:
            await self._transaction(
                "open", self._ensure_layout
            )
            self._synced = await load_synced(_ReadCursor(self))
            ctype = (await self.fetch("SHOW lc_ctype", []))[0][0]
        except BaseException:
            self._pool = self._read_pool = None
            await pool.shut()
            await read_pool.shut()
            raise
        if ctype.upper() in ("C", "POSIX"):
            log.warn(
                "database lc_ctype is {ctype}: lower() folds only ASCII, so "
                "case-insensitive filters on non-ASCII text differ from Shotgun; "
                "create the database with a UTF-8 locale (e.g. C.UTF-8)",
                ctype=ctype,
            )
        log.info("opened PostgreSQL store {url}", url=redact(self.dsn))

    async def _ensure_layout(self, cur: _Cursor) -> None:
        """`ensure_layout`, one daemon at a time: several starting on a new
        database would each create the bookkeeping tables (a transaction
        lock, released at commit)."""
        await cur.execute(f"SELECT pg_advisory_xact_lock({LAYOUT_LOCK_KEY})")
        await ensure_layout(cur, redact(self.dsn))
        await readstamps.ensure(cur)

    @returns_deferred
    async def track_changes(self) -> None:
        """Start hearing other processes' writes (a connection of its own,
        ``LISTEN``), so that `read_generation` can say when they happened.
        When that connection cannot be made, `read_generation` stays None
        (logged)."""
        pool = self._the_pool()
        if self._listener is not None:
            return
        listener = Listener(
            self._reactor, detector=ListenerDetector(self._reactor, self._listener_lost),
            on_notify=self._heard,
        )
        listener.detector.addRecoveryHandler(lambda: defer.ensureDeferred(self._listen(listener)))
        self._listener = listener
        try:
            await listener.connect(*pool.connargs, **pool.connkw, **_LISTENER_KEEPALIVES)
        except Exception as e:
            log.warn("cannot hear other processes' writes ({error}): answers to repeated "
                     "reads are not reused", error=first_line(e))
            self._listener = None
            return
        await self._listen(listener)

    async def _listen(self, listener: Listener) -> None:
        try:
            await listener.runOperation(f"LISTEN {CHANGES_CHANNEL}")
            await listener.runOperation(f"LISTEN {CATALOG_CHANNEL}")
        except Exception as e:
            # a lost connection is reconnected by its detector, which
            # calls this again
            log.warn("LISTEN {channel} failed ({error}); answers to repeated reads are not "
                     "reused meanwhile", channel=CHANGES_CHANNEL, error=first_line(e))
            return
        if listener is self._listener:
            # what was written while nobody listened is unknown
            self._generation += 1
            self._listening = True
            if self.on_catalog_change is not None:
                self.on_catalog_change()

    def _listener_lost(self) -> None:
        # read_generation is None from here; it moves on when listening again
        self._listening = False

    def _heard(self, channels: set[str]) -> None:
        self._generation += 1
        if CATALOG_CHANNEL in channels and self.on_catalog_change is not None:
            self.on_catalog_change()

    def read_generation(self) -> Any:
        """A token that differs whenever a read may answer differently than
        when the token was taken: a write by this process, a notification
        of another's. None while other processes' writes cannot be heard
        (before `track_changes`, or while its connection is down)."""
        return self._generation if self._listening else None

    @returns_deferred
    async def close(self) -> None:
        listener, self._listener = self._listener, None
        self._listening = False
        if listener is not None:
            await listener.detector.stop()
            listener.close()
        pool, read_pool = self._pool, self._read_pool
        if pool is None:
            return
        self._read_pool = None
        if read_pool is not None:
            await read_pool.shut()
        await self._write_lock.acquire()
        try:
            self._pool = None
            self._synced = None
            await pool.shut()
        finally:
            self._write_lock.release()

    def abort(self) -> None:
        """Drop every connection now, whatever runs on them (a stop that
        ran out of time: `close` waits for the write in progress)."""
        pools = [p for p in (self._pool, self._read_pool) if p is not None]
        listener, self._listener = self._listener, None
        self._pool = self._read_pool = None
        self._listening = False
        conns = [c for p in pools for c in p.every] + ([listener] if listener is not None else [])
        for conn in conns:
            detector = getattr(conn, "detector", None)
            if detector is not None:
                detector._stopped = True
                if getattr(detector, "_sleep", None) is not None:
                    detector._sleep.cancel()
            try:
                conn.close()
            except Exception:
                pass

    @returns_deferred
    async def sync_schema(self, schema: Schema) -> dict:
        summary = await self._transaction("sync_schema", lambda cur: sync_schema(cur, schema), fenced=True,
                                          catalog=lambda summary: any(summary.values()))
        self._synced = await load_synced(_ReadCursor(self))
        log_sync_summary(summary)
        return summary

    @returns_deferred
    async def recorded_schema(self) -> Schema:
        return await load_recorded(_ReadCursor(self))

    @returns_deferred
    async def describe_storage(self) -> dict:
        return await self._transaction("describe_storage", lambda cur: describe_storage(cur))

    @returns_deferred
    async def field_states(self) -> dict[str, dict[str, str]]:
        return await read_field_states(_ReadCursor(self))

    @returns_deferred
    async def set_field_states(
        self, entity_type: str, fields: list[str] | None, state: str
    ) -> None:
        await self._transaction(
            "set_field_states",
            lambda cur: set_field_states(cur, entity_type, fields, state),
            changes_reads=_changed, fenced=True, catalog=_changed,
        )

    @returns_deferred
    async def data_generation(self) -> str:
        """The store's data generation: it moves with every committed write
        that may change a read's answer, whichever process made it (read
        after a write committed, it differs from one read before)."""
        return await self._meta_counter(DATA_GENERATION_KEY)

    @returns_deferred
    async def storage_generation(self) -> str:
        """The stored schema's generation (moves with every change of tables
        or columns, in the transaction that makes it): a read that ran on a
        catalog built at another generation may have read storage that was
        dropped or replaced."""
        return await self._meta_counter(META_FIELDS_GENERATION)

    async def _meta_counter(self, key: str) -> str:
        """A counter of ``_sgcache_meta`` ("0" before it first moved), read
        on the read pool."""
        rows = await self.read(f"SELECT value FROM _sgcache_meta WHERE key = '{key}'", [])
        return rows[0][0] if rows else "0"

    @returns_deferred
    async def apply(
        self, changes: Sequence[EntityChange], state: dict[str, str] | None = None,
        ticket: int | None = None,
    ) -> int:
        async def work(cur: _Cursor) -> ApplyResult:
            synced = await current_synced(cur, self._synced)
            self._synced = synced
            todo: Sequence[EntityChange] = changes
            fresher: set[tuple[str, int]] = set()
            if ticket is not None and changes:
                # the shared read fence, first: it orders the applies of
                # one entity across daemons (`sgcache.store.readstamps`)
                todo, fresher = await readstamps.fence_changes(cur, changes, ticket, synced.types)
            result = await apply_changes(
                cur, synced, todo, state, now=clock_now(self._reactor)
            )
            result.skipped_fresher = len(changes) - len(todo)
            result.fresher = fresher
            return result

        result = await self._transaction("apply", work, changes_reads=_wrote, fenced=bool(state))
        self.last_apply = result
        self.rows_written += result.written
        self.rows_unchanged += result.unchanged
        return result.applied

    def take_ticket(self) -> defer.Deferred:
        """A read ticket (`sgcache.store.readstamps`): one ``nextval``, on
        the sync pool beside a write in progress."""
        return self.fetch(readstamps.TICKET_SQL).addCallback(lambda rows: int(rows[0][0]))

    @returns_deferred
    async def prune_read_stamps(self, grace: float, batch: int = readstamps.PRUNE_BATCH) -> int:
        """Raise the read-stamp horizon to the least floor of the daemons
        seen in the last `grace` seconds and delete the stamps below it, a
        batch per transaction (each short: applies wait for none); how
        many went. It stops where another daemon's prune holds the prune
        lock (`readstamps.PRUNE_LOCK_KEY`)."""
        below = await self._transaction(
            "prune_read_stamps", lambda cur: readstamps.raise_horizon(cur, grace), changes_reads=False)
        if below is None:
            return 0
        total = 0
        while True:
            gone = await self._transaction(
                "prune_read_stamps", lambda cur: readstamps.delete_below(cur, below, batch),
                changes_reads=False)
            if gone is None:
                return total
            total += gone
            if gone < batch:
                return total

    @returns_deferred
    async def prune_update_log(self, before: float) -> int:
        """Drop update-log entries older than `before` (epoch seconds)."""
        return await self._transaction(
            "prune_update_log", lambda cur: prune_update_log(cur, before), changes_reads=False
        )

    @returns_deferred
    async def record_shadow_mismatch(self, entry: dict[str, Any]) -> None:
        """Keep one shadow check's mismatch (`sgcache.store.shadowlog`)."""
        await self._transaction("record_shadow_mismatch", lambda cur: shadowlog.record_mismatch(cur, entry),
                                changes_reads=False)

    @returns_deferred
    async def shadow_mismatches(self) -> list[dict[str, Any]]:
        return shadowlog.rows_to_entries(await self.fetch(shadowlog.LIST_SQL))

    @returns_deferred
    async def clear_shadow_mismatches(self) -> int:
        return await self._transaction("clear_shadow_mismatches", shadowlog.clear_mismatches,
                                       changes_reads=False)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> defer.Deferred:
        """The rows of a read. Not a coroutine: a read is one Deferred from
        the connection that runs it, with the retry loop joined only when
        that connection turns out dead (the common path stays short)."""
        def op() -> defer.Deferred:
            return self._the_pool().runPrepared(sql, params)

        def again(f: Failure) -> Any:
            if not self._retriable(f.value, 1):
                return f
            return defer.ensureDeferred(self._retrying("fetch", op, first_error=f.value))

        return defer.maybeDeferred(op).addErrback(again)

    def set_read_budget(self, seconds: float | None) -> None:
        self._read_budget = seconds if seconds and seconds > 0 else None

    def read(self, sql: str, params: Sequence[Any] = ()) -> defer.Deferred:
        """A statement of a client's read, on the read pool, whose
        connections stop any statement after the read budget
        (``statement_timeout``): it then fails with `ReadTimeout`."""
        def stopped(f: Failure) -> Any:
            if f.check(psycopg2.extensions.QueryCanceledError):
                raise ReadTimeout(first_line(f.value))
            return f

        def op() -> defer.Deferred:
            return self._the_read_pool().runPrepared(sql, params).addErrback(stopped)

        def again(f: Failure) -> Any:
            if not self._retriable(f.value, 1):
                return f
            return defer.ensureDeferred(self._retrying("read", op, first_error=f.value))

        return defer.maybeDeferred(op).addErrback(again)

    @returns_deferred
    async def get_state(self, key: str) -> str | None:
        rows = await self.fetch("SELECT value FROM _sgcache_state WHERE key = ?", [key])
        return rows[0][0] if rows else None

    @returns_deferred
    async def set_state(self, items: dict[str, str]) -> None:
        await self._transaction("set_state", lambda cur: write_state(cur, items), changes_reads=False,
                                fenced=not set(items) <= NODE_STATE_KEYS)

    async def _require_type(self, entity_type: str) -> None:
        if self._synced is None or entity_type not in self._synced.types:
            self._synced = await load_synced(_ReadCursor(self))
        require_type(self._synced, entity_type)

    @returns_deferred
    async def count(self, entity_type: str, active: bool | None = None) -> int:
        await self._require_type(entity_type)
        sql, params = count_sql(entity_type, active)
        return int((await self.fetch(sql, params))[0][0])

    @returns_deferred
    async def ids(self, entity_type: str) -> list[int]:
        await self._require_type(entity_type)
        return [row[0] for row in await self.fetch(ids_sql(entity_type), [])]

    @returns_deferred
    async def analyze(self, entity_type: str) -> None:
        await self._require_type(entity_type)
        assert self._synced is not None

        async def work(cur: Any) -> None:
            for stmt in analyze_statements(self._synced, entity_type):
                await cur.execute(stmt)

        await self._transaction("analyze", work, changes_reads=False)
