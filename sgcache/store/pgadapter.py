"""The txpostgres adapter: every place the PostgreSQL store reaches into
txpostgres's (and psycopg2's async mode's) internals, in one module.

txpostgres runs psycopg2 connections in async mode on the reactor; the store
needs a few things it does differently, each override below says why:

* `Connection`: failures go to the caller or the dead-connection detector,
  never to the reactor's unhandled-error log (``doRead``, ``close``,
  ``_runInteraction``); reads run as prepared statements with a shorter path
  than ``runQuery`` (`Connection.run_prepared`, `Connection.quick_query`,
  which poll ``_pollingD`` directly); a poll finishing in the reactor event
  that read it fires at once (``continuePolling``); a statement the server
  stopped stays a ``QueryCanceledError`` instead of txpostgres's
  ``CancelledError`` (``poll``, ``_cancel``, ``_handleCancellation``).
* `Listener`: notifications taken in the event that read them
  (``checkForNotifies``).
* `Detector` / `ListenerDetector`: reconnect with back-off, stoppable and
  quiet (``DeadConnectionDetector``'s ``startReconnecting``).
* `Pool`: live connections first, a read fast path that skips the
  semaphore's own Deferreds (``_semaphore``, ``connections``,
  ``_putBackAndPassthrough``, ``_runInteraction``).

tests/test_pgadapter.py fails when txpostgres changes what these rely on.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import psycopg2
import psycopg2.extensions
from twisted.internet import defer, task
from twisted.python.failure import Failure
from txpostgres import reconnection, retrying, txpostgres

from sgcache.store import prepared
from sgcache.logs import logger

log = logger(__name__)


#: psycopg2 errors that say nothing about the connection itself.
NOT_FATAL = (
    psycopg2.extensions.TransactionRollbackError,
    psycopg2.extensions.QueryCanceledError,
)


@prepared.memoized_short
def to_pyformat(sql: str) -> str:
    """Turn ``?`` placeholders into psycopg2's ``%s`` and escape literal
    ``%`` (psycopg2 formats the whole string). ``?`` inside quoted literals
    and identifiers is left alone."""
    return prepared.rewrite_placeholders(sql, lambda n: "%s")


def connection_failed(failure_or_exc: Failure | BaseException) -> bool:
    """True when an error means the connection died (worth a retry)."""
    exc = failure_or_exc.value if isinstance(failure_or_exc, Failure) else failure_or_exc
    if isinstance(exc, NOT_FATAL):
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


def reconnect_delays() -> Iterator[float]:
    return retrying.simpleBackoffIterator(
        initialDelay=0.2, maxDelay=10.0, factor=2.0, maxRetries=0, now=True
    )


class Detector(reconnection.DeadConnectionDetector):
    """Reconnects a dead connection with backoff; stoppable, and quiet."""

    def __init__(self, reactor: Any):
        super().__init__(
            deathChecker=connection_failed, reconnectionIterator=reconnect_delays, reactor=reactor
        )
        self._stopped = False
        self._loop: defer.Deferred | None = None
        self._sleep: defer.Deferred | None = None

    def checkForDeadConnection(self, f: Failure) -> Failure:
        if self._stopped:
            return f
        return super().checkForDeadConnection(f)

    def startReconnecting(self, f: Failure) -> None:
        log.warn("PostgreSQL connection lost ({reason}); reconnecting", reason=first_line(f.value))
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
                    attempt=attempt, error=first_line(e),
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


class Connection(txpostgres.Connection):
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
                              error=first_line(f.value))
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
                if Connection._in_event:
                    Connection._in_event = False
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
        Connection._in_event = True
        try:
            return txpostgres.Connection.doRead(self)
        except psycopg2.Error as e:
            # The server closed an idle connection. Returning the error makes
            # the reactor call connectionLost with it, so the detector
            # reconnects.
            return e
        finally:
            Connection._in_event = False

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
                log.info("ROLLBACK failed: {error}", error=first_line(rf.value))
                return Failure(txpostgres.RollbackFailed(self, f))

            e.addCallbacks(lambda _: f, panic)
            return e

        d.addCallback(commit)
        d.addErrback(rollback)
        return d


class Listener(Connection):
    """The connection that hears other processes' writes (``LISTEN``).
    Notifications are taken as they arrive (in the reactor event that read
    them), not through txpostgres's cooperator a turn later."""

    def __init__(self, *args: Any, on_notify: Callable[[set[str]], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_notify = on_notify

    def checkForNotifies(self) -> None:
        conn = self._connection
        if conn is not None and conn.notifies:
            channels = {getattr(n, "channel", "") for n in conn.notifies}
            del conn.notifies[:]
            self._on_notify(channels)


class ListenerDetector(Detector):
    """A `Detector` that says when its connection is lost."""

    def __init__(self, reactor: Any, on_lost: Callable[[], None]):
        super().__init__(reactor)
        self._on_lost = on_lost

    def startReconnecting(self, f: Failure) -> None:
        self._on_lost()
        super().startReconnecting(f)


class Pool(txpostgres.ConnectionPool):
    """ConnectionPool whose connections reconnect, handing out live ones first."""

    def __init__(self, reactor: Any, dsn: str, size: int, statement_timeout_ms: int | None = None):
        self.reactor = reactor
        self.every: list[Connection] = []
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

    def connectionFactory(self, reactor: Any, cooperator: Any) -> Connection:  # type: ignore[override]
        conn = Connection(reactor, cooperator, detector=Detector(reactor))
        self.every.append(conn)
        return conn

    def _take(self) -> Connection:
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


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (the cause, for RollbackFailed)."""
    if isinstance(exc, txpostgres.RollbackFailed):
        exc = exc.originalFailure.value
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
