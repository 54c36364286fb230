"""Reading a site's entities a page at a time, by ascending id: the one
paged reader every sync path uses (the event poller, the scanner, fetching
entities by id, re-reading events for ``sgcache reprocess``).

Pages walk ids upward (``id > the last one read``), which stays stable while
the site inserts rows, unlike page numbers. Whether more follow is what the
site says (``has_next_page``): it may cap a page below the size asked for
(its ``api_max_entities_per_page``), so a short page is not the end.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable

#: entities asked for per page (the site's usual maximum)
PAGE_SIZE = 500


async def read_page(
    upstream: Any,
    entity_type: str,
    return_fields: list[str],
    conditions: Iterable[dict] = (),
    return_only: str = "active",
    page_size: int = PAGE_SIZE,
    after_id: int | None = None,
) -> tuple[list[dict[str, Any]], bool]:
    """One page of `entity_type` matching `conditions` (and with an id
    above `after_id`, when given), by ascending id, and whether more follow."""
    conditions = list(conditions)
    if after_id is not None:
        conditions.append({"path": "id", "relation": "greater_than", "values": [after_id]})
    result = await upstream.call("read", {
        "type": entity_type,
        "return_fields": return_fields,
        "filters": {"logical_operator": "and", "conditions": conditions},
        "return_only": return_only,
        "paging": {"entities_per_page": page_size, "current_page": 1},
        "sorts": [{"field_name": "id", "direction": "asc"}],
        "return_paging_info_without_counts": True,
    })
    entities = list(result.get("entities") or [])
    paging = result.get("paging_info")
    if isinstance(paging, dict) and "has_next_page" in paging:
        more = bool(paging["has_next_page"])
    else:  # a site that does not say: a full page may have a next one
        more = len(entities) >= page_size
    return entities, more and bool(entities)


async def iter_pages(
    upstream: Any,
    entity_type: str,
    return_fields: list[str],
    conditions: Iterable[dict] = (),
    return_only: str = "active",
    after_id: int = 0,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every matching entity with an id above `after_id`, a page at a time."""
    conditions = list(conditions)
    last = after_id
    while True:
        page, more = await read_page(upstream, entity_type, return_fields, conditions, return_only,
                                     page_size, after_id=last)
        if page:
            yield page
        if not more:
            return
        last = max(int(e["id"]) for e in page)
