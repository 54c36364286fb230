"""Summarize latency benchmark: the real shotgun_api3 client's `summarize()`
answered locally by sgcache (SQLite and PostgreSQL stores) beside the very
same call passed through the same daemon to the emulator, for a fixed set
of typical summaries; prints p50/p90 per query and the ratio of the medians
(passed through / local: the speed-up a local answer gives).

The pass-through is the same daemon and the same call from a second script
the daemon is told never to answer locally (``--pass-scripts``): the
difference is exactly the local answer against the site's, relay included.
``--latency S`` makes the emulator answer every RPC S seconds late (its
`latency` control), a stand-in for a real site's response time; the local
answers never wait for it.

    PYTHONPATH=. python bench/summarize.py                      # 10k shots / 30k tasks / 20k versions
    PYTHONPATH=. python bench/summarize.py --latency 0.1        # a site answering in 100 ms
    PYTHONPATH=. python bench/summarize.py --stores sqlite --iterations 50
    PYTHONPATH=. python bench/summarize.py --only month
    PYTHONPATH=. python bench/summarize.py --answer-cache-mb 0   # every local summary made again

Each query is the same call again and again, so by default a daemon
answers it with the answer it kept after its first call (as it does a
dashboard's); ``--answer-cache-mb 0`` times the summary made from the
store each time.

Every server runs in its own process, as in production (see bench/reads.py,
whose helpers this uses): the emulator seeded over its test controls and
one ``twistd sgcache`` daemon per store. Calls go in rounds, a block of
`--block` calls in a row to each target (plus one untimed call first).
Before timing, each query is checked to be answered locally by each daemon
and to equal the site's answer (a ``!!`` line says otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from reads import (  # noqa: E402
    SCHEMA_PATH,
    USER,
    Servers,
    build_items,
    free_port,
    make_pg_database,
    percentile,
    post,
    seed_site,
    serving,
    start_site,
    timed_once,
    wait_until,
)
from sgcache.testing.daemon import CACHE_SCRIPT  # noqa: E402
from sgcache.testing.harness import client  # noqa: E402
from sgcache.testing.pg import base_url  # noqa: E402

#: a script every daemon passes through (--pass-scripts): the same calls, answered by the site
PASSED = ("bench-passed", "bench-passed-key")


def queries(shots: int) -> list[tuple[str, tuple, dict]]:
    """(label, summarize args, kwargs)."""
    mid = shots // 2 + 1
    return [
        ("count all tasks", ("Task", [], [{"field": "id", "type": "record_count"}]), {}),
        ("tasks of a shot by status", ("Task", [["entity", "is", {"type": "Shot", "id": 1}]],
                                       [{"field": "id", "type": "count"}, {"field": "due_date", "type": "latest"}]),
         {"grouping": [{"field": "sg_status_list", "type": "exact", "direction": "asc"}]}),
        ("shots cut-in by status", ("Shot", [], [{"field": "sg_cut_in", "type": "sum"},
                                                 {"field": "sg_cut_in", "type": "average"}]),
         {"grouping": [{"field": "sg_status_list", "type": "exact", "direction": "desc"}]}),
        ("versions by month", ("Version", [], [{"field": "id", "type": "count"},
                                               {"field": "frame_count", "type": "maximum"}]),
         {"grouping": [{"field": "created_at", "type": "month", "direction": "desc"}]}),
        ("tasks by sequence, week", ("Task", [["entity.Shot.sg_sequence.Sequence.code", "in", ["SQ0001", "SQ0002"]]],
                                     [{"field": "id", "type": "count"}, {"field": "due_date", "type": "earliest"}]),
         {"grouping": [{"field": "entity.Shot.sg_sequence.Sequence.code", "type": "exact", "direction": "asc"},
                       {"field": "due_date", "type": "week", "direction": "asc"}]}),
        ("one shot's versions", ("Version", [["entity", "is", {"type": "Shot", "id": mid}]],
                                 [{"field": "id", "type": "count"}, {"field": "created_at", "type": "latest"}]), {}),
    ]


def summaries_local(url: str) -> int:
    reply = json.loads(post(url + "/api3/json", {"method_name": "info", "params": []}, timeout=30))
    return reply["results"]["sgcache"].get("summaries_local", 0)


def site_summaries(site_url: str) -> int:
    return json.loads(post(site_url + "/_emulator/counters", {}))["result"].get("summarize", 0)


def main(opts: argparse.Namespace) -> None:
    os.environ.setdefault("TZ", ":/etc/localtime" if os.path.exists("/etc/localtime") else "UTC")
    time.tzset()
    stores = opts.stores.split(",")
    workdir = tempfile.mkdtemp(prefix="sgcache-bench-")
    servers = Servers(workdir)
    cleanups: list[Any] = []
    print(f"servers log to {workdir}", flush=True)
    try:
        run(opts, servers, workdir, cleanups, stores)
    finally:
        servers.stop()
        for cleanup in cleanups:
            cleanup()


def run(opts: argparse.Namespace, servers: Servers, workdir: str, cleanups: list, stores: list[str]) -> None:
    site_url = start_site(servers, scripts=(PASSED,))
    print(f"building {opts.shots} shots, {opts.tasks} tasks, {opts.versions} versions...", flush=True)
    t0 = time.time()
    seed_site(site_url, build_items(opts.shots, opts.tasks, opts.versions))
    print(f"  seeded the emulator in {time.time() - t0:.1f}s", flush=True)

    daemons: dict[str, str] = {}
    for store in stores:
        if store == "sqlite":
            path = os.path.join(workdir, "bench.sqlite")
            db = "sqlite:///" + path
            cleanups.append(lambda path=path: [os.remove(f) for f in (path, path + "-wal", path + "-shm")
                                               if os.path.exists(f)])
        else:
            db, drop = make_pg_database(opts.pg or base_url())
            cleanups.append(drop)
        daemons[store] = f"http://127.0.0.1:{free_port()}"
        servers.start_twistd(f"sgcache-{store}", [
            "sgcache", f"--schema={SCHEMA_PATH}", f"--db={db}", f"--shotgun={site_url}",
            f"--script-name={CACHE_SCRIPT[0]}", f"--api-key={CACHE_SCRIPT[1]}",
            f"--listen=tcp:{urlsplit(daemons[store]).port}:interface=127.0.0.1",
            f"--admin-listen=tcp:{free_port()}:interface=127.0.0.1",
            f"--pass-scripts={PASSED[0]}", "--poll-interval=3600", "--scan-interval=86400",
            *([] if opts.answer_cache_mb is None else [f"--answer-cache-mb={opts.answer_cache_mb:g}"]),
        ])
    t0 = time.time()
    for store, url in daemons.items():
        wait_until(f"sgcache ({store}) to load", lambda url=url: serving(url), servers)
    print(f"  loaded the caches in {time.time() - t0:.1f}s", flush=True)
    if opts.latency:
        post(site_url + "/_emulator/latency", {"seconds": opts.latency})
        print(f"  the emulator answers every RPC {opts.latency * 1000:.0f} ms late", flush=True)

    direct = client(site_url, *USER, timeout_secs=600)
    local = {store: client(url, *USER, timeout_secs=600) for store, url in daemons.items()}
    passed = {store: client(url, *PASSED, timeout_secs=600) for store, url in daemons.items()}
    for sg in local.values():
        sg.find_one("Project", [])  # the site vouches for the script

    n = opts.iterations
    results: dict[str, dict[str, list[float]]] = {}
    print("timing...", flush=True)
    for label, args, kwargs in queries(opts.shots):
        if opts.only and not any(o in label for o in opts.only):
            continue
        want = direct.summarize(*args, **kwargs)
        for store in stores:
            before = site_summaries(site_url)
            got = local[store].summarize(*args, **kwargs)
            if site_summaries(site_url) != before:
                print(f"  !! {label}: {store} passed it through", flush=True)
            if got != want:
                print(f"  !! {label}: {store}'s answer differs from the site's", flush=True)
            if passed[store].summarize(*args, **kwargs) != want:
                print(f"  !! {label}: {store}'s pass-through differs from the site's", flush=True)
        targets = [(f"{s} local", local[s]) for s in stores] + [(f"{s} passed", passed[s]) for s in stores]
        by: dict[str, list[float]] = {name: [] for name, _ in targets}
        block = min(opts.block, n)
        for _ in range(-(-n // block)):
            for name, sg in targets:
                timed_once(sg, "summarize", args, kwargs)
                by[name] += [timed_once(sg, "summarize", args, kwargs) for _ in range(block)]
        results[label] = by
        print(f"    {label}: " + ", ".join(f"{k} p50 {percentile(v, 0.5):.2f} ms" for k, v in by.items()),
              flush=True)
    counted = {store: summaries_local(url) for store, url in daemons.items()}
    for sg in (direct, *local.values(), *passed.values()):
        sg.close()
    report(results, stores, opts, counted)


def report(results: dict, stores: list[str], opts: argparse.Namespace, counted: dict[str, int]) -> None:
    def ms(xs: list[float]) -> str:
        return f"{percentile(xs, 0.5):7.2f} {percentile(xs, 0.9):7.2f}"

    print()
    print(f"summarize latency, ms (p50 p90), {opts.iterations} iterations; {opts.shots} shots / "
          f"{opts.tasks} tasks / {opts.versions} versions; site latency {opts.latency * 1000:.0f} ms")
    head = f"{'query':26}"
    for s in stores:
        head += f" {s + ' local':>17} {s + ' passed':>17} {'ratio':>6}"
    print(head)
    print("-" * len(head))
    for label, by in results.items():
        line = f"{label:26}"
        for s in stores:
            loc, pas = by[f"{s} local"], by[f"{s} passed"]
            line += f" {ms(loc):>17} {ms(pas):>17} {statistics.median(pas) / statistics.median(loc):6.1f}"
        print(line)
    print("ratio: passed-through median / local median")
    print("summaries answered locally, per daemon (info -> sgcache -> summaries_local): "
          + ", ".join(f"{s} {n}" for s, n in counted.items()))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shots", type=int, default=10_000)
    p.add_argument("--tasks", type=int, default=30_000)
    p.add_argument("--versions", type=int, default=20_000)
    p.add_argument("--iterations", type=int, default=30, help="timed calls per target and query")
    p.add_argument("--block", type=int, default=10, help="calls in a row to one target before the next")
    p.add_argument("--latency", type=float, default=0.0, help="seconds the emulator waits before each answer")
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--only", action="append", metavar="TEXT",
                   help="time only the queries whose label contains TEXT (repeatable)")
    p.add_argument("--answer-cache-mb", type=float, default=None, metavar="MB",
                   help="the daemons' --answer-cache-mb: 0 makes every local summary again (by default a "
                        "repeated one is a kept answer after its first call)")
    p.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    return p.parse_args()


if __name__ == "__main__":
    main(parse())
