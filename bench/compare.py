"""Run a benchmark of this checkout beside the same benchmark of an older
commit, alternating, and print the medians side by side: whether a change
made anything slower.

    PYTHONPATH=. python bench/compare.py --rev ffef9f6 sync.py
    PYTHONPATH=. python bench/compare.py --rev ffef9f6 --rounds 3 reads.py --iterations 20

The older commit is checked out as a git worktree in a temporary directory;
each round runs its own ``bench/SCRIPT`` (with the arguments given after the
script's name) and then this checkout's, so both see the same machine load
over the run. Figures are read from what the scripts print:

* ``sync.py``: its ``store=... | key=value | ...`` lines (rates, RSS);
* ``reads.py``: its per-query progress lines (``label: floor p50 X ms,
  sqlite p50 Y ms, ...``), as each daemon's p50 and its p50 over the floor's
  in the same run (b/a: the ratio that cancels most of the machine's noise).

Each figure is printed as the median over the rounds, old and new, and
new/old.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(tree: str, script: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=tree)
    proc = subprocess.run([sys.executable, os.path.join(tree, "bench", script), *args], cwd=tree, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{script} in {tree} failed:\n{proc.stdout[-3000:]}")
    return proc.stdout


def figures(script: str, output: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if script == "sync.py":
        for line in output.splitlines():
            if not line.startswith("store="):
                continue
            pairs = dict(part.strip().split("=", 1) for part in line.split("|"))
            store = pairs.pop("store")
            for key, value in pairs.items():
                try:
                    out[f"{store} {key}"] = float(value)
                except ValueError:
                    pass
    elif script == "reads.py":
        for line in output.splitlines():
            match = re.match(r"^\s{4}(.+?): (floor p50 .*)$", line)
            if not match:
                continue
            label, rest = match.groups()
            p50 = {name: float(ms) for name, ms in re.findall(r"(\w+) p50 ([0-9.]+) ms", rest)}
            for name, ms in p50.items():
                if name in ("floor", "site"):
                    continue
                out[f"{label} | {name} p50 ms"] = ms
                if p50.get("floor"):
                    out[f"{label} | {name} b/a"] = ms / p50["floor"]
    else:
        raise SystemExit(f"no figures known for {script}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the older commit")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("script", choices=["sync.py", "reads.py"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sgcache-compare-")
    tree = os.path.join(workdir, "old")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", tree, opts.rev], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old: dict[str, list[float]] = {}
    new: dict[str, list[float]] = {}
    try:
        for round_ in range(opts.rounds):
            for name, where, into in (("old", tree, old), ("new", ROOT, new)):
                print(f"round {round_ + 1}/{opts.rounds}: {name} ({opts.rev if name == 'old' else 'this checkout'})",
                      flush=True)
                for key, value in figures(opts.script, run(where, opts.script, opts.args)).items():
                    into.setdefault(key, []).append(value)
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", tree], check=False)
        shutil.rmtree(workdir, ignore_errors=True)
    report(opts, old, new)


def report(opts: Any, old: dict[str, list[float]], new: dict[str, list[float]]) -> None:
    print()
    print(f"{opts.script} {' '.join(opts.args)}: medians over {opts.rounds} rounds, {opts.rev} (old) vs this checkout (new)")
    width = max((len(k) for k in old), default=10)
    print(f"{'figure':{width}} {'old':>12} {'new':>12} {'new/old':>8}")
    print("-" * (width + 35))
    for key in sorted(set(old) & set(new)):
        a, b = statistics.median(old[key]), statistics.median(new[key])
        ratio = f"{b / a:8.2f}" if a else "     n/a"
        print(f"{key:{width}} {a:12.2f} {b:12.2f} {ratio}")


if __name__ == "__main__":
    main()
