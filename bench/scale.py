"""Scaling and failover: several ``twistd sgcache`` processes on one
PostgreSQL store.

    PYTHONPATH=. python bench/scale.py                 # 5k Shots / 20k Tasks, processes 1,2,4, 10 s, 10 kills
    PYTHONPATH=. python bench/scale.py --quick         # smoke run: small data, processes 1,2, 3 s, 2 kills
    PYTHONPATH=. python bench/scale.py --skip-failover --processes 1,2 --seconds 20
    PYTHONPATH=. python bench/scale.py --skip-reads --kills 10 --failover 3
    PYTHONPATH=. python bench/scale.py --skip-failover --client-kind light

Every server runs in its own process, as deployed: the emulator
(``twistd sgcache-emulator --test-mode``, seeded over its test controls, as
``bench/reads.py`` does), the daemons, and the clients; one throw-away
PostgreSQL database (``--pg``, default ``SGCACHE_TEST_POSTGRES`` or the
local server) is the one store all the daemons share, created and dropped.

**Reads** (``--processes 1,2,4``): for each N, N daemons (``--role all``:
one is elected to sync, the others serve) start on the store: the first
alone until it serves (in the first round it creates the tables and loads
the site), then the others, until every one serves every type. By default
the N daemons share ONE listening socket, handed to each as systemd's
socket activation does (``python -m sgcache.testing.socketlaunch``,
``--listen systemd:domain=INET:index=0``, as ``contrib/sgcache@.service``):
the kernel gives each new connection to one of them. ``--ports`` gives each daemon a
port of its own instead, the clients spread over them round robin. Then
``--clients`` (50) concurrent clients, each a thread with its own
``shotgun_api3.Shotgun`` (persistent connection), in ``--client-procs``
(5) processes so that the client side is not held by one GIL, loop a mix of
typical reads for ``--warmup`` seconds (not counted: each script's first
read through a daemon passes through for the site to vouch for it) and then
``--seconds``: ``find_one`` a Shot by id, ``find`` Shots by ``code``, a
page of a Shot's Tasks with ``entity.Shot.code`` and ``step.Step.code``
(ids drawn at random: some reads repeat and are answered from the kept
answer, as a farm's do). ``--client-kind light``: the same 50
connections send the same requests, byte for byte as ``shotgun_api3``
makes them (`recorded_requests`), from one ``selectors`` loop that times
each answer to its last byte without decoding it (`light_client_process`):
the clients then take a tenth of a core instead of more than one, and the
daemons get the cores. Printed per N: reads/s (reads finished in the
window / its length), p50 and p99 latency, the ratio to N=1 against the
target 0.8 x N (judged for N up to the machine's cores only), the share of
reads each daemon answered, reads that passed through, and the CPU the
machine spent: the clients, the daemons and PostgreSQL all share the same
cores, so on a small machine the target is out of reach before the
daemons run out of CPU (the table says how busy the cores were, and the
reads per CPU second the daemons spent: flat from N=1 on means each
process keeps its per-core rate). Daemons are stopped (SIGTERM) between
rounds.

**Failover** (``--kills 10``): 3 daemons (``--role all``, each on its own
port, ``--failover-seconds`` from ``--failover`` (10), ``--poll-interval
0.5``, ``--scan-interval 86400`` so that no periodic scan mends what the
poller missed), while a writer thread updates Shot descriptions at the site
(the emulator directly, ``--write-rate`` a second, each a change event).
Repeatedly: wait until every daemon says it is ready (a steady cluster),
find the leader (``/status.json``: ``sgcache.cluster.leading``), ``kill
-9`` it, poll the others every 0.1 s; **elected** is the new leader's
``leading_since`` minus the kill time, **resumed** the time until it has
applied an event made after the kill (its ``event_cursor`` passes the
site's newest event id read right after the kill), **unready** the longest
a survivor answered ``ready.ready`` false (``/readyz`` 503) meanwhile;
then start the killed daemon again (it rejoins as a follower) and wait
until it serves. After the last kill the writer stops, the leader catches
up to the site's newest event, and every Shot's description read through
each daemon is compared with the site's: **lost events** are the Shots
that differ.

Server logs go to a temporary directory, printed at the start (kept).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

USER = ("bench", "bench-key")


# -- the client processes -----------------------------------------------------------
def shotgun(url: str, timeout: float = 60.0) -> Any:
    """A real client, as `sgcache.testing.harness.client` makes one (without
    importing Twisted into the client processes)."""
    import shotgun_api3

    sg = shotgun_api3.Shotgun(url, script_name=USER[0], api_key=USER[1], connect=False)
    sg.config.timeout_secs = timeout
    sg.config.max_rpc_attempts = 1  # an error is counted, not retried
    return sg


def one_read(sg: Any, rng: random.Random, shots: int) -> None:
    """One read of the mix."""
    n = rng.randint(1, shots)
    pick = rng.random()
    if pick < 0.4:
        sg.find_one("Shot", [["id", "is", n]], ["code", "sg_status_list", "description"])
    elif pick < 0.7:
        sg.find("Shot", [["code", "is", f"sh{n - 1:06d}"]], ["code", "sg_cut_in", "sg_sequence"])
    else:
        sg.find("Task", [["entity", "is", {"type": "Shot", "id": n}]],
                ["content", "entity.Shot.code", "step.Step.code", "sg_status_list"], limit=10)


def client_process(opts: argparse.Namespace) -> None:
    """`opts.threads` clients (one connection each) against `opts.urls`
    (thread i: url i mod len); prints one JSON line: the latencies (ms) of
    the reads that ended in [start + warmup, start + warmup + seconds]."""
    urls = opts.urls.split(",")
    measure_from = opts.start_at + opts.warmup
    end_at = measure_from + opts.seconds
    lats: list[list[float]] = [[] for _ in range(opts.threads)]
    errors = [0] * opts.threads
    first_error: list[str] = []
    clients = []
    for i in range(opts.threads):
        sg = shotgun(urls[(opts.first + i) % len(urls)])
        clients.append(sg)

    def loop(i: int) -> None:
        sg = clients[i]
        rng = random.Random(opts.first + i)
        try:
            sg.info()  # connects (the server caps) before the start
        except Exception as e:  # noqa: BLE001 (counted below)
            first_error.append(f"info: {e}")
        time.sleep(max(0.0, opts.start_at - time.time()))
        mine = lats[i]
        while True:
            t0 = time.perf_counter()
            try:
                one_read(sg, rng, opts.shots)
            except Exception as e:  # noqa: BLE001
                errors[i] += 1
                if not first_error:
                    first_error.append(f"{type(e).__name__}: {str(e)[:300]}")
            t1 = time.perf_counter()
            now = time.time()
            if measure_from <= now <= end_at:
                mine.append((t1 - t0) * 1000)
            if now >= end_at:
                break
        sg.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(opts.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"lat": [round(x, 3) for xs in lats for x in xs], "errors": sum(errors),
                      "error": first_error[0] if first_error else None}))


def recorded_requests(url: str, count: int, seed: int, shots: int) -> list[bytes]:
    """`count` HTTP requests of the mix, each exactly what
    ``shotgun_api3.Shotgun`` sends for it (headers and JSON body), recorded
    from the client itself, not sent."""
    from urllib.parse import urlsplit

    sg = shotgun(url)
    host = urlsplit(url).netloc
    requests: list[bytes] = []
    empty = '{"results": {"entities": [], "paging_info": {"entity_count": 0, "has_next_page": false}}}'

    def record(verb: str, path: str, body: Any, headers: dict) -> Any:
        data = body.encode() if isinstance(body, str) else (body or b"")
        head = [f"{verb} {path} HTTP/1.1", f"Host: {host}"]
        head += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in ("host", "content-length")]
        head.append(f"Content-Length: {len(data)}")
        requests.append(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        return (200, "OK"), {"content-type": "application/json; charset=utf-8"}, empty

    sg.server_caps  # the server's caps, which shape the requests: asked for real
    sg._http_request = record
    rng = random.Random(seed)
    while len(requests) < count:
        one_read(sg, rng, shots)
    return requests


def light_client_process(opts: argparse.Namespace) -> None:
    """`--client-kind light`: `opts.threads` connections (keep-alive) in
    ONE thread, a `selectors` loop, sending the requests
    ``shotgun_api3`` would send (`recorded_requests`) and timing until the
    whole answer is in, without decoding it: a client that costs the
    machine a few per cent of what 50 real clients do, so the cores go to
    the daemons. Prints the same JSON line as `client_process`."""
    import selectors

    urls = opts.urls.split(",")
    measure_from = opts.start_at + opts.warmup
    end_at = measure_from + opts.seconds
    # as many distinct reads as the real clients would draw (the kept answers
    # must not serve more of them than they would)
    pool = recorded_requests(urls[0], max(2000, 4 * opts.shots), opts.first, opts.shots)
    rng = random.Random(opts.first)
    sel = selectors.DefaultSelector()
    lat: list[float] = []
    errors = 0
    first_error: list[str] = []

    class Conn:
        def __init__(self, url: str):
            from urllib.parse import urlsplit

            parts = urlsplit(url)
            self.sock = socket.create_connection((parts.hostname, parts.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
            self.sent_at = 0.0

        def send(self) -> None:
            request = pool[rng.randrange(len(pool))]
            self.buf = b""
            self.sent_at = time.perf_counter()
            self.sock.sendall(request)

        def answer(self) -> tuple[int, bytes] | None:
            """(status, body) once the whole answer is in, else None."""
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            head = self.buf[:end].decode("latin-1").split("\r\n")
            status = int(head[0].split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            body = self.buf[end + 4:]
            if "content-length" in fields:
                size = int(fields["content-length"])
                return (status, body[:size]) if len(body) >= size else None
            if fields.get("transfer-encoding", "").lower() == "chunked":
                return (status, body) if body.endswith(b"0\r\n\r\n") else None
            raise ValueError(f"an answer without a length: {head[0]}")

    conns = [Conn(urls[(opts.first + i) % len(urls)]) for i in range(opts.threads)]
    time.sleep(max(0.0, opts.start_at - time.time()))
    for c in conns:
        sel.register(c.sock, selectors.EVENT_READ, c)
        c.send()
    while True:
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            data = c.sock.recv(1 << 20)
            if not data:
                raise SystemExit("a daemon closed a connection")
            c.buf += data
            got = c.answer()
            if got is None:
                continue
            status, body = got
            now = time.time()
            if status != 200 or b'"exception": true' in body[:100]:
                errors += 1
                if not first_error:
                    first_error.append(f"HTTP {status}: {body[:300]!r}")
            elif measure_from <= now <= end_at:
                lat.append((time.perf_counter() - c.sent_at) * 1000)
            if now < end_at:
                c.send()
            else:
                sel.unregister(c.sock)
                c.sock.close()
        if not sel.get_map():
            break
    print(json.dumps({"lat": [round(x, 3) for x in lat], "errors": errors,
                      "error": first_error[0] if first_error else None}))


# -- the daemons ------------------------------------------------------------------------
def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


class Daemon:
    """One ``twistd sgcache`` process: on a shared socket (`sock`) or its own
    port; its admin listener on a port of its own."""

    def __init__(self, name: str, workdir: str, args: list[str], sock: socket.socket | None = None):
        from bench.reads import free_port

        self.name = name
        self.workdir = workdir
        self.args = args
        self.sock = sock
        self.port = sock.getsockname()[1] if sock is not None else free_port()
        self.admin = f"http://127.0.0.1:{free_port()}"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        from bench.reads import twistd

        self.starts += 1
        logfile = os.path.join(self.workdir, f"{self.name}.twistd.log")
        listen = ("systemd:domain=INET:index=0" if self.sock is not None
                  else f"tcp:{self.port}:interface=127.0.0.1")
        argv = twistd() + ["-n", "--pidfile=", f"--logfile={logfile}", "sgcache", *self.args,
                           f"--listen={listen}",
                           f"--admin-listen=tcp:{self.admin.rsplit(':', 1)[1]}:interface=127.0.0.1"]
        fds: list[int] = []
        if self.sock is not None:
            fds = [self.sock.fileno()]
            argv = [sys.executable, "-m", "sgcache.testing.socketlaunch", str(fds[0]), "--"] + argv
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SGCACHE_", "LISTEN_")) and k != "NOTIFY_SOCKET"}
        env["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
        out = open(os.path.join(self.workdir, f"{self.name}.out"), "ab")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     pass_fds=fds)
        out.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, timeout: float = 2.0) -> dict | None:
        try:
            return http_json(self.admin + "/status.json", timeout)
        except (OSError, ValueError):
            return None

    def serving(self) -> bool:
        st = self.status()
        return bool(st and st["sgcache"].get("serving") and st["types"]
                    and all(t["serving"] for t in st["types"]))

    def cpu_seconds(self) -> float | None:
        return proc_cpu(self.proc.pid) if self.alive and self.proc else None

    def kill9(self) -> None:
        if self.alive and self.proc:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self) -> None:
        if self.alive and self.proc:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def stop_all(daemons: list[Daemon]) -> None:
    for d in daemons:
        d.terminate()
    for d in daemons:
        d.wait()


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (all its threads), Linux."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_delta(before: list[float | None], after: list[float | None]) -> float | None:
    """CPU seconds spent between two samples of the same processes (None
    when one could not be read)."""
    if any(x is None for x in before + after):
        return None
    return sum(after) - sum(before)  # type: ignore[arg-type]


def pg_pids(db: str) -> list[int]:
    """The PostgreSQL backends serving database `db` (the daemons'
    connections), other than this query's own."""
    import psycopg2

    conn = psycopg2.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()")
            return [row[0] for row in cur.fetchall()]
    finally:
        conn.close()


