"""`sgcache scan` and `sgcache status`: admin commands that work on the store
directly, with the same settings as the daemon (command line, SGCACHE_*
environment, --config file).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from twisted.internet import defer

from .cli import CommandError
from .config import SETTINGS, ConfigError, resolve
from .schema import Schema, SchemaError

_STORE_SETTINGS = ("config", "schema", "db", "shotgun", "script-name", "api-key")


def _add_settings(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    helps = {s.name: s.help for s in SETTINGS}
    for name in names:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), default=None,
                            help=helps.get(name, "YAML config file (as for twistd sgcache)."))


def _settings(args: argparse.Namespace, need_upstream: bool) -> dict[str, Any]:
    options = {name: getattr(args, name.replace("-", "_"), None) for name in _STORE_SETTINGS}
    if not need_upstream:
        # status needs no credentials: fill placeholders so resolve() passes
        options.setdefault("shotgun", None)
        for key, placeholder in (("shotgun", "http://unused.invalid"), ("script-name", "-"), ("api-key", "-")):
            if options.get(key) is None:
                options[key] = placeholder
    try:
        return resolve(options)
    except ConfigError as e:
        raise CommandError(str(e))


def register_scan(parser: argparse.ArgumentParser) -> None:
    """Load entities from the site into the store (a full scan)."""
    _add_settings(parser, _STORE_SETTINGS)
    parser.add_argument("--full", action="store_true", required=True,
                        help="read every entity of the types (active and retired), remove rows the site no longer has")
    parser.add_argument("--types", default=None, help="comma-separated entity types (default: all cached types)")
    parser.add_argument("--projects", default=None,
                        help="comma-separated Project ids: only entities of these projects")
    parser.set_defaults(func=run_scan)


def run_scan(args: argparse.Namespace) -> int:
    settings = _settings(args, need_upstream=True)
    try:
        schema = Schema.load(settings["schema"])
    except SchemaError as e:
        raise CommandError(f"--schema: {e}")
    types = [t.strip() for t in args.types.split(",")] if args.types else None
    if types:
        unknown = [t for t in types if t not in schema]
        if unknown:
            raise CommandError(f"--types: not in the schema: {', '.join(unknown)}")
    try:
        projects = [int(p) for p in args.projects.split(",")] if getattr(args, "projects", None) else None
    except ValueError:
        raise CommandError(f"--projects: expected comma-separated ids, got {args.projects!r}")

    async def scan(reactor: Any, store: Any, upstream: Any) -> int:
        from .scanner import Scanner

        scanner = Scanner(reactor, schema, store, upstream, progress=lambda m: print(m, flush=True),
                          max_failures=6)
        return await scanner.full_scan(types, projects=projects)

    run_on_store("scan", settings, scan, schema=schema, with_site=True)
    return 0


def register_status(parser: argparse.ArgumentParser) -> None:
    """Show what the store holds: event cursor, types and field states."""
    _add_settings(parser, ("config", "schema", "db"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_status)


def run_status(args: argparse.Namespace) -> int:
    settings = _settings(args, need_upstream=False)

    async def collect(reactor: Any, store: Any, upstream: Any) -> dict[str, Any]:
        from .admin_sync import sync_report
        from .poller import CURSOR_KEY

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


def run_on_store(
    what: str,
    settings: dict[str, Any],
    work: Any,
    schema: Schema | None = None,
    with_site: bool = False,
) -> Any:
    """Open the store (syncing `schema` into it when given) and, with
    `with_site`, the upstream client; return ``await work(reactor, store,
    upstream)``; close both. Any failure becomes one `CommandError` line."""
    outcome: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        from .store import open_store
        from .upstream import Upstream

        store = open_store(settings["db"], reactor)
        upstream = None
        if with_site:
            upstream = Upstream(reactor, settings["shotgun"], settings["script_name"], settings["api_key"])
        try:
            await store.open()
            if schema is not None:
                await store.sync_schema(schema)
            outcome["result"] = await work(reactor, store, upstream)
        except Exception as e:  # reported as one line below
            outcome["error"] = f"{e.__class__.__name__}: {e}"
        finally:
            if upstream is not None:
                await upstream.close()
            await store.close()

    _react(main)
    if "error" in outcome:
        raise CommandError(f"{what} failed: {outcome['error']}")
    return outcome["result"]


def _react(main: Any) -> None:
    """Run `main(reactor)` on a fresh reactor run, without exiting."""
    from twisted.internet import reactor

    result: dict[str, Any] = {}

    def done(outcome: Any) -> None:
        result["outcome"] = outcome
        if reactor.running:
            reactor.stop()

    def start() -> None:
        defer.ensureDeferred(main(reactor)).addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    outcome = result.get("outcome")
    if hasattr(outcome, "raiseException"):
        outcome.raiseException()


