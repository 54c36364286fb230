"""Where a local read's time goes, without HTTP: the daemon's read path
(`Cache.handle` for a find-one) per store, and one PostgreSQL round trip
through the store (`store.fetch`) beside the same query through psycopg2
directly -- its baseline, in the same run -- also after a pause, as a
daemon's reads come one client request apart.

    PYTHONPATH=. python bench/readpath.py            # 2000 calls each
    PYTHONPATH=. python bench/readpath.py --calls 5000 --pg postgresql://...

Runs in one process: an emulator seeded with the read bench's small data
set (2k Shots), a daemon per store loaded from it (SQLite in a temporary
file, PostgreSQL on a throw-away database), then timed loops. Prints wall
time and this process's user / system CPU per call (ms).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import psycopg2  # noqa: E402
import shotgun_api3  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

import reads  # noqa: E402
from sgcache.web.answers import Answers  # noqa: E402
from sgcache.schema import Schema  # noqa: E402
from sgcache.store.pgadapter import to_pyformat  # noqa: E402
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon  # noqa: E402
from sgcache.testing.harness import start_emulator  # noqa: E402
from sgcache.testing.pg import base_url  # noqa: E402


async def timed(label: str, n: int, call: Callable[[], Awaitable[Any] | Any]) -> None:
    result = call()
    if hasattr(result, "__await__"):
        await result
    t0, w0 = os.times(), time.perf_counter()
    for _ in range(n):
        result = call()
        if hasattr(result, "__await__"):
            await result
    t1, w1 = os.times(), time.perf_counter()
    print(f"  {label:62} wall {(w1 - w0) / n * 1e3:6.3f}  user {(t1.user - t0.user) / n * 1e3:6.3f}"
          f"  sys {(t1.system - t0.system) / n * 1e3:6.3f}", flush=True)


def read_args() -> dict:
    sg = shotgun_api3.Shotgun("http://unused.invalid", script_name="x", api_key="y", connect=False)
    sg._server_caps = shotgun_api3.shotgun.ServerCapabilities("unused.invalid", {"version": [8, 0, 0]})
    label, method, args, kwargs = reads.queries(2000)[0]
    return reads._read_args(sg, method, args, kwargs)


async def main(reactor: Any, opts: argparse.Namespace) -> None:
    schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
    site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT, reads.USER]), page_size=500)
    site.emulator.seed(reads.build_items(2000, 6000, 4000))
    auth = {"script_name": reads.USER[0], "script_key": reads.USER[1]}
    args = read_args()
    workdir = tempfile.mkdtemp(prefix="sgcache-readpath-")
    pg_url, drop = reads.make_pg_database(opts.pg or base_url())
    print("ms per call", flush=True)
    try:
        for store, url in (("sqlite", "sqlite:///" + os.path.join(workdir, "s.sqlite")), ("postgresql", pg_url)):
            daemon = await start_daemon(schema, site.url, url)
            try:
                cache = daemon.cache
                cache.credentials.ttl = 3600.0
                cache.credentials.accepted(cache.credentials.key(auth))
                before = cache.counters["read.local"]
                await cache.handle("read", auth, args, b"", None)
                assert cache.counters["read.local"] == before + 1, dict(cache.passthrough_reasons)
                await timed(f"{store}: Cache.handle, find one by code (the answer kept)", opts.calls,
                            lambda: cache.handle("read", auth, args, b"", None))
                kept, cache.answers = cache.answers, Answers(0)
                await timed(f"{store}: Cache.handle, find one by code (planned and read)", opts.calls,
                            lambda: cache.handle("read", auth, args, b"", None))
                cache.answers = kept
                if store == "postgresql":
                    await timed("postgresql: store.fetch('SELECT 1') (the store's pool)", opts.calls,
                                lambda: daemon.store.fetch("SELECT 1", []))
            finally:
                await daemon.stop()
        conn = psycopg2.connect(pg_url)
        conn.autocommit = True
        cur = conn.cursor()

        def select_one() -> None:
            cur.execute(to_pyformat("SELECT 1"), [])
            cur.fetchall()

        await timed("postgresql: psycopg2 'SELECT 1', synchronous (baseline)", opts.calls, select_one)
        # A daemon's reads come one client request apart (1-2 ms), not back
        # to back: the same round trip after a pause, p50 (CPUs fall idle)
        for pause in (0.0005, 0.002):
            took = []
            for _ in range(min(opts.calls, 1000)):
                time.sleep(pause)
                t0 = time.perf_counter()
                select_one()
                took.append(time.perf_counter() - t0)
            took.sort()
            label = f"postgresql: psycopg2 'SELECT 1' after a {pause * 1e3:g} ms pause, p50"
            print(f"  {label:62} wall {took[len(took) // 2] * 1e3:6.3f}", flush=True)
        conn.close()
    finally:
        await site.stop()
        drop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
