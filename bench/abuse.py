"""What one bad or careless client does to everyone else: the latency of a
light cached read from 20 clients, in one run,

  (a) alone (the baseline),
  (b) while 4 clients loop a heavy read (hundreds of OR'd deep ``contains``,
      a new value each time, so no answer is reused),
  (c) while 4 clients send gzip bombs (1 MB on the wire, 1 GiB inflated),
  (d) while 4 clients send 6000 reads with distinct unknown field names,

with the daemon's RSS after each phase, per store. Targets (issue 13): p99
in (b)-(d) at most 3x (a)'s p99 plus the read budget; RSS within the
documented bound (README, "Limits and memory").

    PYTHONPATH=. python bench/abuse.py                       # both stores, ~3 minutes
    PYTHONPATH=. python bench/abuse.py --stores sqlite --seconds 20
    PYTHONPATH=. python bench/abuse.py --baseline-rev a4632b4  # the same phases against an older commit too

Every server runs in its own process (as `bench/reads.py` starts them): the
emulator, one ``twistd sgcache`` per store. The light clients are threads of
this process (the real `shotgun_api3` client, one per thread); the abusers
run in a separate process, so that they do not take this one's GIL.
``--baseline-rev REV`` also runs the phases against ``twistd sgcache`` from
a git worktree of REV (without the options it may not know), side by side.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import reads  # noqa: E402
from reads import USER, Servers, free_port, make_pg_database, percentile, serving, wait_until  # noqa: E402
from sgcache.testing.daemon import CACHE_SCRIPT  # noqa: E402
from sgcache.testing.harness import client  # noqa: E402
from sgcache.testing.pg import base_url  # noqa: E402

AUTH = {"script_name": USER[0], "script_key": USER[1]}
LIGHT_CLIENTS = 20
ABUSERS = 4
HEAVY_CONDITIONS = 250


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _post(url: str, body: bytes, headers: dict | None = None, timeout: float = 120) -> bytes:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def _rpc(url: str, args: dict) -> bytes:
    return _post(url + "/api3/json", json.dumps({"method_name": "read", "params": [AUTH, args]}).encode())


def heavy_args(n: int) -> dict:
    conditions = [{"path": "sg_sequence.Sequence.code", "relation": "contains", "values": [f"q{n}x{i}"]}
                  for i in range(HEAVY_CONDITIONS)]
    return {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "or", "conditions": conditions},
            "paging": {"entities_per_page": 50, "current_page": 1}, "return_paging_info_without_counts": True}


def make_bomb() -> bytes:
    """1 MB of gzip that inflates to 1 GiB (made in pieces: no GiB in memory)."""
    out = gzip.compress(b'{"method_name": "read", "params": [{}, {}], "pad": "')
    chunk = gzip.compress(b"x" * 2**24, compresslevel=9)
    return out + chunk * 64 + gzip.compress(b'"}')


def abuse(kind: str, url: str, stop: Any, counter: Any, bomb: bytes = b"") -> None:
    """One abusing client (in the abusers' process) until `stop` is set."""
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if kind == "heavy":
                _rpc(url, heavy_args(os.getpid() * 100_000 + n))
            elif kind == "bomb":
                _post(url + "/api3/json", bomb, {"content-encoding": "gzip"})
            elif kind == "unknown":
                if counter.value >= 6000:
                    time.sleep(0.05)
                    continue
                with counter.get_lock():
                    counter.value += 1
                    i = counter.value
                _rpc(url, {"type": "Shot", "return_fields": ["code", f"sg_no_such_field_{i}"],
                           "paging": {"entities_per_page": 1, "current_page": 1}})
        except OSError:
            time.sleep(0.05)


def abusers(kind: str, url: str, stop: Any, counter: Any, ready: Any) -> None:
    bomb = make_bomb() if kind == "bomb" else b""
    ready.set()
    threads = [threading.Thread(target=abuse, args=(kind, url, stop, counter, bomb)) for _ in range(ABUSERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def light_phase(url: str, seconds: float, errors: list[int]) -> list[float]:
    """20 clients loop the light cached read for `seconds`; latencies (ms),
    failed calls included (at the time they failed; counted in `errors`)."""
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def loop() -> None:
        sg = client(url, *USER, timeout_secs=120)
        mine, failed = [], 0
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                sg.find_one("Shot", [["code", "is", "sh000042"]], ["code", "sg_status_list"])
            except Exception:  # noqa: BLE001 -- a timeout, a refused connection: counted
                failed += 1
                sg.close()
                sg = client(url, *USER, timeout_secs=120)
            mine.append((time.perf_counter() - t0) * 1000)
        sg.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=loop) for _ in range(LIGHT_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def phases(name: str, url: str, pid: int, seconds: float) -> list[tuple[str, list[float], float, Any]]:
    out = []
    for phase, kind in (("(a) alone", None), ("(b) heavy reads", "heavy"), ("(c) gzip bombs", "bomb"),
                        ("(d) 6000 unknown fields", "unknown")):
        stop, ready = multiprocessing.Event(), multiprocessing.Event()
        counter = multiprocessing.Value("i", 0)
        proc = None
        if kind is not None:
            proc = multiprocessing.Process(target=abusers, args=(kind, url, stop, counter, ready), daemon=True)
            proc.start()
            ready.wait(120)
            time.sleep(1.0)  # the abuse is under way
        errors = [0]
        latencies = light_phase(url, seconds, errors) or [float("nan")]
        stop.set()
        if proc is not None:
            proc.join(120)
            if proc.is_alive():
                proc.terminate()
        info = json.loads(_post(url + "/api3/json", b'{"method_name": "info", "params": []}'))["results"]
        out.append((phase, latencies, rss_mb(pid), info.get("sgcache", {}), errors[0]))
        print(f"  {name} {phase}: p50 {percentile(latencies, 0.5):.2f} ms, p99 {percentile(latencies, 0.99):.2f} ms, "
              f"{len(latencies)} reads ({errors[0]} failed), RSS {out[-1][2]:.0f} MB", flush=True)
    return out


def worktree(rev: str, workdir: str, cleanups: list) -> str:
    """A git worktree of `rev` (made once per run)."""
    path = os.path.join(workdir, f"rev-{rev}")
    if not os.path.isdir(path):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", path, rev], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cleanups.append(lambda: subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path],
                                               check=False))
    return path


def main(opts: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="sgcache-abuse-")
    servers = Servers(workdir)
    cleanups: list[Any] = []
    print(f"servers log to {workdir}", flush=True)
    try:
        run(opts, servers, workdir, cleanups)
    finally:
        servers.stop()
        for cleanup in reversed(cleanups):
            try:
                cleanup()
            except Exception as e:  # noqa: BLE001 -- best effort
                print(f"cleanup: {e}")


def run(opts: argparse.Namespace, servers: Servers, workdir: str, cleanups: list) -> None:
    schema_path = reads.SCHEMA_PATH
    site_url = reads.start_site(servers)
    reads.seed_site(site_url, reads.build_items(opts.shots, opts.shots, 0))

    targets: list[tuple[str, list[str], dict]] = []
    for store in opts.stores.split(","):
        targets.append((store, [], {}))
        if opts.baseline_rev:
            targets.append((store, [], {"rev": opts.baseline_rev}))
    results: dict[str, list] = {}
    for store, _, how in targets:
        name = store + (f"@{how['rev']}" if how else "")
        if store == "sqlite":
            db = "sqlite:///" + os.path.join(workdir, f"{name}.sqlite")
        else:
            db, drop = make_pg_database(opts.pg or base_url())
            cleanups.append(drop)
        url = f"http://127.0.0.1:{free_port()}"
        args = ["sgcache", f"--schema={schema_path}", f"--db={db}", f"--shotgun={site_url}",
                f"--script-name={CACHE_SCRIPT[0]}", f"--api-key={CACHE_SCRIPT[1]}",
                f"--listen=tcp:{urlsplit(url).port}:interface=127.0.0.1",
                "--poll-interval=3600", "--scan-interval=86400"]
        if how:
            tree = worktree(how["rev"], workdir, cleanups)
            env = dict(servers.env, PYTHONPATH=tree)
            logfile = os.path.join(workdir, f"{name}.twistd.log")
            log = open(os.path.join(workdir, f"{name}.log"), "ab")
            proc = subprocess.Popen(reads.twistd() + ["-n", "--pidfile=", f"--logfile={logfile}"] + args,
                                    cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
            servers.procs.append((name, proc))
        else:
            args.append(f"--read-budget-ms={opts.read_budget_ms:g}")
            servers.start_twistd(name, args)
        pid = servers.procs[-1][1].pid
        wait_until(f"sgcache ({name}) to load", lambda url=url: serving(url), servers)
        sg = client(url, *USER)
        sg.find_one("Project", [])  # the site vouches for the script
        sg.close()
        print(f"{name}: loaded; RSS {rss_mb(pid):.0f} MB", flush=True)
        results[name] = phases(name, url, pid, opts.seconds)
        servers.procs[-1][1].terminate()
        servers.procs[-1][1].wait(60)
        servers.procs.pop()
    report(results, opts)


def report(results: dict[str, list], opts: argparse.Namespace) -> None:
    budget = opts.read_budget_ms
    print()
    print(f"light cached read from {LIGHT_CLIENTS} clients, ms; {ABUSERS} abusing clients in (b)-(d); "
          f"--read-budget-ms {budget:g}")
    head = (f"{'daemon':22} {'phase':26} {'p50':>8} {'p99':>9} {'p99/(a)':>8} {'target':>9} {'reads':>7} "
            f"{'failed':>7} {'RSS MB':>7}")
    print(head)
    print("-" * len(head))
    for name, rows in results.items():
        base = percentile(rows[0][1], 0.99)
        for phase, lat, rss, _, failed in rows:
            p99 = percentile(lat, 0.99)
            target = 3 * base + budget
            mark = "" if phase.startswith("(a)") else ("  ok" if p99 <= target and not failed else "  OVER")
            print(f"{name:22} {phase:26} {percentile(lat, 0.5):8.2f} {p99:9.2f} {p99 / base:8.1f} "
                  f"{'' if phase.startswith('(a)') else format(target, '.0f'):>9} {len(lat):7d} {failed:7d} "
                  f"{rss:7.0f}{mark}")
    print("target: p99 <= 3 x p99 (a) + the read budget (the baseline rows, @REV, had no budget: same target shown)")
    for name, rows in results.items():
        block = rows[-1][3] if rows[-1][3] else {}
        if block:
            print(f"{name}: reads_over_budget {block.get('reads_over_budget')}, slow_shapes {block.get('slow_shapes')}, "
                  f"passthrough_reasons {dict(list(block.get('passthrough_reasons', {}).items())[:6])}")
    print("median of p50s:", {n: round(statistics.median([percentile(r[1], 0.5) for r in rows]), 2)
                              for n, rows in results.items()})


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--shots", type=int, default=20_000, help="Shots (and Tasks) on the site")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--read-budget-ms", type=float, default=1000.0)
    p.add_argument("--baseline-rev", default=None, help="also run the phases against this git revision")
    p.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    return p.parse_args()


if __name__ == "__main__":
    main(parse())
