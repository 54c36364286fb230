"""Sync benchmark: events applied per second, scan write rate (time spent in
`store.apply` for scan pages only, upstream excluded) with its baseline, and
peak RSS during a large full scan (pages are streamed, never buffered).

The upstream is an in-process fake site (`FakeSite`) that generates Shots
and EventLogEntries on the fly, so the numbers measure the cache's own work
(poller / scanner / store), not an emulator's.

The scan write rate's baseline is measured in the same run (`Floor`): right
after each scan page is applied, the same rows, pre-encoded, are written
into an empty copy of the table (same columns, same indexes) with the
plainest bulk statement the server offers, timed the same way. Printed as
totals (rows/s, sgcache over floor) and per page (median ms of each, median
of the per-page ratios). Run::

    PYTHONPATH=. python bench/sync.py                   # SQLite + PostgreSQL, small sizes
    PYTHONPATH=. python bench/sync.py --scan-entities 1000000 --stores postgresql
    PYTHONPATH=. python bench/sync.py --latency 0.3   # at WAN latency: see bench/wan_sync.py
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sgcache.schema.changes import EntityChange  # noqa: E402
from sgcache.schema.types import DATA_TYPES, is_cacheable  # noqa: E402
from sgcache.sync.poller import EventPoller  # noqa: E402
from sgcache.sync.scanner import ScanAborted, Scanner  # noqa: E402
from sgcache.schema import Schema  # noqa: E402
from sgcache.store import layout, open_store, parse_store_url  # noqa: E402

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
    """A store proxy that sums the time spent in `apply`, and hands each
    applied batch to `after` (outside the timing), which returns its own
    time for the same rows: `pages` pairs them, (apply s, after s), one per
    non-empty batch. An error in `after` is kept in `error` and fails the
    apply (the bench's scanner gives up on the first failure)."""

    def __init__(self, store: Any, after: Any = None):
        self._store = store
        self._after = after
        self.apply_seconds = 0.0
        self.applied = 0
        self.pages: list[tuple[float, float]] = []
        self.error: BaseException | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _apply(self, changes: Any, state: Any = None) -> int:
        started = time.perf_counter()
        try:
            result = await self._store.apply(changes, state)
        finally:
            seconds = time.perf_counter() - started
            self.apply_seconds += seconds
            self.applied += len(changes)
        if self._after is not None and changes:
            try:
                self.pages.append((seconds, self._after(changes)))
            except Exception as e:
                self.error = e
                raise
        return result

    def apply(self, changes: Any, state: Any = None) -> defer.Deferred:
        return defer.ensureDeferred(self._apply(changes, state))


class Floor:
    """The scan write rate's baseline: each page's rows, encoded beforehand
    (outside the timing), written into the same table of a second database
    the store set up (same columns, same indexes, empty at the start) with
    the plainest bulk statement the server offers, one transaction a page:

    * SQLite: ``executemany`` of one ``INSERT`` (the store's connection
      settings: WAL, synchronous=NORMAL, its Python ``lower``);
    * PostgreSQL: ``COPY ... FROM STDIN`` (psycopg2, synchronous); a plain
      ``executemany`` there is one round trip a row, slower than sgcache
      itself, so no floor.

    Timed like `TimedStore`: wall time from the transaction's start to its
    commit. A row has the columns the store's apply inserts for a new row
    (``id``, ``_active``, ``_complete`` and the fields' columns), limited to
    those `columns` the store says the table has (`IStore.describe_storage`),
    so the floor follows the store's layout."""

    METHODS = {"sqlite": "executemany INSERT", "postgresql": "COPY FROM STDIN"}
    #: what `sgcache.store.apply` writes besides the fields, for a new row
    BOOKKEEPING = ("id", "_active", "_complete")

    def __init__(self, kind: str, url: str, schema: Schema, columns: set[str], entity_type: str = "Shot"):
        self.kind = kind
        self.method = self.METHODS[kind]
        self.entity_type = entity_type
        self.columns = columns
        missing = [c for c in self.BOOKKEEPING if c not in columns]
        if missing:
            raise SystemExit(
                f"floor: the store's {entity_type} table has no {', '.join(missing)} column "
                f"(its columns: {', '.join(sorted(columns))}); bench/sync.py needs updating"
            )
        self.fields = {
            name: spec.data_type for name, spec in schema[entity_type].fields.items()
        }
        self.seconds = 0.0
        self.written = 0
        if kind == "sqlite":
            import sqlite3

            from sgcache.store import sqlite

            self.conn = sqlite3.connect(parse_store_url(url)[1], isolation_level=None)
            sqlite.configure(self.conn)
        else:
            import psycopg2

            self.conn = psycopg2.connect(url)

    def close(self) -> None:
        self.conn.close()

    def encode(self, change: EntityChange) -> tuple[tuple[str, ...], list[Any]]:
        """The columns and values the store writes for a new row."""
        cols = list(self.BOOKKEEPING)
        values: list[Any] = [
            int(change.entity_id),
            1 if change.active is None else int(bool(change.active)),
            1 if change.complete else 0,
        ]
        for name, value in change.fields.items():
            dtype = self.fields.get(name)
            if dtype is None or dtype == "multi_entity" or not is_cacheable(dtype):
                continue  # not on the entity table
            if dtype == "entity":
                if f"{name}__id" not in self.columns:
                    continue
                cols += [f"{name}__type", f"{name}__id"]
                values += [None, None] if value is None else [value["type"], int(value["id"])]
            elif name in self.columns:
                cols.append(name)
                values.append(DATA_TYPES[dtype].encode(value))
        return tuple(cols), values

    def write(self, changes: list[EntityChange]) -> float:
        """Write one page's rows (new rows only, as a full scan into an
        empty table makes); returns the seconds it took (timed part only)."""
        groups: dict[tuple[str, ...], list[list[Any]]] = {}
        for change in changes:
            if change.delete:
                continue
            cols, values = self.encode(change)
            groups.setdefault(cols, []).append(values)
        before = self.seconds
        for cols, rows in groups.items():
            names = ", ".join(layout.quote(c) for c in cols)
            table = layout.entity_table(self.entity_type)
            if self.kind == "sqlite":
                self._sqlite(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(cols))})", rows)
            else:
                self._copy(f"COPY {table} ({names}) FROM STDIN", copy_text(rows))
            self.written += len(rows)
        return self.seconds - before

    def _sqlite(self, sql: str, rows: list[list[Any]]) -> None:
        started = time.perf_counter()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self.conn.executemany(sql, rows)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.seconds += time.perf_counter() - started

    def _copy(self, sql: str, payload: str) -> None:
        started = time.perf_counter()
        cursor = self.conn.cursor()
        try:
            cursor.copy_expert(sql, io.StringIO(payload))
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        self.seconds += time.perf_counter() - started


