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
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import Attribute, Interface

from ..changes import EntityChange
from ..fieldtypes import FIELD_TYPES, is_cacheable
from ..schema import FieldSpec, Schema
from . import layout

log = Logger()

T = TypeVar("T")

META_LAYOUT_VERSION = "layout_version"
#: Bumped by every sync_schema that changes the set of fields, so a process
#: holding an in-memory copy of `_sgcache_fields` knows to reload it.
META_FIELDS_GENERATION = "fields_generation"


class StoreError(Exception):
    """The store cannot be used as asked (wrong layout version, unknown
    entity type...). The message is one line meant for an operator."""


class IStore(Interface):
    """The cache database. Every method returns a Deferred."""

    dialect = Attribute('"sqlite" or "postgresql": the SQL dialect fetch() speaks')

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
        """Run a read-only query written with ``?`` placeholders."""

    def get_state(key: str) -> "defer.Deferred[str | None]":
        """One item of ``_sgcache_state``."""

    def set_state(items: dict[str, str]) -> "defer.Deferred[None]":
        """Write items of ``_sgcache_state`` (one transaction)."""

    def count(entity_type: str, active: "bool | None" = None) -> "defer.Deferred[int]":
        """Rows of a type: all, only active (True) or only retired (False)."""

    def ids(entity_type: str) -> "defer.Deferred[list[int]]":
        """Every stored id of a type, active and retired, ascending."""


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

    def column_type(self, data_type: str) -> str:
        ftype = FIELD_TYPES[data_type]
        sql = ftype.sqlite_type if self.name == "sqlite" else ftype.postgres_type
        assert sql is not None, data_type
        return sql


SQLITE = Dialect("sqlite", "INTEGER", "INTEGER", "", 0)
POSTGRESQL = Dialect("postgresql", "BIGINT", "SMALLINT", " FOR UPDATE", 63)


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
# What apply changed, written in the same transaction (sgcache.updatelog reads
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


async def write_update_log(cur: SQLCursor, entries: list[tuple], now: float) -> None:
    """Insert (entity_type, entity_id, fields, source, event_id) entries."""
    for start in range(0, len(entries), 100):
        chunk = entries[start : start + 100]
        params: list[Any] = []
        for entry in chunk:
            params.extend(entry)
            params.append(now)
        await cur.execute(
            "INSERT INTO _sgcache_updates (entity_type, entity_id, fields, source, event_id, at) "
            "VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)),
            params,
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


async def _put(cur: SQLCursor, table: str, items: dict[str, str]) -> None:
    for key, value in sorted(items.items()):
        await cur.execute(
            f"INSERT INTO {table} (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, None if value is None else str(value)],
        )


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
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, '_active')} "
        f'ON {table} ("_active")'
    ]
    if "updated_at" in columns:
        out.append(
            f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, 'updated_at')} "
            f'ON {table} ("updated_at")'
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
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, name, 'child')} "
        f"ON {table} (child_id, child_type)",
        f"CREATE INDEX IF NOT EXISTS {index_name(dialect, name, 'parent')} "
        f"ON {table} (parent_id, position)",
    ]


# -- indexes the read planner relies on (sgcache.planner) ----------------------