def machine_busy() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, Linux."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def wait_for(what: str, ready: Any, daemons: list[Daemon], timeout: float) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for d in daemons:
            if not d.alive:
                raise SystemExit(f"{d.name} exited ({d.proc.returncode if d.proc else '?'}); "
                                 f"see {d.workdir}/{d.name}.twistd.log")
        value = ready()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out ({timeout:g} s) waiting for {what}")


def start_cluster(daemons: list[Daemon], timeout: float) -> None:
    """The first daemon alone until it serves (on a new store it creates the
    tables and loads the site), then the others; until all serve every type.
    (Several daemons started at once on a new, empty store race to create
    its tables: one can fail with a duplicate key on ``pg_type``.)"""
    daemons[0].start()
    wait_for(f"{daemons[0].name} to serve every type", daemons[0].serving, daemons[:1], timeout)
    for d in daemons[1:]:
        d.start()
    wait_for(f"{len(daemons)} daemons to serve every type", lambda: all(d.serving() for d in daemons), daemons,
             timeout)


def all_ready(daemons: list[Daemon]) -> bool:
    return all((d.status() or {}).get("ready", {}).get("ready") for d in daemons)


def daemon_args(opts: argparse.Namespace, site_url: str, db: str, extra: list[str]) -> list[str]:
    from bench.reads import SCHEMA_PATH
    from sgcache.testing.daemon import CACHE_SCRIPT

    return [f"--schema={SCHEMA_PATH}", f"--db={db}", f"--shotgun={site_url}",
            f"--script-name={CACHE_SCRIPT[0]}", f"--api-key={CACHE_SCRIPT[1]}", "--role=all",
            *([] if opts.answer_cache_mb is None else [f"--answer-cache-mb={opts.answer_cache_mb:g}"]), *extra]


