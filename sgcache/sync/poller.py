"""The event poller: follows the site's EventLogEntry stream and keeps the
store current.

Each poll reads events with ``id >= cursor`` in ascending pages, without a
pause while full pages keep coming; the next page is asked for while the
current one is applied, and a page's entities are re-read with a few
requests sent at once (per type: active and retired), so a slow site costs
about one round trip per page, not one per type. Every event about a cached entity type
names one or two entities (the entity itself, and for backref changes the
entity on the other side of the link); those entities are re-read from the
site in full, batched per type, and applied together with the new cursor and
hole list in one store transaction. Re-reading instead of replaying field
deltas makes every event kind (New, Change, multi-entity add/remove,
backrefs, Retirement, Revival, in_create changes) converge on the site's
current state, and makes re-applying an event harmless, so a crash at any
point loses nothing. A Revival also re-reads the entities that link to the
revived one (the site shows those links again; `fetch.linkers`), and an
entity field's change its old and new targets (their backrefs moved).
Re-fetched rows carry no event id (a late hole's re-read is fresher than
what a higher event fetched); the store's `updated_at` check and the
shared `Freshness` fence (its ticket taken before the re-reads are sent,
checked in the apply) refuse stale re-reads.

State (``_sgcache_state``, written with the rows):

* ``event_cursor`` -- the highest event id applied;
* ``event_holes`` -- JSON ``{id: first noticed}`` of ids below the cursor
  not seen yet (their transaction committed late). Each poll asks for them
  by id; one that has not appeared within `hole_timeout` seconds is given up
  (logged, counted). The list survives a restart;
* ``event_cursor_time`` -- the cursor event's ``created_at``;
* ``rescan_requested`` -- set when the log was truncated or rewound under
  the cursor (the cursor's own event is gone): events were lost, so an
  incremental rescan from before the cursor's time runs (`on_gap`).

Failures (upstream timeouts, 5xx, resets, auth faults, store errors) back off
exponentially (1 s up to 60 s) and recover by themselves.
"""

from __future__ import annotations

import calendar
import json
import time
from collections import Counter
from typing import Any, Callable, Iterable

from twisted.internet import defer, task

from sgcache.site.backoff import Backoff, describe
from sgcache.schema.changes import SOURCE_EVENT, EntityChange
from sgcache.sync.fetch import fetch_by_ids, gather, linkers
from sgcache.sync.freshness import Freshness, LocalFreshness
from sgcache.sync.linkfill import fill_missing_links
from sgcache.schema import Schema
from sgcache.schema.types import format_timestamp
from sgcache.site.pages import read_page
from sgcache.logs import logger

log = logger(__name__)

CURSOR_KEY = "event_cursor"
HOLES_KEY = "event_holes"
CURSOR_TIME_KEY = "event_cursor_time"
RESCAN_KEY = "rescan_requested"
LAST_ERROR_KEY = "event_last_error"
#: wall-clock time (seconds) the cache was last known complete: a poll that
#: read to the end of the log asked for that last page then
CAUGHT_UP_KEY = "event_caught_up_at"
EVENT_FIELDS = ["id", "event_type", "attribute_name", "entity", "meta", "created_at"]
KINDS = ("New", "Change", "Retirement", "Revival")


def parse_wire_time(value: Any) -> float | None:
    """Epoch seconds of a wire date_time (``YYYY-MM-DDTHH:MM:SSZ``)."""
    if not isinstance(value, str):
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


