"""`sgcache scan` and `sgcache status`: admin commands that work on the store
directly, with the same settings as the daemon (command line, SGCACHE_*
environment, --config file).

`scan` creates the store when there is none (it loads one on purpose);
`status` only reads one, and needs neither the schema file nor the site.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sgcache.admin.common import (
    STORE_SETTINGS, CommandError, add_settings, drop_stdout, duration, load_schema, run_on_store, settings_from,
    with_sync_fence,
)


def register_scan(parser: argparse.ArgumentParser) -> None:
    """Load entities from the site into the store (a full scan)."""
    add_settings(parser, STORE_SETTINGS)
    parser.add_argument("--full", action="store_true", required=True,
                        help="read every entity of the types (active and retired), remove rows the site no longer has")
    parser.add_argument("--types", default=None, help="comma-separated entity types (default: all cached types)")
    parser.add_argument("--projects", default=None,
                        help="comma-separated Project ids: only entities of these projects")
    parser.set_defaults(func=run_scan)


def run_scan(args: argparse.Namespace) -> int:
    settings = settings_from(args, need_upstream=True, need_schema=False)
    file_schema = load_schema(settings) if settings.get("schema") else None
    types = [t.strip() for t in args.types.split(",")] if args.types else None
    try:
        projects = [int(p) for p in args.projects.split(",")] if getattr(args, "projects", None) else None
    except ValueError:
        raise CommandError(f"--projects: expected comma-separated ids, got {args.projects!r}")

    async def scan(reactor: Any, store: Any, upstream: Any) -> int:
        from sgcache.sync.scanner import Scanner

        # a store a daemon runs on is scanned by the schema it synced (the
        # file widened by rules, checked against the site): syncing the file
        # here would drop what the daemon caches beyond it
        schema = await store.recorded_schema()
        if not len(schema):
            if file_schema is None:
                raise CommandError("the store records no schema yet: give --schema (or start the daemon once)")
            await store.sync_schema(file_schema)
            schema = file_schema
        if types:
            unknown = [t for t in types if t not in schema]
            if unknown:
                raise CommandError(f"--types: not in the schema: {', '.join(unknown)}")

        async def run(fence: Any) -> int:
            # (on PostgreSQL the fence the running daemons share)
            scanner = Scanner(reactor, schema, store, upstream, progress=say_progress, max_failures=6,
                              freshness=fence)
            return await scanner.full_scan(types, projects=projects)

        return await with_sync_fence(reactor, store, "scan", run)

    run_on_store("scan", settings, scan, with_site=True, create=True)
    return 0


def say_progress(message: str) -> None:
    """A scan's progress line; the scan goes on quietly once stdout's
    reader has gone (``| head``)."""
    try:
        print(message, flush=True)
    except BrokenPipeError:
        drop_stdout()


def register_status(parser: argparse.ArgumentParser) -> None:
    """Show what the store holds: event cursor, types and field states."""
    add_settings(parser, ("config", "schema", "db"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    # not an option: says where the demo's status is, for whoever tries it
    parser.add_argument("--demo", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(func=run_status)


#: `status --demo`: the demo's store is in memory (sgcache.demo)
DEMO_STATUS = ("status --demo: the demo keeps its store in memory, so there is none to read here; see the "
               "running demo's status page on its admin listener (http://127.0.0.1:8011/ by default), or "
               "start the demo with --db sqlite:///demo.sqlite and give that --db here")


def run_status(args: argparse.Namespace) -> int:
    if getattr(args, "demo", False):
        raise CommandError(DEMO_STATUS)
    settings = settings_from(args, need_upstream=False, need_schema=False)

    async def collect(reactor: Any, store: Any, upstream: Any) -> dict[str, Any]:
        from sgcache.admin.sync_commands import sync_report
        from sgcache.sync.poller import CURSOR_KEY

        states = await store.field_states()
        types = {}
        for etype in sorted(states):
            fields = states[etype]
            types[etype] = {
                "rows": await store.count(etype),
                "retired": await store.count(etype, active=False),
                "fields_ready": sum(1 for state in fields.values() if state == "ready"),
                "fields": len(fields),
            }
        from sgcache.store.leadership import read_cluster

        return {
            "event_cursor": await store.get_state(CURSOR_KEY),
            "types": types,
            "sync": await sync_report(store, reactor.seconds(), sorted(states)),
            "cluster": await read_cluster(store),
        }

    report = run_on_store("status", settings, collect)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    for line in status_lines(report):
        print(line)
    return 0


def status_lines(report: dict[str, Any]) -> list[str]:
    """`sgcache status` as text: no None, units only with numbers."""
    sync = report["sync"]
    lines = [cursor_line(report["event_cursor"], sync), lag_line(sync),
             f"holes: {', '.join(map(str, sync['holes'])) or 'none'}; "
             f"last poll error: {sync['last_poll_error'] or 'none'}"]
    lines += scan_lines(sync)
    from sgcache.store.leadership import cluster_lines

    lines += cluster_lines(report.get("cluster"))
    for etype, info in report["types"].items():
        lines.append(f"{etype:28} {info['rows']:>9} rows ({info['retired']} retired)  "
                     f"fields ready {info['fields_ready']}/{info['fields']}  "
                     f"watermark {sync['watermarks'].get(etype, '-')}")
    return lines


def cursor_line(cursor: Any, sync: dict[str, Any]) -> str:
    if cursor is None:
        return "event cursor: - (no event log read yet)"
    created = sync["last_event_created_at"]
    if not created:
        return f"event cursor: {cursor}"
    return f"event cursor: {cursor} (newest event created {created}, {duration(sync['newest_event_age_seconds'])} ago)"


def lag_line(sync: dict[str, Any]) -> str:
    if sync["event_lag_seconds"] is None:
        return "lag: never caught up (no poll has read to the end of the event log yet)"
    return (f"lag: {duration(sync['event_lag_seconds'])} "
            f"(the cache was last known complete at {sync['caught_up_at']})")


def scan_lines(sync: dict[str, Any]) -> list[str]:
    lines = []
    rescan = sync["rescan_requested"]
    if rescan:
        reason = rescan.get("reason") if isinstance(rescan, dict) else rescan
        lines.append(f"rescan requested: {reason or 'yes'}")
    pending = sync["scan_pending"]
    if pending:
        if isinstance(pending, dict):
            types = pending.get("types") or []
            what = f"{pending.get('mode') or 'a'} scan of {len(types)} types"
            reason = pending.get("reason")
            lines.append(f"scan pending: {what}" + (f" ({reason})" if reason else ""))
        else:
            lines.append(f"scan pending: {pending}")
    return lines