def site_control(site_url: str, action: str, **args: Any) -> Any:
    from bench.reads import post

    return json.loads(post(f"{site_url}/_emulator/{action}", args))["result"]


def newest_event(sg: Any) -> int:
    row = sg.find_one("EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}])
    return int(row["id"]) if row else 0


def pct(values: list[float], p: float) -> float:
    from bench.reads import percentile

    return percentile(values, p) if values else float("nan")


# -- reads with N processes ---------------------------------------------------------------
def reads_round(opts: argparse.Namespace, n: int, site_url: str, db: str, workdir: str) -> dict[str, Any]:
    args = daemon_args(opts, site_url, db, ["--poll-interval=2"])
    sock = None
    if not opts.ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
    daemons = [Daemon(f"reads{n}-{i}", workdir, args, sock) for i in range(n)]
    try:
        t0 = time.time()
        start_cluster(daemons, opts.load_timeout)
        started = time.time() - t0
        try:
            wait_for("every daemon to be ready", lambda: all_ready(daemons), daemons, 30)
        except SystemExit:
            for d in daemons:
                st = d.status() or {}
                print(f"  !! {d.name} not ready after 30 s: {st.get('ready')}", flush=True)
        if sock is not None:
            urls = [daemons[0].url]
        else:
            urls = [d.url for d in daemons]
        start_at = time.time() + 2.0 + opts.clients * 0.02
        per_proc = [opts.clients // opts.client_procs + (1 if i < opts.clients % opts.client_procs else 0)
                    for i in range(opts.client_procs)]
        procs = []
        first = 0
        for threads in per_proc:
            if not threads:
                continue
            procs.append(subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "client", "--urls", ",".join(urls),
                 "--threads", str(threads), "--first", str(first), "--start-at", repr(start_at),
                 "--warmup", str(opts.warmup), "--seconds", str(opts.seconds), "--shots", str(opts.shots),
                 "--client-kind", opts.client_kind],
                cwd=ROOT, stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=ROOT)))
            first += threads
        measure_from = start_at + opts.warmup
        time.sleep(max(0.0, measure_from - time.time()))
        before = [d.status() or {} for d in daemons]
        backends = pg_pids(db)
        cpu0 = [d.cpu_seconds() for d in daemons]
        ccpu0 = [proc_cpu(p.pid) for p in procs]
        pcpu0 = {pid: proc_cpu(pid) for pid in backends}
        busy0 = machine_busy()
        time.sleep(max(0.0, measure_from + opts.seconds - time.time()))
        busy1 = machine_busy()
        cpu1 = [d.cpu_seconds() for d in daemons]
        ccpu1 = [proc_cpu(p.pid) for p in procs]
        pcpu1 = {pid: proc_cpu(pid) for pid in backends}
        after = [d.status() or {} for d in daemons]
        lat: list[float] = []
        errors = 0
        first_error = None
        for p in procs:
            out, _ = p.communicate(timeout=opts.seconds + opts.warmup + 300)
            if p.returncode != 0:
                raise SystemExit(f"a client process failed ({p.returncode})")
            got = json.loads(out.decode().strip().splitlines()[-1])
            lat += got["lat"]
            errors += got["errors"]
            first_error = first_error or got["error"]

        def delta(key: str) -> list[int]:
            return [(a.get("sgcache", {}).get(key) or 0) - (b.get("sgcache", {}).get(key) or 0)
                    for a, b in zip(after, before)]

        local, reused, passed = delta("reads_local"), delta("reads_reused"), delta("passthrough")

        def generation_reads(key: str) -> int:
            return sum((a.get("sgcache", {}).get("cluster", {}).get("generation_reads", {}).get(key) or 0)
                       - (b.get("sgcache", {}).get("cluster", {}).get("generation_reads", {}).get(key) or 0)
                       for a, b in zip(after, before))
        leaders = [i for i, st in enumerate(after) if st.get("sgcache", {}).get("cluster", {}).get("leading")]
        return {
            "n": n, "started": started, "reads": len(lat), "rate": len(lat) / opts.seconds,
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "errors": errors, "error": first_error,
            "local": local, "reused": reused, "passed": passed, "leaders": leaders,
            "generation_calls": generation_reads("calls"), "generation_queries": generation_reads("queries"),
            "daemon_cpu": [None if a is None or b is None else a - b for a, b in zip(cpu1, cpu0)],
            "client_cpu": cpu_delta(ccpu0, ccpu1),
            "pg_cpu": cpu_delta([pcpu0[p] for p in backends], [pcpu1[p] for p in backends]),
            "busy": None if not busy0 or not busy1 else (busy1[0] - busy0[0]) / (busy1[1] - busy0[1]),
        }
    finally:
        stop_all(daemons)
        if sock is not None:
            sock.close()


