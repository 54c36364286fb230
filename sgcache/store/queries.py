"""Small read-only queries the stores share (counts, ids, ANALYZE)."""

from __future__ import annotations

from typing import Any

from sgcache.store import layout
from sgcache.store.catalog import Synced
from sgcache.store.interface import StoreError


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
