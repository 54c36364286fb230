"""Test support for sync: dump every cached type, active and retired, with
every cached field, once as the cache serves it (the read planner and
reader over the store, no upstream) and once as the emulator serves it, so
a test can assert the two are equal.
"""

from __future__ import annotations

from typing import Any, Iterable

from sgcache.sync.fetch import cached_fields
from sgcache.read.planner import Catalog, PassThrough, plan_read
from sgcache.read.reader import execute
from sgcache.schema import Schema
from sgcache.store import layout


def read_args(entity_type: str, fields: list[str], return_only: str, page: int, per_page: int = 500) -> dict:
    return {
        "type": entity_type,
        "return_fields": fields,
        "filters": {"logical_operator": "and", "conditions": []},
        "return_only": return_only,
        "paging": {"entities_per_page": per_page, "current_page": page},
        "sorts": [{"field_name": "id", "direction": "asc"}],
        "return_paging_info_without_counts": True,
    }


async def ready_catalog(store: Any, schema: Schema, mark_ready: bool = False) -> Catalog:
    """The store's catalog; with `mark_ready`, every field is set ready first
    (tests that fill a store by events only)."""
    if mark_ready:
        for entity in schema:
            await store.set_field_states(entity.name, None, layout.FIELD_READY)
    states = await store.field_states()
    return Catalog(schema, {t: {f for f, s in fs.items() if s == "ready"} for t, fs in states.items()})


async def store_dump(
    store: Any, schema: Schema, types: Iterable[str] | None = None, mark_ready: bool = False
) -> dict[str, dict[str, list[dict]]]:
    """type -> {"active": [...], "retired": [...]} as the cache serves them.
    Raises PassThrough when the cache could not serve a read locally."""
    catalog = await ready_catalog(store, schema, mark_ready)
    out: dict[str, dict[str, list[dict]]] = {}
    for entity_type in types or [e.name for e in schema]:
        fields = cached_fields(schema, entity_type)
        out[entity_type] = {}
        for return_only in ("active", "retired"):
            rows: list[dict] = []
            page = 1
            while True:
                args = read_args(entity_type, fields, return_only, page)
                try:
                    plan = plan_read(args, catalog, store.dialect, 500)
                    result = await execute(store, plan, catalog)
                except PassThrough as e:
                    raise PassThrough(f"{entity_type} ({return_only}): {e}") from None
                rows.extend(result["entities"])
                if not result["paging_info"].get("has_next_page"):
                    break
                page += 1
            out[entity_type][return_only] = rows
    return out


def emulator_dump(
    emulator: Any, schema: Schema, types: Iterable[str] | None = None
) -> dict[str, dict[str, list[dict]]]:
    """The same dump, read from the emulator's engine directly."""
    out: dict[str, dict[str, list[dict]]] = {}
    for entity_type in types or [e.name for e in schema]:
        fields = cached_fields(schema, entity_type)
        out[entity_type] = {}
        for return_only in ("active", "retired"):
            rows: list[dict] = []
            page = 1
            while True:
                result = emulator.engine.read(read_args(entity_type, fields, return_only, page, emulator.page_size))
                rows.extend(result["entities"])
                if not result["paging_info"].get("has_next_page"):
                    break
                page += 1
            out[entity_type][return_only] = rows
    return out


def differences(ours: dict, theirs: dict, limit: int = 10) -> list[str]:
    """Human-readable mismatches between two dumps (empty when equal)."""
    problems: list[str] = []
    for entity_type in sorted(set(ours) | set(theirs)):
        for return_only in ("active", "retired"):
            a = {r["id"]: r for r in ours.get(entity_type, {}).get(return_only, [])}
            b = {r["id"]: r for r in theirs.get(entity_type, {}).get(return_only, [])}
            for eid in sorted(set(a) | set(b)):
                if a.get(eid) != b.get(eid):
                    if eid not in a or eid not in b:
                        problems.append(f"{entity_type} {eid} ({return_only}): only in {'cache' if eid in a else 'site'}")
                    else:
                        diff = {k: (a[eid].get(k), b[eid].get(k)) for k in set(a[eid]) | set(b[eid])
                                if a[eid].get(k) != b[eid].get(k)}
                        problems.append(f"{entity_type} {eid} ({return_only}): {diff}")
    return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit else [])


def count_mismatches(ours: dict, theirs: dict) -> int:
    n = 0
    for entity_type in set(ours) | set(theirs):
        for return_only in ("active", "retired"):
            a = {r["id"]: r for r in ours.get(entity_type, {}).get(return_only, [])}
            b = {r["id"]: r for r in theirs.get(entity_type, {}).get(return_only, [])}
            n += sum(1 for eid in set(a) | set(b) if a.get(eid) != b.get(eid))
    return n
