"""The embedded store: SQLite through the stdlib, called on the reactor thread.

Indexed SQLite reads take microseconds, far less than a hop to a thread, so
every call runs synchronously and returns an already-fired Deferred. The
database uses WAL (readers never block the writer), ``synchronous=NORMAL``
and ``timeout=0``: a lock held by another process fails at once instead of
stalling the reactor; the caller retries.

SQL ``lower()`` is Python's `str.lower`, so case-insensitive matching folds
Unicode exactly as the Shotgun emulator (Python) does.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from sgcache.logs import logger
from sgcache.schema import Schema
from sgcache.schema.changes import EntityChange
from sgcache.store import layout, upgrade
from sgcache.store.apply import ApplyResult, apply_changes, set_field_states
from sgcache.store.catalog import (
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
from sgcache.store.dialect import SQLITE
from sgcache.store.interface import IStore, ReadTimeout, StoreError, returns_deferred
from sgcache.store.queries import NamedQueries, analyze_statements, count_sql, ids_sql, require_type
from sgcache.store import shadowlog
from sgcache.store.updatelog import clock_now, prune_update_log

log = logger(__name__)

T = TypeVar("T")


def _py_lower(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, bytes):
        return value.lower()
    return str(value).lower()


#: SQLite's page cache per connection, in KiB (its default is 2 MB). Reads
#: that touch a few thousand rows of a large table (a relative-date filter
#: over 200k Versions) spent most of their time re-reading pages through
#: the OS; filled only as pages are read.
CACHE_KIB = 128 * 1024

#: compiled statements kept by the main connection; SQLite's compiled form
#: of a statement takes roughly 16 times its text in memory
STATEMENT_CACHE = 256
#: statements longer than this (rare: reads with hundreds of conditions)
#: run on a side connection that keeps none, so that the statement cache
#: stays within about STATEMENT_CACHE x 16 x this (~32 MB)
CACHED_SQL_CHARS = 8192
#: SQLite virtual-machine steps between two looks at a read's deadline
PROGRESS_STEPS = 1000


def configure(conn: sqlite3.Connection) -> None:
    """Set up a connection as the store uses it: WAL, ``synchronous=NORMAL``,
    no foreign keys, a `CACHE_KIB` page cache, and the Python ``lower`` the
    read indexes are built with (anything writing to the file must have it)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.create_function("lower", 1, _py_lower, deterministic=True)


class _Cursor:
    """`SQLCursor` over a sqlite3 connection; never suspends."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor = self._conn.execute(sql, tuple(params))
        return cursor.fetchall() if cursor.description is not None else []

    async def table_columns(self, table_name: str) -> set[str]:
        rows = self._conn.execute(f"PRAGMA table_info({layout.quote(table_name)})").fetchall()
        return {row[1] for row in rows}

    async def table_names(self) -> set[str]:
        # not SQLite's own (sqlite_stat1 once ANALYZE ran, sqlite_sequence):
        # names starting "sqlite_" are reserved to it
        rows = self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'").fetchall()
        return {row[0] for row in rows}

    async def table_indexes(self, table_name: str) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
            "AND sql IS NOT NULL", (table_name,)).fetchall()
        return {row[0]: row[1] for row in rows}

    async def drop_column(self, table_name: str, column: str) -> None:
        # SQLite refuses to drop a column an index names (in its keys or
        # its WHERE): those indexes go first
        for name, sql in (await self.table_indexes(table_name)).items():
            if layout.quote(column) in sql:
                self._conn.execute(f"DROP INDEX IF EXISTS {layout.quote(name)}")
        self._conn.execute(f"ALTER TABLE {layout.quote(table_name)} DROP COLUMN {layout.quote(column)}")


def _wrote(result: ApplyResult) -> bool:
    """An apply's transaction may change what a read answers."""
    return result.written > 0


def _changed(changed: bool) -> bool:
    """A transaction that says whether it wrote something."""
    return changed


def _now(coro: Awaitable[T]) -> T:
    """Run a coroutine that must not wait on the reactor; its result."""
    box: list[Any] = []
    defer.ensureDeferred(coro).addBoth(box.append)  # type: ignore[arg-type]
    if not box:
        raise RuntimeError("SQLite store work waited on the reactor")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@implementer(IStore)
