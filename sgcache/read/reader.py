"""Runs a `ReadPlan` against a store and shapes the rows into exactly the
JSON Shotgun returns: ``{"entities": [...], "paging_info": {...}}``.

Every statement goes through the store's `read` (a client's read, within
the read budget: past it the store raises `ReadTimeout`).

Some things can only be known from the data, and each raises `PassThrough`
so the request goes upstream: a row (of any type the plan reads) not yet
fully loaded, a link to a type whose names the cache does not hold, a link
whose target row the store lacks.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable

from sgcache.schema.types import data_type
from sgcache.schema.types.base import identity
from sgcache.read.planner import Catalog, Output, PassThrough, ReadPlan
from sgcache.read.relations import in_list

#: ids per IN (...) list when reading link targets and association rows
_CHUNK = 500


async def guarded_rows(store: Any, plan: Any) -> list[tuple]:
    """The rows of `plan` (a read's or a summary's), or PassThrough when one
    of its run-time guards is up (read from the first row, or by the guard
    statement alone when no row matched)."""
    rows = await store.read(plan.sql, plan.params)
    if rows:
        flags = [rows[0][column] for _, column in plan.guard_columns]
    else:
        flags = list((await store.read(plan.guard_sql, []))[0])
    for (reason, _), flag in zip(plan.guard_columns, flags):
        if flag:
            raise PassThrough(reason)
    return rows


async def execute(store: Any, plan: ReadPlan, catalog: Catalog) -> dict[str, Any]:
    rows = await guarded_rows(store, plan)
    has_next = False
    if plan.page_size is not None and len(rows) > plan.page_size:
        has_next = True
        rows = rows[: plan.page_size]
    shape = _shaper(plan, catalog)
    entities = [shape(row) for row in rows]
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
        count_rows = await store.read(plan.count_sql, plan.count_params)
        return {"entity_count": int(count_rows[0][0])}
    return {"has_next_page": has_next}


def _shaper(plan: ReadPlan, catalog: Catalog) -> Callable[[tuple], dict[str, Any]]:
    """A function shaping one row of `plan` into its wire entity; the
    per-field work (decoders, link columns) is looked up once per read."""
    fields = [(out.name, _field_reader(catalog, out)) for out in plan.outputs if out.kind != "multi"]
    entity_type, id_column = plan.entity_type, plan.id_column

    def shape(row: tuple) -> dict[str, Any]:
        entity: dict[str, Any] = {"type": entity_type, "id": row[id_column]}
        for name, value in fields:
            entity[name] = value(row)
        return entity

    return shape


def _field_reader(catalog: Catalog, out: Output) -> Callable[[tuple], Any]:
    """row -> the wire value of one scalar or entity output."""
    if out.kind == "entity":
        value = _link_reader(catalog, out)
    elif out.spec is not None and out.spec.name == "id":
        value = itemgetter(out.columns[0])
    else:
        assert out.spec is not None
        decode, column = data_type(out.spec.data_type).decode, out.columns[0]
        if decode is identity:
            value = itemgetter(column)
        else:
            def value(row: tuple) -> Any:
                return decode(row[column])

    null = out.null_column
    if null is None:
        return value

    def deep(row: tuple) -> Any:
        # a deep field through a null link is null, whatever its type
        return None if row[null] is None else value(row)

    return deep


def _link_reader(catalog: Catalog, out: Output) -> Callable[[tuple], Any]:
    """row -> the entity field's wire value: None, or {type, id, name}."""
    type_col, id_col = out.columns[0], out.columns[1]
    targets: dict[str, tuple[int, int, int | None, Callable[[Any], Any]]] = {}
    position = 2
    for join in out.joins:
        named = join.identifier != "id"
        targets[join.target_type] = (
            out.columns[position], out.columns[position + 1],
            out.columns[position + 2] if named else None,
            catalog.name_decoder(join.target_type),
        )
        position += 3 if named else 2
    return link_value(type_col, id_col, targets)


def link_value(type_col: int, id_col: int,
               targets: dict[str, tuple[int, int, int | None, Callable[[Any], Any]]]) -> Callable[[tuple], Any]:
    """row -> an entity link's wire value from its type and id columns and,
    per target type, the joined row's (found, active, name) columns and
    name decoder: None (no link, or a retired target), or {type, id, name}.
    A target type whose names are not joined, or a target not in the store,
    passes through."""
    def value(row: tuple) -> Any:
        link_id = row[id_col]
        if link_id is None:
            return None
        link_type = row[type_col]
        target = targets.get(link_type)
        if target is None:
            raise PassThrough("link to a type whose names are not cached", str(link_type))
        found_col, active_col, name_col, decode = target
        if row[found_col] is None:
            raise PassThrough("link target not in the store", link_type)
        if not row[active_col]:
            return None
        name = None if name_col is None else decode(row[name_col])
        return {"type": link_type, "id": link_id, "name": name}

    return value


async def _fill_multi(
    store: Any, catalog: Catalog, out: Output, rows: list[tuple], entities: list[dict]
) -> None:
    assert out.links_sql is not None
    owner_col = out.columns[0]
    by_owner: dict[int, list[dict]] = {}
    for row, entity in zip(rows, entities):
        if out.null_column is not None and row[out.null_column] is None:
            entity[out.name] = None
            continue
        entity[out.name] = []
        by_owner.setdefault(row[owner_col], []).append(entity)
    # target type -> (its _active column, its name column or None, decoder)
    targets: dict[str, tuple[int, int | None, Callable[[Any], Any]]] = {}
    position = 3
    for join in out.joins:
        named = join.identifier != "id"
        targets[join.target_type] = (
            position, position + 1 if named else None, catalog.name_decoder(join.target_type)
        )
        position += 2 if named else 1
    owners = sorted(by_owner)
    for start in range(0, len(owners), _CHUNK):
        chunk = owners[start : start + _CHUNK]
        ids = in_list(store.dialect, "a.parent_id", chunk)
        links = await store.read(f"{out.links_sql}{ids.sql} ORDER BY a.parent_id, a.position", ids.params)
        for link in links:
            child_type = link[1]
            target = targets.get(child_type)
            if target is None:
                raise PassThrough("link to a type whose names are not cached", str(child_type))
            active_col, name_col, decode = target
            active = link[active_col]
            if active is None:
                raise PassThrough("link target not in the store", child_type)
            if active:
                name = decode(None if name_col is None else link[name_col])
                item = {"type": child_type, "id": link[2], "name": name}
                for entity in by_owner[link[0]]:
                    entity[out.name].append(dict(item))
