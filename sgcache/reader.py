"""Runs a `ReadPlan` against a store and shapes the rows into exactly the
JSON Shotgun returns: ``{"entities": [...], "paging_info": {...}}``.

Some things can only be known from the data, and each raises `PassThrough`
so the request goes upstream: a row (of any type the plan reads) not yet
fully loaded, a link to a type whose names the cache does not hold, a link
whose target row the store lacks.
"""

from __future__ import annotations

from typing import Any

from .fieldtypes import FIELD_TYPES
from .planner import Catalog, Output, PassThrough, ReadPlan
from .store import layout

#: ids per IN (...) list when reading link targets and association rows
_CHUNK = 500


async def execute(store: Any, plan: ReadPlan, catalog: Catalog) -> dict[str, Any]:
    rows = await store.fetch(plan.sql, plan.params)
    if rows:
        flags = [rows[0][column] for _, column in plan.guard_columns]
    else:
        flags = list((await store.fetch(plan.guard_sql, []))[0])
    for (reason, _), flag in zip(plan.guard_columns, flags):
        if flag:
            raise PassThrough(reason)
    has_next = False
    if plan.page_size is not None and len(rows) > plan.page_size:
        has_next = True
        rows = rows[: plan.page_size]
    entities = [_shape(plan, catalog, row) for row in rows]
    multi = [o for o in plan.outputs if o.kind == "multi"]
    if multi and entities:
        for out in multi:
            await _fill_multi(store, catalog, out, rows, entities)
    result: dict[str, Any] = {"entities": entities}
    result["paging_info"] = await _paging_info(store, plan, has_next)
    return result


async def _paging_info(store: Any, plan: ReadPlan, has_next: bool) -> dict[str, Any]:
    if plan.paging_mode == "has_next_page":
        return {"has_next_page": has_next}
    if plan.count_sql is not None:
        count_rows = await store.fetch(plan.count_sql, plan.count_params)
        return {"entity_count": int(count_rows[0][0])}
    return {"has_next_page": has_next}


def _shape(plan: ReadPlan, catalog: Catalog, row: tuple) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": plan.entity_type, "id": row[plan.id_column]}
    for out in plan.outputs:
        if out.kind == "multi":
            continue
        if out.null_column is not None and row[out.null_column] is None:
            entity[out.name] = None  # a deep field through a null link
            continue
        if out.kind == "entity":
            entity[out.name] = _link_value(catalog, out, row)
            continue
        spec = out.spec
        assert spec is not None
        raw = row[out.columns[0]]
        if spec.name == "id":
            entity[out.name] = raw
        else:
            entity[out.name] = FIELD_TYPES[spec.data_type].decode(raw)
    return entity


def _link_value(catalog: Catalog, out: Output, row: tuple) -> Any:
    link_type = row[out.columns[0]]
    link_id = row[out.columns[1]]
    if link_id is None:
        return None
    position = 2
    for join in out.joins:
        width = 2 if join.identifier == "id" else 3
        if join.target_type == link_type:
            found_id, active = row[out.columns[position]], row[out.columns[position + 1]]
            if found_id is None:
                raise PassThrough("link target not in the store", link_type)
            if not active:
                return None
            name = None
            if width == 3:
                name = catalog.decode_name(link_type, row[out.columns[position + 2]])
            return {"type": link_type, "id": link_id, "name": name}
        position += width
    raise PassThrough("link to a type whose names are not cached", str(link_type))


async def _fill_multi(
    store: Any, catalog: Catalog, out: Output, rows: list[tuple], entities: list[dict]
) -> None:
    spec = out.spec
    assert spec is not None
    owner_col = out.columns[0]
    by_owner: dict[int, list[dict]] = {}
    for row, entity in zip(rows, entities):
        if out.null_column is not None and row[out.null_column] is None:
            entity[out.name] = None
            continue
        entity[out.name] = []
        by_owner.setdefault(row[owner_col], []).append(entity)
    owners = sorted(by_owner)
    table = layout.multi_table(spec.entity_type, spec.name)
    links: list[tuple] = []
    for start in range(0, len(owners), _CHUNK):
        chunk = owners[start : start + _CHUNK]
        links += await store.fetch(
            f"SELECT parent_id, child_type, child_id FROM {table} "
            f"WHERE parent_id IN ({', '.join('?' for _ in chunk)}) ORDER BY parent_id, position",
            chunk,
        )
    targets: dict[str, set[int]] = {}
    for _parent, child_type, child_id in links:
        targets.setdefault(child_type, set()).add(child_id)
    known: dict[tuple[str, int], tuple[bool, Any]] = {}
    for child_type, child_ids in targets.items():
        if child_type not in catalog.schema or not catalog.nameable(child_type):
            raise PassThrough("link to a type whose names are not cached", str(child_type))
        ident = catalog.schema.identifier(child_type)
        name_col = "NULL" if ident == "id" else layout.scalar_column(ident)
        id_list = sorted(child_ids)
        for start in range(0, len(id_list), _CHUNK):
            chunk = id_list[start : start + _CHUNK]
            found = await store.fetch(
                f'SELECT "id", "_active", {name_col} FROM {layout.entity_table(child_type)} '
                f'WHERE "id" IN ({", ".join("?" for _ in chunk)})',
                chunk,
            )
            for child_id, active, raw_name in found:
                known[(child_type, child_id)] = (bool(active), catalog.decode_name(child_type, raw_name))
    for parent_id, child_type, child_id in links:
        state = known.get((child_type, child_id))
        if state is None:
            raise PassThrough("link target not in the store", child_type)
        active, name = state
        if active:
            item = {"type": child_type, "id": child_id, "name": name}
            for entity in by_owner[parent_id]:
                entity[out.name].append(dict(item))