def report_reads(opts: argparse.Namespace, rounds: list[dict[str, Any]], cores: int) -> list[str]:
    print()
    mode = "one shared socket (socket activation)" if not opts.ports else "a port each, clients round robin"
    kind = "shotgun_api3 threads" if opts.client_kind == "shotgun" else "light: one selectors loop each"
    print(f"reads: {opts.clients} clients ({opts.client_procs} processes, {kind}), {opts.seconds:g} s after "
          f"{opts.warmup:g} s warm-up; {opts.shots} Shots / {opts.tasks} Tasks; daemons on {mode}")
    print(f"machine: {cores} cores (os.cpu_count()); the clients, the daemons, PostgreSQL and the emulator "
          "share them")
    head = (f"{'N':>2} {'reads/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'xN=1':>5} {'target':>6} {'ok':>3} "
            f"{'err':>4} {'pass':>4} {'reused':>6}  {'share/daemon':14} {'busy':>5} {'daemons':>7} "
            f"{'pg':>5} {'clients':>7} {'reads/daemon-cpu-s':>18}")
    print(head)
    print("-" * len(head))
    # each repetition's N=1 is the base of its own rounds (run side by side)
    bases = {r["rep"]: r["rate"] for r in rounds if r["n"] == 1}
    base = rounds[0]["rate"] if rounds and rounds[0]["n"] == 1 else None
    verdicts = []

    def cores_used(x: float | None) -> str:
        return "n/a" if x is None else f"{x / opts.seconds:.2f}c"

    by_n: dict[int, list[tuple[float, float]]] = {}
    for r in rounds:
        rep_base = bases.get(r["rep"])
        ratio = r["rate"] / rep_base if rep_base else float("nan")
        by_n.setdefault(r["n"], []).append((r["rate"], ratio))
        judged = r["n"] <= cores and rep_base is not None
        target = 0.8 * r["n"]
        ok = ("yes" if ratio >= target else "NO") if judged else "n/a"
        total_local = sum(r["local"]) or 1
        share = " ".join(f"{100 * x / total_local:.0f}{'*' if i in r['leaders'] else ''}"
                         for i, x in enumerate(r["local"]))
        reused = sum(r["reused"]) / total_local
        dcpu = None if None in r["daemon_cpu"] else sum(r["daemon_cpu"])
        per_cpu = "n/a" if not dcpu else f"{r['reads'] / dcpu:.0f}"
        print(f"{r['n']:>2} {r['rate']:>8.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {ratio:>5.2f} "
              f"{target:>5.1f}x {ok:>3} {r['errors']:>4} {sum(r['passed']):>4} {100 * reused:>5.0f}%  "
              f"{share:14} {fmt_pct(r['busy']):>5} {cores_used(dcpu):>7} {cores_used(r['pg_cpu']):>5} "
              f"{cores_used(r['client_cpu']):>7} {per_cpu:>18}")
        if r["generation_calls"]:
            print(f"   data generation reads (kept answers on a shared store): {r['generation_calls']} calls, "
                  f"{r['generation_queries']} queries ({r['generation_queries'] / max(1, r['reads']):.2f} a read)")
        if r["error"]:
            print(f"   first client error: {r['error']}")
    print("xN=1: reads/s over N=1's, target 0.8 x N (judged up to N = cores); err: client errors; pass: "
          "reads the daemons passed to the site in the window; reused: local reads answered from a kept "
          "answer; share/daemon: % of the local reads each daemon answered (* the leader); busy: the whole "
          "machine; daemons, pg (the store's backends), clients: cores each used over the window; "
          "reads/daemon-cpu-s: reads per CPU second the daemons spent (flat = the processes scale per core)")
    reps = len({r["rep"] for r in rounds})
    for n, pairs in by_n.items():
        rate = statistics.median(p[0] for p in pairs)
        ratio = statistics.median(p[1] for p in pairs)
        of = f" (median of {len(pairs)} runs: {', '.join(f'{p[1]:.2f}' for p in pairs)})" if reps > 1 else ""
        target = 0.8 * n
        if not bases:
            verdicts.append(f"reads N={n}: {rate:.0f}/s (no N=1 round to compare with)")
        elif n <= cores:
            verdicts.append(f"reads N={n}: {rate:.0f}/s = {ratio:.2f}x N=1{of} vs >= {target:.1f}x: "
                            f"{'met' if ratio >= target else 'NOT met'}")
        else:
            verdicts.append(f"reads N={n}: {rate:.0f}/s = {ratio:.2f}x N=1{of} (N > {cores} cores: not judged)")
    if (base is not None and rounds[0]["busy"] is not None and rounds[0]["busy"] > 0.8
            and any(r["n"] > 1 for r in rounds)):
        verdicts.append(f"note: the machine was already {fmt_pct(rounds[0]['busy'])} busy at N=1 (clients and "
                        "PostgreSQL on the same cores): more processes cannot add much here; "
                        "reads/daemon-cpu-s says whether each process keeps its per-core rate")
    return verdicts


