"""`sgcache scan` and `sgcache status`: admin commands that work on the store
directly, with the same settings as the daemon (command line, SGCACHE_*
environment, --config file).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sgcache.admin.common import STORE_SETTINGS, CommandError, add_settings, load_schema, run_on_store, settings_from


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
    settings = settings_from(args, need_upstream=True)
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
        scanner = Scanner(reactor, schema, store, upstream, progress=lambda m: print(m, flush=True),
                          max_failures=6)
        return await scanner.full_scan(types, projects=projects)

    run_on_store("scan", settings, scan, with_site=True)
    return 0


def register_status(parser: argparse.ArgumentParser) -> None:
    """Show what the store holds: event cursor, types and field states."""
    add_settings(parser, ("config", "schema", "db"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    settings = settings_from(args, need_upstream=False)

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
        return {
            "event_cursor": await store.get_state(CURSOR_KEY),
            "types": types,
            "sync": await sync_report(store, reactor.seconds(), sorted(states)),
        }

    report = run_on_store("status", settings, collect)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    print(f"event cursor: {report['event_cursor']}")
    sync = report["sync"]
    print(f"last event created at: {sync['last_event_created_at']} (lag {sync['event_lag_seconds']}s); "
          f"holes: {sync['holes'] or 'none'}; last poll error: {sync['last_poll_error'] or 'none'}")
    if sync["rescan_requested"] or sync["scan_pending"]:
        print(f"rescan requested: {sync['rescan_requested']}; scan pending: {sync['scan_pending']}")
    for etype, info in report["types"].items():
        print(f"{etype:28} {info['rows']:>9} rows ({info['retired']} retired)  "
              f"fields ready {info['fields_ready']}/{info['fields']}  "
              f"watermark {sync['watermarks'].get(etype, '-')}")
    return 0
