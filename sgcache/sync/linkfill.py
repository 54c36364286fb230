"""Server-side effects and incomplete rows: after an apply, find the link
targets (entity and multi-entity values) of cached types that the store
lacks, and fetch them, so reads of the linking rows can be served locally
(the reader passes a read through while a link target is missing).
"""

from __future__ import annotations

from typing import Any, Sequence

from twisted.internet import defer

from sgcache.schema.changes import EntityChange
from sgcache.sync.fetch import fetch_by_ids, gather
from sgcache.schema import Schema
from sgcache.logs import logger

log = logger(__name__)


def link_targets(schema: Schema, changes: Sequence[EntityChange]) -> dict[str, set[int]]:
    """Every (cached type, id) the changes link to."""
    out: dict[str, set[int]] = {}
    for change in changes:
        if change.delete or change.entity_type not in schema:
            continue
        for value in change.fields.values():
            links = value if isinstance(value, list) else [value]
            for link in links:
                if (
                    isinstance(link, dict)
                    and link.get("type") in schema
                    and isinstance(link.get("id"), int)
                ):
                    out.setdefault(link["type"], set()).add(link["id"])
    return out


async def missing_targets(store: Any, wanted: dict[str, set[int]]) -> dict[str, set[int]]:
    """The subset of `wanted` the store holds no row for."""
    out: dict[str, set[int]] = {}
    for etype, ids in sorted(wanted.items()):
        missing = await store.missing_ids(etype, ids)
        if missing:
            out[etype] = missing
    return out


async def fill_missing_links(
    store: Any,
    schema: Schema,
    upstream: Any,
    changes: Sequence[EntityChange],
    source: str,
    limit: int = 500,
    rounds: int = 2,
    freshness: Any = None,
) -> int:
    """Fetch and apply missing link targets of `changes` (at most `limit`
    entities per round, a few rounds for targets of targets); how many
    entities were fetched. Targets the site does not return are left alone.
    `freshness`: the readers' fence (`sgcache.sync.freshness`), so a target
    another read stored meanwhile is not overwritten by an older copy."""
    fetched = 0
    batch = list(changes)
    for _ in range(rounds):
        missing = await missing_targets(store, link_targets(schema, batch))
        if not missing:
            break
        batch = []
        budget = limit
        reads = []
        ticket = None if freshness is None else await freshness.ticket()
        try:
            for etype, ids in sorted(missing.items()):
                chosen = sorted(ids)[:budget]
                budget -= len(chosen)
                if chosen:
                    reads.append(defer.ensureDeferred(fetch_by_ids(upstream, schema, etype, chosen, source)))
                if budget <= 0:
                    break
            for found in await gather(reads):  # every type's reads at once
                batch.extend(found)
            if not batch:
                break
            if freshness is None:
                await store.apply(batch)
            else:
                await freshness.apply(store, batch, ticket)
        finally:
            if ticket is not None:
                freshness.done(ticket)
        fetched += len(batch)
        log.debug("fetched {count} missing link targets", count=len(batch))
    return fetched
