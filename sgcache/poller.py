"""The event poller: follows the site's EventLogEntry stream and keeps the
store current.

Each poll reads events with ``id > cursor`` in ascending pages (no pause
while a full page keeps coming). Every event about a cached entity type names
one or two entities (the entity itself, and for backref changes the entity on
the other side of the link); those entities are re-read from the site in
full, batched per type, and applied together with the new cursor in one
store transaction. Re-reading instead of replaying field deltas makes every
event kind (New, Change, multi-entity add/remove, backrefs, Retirement,
Revival, in_create changes) converge on the site's current state, and makes
re-applying an event harmless, so a crash between polls loses nothing.

Holes (an id missing between seen ids: its transaction committed late) keep
the persisted cursor below them for up to `hole_timeout` seconds; events
above a hole are applied as they come and remembered so they are not
re-fetched, then the hole is given up (logged).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from .changes import SOURCE_EVENT, EntityChange
from .fetch import fetch_by_ids
from .schema import Schema

log = Logger()

CURSOR_KEY = "event_cursor"
EVENT_FIELDS = ["id", "event_type", "attribute_name", "entity", "meta", "created_at"]


class EventPoller:
    def __init__(
        self,
        reactor: Any,
        schema: Schema,
        store: Any,
        upstream: Any,
        interval: float = 2.0,
        page_size: int = 500,
        hole_timeout: float = 300.0,
    ):
        self.reactor = reactor
        self.schema = schema
        self.store = store
        self.upstream = upstream
        self.interval = interval
        self.page_size = page_size
        self.hole_timeout = hole_timeout
        self.cursor: int | None = None
        #: ids above the cursor already applied
        self.applied_above: set[int] = set()
        #: missing id -> time first noticed
        self.holes: dict[int, float] = {}
        self.last_event_id: int | None = None
        self.last_event_time: str | None = None
        self.counters: Counter[str] = Counter()
        self.errors = 0
        self.last_error: str | None = None
        self._loop: task.LoopingCall | None = None

    # -- lifecycle -----------------------------------------------------------
    async def initialize(self) -> int:
        """Load the cursor, or start it at the site's newest event."""
        saved = await self.store.get_state(CURSOR_KEY)
        if saved is not None:
            self.cursor = int(saved)
        else:
            newest = await self.upstream.call(
                "read",
                {
                    "type": "EventLogEntry",
                    "return_fields": ["id"],
                    "filters": {"logical_operator": "and", "conditions": []},
                    "sorts": [{"field_name": "id", "direction": "desc"}],
                    "paging": {"entities_per_page": 1, "current_page": 1},
                    "return_only": "active",
                },
            )
            entities = newest.get("entities") or []
            self.cursor = int(entities[0]["id"]) if entities else 0
            await self.store.set_state({CURSOR_KEY: str(self.cursor)})
        log.info("event cursor at {cursor}", cursor=self.cursor)
        return self.cursor

    def start(self) -> None:
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True).addErrback(
            lambda f: log.failure("event poller stopped", f)
        )

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _tick(self) -> defer.Deferred:
        d = defer.ensureDeferred(self.poll())
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Any) -> None:
        self.errors += 1
        self.last_error = failure.getErrorMessage()
        log.warn("event poll failed (will retry): {error}", error=self.last_error)

    # -- polling -------------------------------------------------------------
    async def poll(self) -> int:
        """Read and apply events until caught up; returns events applied."""
        if self.cursor is None:
            await self.initialize()
        total = 0
        read_from = self.cursor
        while True:
            events = await self._read_after(read_from)
            fresh = [e for e in events if int(e["id"]) not in self.applied_above]
            cursor, applied, holes = self._advance(events)
            if fresh or cursor != self.cursor:
                await self._apply(fresh, cursor)
                total += len(fresh)
            # only once the store has them: move on in memory too
            self.cursor, self.applied_above, self.holes = cursor, applied, holes
            if len(events) < self.page_size:
                return total
            read_from = max(int(e["id"]) for e in events)

    async def _read_after(self, cursor: int | None) -> list[dict[str, Any]]:
        result = await self.upstream.call(
            "read",
            {
                "type": "EventLogEntry",
                "return_fields": EVENT_FIELDS,
                "filters": {
                    "logical_operator": "and",
                    "conditions": [{"path": "id", "relation": "greater_than", "values": [cursor or 0]}],
                },
                "sorts": [{"field_name": "id", "direction": "asc"}],
                "paging": {"entities_per_page": self.page_size, "current_page": 1},
                "return_only": "active",
            },
        )
        return list(result.get("entities") or [])

    def _advance(self, events: list[dict[str, Any]]) -> tuple[int, set[int], dict[int, float]]:
        """The contiguous cursor, ids applied above it and open holes after
        `events` are applied (computed, not stored)."""
        now = self.reactor.seconds()
        assert self.cursor is not None
        cursor = self.cursor
        applied = set(self.applied_above)
        holes = dict(self.holes)
        expected = cursor + 1
        for event in events:
            event_id = int(event["id"])
            for missing in range(expected, event_id):
                if missing not in applied:
                    holes.setdefault(missing, now)
            applied.add(event_id)
            holes.pop(event_id, None)
            expected = max(expected, event_id + 1)
        for missing, since in list(holes.items()):
            if now - since > self.hole_timeout:
                log.warn(
                    "event {id} never appeared within {timeout}s; giving it up",
                    id=missing,
                    timeout=self.hole_timeout,
                )
                self.counters["holes_given_up"] += 1
                del holes[missing]
                applied.add(missing)
        while cursor + 1 in applied:
            cursor += 1
            applied.discard(cursor)
        return cursor, applied, holes

    async def _apply(self, events: list[dict[str, Any]], cursor: int) -> None:
        touched: dict[str, set[int]] = {}
        for event in events:
            self._collect(event, touched)
        changes: list[EntityChange] = []
        for entity_type, ids in sorted(touched.items()):
            found = await fetch_by_ids(self.upstream, self.schema, entity_type, ids, SOURCE_EVENT)
            changes.extend(found)
            for missing in sorted(set(ids) - {c.entity_id for c in found}):
                changes.append(EntityChange(entity_type, missing, delete=True, source=SOURCE_EVENT))
        # persisted with the rows: the contiguous cursor, below every open hole
        await self.store.apply(changes, {CURSOR_KEY: str(cursor)})
        if not events:
            return
        last = events[-1]
        self.last_event_id = int(last["id"])
        self.last_event_time = last.get("created_at")
        self.counters["events"] += len(events)
        log.debug("applied {count} events up to {event_id}", count=len(events), event_id=self.last_event_id)

    def _collect(self, event: dict[str, Any], touched: dict[str, set[int]]) -> None:
        event_type = str(event.get("event_type") or "")
        parts = event_type.split("_")
        if len(parts) < 3 or parts[0] != "Shotgun":
            self.counters["skipped_other"] += 1
            return
        if parts[1] == "DisplayColumn":
            self.counters["schema_changes"] += 1
            log.info("schema change event {id}: {type}", id=event.get("id"), type=event_type)
            return
        meta = event.get("meta") or {}
        found = False
        entity = event.get("entity")
        if isinstance(entity, dict) and entity.get("type") in self.schema:
            touched.setdefault(entity["type"], set()).add(int(entity["id"]))
            found = True
        if isinstance(meta, dict):
            mtype, mid = meta.get("entity_type"), meta.get("entity_id")
            if mtype in self.schema and isinstance(mid, int):
                touched.setdefault(mtype, set()).add(mid)
                found = True
            for key in ("added", "removed"):
                for link in meta.get(key) or []:
                    if isinstance(link, dict) and link.get("type") in self.schema and isinstance(link.get("id"), int):
                        touched.setdefault(link["type"], set()).add(link["id"])
        if not found:
            self.counters["skipped_uncached"] += 1

    def status(self) -> dict[str, Any]:
        return {
            "event_cursor": self.cursor,
            "last_event_id": self.last_event_id,
            "last_event_created_at": self.last_event_time,
            "holes": sorted(self.holes),
            "poll_errors": self.errors,
            "last_poll_error": self.last_error,
            "events": dict(self.counters),
        }