def copy_text(rows: list[list[Any]]) -> str:
    """Rows in COPY's text format."""

    def field(value: Any) -> str:
        if value is None:
            return "\\N"
        if isinstance(value, str):
            return (
                value.replace("\\", "\\\\").replace("\t", "\\t")
                .replace("\n", "\\n").replace("\r", "\\r")
            )
        return str(value)

    return "".join("\t".join(map(field, row)) + "\n" for row in rows)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


async def fresh_db(kind: str, tmp: str, label: str = "bench") -> tuple[str, Any]:
    if kind == "sqlite":
        return "sqlite:///" + os.path.join(tmp, f"{label}.sqlite"), None
    import psycopg2

    base = os.environ.get("SGCACHE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"sgcache_{label}_{os.getpid()}"
    conn = psycopg2.connect(base)
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
    conn.cursor().execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")

    def drop() -> None:
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()

    return base.rsplit("/", 1)[0] + "/" + name, drop


async def make_floor(reactor: Any, kind: str, tmp: str, schema: Schema) -> tuple[Floor, Any]:
    """A `Floor` on a second database the store set up (its tables, and the
    Shot table's columns as the store describes them); and its drop."""
    url, drop = await fresh_db(kind, tmp, "floor")
    store = open_store(url, reactor)
    await store.open()
    try:
        await store.sync_schema(schema)
        storage = await store.describe_storage()
    finally:
        await store.close()
    try:
        columns = set(storage["Shot"]["columns"])
        return Floor(kind, url, schema, columns), drop
    except BaseException:
        if drop is not None:
            drop()
        raise


def median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3) if values else 0.0


