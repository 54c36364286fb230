"""What the store holds, recorded in the store itself: the layout version
check, the bookkeeping state, the synced catalogue of types and fields
(`Synced`), field states, and schema sync (tables and records in line with
a `Schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from sgcache.logs import logger
from sgcache.schema import FieldSpec, Schema
from sgcache.schema.types import is_cacheable
from sgcache.store import layout
from sgcache.store.ddl import (
    bookkeeping_ddl,
    entity_index_ddl,
    entity_table_ddl,
    field_columns,
    fits,
    index_name,
    link_index_ddl,
    multi_table_ddl,
    read_index_ddl,
)
from sgcache.store.dialect import SQLCursor
from sgcache.store.interface import StoreError

log = logger(__name__)

META_LAYOUT_VERSION = "layout_version"

#: Bumped by every sync_schema that changes the set of fields, so a process
#: holding an in-memory copy of `_sgcache_fields` knows to reload it.
META_FIELDS_GENERATION = "fields_generation"


async def ensure_layout(cur: SQLCursor, where: str) -> None:
    """Create the bookkeeping tables if missing and check the layout version."""
    for stmt in bookkeeping_ddl(cur.dialect):
        await cur.execute(stmt)
    rows = await cur.execute(
        "SELECT value FROM _sgcache_meta WHERE key = ?", [META_LAYOUT_VERSION]
    )
    if not rows:
        await put_items(cur, "_sgcache_meta", {META_LAYOUT_VERSION: str(layout.LAYOUT_VERSION)})
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


def put_statements(table: str, items: dict[str, str]) -> Iterator[tuple[str, list[Any]]]:
    for key, value in sorted(items.items()):
        yield (
            f"INSERT INTO {table} (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, None if value is None else str(value)],
        )


async def put_items(cur: SQLCursor, table: str, items: dict[str, str]) -> None:
    for sql, params in put_statements(table, items):
        await cur.execute(sql, params)


async def write_state(cur: SQLCursor, items: dict[str, str]) -> None:
    """Upsert items of ``_sgcache_state``."""
    await put_items(cur, "_sgcache_state", items)


async def fields_generation(cur: SQLCursor) -> str:
    rows = await cur.execute(
        "SELECT value FROM _sgcache_meta WHERE key = ?", [META_FIELDS_GENERATION]
    )
    return rows[0][0] if rows else "0"


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
            if not fits(spec, dialect):
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
        await put_items(cur, "_sgcache_meta", {META_FIELDS_GENERATION: generation})
    return summary


def log_sync_summary(summary: dict[str, list[str]]) -> None:
    log.info("synced schema: {types} new types, {fields} new fields",
             types=len(summary["added_types"]), fields=len(summary["added_fields"]))
