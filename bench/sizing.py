"""Sizing benchmark: how many bytes of store one cached row takes, per store,
for the sizing figures of docs/operations.md.

    PYTHONPATH=. python bench/sizing.py                  # 20,000 rows, SQLite + PostgreSQL (about a minute)
    PYTHONPATH=. python bench/sizing.py --rows 100000 --stores postgresql

Runs in one process, as `bench/readpath.py` does: an emulator seeded with
`--rows` rows of the read bench's data set (`reads.build_items`: Shots,
Tasks and Versions, 1:3:2), each row given more of the fields a production
row has (numbers, dates, paths, who made it, Versions in Playlists), so a
row carries text, numbers, dates, status lists, entity links and
multi-entity links (Task.task_assignees, Version.playlists, and the
reverse fields the site keeps: Shot.tasks, Sequence.shots,
Playlist.versions). A daemon (`schema/basic.yml`) loads it all into a new
store, as a first start does (full scans through HTTP, the update log
written), and stops. Then, per store:

* SQLite: the file plus its ``-wal`` after ``PRAGMA wal_checkpoint(TRUNCATE)``;
* PostgreSQL (a throw-away database on ``--pg`` / ``SGCACHE_TEST_POSTGRES``
  / the local server; skipped with a note when unreachable):
  ``pg_database_size``;

each before the load (the schema's empty tables and indexes) and after it.
Printed: rows loaded, store bytes, bytes per row (the growth over the rows
loaded), the same split into entity data (entity tables, their indexes and
multi-entity tables) and the update log (one entry per change, kept
``--update-log-days``), and bytes per row per type. Last, the memory the
daemon keeps beside the store: the kept answers' bound
(``--answer-cache-mb``, 64 MB) and the plan cache's (16 MB), with what a
few typical reads took of each.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import psycopg2  # noqa: E402
import shotgun_api3  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

import reads  # noqa: E402
from sgcache.config import SETTINGS  # noqa: E402
from sgcache.read.planner import PLAN_CACHE_BYTES  # noqa: E402
from sgcache.schema import Schema  # noqa: E402
from sgcache.store import open_store, parse_store_url  # noqa: E402
from sgcache.store.postgres import redact  # noqa: E402
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon  # noqa: E402
from sgcache.testing.harness import start_emulator  # noqa: E402
from sgcache.testing.pg import base_url  # noqa: E402

#: the types the rows are split over, and their shares (as reads.py: 10k / 30k / 20k)
SPLIT = (("Shot", 1), ("Task", 3), ("Version", 2))
UPDATE_LOG = "_sgcache_updates"
MB = 2**20


def wire(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_items(rows: int, seed: int = 11) -> tuple[list[dict], dict[str, int]]:
    """`reads.build_items` for `rows` rows, each with more of a production
    row's fields; and the rows per type of `SPLIT`."""
    parts = sum(share for _, share in SPLIT)
    shots = max(1, rows * SPLIT[0][1] // parts)
    tasks = max(1, rows * SPLIT[1][1] // parts)
    versions = max(1, rows - shots - tasks)
    items = reads.build_items(shots, tasks, versions)
    rng = random.Random(seed)
    users = [item["id"] for item in items if item["type"] == "HumanUser"]
    playlists = max(1, versions // 200)
    first_shot = next(n for n, item in enumerate(items) if item["type"] == "Shot")
    items[first_shot:first_shot] = [{"type": "Playlist", "id": i + 1, "fields": {
        "code": f"dailies {i:04d}", "project": {"type": "Project", "id": 1},
        "description": "dailies", "sg_date_and_time": wire(reads.NOW - datetime.timedelta(days=i)),
    }} for i in range(playlists)]  # before the Versions that link to them
    departments = ["anim", "fx", "light", "comp"]
    for item in items:
        fields, etype, i = item["fields"], item["type"], item["id"]
        if etype not in ("Shot", "Task", "Version"):
            continue
        created = reads.NOW - datetime.timedelta(seconds=rng.randint(0, 365 * 86400))
        fields.setdefault("created_at", wire(created))
        fields["created_by"] = {"type": "HumanUser", "id": rng.choice(users)}
        fields["updated_by"] = {"type": "HumanUser", "id": rng.choice(users)}
        if etype == "Shot":
            cut_in = fields.get("sg_cut_in") or 1001
            fields.update({
                "sg_cut_out": cut_in + rng.randint(20, 200), "sg_cut_order": i,
                "sg_head_in": cut_in - 8, "sg_tail_out": cut_in + 208,
            })
        elif etype == "Task":
            start = reads.NOW.date() + datetime.timedelta(days=rng.randint(-200, 200))
            fields.update({
                "start_date": start.isoformat(), "duration": 60 * rng.randint(1, 40),
                "est_in_mins": 60 * rng.randint(1, 40), "milestone": rng.random() < 0.05,
            })
        else:
            first = 1001 + rng.randint(0, 8)
            last = first + fields.get("frame_count", 100) - 1
            fields.update({
                "sg_first_frame": first, "sg_last_frame": last, "frame_range": f"{first}-{last}",
                "sg_path_to_frames": f"/mnt/renders/v{i:07d}/v{i:07d}.####.exr",
                "sg_department": rng.choice(departments),
                "playlists": [{"type": "Playlist", "id": p}
                              for p in rng.sample(range(1, playlists + 1), min(playlists, rng.randint(0, 2)))],
            })
    return items, {"Shot": shots, "Task": tasks, "Version": versions}


def read_args() -> list[tuple[str, dict]]:
    """(label, wire `read` args) of the read bench's queries (those whose
    arguments do not change from call to call)."""
    sg = shotgun_api3.Shotgun("http://unused.invalid", script_name="x", api_key="y", connect=False)
    sg._server_caps = shotgun_api3.shotgun.ServerCapabilities("unused.invalid", {"version": [8, 0, 0]})
    return [(label, reads._read_args(sg, method, args, kwargs))
            for label, method, args, kwargs in reads.queries(1000) if not callable(args)]


# -- sizes -----------------------------------------------------------------------
def sqlite_size(path: str) -> tuple[int, dict[str, int], dict[str, int]]:
    """(file + -wal bytes after a checkpoint, bytes per table with its
    indexes (dbstat), rows per table); the store is closed."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        total = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index')"))
        per_table: dict[str, int] = {}
        try:
            for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                table = owner.get(name, name)
                per_table[table] = per_table.get(table, 0) + int(size)
        except sqlite3.OperationalError:  # no dbstat in this build: totals only
            pass
        counts = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0]
                  for t in owner.values() if not t.startswith("sqlite_")}
    finally:
        conn.close()
    return total, per_table, counts


def pg_size(url: str) -> tuple[int, dict[str, int], dict[str, int]]:
    """(pg_database_size, pg_total_relation_size per table, rows per table)."""
    conn = psycopg2.connect(url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_database_size(current_database())")
        total = int(cur.fetchone()[0])
        cur.execute("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'")
        per_table = {name: int(size) for name, size in cur.fetchall()}
        counts = {}
        for table in per_table:
            cur.execute(f'SELECT COUNT(*) FROM "{table}"')
            counts[table] = int(cur.fetchone()[0])
    finally:
        conn.close()
    return total, per_table, counts


def measure(kind: str, url: str) -> tuple[int, dict[str, int], dict[str, int]]:
    return sqlite_size(parse_store_url(url)[1]) if kind == "sqlite" else pg_size(url)


def make_pg(base: str) -> tuple[str | None, Any, str]:
    """A throw-away database: (url, drop, note); url None when the server
    cannot be reached (the note says why)."""
    try:
        url, drop = reads.make_pg_database(base)
    except psycopg2.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, None, f"PostgreSQL not reachable at {redact(base)}: {reason}; skipped"
    return url, drop, ""


def owner_type(table: str, types: list[str]) -> str | None:
    """The entity type a table belongs to (its own, or a multi-entity table
    ``Type__field``); None for bookkeeping tables."""
    if table in types:
        return table
    head = table.split("__", 1)[0]
    return head if "__" in table and head in types else None


# -- one store -------------------------------------------------------------------
async def size_store(reactor: Any, kind: str, url: str, schema: Schema, site_url: str, auth: dict,
                     queries: list[tuple[str, dict]]) -> dict[str, Any]:
    empty = open_store(url, reactor)
    await empty.open()
    try:
        await empty.sync_schema(schema)
    finally:
        await empty.close()
    before, empty_tables, _ = measure(kind, url)
    started = time.perf_counter()
    daemon = await start_daemon(schema, site_url, url, reactor)
    load_s = time.perf_counter() - started
    try:
        cache = daemon.cache
        cache.credentials.ttl = 3600.0
        cache.credentials.accepted(cache.credentials.key(auth))
        kept = []  # per query: bytes its kept answer and its plan took
        for label, args in queries:
            answers, plans = cache.status()["answers_bytes"], cache.status()["plans_bytes"]
            await cache.handle("read", auth, args, b"", None)
            after_status = cache.status()
            kept.append((label, after_status["answers_bytes"] - answers, after_status["plans_bytes"] - plans))
        status = cache.status()
    finally:
        await daemon.stop()
    after, per_table, counts = measure(kind, url)
    types = [e.name for e in schema]
    entity_rows = sum(n for t, n in counts.items() if t in types)
    log_rows = counts.get(UPDATE_LOG, 0)
    # what each table grew by (an empty table and its indexes take pages too)
    grown = {t: size - empty_tables.get(t, 0) for t, size in per_table.items()}
    by_type: dict[str, int] = {}
    for table, size in grown.items():
        owner = owner_type(table, types)
        if owner is not None:
            by_type[owner] = by_type.get(owner, 0) + size
    return {
        "store": kind, "load_s": load_s, "before": before, "after": after,
        "entity_rows": entity_rows, "log_rows": log_rows,
        "entity_bytes": sum(by_type.values()) if per_table else None,
        "log_bytes": grown.get(UPDATE_LOG) if per_table else None,
        "by_type": by_type, "counts": counts, "status": status,
        "queries": len(queries), "kept": kept,
    }


# -- printing --------------------------------------------------------------------
def mb(n: float) -> str:
    return f"{n / MB:,.1f} MB"


def per(n: float | None, d: int) -> str:
    return "-" if n is None or not d else f"{n / d:,.0f}"


def table(rows: list[tuple[str, ...]], right: set[int]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def report(results: list[dict[str, Any]], split: dict[str, int], opts: argparse.Namespace) -> None:
    print()
    print(f"store size, {opts.rows:,} rows ({', '.join(f'{n:,} {t}s' for t, n in split.items())}; "
          f"schema/basic.yml)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}" + "".join(f", {r['server']}" for r in results if r.get("server")))
    rows = [("store", "entity rows", "empty store", "loaded store", "growth", "bytes/row",
             "entity data/row", "update log/entry", "load s")]
    for r in results:
        growth = r["after"] - r["before"]
        rows.append((
            r["store"], f"{r['entity_rows']:,}", mb(r["before"]), mb(r["after"]), mb(growth),
            per(growth, r["entity_rows"]), per(r["entity_bytes"], r["entity_rows"]),
            per(r["log_bytes"], r["log_rows"]), f"{r['load_s']:.1f}",
        ))
    table(rows, set(range(1, 9)))
    print("bytes/row: the store's growth over the entity rows loaded (every table, index and the update "
          "log);\nentity data/row: the growth of the entity tables with their indexes and multi-entity "
          "tables;\nupdate log: one entry per change, kept --update-log-days")
    print()
    print("bytes per row by type (the growth of its table, indexes and multi-entity tables)")
    head = ("type", "rows") + tuple(r["store"] for r in results)
    rows = [head]
    for etype in [t for t, _ in SPLIT]:
        count = results[0]["counts"].get(etype, 0)
        rows.append((etype, f"{count:,}") + tuple(per(r["by_type"].get(etype), count) for r in results))
    table(rows, set(range(1, len(head))))
    print()
    default_mb = next(s.default for s in SETTINGS if s.name == "answer-cache-mb")
    print(f"memory beside the store: kept answers up to --answer-cache-mb (default {default_mb:g} MB), "
          f"compiled plans up to {PLAN_CACHE_BYTES // MB} MB")
    for r in results:
        s = r["status"]
        print(f"  {r['store']}: after {r['queries']} typical reads: {s['answers_kept']} answers kept, "
              f"{s['answers_bytes']:,} bytes; {s['plans_kept']} plans kept, {s['plans_bytes']:,} bytes")
    if results:
        print()
        print(f"bytes each read took, {results[0]['store']} (an answer with relative dates is never kept)")
        rows = [("read (bench/reads.py)", "kept answer", "plan")]
        rows += [(label, f"{answer:,}", f"{plan:,}") for label, answer, plan in results[0]["kept"]]
        table(rows, {1, 2})


async def main(reactor: Any, opts: argparse.Namespace) -> None:
    schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
    started = time.perf_counter()
    items, split = build_items(opts.rows)
    site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT, reads.USER]), page_size=500)
    site.emulator.seed(items)
    print(f"seeded the emulator with {len(items):,} entities in {time.perf_counter() - started:.1f} s", flush=True)
    auth = {"script_name": reads.USER[0], "script_key": reads.USER[1]}
    queries = read_args()
    workdir = tempfile.mkdtemp(prefix="sgcache-sizing-")
    results: list[dict[str, Any]] = []
    try:
        for kind in [s.strip() for s in opts.stores.split(",") if s.strip()]:
            drop = None
            server = ""
            if kind == "sqlite":
                url = "sqlite:///" + os.path.join(workdir, "sizing.sqlite")
            elif kind == "postgresql":
                url, drop, note = make_pg(opts.pg or base_url())
                if url is None:
                    print(note, flush=True)
                    continue
                conn = psycopg2.connect(url)
                try:
                    cur = conn.cursor()
                    cur.execute("SHOW server_version")
                    server = f"PostgreSQL {cur.fetchone()[0]}"
                finally:
                    conn.close()
            else:
                raise SystemExit(f"--stores: {kind!r} is not sqlite or postgresql")
            try:
                result = await size_store(reactor, kind, url, schema, site.url, auth, queries)
                result["server"] = server
                results.append(result)
                print(f"{kind}: {result['entity_rows']:,} entity rows, {mb(result['after'])} "
                      f"(empty {mb(result['before'])}), loaded in {result['load_s']:.1f} s", flush=True)
            finally:
                if drop is not None:
                    drop()
    finally:
        await site.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if results:
        report(results, split, opts)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows to cache (Shots, Tasks, Versions 1:3:2)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