def fmt_pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


# -- failover --------------------------------------------------------------------------------
class Writer(threading.Thread):
    """Steady updates at the site: Shot descriptions, each a change event."""

    def __init__(self, site_url: str, shots: int, rate: float):
        super().__init__(daemon=True)
        self.sg = shotgun(site_url)
        self.shots = shots
        self.rate = rate
        self.done = threading.Event()
        self.count = 0
        self.errors = 0
        self.error: str | None = None

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            k = self.count
            shot = 1 + (k * 7919) % self.shots  # a different Shot each time, spread out
            try:
                self.sg.update("Shot", shot, {"description": f"written {k}"})
            except Exception as e:  # noqa: BLE001
                self.errors += 1
                self.error = self.error or f"{type(e).__name__}: {str(e)[:200]}"
            self.count += 1
            self.done.wait(max(0.0, start + self.count / self.rate - time.monotonic()))

    def stop(self) -> None:
        self.done.set()
        self.join(30)
        self.sg.close()


def cluster(st: dict | None) -> dict:
    return (st or {}).get("sgcache", {}).get("cluster", {}) or {}


def parse_iso(text: str | None) -> float | None:
    import datetime

    if not text:
        return None
    return datetime.datetime.fromisoformat(text).timestamp()


def find_leader(daemons: list[Daemon], timeout: float) -> tuple[Daemon, dict]:
    found: list[tuple[Daemon, dict]] = []

    def one() -> bool:
        found.clear()
        for d in daemons:
            st = d.status()
            if st and cluster(st).get("leading"):
                found.append((d, st))
        return len(found) == 1 and found[0][1]["sgcache"].get("event_cursor") is not None

    wait_for("one leader with an event cursor", one, daemons, timeout)
    return found[0]


