"""The production store: PostgreSQL through txpostgres (psycopg2 in async
mode, no threads).

Two small pools: clients' reads run on the read pool (`read`; size
``--pg-pool-size``), whose connections stop any statement that runs past
the read budget (``statement_timeout``); writes and the cache's own queries
(`fetch`) run on the sync pool, so neither waits for the other.
Each connection has its own dead-connection detector: when the server drops
it (restart, ``pg_terminate_backend``, network cut) the connection reconnects
in the background with backoff, and the pool hands out live connections
first. Operations that fail because their connection died are retried a few
times; that is safe for writes too, because `apply` is idempotent (links are
set-like, stale changes are refused by event id / updated_at).

Two txpostgres behaviours are made quiet, because nobody is waiting for
their errors: an idle connection dropped by the server (its ``doRead`` would
raise into the reactor, which logs an unhandled error) and a failed ROLLBACK
on a dead connection (it would ``log.err``). Both now just hand the failure
to the detector, which reconnects.

Reads (`fetch`) run as statements prepared once per connection
(`prepared`), which saves PostgreSQL parsing and planning them each time,
and take a shorter path than txpostgres's runQuery (`quick_query`).

Writes (apply, schema sync, state) are serialized within the process and
lock the rows they read (``SELECT ... FOR UPDATE``) against other processes.
Those that may change a read's answer end with ``NOTIFY sgcache_changes``;
a daemon (`track_changes`) listens on a connection of its own, so that
`read_generation` moves when another process wrote, and is None while that
connection is down.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterator, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.extensions
from twisted.internet import defer, task
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres
from zope.interface import implementer

from sgcache.schema.changes import EntityChange
from sgcache.schema import Schema
from sgcache.store import layout, prepared
from sgcache.store.apply import ApplyResult, apply_changes
from sgcache.store.catalog import Synced, current_synced, ensure_layout, load_synced, read_field_states, sync_schema, write_field_states, write_state
from sgcache.store.dialect import POSTGRESQL
from sgcache.store.interface import IStore, ReadTimeout, StoreError, returns_deferred
from sgcache.store.queries import NamedQueries, analyze_statements, count_sql, ids_sql, require_type
from sgcache.store.updatelog import clock_now, prune_update_log
from sgcache.logs import logger

log = logger(__name__)

T = TypeVar("T")

#: every write that may change a read's answer notifies this channel on commit
CHANGES_CHANNEL = "sgcache_changes"

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

#: psycopg2 errors that say nothing about the connection itself.
_NOT_FATAL = (
    psycopg2.extensions.TransactionRollbackError,
    psycopg2.extensions.QueryCanceledError,
)


@prepared.memoized_short
def to_pyformat(sql: str) -> str:
    """Turn ``?`` placeholders into psycopg2's ``%s`` and escape literal
    ``%`` (psycopg2 formats the whole string). ``?`` inside quoted literals
    and identifiers is left alone."""
    return prepared.rewrite_placeholders(sql, lambda n: "%s")


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


def connection_failed(failure_or_exc: Failure | BaseException) -> bool:
    """True when an error means the connection died (worth a retry)."""
    exc = failure_or_exc.value if isinstance(failure_or_exc, Failure) else failure_or_exc
    if isinstance(exc, _NOT_FATAL):
        return False
    return isinstance(
        exc,
        (
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
            txpostgres.RollbackFailed,
            reconnection.ConnectionDead,
        ),
    )


def _backoff() -> Iterator[float]:
    return retrying.simpleBackoffIterator(
        initialDelay=0.2, maxDelay=10.0, factor=2.0, maxRetries=0, now=True
    )


class _Detector(reconnection.DeadConnectionDetector):
    """Reconnects a dead connection with backoff; stoppable, and quiet."""

    def __init__(self, reactor: Any):
        super().__init__(
            deathChecker=connection_failed, reconnectionIterator=_backoff, reactor=reactor
        )
        self._stopped = False
        self._loop: defer.Deferred | None = None
        self._sleep: defer.Deferred | None = None

    def checkForDeadConnection(self, f: Failure) -> Failure:
        if self._stopped:
            return f
        return super().checkForDeadConnection(f)

    def startReconnecting(self, f: Failure) -> None:
        log.warn("PostgreSQL connection lost ({reason}); reconnecting", reason=_line(f.value))
        self._loop = defer.ensureDeferred(self._reconnect())

    async def _reconnect(self) -> None:
        for attempt, delay in enumerate(self.reconnectionIterator(), 1):
            if delay:
                self._sleep = task.deferLater(self.reactor, delay, lambda: None)
                try:
                    await self._sleep
                except defer.CancelledError:
                    return
                finally:
                    self._sleep = None
            if self._stopped:
                return
            try:
                await self.reconnect()
            except Exception as e:
                log.info(
                    "PostgreSQL reconnect attempt {attempt} failed: {error}",
                    attempt=attempt, error=_line(e),
                )
                continue
            if self._stopped:
                return
            log.info("PostgreSQL connection re-established")
            await self.connectionRecovered()
            return

    async def stop(self) -> None:
        self._stopped = True
        if self._sleep is not None:
            self._sleep.cancel()
        if self._loop is not None:
            try:
                await self._loop
            except Exception:
                pass


class _Connection(txpostgres.Connection):
    """A txpostgres connection whose failures go to its caller or its
    detector, never to the reactor's unhandled-error log."""

    #: the reactor is reporting a connection readable and no poll has
    #: finished in that event yet (see continuePolling)
    _in_event = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.statements = prepared.SessionStatements()
        self._cancelled_by_caller = False

    # txpostgres turns every QueryCanceledError into a CancelledError, as if
    # the caller had cancelled the query. A statement the server stopped
    # itself (statement_timeout: the read budget; an operator's
    # pg_cancel_backend) stays a QueryCanceledError here, so a read over its
    # budget is told from a client that went away.
    def poll(self) -> defer.Deferred:
        self._cancelled_by_caller = False
        return txpostgres.Connection.poll(self)

    def _cancel(self, d: defer.Deferred) -> None:
        self._cancelled_by_caller = True
        txpostgres.Connection._cancel(self, d)

    def _handleCancellation(self, f: Failure) -> Failure:
        if self._cancelled_by_caller:
            return txpostgres.Connection._handleCancellation(self, f)
        return f

    def run_prepared(self, sql: str, params: Sequence[Any]) -> defer.Deferred:
        """`sql` (``?`` placeholders) run as a statement prepared on this
        session, or as text when it cannot be (see `prepared`)."""
        args = tuple(params)
        key = prepared.statement_key(sql, args)
        if key is not None:
            self.statements.bind(self._connection)
            text = self.statements.query(key)
            if text is not None:
                query, preparing = text

                def as_text(f: Failure) -> Any:
                    if connection_failed(f.value) or f.check(psycopg2.extensions.QueryCanceledError):
                        # a dead connection is retried elsewhere; a read
                        # stopped by statement_timeout is not run again
                        return f
                    self.statements.failed(key, preparing)
                    log.debug("prepared statement failed, running the query as text: {error}",
                              error=_line(f.value))
                    return self.quick_query(to_pyformat(sql), args)

                return self.quick_query(query, args).addErrback(as_text)
        return self.quick_query(to_pyformat(sql), args)

    def quick_query(self, query: str, params: tuple) -> defer.Deferred:
        """txpostgres's runQuery without its per-query cursor wrapper and
        lock, for a connection the pool handed out (so nothing else runs on
        it): the connection polls its own query."""
        if self.detector.connectionIsDead:
            return defer.fail(reconnection.ConnectionDead())
        # Not a reader while the query starts (txpostgres's cursors do the
        # same): when execute() or the first poll() finds the server gone,
        # libpq closes the socket, and a reactor registration left on a
        # closed fd is found again by the next socket given that number.
        self.reactor.removeReader(self)
        try:
            cursor = self._connection.cursor()
            cursor.execute(query, params)
        except Exception:
            d = defer.fail()
        else:
            d = self.poll()
            d.addCallback(lambda _: cursor.fetchall())
        d.addBoth(self._watch_idle)
        return d.addErrback(self.detector.checkForDeadConnection)

    def _watch_idle(self, result: Any) -> Any:
        """Back among the reactor's readers, as txpostgres keeps an idle
        connection (to hear NOTIFY, or the server closing it)."""
        if self._connection is not None and not self._connection.closed:
            self.reactor.addReader(self)
        return result

    def continuePolling(self, swallowErrors: bool = False) -> None:
        """txpostgres's, except that the first poll to finish while the
        reactor reports the socket readable fires its Deferred at once, not
        on the reactor's next turn (one loop iteration less per read).

        txpostgres always waits a turn, against reentrancy: the callbacks
        may start the next read, on this connection or another. That is fine
        here (nothing touches the connection after this returns but
        txpostgres's doRead, which re-adds it as a reader when still open),
        but such a read may finish within its own first poll (under load the
        answer can be there already), and firing that one at once too would
        nest one stack level per queued read: every finish but the first of
        a reactor event waits a turn."""
        if self._pollingD is not None and not self._connection.closed:
            try:
                state = self._connection.poll()
            except Exception:
                d, self._pollingD = self._pollingD, None
                self.reactor.callLater(0, d.errback, Failure())
                return
            if state == psycopg2.extensions.POLL_OK:
                d, self._pollingD = self._pollingD, None
                if _Connection._in_event:
                    _Connection._in_event = False
                    d.callback(self)
                else:
                    self.reactor.callLater(0, d.callback, self)
            elif state == psycopg2.extensions.POLL_READ:
                self.reactor.addReader(self)
            elif state == psycopg2.extensions.POLL_WRITE:
                self.reactor.addWriter(self)
            else:
                d, self._pollingD = self._pollingD, None
                self.reactor.callLater(0, d.errback, txpostgres.UnexpectedPollResult())
            return
        txpostgres.Connection.continuePolling(self, swallowErrors)

    def doRead(self) -> Any:
        _Connection._in_event = True
        try:
            return txpostgres.Connection.doRead(self)
        except psycopg2.Error as e:
            # The server closed an idle connection. Returning the error makes
            # the reactor call connectionLost with it, so the detector
            # reconnects.
            return e
        finally:
            _Connection._in_event = False

    def close(self) -> None:
        if self._connection is None:
            return
        txpostgres.Connection.close(self)

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        c = self.cursor()
        d = c.execute("begin")
        d.addCallback(interaction, *args, **kwargs)

        def commit(ret: Any) -> Any:
            return c.execute("commit").addCallback(lambda _: ret)

        def rollback(f: Failure) -> Any:
            e = defer.maybeDeferred(c.execute, "rollback")

            def panic(rf: Failure) -> Failure:
                log.info("ROLLBACK failed: {error}", error=_line(rf.value))
                return Failure(txpostgres.RollbackFailed(self, f))

            e.addCallbacks(lambda _: f, panic)
            return e

        d.addCallback(commit)
        d.addErrback(rollback)
        return d


