"""The storage interface (`IStore`) and everything both backends share: the
DDL a `Schema` needs, the bookkeeping tables and their version check, schema
sync, and the one apply algorithm that writes `EntityChange`s.

The shared code is written once, as ``async`` functions over `SQLCursor`, a
tiny cursor-like object each backend provides (``execute`` returning rows,
``table_columns`` for introspection). SQL here uses ``?`` placeholders; the
PostgreSQL cursor converts them. The SQLite cursor never suspends, so on that
backend every shared coroutine runs to completion synchronously on the
reactor thread.

Names follow `sgcache.store.layout` exactly (the read planner relies on it).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Protocol, Sequence, TypeVar

from twisted.internet import defer
from zope.interface import Attribute, Interface

from sgcache.schema.changes import EntityChange
from sgcache.schema.fieldtypes import FIELD_TYPES, is_cacheable
from sgcache.schema import FieldSpec, Schema
from sgcache.store import layout
from sgcache.logs import logger

log = logger(__name__)

T = TypeVar("T")

META_LAYOUT_VERSION = "layout_version"
#: Bumped by every sync_schema that changes the set of fields, so a process
#: holding an in-memory copy of `_sgcache_fields` knows to reload it.
META_FIELDS_GENERATION = "fields_generation"


class StoreError(Exception):
    """The store cannot be used as asked (wrong layout version, unknown
    entity type...). The message is one line meant for an operator."""


class ReadTimeout(StoreError):
    """A client's read (`IStore.read`) went over the store's time budget
    and was stopped."""


class IStore(Interface):
    """The cache database. Every method returns a Deferred."""

    dialect = Attribute('"sqlite" or "postgresql": the SQL dialect fetch() speaks')
    reads_block = Attribute("True when reads run on the reactor thread (nothing else runs meanwhile)")

    def open() -> "defer.Deferred[None]":
        """Connect; create the bookkeeping tables if missing; check and record
        the layout version (a database newer than the code is refused)."""

    def close() -> "defer.Deferred[None]":
        """Disconnect. Safe to call twice."""

    def sync_schema(schema: Schema) -> "defer.Deferred[dict]":
        """Create tables / columns / indexes / association tables for every
        entity type and cacheable field of `schema`, and record them. New
        fields start ``pending``; a field whose data type changed gets fresh
        storage and goes back to ``pending``; fields (and types) gone from the
        schema lose their record (their columns / tables stay). Idempotent.
        Returns
        ``{"added_types": [...], "added_fields": ["Type.field", ...],
        "changed_fields": [...], "removed_fields": [...], "removed_types": [...]}``."""

    def field_states() -> "defer.Deferred[dict[str, dict[str, str]]]":
        """entity type -> field name -> state (``pending`` / ``ready``)."""

    def set_field_states(
        entity_type: str, fields: "list[str] | None", state: str
    ) -> "defer.Deferred[None]":
        """Set the state of some (None: all) recorded fields of a type."""

    def apply(
        changes: Sequence[EntityChange], state: "dict[str, str] | None" = None
    ) -> "defer.Deferred[int]":
        """Write `changes` and the `state` items in one transaction; nothing
        is written if anything fails. Returns how many changes were applied
        (stale or uncached ones are skipped)."""

    def fetch(sql: str, params: Sequence[Any]) -> "defer.Deferred[list[tuple]]":
        """Run a read-only query written with ``?`` placeholders (the
        cache's own: sync, admin; no time limit)."""

    def read(sql: str, params: Sequence[Any]) -> "defer.Deferred[list[tuple]]":
        """Run one statement of a client's read (``?`` placeholders), within
        the store's read budget (`set_read_budget`): past it the statement
        is stopped and the Deferred fails with `ReadTimeout`."""

    def set_read_budget(seconds: "float | None") -> None:
        """The most a statement of a client's read may take (None: no
        limit). Set before `open`."""

    def get_state(key: str) -> "defer.Deferred[str | None]":
        """One item of ``_sgcache_state``."""

    def set_state(items: dict[str, str]) -> "defer.Deferred[None]":
        """Write items of ``_sgcache_state`` (one transaction)."""

    def count(entity_type: str, active: "bool | None" = None) -> "defer.Deferred[int]":
        """Rows of a type: all, only active (True) or only retired (False)."""

    def ids(entity_type: str) -> "defer.Deferred[list[int]]":
        """Every stored id of a type, active and retired, ascending."""

    def analyze(entity_type: str) -> "defer.Deferred[None]":
        """Refresh the query planner's statistics of a type's tables (after
        a bulk load: without them planners pick poor plans for reads)."""

    def track_changes() -> "defer.Deferred[None]":
        """Start following writes to the database, this process's and other
        processes', for `read_generation`."""

    def read_generation() -> Any:
        """Not a Deferred: a token that differs whenever a read may answer
        differently than when the token was taken (any write that may change
        a read's answer, by this process or another, moves it). None when
        the store cannot tell: before `track_changes`, or while it cannot
        hear other processes' writes."""


def returns_deferred(fn: Callable[..., Awaitable[T]]) -> Callable[..., "defer.Deferred[T]"]:
    """Make an ``async def`` method return a Deferred (already fired when the
    coroutine never had to wait, as on SQLite)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        return defer.ensureDeferred(fn(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper


# -- dialects ---------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """What differs between the two SQL dialects, for DDL and apply."""

    name: str
    id_type: str  # entity ids and link ids
    flag_type: str  # _active / _complete
    #: appended to the row-reading SELECT of apply (row locks)
    lock_suffix: str
    #: longest identifier the server keeps intact (0: no limit)
    max_identifier: int
    #: multi-row inserts may ship their rows as one JSON parameter
    #: (``jsonb_array_elements``) instead of thousands of literals
    json_rows: bool = False
    #: apply writes a batch in parts of this many changes, planning each part
    #: while the server runs the previous one's statements (0: one part)
    part_size: int = 0
    #: id lists go as one array parameter (``= ANY(?::bigint[])``), far
    #: cheaper for the server to parse than a long ``IN (?, ?, ...)``
    id_arrays: bool = False

    def column_type(self, data_type: str) -> str:
        ftype = FIELD_TYPES[data_type]
        sql = ftype.sqlite_type if self.name == "sqlite" else ftype.postgres_type
        assert sql is not None, data_type
        return sql


SQLITE = Dialect("sqlite", "INTEGER", "INTEGER", "", 0)
POSTGRESQL = Dialect(
    "postgresql", "BIGINT", "SMALLINT", " FOR UPDATE", 63, json_rows=True, part_size=125,
    id_arrays=True,
)


class SQLCursor(Protocol):
    """The little a backend must offer the shared code, inside a transaction."""

    dialect: Dialect

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (``?`` placeholders); its rows, or [] when none."""

    async def table_columns(self, table_name: str) -> set[str]:
        """Column names of a table (unquoted); empty when it does not exist."""


# -- bookkeeping tables -------------------------------------------------------


def bookkeeping_ddl(dialect: Dialect) -> list[str]:
    """CREATE statements for the ``_sgcache_*`` tables (see layout.py)."""
    return [
        "CREATE TABLE IF NOT EXISTS _sgcache_meta (key TEXT PRIMARY KEY, value TEXT)",
        "CREATE TABLE IF NOT EXISTS _sgcache_state (key TEXT PRIMARY KEY, value TEXT)",
        "CREATE TABLE IF NOT EXISTS _sgcache_entities ("
        "entity_type TEXT PRIMARY KEY, identifier TEXT)",
        "CREATE TABLE IF NOT EXISTS _sgcache_fields ("
        "entity_type TEXT NOT NULL, field_name TEXT NOT NULL, data_type TEXT NOT NULL, "
        "link_types TEXT, state TEXT NOT NULL, PRIMARY KEY (entity_type, field_name))",
    ] + update_log_ddl(dialect)


# -- the update log ---------------------------------------------------------------
# What apply changed, written in the same transaction (sgcache.sync.updatelog reads
# and prunes it): one row per applied change, with where it came from.


def update_log_ddl(dialect: Dialect) -> list[str]:
    seq = "INTEGER PRIMARY KEY" if dialect.name == "sqlite" else "BIGSERIAL PRIMARY KEY"
    return [
        f"CREATE TABLE IF NOT EXISTS _sgcache_updates (seq {seq}, entity_type TEXT NOT NULL, "
        f"entity_id {dialect.id_type} NOT NULL, fields TEXT, source TEXT, "
        f"event_id {dialect.id_type}, at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix__sgcache_updates__entity "
        "ON _sgcache_updates (entity_type, entity_id)",
        "CREATE INDEX IF NOT EXISTS ix__sgcache_updates__at ON _sgcache_updates (at)",
    ]


_LOG_COLUMNS = ("entity_type", "entity_id", "fields", "source", "event_id", "at")


def _log_types(dialect: Dialect) -> tuple[str, ...]:
    return ("TEXT", dialect.id_type, "TEXT", "TEXT", dialect.id_type, "DOUBLE PRECISION")


def _log_statements(dialect: Dialect, entries: list[tuple], now: float) -> Iterator[_Statement]:
    """Insert (entity_type, entity_id, fields, source, event_id) entries."""
    return _insert_statements(
        dialect, "_sgcache_updates", _LOG_COLUMNS, [[*e, now] for e in entries],
        types=_log_types(dialect),
    )


async def prune_update_log(cur: SQLCursor, before: float) -> int:
    """Delete update-log entries older than `before`; how many went."""
    rows = await cur.execute("SELECT COUNT(*) FROM _sgcache_updates WHERE at < ?", [before])
    await cur.execute("DELETE FROM _sgcache_updates WHERE at < ?", [before])
    return int(rows[0][0]) if rows else 0


def clock_now(reactor: Any) -> float:
    """The store's notion of now for update-log entries (its reactor's clock)."""
    if reactor is None:
        import time

        return time.time()
    return float(reactor.seconds())


def _log_entry(change: EntityChange, what: str | None = None) -> tuple:
    fields = getattr(change, "changed_fields", None)
    if what is None:
        if fields:
            what = ",".join(sorted(fields))
        elif change.complete:
            what = "*"
        else:
            what = ",".join(sorted(set(change.fields) | set(change.multi_add) | set(change.multi_remove)))
    event_id = change.event_id if change.event_id is not None else getattr(change, "log_event_id", None)
    return (change.entity_type, int(change.entity_id), what, change.source, event_id)


async def ensure_layout(cur: SQLCursor, where: str) -> None:
    """Create the bookkeeping tables if missing and check the layout version."""
    for stmt in bookkeeping_ddl(cur.dialect):
        await cur.execute(stmt)
    rows = await cur.execute(
        "SELECT value FROM _sgcache_meta WHERE key = ?", [META_LAYOUT_VERSION]
    )
    if not rows:
        await _put(cur, "_sgcache_meta", {META_LAYOUT_VERSION: str(layout.LAYOUT_VERSION)})
        return
    try:
        found = int(rows[0][0])
    except (TypeError, ValueError):
        raise StoreError(f"{where}: unreadable layout version {rows[0][0]!r}") from None
    if found > layout.LAYOUT_VERSION:
        raise StoreError(
            f"{where}: database layout version {found} is newer than this sgcache "
            f"understands ({layout.LAYOUT_VERSION}); upgrade sgcache or use another database"
        )
    if found < layout.LAYOUT_VERSION:
        # No older layout has ever been released; an upgrade step goes here.
        raise StoreError(
            f"{where}: database layout version {found} has no upgrade path to "
            f"{layout.LAYOUT_VERSION}"
        )


def _put_statements(table: str, items: dict[str, str]) -> Iterator[tuple[str, list[Any]]]:
    for key, value in sorted(items.items()):
        yield (
            f"INSERT INTO {table} (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, None if value is None else str(value)],
        )


async def _put(cur: SQLCursor, table: str, items: dict[str, str]) -> None:
    for sql, params in _put_statements(table, items):
        await cur.execute(sql, params)


async def write_state(cur: SQLCursor, items: dict[str, str]) -> None:
    """Upsert items of ``_sgcache_state``."""
    await _put(cur, "_sgcache_state", items)


async def fields_generation(cur: SQLCursor) -> str:
    rows = await cur.execute(
        "SELECT value FROM _sgcache_meta WHERE key = ?", [META_FIELDS_GENERATION]
    )
    return rows[0][0] if rows else "0"


# -- the synced catalogue -----------------------------------------------------


@dataclass
class Synced:
    """What `_sgcache_fields` says is stored: type -> field -> data type."""

    generation: str = "0"
    types: dict[str, dict[str, str]] = field(default_factory=dict)

    def data_type(self, entity_type: str, field_name: str) -> str | None:
        return self.types.get(entity_type, {}).get(field_name)


async def load_synced(cur: SQLCursor) -> Synced:
    generation = await fields_generation(cur)
    types: dict[str, dict[str, str]] = {
        row[0]: {} for row in await cur.execute("SELECT entity_type FROM _sgcache_entities")
    }
    for etype, fname, dtype in await cur.execute(
        "SELECT entity_type, field_name, data_type FROM _sgcache_fields"
    ):
        types.setdefault(etype, {})[fname] = dtype
    return Synced(generation, types)


async def current_synced(cur: SQLCursor, cached: Synced | None) -> Synced:
    """`cached` if `_sgcache_fields` has not changed since it was loaded."""
    if cached is not None and await fields_generation(cur) == cached.generation:
        return cached
    return await load_synced(cur)


async def read_field_states(cur: SQLCursor) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {
        row[0]: {} for row in await cur.execute("SELECT entity_type FROM _sgcache_entities")
    }
    for etype, fname, state in await cur.execute(
        "SELECT entity_type, field_name, state FROM _sgcache_fields"
    ):
        out.setdefault(etype, {})[fname] = state
    return out


async def write_field_states(
    cur: SQLCursor, entity_type: str, fields: list[str] | None, state: str
) -> None:
    if state not in (layout.FIELD_PENDING, layout.FIELD_READY):
        raise ValueError(f"unknown field state {state!r}")
    if fields is None:
        await cur.execute(
            "UPDATE _sgcache_fields SET state = ? WHERE entity_type = ?", [state, entity_type]
        )
        return
    for name in fields:
        await cur.execute(
            "UPDATE _sgcache_fields SET state = ? WHERE entity_type = ? AND field_name = ?",
            [state, entity_type, name],
        )


# -- DDL ------------------------------------------------------------------------


def field_columns(spec: FieldSpec, dialect: Dialect) -> list[tuple[str, str]]:
    """(unquoted column name, SQL type) the field needs on its entity table."""
    if spec.name == "id" or spec.data_type == "multi_entity":
        return []
    if spec.data_type == "entity":
        return [(f"{spec.name}__type", "TEXT"), (f"{spec.name}__id", dialect.id_type)]
    return [(spec.name, dialect.column_type(spec.data_type))]


def index_name(dialect: Dialect, *parts: str) -> str:
    """A quoted index name, shortened with a hash when the server would
    truncate it (names are unique per database on both servers)."""
    name = "ix_" + "__".join(parts)
    limit = dialect.max_identifier or 63
    if len(name.encode()) > limit:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = name.encode()[: limit - 11].decode(errors="ignore") + "_" + digest
    return layout.quote(name)


def entity_table_ddl(entity_type: str, specs: list[FieldSpec], dialect: Dialect) -> str:
    cols = [
        f'"id" {dialect.id_type} PRIMARY KEY',
        f'"_active" {dialect.flag_type} NOT NULL DEFAULT 1',
        f'"_complete" {dialect.flag_type} NOT NULL DEFAULT 0',
        f'"_event_id" {dialect.id_type}',
    ]
    for spec in specs:
        for col, sqltype in field_columns(spec, dialect):
            cols.append(f"{layout.quote(col)} {sqltype}")
    return f"CREATE TABLE {layout.entity_table(entity_type)} ({', '.join(cols)})"


def entity_index_ddl(entity_type: str, columns: set[str], dialect: Dialect) -> list[str]:
    table = layout.entity_table(entity_type)
    out = [
        # retired rows are few: a partial index serves return_only=retired
        # (a full index on the flag only tempts planners into using it)
        f"DROP INDEX IF EXISTS {index_name(dialect, entity_type, '_active')}",
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, '_retired')} "
        f'ON {table} ("id") WHERE "_active" = 0',
    ]
    # updated_at: the scanner's watermarks; both: "what is new" filters
    # (in_last / greater_than on the bookkeeping dates)
    for name in ("updated_at", "created_at"):
        if name in columns:
            out.append(
                f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, name)} "
                f"ON {table} ({layout.quote(name)})"
            )
    return out


