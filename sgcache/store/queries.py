"""The read-only queries the stores share: counts, ids, ANALYZE, and the
named queries other stages ask for (`NamedQueries`)."""

from __future__ import annotations

from typing import Any, Sequence

from sgcache.store import layout
from sgcache.store.catalog import Synced
from sgcache.store.interface import StoreError, returns_deferred
from sgcache.store.statements import CHUNK


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


class NamedQueries:
    """The read-only queries the other stages ask a store for by name (no
    SQL outside the store and the read planner), on top of the backend's
    `fetch`. Every method returns a Deferred."""

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    @returns_deferred
    async def links_of(self, entity_type: str, entity_id: int, field_name: str, data_type: str) -> list[tuple[str, int]]:
        """The (type, id) links one stored entity holds in an entity or
        multi-entity field (none when the row or the field is not stored)."""
        try:
            if data_type == "entity":
                rows = await self.fetch(
                    f"SELECT {layout.link_type_column(field_name)}, {layout.link_id_column(field_name)} "
                    f'FROM {layout.entity_table(entity_type)} WHERE "id" = ?', [entity_id])
            else:
                rows = await self.fetch(
                    f"SELECT child_type, child_id FROM {layout.multi_table(entity_type, field_name)} "
                    "WHERE parent_id = ?", [entity_id])
        except Exception:
            return []
        return [(t, int(i)) for t, i in rows if t is not None and i is not None]

    @returns_deferred
    async def missing_ids(self, entity_type: str, ids: set[int]) -> set[int]:
        """The `ids` of a type the store holds no row for (none when the
        type is not stored)."""
        id_list = sorted(ids)
        have: set[int] = set()
        for start in range(0, len(id_list), CHUNK):
            chunk = id_list[start : start + CHUNK]
            try:
                rows = await self.fetch(
                    f'SELECT "id" FROM {layout.entity_table(entity_type)} '
                    f'WHERE "id" IN ({", ".join("?" for _ in chunk)})', chunk)
            except Exception:
                return set()
            have.update(int(r[0]) for r in rows)
        return set(ids) - have

    @returns_deferred
    async def ids_between(self, entity_type: str, after: int, upto: int, projects: list[int] | None = None,
                          active: bool | None = None) -> set[int]:
        """Stored ids in (after, upto], of the given projects when given,
        only active (or only retired) rows when `active` says so."""
        sql = f'SELECT "id" FROM {layout.entity_table(entity_type)} WHERE "id" > ? AND "id" <= ?'
        params: list[Any] = [after, upto]
        if active is not None:
            sql += f' AND "_active" = {1 if active else 0}'
        if projects:
            marks = ", ".join("?" for _ in projects)
            if entity_type == "Project":
                sql += f' AND "id" IN ({marks})'
            else:
                sql += (f" AND {layout.link_type_column('project')} = 'Project' "
                        f"AND {layout.link_id_column('project')} IN ({marks})")
            params += list(projects)
        return {int(r[0]) for r in await self.fetch(sql, params)}

    @returns_deferred
    async def active_fingerprint(self, entity_type: str) -> tuple[int, int]:
        """(count, sum of ids) of a type's active rows: what the site's
        summaries can be compared with."""
        rows = await self.fetch(
            f'SELECT COUNT(*), SUM("id") FROM {layout.entity_table(entity_type)} WHERE "_active" = 1', [])
        return int(rows[0][0]), int(rows[0][1] or 0)

    @returns_deferred
    async def active_ids(self, entity_type: str) -> set[int]:
        rows = await self.fetch(f'SELECT "id" FROM {layout.entity_table(entity_type)} WHERE "_active" = 1', [])
        return {int(r[0]) for r in rows}

    @returns_deferred
    async def update_log(self, entity_type: str, entity_id: int, limit: int = 200) -> list[dict[str, Any]]:
        """The newest `limit` update-log entries about one entity, oldest
        first: ``{seq, fields, source, event_id, at}``."""
        rows = await self.fetch(
            "SELECT seq, fields, source, event_id, at FROM _sgcache_updates "
            "WHERE entity_type = ? AND entity_id = ? ORDER BY seq DESC LIMIT ?",
            [entity_type, int(entity_id), int(limit)],
        )
        out = [
            {"seq": int(seq), "fields": fields, "source": source, "event_id": event_id, "at": float(at)}
            for seq, fields, source, event_id, at in rows
        ]
        out.reverse()
        return out