class _Listener(_Connection):
    """The connection that hears other processes' writes (``LISTEN``).
    Notifications are taken as they arrive (in the reactor event that read
    them), not through txpostgres's cooperator a turn later."""

    def __init__(self, *args: Any, on_notify: Callable[[], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_notify = on_notify

    def checkForNotifies(self) -> None:
        conn = self._connection
        if conn is not None and conn.notifies:
            del conn.notifies[:]
            self._on_notify()


class _ListenerDetector(_Detector):
    """A `_Detector` that says when its connection is lost."""

    def __init__(self, reactor: Any, on_lost: Callable[[], None]):
        super().__init__(reactor)
        self._on_lost = on_lost

    def startReconnecting(self, f: Failure) -> None:
        self._on_lost()
        super().startReconnecting(f)


class _Pool(txpostgres.ConnectionPool):
    """ConnectionPool whose connections reconnect, handing out live ones first."""

    def __init__(self, reactor: Any, dsn: str, size: int, statement_timeout_ms: int | None = None):
        self.reactor = reactor
        self.every: list[_Connection] = []
        # join_collapse_limit=1: the planner's reads list the main table
        # first, then one LEFT JOIN per output link, each a lookup by id;
        # searching every join order of a 500-row page with 8 links cost
        # ~16 ms of planning for ~3 ms of execution. (Filters through links
        # compile to IN / EXISTS sets, which PostgreSQL still reorders.)
        options = "-c join_collapse_limit=1"
        if statement_timeout_ms:
            options += f" -c statement_timeout={int(statement_timeout_ms)}"
        super().__init__(
            None, dsn, min=size, connect_timeout=10, application_name="sgcache",
            options=options,
        )

    def connectionFactory(self, reactor: Any, cooperator: Any) -> _Connection:  # type: ignore[override]
        conn = _Connection(reactor, cooperator, detector=_Detector(reactor))
        self.every.append(conn)
        return conn

    def _take(self) -> _Connection:
        for conn in self.connections:
            if not conn.detector.connectionIsDead:
                self.connections.discard(conn)
                return conn
        return self.connections.pop()

    def runPrepared(self, sql: str, params: Sequence[Any]) -> defer.Deferred:
        """Like runQuery, through the connection's prepared statements.
        With a connection free it is taken at once (the semaphore's own
        `run` adds two Deferreds to every read); otherwise the read queues."""
        semaphore = self._semaphore
        if semaphore.tokens <= 0:
            return semaphore.run(self._runPrepared, sql, params)
        semaphore.acquire()  # a token is free: this fires at once
        try:
            d = self._runPrepared(sql, params)
        except BaseException:
            semaphore.release()
            raise
        return d.addBoth(self._release, semaphore)

    @staticmethod
    def _release(result: Any, semaphore: defer.DeferredSemaphore) -> Any:
        semaphore.release()
        return result

    def _runPrepared(self, sql: str, params: Sequence[Any]) -> defer.Deferred:
        c = self._take()
        return c.run_prepared(sql, params).addBoth(self._putBackAndPassthrough, c)

    def _runInteraction(self, interaction: Any, *args: Any, **kwargs: Any) -> defer.Deferred:
        c = self._take()
        d = c.runInteraction(interaction, *args, **kwargs)
        return d.addBoth(self._putBackAndPassthrough, c)

    async def shut(self) -> None:
        for conn in self.every:
            await conn.detector.stop()
        for conn in self.every:
            conn.close()


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


class _ReadCursor:
    """`SQLCursor` for read-only shared queries outside a transaction."""

    dialect = POSTGRESQL

    def __init__(self, store: "PostgresStore"):
        self._store = store

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return await self._store.fetch(sql, params)

    async def table_columns(self, table_name: str) -> set[str]:
        raise NotImplementedError


def _line(exc: BaseException) -> str:
    """The first line of an error's message (the cause, for RollbackFailed)."""
    if isinstance(exc, txpostgres.RollbackFailed):
        exc = exc.originalFailure.value
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


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
        self._pool: _Pool | None = None
        #: the read pool: clients' reads, under statement_timeout
        self._read_pool: _Pool | None = None
        self._read_budget: float | None = None
        self._synced: Synced | None = None
        self._write_lock = defer.DeferredLock()
        #: moves on every write of this process and every notification of
        #: another's (see read_generation)
        self._generation = 0
        self._listener: _Listener | None = None
        #: the listener is connected and listening
        self._listening = False

    def __repr__(self) -> str:
        return f"<PostgresStore {redact(self.dsn)}>"

    # -- plumbing ----------------------------------------------------------------
    def _the_pool(self) -> _Pool:
        if self._pool is None:
            raise StoreError(f"{redact(self.dsn)}: the store is not open")
        return self._pool

    def _the_read_pool(self) -> _Pool:
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
                    what=what, error=_line(error), attempt=attempt,
                )
                attempt += 1
                # Even with no delay, let the reactor notice closed sockets.
                await task.deferLater(self._reactor, delay, lambda: None)
            try:
                return await op()
            except Exception as e:
                if not self._retriable(e, attempt):
                    raise
                error = e

    async def _transaction(self, what: str, work: Callable[[_Cursor], Awaitable[T]],
                           changes_reads: bool = True) -> T:
        """Run `work` in one transaction (serialized with other writes).
        `changes_reads`: it may change what a read answers (not only
        bookkeeping state): it notifies listeners (`CHANGES_CHANNEL`) on
        commit, and the read generation moves."""

        async def notifying(cur: _Cursor) -> T:
            result = await work(cur)
            if changes_reads:
                await cur.execute(f"NOTIFY {CHANGES_CHANNEL}")
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
                if changes_reads:
                    self._generation += 1

        return await self._write_lock.run(lambda: defer.ensureDeferred(locked()))

    # -- IStore -----------------------------------------------------------------------
    @returns_deferred
    async def open(self) -> None:
        if self._pool is not None:
            return
        budget_ms = None if self._read_budget is None else max(1, int(self._read_budget * 1000))
        pool = _Pool(self._reactor, self.dsn, SYNC_POOL)
        read_pool = _Pool(self._reactor, self.dsn, self._pool_size, statement_timeout_ms=budget_ms)
        results = await defer.DeferredList(
            [c.connect(*p.connargs, **p.connkw) for p in (pool, read_pool) for c in p.connections],
            consumeErrors=True,
        )
        errors = [r for ok, r in results if not ok]
        if errors:
            await pool.shut()
            await read_pool.shut()
            raise StoreError(
                f"cannot connect to PostgreSQL at {redact(self.dsn)}: {_line(errors[0].value)}"
            )
        self._pool = pool
        self._read_pool = read_pool
        try:
            await self._transaction(
                "open", lambda cur: ensure_layout(cur, redact(self.dsn))
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

    @returns_deferred
    async def track_changes(self) -> None:
        """Start hearing other processes' writes (a connection of its own,
        ``LISTEN``), so that `read_generation` can say when they happened.
        When that connection cannot be made, `read_generation` stays None
        (logged)."""
        pool = self._the_pool()
        if self._listener is not None:
            return
        listener = _Listener(
            self._reactor, detector=_ListenerDetector(self._reactor, self._listener_lost),
            on_notify=self._heard,
        )
        listener.detector.addRecoveryHandler(lambda: defer.ensureDeferred(self._listen(listener)))
        self._listener = listener
        try:
            await listener.connect(*pool.connargs, **pool.connkw, **_LISTENER_KEEPALIVES)
        except Exception as e:
            log.warn("cannot hear other processes' writes ({error}): answers to repeated "
                     "reads are not reused", error=_line(e))
            self._listener = None
            return
        await self._listen(listener)

    async def _listen(self, listener: _Listener) -> None:
        try:
            await listener.runOperation(f"LISTEN {CHANGES_CHANNEL}")
        except Exception as e:
            # a lost connection is reconnected by its detector, which
            # calls this again
            log.warn("LISTEN {channel} failed ({error}); answers to repeated reads are not "
                     "reused meanwhile", channel=CHANGES_CHANNEL, error=_line(e))
            return
        if listener is self._listener:
            # what was written while nobody listened is unknown
            self._generation += 1
            self._listening = True

    def _listener_lost(self) -> None:
        # read_generation is None from here; it moves on when listening again
        self._listening = False

    def _heard(self) -> None:
        self._generation += 1

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

    @returns_deferred
    async def sync_schema(self, schema: Schema) -> dict:
        summary = await self._transaction("sync_schema", lambda cur: sync_schema(cur, schema))
        self._synced = await load_synced(_ReadCursor(self))
        log.info(
            "synced schema: {types} new types, {fields} new fields",
            types=len(summary["added_types"]), fields=len(summary["added_fields"]),
        )
        return summary

    @returns_deferred
    async def field_states(self) -> dict[str, dict[str, str]]:
        return await read_field_states(_ReadCursor(self))

    @returns_deferred
    async def set_field_states(
        self, entity_type: str, fields: list[str] | None, state: str
    ) -> None:
        await self._transaction(
            "set_field_states",
            lambda cur: write_field_states(cur, entity_type, fields, state),
        )

    @returns_deferred
    async def apply(
        self, changes: Sequence[EntityChange], state: dict[str, str] | None = None
    ) -> int:
        async def work(cur: _Cursor) -> ApplyResult:
            synced = await current_synced(cur, self._synced)
            self._synced = synced
            return await apply_changes(
                cur, synced, changes, state, now=clock_now(self._reactor)
            )

        return (await self._transaction("apply", work, changes_reads=bool(changes))).applied

    @returns_deferred
    async def prune_update_log(self, before: float) -> int:
        """Drop update-log entries older than `before` (epoch seconds)."""
        return await self._transaction(
            "prune_update_log", lambda cur: prune_update_log(cur, before), changes_reads=False
        )

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
                raise ReadTimeout(_line(f.value))
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
        await self._transaction("set_state", lambda cur: write_state(cur, items), changes_reads=False)

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
