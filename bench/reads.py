"""Read latency benchmark: the real shotgun_api3 client against
(a) the floor -- a trivial Klein endpoint answering a canned body of the same
    size (client + HTTP + JSON cost, nothing else),
(b) sgcache (SQLite and PostgreSQL stores) in front of the emulator,
(c) the emulator directly,
for a fixed set of typical pipeline queries; prints p50/p90 per query and
the ratios b/a (cache overhead over the floor) and c/b (speed-up over the
site stand-in).

    PYTHONPATH=. python bench/reads.py                 # 10k shots / 30k tasks / 20k versions
    PYTHONPATH=. python bench/reads.py --full          # 100k / 300k / 200k (the issue's size)
    PYTHONPATH=. python bench/reads.py --stores sqlite --iterations 50

Everything runs in one process on one reactor (the clients in threads).
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
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from klein import Klein
from twisted.internet import defer, endpoints, task
from twisted.internet.threads import deferToThread
from twisted.web.server import Site

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from sgcache.schema import Schema  # noqa: E402
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon  # noqa: E402
from sgcache.testing.harness import client, start_emulator  # noqa: E402
from sgcache.testing.pg import _admin, base_url  # noqa: E402

USER = ("bench", "bench-key")
NOW = datetime.datetime(2024, 3, 31, 12, 0, 0)


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


def queries(shots: int) -> list[tuple[str, str, tuple, dict]]:
    mid = shots // 2
    return [
        ("find one by code", "find_one", ("Shot", [["code", "is", f"sh{mid:06d}"]], ["code", "sg_status_list"]), {}),
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


class Floor:
    """A Klein endpoint answering `info` and one canned body for everything."""

    app = Klein()

    def __init__(self, info: bytes):
        self.info = info
        self.body = b'{"results": null}'

    @app.route("/api3/json", methods=["POST"])
    def rpc(self, request: Any) -> bytes:
        payload = json.loads(request.content.read())
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return self.info if payload.get("method_name") == "info" else self.body


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def timed(sg: Any, method: str, args: tuple, kwargs: dict, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        getattr(sg, method)(*args, **kwargs)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def fresh_pg(base: str) -> str:
    name = f"sgcache_bench_{secrets.token_hex(4)}"
    await _admin(base, f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                       "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    return name


async def main(reactor: Any, opts: argparse.Namespace) -> None:
    schema = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))
    shots, tasks, versions = (100_000, 300_000, 200_000) if opts.full else (opts.shots, opts.tasks, opts.versions)
    print(f"building {shots} shots, {tasks} tasks, {versions} versions...", flush=True)
    t0 = time.time()
    site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT, USER]), page_size=500)
    site.emulator.set_clock(NOW)
    site.emulator.seed(build_items(shots, tasks, versions))
    print(f"  seeded the emulator in {time.time() - t0:.1f}s", flush=True)

    probe = client(site.url, *USER, timeout_secs=600)
    info = json.dumps(await deferToThread(probe.info)).encode()
    probe.close()
    floor = Floor(info)
    port = await endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(floor.app.resource()))
    floor_url = f"http://127.0.0.1:{port.getHost().port}"

    results: dict[str, dict[str, list[float]]] = {}
    bodies: dict[str, bytes] = {}
    for store in opts.stores.split(","):
        if store == "sqlite":
            path = os.path.abspath(f"bench-{secrets.token_hex(3)}.sqlite")
            url, cleanup = "sqlite:///" + path, lambda p=path: [os.remove(x) for x in (p, p + "-wal", p + "-shm")
                                                                  if os.path.exists(x)]
        else:
            base = opts.pg or base_url()
            name = await fresh_pg(base)
            url = urlunsplit(urlsplit(base)._replace(path="/" + name))

            async def cleanup(base=base, name=name) -> None:
                await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        t0 = time.time()
        daemon = await start_daemon(schema, site.url, url)
        daemon.cache.now = site.emulator.now
        print(f"  {store}: loaded the cache in {time.time() - t0:.1f}s", flush=True)
        # fresh clients: the servers drop connections idle during the load
        sg = client(daemon.url, *USER, timeout_secs=600)
        direct = client(site.url, *USER, timeout_secs=600)
        floor_sg = client(floor_url, *USER)
        await deferToThread(sg.find_one, "Project", [])  # vouch for the script
        print(f"  {store}: timing...", flush=True)
        try:
            for label, method, args, kwargs in queries(shots):
                reads = site.emulator.counters().get("read", 0)
                via = await deferToThread(getattr(sg, method), *args, **kwargs)
                local = site.emulator.counters().get("read", 0) == reads
                want = await deferToThread(getattr(direct, method), *args, **kwargs)
                if via != want:
                    print(f"  !! {label}: the cache's answer differs from the site's", flush=True)
                if not local:
                    print(f"  !! {label}: passed through ({dict(daemon.cache.passthrough_reasons)})", flush=True)
                n = opts.iterations
                results.setdefault(label, {})[store] = await deferToThread(timed, sg, method, args, kwargs, n)
                if label not in results or "site" not in results[label]:
                    results[label]["site"] = await deferToThread(
                        timed, direct, method, args, kwargs, max(3, n // 3))
                # the floor answers with the body the cache sent for this query
                if label not in bodies:
                    answer = await daemon.cache.handle(
                        "read", {"script_name": USER[0], "script_key": USER[1]},
                        _read_args(sg, method, args, kwargs), b"", None)
                    bodies[label] = json.dumps(answer).encode()
                floor.body = bodies[label]
                if "floor" not in results[label]:
                    results[label]["floor"] = await deferToThread(timed, floor_sg, method, args, kwargs, n)
                print(f"    {label}: {store} p50 {percentile(results[label][store], 0.5):.2f} ms", flush=True)
        finally:
            for c in (sg, direct, floor_sg):
                c.close()
            await daemon.stop()
            res = cleanup()
            if isinstance(res, defer.Deferred) or hasattr(res, "__await__"):
                await res

    await port.stopListening()
    await site.stop()
    report(results, opts.stores.split(","), shots, tasks, versions, opts.iterations)


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
    head += f" {'emulator (c)':>15}" + "".join(f" {'c/b ' + s[:2]:>7}" for s in stores)
    print(head)
    print("-" * len(head))
    for label, by in results.items():
        line = f"{label:26} {ms(by['floor']):>15}"
        for s in stores:
            line += f" {ms(by[s]):>15} {statistics.median(by[s]) / statistics.median(by['floor']):5.1f}"
        line += f" {ms(by['site']):>15}"
        for s in stores:
            line += f" {statistics.median(by['site']) / statistics.median(by[s]):7.1f}"
        print(line)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shots", type=int, default=10_000)
    p.add_argument("--tasks", type=int, default=30_000)
    p.add_argument("--versions", type=int, default=20_000)
    p.add_argument("--full", action="store_true", help="the issue's size: 100k / 300k / 200k")
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--stores", default="sqlite,postgresql")
    p.add_argument("--pg", default=None, help="PostgreSQL server URL (a throw-away database is created)")
    return p.parse_args()


if __name__ == "__main__":
    options = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
