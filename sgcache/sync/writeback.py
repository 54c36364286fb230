"""Write-back: after a write passed through to the site succeeded, bring the
store up to date before the client gets its answer, so the client reads its
own write from the cache at once.

The write's own result is not trusted to be the whole truth (the site sets
`updated_at`, backrefs on the other side of links, defaults), so the entities
a write touched are re-read from the site in full and applied as complete
rows through the store's one apply path. Retire/revive flip the row state;
a revive also re-reads the entities linking to the revived one.
The re-read takes a ticket from the `Freshness` fence shared with the poller
and the scanner (on PostgreSQL: with every daemon's, in the database), so a
re-read that a younger sync read overtook (same `updated_at` second) does
not overwrite it.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable


from sgcache.schema.changes import SOURCE_PASSTHROUGH, EntityChange
from sgcache.sync.fetch import fetch_by_ids, linkers
from sgcache.sync.freshness import Freshness, LocalFreshness
from sgcache.schema import Schema
from sgcache.logs import logger

log = logger(__name__)

WRITE_METHODS = frozenset(["create", "update", "delete", "revive", "batch"])


class WriteBack:
    def __init__(self, schema: Schema, store: Any, upstream: Any, freshness: Freshness | None = None):
        self.schema = schema
        self.store = store
        self.upstream = upstream
        self.freshness = freshness or LocalFreshness()
        #: awaited before each write-back when set: a daemon joining a
        #: shared PostgreSQL store holds its write-backs (and so the
        #: clients' answers) until the other daemons know it
        #: (`sgcache.cluster.Cluster.announce`)
        self.hold: Callable[[], Awaitable[None]] | None = None

    async def after(self, method: str, args: Any, results: Any) -> None:
        """Apply the effects of a successful write; never raises."""
        try:
            if self.hold is not None:
                await self.hold()
            touched = await self._collect(method, args, results)
            await self._refresh(touched)
        except Exception:
            log.failure("write-back of {method} failed; the event poller will catch up", method=method)

    async def _collect(self, method: str, args: Any, results: Any) -> dict[str, set[int]]:
        touched: dict[str, set[int]] = {}
        requests: list[tuple[str, dict, Any]]
        if method == "batch":
            if not isinstance(args, list) or not isinstance(results, list):
                return touched
            requests = [
                (r.get("request_type"), r, res)
                for r, res in zip(args, results)
                if isinstance(r, dict)
            ]
        else:
            requests = [(method, args if isinstance(args, dict) else {}, results)]
        revived: list[tuple[str, int]] = []
        for kind, req, res in requests:
            entity_type = req.get("type")
            if entity_type not in self.schema:
                continue
            if kind == "create" and isinstance(res, dict) and "id" in res:
                entity_id = int(res["id"])
            elif kind in ("update", "delete", "revive") and req.get("id") is not None:
                entity_id = int(req["id"])
            else:
                continue
            touched.setdefault(entity_type, set()).add(entity_id)
            if kind in ("create", "update"):
                await self._reverse_targets(entity_type, entity_id, req, res, touched)
            elif kind == "revive" and res is True:
                revived.append((entity_type, entity_id))
        if revived:
            # the site shows links to them again (see `fetch.linkers`)
            for linker_type, linker_id in await linkers(self.upstream, self.schema, revived):
                touched.setdefault(linker_type, set()).add(linker_id)
        return touched

    async def _reverse_targets(
        self, entity_type: str, entity_id: int, req: dict, res: Any, touched: dict[str, set[int]]
    ) -> None:
        """Links whose other side Shotgun keeps in step (backrefs): the old
        and new targets of every changed link field with a cached reverse."""
        for item in req.get("fields") or []:
            if not isinstance(item, dict):
                continue
            spec = self.schema.get_field(entity_type, item.get("field_name", ""))
            if spec is None or not spec.is_link or not spec.reverse:
                continue
            value = item.get("value")
            links = value if isinstance(value, list) else [value]
            for link in links:
                if isinstance(link, dict) and link.get("type") in self.schema:
                    touched.setdefault(link["type"], set()).add(int(link["id"]))
            for link in await self.store.links_of(entity_type, entity_id, spec.name, spec.data_type):
                if link[0] in self.schema:
                    touched.setdefault(link[0], set()).add(link[1])

    async def _refresh(self, touched: dict[str, set[int]]) -> None:
        ticket = await self.freshness.ticket()
        try:
            changes: list[EntityChange] = []
            for entity_type, ids in sorted(touched.items()):
                found = await fetch_by_ids(self.upstream, self.schema, entity_type, ids, SOURCE_PASSTHROUGH)
                changes.extend(found)
                missing = set(ids) - {c.entity_id for c in found}
                for entity_id in sorted(missing):
                    # gone from the site altogether (or unreadable): drop our copy
                    changes.append(
                        EntityChange(entity_type, entity_id, delete=True, source=SOURCE_PASSTHROUGH)
                    )
            if changes:
                changes = await self.freshness.apply(self.store, changes, ticket)
                log.debug("write-back applied {count} entity changes", count=len(changes))
        finally:
            self.freshness.done(ticket)
