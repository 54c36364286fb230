"""Read latency benchmark: the real shotgun_api3 client against
(a) the floor -- a trivial Klein endpoint answering a canned body of the same
    size (client + HTTP + JSON cost, nothing else),
(b) sgcache (SQLite and PostgreSQL stores) in front of the emulator,
(c) the emulator directly,
for a fixed set of typical pipeline queries; prints p50/p90 per query and
the ratios b/a (cache overhead over the floor) and c/b (speed-up over the
site stand-in).

Each query but one is the same read again and again, as a farm sends it:
after its first call a daemon answers it with the answer it kept
(`sgcache.web.answers`; nothing changes on the site while timing). "find one,
new code each" asks for a different Shot each call, so every call is
planned and read from the store: the cost of a read nobody asked before.
The last table says how many calls were answered with a kept answer.

    PYTHONPATH=. python bench/reads.py                 # 10k shots / 30k tasks / 20k versions
    PYTHONPATH=. python bench/reads.py --full          # 100k / 300k / 200k (the issue's size)
    PYTHONPATH=. python bench/reads.py --stores sqlite --iterations 50
    PYTHONPATH=. python bench/reads.py --only "find one" --only "sorted"
    PYTHONPATH=. python bench/reads.py --stores sqlite --shadow-rates 0,0.01,1 --site-nice 19   # shadow checks' cost

Every server runs in its own process, as in production: the emulator
(``twistd sgcache-emulator``, seeded over its test controls), one
``twistd sgcache`` daemon per store, and the floor (``bench/floor.py``).
This process only runs the client. It calls the servers in rounds, a block
of `--block` calls in a row to each (plus one untimed call first: on an
otherwise idle VM the first call after a pause pays ~1 ms to wake a CPU),
so that all of them see the same machine load.
The table gives p50 and p90 per server and the ratios of the medians;
c/a, the emulator against the floor, is the most any c/b could be.
PostgreSQL: ``--pg`` (default ``SGCACHE_TEST_POSTGRES`` or the local server);
a throw-away database is created and dropped.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sgcache.testing.daemon import CACHE_SCRIPT  # noqa: E402
from sgcache.testing.harness import client  # noqa: E402
from sgcache.testing.pg import base_url  # noqa: E402

USER = ("bench", "bench-key")
SCHEMA_PATH = os.path.join(ROOT, "schema", "basic.yml")
#: the data's "now": the real clock, which the emulator and the daemons both follow
NOW = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


def build_items(shots: int, tasks: int, versions: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    project = {"type": "Project", "id": 1}
    items: list[dict] = [{"type": "Project", "id": 1, "fields": {"name": "Bench", "archived": False}}]
    n_seq = max(1, shots // 100)
    items += [{"type": "Sequence", "id": i + 1, "fields": {"code": f"SQ{i:04d}", "project": project}}
              for i in range(n_seq)]
    steps = ["Layout", "Anim", "FX", "Light", "Comp", "Roto"]
    items += [{"type": "Step", "id": i + 1, "fields": {"code": s, "entity_type": "Shot"}} for i, s in enumerate(steps)]
    n_users = 50
    items += [{"type": "HumanUser", "id": i + 1, "fields": {"name": f"User {i}", "login": f"user{i}"}}
              for i in range(n_users)]
    statuses = ["wtg", "ip", "fin", "hld", "rdy"]
    for i in range(shots):
        items.append({"type": "Shot", "id": i + 1, "fields": {
            "code": f"sh{i:06d}", "project": project, "description": f"shot {i} " + "x" * rng.randint(0, 40),
            "sg_sequence": {"type": "Sequence", "id": 1 + i % n_seq},
            "sg_status_list": rng.choice(statuses + [None]), "sg_cut_in": 1001 + rng.randint(0, 50),
        }})
    for i in range(tasks):
        shot = 1 if i < 50 else 1 + i % shots  # shot 1 has 50+ tasks
        assignees = rng.sample(range(1, n_users + 1), rng.randint(0, 2))
        items.append({"type": "Task", "id": i + 1, "fields": {
            "content": f"{steps[i % len(steps)]} {i}", "project": project,
            "entity": {"type": "Shot", "id": shot}, "step": {"type": "Step", "id": 1 + i % len(steps)},
            "task_assignees": [{"type": "HumanUser", "id": u} for u in assignees],
            "sg_status_list": rng.choice(["wtg", "ip", "fin"]),
            "due_date": (NOW.date() + datetime.timedelta(days=rng.randint(-200, 200))).isoformat(),
        }})
    for i in range(versions):
        created = NOW - datetime.timedelta(seconds=rng.randint(0, 365 * 86400))
        items.append({"type": "Version", "id": i + 1, "fields": {
            "code": f"v{i:07d}", "project": project, "entity": {"type": "Shot", "id": 1 + i % shots},
            "sg_task": {"type": "Task", "id": 1 + i % tasks}, "user": {"type": "HumanUser", "id": 1 + i % n_users},
            "sg_status_list": rng.choice(["na", "rev", "vwd", None]), "description": f"version {i}",
            "sg_path_to_movie": f"/mnt/movies/v{i:07d}.mov", "frame_count": rng.randint(10, 300),
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }})
    return items


def queries(shots: int) -> list[tuple[str, str, Any, dict]]:
    """(label, method, args, kwargs); args may be a function of the call's
    number (a different read each call, so that no answer is reused)."""
    mid = shots // 2
    return [
        ("find one by code", "find_one", ("Shot", [["code", "is", f"sh{mid:06d}"]], ["code", "sg_status_list"]), {}),
        ("find one, new code each", "find_one",
         lambda i: ("Shot", [["code", "is", f"sh{(mid + 1 + i) % shots:06d}"]], ["code", "sg_status_list"]), {}),
        ("50 tasks of a shot", "find",
         ("Task", [["entity", "is", {"type": "Shot", "id": 1}]],
          ["content", "entity.Shot.code", "step.Step.code", "task_assignees"]), {"limit": 50}),
        ("500-row page, 10 fields", "find",
         ("Version", [], ["code", "entity", "sg_task", "user", "project", "sg_status_list", "description",
                          "created_at", "frame_count", "sg_path_to_movie"]), {"limit": 500}),
        ("deep-link filter", "find",
         ("Task", [["entity.Shot.sg_sequence.Sequence.code", "is", "SQ0003"]], ["content"]), {"limit": 100}),
        ("multi-entity filter", "find",
         ("Task", [["task_assignees", "is", {"type": "HumanUser", "id": 7}]], ["content"]), {"limit": 100}),
        ("relative-date filter", "find",
         ("Version", [["created_at", "in_last", 7, "DAY"]], ["code", "created_at"]), {"limit": 100}),
        ("sorted page 5", "find",
         ("Shot", [], ["code", "sg_status_list"]),
         {"order": [{"field_name": "code", "direction": "desc"}], "limit": 100, "page": 5}),
    ]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def timed_once(sg: Any, method: str, args: tuple, kwargs: dict) -> float:
    t0 = time.perf_counter()
    getattr(sg, method)(*args, **kwargs)
    return (time.perf_counter() - t0) * 1000


def nth(args: Any, i: int) -> tuple:
    """The arguments of a query's `i`th call."""
    return args(i) if callable(args) else args