def link_index_ddl(spec: FieldSpec, dialect: Dialect) -> str:
    return (
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, spec.entity_type, spec.name)} "
        f"ON {layout.entity_table(spec.entity_type)} "
        f"({layout.link_id_column(spec.name)}, {layout.link_type_column(spec.name)})"
    )


def multi_table_ddl(spec: FieldSpec, dialect: Dialect) -> list[str]:
    name = layout.multi_table_name(spec.entity_type, spec.name)
    table = layout.multi_table(spec.entity_type, spec.name)
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ("
        f"parent_id {dialect.id_type} NOT NULL, child_type TEXT NOT NULL, "
        f"child_id {dialect.id_type} NOT NULL, position INTEGER NOT NULL)",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {index_name(dialect, name, 'link')} "
        f"ON {table} (parent_id, child_type, child_id)",
        # "which rows hold X": the planner's multi-entity `is` reads the
        # parent ids from this index alone
        f"DROP INDEX IF EXISTS {index_name(dialect, name, 'child')}",
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, name, 'children')} "
        f"ON {table} (child_type, child_id, parent_id)",
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, name, 'parent')} "
        f"ON {table} (parent_id, position)",
    ]


# -- indexes the read planner relies on (sgcache.read.planner) ----------------------


def read_index_ddl(
    entity_type: str, identifier: str, specs: list[FieldSpec], dialect: Dialect
) -> list[str]:
    """Indexes for the read planner's query shapes:

    * partial: rows not fully loaded (the planner checks there are none);
    * partial, per link field: links to types outside the field's cached
      link types (the planner checks there are none before trusting
      "is None" / name relations / sorts by name);
    * the identifier (``code`` / ``content`` / ``name``...) folded with the
      planner's exact lowering expression (PostgreSQL: compared by code
      point, ``COLLATE "C"``), then raw: serves case-insensitive ``is`` /
      ``in`` and sorts on the identifier. (SQLite: ``lower`` is the store's
      Python function, registered as deterministic; write to the file only
      through the store.)
    """
    table = layout.entity_table(entity_type)
    out = [
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, '_incomplete')} "
        f'ON {table} ("id") WHERE "_complete" = 0'
    ]
    for spec in specs:
        if spec.data_type not in ("entity", "multi_entity"):
            if spec.name == identifier and FIELD_TYPES[spec.data_type].textual:
                column = layout.scalar_column(spec.name)
                if dialect.name == "postgresql":
                    keys = (
                        f"(lower(replace({column}, '\u0130', 'i\u0307'))) COLLATE \"C\", "
                        f'{column} COLLATE "C"'
                    )
                else:
                    keys = f"(lower({column})), {column}"
                out.append(f"DROP INDEX IF EXISTS {index_name(dialect, entity_type, spec.name, 'lower')}")
                out.append(
                    f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, spec.name, 'folded')} "
                    f"ON {table} ({keys})"
                )
            continue
        types = ", ".join(f"'{layout.quote(t)[1:-1]}'" for t in spec.link_types) or "NULL"
        digest = hashlib.sha1(types.encode()).hexdigest()[:8]
        if spec.data_type == "entity":
            target, column = table, layout.link_type_column(spec.name)
            name = index_name(dialect, entity_type, spec.name, "foreign", digest)
        else:
            target, column = layout.multi_table(entity_type, spec.name), "child_type"
            name = index_name(
                dialect, layout.multi_table_name(entity_type, spec.name), "foreign", digest
            )
        out.append(
            f"CREATE INDEX IF NOT EXISTS {name} ON {target} ({column}) "
            f"WHERE {column} NOT IN ({types})"
        )
    return out