def read_index_ddl(
    entity_type: str, identifier: str, specs: list[FieldSpec], dialect: Dialect
) -> list[str]:
    """Indexes for the read planner's query shapes:

    * partial: rows not fully loaded (the planner checks there are none);
    * partial, per link field: links to types outside the field's cached
      link types (the planner checks there are none before trusting
      "is None" / name relations / sorts by name);
    * the lowered identifier (``code`` / ``content`` / ``name``...), with the
      planner's exact lowering expression, for case-insensitive ``is``/``in``.
      (SQLite: ``lower`` is the store's Python function, registered as
      deterministic; write to the file only through the store.)
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
                    expr = f"lower(replace({column}, '\u0130', 'i\u0307'))"
                else:
                    expr = f"lower({column})"
                out.append(
                    f"CREATE INDEX IF NOT EXISTS {index_name(dialect, entity_type, spec.name, 'lower')} "
                    f"ON {table} (({expr}))"
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
    #: update-log entries (see write_update_log)
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


async def apply_changes(
    cur: SQLCursor,
    synced: Synced,
    changes: Sequence[EntityChange],
    state: dict[str, str] | None = None,
    now: float | None = None,
) -> ApplyResult:
    """Write `changes` (and `state`) through `cur`, inside the caller's
    transaction. Raises on bad values; the caller then rolls back. With
    `now` (epoch seconds), what was applied goes to the update log too."""
    result = ApplyResult()
    lock = cur.dialect.lock_suffix

    # Read the stale-check columns of every row the batch touches, per type.
    wanted: dict[str, set[int]] = {}
    for change in changes:
        if change.entity_type in synced.types:
            wanted.setdefault(change.entity_type, set()).add(int(change.entity_id))
    rows: dict[tuple[str, int], list[Any]] = {}  # -> [_event_id, updated_at, _active]
    for etype, id_set in wanted.items():
        has_updated = synced.data_type(etype, "updated_at") == "date_time"
        cols = '"id", "_event_id", ' + ('"updated_at"' if has_updated else "NULL") + ', "_active"'
        id_list = sorted(id_set)
        for start in range(0, len(id_list), _CHUNK):
            chunk = id_list[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row in await cur.execute(
                f"SELECT {cols} FROM {layout.entity_table(etype)} "
                f'WHERE "id" IN ({marks}){lock}',
                chunk,
            ):
                rows[(etype, int(row[0]))] = [row[1], row[2], row[3]]

    for change in changes:
        etype = change.entity_type
        fields = synced.types.get(etype)
        if fields is None:
            result.unknown_types += 1
            log.debug(
                "ignoring change to uncached type {entity_type} {entity_id}",
                entity_type=etype, entity_id=change.entity_id,
            )
            continue
        await _apply_one(cur, change, fields, rows, result)

    if state:
        await write_state(cur, state)
    if now is not None and result.log:
        await write_update_log(cur, result.log, now)
    log.debug(
        "apply: {applied} applied, {stale} stale, {old_event} older than stored event, "
        "{unknown} uncached types, {ignored} uncached fields",
        applied=result.applied, stale=result.skipped_stale, old_event=result.skipped_event,
        unknown=result.unknown_types, ignored=result.ignored_fields,
    )
    return result


async def _apply_one(
    cur: SQLCursor,
    change: EntityChange,
    fields: dict[str, str],
    rows: dict[tuple[str, int], list[Any]],
    result: ApplyResult,
) -> None:
    etype = change.entity_type
    eid = int(change.entity_id)
    table = layout.entity_table(etype)
    key = (etype, eid)
    row = rows.get(key)
    multi_fields = sorted(f for f, t in fields.items() if t == "multi_entity")

    if change.event_id is not None and row is not None and row[0] is not None:
        if int(row[0]) >= change.event_id:
            result.skipped_event += 1
            return

    if change.delete:
        await cur.execute(f'DELETE FROM {table} WHERE "id" = ?', [eid])
        for fname in multi_fields:
            await cur.execute(
                f"DELETE FROM {layout.multi_table(etype, fname)} WHERE parent_id = ?", [eid]
            )
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

    # Encode the scalar / entity columns; collect multi_entity replacements.
    values: dict[str, Any] = {}
    multi_set: dict[str, list[tuple[str, int]]] = {}
    for fname, value in change.fields.items():
        if fname in ("id", "type"):
            continue
        dtype = fields.get(fname)
        if dtype is None:
            result.ignored_fields += 1
            log.debug(
                "ignoring uncached field {entity_type}.{field}", entity_type=etype, field=fname
            )
            continue
        where = f"{etype} {eid} {fname}"
        if dtype == "entity":
            if value is None:
                values[f"{fname}__type"] = values[f"{fname}__id"] = None
            else:
                values[f"{fname}__type"], values[f"{fname}__id"] = _link(value, where)
        elif dtype == "multi_entity":
            multi_set[fname] = _links(value, where)
        else:
            try:
                values[fname] = FIELD_TYPES[dtype].encode(value)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{where}: cannot store {value!r} as {dtype}: {e}") from None

    if row is None:
        cols = ["id", "_active", "_complete", "_event_id"] + list(values)
        params = [
            eid,
            1 if change.active is None else int(bool(change.active)),
            1 if change.complete else 0,
            change.event_id,
        ] + list(values.values())
        marks = ", ".join("?" * len(cols))
        await cur.execute(
            f"INSERT INTO {table} ({', '.join(layout.quote(c) for c in cols)}) "
            f"VALUES ({marks})",
            params,
        )
        rows[key] = [change.event_id, values.get("updated_at"), 1 if change.active is None else int(bool(change.active))]
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
            assignments = ", ".join(f"{layout.quote(c)} = ?" for c in sets)
            await cur.execute(
                f'UPDATE {table} SET {assignments} WHERE "id" = ?', list(sets.values()) + [eid]
            )
        if change.event_id is not None:
            row[0] = change.event_id
        if "updated_at" in values:
            row[1] = values["updated_at"]
        if change.active is not None:
            row[2] = int(bool(change.active))

    for fname, links in multi_set.items():
        mtable = layout.multi_table(etype, fname)
        await cur.execute(f"DELETE FROM {mtable} WHERE parent_id = ?", [eid])
        # one multi-row INSERT per chunk: fewer round trips on PostgreSQL
        for start in range(0, len(links), _CHUNK // 4):
            chunk = links[start : start + _CHUNK // 4]
            params: list[Any] = []
            for position, (ctype, cid) in enumerate(chunk, start):
                params.extend((eid, ctype, cid, position))
            await cur.execute(
                f"INSERT INTO {mtable} (parent_id, child_type, child_id, position) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                params,
            )
    await _multi_deltas(cur, change, fields, result)
    result.applied += 1


async def _multi_deltas(
    cur: SQLCursor, change: EntityChange, fields: dict[str, str], result: ApplyResult
) -> None:
    etype, eid = change.entity_type, int(change.entity_id)
    for fname, added in sorted(change.multi_add.items()):
        if fields.get(fname) != "multi_entity":
            result.ignored_fields += 1
            continue
        mtable = layout.multi_table(etype, fname)
        existing = await cur.execute(
            f"SELECT child_type, child_id, position FROM {mtable} WHERE parent_id = ?", [eid]
        )
        have = {(r[0], int(r[1])) for r in existing}
        position = max((int(r[2]) for r in existing), default=-1) + 1
        for link in _links(added, f"{etype} {eid} {fname}"):
            if link in have:
                continue
            await cur.execute(
                f"INSERT INTO {mtable} (parent_id, child_type, child_id, position) "
                "VALUES (?, ?, ?, ?)",
                [eid, link[0], link[1], position],
            )
            have.add(link)
            position += 1
    for fname, removed in sorted(change.multi_remove.items()):
        if fields.get(fname) != "multi_entity":
            result.ignored_fields += 1
            continue
        mtable = layout.multi_table(etype, fname)
        for ctype, cid in _links(removed, f"{etype} {eid} {fname}"):
            await cur.execute(
                f"DELETE FROM {mtable} WHERE parent_id = ? AND child_type = ? AND child_id = ?",
                [eid, ctype, cid],
            )


# -- small shared queries ----------------------------------------------------------


def count_sql(entity_type: str, active: bool | None) -> tuple[str, list[Any]]:
    sql = f"SELECT COUNT(*) FROM {layout.entity_table(entity_type)}"
    if active is None:
        return sql, []
    return sql + ' WHERE "_active" = ?', [1 if active else 0]


def ids_sql(entity_type: str) -> str:
    return f'SELECT "id" FROM {layout.entity_table(entity_type)} ORDER BY "id"'


def require_type(synced: Synced | None, entity_type: str) -> None:
    if synced is None:
        raise StoreError("the store is not open")
    if entity_type not in synced.types:
        raise StoreError(f"entity type {entity_type!r} is not cached")