def cpu_seconds(pids: list[int]) -> float | None:
    """Time the main threads of `pids` spent on a CPU (Linux
    ``/proc/PID/schedstat``, nanosecond resolution), or None elsewhere."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


def pg_backends(url: str) -> list[int]:
    """The pids of the daemon's PostgreSQL backends on the database of `url`."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND application_name = 'sgcache'")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


# -- the server processes -------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twistd() -> list[str]:
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return [beside] if os.path.exists(beside) else [shutil.which("twistd") or "twistd"]


class Servers:
    """The child processes, each logging to a file in `workdir`."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def start(self, name: str, argv: list[str]) -> None:
        log = open(os.path.join(self.workdir, name + ".log"), "ab")
        proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))

    def start_twistd(self, name: str, plugin_args: list[str]) -> None:
        logfile = os.path.join(self.workdir, name + ".twistd.log")
        self.start(name, twistd() + ["-n", "--pidfile=", f"--logfile={logfile}"] + plugin_args)

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited ({proc.returncode}); see {self.workdir}/{name}*.log")

    def stop(self) -> None:
        for _, proc in self.procs:
            proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def post(url: str, body: bytes | dict, timeout: float = 600) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.read()


def wait_until(what: str, ready: Any, servers: Servers, timeout: float = 3600) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        servers.check()
        try:
            value = ready()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def site_reads(site_url: str) -> int:
    counts = json.loads(post(site_url + "/_emulator/counters", {}))["result"]
    return counts.get("read", 0)


def serving(url: str) -> bool:
    reply = json.loads(post(url + "/api3/json", {"method_name": "info", "params": []}, timeout=5))
    return bool(reply.get("results", {}).get("sgcache", {}).get("serving"))


def make_pg_database(base: str) -> tuple[str, Any]:
    import psycopg2

    name = f"sgcache_bench_{secrets.token_hex(4)}"

    def admin(sql: str) -> None:
        conn = psycopg2.connect(urlunsplit(urlsplit(base)._replace(path="/postgres")))
        conn.autocommit = True
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    admin(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    return urlunsplit(urlsplit(base)._replace(path="/" + name)), (
        lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def main(opts: argparse.Namespace) -> None:
    # The client converts every date_time with time.mktime, which re-reads
    # the zone file on each call when TZ is unset (about 30 us a value here):
    # a fixed TZ keeps the floor as low as the client allows, so that b/a
    # is not flattered by the client's own cost.
    os.environ.setdefault("TZ", ":/etc/localtime" if os.path.exists("/etc/localtime") else "UTC")
    time.tzset()
    shots, tasks, versions = (100_000, 300_000, 200_000) if opts.full else (opts.shots, opts.tasks, opts.versions)
    stores = opts.stores.split(",")
    workdir = tempfile.mkdtemp(prefix="sgcache-bench-")
    servers = Servers(workdir)
    cleanups: list[Any] = []
    print(f"servers log to {workdir}", flush=True)
    try:
        run(opts, servers, workdir, cleanups, stores, shots, tasks, versions)
    finally:
        servers.stop()
        for cleanup in cleanups:
            cleanup()


def start_site(servers: Servers, nice: int = 0, scripts: tuple[tuple[str, str], ...] = ()) -> str:
    """Start the emulator (test controls on, the cache's and the bench's
    scripts known, and `scripts`), at `nice`; its URL once it answers."""
    site_url = f"http://127.0.0.1:{free_port()}"
    servers.start_twistd("emulator", [
        "sgcache-emulator", "--test-mode", f"--schema={SCHEMA_PATH}", "--page-size=500",
        f"--listen=tcp:{urlsplit(site_url).port}:interface=127.0.0.1",
        *(f"--script={name}:{key}" for name, key in (CACHE_SCRIPT, USER, *scripts)),
    ])
    wait_until("the emulator", lambda: site_reads(site_url) >= 0, servers, 60)
    if nice:
        # a real site's CPU is not this machine's: the emulator yields the
        # cores to the daemons and the client (the shadow checks' site reads)
        os.setpriority(os.PRIO_PROCESS, servers.procs[-1][1].pid, nice)
    return site_url


def seed_site(site_url: str, items: list[dict]) -> None:
    for i in range(0, len(items), 20_000):
        post(site_url + "/_emulator/seed", {"entities": items[i:i + 20_000]})


def run(opts: argparse.Namespace, servers: Servers, workdir: str, cleanups: list, stores: list[str],
        shots: int, tasks: int, versions: int) -> None:
    schema_path = SCHEMA_PATH
    floor_url = f"http://127.0.0.1:{free_port()}"
    servers.start("floor", [sys.executable, os.path.join(ROOT, "bench", "floor.py"),
                            f"--port={urlsplit(floor_url).port}"])
    site_url = start_site(servers, opts.site_nice)

    print(f"building {shots} shots, {tasks} tasks, {versions} versions...", flush=True)
    t0 = time.time()
    seed_site(site_url, build_items(shots, tasks, versions))
    print(f"  seeded the emulator in {time.time() - t0:.1f}s", flush=True)

    daemons: dict[str, str] = {}
    #: label -> its PostgreSQL database (its backends' CPU counts too)
    pg_urls: dict[str, str] = {}
    t0 = time.time()
    # one daemon per store and --shadow-rates value, each on a store of its own
    rates = [float(r) for r in opts.shadow_rates.split(",")]
    labels = []
    for store, rate in [(store, rate) for store in stores for rate in rates]:
        label = store if rate == 0 else f"{store}@{rate:g}"
        labels.append(label)
        if store == "sqlite":
            path = os.path.join(workdir, f"bench-{rate:g}.sqlite")
            db = "sqlite:///" + path
            # the logs stay; the database (~300 MB at --full) does not
            cleanups.append(lambda path=path: [os.remove(f) for f in (path, path + "-wal", path + "-shm")
                                               if os.path.exists(f)])
        else:
            db, drop = make_pg_database(opts.pg or base_url())
            pg_urls[label] = db
            cleanups.append(drop)
        daemons[label] = f"http://127.0.0.1:{free_port()}"
        servers.start_twistd(f"sgcache-{label}", [
            "sgcache", f"--schema={schema_path}", f"--db={db}", f"--shotgun={site_url}",
            f"--script-name={CACHE_SCRIPT[0]}", f"--api-key={CACHE_SCRIPT[1]}",
            f"--listen=tcp:{urlsplit(daemons[label]).port}:interface=127.0.0.1", f"--shadow-rate={rate:g}",
            f"--admin-listen=tcp:{free_port()}:interface=127.0.0.1",
            # quiet while timing: nothing changes on the site
            "--poll-interval=3600", "--scan-interval=86400",
        ])
    stores = labels
    for store, url in daemons.items():
        wait_until(f"sgcache ({store}) to load", lambda url=url: serving(url), servers)
    print(f"  loaded the caches in {time.time() - t0:.1f}s", flush=True)

    direct = client(site_url, *USER, timeout_secs=600)
    floor_sg = client(floor_url, *USER, timeout_secs=600)
    via = {store: client(url, *USER, timeout_secs=600) for store, url in daemons.items()}
    post(floor_url + "/_floor/info", json.dumps({"results": direct.info()}).encode())
    for sg in via.values():
        sg.find_one("Project", [])  # the site vouches for the script
    auth = {"script_name": USER[0], "script_key": USER[1]}

    results: dict[str, dict[str, list[float]]] = {}
    cpu: dict[str, dict[str, float | None]] = {}
    #: query -> store -> (calls answered with a kept answer, timed calls)
    reuse: dict[str, dict[str, tuple[int, int]]] = {}
    # process name -> the name it is timed under ("sgcache-sqlite" -> "sqlite")
    pid_of = {("site" if name == "emulator" else name.removeprefix("sgcache-")): proc.pid
              for name, proc in servers.procs}
    n = opts.iterations
    print("timing...", flush=True)
    for label, method, each, kwargs in queries(shots):
        if opts.only and not any(o in label for o in opts.only):
            continue
        args = nth(each, 0)
        want = getattr(direct, method)(*args, **kwargs)
        for store, sg in via.items():
            # the daemon's own count (the site's would count other daemons'
            # shadow checks in flight)
            passed = sg.info()["sgcache"]["passthrough"]
            got = getattr(sg, method)(*args, **kwargs)
            if sg.info()["sgcache"]["passthrough"] != passed:
                print(f"  !! {label}: {store} passed it through", flush=True)
            if got != want:
                print(f"  !! {label}: {store}'s answer differs from the site's", flush=True)
        # the floor answers with the bytes the cache sent for this query
        body = post(daemons[stores[0]] + "/api3/json",
                    {"method_name": "read", "params": [auth, _read_args(direct, method, args, kwargs)]})
        post(floor_url + "/_floor/body", body)
        # rounds of blocks: each server answers a block of calls in a row (the
        # first, which may wake an idle CPU, is not counted), then the next
        targets = [("floor", floor_sg), *via.items(), ("site", direct)]
        by: dict[str, list[float]] = {name: [] for name, _ in targets}
        # CPU time of each server's process while it answered its timed calls
        # (for PostgreSQL, its backends' too)
        pids = {name: [pid_of[name]] for name, _ in targets}
        for name, pg_url in pg_urls.items():
            pids[name] += pg_backends(pg_url)
        spent: dict[str, float | None] = {name: 0.0 for name, _ in targets}
        reused_before = {store: sg.info()["sgcache"]["reads_reused"] for store, sg in via.items()}
        block = min(opts.block, n)
        # each server's calls so far (a query of many reads: the next one)
        calls = dict.fromkeys(by, 1)
        for r in range(-(-n // block)):
            for name, sg in targets:
                if name == "site" and len(by["site"]) >= max(3, n // 3):
                    continue
                timed_once(sg, method, nth(each, calls[name]), kwargs)
                before = cpu_seconds(pids[name])
                by[name] += [timed_once(sg, method, nth(each, calls[name] + 1 + k), kwargs) for k in range(block)]
                calls[name] += 1 + block
                after = cpu_seconds(pids[name])
                if before is None or after is None or spent[name] is None:
                    spent[name] = None
                else:
                    spent[name] += after - before
        # the untimed calls count too: at most one per block was not timed
        reuse[label] = {store: (sg.info()["sgcache"]["reads_reused"] - reused_before[store], len(by[store]))
                        for store, sg in via.items()}
        results[label] = by
        cpu[label] = {name: None if t is None else t * 1000 / len(by[name]) for name, t in spent.items()}
        print(f"    {label}: " + ", ".join(f"{k} p50 {percentile(v, 0.5):.2f} ms" for k, v in by.items()),
              flush=True)
    for sg in (direct, floor_sg, *via.values()):
        sg.close()
    report(results, stores, shots, tasks, versions, n)
    report_cpu(cpu, stores)
    report_reuse(reuse, stores)
    if any("@" in s for s in stores):
        report_shadow(daemons)


def report_shadow(daemons: dict[str, str]) -> None:
    """Shadow checks: site requests they made against the local reads."""
    print()
    print("shadow checks: local reads, checks sampled (skipped: too many open), site requests, outcomes")
    for store, url in daemons.items():
        block = json.loads(post(url + "/api3/json", {"method_name": "info", "params": []}))["results"]["sgcache"]
        shadow = block.get("shadow") or {}
        local = block["reads_local"]
        print(f"  {store:22} reads {local:6}  sampled {shadow.get('sampled', 0):6} "
              f"(skipped {shadow.get('skipped', 0)})  site requests {shadow.get('site_requests', 0):6} "
              f"= {shadow.get('site_requests', 0) / max(local, 1):.3f} per read  agreed {shadow.get('agreed', 0)} "
              f"lagged {shadow.get('lagged', 0)} mismatched {shadow.get('mismatched', 0)} "
              f"unsettled {shadow.get('unsettled', 0)} failed {shadow.get('failed', 0)} "
              f"still open {shadow.get('pending', 0)}")


def _read_args(sg: Any, method: str, args: tuple, kwargs: dict) -> dict:
    """The wire `read` ARGS the client sends for the first page of a call."""
    from shotgun_api3.shotgun import _translate_filters

    etype, filters, fields = args
    limit = kwargs.get("limit", 1 if method == "find_one" else 500)
    params = sg._construct_read_parameters(
        etype, fields, _translate_filters(filters, None), False,
        [dict(o) for o in kwargs.get("order") or []], True, None,
    )
    params["paging"] = {"entities_per_page": limit, "current_page": kwargs.get("page") or 1}
    return params


def report(results: dict, stores: list[str], shots: int, tasks: int, versions: int, n: int) -> None:
    def ms(xs: list[float]) -> str:
        return f"{percentile(xs, 0.5):7.2f} {percentile(xs, 0.9):7.2f}"

    print()
    print(f"read latency, ms (p50 p90), {n} iterations; {shots} shots / {tasks} tasks / {versions} versions")
    head = f"{'query':26} {'floor (a)':>15}"
    for s in stores:
        head += f" {s + ' (b)':>15} {'b/a':>5}"
    head += f" {'emulator (c)':>15}" + "".join(f" {'c/b ' + s[:10]:>14}" for s in stores) + f" {'c/a':>6}"
    print(head)
    print("-" * len(head))
    for label, by in results.items():
        line = f"{label:26} {ms(by['floor']):>15}"
        for s in stores:
            line += f" {ms(by[s]):>15} {statistics.median(by[s]) / statistics.median(by['floor']):5.1f}"
        line += f" {ms(by['site']):>15}"
        for s in stores:
            line += f" {statistics.median(by['site']) / statistics.median(by[s]):14.1f}"
        line += f" {statistics.median(by['site']) / statistics.median(by['floor']):6.1f}"
        print(line)
    print("c/a bounds every c/b: no server answers a client faster than the floor does")


def report_cpu(cpu: dict, stores: list[str]) -> None:
    names = ["floor", *stores, "site"]
    print()
    print("server CPU per call, ms (the server's process; for postgresql, plus its backends)")
    head = f"{'query':26}" + "".join(f" {n if n != 'site' else 'emulator':>11}" for n in names)
    print(head)
    print("-" * len(head))
    for label, by in cpu.items():
        print(f"{label:26}" + "".join(
            f" {'n/a' if by[n] is None else format(by[n], '.3f'):>11}" for n in names))


def report_reuse(reuse: dict, stores: list[str]) -> None:
    print()
    print("sgcache calls answered with a kept answer (`reads_reused`; untimed calls included) / timed calls")
    for label, by in reuse.items():
        print(f"{label:26}" + "".join(f" {s + ' ' + str(by[s][0]) + '/' + str(by[s][1]):>20}" for s in stores))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shots", type=int, default=10_000)
    p.add_argument("--tasks", type=int, default=30_000)
    p.add_argument("--versions", type=int, default=20_000)
    p.add_argument("--full", action="store_true", help="the issue's size: 100k / 300k / 200k")
    p.add_argument("--iterations", type=int, default=30, help="timed calls per server and query")
    p.add_argument("--block", type=int, default=10, help="calls in a row to one server before the next")
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--only", action="append", metavar="TEXT",
                   help="time only the queries whose label contains TEXT (repeatable)")
    p.add_argument("--shadow-rates", default="0", metavar="R,R",
                   help="--shadow-rate of the daemons: one daemon per store and rate (0: the baseline), "
                        "e.g. 0,0.01,1")
    p.add_argument("--site-nice", type=int, default=0, metavar="N",
                   help="run the emulator at this nice value (e.g. 19 with --shadow-rates: a real site's "
                        "CPU is not this machine's, so its work should not take the cores from the "
                        "daemons and the client)")
    p.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    return p.parse_args()


if __name__ == "__main__":
    main(parse())