def _fits(spec: FieldSpec, dialect: Dialect) -> bool:
    """False when a name this field needs would be truncated by the server."""
    if not dialect.max_identifier:
        return True
    names = [spec.entity_type] + [c for c, _ in field_columns(spec, dialect)]
    if spec.data_type == "multi_entity":
        names.append(layout.multi_table_name(spec.entity_type, spec.name))
    return all(len(n.encode()) <= dialect.max_identifier for n in names)


async def _drop_field_storage(
    cur: SQLCursor, entity_type: str, name: str, old_type: str, new_type: str, columns: set[str]
) -> None:
    """Remove the storage of a field whose data type changed, where the old
    columns cannot hold the new values."""
    dialect = cur.dialect
    table = layout.entity_table(entity_type)
    if old_type == "multi_entity":
        await cur.execute(f"DROP TABLE IF EXISTS {layout.multi_table(entity_type, name)}")
        return
    old_cols = field_columns(FieldSpec(entity_type, name, old_type), dialect)
    new_cols = (
        []
        if new_type == "multi_entity"
        else field_columns(FieldSpec(entity_type, name, new_type), dialect)
    )
    if old_cols == new_cols:
        return  # same storage: the values will be rescanned (state pending)
    if old_type == "entity":
        await cur.execute(f"DROP INDEX IF EXISTS {index_name(dialect, entity_type, name)}")
    if name == "updated_at":
        await cur.execute(f"DROP INDEX IF EXISTS {index_name(dialect, entity_type, name)}")
    for col, _ in old_cols:
        if col in columns:
            await cur.execute(f"ALTER TABLE {table} DROP COLUMN {layout.quote(col)}")
            columns.discard(col)