async def bench_store(reactor: Any, kind: str, schema: Schema, opts: argparse.Namespace) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix="sgcache-bench-")
    url, drop = await fresh_db(kind, tmp)
    try:
        floor, floor_drop = await make_floor(reactor, kind, tmp, schema)
    except BaseException:
        if drop is not None:
            drop()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = open_store(url, reactor)
    await store.open()
    try:
        await store.sync_schema(schema)
        out: dict[str, Any] = {"store": kind}
        # 1. full scan: write rate (apply time only), its floor, peak RSS
        site = FakeSite(opts.scan_entities)
        timed = TimedStore(store, after=floor.write)
        # one-shot: the first failure (the store's or the floor's) ends the run
        scanner = Scanner(reactor, schema, timed, site, page_size=500, report_every=1e9, max_failures=1)
        rss_before = rss_mb()
        started = time.perf_counter()
        try:
            await scanner.full_scan(["Shot"])
        except ScanAborted as e:
            where = "the floor" if timed.error is not None else "the scan"
            raise SystemExit(f"{kind}: {where} failed: {timed.error or e.__cause__ or e}") from None
        wall = time.perf_counter() - started
        if timed.applied < opts.scan_entities or floor.written < opts.scan_entities:
            raise SystemExit(
                f"{kind}: scan applied {timed.applied:,} and floor wrote {floor.written:,} "
                f"of {opts.scan_entities:,} Shots"
            )
        out["scan_entities"] = opts.scan_entities
        out["scan_wall_s"] = round(wall, 2)
        out["scan_apply_s"] = round(timed.apply_seconds, 2)
        out["scan_write_per_s"] = round(timed.applied / max(timed.apply_seconds, 1e-9))
        out["floor_method"] = floor.method
        out["floor_s"] = round(floor.seconds, 2)
        out["floor_write_per_s"] = round(floor.written / max(floor.seconds, 1e-9))
        out["scan_vs_floor"] = round(timed.apply_seconds / max(floor.seconds, 1e-9), 2)
        # per page (the same rows each side): medians
        out["scan_pages"] = len(timed.pages)
        out["scan_page_ms_p50"] = median_ms([a for a, _ in timed.pages])
        out["floor_page_ms_p50"] = median_ms([f for _, f in timed.pages])
        out["scan_vs_floor_p50"] = round(
            statistics.median(a / max(f, 1e-9) for a, f in timed.pages), 2
        ) if timed.pages else 0.0
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
        floor.close()
        for dropper in (drop, floor_drop):
            if dropper is not None:
                dropper()
        shutil.rmtree(tmp, ignore_errors=True)  # the SQLite files


def main() -> None:
    if any(arg == "--latency" or arg.startswith("--latency=") for arg in sys.argv[1:]):
        # at WAN latency: the emulator in its own process (bench/wan_sync.py)
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import wan_sync

        wan_sync.main(["run", *sys.argv[1:]])
        return
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
        print_table(rows, opts)

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def print_table(rows: list[dict[str, Any]], opts: argparse.Namespace) -> None:
    """The figures side by side, each rate next to its baseline."""
    header = (
        "store", "scan rows/s", "floor rows/s", "sgcache/floor", "page ms p50", "floor page ms p50",
        "sgcache/floor p50", "floor statement", "events/s", "events/s excl. upstream", "peak RSS MB",
    )
    table = [header] + [
        (
            r["store"], f"{r['scan_write_per_s']:,}", f"{r['floor_write_per_s']:,}",
            f"{r['scan_vs_floor']:.2f}x", f"{r['scan_page_ms_p50']:.2f}", f"{r['floor_page_ms_p50']:.2f}",
            f"{r['scan_vs_floor_p50']:.2f}x", r["floor_method"], f"{r['events_per_s']:,}",
            f"{r['events_per_s_excl_upstream']:,}", f"{r['scan_rss_peak_mb']:.0f}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    print()
    print(
        f"full scan of {opts.scan_entities:,} Shots (pages of 500; rates over store.apply "
        f"time only), then {opts.events:,} events"
    )
    for i, line in enumerate(table):
        cells = [c.ljust(w) if j in (0, 7) else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(
        "sgcache/floor: scan apply time over the floor's time for the same rows "
        "(1.00x = as fast as the floor); p50: medians per page of 500 rows "
        "(apply ms, floor ms, and of the per-page ratios)"
    )


if __name__ == "__main__":
    main()
