"""What the store holds, recorded in the store itself: the layout version
check, the bookkeeping state, the synced catalogue of types and fields
(`Synced`), field states, and schema sync (tables and records in line with
a `Schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
import re
from typing import Any, Iterator

from sgcache.logs import logger
from sgcache.schema import EntitySpec, FieldSpec, Schema
from sgcache.schema.types import is_cacheable
from sgcache.store import layout, upgrade
from sgcache.store.ddl import (
    bookkeeping_ddl,
    created_indexes,
    entity_base_columns,
    entity_index_ddl,
    entity_table_ddl,
    field_columns,
    fits,
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
    """Check the store's layout version and bring the store to this code's,
    inside the caller's transaction: a store of a newer layout is refused
    (untouched); an older one is upgraded in place (`sgcache.store.upgrade`)
    and its new version recorded in the same transaction; then the
    bookkeeping tables are created if missing (a new store records this
    code's version)."""
    found = await upgrade.stored_version(cur, where, lock=True)
    if found is not None and found > layout.LAYOUT_VERSION:
        raise StoreError(
            f"{where}: database layout version {found} is newer than this sgcache "
            f"understands ({layout.LAYOUT_VERSION}); upgrade sgcache or use another database"
        )
    if found is not None and found < layout.LAYOUT_VERSION:
        await upgrade.run_steps(cur, found, where)
    for stmt in bookkeeping_ddl(cur.dialect):
        await cur.execute(stmt)
    if found != layout.LAYOUT_VERSION:
        await put_items(
            cur, "_sgcache_meta", {layout.LAYOUT_VERSION_KEY: str(layout.LAYOUT_VERSION)}
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
    cur: SQLCursor, entity_type: str, name: str, old_type: str, new_type: str | None, columns: set[str]
) -> None:
    """Remove the storage of a field that is gone (`new_type` None) or whose
    data type changed, where the old columns cannot hold the new values."""
    dialect = cur.dialect
    if old_type == "multi_entity":
        await cur.execute(f"DROP TABLE IF EXISTS {layout.multi_table(entity_type, name)}")
        return
    old_cols = field_columns(FieldSpec(entity_type, name, old_type), dialect)
    new_cols = (
        []
        if new_type in (None, "multi_entity")
        else field_columns(FieldSpec(entity_type, name, new_type), dialect)
    )
    if old_cols == new_cols:
        return  # same storage: the values will be rescanned (state pending)
    for col, _ in old_cols:
        if col in columns:
            await cur.drop_column(entity_type, col)
            columns.discard(col)


async def _drop_leftover_storage(
    cur: SQLCursor, entity_type: str, name: str, columns: set[str], tables: set[str]
) -> None:
    """Remove what a field new to the records finds under its name on an
    existing table: storage an older release left when it removed the field
    (it kept columns and association tables), of whatever data type the
    field had then, with its values. A new field starts empty, in the
    storage of its data type, as in a fresh store."""
    for col in (name, f"{name}__type", f"{name}__id"):
        if col in columns:
            await cur.drop_column(entity_type, col)
            columns.discard(col)
    table = layout.multi_table_name(entity_type, name)
    if table in tables:
        await cur.execute(f"DROP TABLE IF EXISTS {layout.quote(table)}")
        tables.discard(table)


def _wanted_specs(entity: Any, dialect: Any) -> list[FieldSpec]:
    """The fields of `entity` the store holds: cacheable, with names the
    server keeps intact."""
    specs = []
    for spec in sorted(entity.fields.values(), key=lambda s: s.name):
        if not is_cacheable(spec.data_type):
            continue
        if not fits(spec, dialect):
            log.warn(
                "not caching {entity_type}.{field}: a name it needs is longer than "
                "{limit} bytes",
                entity_type=entity.name, field=spec.name, limit=dialect.max_identifier,
            )
            continue
        specs.append(spec)
    return specs


async def _prune(cur: SQLCursor, entity_type: str, specs: list[FieldSpec], tables: set[str],
                 columns: set[str], indexes: dict[str, set[str]]) -> None:
    """Drop what no field of the type owns any more -- columns, association
    tables, indexes -- so the type's storage is what a fresh store would
    build from the same schema (a store of an older release may hold what
    a removal left behind)."""
    dialect = cur.dialect
    wanted_columns = entity_base_columns(dialect)
    wanted_multi = set()
    for spec in specs:
        wanted_columns.update(col for col, _ in field_columns(spec, dialect))
        if spec.data_type == "multi_entity":
            wanted_multi.add(layout.multi_table_name(entity_type, spec.name))
    for col in sorted(columns - wanted_columns):
        await cur.drop_column(entity_type, col)
        columns.discard(col)
    for table in sorted(tables):
        if table.startswith(entity_type + "__") and table not in wanted_multi:
            await cur.execute(f"DROP TABLE IF EXISTS {layout.quote(table)}")
    for table in [entity_type, *sorted(wanted_multi)]:
        existing = await cur.table_indexes(table)
        for name in sorted(set(existing) - indexes.get(table, set())):
            await cur.execute(f"DROP INDEX IF EXISTS {layout.quote(name)}")


async def sync_schema(cur: SQLCursor, schema: Schema) -> dict[str, list[str]]:
    """Bring tables, indexes and the field records in line with `schema`
    (see `IStore.sync_schema`)."""
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
    tables = await cur.table_names()

    summary: dict[str, list[str]] = {
        "added_types": [],
        "added_fields": [],
        "changed_fields": [],
        "removed_fields": [],
        "removed_types": [],
    }
    kept_types = set()
    for entity in schema:
        etype = entity.name
        if dialect.max_identifier and len(etype.encode()) > dialect.max_identifier:
            log.warn(
                "not caching {entity_type}: its name is longer than {limit} bytes",
                entity_type=etype, limit=dialect.max_identifier,
            )
            continue
        kept_types.add(etype)
        specs = _wanted_specs(entity, dialect)
        table = layout.entity_table(etype)
        columns = await cur.table_columns(etype)
        created = not columns
        if created:
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
        ddl: list[str] = []
        for spec in specs:
            links = ",".join(spec.link_types) or None
            old = old_fields.get(spec.name)
            if old is not None and old[0] != spec.data_type:
                await _drop_field_storage(
                    cur, etype, spec.name, old[0], spec.data_type, columns
                )
            elif old is None and not created:
                await _drop_leftover_storage(cur, etype, spec.name, columns, tables)
            for col, sqltype in field_columns(spec, dialect):
                if col not in columns:
                    await cur.execute(
                        f"ALTER TABLE {table} ADD COLUMN {layout.quote(col)} {sqltype}"
                    )
                    columns.add(col)
            if spec.data_type == "entity":
                ddl.append(link_index_ddl(spec, dialect))
            elif spec.data_type == "multi_entity":
                ddl += multi_table_ddl(spec, dialect)
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
            await _drop_field_storage(cur, etype, fname, old_fields[fname][0], None, columns)
            await cur.execute(
                "DELETE FROM _sgcache_fields WHERE entity_type = ? AND field_name = ?",
                [etype, fname],
            )
        ddl += entity_index_ddl(etype, columns, dialect)
        ddl += read_index_ddl(etype, entity.identifier, specs, dialect)
        for stmt in ddl:
            await cur.execute(stmt)
        indexes: dict[str, set[str]] = {}
        for stmt in ddl:
            target = _INDEX_TABLE.search(stmt)
            if target:
                indexes.setdefault(target.group(1), set()).update(created_indexes([stmt]))
        await _prune(cur, etype, specs, tables, columns, indexes)

    for etype in sorted(set(recorded_types) | set(recorded)):
        if etype in kept_types:
            continue
        summary["removed_types"].append(etype)
        for table in sorted(tables):
            if table == etype or table.startswith(etype + "__"):
                await cur.execute(f"DROP TABLE IF EXISTS {layout.quote(table)}")
        await cur.execute("DELETE FROM _sgcache_entities WHERE entity_type = ?", [etype])
        await cur.execute("DELETE FROM _sgcache_fields WHERE entity_type = ?", [etype])

    if any(summary.values()):
        generation = str(int(await fields_generation(cur)) + 1)
        await put_items(cur, "_sgcache_meta", {META_FIELDS_GENERATION: generation})
    return summary


async def describe_storage(cur: SQLCursor) -> dict[str, dict[str, list[str]]]:
    """table -> {"columns": [...], "indexes": [...]} for every table but the
    bookkeeping ones: what a schema built, to compare two stores."""
    out = {}
    for table in sorted(await cur.table_names()):
        if table.startswith("_sgcache_"):
            continue
        out[table] = {
            "columns": sorted(await cur.table_columns(table)),
            "indexes": sorted(await cur.table_indexes(table)),
        }
    return out


#: the table a CREATE INDEX statement is on
_INDEX_TABLE = re.compile(r' ON "([^"]+)"')


async def load_recorded(cur: SQLCursor) -> Schema:
    """What the store records, as a `Schema` (types, identifiers, fields,
    data types, link types): the "before" of a schema plan."""
    entities = {
        name: EntitySpec(name, identifier or "id", {})
        for name, identifier in await cur.execute("SELECT entity_type, identifier FROM _sgcache_entities")
    }
    for etype, fname, dtype, links in await cur.execute(
        "SELECT entity_type, field_name, data_type, link_types FROM _sgcache_fields"
    ):
        entity = entities.setdefault(etype, EntitySpec(etype, "id", {}))
        entity.fields[fname] = FieldSpec(etype, fname, dtype, tuple(links.split(",")) if links else ())
    return Schema(entities.values(), source="the store")


def log_sync_summary(summary: dict[str, list[str]]) -> None:
    log.info("synced schema: {types} new types, {fields} new fields",
             types=len(summary["added_types"]), fields=len(summary["added_fields"]))
