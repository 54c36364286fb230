"""The DDL a `Schema` needs: bookkeeping tables, entity tables and their
columns, association tables of multi-entity fields, and the indexes the
read planner relies on. Names follow `sgcache.store.layout` exactly."""

from __future__ import annotations

import hashlib
import re

from sgcache.schema import FieldSpec
from sgcache.schema.types import data_type
from sgcache.schema.types.base import LINK, LINKS
from sgcache.store import layout
from sgcache.store.dialect import Dialect
from sgcache.store.shadowlog import shadow_ddl
from sgcache.store.updatelog import update_log_ddl


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
    ] + update_log_ddl(dialect) + shadow_ddl(dialect)


def field_columns(spec: FieldSpec, dialect: Dialect) -> list[tuple[str, str]]:
    """(unquoted column name, SQL type) the field needs on its entity table."""
    storage = data_type(spec.data_type).storage
    if spec.name == "id" or storage == LINKS:
        return []
    if storage == LINK:
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
            if spec.name == identifier and data_type(spec.data_type).textual:
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


def fits(spec: FieldSpec, dialect: Dialect) -> bool:
    """False when a name this field needs would be truncated by the server."""
    if not dialect.max_identifier:
        return True
    names = [spec.entity_type] + [c for c, _ in field_columns(spec, dialect)]
    if spec.data_type == "multi_entity":
        names.append(layout.multi_table_name(spec.entity_type, spec.name))
    return all(len(n.encode()) <= dialect.max_identifier for n in names)


def entity_base_columns(dialect: Dialect) -> set[str]:
    """The columns every entity table has whatever its fields (``id`` and
    the ``_`` bookkeeping columns), read off `entity_table_ddl` so the two
    never disagree."""
    return set(re.findall(r'"(\w+)" ', entity_table_ddl("T", [], dialect).partition("(")[2]))


def created_indexes(statements: list[str]) -> set[str]:
    """The (unquoted) names of the indexes DDL statements create."""
    out = set()
    for stmt in statements:
        match = _CREATE_INDEX.match(stmt)
        if match:
            out.add(match.group(1))
    return out


_CREATE_INDEX = re.compile(r'CREATE (?:UNIQUE )?INDEX IF NOT EXISTS "([^"]+)"')
