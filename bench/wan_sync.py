"""Sync at WAN latency (``bench/sync.py --latency 0.3``): the emulator in a
process of its own, every request delayed by the latency (each on its own
timer, as a distant site), and the cache's scanner and poller in another.
The latency is a read's response time (the emulator's ``includes_work``):
its own work, one core for every request, is inside it, as on a hosted
site with many workers, so one request at a time could reach the
single-stream bound below exactly.

Printed in one run:

* the initial load of N entities over 3 types (Shot, Asset, Task), by the
  sequential scan (the baseline: ``--baseline-rev`` REV's scanner from a git
  worktree, default the last commit before concurrent scans; or this tree at
  concurrency 1 with ``--baseline-rev ''``) and by the concurrent scan
  (``--concurrency``, default 4), each with its rows/s and its ratio to the
  single-stream bound: ``page size / latency x elapsed``, the rows one
  request at a time could have read in the same time at best;
* events/s at the same latency (the baseline poller and this one, each on a
  copy of the loaded store);
* bytes on the wire: the scan's (gzip) and what they inflate to (without
  gzip), and a 500-row read answered with and without gzip (what a
  passed-through read costs, now relayed as the site sent it).

Run::

    PYTHONPATH=. python bench/sync.py --latency 0.3                  # 200k entities
    PYTHONPATH=. python bench/sync.py --latency 0.3 --entities 30000 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE_REV = "d76dfcc"
TYPES = ["Shot", "Asset", "Task"]
CACHE = ("cache", "cache-key")
PAGE = 500


# -- the site process ------------------------------------------------------------
def serve(opts: argparse.Namespace) -> None:
    """The emulator, seeded, on a free port written to `opts.port_file`."""
    sys.path.insert(0, ROOT)
    from twisted.internet import reactor
    from twisted.web.server import Site

    from sgcache.schema import Schema
    from sgcache.testing.emulator import Emulator
    from sgcache.testing.server import EmulatorServer

    schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
    emulator = Emulator(schema, scripts=dict([CACHE, ("test", "key")]), page_size=PAGE, clock=reactor)
    project = {"type": "Project", "id": 1}
    emulator.seed([{"type": "Project", "id": 1, "fields": {"name": "Bench"}}])
    per_type = opts.entities // 3
    batch = 20_000
    for start in range(0, per_type, batch):
        ids = range(start, min(start + batch, per_type))
        emulator.seed([{"type": "Shot", "id": 1 + i, "fields": {
            "code": f"sh{i:07d}", "project": project, "description": f"shot {i} of the bench, a line of text",
            "sg_status_list": ("wtg", "ip", "fin")[i % 3], "sg_cut_in": 1000 + i % 97}} for i in ids])
        emulator.seed([{"type": "Asset", "id": 1 + i, "fields": {
            "code": f"asset{i:07d}", "project": project, "sg_asset_type": "Prop",
            "description": f"asset {i} of the bench"}} for i in ids])
        emulator.seed([{"type": "Task", "id": 1 + i, "fields": {
            "content": f"task {i}", "project": project, "entity": {"type": "Shot", "id": 1 + i},
            "sg_status_list": "ip"}} for i in ids])
    emulator.set_generate_events(True)
    for i in range(opts.events):  # change events spread over the three types
        etype = TYPES[i % 3]
        field = "content" if etype == "Task" else "description"
        emulator.update(etype, 1 + (i * 7919) % per_type, {field: f"changed {i}"})
    server = EmulatorServer(emulator, reactor, test_mode=True)
    port = reactor.listenTCP(0, Site(server.resource()), interface="127.0.0.1")
    with open(opts.port_file, "w") as fh:
        fh.write(str(port.getHost().port))
    reactor.run()


# -- the cache side (runs with PYTHONPATH = the tree measured) -----------------------
def scan(opts: argparse.Namespace) -> None:
    from twisted.internet import defer, task

    from sgcache.schema import Schema
    from sgcache.site.client import Upstream
    from sgcache.store import open_store
    from sgcache.sync.scanner import Scanner

    async def main(reactor: Any) -> None:
        schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
        store = open_store(opts.db, reactor)
        await store.open()
        await store.sync_schema(schema)
        upstream = _counting(Upstream(reactor, opts.site, *CACHE))
        kwargs: dict[str, Any] = {"page_size": PAGE, "report_every": 1e9}
        if "concurrency" in Scanner.__init__.__code__.co_varnames:
            kwargs["concurrency"] = opts.concurrency
        scanner = Scanner(reactor, schema, store, upstream, **kwargs)
        started = time.perf_counter()
        rows = await scanner.full_scan(TYPES)
        seconds = time.perf_counter() - started
        await upstream.close()
        await store.close()
        print(json.dumps({"rows": rows, "seconds": seconds, "inflated_bytes": upstream.inflated}))

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))


def poll(opts: argparse.Namespace) -> None:
    from twisted.internet import defer, task

    from sgcache.schema import Schema
    from sgcache.site.client import Upstream
    from sgcache.store import open_store
    from sgcache.sync.poller import EventPoller

    async def main(reactor: Any) -> None:
        schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
        store = open_store(opts.db, reactor)
        await store.open()
        upstream = Upstream(reactor, opts.site, *CACHE)
        poller = EventPoller(reactor, schema, store, upstream, page_size=PAGE, fill_links=False)
        poller.cursor, poller.cursor_time = 0, None
        started = time.perf_counter()
        applied = await poller.poll()
        seconds = time.perf_counter() - started
        await upstream.close()
        await store.close()
        print(json.dumps({"events": applied, "seconds": seconds}))

    task.react(lambda reactor: defer.ensureDeferred(main(reactor)))


def _counting(upstream: Any) -> Any:
    """Count the bytes of the site's answers as the cache reads them
    (inflated: what they would weigh on the wire without gzip)."""
    upstream.inflated = 0
    original = upstream.request

    async def request(*args: Any, **kwargs: Any) -> Any:
        response = await original(*args, **kwargs)
        upstream.inflated += len(response.body)
        return response

    upstream.request = request
    return upstream


# -- the driver --------------------------------------------------------------------
def control(site: str, action: str, **args: Any) -> Any:
    request = urllib.request.Request(f"{site}/_emulator/{action}", data=json.dumps(args).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["result"]


def worktree(rev: str, workdir: str, cleanups: list) -> str:
    path = os.path.join(workdir, f"tree-{rev}")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True,
                   capture_output=True)
    cleanups.append(lambda: subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path],
                                           capture_output=True))
    return path


def child(tree: str, *args: str) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_sizes(site: str) -> tuple[int, int]:
    """Bytes of a 500-row read answered plain and gzipped."""
    body = json.dumps({"method_name": "read", "params": [
        {"script_name": CACHE[0], "script_key": CACHE[1]},
        {"type": "Shot", "return_fields": ["code", "description", "sg_status_list", "sg_cut_in", "project"],
         "filters": {"logical_operator": "and", "conditions": []},
         "paging": {"entities_per_page": PAGE, "current_page": 1}, "return_only": "active"}]}).encode()
    sizes = []
    for accept in ("identity", "gzip"):
        request = urllib.request.Request(f"{site}/api3/json", data=body, headers={
            "content-type": "application/json", "accept-encoding": accept})
        with urllib.request.urlopen(request, timeout=600) as response:
            sizes.append(len(response.read()))
    return sizes[0], sizes[1]


def run(opts: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="sgcache-wan-")
    cleanups: list = [lambda: shutil.rmtree(workdir, ignore_errors=True)]
    port_file = os.path.join(workdir, "port")
    site_proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "serve", "--entities", str(opts.entities),
         "--events", str(opts.events), "--port-file", port_file], env=dict(os.environ, PYTHONPATH=ROOT))
    cleanups.append(site_proc.kill)
    try:
        print(f"seeding {opts.entities:,} entities over {', '.join(TYPES)} and {opts.events:,} events...",
              flush=True)
        while not os.path.exists(port_file) or not open(port_file).read():
            if site_proc.poll() is not None:
                raise SystemExit("the emulator process ended")
            time.sleep(0.2)
        site = f"http://127.0.0.1:{open(port_file).read()}"
        base = worktree(opts.baseline_rev, workdir, cleanups) if opts.baseline_rev else ROOT
        base_name = f"sequential (@{opts.baseline_rev})" if opts.baseline_rev else "sequential (concurrency 1)"
        plain, packed = read_sizes(site)
        control(site, "latency", seconds=opts.latency, includes_work=True)
        rows: list[dict[str, Any]] = []
        for name, tree, concurrency in ((base_name, base, 1), (f"concurrent ({opts.concurrency})", ROOT,
                                                                opts.concurrency)):
            db = os.path.join(workdir, f"{len(rows)}.sqlite")
            control(site, "counters", reset=True)
            out = child(tree, "scan", "--site", site, "--db", f"sqlite:///{db}", "--concurrency", str(concurrency))
            counts = control(site, "counters")
            bound = PAGE / opts.latency * out["seconds"]
            out.update(name=name, tree=tree, db=db, bound=bound, wire=counts.get("<bytes_out>"),
                       requests=sum(v for k, v in counts.items() if not k.startswith("<")),
                       peak=counts.get("<max_in_flight>"))
            rows.append(out)
            print(f"{name}: {out['rows']:,} rows in {out['seconds']:.1f}s = {out['rows'] / out['seconds']:,.0f}/s, "
                  f"{out['rows'] / bound:.2f}x the single-stream bound, {out['requests']} requests, "
                  f"at most {out['peak']} at once", flush=True)
        events = []
        for scan_row in rows:
            db = scan_row["db"] + ".poll.sqlite"
            shutil.copy(scan_row["db"], db)
            out = child(scan_row["tree"], "poll", "--site", site, "--db", f"sqlite:///{db}")
            events.append(out)
            print(f"{scan_row['name']} poller: {out['events']:,} events in {out['seconds']:.1f}s = "
                  f"{out['events'] / out['seconds']:,.0f}/s", flush=True)
        seq, con = rows
        print()
        print(f"latency {opts.latency:g}s per request, pages of {PAGE}; {opts.entities:,} entities, "
              f"store SQLite; machine: {os.cpu_count()} cores")
        print(f"{'':34} {'rows/s':>9} {'x bound':>8} {'events/s':>9}")
        for row, ev in zip(rows, events):
            print(f"{row['name']:34} {row['rows'] / row['seconds']:>9,.0f} {row['rows'] / row['bound']:>8.2f} "
                  f"{ev['events'] / ev['seconds']:>9,.0f}")
        speedup = (con["rows"] / con["seconds"]) / (seq["rows"] / seq["seconds"])
        share = con["rows"] / con["bound"] / opts.concurrency
        print(f"concurrent / sequential: {speedup:.2f}x (target >= 3.5); concurrent / "
              f"(concurrency x single-stream bound): {share:.2f} (target >= 0.85)")
        print(f"events/s, this poller / baseline: "
              f"{(events[1]['events'] / events[1]['seconds']) / (events[0]['events'] / events[0]['seconds']):.2f}x")
        print(f"bytes on the wire, concurrent scan: {con['wire']:,} gzipped; {con['inflated_bytes']:,} "
              f"without gzip ({con['inflated_bytes'] / max(con['wire'] or 1, 1):.1f}x)")
        print(f"a {PAGE}-row read (passed through: relayed as the site sent it): {plain:,} bytes plain, "
              f"{packed:,} gzipped ({plain / packed:.1f}x)")
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", nargs="?", default="run", choices=["run", "serve", "scan", "poll"])
    p.add_argument("--latency", type=float, default=0.3)
    p.add_argument("--entities", type=int, default=200_000)
    p.add_argument("--events", type=int, default=5_000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--baseline-rev", default=BASELINE_REV)
    p.add_argument("--port-file")
    p.add_argument("--site")
    p.add_argument("--db")
    return p


def main(argv: list[str] | None = None) -> None:
    opts = parser().parse_args(argv)
    {"run": run, "serve": serve, "scan": scan, "poll": poll}[opts.mode](opts)


if __name__ == "__main__":
    main()