async def sync_schema(cur: SQLCursor, schema: Schema) -> dict[str, list[str]]:
    """Bring tables and the field records in line with `schema` (see
    `IStore.sync_schema`)."""
    dialect = cur.dialect
    recorded_types = {
        row[0]: row[1]
        for row in await cur.execute("SELECT entity_type, identifier FROM _sgcache_entities")
    }
    recorded: dict[str, dict[str, tuple[str, str | None]]] = {}
    for etype, fname, dtype, links in await cur.execute(
        "SELECT entity_type, field_name, data_type, link_types FROM _sgcache_fields"
    ):
        recorded.setdefault(etype, {})[fname] = (dtype, links)

    summary: dict[str, list[str]] = {
        "added_types": [],
        "added_fields": [],
        "changed_fields": [],
        "removed_fields": [],
        "removed_types": [],
    }
    for entity in schema:
        etype = entity.name
        if dialect.max_identifier and len(etype.encode()) > dialect.max_identifier:
            log.warn(
                "not caching {entity_type}: its name is longer than {limit} bytes",
                entity_type=etype, limit=dialect.max_identifier,
            )
            continue
        specs = []
        for spec in sorted(entity.fields.values(), key=lambda s: s.name):
            if not is_cacheable(spec.data_type):
                continue
            if not _fits(spec, dialect):
                log.warn(
                    "not caching {entity_type}.{field}: a name it needs is longer than "
                    "{limit} bytes",
                    entity_type=etype, field=spec.name, limit=dialect.max_identifier,
                )
                continue
            specs.append(spec)
        table = layout.entity_table(etype)
        columns = await cur.table_columns(etype)
        if not columns:
            await cur.execute(entity_table_ddl(etype, specs, dialect))
            columns = await cur.table_columns(etype)
        if etype not in recorded_types:
            summary["added_types"].append(etype)
            await cur.execute(
                "INSERT INTO _sgcache_entities (entity_type, identifier) VALUES (?, ?)",
                [etype, entity.identifier],
            )
        elif recorded_types[etype] != entity.identifier:
            await cur.execute(
                "UPDATE _sgcache_entities SET identifier = ? WHERE entity_type = ?",
                [entity.identifier, etype],
            )
        old_fields = recorded.get(etype, {})
        for spec in specs:
            links = ",".join(spec.link_types) or None
            old = old_fields.get(spec.name)
            if old is not None and old[0] != spec.data_type:
                await _drop_field_storage(
                    cur, etype, spec.name, old[0], spec.data_type, columns
                )
            for col, sqltype in field_columns(spec, dialect):
                if col not in columns:
                    await cur.execute(
                        f"ALTER TABLE {table} ADD COLUMN {layout.quote(col)} {sqltype}"
                    )
                    columns.add(col)
            if spec.data_type == "entity":
                await cur.execute(link_index_ddl(spec, dialect))
            elif spec.data_type == "multi_entity":
                for stmt in multi_table_ddl(spec, dialect):
                    await cur.execute(stmt)
            where = f"{etype}.{spec.name}"
            if old is None:
                summary["added_fields"].append(where)
                await cur.execute(
                    "INSERT INTO _sgcache_fields "
                    "(entity_type, field_name, data_type, link_types, state) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [etype, spec.name, spec.data_type, links, layout.FIELD_PENDING],
                )
            elif old[0] != spec.data_type:
                summary["changed_fields"].append(where)
                await cur.execute(
                    "UPDATE _sgcache_fields SET data_type = ?, link_types = ?, state = ? "
                    "WHERE entity_type = ? AND field_name = ?",
                    [spec.data_type, links, layout.FIELD_PENDING, etype, spec.name],
                )
            elif old[1] != links:
                # Only the allowed link types changed: stored values (links to
                # whatever the site held) stay right, so the state is kept.
                summary["changed_fields"].append(where)
                await cur.execute(
                    "UPDATE _sgcache_fields SET link_types = ? "
                    "WHERE entity_type = ? AND field_name = ?",
                    [links, etype, spec.name],
                )
        kept = {spec.name for spec in specs}
        for fname in sorted(set(old_fields) - kept):
            summary["removed_fields"].append(f"{etype}.{fname}")
            await cur.execute(
                "DELETE FROM _sgcache_fields WHERE entity_type = ? AND field_name = ?",
                [etype, fname],
            )
        for stmt in entity_index_ddl(etype, columns, dialect):
            await cur.execute(stmt)
        for stmt in read_index_ddl(etype, entity.identifier, specs, dialect):
            await cur.execute(stmt)

    for etype in sorted(set(recorded_types) | set(recorded)):
        if etype in schema:
            continue
        summary["removed_types"].append(etype)
        await cur.execute("DELETE FROM _sgcache_entities WHERE entity_type = ?", [etype])
        await cur.execute("DELETE FROM _sgcache_fields WHERE entity_type = ?", [etype])

    if any(summary.values()):
        generation = str(int(await fields_generation(cur)) + 1)
        await _put(cur, "_sgcache_meta", {META_FIELDS_GENERATION: generation})
    return summary


