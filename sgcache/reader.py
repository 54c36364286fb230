"""Runs a `ReadPlan` against a store and shapes the rows into exactly the
JSON Shotgun returns: ``{"entities": [...], "paging_info": {...}}``.

Some things can only be known from the data: a row not yet fully loaded, a
link to a type the cache does not hold, a link target missing from the
store. Each raises `PassThrough`, and the request goes upstream.
"""

from __future__ import annotations

from typing import Any

from .fieldtypes import FIELD_TYPES
from .planner import Catalog, PassThrough, ReadPlan
from .store import layout


async def execute(store: Any, plan: ReadPlan, catalog: Catalog) -> dict[str, Any]:
    rows = await store.fetch(plan.sql, plan.params)
    has_next = False
    if plan.page_size is not None and len(rows) > plan.page_size:
        has_next = True
        rows = rows[: plan.page_size]
    for row in rows:
        if not row[plan.complete_column]:
            raise PassThrough(f"{plan.entity_type} {row[plan.id_column]} not fully loaded yet")
    entities = [_shape(plan, catalog, row) for row in rows]
    if plan.multi_fields and entities:
        await _fill_multi(store, plan, catalog, entities)
    result: dict[str, Any] = {"entities": entities}
    result["paging_info"] = await _paging_info(store, plan, has_next, len(entities))
    return result


async def _paging_info(store: Any, plan: ReadPlan, has_next: bool, page_len: int) -> dict[str, Any]:
    if plan.paging_mode == "has_next_page":
        return {"has_next_page": has_next}
    if plan.count_sql is not None:
        count_rows = await store.fetch(plan.count_sql, plan.count_params)
        return {"entity_count": int(count_rows[0][0])}
    return {"has_next_page": has_next}


def _shape(plan: ReadPlan, catalog: Catalog, row: tuple) -> dict[str, Any]:
    entity: dict[str, Any] = {"type": plan.entity_type, "id": row[plan.id_column]}
    for out in plan.outputs:
        spec = out.spec
        assert spec is not None
        if spec.data_type == "multi_entity":
            continue
        if spec.data_type == "entity":
            entity[out.name] = _link_value(plan, catalog, out, row)
            continue
        raw = row[out.columns[0]]
        entity[out.name] = FIELD_TYPES[spec.data_type].decode(raw)
    return entity


def _link_value(plan: ReadPlan, catalog: Catalog, out: Any, row: tuple) -> Any:
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
                raise PassThrough(f"link target {link_type} {link_id} not in the store")
            if not active:
                return None
            name = None
            if width == 3:
                name = _decode_name(catalog, link_type, row[out.columns[position + 2]])
            return {"type": link_type, "id": link_id, "name": name}
        position += width
    raise PassThrough(f"link to {link_type} {link_id}: names of that type are not cached")


def _decode_name(catalog: Catalog, entity_type: str, raw: Any) -> Any:
    ident = catalog.schema.identifier(entity_type)
    spec = catalog.schema.get_field(entity_type, ident)
    if spec is None:
        return raw
    return FIELD_TYPES[spec.data_type].decode(raw)


async def _fill_multi(store: Any, plan: ReadPlan, catalog: Catalog, entities: list[dict]) -> None:
    by_id = {e["id"]: e for e in entities}
    ids = list(by_id)
    marks = ", ".join("?" for _ in ids)
    for spec in plan.multi_fields:
        for entity in entities:
            entity[spec.name] = []
        table = layout.multi_table(plan.entity_type, spec.name)
        links = await store.fetch(
            f"SELECT parent_id, child_type, child_id FROM {table} "
            f"WHERE parent_id IN ({marks}) ORDER BY parent_id, position",
            ids,
        )
        targets: dict[str, set[int]] = {}
        for _parent, child_type, child_id in links:
            targets.setdefault(child_type, set()).add(child_id)
        known: dict[tuple[str, int], tuple[bool, Any]] = {}
        for child_type, child_ids in targets.items():
            if child_type not in catalog.schema or not catalog.nameable(child_type):
                raise PassThrough(f"{spec.name} links to {child_type}, whose names are not cached")
            ident = catalog.schema.identifier(child_type)
            name_col = "NULL" if ident == "id" else layout.scalar_column(ident)
            id_list = sorted(child_ids)
            rows = await store.fetch(
                f'SELECT "id", "_active", {name_col} FROM {layout.entity_table(child_type)} '
                f'WHERE "id" IN ({", ".join("?" for _ in id_list)})',
                id_list,
            )
            for child_id, active, raw_name in rows:
                name = None if ident == "id" else _decode_name(catalog, child_type, raw_name)
                known[(child_type, child_id)] = (bool(active), name)
        for parent_id, child_type, child_id in links:
            state = known.get((child_type, child_id))
            if state is None:
                raise PassThrough(f"{spec.name} links to {child_type} {child_id}, not in the store")
            active, name = state
            if active:
                by_id[parent_id][spec.name].append({"type": child_type, "id": child_id, "name": name})
