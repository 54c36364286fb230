"""Sync benchmark: events applied per second, scan write rate (time spent in
`store.apply` for scan pages only, upstream excluded) and peak RSS during a
large full scan (pages are streamed, never buffered).

The upstream is an in-process fake site (`FakeSite`) that generates Shots
and EventLogEntries on the fly, so the numbers measure the cache's own work
(poller / scanner / store), not an emulator's. Run::

    PYTHONPATH=. python bench/sync.py                   # SQLite + PostgreSQL, small sizes
    PYTHONPATH=. python bench/sync.py --scan-entities 1000000 --stores postgresql
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sgcache.poller import EventPoller  # noqa: E402
from sgcache.scanner import Scanner  # noqa: E402
from sgcache.schema import Schema  # noqa: E402
from sgcache.store import open_store  # noqa: E402

PROJECT = {"type": "Project", "id": 1}


def wire_time(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class FakeSite:
    """Just enough of a Shotgun site for the sync paths: `n` Shots (ids
    1..n) and `events` Change events on them, generated on demand."""

    def __init__(self, shots: int, events: int = 0, base: int = 1_700_000_000):
        self.shots = shots
        self.events = events
        self.base = base
        self.version = 0  # bumped to make every Shot "change"
        self.upstream_seconds = 0.0

    def shot(self, i: int) -> dict[str, Any]:
        return {
            "type": "Shot", "id": i, "code": f"sh{i:07d}", "description": f"shot {i} v{self.version}",
            "sg_status_list": ("wtg", "ip", "fin")[i % 3], "sg_cut_in": 1000 + i % 97,
            "sg_cut_out": 1100 + i % 89, "project": PROJECT,
            "sg_sequence": {"type": "Sequence", "id": 1 + i % 50},
            "created_at": wire_time(self.base), "updated_at": wire_time(self.base + self.version),
        }

    def event(self, event_id: int) -> dict[str, Any]:
        eid = 1 + (event_id * 7919) % self.shots
        return {
            "type": "EventLogEntry", "id": event_id, "event_type": "Shotgun_Shot_Change",
            "attribute_name": "description", "entity": {"type": "Shot", "id": eid},
            "meta": {"type": "attribute_change", "attribute_name": "description", "entity_type": "Shot",
                     "entity_id": eid, "field_data_type": "text", "old_value": None, "new_value": "x"},
            "created_at": wire_time(self.base + event_id // 100),
        }

    async def call(self, method: str, args: Any = None) -> Any:
        started = time.perf_counter()
        try:
            return self._call(method, args)
        finally:
            self.upstream_seconds += time.perf_counter() - started

    def _call(self, method: str, args: Any) -> Any:
        if method == "summarize":
            return {"summaries": {"id": self.shots}, "groups": []}
        assert method == "read", method
        conds = args["filters"]["conditions"]
        per_page = args["paging"]["entities_per_page"]
        if args["type"] == "EventLogEntry":
            if not conds:
                return {"entities": [self.event(self.events)] if self.events else []}
            cond = conds[0]
            if cond["relation"] == "in":
                return {"entities": [self.event(i) for i in cond["values"] if 1 <= i <= self.events]}
            start = cond["values"][0] + 1
            ids = range(start, min(start + per_page, self.events + 1))
            return {"entities": [self.event(i) for i in ids]}
        if args.get("return_only") == "retired" or args["type"] != "Shot":
            return {"entities": [], "paging_info": {"has_next_page": False}}
        ids: list[int] | range = []
        after = 0
        for cond in conds:
            if cond["path"] == "id" and cond["relation"] == "in":
                ids = [i for i in cond["values"] if 1 <= i <= self.shots]
            elif cond["path"] == "id" and cond["relation"] == "greater_than":
                after = cond["values"][0]
        if not ids:
            ids = range(after + 1, min(after + per_page, self.shots) + 1)
        else:
            ids = [i for i in ids if i > after][:per_page]
        last = max(ids, default=self.shots)
        return {"entities": [self.shot(i) for i in ids], "paging_info": {"has_next_page": last < self.shots}}


class TimedStore:
    """A store proxy that sums the time spent in `apply`."""

    def __init__(self, store: Any):
        self._store = store
        self.apply_seconds = 0.0
        self.applied = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _apply(self, changes: Any, state: Any = None) -> int:
        started = time.perf_counter()
        try:
            return await self._store.apply(changes, state)
        finally:
            self.apply_seconds += time.perf_counter() - started
            self.applied += len(changes)

    def apply(self, changes: Any, state: Any = None) -> defer.Deferred:
        return defer.ensureDeferred(self._apply(changes, state))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def fresh_db(kind: str, tmp: str) -> tuple[str, Any]:
    if kind == "sqlite":
        return "sqlite:///" + os.path.join(tmp, "bench.sqlite"), None
    import psycopg2

    base = os.environ.get("SGCACHE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"sgcache_bench_{os.getpid()}"
    conn = psycopg2.connect(base)
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.cursor().execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")

    def drop() -> None:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    return base.rsplit("/", 1)[0] + "/" + name, drop


async def bench_store(reactor: Any, kind: str, schema: Schema, opts: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="sgcache-bench-")
    url, drop = await fresh_db(kind, tmp)
    store = open_store(url, reactor)
    await store.open()
    try:
        await store.sync_schema(schema)
        out: dict[str, Any] = {"store": kind}
        # 1. full scan: write rate (apply time only) and peak RSS
        site = FakeSite(opts.scan_entities)
        timed = TimedStore(store)
        scanner = Scanner(reactor, schema, timed, site, page_size=500, report_every=1e9)
        rss_before = rss_mb()
        started = time.perf_counter()
        await scanner.full_scan(["Shot"])
        wall = time.perf_counter() - started
        out["scan_entities"] = opts.scan_entities
        out["scan_wall_s"] = round(wall, 2)
        out["scan_apply_s"] = round(timed.apply_seconds, 2)
        out["scan_write_per_s"] = round(timed.applied / max(timed.apply_seconds, 1e-9))
        out["scan_rss_before_mb"] = round(rss_before, 1)
        out["scan_rss_peak_mb"] = round(rss_mb(), 1)
        # 2. events: poll E change events about already-stored shots
        events_site = FakeSite(min(opts.scan_entities, 50_000), opts.events)
        events_site.version = 1  # every re-read is newer than what the scan stored
        poller = EventPoller(reactor, schema, store, events_site, page_size=500, fill_links=False)
        poller.cursor, poller.cursor_time = 0, None
        started = time.perf_counter()
        applied = await poller.poll()
        wall = time.perf_counter() - started
        out["events"] = applied
        out["events_wall_s"] = round(wall, 2)
        out["events_per_s"] = round(applied / wall)
        out["events_per_s_excl_upstream"] = round(applied / max(wall - events_site.upstream_seconds, 1e-9))
        return out
    finally:
        await store.close()
        if drop is not None:
            drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--scan-entities", type=int, default=100_000, help="Shots in the full scan (1000000 for 1M)")
    parser.add_argument("--events", type=int, default=20_000)
    opts = parser.parse_args()
    schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
    rows: list[dict[str, Any]] = []

    async def run(reactor: Any) -> None:
        for kind in opts.stores.split(","):
            row = await bench_store(reactor, kind.strip(), schema, opts)
            rows.append(row)
            print(" | ".join(f"{k}={v}" for k, v in row.items()), flush=True)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