# -- apply --------------------------------------------------------------------------


@dataclass
class ApplyResult:
    applied: int = 0
    skipped_stale: int = 0
    skipped_event: int = 0
    unknown_types: int = 0
    ignored_fields: int = 0
    #: update-log entries (see _log_statements)
    log: list[tuple] = field(default_factory=list)


def _link(value: Any, where: str) -> tuple[str, int]:
    if not isinstance(value, dict) or "type" not in value or "id" not in value:
        raise ValueError(f"{where}: expected an entity link {{type, id}}, got {value!r}")
    return str(value["type"]), int(value["id"])


def _links(values: Any, where: str) -> list[tuple[str, int]]:
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}: expected a list of entity links, got {values!r}")
    out: list[tuple[str, int]] = []
    seen = set()
    for value in values:
        if value is None:
            continue
        link = _link(value, where)
        if link not in seen:
            seen.add(link)
            out.append(link)
    return out


_CHUNK = 500
#: bound parameters per statement (SQLite's default limit is 32766)
_MAX_PARAMS = 32000


def _per_statement(width: int) -> int:
    """Rows per multi-row statement of `width` parameters a row."""
    return max(1, min(_CHUNK, _MAX_PARAMS // max(1, width)))


def _id_conditions(dialect: Dialect, column: str, id_list: list[int]) -> Iterator[tuple[str, list[Any]]]:
    """(SQL condition, params) pairs that together match `column` against
    the ints of `id_list`, in order: one array parameter where the dialect
    takes it, else ``IN`` lists of at most _CHUNK.

    The array form also bounds `column` by the ids' range: redundant, but it
    keeps PostgreSQL on the index while the table is young and unanalyzed
    (else it reads the whole table for every batch until it has ~50k rows)."""
    if not id_list:
        return
    if dialect.id_arrays:
        ints = [int(i) for i in id_list]
        literal = "{" + ",".join(map(str, ints)) + "}"
        yield (
            f"{column} = ANY(?::{dialect.id_type}[]) AND {column} BETWEEN ? AND ?",
            [literal, min(ints), max(ints)],
        )
        return
    for start in range(0, len(id_list), _CHUNK):
        chunk = id_list[start : start + _CHUNK]
        yield f"{column} IN ({', '.join('?' * len(chunk))})", chunk


@dataclass
class _RowPlan:
    """The net write apply makes to one entity row, decided in Python and
    flushed set-based at the end of the batch."""

    #: delete the row stored before this batch
    delete: bool = False
    #: every column of a row (re)created in this batch
    insert: dict[str, Any] | None = None
    #: columns to set on the row stored before this batch
    sets: dict[str, Any] | None = None


@dataclass
class _MultiPlan:
    """The net write to one parent's links in one association table."""

    #: drop every stored link of the parent first (parent deleted / list set)
    replace: bool
    #: the links stored before this batch (link -> position), when not replaced
    base: dict[tuple[str, int], int]
    #: the links after this batch (link -> position)
    final: dict[tuple[str, int], int]


@dataclass
class _Plan:
    rows: dict[tuple[str, int], _RowPlan] = field(default_factory=dict)
    #: (type, field, parent id) -> plan
    multi: dict[tuple[str, str, int], _MultiPlan] = field(default_factory=dict)
    #: ids stored before this batch, per (type, id)
    stored: set[tuple[str, int]] = field(default_factory=set)
    #: stored links of the parents whose links get deltas: (type, field, id) -> links
    stored_links: dict[tuple[str, str, int], dict[tuple[str, int], int]] = field(
        default_factory=dict
    )

    def row(self, key: tuple[str, int]) -> _RowPlan:
        plan = self.rows.get(key)
        if plan is None:
            plan = self.rows[key] = _RowPlan()
        return plan

    def links(self, etype: str, fname: str, eid: int) -> _MultiPlan:
        key = (etype, fname, eid)
        plan = self.multi.get(key)
        if plan is None:
            base = self.stored_links.get(key, {})
            plan = self.multi[key] = _MultiPlan(False, base, dict(base))
        return plan


async def apply_changes(
    cur: SQLCursor,
    synced: Synced,
    changes: Sequence[EntityChange],
    state: dict[str, str] | None = None,
    now: float | None = None,
) -> ApplyResult:
    """Write `changes` (and `state`) through `cur`, inside the caller's
    transaction. Raises on bad values; the caller then rolls back. With
    `now` (epoch seconds), what was applied goes to the update log too.

    Changes are decided one by one, in order, against an in-memory copy of
    the stale-check columns (and of the links multi_add / multi_remove
    touch); the net effect on each row and link list is then written with a
    few set-based statements per table (one round trip each on PostgreSQL),
    exactly as if each change had been written in turn. Values are encoded
    while the rows are being read, and each statement is built while the
    previous one runs."""
    result = ApplyResult()
    plan = _Plan()

    wanted: dict[str, set[int]] = {}
    deltas: dict[tuple[str, str], set[int]] = {}
    for change in changes:
        etype = change.entity_type
        fields = synced.types.get(etype)
        if fields is None:
            continue
        eid = int(change.entity_id)
        wanted.setdefault(etype, set()).add(eid)
        for fname in (*change.multi_add, *change.multi_remove):
            if fields.get(fname) == "multi_entity":
                deltas.setdefault((etype, fname), set()).add(eid)

    # When no entity appears twice, the batch is planned and written in parts
    # (disjoint rows: the same writes), each part planned while the previous
    # one's statements run; else as one part.
    step = max(1, len(changes))
    if cur.dialect.part_size and len(changes) > cur.dialect.part_size:
        if len({(c.entity_type, int(c.entity_id)) for c in changes}) == len(changes):
            step = cur.dialect.part_size
    coders: dict[tuple, _RowCoder] = {}

    def encode(change: EntityChange) -> _Encoded | None:
        fields = synced.types.get(change.entity_type)
        return None if fields is None else _encode(change, fields, coders)

    # Start reading the rows (and links) the batch touches; encode the first
    # parts meanwhile (an encoding error is raised only if its change is applied).
    reading = defer.ensureDeferred(_read_stored(cur, synced, wanted, deltas, plan))
    try:
        first = [encode(change) for change in changes[: 2 * step]]
    except BaseException:
        try:
            await reading
        except Exception:
            pass
        raise
    rows = await reading

    def statements() -> Iterator[_Statement]:
        for start in range(0, len(changes), step):
            part = _Plan(stored=plan.stored, stored_links=plan.stored_links)
            for i in range(start, min(start + step, len(changes))):
                change = changes[i]
                enc = first[i] if i < len(first) else encode(change)
                if enc is None:
                    result.unknown_types += 1
                    log.debug(
                        "ignoring change to uncached type {entity_type} {entity_id}",
                        entity_type=change.entity_type, entity_id=change.entity_id,
                    )
                    continue
                _plan_one(part, change, synced.types[change.entity_type], enc, rows, result)
            yield from _plan_statements(cur.dialect, synced, part)
        if now is not None and result.log:
            # built while the last part's statements run
            yield from _log_statements(cur.dialect, result.log, now)

    await _run_pipelined(cur, statements())
    if state:
        await write_state(cur, state)
    log.debug(
        "apply: {applied} applied, {stale} stale, {old_event} older than stored event, "
        "{unknown} uncached types, {ignored} uncached fields",
        applied=result.applied, stale=result.skipped_stale, old_event=result.skipped_event,
        unknown=result.unknown_types, ignored=result.ignored_fields,
    )
    return result


async def _read_stored(
    cur: SQLCursor,
    synced: Synced,
    wanted: dict[str, set[int]],
    deltas: dict[tuple[str, str], set[int]],
    plan: _Plan,
) -> dict[tuple[str, int], list[Any]]:
    """The stale-check columns of the rows the batch touches (locked on
    PostgreSQL), per (type, id): [_event_id, updated_at, _active]; and, into
    `plan`, the stored links of the parents whose links get deltas."""
    lock = cur.dialect.lock_suffix
    rows: dict[tuple[str, int], list[Any]] = {}
    for etype, id_set in wanted.items():
        has_updated = synced.data_type(etype, "updated_at") == "date_time"
        cols = '"id", "_event_id", ' + ('"updated_at"' if has_updated else "NULL") + ', "_active"'
        for cond, params in _id_conditions(cur.dialect, '"id"', sorted(id_set)):
            for row in await cur.execute(
                f"SELECT {cols} FROM {layout.entity_table(etype)} WHERE {cond}{lock}", params
            ):
                rows[(etype, int(row[0]))] = [row[1], row[2], row[3]]
    plan.stored = set(rows)
    for (etype, fname), id_set in deltas.items():
        mtable = layout.multi_table(etype, fname)
        id_list = sorted(id_set)
        for eid in id_list:
            plan.stored_links[(etype, fname, eid)] = {}
        for cond, params in _id_conditions(cur.dialect, "parent_id", id_list):
            for pid, ctype, cid, position in await cur.execute(
                f"SELECT parent_id, child_type, child_id, position FROM {mtable} "
                f"WHERE {cond} ORDER BY parent_id, position",
                params,
            ):
                plan.stored_links[(etype, fname, int(pid))][(ctype, int(cid))] = int(position)
    return rows


@dataclass
class _Encoded:
    """A change's `fields` as column values, encoded once."""

    values: dict[str, Any]
    #: multi_entity field -> its new links
    multi_set: dict[str, list[tuple[str, int]]]
    #: uncached fields given (ignored)
    ignored: Sequence[str]
    #: the error encoding met (raised if the change is applied)
    error: BaseException | None = None


#: how a field's value becomes columns (see _RowCoder)
_SCALAR, _ENTITY, _MULTI = 0, 1, 2
_IDENT = FIELD_TYPES["text"].encode


@dataclass(frozen=True)
class _RowCoder:
    """How a change's `fields`, given with certain names in a certain order,
    become column values: a copy of the dict, less `dropped`, with `steps`
    applied in field order (a scan's rows all share one coder, so the
    per-row work is only the fields not stored as given)."""

    #: ``id`` / ``type`` and the uncached fields
    dropped: tuple[str, ...]
    #: the uncached fields (ignored, counted)
    ignored: tuple[str, ...]
    #: (_SCALAR, field, data type, encode, type stored as given), (_ENTITY,
    #: field, type column, id column) or (_MULTI, field)
    steps: tuple[tuple, ...]


def _row_coder(fields: dict[str, str], names: tuple[str, ...]) -> _RowCoder:
    dropped: list[str] = []
    ignored: list[str] = []
    steps: list[tuple] = []
    for fname in names:
        dtype = fields.get(fname)
        if dtype is None or fname == "id" or fname == "type":
            dropped.append(fname)
            if dtype is None and fname != "id" and fname != "type":
                ignored.append(fname)
        elif dtype == "entity":
            steps.append((_ENTITY, fname, f"{fname}__type", f"{fname}__id"))
        elif dtype == "multi_entity":
            steps.append((_MULTI, fname))
        elif FIELD_TYPES[dtype].encode is not _IDENT:
            ftype = FIELD_TYPES[dtype]
            steps.append((_SCALAR, fname, dtype, ftype.encode, ftype.native))
    return _RowCoder(tuple(dropped), tuple(ignored), tuple(steps))


def _encode(
    change: EntityChange, fields: dict[str, str], coders: dict[tuple, _RowCoder]
) -> _Encoded:
    key = (change.entity_type, tuple(change.fields))
    coder = coders.get(key)
    if coder is None:
        coder = coders[key] = _row_coder(fields, key[1])
    values: dict[str, Any] = dict(change.fields)
    for fname in coder.dropped:
        del values[fname]
    out = _Encoded(values, {}, coder.ignored)
    try:
        for step in coder.steps:
            kind, fname = step[0], step[1]
            if kind == _SCALAR:
                value = values[fname]
                if type(value) is step[4]:
                    continue
                try:
                    values[fname] = step[3](value)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"{change.entity_type} {int(change.entity_id)} {fname}: "
                        f"cannot store {value!r} as {step[2]}: {e}"
                    ) from None
            elif kind == _ENTITY:
                value = values.pop(fname)
                if value is None:
                    values[step[2]] = values[step[3]] = None
                elif isinstance(value, dict) and "type" in value and "id" in value:
                    # _link's work, without formatting its error context
                    values[step[2]], values[step[3]] = str(value["type"]), int(value["id"])
                else:
                    values[step[2]], values[step[3]] = _link(
                        value, f"{change.entity_type} {int(change.entity_id)} {fname}"
                    )
            else:
                out.multi_set[fname] = _links(
                    values.pop(fname), f"{change.entity_type} {int(change.entity_id)} {fname}"
                )
    except Exception as e:
        out.error = e
    return out


def _plan_one(
    plan: _Plan,
    change: EntityChange,
    fields: dict[str, str],
    enc: _Encoded,
    rows: dict[tuple[str, int], list[Any]],
    result: ApplyResult,
) -> None:
    """Decide one change against `rows` and record its writes in `plan`."""
    etype = change.entity_type
    eid = int(change.entity_id)
    key = (etype, eid)
    row = rows.get(key)

    if change.event_id is not None and row is not None and row[0] is not None:
        if int(row[0]) >= change.event_id:
            result.skipped_event += 1
            return

    if change.delete:
        target = plan.row(key)
        target.delete = target.delete or key in plan.stored
        target.insert = target.sets = None
        for fname in sorted(f for f, t in fields.items() if t == "multi_entity"):
            plan.multi[(etype, fname, eid)] = _MultiPlan(True, {}, {})
        rows.pop(key, None)
        result.applied += 1
        if row is not None:
            result.log.append(_log_entry(change, "(deleted)"))
        return

    if (
        row is not None
        and row[1] is not None
        and change.updated_at is not None
        and change.updated_at < row[1]
    ):
        result.skipped_stale += 1
        log.debug(
            "refusing stale change to {entity_type} {entity_id}: {theirs} < {ours}",
            entity_type=etype, entity_id=eid, theirs=change.updated_at, ours=row[1],
        )
        return

    for fname in enc.ignored:
        result.ignored_fields += 1
        log.debug("ignoring uncached field {entity_type}.{field}", entity_type=etype, field=fname)
    if enc.error is not None:
        raise enc.error
    values = enc.values

    target = plan.row(key)
    if row is None:
        active = 1 if change.active is None else int(bool(change.active))
        target.insert = {
            "id": eid,
            "_active": active,
            "_complete": 1 if change.complete else 0,
            "_event_id": change.event_id,
            **values,
        }
        target.sets = None
        rows[key] = [change.event_id, values.get("updated_at"), active]
        result.log.append(_log_entry(change))
    else:
        if (
            change.source != "scan"
            or ("updated_at" in values and values["updated_at"] != row[1])
            or (change.active is not None and int(bool(change.active)) != int(row[2]))
        ):
            # scans re-read unchanged rows: only what moved is logged
            result.log.append(_log_entry(change))
        sets = dict(values)
        if change.active is not None:
            sets["_active"] = int(bool(change.active))
        if change.complete:
            sets["_complete"] = 1
        if change.event_id is not None:
            sets["_event_id"] = change.event_id
        if sets:
            if target.insert is not None:
                target.insert.update(sets)
            elif target.sets is None:
                target.sets = sets
            else:
                target.sets.update(sets)
        if change.event_id is not None:
            row[0] = change.event_id
        if "updated_at" in values:
            row[1] = values["updated_at"]
        if change.active is not None:
            row[2] = int(bool(change.active))

    for fname, links in enc.multi_set.items():
        plan.multi[(etype, fname, eid)] = _MultiPlan(
            True, {}, {link: position for position, link in enumerate(links)}
        )
    if change.multi_add or change.multi_remove:
        _plan_multi_deltas(plan, change, fields, result)
    result.applied += 1


def _plan_multi_deltas(
    plan: _Plan, change: EntityChange, fields: dict[str, str], result: ApplyResult
) -> None:
    etype, eid = change.entity_type, int(change.entity_id)
    for fname, added in sorted(change.multi_add.items()):
        if fields.get(fname) != "multi_entity":
            result.ignored_fields += 1
            continue
        links = _links(added, f"{etype} {eid} {fname}")
        final = plan.links(etype, fname, eid).final
        position = max(final.values(), default=-1) + 1
        for link in links:
            if link in final:
                continue
            final[link] = position
            position += 1
    for fname, removed in sorted(change.multi_remove.items()):
        if fields.get(fname) != "multi_entity":
            result.ignored_fields += 1
            continue
        links = _links(removed, f"{etype} {eid} {fname}")
        final = plan.links(etype, fname, eid).final
        for link in links:
            final.pop(link, None)


_Statement = tuple[str, list[Any]]


async def _run_pipelined(cur: SQLCursor, statements: Iterator[_Statement]) -> None:
    """Run `statements` in order, building each (the generator's work) while
    the previous one runs on the server."""
    pending: defer.Deferred | None = None
    try:
        for sql, params in statements:
            if pending is not None:
                await pending
            pending = defer.ensureDeferred(cur.execute(sql, params))
    except BaseException:
        if pending is not None and not pending.called:
            try:
                await pending
            except Exception:
                pass
        raise
    if pending is not None:
        await pending


def _plan_statements(dialect: Dialect, synced: Synced, plan: _Plan) -> Iterator[_Statement]:
    """The statements that write `plan`: per table, deletes, then inserts,
    then updates, each as multi-row statements."""
    deletes: dict[str, list[int]] = {}
    inserts: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
    updates: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
    for (etype, eid), target in plan.rows.items():
        if target.delete:
            deletes.setdefault(etype, []).append(eid)
        if target.insert is not None:
            cols = tuple(target.insert)
            inserts.setdefault((etype, cols), []).append(list(target.insert.values()))
        elif target.sets:
            cols = ("id", *target.sets)
            updates.setdefault((etype, cols), []).append([eid, *target.sets.values()])

    for etype, id_list in deletes.items():
        table = layout.entity_table(etype)
        for cond, params in _id_conditions(dialect, '"id"', id_list):
            yield f"DELETE FROM {table} WHERE {cond}", params
    for (etype, cols), value_rows in inserts.items():
        yield from _insert_statements(
            dialect, layout.entity_table(etype), cols, value_rows,
            types=_sql_types(dialect, synced.types[etype], cols),
        )
    for (etype, cols), value_rows in updates.items():
        # every row exists (and is locked): the upsert always updates, and
        # sets only the columns its changes gave
        assignments = ", ".join(
            f"{layout.quote(c)} = excluded.{layout.quote(c)}" for c in cols[1:]
        )
        yield from _insert_statements(
            dialect, layout.entity_table(etype), cols, value_rows,
            f' ON CONFLICT ("id") DO UPDATE SET {assignments}',
            _sql_types(dialect, synced.types[etype], cols),
        )

    link_deletes: dict[tuple[str, str], list[int]] = {}
    link_removes: dict[tuple[str, str], list[list[Any]]] = {}
    link_inserts: dict[tuple[str, str], list[list[Any]]] = {}
    for (etype, fname, eid), mplan in plan.multi.items():
        where = (etype, fname)
        if mplan.replace:
            link_deletes.setdefault(where, []).append(eid)
            kept: dict[tuple[str, int], int] = {}
        else:
            kept = mplan.base
            for link, position in mplan.base.items():
                if mplan.final.get(link) != position:
                    link_removes.setdefault(where, []).append([eid, link[0], link[1]])
        for link, position in mplan.final.items():
            if kept.get(link) != position:
                link_inserts.setdefault(where, []).append([eid, link[0], link[1], position])
    for (etype, fname), id_list in link_deletes.items():
        mtable = layout.multi_table(etype, fname)
        for cond, params in _id_conditions(dialect, "parent_id", id_list):
            yield f"DELETE FROM {mtable} WHERE {cond}", params
    for (etype, fname), triples in link_removes.items():
        mtable = layout.multi_table(etype, fname)
        step = _per_statement(3)
        for start in range(0, len(triples), step):
            chunk = triples[start : start + step]
            yield (
                f"DELETE FROM {mtable} WHERE (parent_id, child_type, child_id) IN (VALUES "
                + ", ".join(["(?, ?, ?)"] * len(chunk)) + ")",
                [p for triple in chunk for p in triple],
            )
    for (etype, fname), value_rows in link_inserts.items():
        yield from _insert_statements(
            dialect, layout.multi_table(etype, fname),
            ("parent_id", "child_type", "child_id", "position"), value_rows,
            types=(dialect.id_type, "TEXT", dialect.id_type, "INTEGER"),
        )



def _insert_statements(
    dialect: Dialect,
    table: str,
    cols: tuple[str, ...],
    value_rows: list[list[Any]],
    suffix: str = "",
    types: Sequence[str] | None = None,
) -> Iterator[_Statement]:
    """Multi-row ``INSERT INTO table (cols) VALUES ...`` (+ `suffix`), chunked
    within the bound-parameter limit. Where the dialect allows and the SQL
    `types` of the columns are given, rows whose values are what their
    columns hold (int / float / str / None) go as one JSON parameter instead,
    far less to format and parse than thousands of literals (see
    `_json_rows`)."""
    names = ", ".join(layout.quote(c) for c in cols)
    if dialect.json_rows and types is not None and value_rows:
        shaped = _json_rows(types, value_rows)
        if shaped is not None:
            exprs, params = shaped
            yield (
                f"INSERT INTO {table} ({names}) SELECT {exprs} "
                f"FROM jsonb_array_elements(?::jsonb) AS r{suffix}",
                params,
            )
            return
    head = f"INSERT INTO {table} ({names}) VALUES "
    mark = "(" + ", ".join("?" * len(cols)) + ")"
    step = _per_statement(len(cols))
    for start in range(0, len(value_rows), step):
        chunk = value_rows[start : start + step]
        yield head + ", ".join([mark] * len(chunk)) + suffix, [p for values in chunk for p in values]


_NONE = type(None)
#: Python types a column of each SQL type takes unchanged through JSON
_JSON_TYPES = {
    "BIGINT": frozenset([int, _NONE]),
    "INTEGER": frozenset([int, _NONE]),
    "SMALLINT": frozenset([int, _NONE]),
    "DOUBLE PRECISION": frozenset([int, float, _NONE]),
    "TEXT": frozenset([str, _NONE]),
}


def _json_rows(types: Sequence[str], value_rows: list[list[Any]]) -> tuple[str, list[Any]] | None:
    """The select list and parameters that produce `value_rows` from rows
    ``r`` of one JSON array of arrays (the last parameter); None when some
    value is not plainly what its column holds (a bool, bytes, NaN, text in
    a number column...): those rows go as literals.

    A column holding one int / text / NULL value in every row (``_active``,
    a link's type, most of an update-log entry...) is bound once instead of
    sent and cast per row."""
    columns = list(zip(*value_rows))
    exprs: list[str] = []
    constants: list[Any] = []
    varying: list[tuple] = []
    for sqltype, column in zip(types, columns):
        kinds = set(map(type, column))
        allowed = _JSON_TYPES.get(sqltype)
        if allowed is None or not kinds <= allowed:
            return None
        if float not in kinds and column.count(column[0]) == len(column):
            exprs.append(f"?::{sqltype}")
            constants.append(column[0])
        else:
            exprs.append(f"(r->>{len(varying)})::{sqltype}")
            varying.append(column)
    if not varying:
        # every column constant: the rows still have to be counted out
        exprs[0] = f"(r->>0)::{types[0]}"
        del constants[0]
        varying.append(columns[0])
    try:
        doc = json.dumps(
            list(zip(*varying)), allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
    except ValueError:
        return None
    return ", ".join(exprs), [*constants, doc]


def _sql_types(dialect: Dialect, fields: dict[str, str], cols: Sequence[str]) -> list[str] | None:
    """The SQL types of entity-table columns (None if one is unknown)."""
    out = []
    for col in cols:
        if col in ("id", "_event_id"):
            out.append(dialect.id_type)
        elif col in ("_active", "_complete"):
            out.append(dialect.flag_type)
        elif col in fields and fields[col] not in ("entity", "multi_entity"):
            out.append(dialect.column_type(fields[col]))
        elif col.endswith("__type") and fields.get(col[:-6]) == "entity":
            out.append("TEXT")
        elif col.endswith("__id") and fields.get(col[:-4]) == "entity":
            out.append(dialect.id_type)
        else:
            return None
    return out


# -- small shared queries ----------------------------------------------------------


def count_sql(entity_type: str, active: bool | None) -> tuple[str, list[Any]]:
    sql = f"SELECT COUNT(*) FROM {layout.entity_table(entity_type)}"
    if active is None:
        return sql, []
    return sql + ' WHERE "_active" = ?', [1 if active else 0]


def analyze_statements(synced: Synced, entity_type: str) -> list[str]:
    """ANALYZE of a type's table and its multi-entity association tables."""
    tables = [layout.entity_table(entity_type)] + [
        layout.multi_table(entity_type, name)
        for name, dtype in sorted(synced.types.get(entity_type, {}).items())
        if dtype == "multi_entity"
    ]
    return [f"ANALYZE {table}" for table in tables]


def ids_sql(entity_type: str) -> str:
    return f'SELECT "id" FROM {layout.entity_table(entity_type)} ORDER BY "id"'


def require_type(synced: Synced | None, entity_type: str) -> None:
    if synced is None:
        raise StoreError("the store is not open")
    if entity_type not in synced.types:
        raise StoreError(f"entity type {entity_type!r} is not cached")