class SQLiteStore(NamedQueries):
    """`IStore` on a SQLite file (or ``:memory:``)."""

    dialect = "sqlite"
    #: reads run on the reactor: nothing else is served meanwhile
    reads_block = True

    def __init__(self, path: str, reactor: Any = None, monotonic: Callable[[], float] = time.monotonic):
        self.path = path
        self._reactor = reactor
        self._conn: sqlite3.Connection | None = None
        #: the side connection for long statements (see CACHED_SQL_CHARS)
        self._uncached_conn: sqlite3.Connection | None = None
        #: seconds a client's read statement may run (None: no limit)
        self._read_budget: float | None = None
        self._monotonic = monotonic
        self._synced: Synced | None = None
        #: this process's commits that a read could see (see read_generation)
        self._writes = 0
        self._tracking = False
        #: what the last successful `apply` did (see IStore.last_apply)
        self.last_apply: ApplyResult | None = None
        #: applied changes that wrote something / nothing, since opened
        #: (see IStore.rows_written)
        self.rows_written = 0
        self.rows_unchanged = 0

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"

    # -- plumbing ---------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the store is not open")
        return self._conn

    def _transaction(
        self, work: Callable[[_Cursor], Awaitable[T]],
        changes_reads: bool | Callable[[T], bool] = True,
    ) -> T:
        """Run `work` in one write transaction: all of it, or none of it.
        `changes_reads`: it may change what a read answers (not only
        bookkeeping state), so the read generation moves; a callable says
        so of `work`'s result (a failed `work` counts as a change)."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        moved = changes_reads is not False
        try:
            result = _now(work(_Cursor(conn)))
            if callable(changes_reads):
                moved = bool(changes_reads(result))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            if moved:
                self._writes += 1
        conn.execute("COMMIT")
        return result

    def _synced_now(self, cur: _Cursor) -> Synced:
        self._synced = _now(current_synced(cur, self._synced))
        return self._synced

    # -- IStore -------------------------------------------------------------------
    @returns_deferred
    async def open(self) -> None:
        if self._conn is not None:
            return
        try:
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, cached_statements=STATEMENT_CACHE
            )
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open SQLite database: {e}") from None
        try:
            configure(conn)
            self._conn = conn
            self._backup_before_upgrade(conn)
            self._transaction(lambda cur: ensure_layout(cur, self.path))
            self._synced = _now(load_synced(_Cursor(conn)))
        except BaseException:
            self._conn = None
            conn.close()
            raise
        log.info("opened SQLite store {path}", path=self.path)

    def _backup_before_upgrade(self, conn: sqlite3.Connection) -> None:
        """Copy the file next to itself when its layout is older than this
        code's (ensure_layout upgrades it next, in one transaction)."""
        found = _now(upgrade.stored_version(_Cursor(conn), self.path))
        if found is None or found >= layout.LAYOUT_VERSION or self.path == ":memory:":
            return
        upgrade.steps_from(found, self.path)  # no copy for an upgrade that cannot run
        target = upgrade.backup_sqlite(conn, self.path, found)
        log.info("{path} has layout version {found}, older than {current}: backed it up "
                 "to {backup} before upgrading it", path=self.path, found=found,
                 current=layout.LAYOUT_VERSION, backup=target)

    @returns_deferred
    async def close(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        self._synced = None
        side, self._uncached_conn = self._uncached_conn, None
        if side is not None:
            side.close()
        # the next connection counts data_version afresh
        self._writes += 1
        conn.close()

    @returns_deferred
    async def sync_schema(self, schema: Schema) -> dict:
        summary = self._transaction(lambda cur: sync_schema(cur, schema))
        self._synced = _now(load_synced(_Cursor(self._connection())))
        log_sync_summary(summary)
        return summary

    @returns_deferred
    async def recorded_schema(self) -> Schema:
        return _now(load_recorded(_Cursor(self._connection())))

    @returns_deferred
    async def describe_storage(self) -> dict:
        return self._transaction(lambda cur: describe_storage(cur))

    @returns_deferred
    async def field_states(self) -> dict[str, dict[str, str]]:
        return _now(read_field_states(_Cursor(self._connection())))

    @returns_deferred
    async def set_field_states(
        self, entity_type: str, fields: list[str] | None, state: str
    ) -> None:
        self._transaction(
            lambda cur: set_field_states(cur, entity_type, fields, state), changes_reads=_changed
        )

    @returns_deferred
    async def apply(
        self, changes: Sequence[EntityChange], state: dict[str, str] | None = None,
        ticket: int | None = None,
    ) -> int:
        if ticket is not None:
            # one process: its fence is in memory (`sgcache.sync.freshness.Freshness`)
            raise StoreError("read tickets are for PostgreSQL stores shared by several daemons")

        async def work(cur: _Cursor) -> ApplyResult:
            synced = self._synced_now(cur)
            return await apply_changes(
                cur, synced, changes, state, now=clock_now(self._reactor)
            )

        result = self._transaction(work, changes_reads=_wrote)
        self.last_apply = result
        self.rows_written += result.written
        self.rows_unchanged += result.unchanged
        return result.applied

    @returns_deferred
    async def prune_update_log(self, before: float) -> int:
        """Drop update-log entries older than `before` (epoch seconds)."""
        return self._transaction(lambda cur: prune_update_log(cur, before), changes_reads=False)

    @returns_deferred
    async def record_shadow_mismatch(self, entry: dict[str, Any]) -> None:
        """Keep one shadow check's mismatch (`sgcache.store.shadowlog`)."""
        self._transaction(lambda cur: shadowlog.record_mismatch(cur, entry), changes_reads=False)

    @returns_deferred
    async def shadow_mismatches(self) -> list[dict[str, Any]]:
        return shadowlog.rows_to_entries(self._connection().execute(shadowlog.LIST_SQL).fetchall())

    @returns_deferred
    async def clear_shadow_mismatches(self) -> int:
        return self._transaction(shadowlog.clear_mismatches, changes_reads=False)

    @returns_deferred
    async def track_changes(self) -> None:
        """Start following changes for `read_generation` (nothing to start:
        SQLite counts other connections' commits itself)."""
        self._connection()
        self._tracking = True

    def read_generation(self) -> Any:
        """A token that differs whenever a read may answer differently than
        when the token was taken: this process's writes, and any commit by
        another connection (``PRAGMA data_version``). None until
        `track_changes`."""
        if not self._tracking or self._conn is None:
            return None
        return (self._writes, self._conn.execute("PRAGMA data_version").fetchone()[0])

    @returns_deferred
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self._connection().execute(sql, tuple(params)).fetchall()

    def set_read_budget(self, seconds: float | None) -> None:
        self._read_budget = seconds if seconds and seconds > 0 else None

    def _connection_for(self, sql: str) -> sqlite3.Connection:
        conn = self._connection()
        if len(sql) <= CACHED_SQL_CHARS or self.path == ":memory:":
            return conn
        if self._uncached_conn is None:
            side = sqlite3.connect(self.path, timeout=0, isolation_level=None, cached_statements=0)
            configure(side)
            side.execute("PRAGMA cache_size=-2048")  # SQLite's default 2 MB: it serves rare reads
            self._uncached_conn = side
        return self._uncached_conn

    @returns_deferred
    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """A client's read statement, aborted from SQLite's progress handler
        once it has run longer than the read budget (it runs on the
        reactor: nothing else is served meanwhile)."""
        conn = self._connection_for(sql)
        budget = self._read_budget
        if budget is None:
            return conn.execute(sql, tuple(params)).fetchall()
        clock = self._monotonic
        deadline = clock() + budget
        conn.set_progress_handler(lambda: clock() > deadline, PROGRESS_STEPS)
        try:
            return conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.OperationalError as e:
            if clock() > deadline and "interrupt" in str(e):
                raise ReadTimeout(f"read stopped after {budget * 1000:.0f} ms") from None
            raise
        finally:
            conn.set_progress_handler(None, 0)

    @returns_deferred
    async def get_state(self, key: str) -> str | None:
        rows = self._connection().execute(
            "SELECT value FROM _sgcache_state WHERE key = ?", (key,)
        ).fetchall()
        return rows[0][0] if rows else None

    @returns_deferred
    async def set_state(self, items: dict[str, str]) -> None:
        self._transaction(lambda cur: write_state(cur, items), changes_reads=False)

    @returns_deferred
    async def count(self, entity_type: str, active: bool | None = None) -> int:
        conn = self._connection()
        require_type(self._synced_now(_Cursor(conn)), entity_type)
        sql, params = count_sql(entity_type, active)
        return int(conn.execute(sql, params).fetchone()[0])

    @returns_deferred
    async def ids(self, entity_type: str) -> list[int]:
        conn = self._connection()
        require_type(self._synced_now(_Cursor(conn)), entity_type)
        return [row[0] for row in conn.execute(ids_sql(entity_type))]

    @returns_deferred
    async def analyze(self, entity_type: str) -> None:
        conn = self._connection()
        synced = self._synced_now(_Cursor(conn))
        require_type(synced, entity_type)
        # A full ANALYZE (no analysis_limit): sampled row counts disagree
        # from index to index, and SQLite takes the table's size from
        # whichever it loads last -- at 100k Shots that flipped a sorted
        # page from the code index (0.5 ms) to a scan and sort (100 ms).
        # It reads every index once: ~40 ms for 100k rows, on the reactor,
        # once per full scan of the type.
        for stmt in analyze_statements(synced, entity_type):
            conn.execute(stmt)