def failover(opts: argparse.Namespace, site_url: str, db: str, workdir: str) -> dict[str, Any]:
    args = daemon_args(opts, site_url, db, [f"--failover-seconds={opts.failover:g}", "--poll-interval=0.5",
                                            "--scan-interval=86400"])
    daemons = [Daemon(f"fail-{i}", workdir, args) for i in range(3)]
    direct = shotgun(site_url)
    site_control(site_url, "generate_events", enabled=True)
    writer = Writer(site_url, opts.shots, opts.write_rate)
    kills: list[dict[str, Any]] = []
    try:
        start_cluster(daemons, opts.load_timeout)
        find_leader(daemons, 60)
        writer.start()
        time.sleep(2.0)
        for k in range(opts.kills):
            # a steady cluster: every daemon ready (the leader has recorded its lag)
            wait_for("every daemon to be ready", lambda: all_ready(daemons), daemons, 120)
            leader, st = find_leader(daemons, 120)
            old_epoch = cluster(st).get("epoch") or 0
            others = [d for d in daemons if d is not leader]
            t_kill = time.time()
            leader.kill9()
            newest_at_kill = newest_event(direct)
            elected = resumed = None
            seen_at = None
            new: Daemon | None = None
            deadline = t_kill + opts.failover_timeout
            unready: set[str] = set()  # why survivors said not ready meanwhile (or did not answer)
            unready_for = {d.name: 0.0 for d in others}  # seconds each was seen not ready
            last_poll = t_kill
            # until the new leader syncs again and every survivor is ready
            while time.time() < deadline:
                now = time.time()
                step, last_poll = now - last_poll, now
                settled = True
                for d in others:
                    s = d.status(timeout=1.0)
                    if not s or not s.get("ready", {}).get("ready"):
                        unready.add(f"{d.name}: {(s or {}).get('ready', {}).get('reasons') or 'no answer'}")
                        unready_for[d.name] += step
                        settled = False
                    c = cluster(s)
                    if not c.get("leading") or (c.get("epoch") or 0) <= old_epoch:
                        continue
                    if new is None:
                        new = d
                        seen_at = time.time() - t_kill
                        since = parse_iso(c.get("leading_since"))
                        elected = since - t_kill if since is not None else seen_at
                    if d is new and resumed is None and (s["sgcache"].get("event_cursor") or 0) > newest_at_kill:
                        resumed = time.time() - t_kill
                if resumed is not None and settled:
                    break
                time.sleep(0.1)
            row = {"kill": k + 1, "killed": leader.name, "new": new.name if new else None,
                   "elected": elected, "seen": seen_at, "resumed": resumed, "old_epoch": old_epoch,
                   "unready": sorted(unready), "unready_s": max(unready_for.values())}
            # the killed one starts again: it rejoins as a follower
            leader.start()
            wait_for(f"{leader.name} to serve again", leader.serving, daemons, opts.load_timeout)
            c = cluster(leader.status())
            row["rejoined"] = f"{c.get('role')}, {'leading' if c.get('leading') else 'follower'}"
            kills.append(row)
            fmt = lambda x: "none" if x is None else f"{x:.2f} s"  # noqa: E731
            print(f"  kill {k + 1}: {row['killed']} (epoch {old_epoch}) -> {row['new']}: elected "
                  f"{fmt(elected)} (seen {fmt(seen_at)}), sync resumed {fmt(resumed)}; "
                  f"{leader.name} rejoined as {row['rejoined']}", flush=True)
            for line in row["unready"]:
                print(f"    !! not ready during the failover: {line}", flush=True)
            time.sleep(1.0)
        writer.stop()
        newest = newest_event(direct)
        t0 = time.time()
        leader, _ = find_leader(daemons, 60)
        wait_for(f"the leader's event cursor to reach {newest}", lambda: (
            ((leader.status() or {}).get("sgcache", {}).get("event_cursor") or 0) >= newest), daemons, 120)
        catch_up = time.time() - t0
        want = {row["id"]: row["description"] for row in direct.find("Shot", [], ["description"])}
        lost: dict[str, int] = {}
        passed: dict[str, int] = {}
        missing: set[int] = set()
        for d in daemons:
            sg = shotgun(d.url)
            sg.find_one("Project", [])  # the site vouches for the script
            before = (d.status() or {}).get("sgcache", {}).get("passthrough") or 0
            got = {row["id"]: row["description"] for row in sg.find("Shot", [], ["description"])}
            after = (d.status() or {}).get("sgcache", {}).get("passthrough") or 0
            sg.close()
            bad = {i for i in want if got.get(i) != want[i]} | (set(got) - set(want))
            missing |= bad
            lost[d.name] = len(bad)
            passed[d.name] = after - before
        return {"kills": kills, "writes": writer.count, "write_errors": writer.errors,
                "write_error": writer.error, "newest": newest, "catch_up": catch_up,
                "lost": lost, "lost_any": len(missing), "passed": passed, "shots": len(want),
                "sample": sorted(missing)[:5]}
    finally:
        if writer.is_alive():
            writer.stop()
        direct.close()
        stop_all(daemons)


