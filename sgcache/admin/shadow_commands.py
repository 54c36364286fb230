"""``sgcache shadow report`` and ``sgcache shadow clear``: the mismatches
the shadow checks found (`sgcache.web.shadow`).

``report`` reads the store's table (`sgcache.store.shadowlog`), so it works
with the daemon stopped and shows every daemon of a cluster; ``clear`` asks
the running daemon (its admin listener) to forget its confirmed shapes,
which also empties the table.
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from sgcache.admin.common import add_admin, add_settings, ask_daemon, run_on_store, settings_from


def register_shadow(parser: argparse.ArgumentParser) -> None:
    """List or clear the mismatches shadow checks found between local answers and the site's."""
    sub = parser.add_subparsers(dest="shadow_command", metavar="ACTION", required=True)
    report = sub.add_parser("report", help="list the kept mismatches (from the store), the latest first",
                            description="List the mismatches the shadow checks kept in the store, the "
                            "latest first: the read shape, how often, when, the first difference and a "
                            "reproducer (the read's arguments).")
    add_settings(report, ("config", "db"))
    report.add_argument("--json", action="store_true", help="print JSON")
    report.set_defaults(func=run_report)
    clear = sub.add_parser("clear", help="make the running daemon forget its mismatches",
                           description="Make the running daemon forget the mismatches it confirmed: with "
                           "--shadow-action passthrough their shapes are served locally again. Empties "
                           "the store's table too. Talks to the daemon's admin listener (--admin-listen).")
    add_admin(clear)
    clear.set_defaults(func=run_clear)


def run_report(args: argparse.Namespace) -> int:
    settings = settings_from(args, need_upstream=False, need_schema=False)

    async def collect(reactor: Any, store: Any, upstream: Any) -> list[dict[str, Any]]:
        return await store.shadow_mismatches()

    rows = run_on_store("shadow report", settings, collect)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no shadow mismatches kept")
        return 0
    for row in rows:
        print(f"{row['shape']}\n  {row['count']} time(s), first {_when(row['first_at'])}, last "
              f"{_when(row['last_at'])} on {row['node']}\n  difference: {row['difference']}\n"
              f"  reproduce with read: {row['args']}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    report = ask_daemon("shadow clear", args.admin, "/shadow/clear", "POST")
    print(f"shadow mismatches cleared: {report['shapes_cleared']} shape(s) served locally again, "
          f"{report['rows_cleared']} row(s) removed")
    return 0


def _when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