def event_kind(event: dict[str, Any]) -> tuple[str | None, str | None]:
    """(entity type, kind) of a ``Shotgun_<Type>_<Kind>`` event, else Nones."""
    event_type = str(event.get("event_type") or "")
    if not event_type.startswith("Shotgun_"):
        return None, None
    etype, _, kind = event_type[len("Shotgun_"):].rpartition("_")
    return (etype or None), (kind or None)


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
        on_gap: Callable[[str, str | None], Any] | None = None,
        freshness: Freshness | None = None,
        backoff: Backoff | None = None,
        fill_links: bool = True,
    ):
        self.reactor = reactor
        self.schema = schema
        self.store = store
        self.upstream = upstream
        self.interval = interval
        self.page_size = page_size
        self.hole_timeout = hole_timeout
        self.on_gap = on_gap
        #: called on a schema-change (DisplayColumn) event
        self.on_schema_change: Callable[[], Any] | None = None
        #: called when a poll first reads the event log to its end (the
        #: lag becomes known: several daemons record it for the others)
        self.on_first_caught_up: Callable[[], Any] | None = None
        self.freshness = freshness or LocalFreshness()
        self.backoff = backoff or Backoff(1.0, 60.0)
        self.fill_links = fill_links
        self.cursor: int | None = None
        self.cursor_time: str | None = None
        #: missing id -> reactor time first noticed
        self.holes: dict[int, float] = {}
        self.last_event_id: int | None = None
        self.last_event_time: str | None = None
        #: when the cache was last known complete: the reactor time at which
        #: the last poll that read to the end of the log (and applied it
        #: all) asked for its last page; kept in the store across restarts
        self.caught_up_at: float | None = None
        self.counters: Counter[str] = Counter()
        self.errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self._lock = defer.DeferredLock()
        self._loop: task.LoopingCall | None = None
        self._done: defer.Deferred = defer.succeed(None)

    # -- lifecycle -----------------------------------------------------------
    async def initialize(self) -> int:
        """Load the cursor and holes, or start at the site's newest event."""
        saved = await self.store.get_state(CURSOR_KEY)
        if saved is not None:
            self.cursor = int(saved)
            self.cursor_time = await self.store.get_state(CURSOR_TIME_KEY)
            holes = await self.store.get_state(HOLES_KEY)
            self.holes = {int(k): float(v) for k, v in json.loads(holes or "{}").items()}
            caught_up = await self.store.get_state(CAUGHT_UP_KEY)
            if caught_up:
                try:
                    self.caught_up_at = float(caught_up)
                except ValueError:
                    self.caught_up_at = None
        else:
            newest = await self._newest()
            self.cursor = int(newest["id"]) if newest else 0
            self.cursor_time = newest.get("created_at") if newest else None
            await self.store.set_state(self._state_items(self.cursor, {}, self.cursor_time))
        log.info("event cursor at {cursor} ({holes} open holes)", cursor=self.cursor, holes=len(self.holes))
        return self.cursor

    def start(self) -> None:
        """Poll with a LoopingCall every `interval` seconds (a poll itself
        reads on without pausing while it catches up); after a failure the
        next poll waits an exponentially backed-off delay instead."""
        if self._loop is not None and self._loop.running:
            return
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._done = self._loop.start(self.interval, now=True)
        self._done.addErrback(lambda f: log.failure("event poller stopped", f))

    def stop(self) -> defer.Deferred:
        """Stop polling; fires once a poll in progress has ended."""
        loop, self._loop = self._loop, None
        if loop is None or not loop.running:
            return defer.succeed(None)
        loop.stop()
        done = defer.Deferred()
        self._done.addBoth(lambda _: done.callback(None))
        return done

    async def _tick(self) -> None:
        loop = self._loop
        try:
            await self.poll()
        except Exception as e:
            delay = self.backoff.next_delay()
            self._failed(e, delay)
        else:
            self.backoff.reset()
            delay = self.interval
        if loop is not None:
            loop.interval = delay

    def _failed(self, error: BaseException, delay: float) -> None:
        self.errors += 1
        self.last_error = describe(error)
        self.last_error_at = self.reactor.seconds()
        log.warn(
            "event poll failed ({error}); retrying in {delay:.0f}s",
            error=self.last_error, delay=delay,
        )
        d = defer.maybeDeferred(
            self.store.set_state, {LAST_ERROR_KEY: json.dumps([self.last_error_at, self.last_error])}
        )
        d.addErrback(lambda _: None)  # the store may be the trouble

    # -- polling -------------------------------------------------------------
    async def poll(self) -> int:
        """Read and apply events until caught up; returns events applied."""
        return await self._lock.run(lambda: defer.ensureDeferred(self._poll()))

    async def _poll(self) -> int:
        if self.cursor is None:
            await self.initialize()
        assert self.cursor is not None
        total = await self._fill_holes()
        first = True
        #: the next page, asked for while this one is applied
        ahead: defer.Deferred | None = None
        while True:
            start = self.cursor
            if ahead is None:
                asked_at = self.reactor.seconds()
                events, more = await self._read(
                    [{"path": "id", "relation": "greater_than", "values": [max(start - 1, 0) if first else start]}]
                )
            else:
                asked_at, (events, more) = await ahead
                ahead = None
            gap = None
            if first and start > 0:
                if not events or int(events[0]["id"]) != start:
                    gap = await self._gap_reason(events)
                elif self.cursor_time and events[0].get("created_at") not in (None, self.cursor_time):
                    # same id, another event: the log was rebuilt under us
                    self.counters["log_gaps"] += 1
                    gap = (
                        f"event log rewound: event {start} is now another event "
                        f"(created {events[0].get('created_at')}, not {self.cursor_time})"
                    )
            first = False
            fresh = [e for e in events if int(e["id"]) > start]
            cursor, holes = self._advance(start, fresh, renumber=gap is not None)
            cursor_time = self.cursor_time
            if fresh:
                cursor_time = fresh[-1].get("created_at")
            elif gap is not None:
                newest = await self._newest()
                cursor = int(newest["id"]) if newest else 0
                cursor_time = newest.get("created_at") if newest else None
            extra: dict[str, str] = {}
            if gap is not None:
                extra[RESCAN_KEY] = json.dumps({"reason": gap, "since": self.cursor_time})
            if not more:
                extra[CAUGHT_UP_KEY] = repr(asked_at)
            elif gap is None and fresh:
                ahead = self._read_ahead(cursor)
            try:
                await self._apply(fresh, self._state_items(cursor, holes, cursor_time, extra))
            except BaseException:
                if ahead is not None:
                    ahead.addErrback(lambda _: None)
                    ahead.cancel()
                raise
            self.cursor, self.holes, self.cursor_time = cursor, holes, cursor_time
            total += len(fresh)
            if gap is not None:
                self._report_gap(gap)
            if not more:
                first = self.caught_up_at is None
                self.caught_up_at = asked_at
                if first and self.on_first_caught_up is not None:
                    self.on_first_caught_up()
                return total

    def _read_ahead(self, after: int) -> defer.Deferred:
        """Ask for the page of events after `after` now (it is applied once
        the current page is): the site's latency overlaps the apply."""
        asked_at = self.reactor.seconds()

        async def read() -> tuple[float, tuple[list[dict[str, Any]], bool]]:
            return asked_at, await self._read([{"path": "id", "relation": "greater_than", "values": [after]}])

        return defer.ensureDeferred(read())

    async def _gap_reason(self, events: list[dict[str, Any]]) -> str:
        """Why the cursor's own event is not the first of ``id >= cursor``."""
        self.counters["log_gaps"] += 1
        if events:
            return f"event log truncated: event {self.cursor} is gone, the log resumes at {events[0]['id']}"
        newest = await self._newest()
        if newest is None:
            return f"event log emptied under cursor {self.cursor}"
        return f"event log rewound: newest event {newest['id']} is below cursor {self.cursor}"

    def _report_gap(self, reason: str) -> None:
        log.error(
            "{reason}; events may have been lost, requesting an incremental rescan",
            reason=reason,
        )
        if self.on_gap is not None:
            try:
                self.on_gap(reason, self.cursor_time)
            except Exception:
                log.failure("requesting a rescan failed")

    async def _fill_holes(self) -> int:
        """Apply holes that appeared; give up those waited for too long."""
        if not self.holes:
            return 0
        found: list[dict[str, Any]] = []
        ids = sorted(self.holes)
        for start in range(0, len(ids), self.page_size):
            chunk = ids[start : start + self.page_size]
            last = 0
            while True:
                events, more = await self._read([{"path": "id", "relation": "in", "values": chunk},
                                                 {"path": "id", "relation": "greater_than", "values": [last]}])
                found += events
                if not more or not events:
                    break
                last = int(events[-1]["id"])
        holes = dict(self.holes)
        for event in found:
            holes.pop(int(event["id"]), None)
        now = self.reactor.seconds()
        for missing, since in sorted(holes.items()):
            if now - since > self.hole_timeout:
                log.warn(
                    "event {id} never appeared within {timeout:.0f}s; giving it up",
                    id=missing, timeout=self.hole_timeout,
                )
                self.counters["holes_given_up"] += 1
                del holes[missing]
        if found:
            self.counters["holes_filled"] += len(found)
            log.info("{count} late events appeared: {ids}", count=len(found), ids=[e["id"] for e in found])
        if found or holes != self.holes:
            assert self.cursor is not None
            await self._apply(found, self._state_items(self.cursor, holes, self.cursor_time))
            self.holes = holes
        return len(found)

    def _state_items(
        self, cursor: int, holes: dict[int, float], cursor_time: str | None, extra: dict | None = None
    ) -> dict[str, str]:
        items = {
            CURSOR_KEY: str(cursor),
            HOLES_KEY: json.dumps({str(k): v for k, v in sorted(holes.items())}),
            CURSOR_TIME_KEY: cursor_time or "",
        }
        items.update(extra or {})
        return items

    async def _newest(self) -> dict[str, Any] | None:
        result = await self.upstream.call(
            "read",
            {
                "type": "EventLogEntry",
                "return_fields": ["id", "created_at"],
                "filters": {"logical_operator": "and", "conditions": []},
                "sorts": [{"field_name": "id", "direction": "desc"}],
                "paging": {"entities_per_page": 1, "current_page": 1},
                "return_only": "active",
            },
        )
        entities = result.get("entities") or []
        return entities[0] if entities else None

    async def _read(self, conditions: list[dict]) -> tuple[list[dict[str, Any]], bool]:
        """One page of events by ascending id, and whether more follow."""
        return await read_page(self.upstream, "EventLogEntry", EVENT_FIELDS, conditions, "active",
                               self.page_size)

    def _advance(
        self, start: int, events: list[dict[str, Any]], renumber: bool = False
    ) -> tuple[int, dict[int, float]]:
        """The cursor and open holes once `events` (ids > start, ascending)
        are applied. After a gap, ids skipped before the first event are
        not holes (they are gone with the truncated part)."""
        now = self.reactor.seconds()
        holes = dict(self.holes)
        expected = start + 1
        if renumber:
            holes = {}
            if events:
                expected = int(events[0]["id"])
        for event in events:
            event_id = int(event["id"])
            for missing in range(expected, event_id):
                holes.setdefault(missing, now)
            holes.pop(event_id, None)
            expected = max(expected, event_id + 1)
        return max(start, expected - 1), holes

    # -- applying ----------------------------------------------------------
    def collect(self, events: Iterable[dict[str, Any]], count: bool = True) -> dict[tuple[str, int], tuple[set[str], int]]:
        """(type, id) -> (attribute names, newest event id) of the cached
        entities the events name."""
        touched: dict[tuple[str, int], tuple[set[str], int]] = {}
        for event in events:
            self._collect(event, touched, count)
        return touched

    async def _apply(self, events: list[dict[str, Any]], state: dict[str, str]) -> None:
        touched = self.collect(events)
        await self._add_linkers(touched)
        ticket = await self.freshness.ticket()
        try:
            changes = await self.refetch(touched)
            changes = await self.freshness.apply(self.store, changes, ticket, state)
        finally:
            self.freshness.done(ticket)
        if events:
            last = events[-1]
            if self.last_event_id is None or int(last["id"]) > self.last_event_id:
                self.last_event_id = int(last["id"])
                self.last_event_time = last.get("created_at")
            self.counters["events"] += len(events)
            log.debug(
                "applied {count} events ({entities} entities) up to {event_id}",
                count=len(events), entities=len(changes), event_id=last["id"],
            )
        if self.fill_links and changes:
            self.counters["link_targets_fetched"] += await fill_missing_links(
                self.store, self.schema, self.upstream, changes, SOURCE_EVENT, freshness=self.freshness
            )

    async def _add_linkers(self, touched: dict[tuple[str, int], tuple[set[str], int]]) -> None:
        """Add the entities that link to a revived one: the site shows
        their link to it again (see `fetch.linkers`)."""
        revived = {key: event_id for key, (attrs, event_id) in touched.items() if "revival" in attrs}
        if not revived:
            return
        found = await linkers(self.upstream, self.schema, revived)
        newest = max(revived.values())
        for key in found:
            attrs, event_id = touched.get(key, (set(), 0))
            touched[key] = (attrs | {"link to a revived entity"}, max(event_id, newest))
        self.counters["revival_linkers"] += len(found)
        log.debug("{count} entities link to {revived} revived entities; reading them again",
                  count=len(found), revived=len(revived))

    async def refetch(
        self, touched: dict[tuple[str, int], tuple[set[str], int]], source: str = SOURCE_EVENT
    ) -> list[EntityChange]:
        """Current full copies of the touched entities (deletes for those
        the site no longer has), annotated for the update log."""
        by_type: dict[str, set[int]] = {}
        for etype, eid in touched:
            by_type.setdefault(etype, set()).add(eid)
        changes: list[EntityChange] = []
        types = sorted(by_type)
        # every type's reads at once: one round trip of latency per poll
        reads = [defer.ensureDeferred(fetch_by_ids(self.upstream, self.schema, t, by_type[t], source))
                 for t in types]
        for entity_type, found in zip(types, await gather(reads)):
            ids = by_type[entity_type]
            changes.extend(found)
            for missing in sorted(set(ids) - {c.entity_id for c in found}):
                changes.append(EntityChange(entity_type, missing, delete=True, source=source))
        for change in changes:
            attrs, event_id = touched[(change.entity_type, change.entity_id)]
            change.changed_fields = sorted(attrs) or None
            change.event_id = event_id
        return changes

    def _collect(
        self, event: dict[str, Any], touched: dict[tuple[str, int], tuple[set[str], int]], count: bool
    ) -> None:
        event_id = int(event.get("id") or 0)
        etype, kind = event_kind(event)
        tally = self.counters if count else Counter()
        if etype is None or kind not in KINDS:
            tally["skipped_other"] += 1
            return
        if etype == "DisplayColumn":
            # a field was created, changed or retired: the schema keeper
            # reads the site's schema again (the event names no entity type)
            tally["schema_changes"] += 1
            log.info("schema change event {id}: {type}", id=event_id, type=event.get("event_type"))
            if self.on_schema_change is not None:
                self.on_schema_change()
            return
        meta = event.get("meta") if isinstance(event.get("meta"), dict) else {}
        attribute = event.get("attribute_name") or meta.get("attribute_name")
        named: list[tuple[str, int, str | None]] = []
        entity = event.get("entity")
        if isinstance(entity, dict) and isinstance(entity.get("id"), int):
            named.append((str(entity.get("type")), entity["id"], attribute))
        mtype, mid = meta.get("entity_type"), meta.get("entity_id")
        if isinstance(mtype, str) and isinstance(mid, int):
            # a backref names the triggering entity in meta, the changed
            # one as the event's entity
            backref = meta.get("actual_attribute_changed")
            field = backref.rpartition(".")[2] if isinstance(backref, str) else attribute
            named.append((mtype, mid, field))
        elif not named and kind in ("Retirement", "Revival") and isinstance(meta.get("id"), int):
            named.append((etype, meta["id"], None))
        for key in ("added", "removed"):
            for link in meta.get(key) or []:
                if isinstance(link, dict) and isinstance(link.get("id"), int) and link.get("type"):
                    named.append((str(link["type"]), link["id"], None))
        # An entity field's old and new targets: their backref fields moved
        # too, but the backref event of a retired target names no entity
        # (`entity` is null), so this is the only word of it.
        if meta.get("field_data_type") == "entity":
            for key in ("old_value", "new_value"):
                link = meta.get(key)
                if isinstance(link, dict) and isinstance(link.get("id"), int) and link.get("type"):
                    named.append((str(link["type"]), link["id"], None))
        found = False
        for ntype, nid, attr in named:
            if ntype not in self.schema:
                continue
            found = True
            attrs, newest = touched.get((ntype, nid), (set(), 0))
            if attr:
                attrs.add("retirement" if kind == "Retirement" else attr)
            elif kind in ("Retirement", "Revival", "New"):
                attrs.add(kind.lower())
            touched[(ntype, nid)] = (attrs, max(newest, event_id))
        if found:
            tally[kind.lower()] += 1
        else:
            tally["skipped_uncached"] += 1

    # -- health --------------------------------------------------------------
    def lag_seconds(self) -> float | None:
        """Seconds since the cache was last known complete (`caught_up_at`):
        0-ish while polls keep reaching the end of the log, however quiet
        the site; growing while the site cannot be read or events arrive
        faster than they are applied. None before the first complete poll."""
        if self.caught_up_at is None:
            return None
        return max(0.0, self.reactor.seconds() - self.caught_up_at)

    def status(self) -> dict[str, Any]:
        """The poller's part of `info`'s ``sgcache`` block."""
        now = self.reactor.seconds()
        created = parse_wire_time(self.last_event_time or self.cursor_time)
        lag = self.lag_seconds()
        return {
            "event_cursor": self.cursor,
            "last_event_id": self.last_event_id if self.last_event_id is not None else self.cursor,
            "last_event_created_at": self.last_event_time or self.cursor_time,
            # seconds since the cache was last known complete (README: "Lag")
            "event_lag_seconds": None if lag is None else round(lag, 1),
            "caught_up_at": format_timestamp(self.caught_up_at),
            # the age of the newest applied event (grows on a quiet site)
            "newest_event_age_seconds": None if created is None else round(max(0.0, now - created), 1),
            "holes": sorted(self.holes),
            "poll_errors": self.errors,
            "poll_failing_for": self.backoff.failures,
            "last_poll_error": self.last_error,
            "events": dict(self.counters),
        }