def report_failover(opts: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    kills = out["kills"]
    print()
    print(f"failover: {len(kills)} leader kills (kill -9) among 3 daemons, --failover-seconds {opts.failover:g}, "
          f"--poll-interval 0.5; writer {opts.write_rate:g} updates/s at the site")
    print(f"{'kill':>4} {'killed':>8} {'new leader':>10} {'elected s':>9} {'seen s':>7} {'resumed s':>9} "
          f"{'unready s':>9}  rejoined as")
    for r in kills:
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        print(f"{r['kill']:>4} {r['killed']:>8} {str(r['new']):>10} {f(r['elected']):>9} {f(r['seen']):>7} "
              f"{f(r['resumed']):>9} {f(r['unready_s']):>9}  {r['rejoined']}")
    elected = [r["elected"] if r["elected"] is not None else math.inf for r in kills]
    resumed = [r["resumed"] if r["resumed"] is not None else math.inf for r in kills]
    print("elected: the new leader's leading_since - the kill; seen: when the bench saw it (0.1 s polls); "
          "resumed: until it applied an event made after the kill; unready: the longest a survivor "
          "answered ready.ready false (/readyz 503) after the kill (0.1 s polls)")
    unready = sum(1 for r in kills if r["unready"])
    print(f"survivors ready (/status.json ready.ready) throughout: {len(kills) - unready} of {len(kills)} failovers"
          + (f"; longest unready {max(r['unready_s'] for r in kills):.2f} s" if unready else ""))
    print(f"writes at the site: {out['writes']} ({out['write_errors']} failed"
          f"{': ' + out['write_error'] if out['write_error'] else ''}); newest event {out['newest']}; "
          f"leader caught up {out['catch_up']:.1f} s after the writer stopped")
    print("Shots differing from the site, read through each daemon (lost events): " + ", ".join(
        f"{k} {v} (passed through {out['passed'][k]})" for k, v in out["lost"].items())
        + f"; {out['lost_any']} of {out['shots']} in all" + (f", e.g. ids {out['sample']}" if out["sample"] else ""))
    verdicts = []
    if kills:
        worst, med = max(elected), statistics.median(elected)
        rworst, rmed = max(resumed), statistics.median(resumed)
        print(f"failover (elected): max {worst:.2f} s, median {med:.2f} s; sync resumed: max {rworst:.2f} s, "
              f"median {rmed:.2f} s")
        verdicts.append(f"failover max {worst:.2f} s (median {med:.2f} s) vs <= 10 s: "
                        f"{'met' if worst <= 10 else 'NOT met'}; sync resumed max {rworst:.2f} s "
                        f"(median {rmed:.2f} s)")
    verdicts.append(f"lost events {out['lost_any']} vs 0: {'met' if out['lost_any'] == 0 else 'NOT met'}")
    return verdicts


# -- the run ------------------------------------------------------------------------------
def run(opts: argparse.Namespace) -> None:
    from bench.reads import Servers, build_items, make_pg_database, seed_site, start_site
    from sgcache.testing.pg import base_url

    cores = os.cpu_count() or 1
    workdir = tempfile.mkdtemp(prefix="sgcache-scale-")
    print(f"servers log to {workdir}; machine: {cores} cores", flush=True)
    servers = Servers(workdir)
    drop = None
    try:
        site_url = start_site(servers)
        t0 = time.time()
        seed_site(site_url, build_items(opts.shots, opts.tasks, 0))
        print(f"seeded the emulator with {opts.shots} Shots, {opts.tasks} Tasks in {time.time() - t0:.1f} s",
              flush=True)
        db, drop = make_pg_database(opts.pg or base_url())
        verdicts: list[str] = []
        if not opts.skip_reads:
            rounds = []
            for rep, n in [(rep, int(x)) for rep in range(opts.repeat) for x in opts.processes.split(",")]:
                r = reads_round(opts, n, site_url, db, workdir)
                r["rep"] = rep
                rounds.append(r)
                print(f"  N={n}: {r['rate']:.0f} reads/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms "
                      f"({r['errors']} errors; daemons serving after {r['started']:.1f} s)", flush=True)
            verdicts += report_reads(opts, rounds, cores)
        if not opts.skip_failover and opts.kills > 0:
            print(flush=True)
            print(f"failover: {opts.kills} kills...", flush=True)
            verdicts += report_failover(opts, failover(opts, site_url, db, workdir))
        print()
        print(f"summary ({cores} cores):")
        for v in verdicts:
            print(f"  {v}")
    finally:
        servers.stop()
        if drop is not None:
            drop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", nargs="?", default="run", choices=["run", "client"], help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 500 Shots / 2000 Tasks, processes 1,2, 3 s, 2 kills")
    p.add_argument("--shots", type=int, default=None, help="Shots at the site (5000)")
    p.add_argument("--tasks", type=int, default=None, help="Tasks at the site (20000)")
    p.add_argument("--processes", default=None, help="serving processes per round (1,2,4)")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (threads)")
    p.add_argument("--client-procs", type=int, default=None,
                   help="processes the clients run in (5; --client-kind light: 1)")
    p.add_argument("--client-kind", choices=["shotgun", "light"], default="shotgun",
                   help="shotgun: threads with a shotgun_api3.Shotgun each; light: the same requests "
                        "(recorded from shotgun_api3) sent from one selectors loop, answers not decoded")
    p.add_argument("--seconds", type=float, default=None, help="timed seconds per round (10)")
    p.add_argument("--warmup", type=float, default=None, help="untimed seconds before (3)")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="run the --processes rounds K times over (each N=1 the base of its own run); the "
                        "summary gives the median ratio per N (a noisy machine)")
    p.add_argument("--answer-cache-mb", type=float, default=None, metavar="MB",
                   help="the daemons' --answer-cache-mb (0: no kept answers, every read planned and read "
                        "from the store: the per-process cost alone, without the kept answers N processes "
                        "split between them)")
    p.add_argument("--ports", action="store_true", help="a port per daemon instead of one shared socket")
    p.add_argument("--kills", type=int, default=None, help="leader kills (10)")
    p.add_argument("--failover", type=float, default=10.0, help="the daemons' --failover-seconds")
    p.add_argument("--failover-timeout", type=float, default=120.0, help="give up on a failover after this")
    p.add_argument("--write-rate", type=float, default=10.0, help="updates a second at the site while killing")
    p.add_argument("--load-timeout", type=float, default=600.0)
    p.add_argument("--skip-reads", action="store_true")
    p.add_argument("--skip-failover", action="store_true")
    p.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    # the client processes'
    p.add_argument("--urls", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    quick = dict(shots=500, tasks=2000, processes="1,2", seconds=3.0, warmup=1.0, kills=2)
    full = dict(shots=5000, tasks=20000, processes="1,2,4", seconds=10.0, warmup=3.0, kills=10)
    if opts.client_procs is None:
        opts.client_procs = 1 if opts.client_kind == "light" else 5
    for key, value in (quick if opts.quick else full).items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    return opts


def main() -> None:
    opts = parse()
    if opts.mode == "client":
        (light_client_process if opts.client_kind == "light" else client_process)(opts)
    else:
        run(opts)


if __name__ == "__main__":
    main()
