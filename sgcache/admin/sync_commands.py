"""Admin commands for sync: ``sgcache log TYPE ID`` (the update log of one
entity) and ``sgcache reprocess --events FROM..TO [--kind KIND]`` (re-read
the entities a range of events names and apply them again), plus the sync
part of ``sgcache status`` (`sync_report`).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from sgcache.admin.common import (
    STORE_SETTINGS, CommandError, add_settings, load_schema, run_on_store, settings_from, with_sync_fence,
)
from sgcache.schema import Schema
from sgcache.schema.types import format_timestamp


# -- sgcache log ---------------------------------------------------------------


def register_log(parser: argparse.ArgumentParser) -> None:
    """Show what the cache changed on one entity, when and why (the update log)."""
    add_settings(parser, ("config", "schema", "db"))
    parser.add_argument("entity_type", metavar="TYPE")
    parser.add_argument("entity_id", metavar="ID", type=int)
    parser.add_argument("--limit", type=int, default=200, help="newest entries to show (default 200)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_log)


def run_log(args: argparse.Namespace) -> int:
    settings = settings_from(args, need_upstream=False, need_schema=True)
    if args.entity_type not in load_schema(settings):
        raise CommandError(f"log: {args.entity_type!r} is not an entity type of the schema")

    async def read_log(reactor: Any, store: Any, upstream: Any) -> Any:

        return await store.update_log(args.entity_type, args.entity_id, args.limit)

    entries = run_on_store("log", settings, read_log)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print(f"no update-log entries for {args.entity_type} {args.entity_id}")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        event = f" event {e['event_id']}" if e["event_id"] is not None else ""
        print(f"{when}Z  {e['source']:<11}{event:<14} {e['fields']}")
    return 0


# -- sgcache reprocess ------------------------------------------------------------


KINDS = ("new", "change", "retirement", "revival")


def _event_range(text: str) -> tuple[int, int]:
    # checked by the handler, not as an argparse type: a usage error would
    # print the whole usage, not the one line CommandError gives
    low, sep, high = text.partition("..")
    try:
        if not sep:
            raise ValueError(text)
        first, last = int(low), int(high)
    except ValueError:
        raise CommandError(f"--events: expected FROM..TO event ids, got {text!r}")
    if first > last:
        raise CommandError(f"--events: empty event range {text!r}")
    return first, last


def register_reprocess(parser: argparse.ArgumentParser) -> None:
    """Apply a range of events again (re-read the entities they name from the site)."""
    add_settings(parser, STORE_SETTINGS)
    parser.add_argument("--events", required=True, metavar="FROM..TO",
                        help="event ids, inclusive")
    parser.add_argument("--kind", default=None, metavar="KIND",
                        help="only events of this kind: new, change, retirement, revival")
    parser.set_defaults(func=run_reprocess)


async def reprocess(
    reactor: Any, schema: Schema, store: Any, upstream: Any, first: int, last: int, kind: str | None = None,
    freshness: Any = None,
) -> dict[str, int]:
    """Re-apply events `first`..`last`; counts of events and entities
    re-read. `freshness`: the sync readers' fence (a re-read a younger
    read overtook is not applied; in memory when not given)."""
    from sgcache.site.pages import iter_pages
    from sgcache.sync.freshness import LocalFreshness
    from sgcache.sync.poller import EVENT_FIELDS, EventPoller, event_kind

    fence = freshness or LocalFreshness()
    poller = EventPoller(reactor, schema, store, upstream, freshness=fence)
    counts = {"events": 0, "entities": 0}
    in_range = [{"path": "id", "relation": "less_than", "values": [last + 1]}]
    async for events in iter_pages(upstream, "EventLogEntry", EVENT_FIELDS, in_range, after_id=first - 1):
        chosen = [e for e in events if kind is None or (event_kind(e)[1] or "").lower() == kind.lower()]
        # the fence's ticket, before the re-reads are sent
        ticket = await fence.ticket()
        try:
            changes = await poller.refetch(poller.collect(chosen, count=False))
            await fence.apply(store, changes, ticket)
        finally:
            fence.done(ticket)
        counts["events"] += len(chosen)
        counts["entities"] += len(changes)
    return counts


def run_reprocess(args: argparse.Namespace) -> int:
    first, last = _event_range(args.events)
    if args.kind is not None and args.kind.lower() not in KINDS:
        raise CommandError(f"--kind: expected one of {', '.join(KINDS)}, got {args.kind!r}")
    settings = settings_from(args, need_upstream=True)
    schema = load_schema(settings)

    async def run(reactor: Any, store: Any, upstream: Any) -> dict[str, Any]:
        # (on PostgreSQL the fence the running daemons share)
        return await with_sync_fence(reactor, store, "reprocess", lambda fence: reprocess(
            reactor, schema, store, upstream, first, last, args.kind, fence))

    outcome = run_on_store("reprocess", settings, run, schema=schema, with_site=True)
    print(f"reprocessed {outcome['events']} events ({outcome['entities']} entities re-read)")
    return 0


# -- the sync part of sgcache status ---------------------------------------------------


async def sync_report(store: Any, now: float, types: list[str]) -> dict[str, Any]:
    """Lag, the newest event's age, holes, last poll error, scan state and
    watermarks, as stored (the daemon's `info` has the live view).

    ``event_lag_seconds`` is the seconds since the cache was last known
    complete (a poll read to the end of the event log then; None before
    the first), as the daemon reports it; ``newest_event_age_seconds`` the
    age of the newest applied event (it grows on a quiet site). `now` is
    wall-clock epoch seconds."""
    from sgcache.sync.poller import (
        CAUGHT_UP_KEY, CURSOR_TIME_KEY, HOLES_KEY, LAST_ERROR_KEY, RESCAN_KEY, parse_wire_time,
    )
    from sgcache.sync.scanner import PENDING_KEY, WATERMARK_PREFIX

    created = await store.get_state(CURSOR_TIME_KEY)
    when = parse_wire_time(created)
    caught_up = _float(await store.get_state(CAUGHT_UP_KEY))
    holes = await store.get_state(HOLES_KEY)
    error = await store.get_state(LAST_ERROR_KEY)
    watermarks = {}
    for etype in types:
        value = await store.get_state(WATERMARK_PREFIX + etype)
        if value:
            watermarks[etype] = value
    return {
        "last_event_created_at": created or None,
        "event_lag_seconds": None if caught_up is None else round(max(0.0, now - caught_up), 1),
        "caught_up_at": format_timestamp(caught_up),
        "newest_event_age_seconds": None if when is None else round(max(0.0, now - when), 1),
        "holes": sorted(int(h) for h in json.loads(holes or "{}")),
        "last_poll_error": json.loads(error)[1] if error else None,
        "rescan_requested": json.loads(await store.get_state(RESCAN_KEY) or "null"),
        "scan_pending": json.loads(await store.get_state(PENDING_KEY) or "null"),
        "watermarks": watermarks,
    }


def _float(value: Any) -> float | None:
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None

