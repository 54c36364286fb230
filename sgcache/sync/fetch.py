"""Reading entities from the upstream site into `EntityChange`s (through
the one paged reader, `sgcache.site.pages`): by id, for the poller and the
write-back path; the entities linking to revived ones.
"""

from __future__ import annotations

from typing import Any, Iterable

from twisted.internet import defer

from sgcache.schema.changes import EntityChange
from sgcache.site.faults import ERR_AUTH, ERR_UPSTREAM, Fault
from sgcache.schema.types import is_cacheable
from sgcache.logs import logger
from sgcache.schema import Schema
from sgcache.site.pages import PAGE_SIZE, iter_pages

log = logger(__name__)



def cached_fields(schema: Schema, entity_type: str) -> list[str]:
    """The fields of a type the cache stores (sorted, `id` first)."""
    names = [
        spec.name
        for spec in schema[entity_type].fields.values()
        if is_cacheable(spec.data_type) and spec.name != "id"
    ]
    return ["id"] + sorted(names)


def to_change(
    schema: Schema, entity_type: str, entity: dict[str, Any], active: bool, source: str
) -> EntityChange:
    fields = {k: v for k, v in entity.items() if k not in ("type", "id")}
    return EntityChange(
        entity_type=entity_type,
        entity_id=int(entity["id"]),
        fields=fields,
        active=active,
        updated_at=fields.get("updated_at"),
        complete=True,
        source=source,
    )


async def fetch_by_ids(
    upstream: Any, schema: Schema, entity_type: str, ids: Iterable[int], source: str
) -> list[EntityChange]:
    """Full, current copies of the given entities, active or retired.
    Ids that exist in neither state are absent from the result. The reads
    (active and retired, per 500 ids) go to the site at once, within the
    site gate's limit: one round trip of latency, not one per read."""
    wanted = sorted({int(i) for i in ids})
    fields = cached_fields(schema, entity_type)

    async def read(chunk: list[int], return_only: str, active: bool) -> list[EntityChange]:
        cond = [{"path": "id", "relation": "in", "values": chunk}]
        out = []
        async for page in iter_pages(upstream, entity_type, fields, cond, return_only, page_size=len(chunk)):
            out.extend(to_change(schema, entity_type, entity, active, source) for entity in page)
        return out

    reads = [
        defer.ensureDeferred(read(wanted[start:start + PAGE_SIZE], return_only, active))
        for start in range(0, len(wanted), PAGE_SIZE)
        for return_only, active in (("active", True), ("retired", False))
    ]
    changes: list[EntityChange] = []
    for part in await gather(reads):
        changes.extend(part)
    return changes


async def gather(deferreds: list[defer.Deferred]) -> list[Any]:
    """The results of `deferreds`, in order; the first failure raised once
    all have ended (none is left running behind the caller's back)."""
    results = await defer.DeferredList(deferreds, consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return [value for _, value in results]


def fields_linking_to(schema: Schema, target_type: str) -> list[tuple[str, str]]:
    """(type, field) of every cached entity / multi-entity field that can
    link to `target_type`."""
    out = []
    for entity in schema:
        for spec in entity.fields.values():
            if spec.data_type in ("entity", "multi_entity") and target_type in spec.link_types:
                out.append((entity.name, spec.name))
    return sorted(out)


async def linkers(upstream: Any, schema: Schema, revived: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """The (type, id) of every entity, active or retired, that links to one
    of the `revived` entities in a cached field, by the site's reads.

    The site hides a link to a retired entity (null, or left out of the
    list) and shows it again once that entity is revived, without an event
    or a new `updated_at` for the entities that link to it. So a copy read
    while the target was retired lacks the link, and must be read again
    after the revival."""
    by_type: dict[str, list[int]] = {}
    for etype, eid in revived:
        by_type.setdefault(etype, []).append(int(eid))
    found: set[tuple[str, int]] = set()
    for target_type, ids in sorted(by_type.items()):
        links = [{"type": target_type, "id": i} for i in sorted(set(ids))]
        for etype, fname in fields_linking_to(schema, target_type):
            condition = {"logical_operator": "or", "conditions": [
                {"path": fname, "relation": "is", "values": [link]} for link in links
            ]}
            try:
                for return_only in ("active", "retired"):
                    async for page in iter_pages(upstream, etype, ["id"], [condition], return_only):
                        found.update((etype, int(e["id"])) for e in page)
            except Fault as e:
                if e.error_code in (ERR_AUTH, ERR_UPSTREAM):
                    raise
                # the site refuses this filter: the rest still counts, and
                # the event stream must not stall on it
                log.warn("cannot list the {type} linking to revived {target}s through {field} "
                         "({error}); a full scan brings those links back",
                         type=etype, target=target_type, field=fname, error=e.message)
    return found
