"""Several processes on one machine, end to end: two real `twistd sgcache`
daemons on one PostgreSQL store share ONE listening TCP socket, handed to
each the way systemd's socket activation hands it over (fd 3, LISTEN_FDS,
LISTEN_PID; `sgcache.testing.socketlaunch`), with the ``--listen`` string
of `contrib/sgcache@.service`. Both accept connections on the one port
(each one's own admin listener counts the reads it answered), every read
through the port is answered right, and SIGTERM stops both cleanly.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(ROOT, "contrib", "sgcache@.service")

SCHEMA_YAML = """\
entities:
  Shot:
    fields: {code: text, sg_cut_in: number}
"""

SHOTS = [{"type": "Shot", "id": n, "fields": {"code": f"sh{n:03d}", "sg_cut_in": n * 10}} for n in range(1, 26)]


def template_option(name: str) -> str:
    """The value of `--name` in the template unit's ExecStart."""
    for line in open(TEMPLATE):
        if line.startswith("ExecStart="):
            words = shlex.split(line.partition("=")[2])
            return words[words.index(name) + 1]
    raise AssertionError(f"no ExecStart in {TEMPLATE}")


class Daemon:
    """One `twistd sgcache` process started on an inherited socket; its
    log (stdout and stderr) read in a thread."""

    def __init__(self, sock: socket.socket, args: list[str]):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SGCACHE_", "LISTEN_")) and k != "NOTIFY_SOCKET"}
        env["PYTHONPATH"] = ROOT
        twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                  "--nodaemon", "--pidfile=", "--logfile=-", "sgcache"]
        launcher = [sys.executable, "-m", "sgcache.testing.socketlaunch", str(sock.fileno()), "--"]
        self.proc = subprocess.Popen(launcher + twistd + args, cwd=ROOT, env=env, pass_fds=[sock.fileno()],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        #: its admin listener's base URL (from its log)
        self.admin = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> re.Match | None:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    async def wait_for(self, pattern: str, seconds: float = 30.0) -> re.Match:
        deadline = time.monotonic() + seconds
        while True:
            match = self.find(pattern)
            if match:
                return match
            if self.proc.poll() is not None:
                await deferToThread(self.reader.join, 5)
                raise AssertionError(f"twistd sgcache ended ({self.proc.returncode}) before {pattern!r}:\n{self.log}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in {seconds:g} s:\n{self.log}")
            await task.deferLater(reactor, 0.1, lambda: None)

    def reads_answered(self) -> tuple[int, int]:
        """(RPC reads this process answered, those answered from the store)
        from its own admin listener's ``sgcache_requests_total``."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as response:
            text = response.read().decode()
        reads = [line for line in text.splitlines()
                 if line.startswith("sgcache_requests_total{") and 'method="read"' in line]
        count = lambda lines: int(sum(float(line.rsplit(" ", 1)[1]) for line in lines))  # noqa: E731
        return count(reads), count(line for line in reads if 'outcome="local"' in line or 'outcome="reused"' in line)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class SharedSocketTests(unittest.TestCase):
    timeout = 90

    async def test_two_daemons_serve_one_socket(self):
        schema_path = os.path.abspath(self.mktemp()) + ".yml"
        with open(schema_path, "w") as fh:
            fh.write(SCHEMA_YAML)
        site = await start_emulator(Schema.load(schema_path), scripts=dict([CACHE_SCRIPT, ("farm", "key")]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        site.emulator.seed(SHOTS)
        db = await fresh_postgres_url(self)

        # the one client port, held here as systemd holds sgcache.socket's
        shared = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(shared.close)
        shared.bind(("127.0.0.1", 0))
        shared.listen(128)
        port = shared.getsockname()[1]
        listen = template_option("--listen")
        self.assertEqual(listen, "systemd:domain=INET:index=0")

        args = ["--shotgun", site.url, "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1],
                "--schema", schema_path, "--db", db, "--listen", listen,
                "--admin-listen", "tcp:0:interface=127.0.0.1", "--poll-interval", "3600"]
        daemons: list[Daemon] = []

        async def start() -> Daemon:
            daemon = Daemon(shared, args)
            daemons.append(daemon)
            self.addCleanup(daemon.kill)
            # the inherited socket is the one it serves on
            await daemon.wait_for(rf"serving the Shotgun API on 127\.0\.0\.1:{port}\b")
            admin = await daemon.wait_for(r"admin listener on 127\.0\.0\.1:(\d+)")
            daemon.admin = f"http://127.0.0.1:{admin.group(1)}"
            # (the first syncs and loads the store; the second, elected or
            # not, finds it loaded)
            await daemon.wait_for("store loaded.*; serving reads from the cache")
            return daemon

        # one after the other: the first loads the store, the second finds
        # it loaded (one process of the two syncs: `sgcache.store.leadership`)
        first = await start()
        second = await start()
        self.assertNotEqual(first.proc.pid, second.proc.pid)
        self.assertEqual([first.reads_answered(), second.reads_answered()], [(0, 0), (0, 0)])

        expected = [{"type": "Shot", "id": s["id"], "code": s["fields"]["code"]} for s in SHOTS]
        url = f"http://127.0.0.1:{port}"

        def one_read(n: int) -> list:
            # a new client: a new connection to the shared port
            sg = client(url, "farm", "key", timeout_secs=20)
            try:
                return sg.find("Shot", [], ["code"], order=[{"field_name": "id", "direction": "asc"}])
            finally:
                sg.close()

        def until_both_answered() -> tuple[int, list[tuple[int, int]]]:
            """Batches of concurrent new connections until each process
            has answered reads from the store (the kernel picks which one
            accepts; a process's first reads of a script pass through
            while the site vouches for its key)."""
            made = 0
            deadline = time.monotonic() + 20
            with ThreadPoolExecutor(8) as pool:
                while True:
                    for result in pool.map(one_read, range(16)):
                        self.assertEqual(result, expected)
                        made += 1
                    counts = [first.reads_answered(), second.reads_answered()]
                    if all(local for _, local in counts) or time.monotonic() > deadline:
                        return made, counts

        made, counts = await deferToThread(until_both_answered)
        self.assertTrue(all(local for _, local in counts),
                        f"not both processes answered reads from the store: (reads, local) {counts} of {made}")
        # every read through the port was answered by one of the two
        self.assertEqual(sum(reads for reads, _ in counts), made)

        # SIGTERM: each stops cleanly (twistd ends a clean stop by the signal)
        for daemon in daemons:
            daemon.proc.send_signal(signal.SIGTERM)
        for daemon in daemons:
            code = await deferToThread(daemon.proc.wait, 30)
            await deferToThread(daemon.reader.join, 10)
            self.assertIn(code, (0, -signal.SIGTERM), daemon.log)
            self.assertIn("Server Shut Down.", daemon.log)
            self.assertNotIn("Traceback", daemon.log)
