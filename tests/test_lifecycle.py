"""The daemon's life as systemd and an operator see it: a real `twistd
sgcache` that cannot start exits non-zero with one line naming the option
or resource (a store that cannot be opened, a port in use, an unwritable
access log); ``Type=notify`` readiness and stopping on ``$NOTIFY_SOCKET``;
and a stop that ends in bounded time while the site and PostgreSQL stop
answering mid-stop (both hang: the worst case for a stop), with every
connection closed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.protocols import portforward
from twisted.trial import unittest
from urllib.parse import urlsplit, urlunsplit

from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCHEMA_YAML = """\
entities:
  Project:
    fields: {name: text}
  Shot:
    fields: {code: text, sg_cut_in: number, project: {type: entity, entity_types: [Project]}}
"""

SITE_YAML = SCHEMA_YAML + """\
  Asset:
    fields: {code: text}
"""


def write(path: str, text: str) -> str:
    with open(path, "w") as fh:
        fh.write(text)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def twistd(args: list[str], env_extra: dict | None = None, **popen: object) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_") and k != "NOTIFY_SOCKET"}
    env["PYTHONPATH"] = ROOT
    env.update(env_extra or {})
    # twistd itself, as the systemd unit runs it
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    return subprocess.Popen(command + ["--nodaemon", "--pidfile=", "--logfile=-", "sgcache"] + args,
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **popen)


class StartFailureTests(unittest.TestCase):
    """Each failure: exit status not 0, one line on stderr naming it."""

    def base_args(self, schema_path: str, db: str) -> list[str]:
        return ["--shotgun", "http://127.0.0.1:9", "--script-name", "cache", "--api-key", "k",
                "--schema", schema_path, "--db", db, "--admin-listen", "", "--listen",
                f"tcp:{free_port()}:interface=127.0.0.1"]

    async def failed(self, args: list[str]) -> tuple[int, list[str]]:
        """Run twistd; its exit status and stderr's lines (the log, on
        stdout, holds the same line and no traceback)."""
        proc = twistd(args)
        try:
            out, err = await deferToThread(proc.communicate, timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            self.fail("twistd sgcache kept running after a start-up failure")
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertNotEqual(proc.returncode, 0)
        self.assertNotIn("Traceback", out + err)
        self.assertEqual(len(lines), 1, out + err)
        return proc.returncode, lines

    async def test_a_store_that_cannot_be_opened(self):
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        _, lines = await self.failed(self.base_args(schema, "sqlite:////nonexistent-dir/sub/x.sqlite"))
        self.assertTrue(lines[0].startswith("sgcache: --db: cannot open the store"), lines)

    async def test_a_sqlite_file_that_is_not_a_store(self):
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        junk = write(os.path.abspath(self.mktemp()) + ".sqlite", "this is not a database\n" * 100)
        _, lines = await self.failed(self.base_args(schema, "sqlite:///" + junk))
        self.assertTrue(lines[0].startswith("sgcache: --db: cannot open the store"), lines)

    async def test_a_postgresql_server_that_cannot_be_reached(self):
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        _, lines = await self.failed(self.base_args(schema, f"postgresql://postgres@127.0.0.1:{free_port()}/nope"))
        self.assertTrue(lines[0].startswith("sgcache: --db: cannot open the store: cannot connect to PostgreSQL"),
                        lines)

    async def test_a_second_daemon_on_the_same_sqlite_file(self):
        """SQLite is one process: a second daemon on the file is refused
        with one line naming the first; a killed daemon leaves no lock."""
        from sgcache.store.onedaemon import DaemonLock

        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        db = os.path.abspath(self.mktemp()) + ".sqlite"
        first = twistd(self.base_args(schema, "sqlite:///" + db))
        self.addCleanup(lambda: first.poll() is None and first.kill())
        lock_file = db + ".lock"
        for _ in range(300):
            if os.path.exists(lock_file) and open(lock_file).read().strip() == str(first.pid):
                break
            self.assertIsNone(first.poll(), "the first daemon ended")
            await task.deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("the first daemon never took the file's lock")
        _, lines = await self.failed(self.base_args(schema, "sqlite:///" + db))
        self.assertEqual(lines, [f"sgcache: --db: another sgcache daemon (pid {first.pid}) serves this SQLite "
                                 f"file; SQLite is one process only (to run several, use PostgreSQL)"])
        first.kill()  # -9: the kernel drops the lock
        await deferToThread(first.communicate, timeout=30)
        lock = DaemonLock(db)
        lock.acquire()
        lock.release()

    async def test_a_role_other_than_all_on_sqlite(self):
        """SQLite is one process doing everything: --role web or sync is
        refused with one line."""
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        db = os.path.abspath(self.mktemp()) + ".sqlite"
        for role in ("web", "sync"):
            _, lines = await self.failed(self.base_args(schema, "sqlite:///" + db) + ["--role", role])
            self.assertEqual(lines, [f"sgcache: --role {role}: SQLite takes one daemon doing everything "
                                     "(--role all); roles are for several daemons on one PostgreSQL store"])

    async def test_a_port_in_use(self):
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        args = self.base_args(schema, "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite")
        args[-1] = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
        _, lines = await self.failed(args)
        self.assertTrue(lines[0].startswith("sgcache: --listen: cannot listen on tcp:"), lines)
        # the admin port too
        args = self.base_args(schema, "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite")
        args[args.index("--admin-listen") + 1] = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
        _, lines = await self.failed(args)
        self.assertTrue(lines[0].startswith("sgcache: --admin-listen: cannot listen on tcp:"), lines)

    async def test_an_access_log_that_cannot_be_written(self):
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        args = self.base_args(schema, "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite")
        code, lines = await self.failed(args + ["--access-log", "/nonexistent-dir/access.log"])
        self.assertEqual(code, 2)
        self.assertTrue(lines[0].startswith("sgcache: --access-log: cannot write /nonexistent-dir/access.log"),
                        lines)


class NotifyTests(unittest.TestCase):
    async def test_ready_and_stopping_reach_systemd(self):
        await self.ready_and_stopping(lambda path: "sqlite:///" + os.path.join(path, "s.sqlite"))

    async def test_ready_and_stopping_reach_systemd_on_postgresql(self):
        """(On PostgreSQL the daemon stands for election first: READY is
        sent all the same, as soon as it listens.)"""
        db = await fresh_postgres_url(self)
        await self.ready_and_stopping(lambda path: db)

    async def ready_and_stopping(self, store: Any) -> None:
        site_schema = Schema.load(write(os.path.abspath(self.mktemp()) + ".yml", SITE_YAML))
        site = await start_emulator(site_schema, scripts=dict([CACHE_SCRIPT]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        schema = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        path = tempfile.mkdtemp(prefix="sgn", dir="/tmp")  # AF_UNIX paths are short
        self.addCleanup(shutil.rmtree, path, True)
        address = os.path.join(path, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(60)
        self.addCleanup(sock.close)
        proc = twistd(["--shotgun", site.url, "--script-name", CACHE_SCRIPT[0], "--api-key", CACHE_SCRIPT[1],
                       "--schema", schema, "--db", store(path),
                       "--listen", f"tcp:{free_port()}:interface=127.0.0.1", "--admin-listen", "",
                       "--poll-interval", "3600"], {"NOTIFY_SOCKET": address})
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        received: list[str] = []

        def receive_until(word: str) -> None:
            while not any(word in message for message in received):
                received.append(sock.recv(4096).decode())

        await deferToThread(receive_until, "READY=1")
        self.assertIsNone(proc.poll())
        proc.send_signal(signal.SIGTERM)
        await deferToThread(receive_until, "STOPPING=1")
        code = await deferToThread(proc.wait, 30)
        # twistd ends a clean SIGTERM stop by the signal itself (systemd
        # counts that as a clean stop)
        self.assertIn(code, (0, -signal.SIGTERM))
        self.assertIn("Server Shut Down.", proc.stdout.read())
        self.assertTrue(received[0].startswith("READY=1\nSTATUS=listening"), received)


class _Freezable(portforward.ProxyFactory):
    """A TCP proxy to PostgreSQL that can stop passing bytes (a server that
    hangs) and drop every connection (a server killed)."""

    def __init__(self, host: str, port: int):
        super().__init__(host, port)
        self.servers: list[portforward.ProxyServer] = []

    def buildProtocol(self, addr):  # type: ignore[no-untyped-def]
        proto = super().buildProtocol(addr)
        self.servers.append(proto)
        return proto

    def freeze(self) -> None:
        for server in self.servers:
            server.transport.pauseProducing()
            if server.peer is not None:
                server.peer.transport.pauseProducing()

    def open_connections(self) -> int:
        return sum(1 for s in self.servers if s.transport.connected)

    def kill(self) -> None:
        for server in self.servers:
            server.transport.abortConnection()


class BoundedStopTests(unittest.TestCase):
    timeout = 120

    async def start(self, store_url: str, stop_timeout: float = 3.0):
        path = write(os.path.abspath(self.mktemp()) + ".yml", SCHEMA_YAML)
        site = await start_emulator(Schema.load(write(os.path.abspath(self.mktemp()) + ".yml", SITE_YAML)),
                                    scripts=dict([CACHE_SCRIPT, ("farm", "key")]))
        self.site = site
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        site.emulator.seed([{"type": "Project", "id": 1, "fields": {"name": "P"}}])
        daemon = await start_daemon(Schema.load(path), site.url, store_url,
                                    settings={"schema": path, "stop_timeout": stop_timeout})
        self.daemon = daemon
        return daemon

    async def stop_within(self, daemon, limit: float) -> float:
        """Stop the daemon; it must end within `limit` seconds (far above
        --stop-timeout: this checks that it ends, not how fast)."""
        started = reactor.seconds()
        stopping = defer.ensureDeferred(daemon.service.stopService())
        timer = reactor.callLater(limit, stopping.cancel)
        try:
            await stopping
        except defer.CancelledError:
            self.fail(f"the stop did not end within {limit:g} s")
        finally:
            if timer.active():
                timer.cancel()
        return reactor.seconds() - started

    async def in_flight(self, daemon) -> defer.Deferred:
        """A client read that passes through to the (hanging) site."""
        sg = client(daemon.url, "farm", "key", timeout_secs=60)
        self.addCleanup(sg.close)
        await deferToThread(sg.info)
        outcome = defer.Deferred()

        def read() -> None:
            try:
                result = sg.find("Asset", [], ["code"])
            except Exception as e:  # cut by the stop: what we want
                result = e
            reactor.callFromThread(outcome.callback, result)

        threading.Thread(target=read, daemon=True).start()
        deadline = reactor.seconds() + 10
        while not daemon.service.site.connections.busy():
            self.assertLess(reactor.seconds(), deadline)
            await task.deferLater(reactor, 0.02, lambda: None)
        return outcome

    async def through_proxy(self) -> tuple[str, _Freezable]:
        """A fresh database, reached through a proxy the test controls."""
        base = await fresh_postgres_url(self)
        parts = urlsplit(base)
        proxy = _Freezable(parts.hostname or "127.0.0.1", parts.port or 5432)
        port = reactor.listenTCP(0, proxy, interface="127.0.0.1")
        self.proxy_port = port
        self.addCleanup(lambda: port.stopListening() if port.connected else None)
        self.addCleanup(proxy.kill)
        netloc = f"{parts.username or 'postgres'}@127.0.0.1:{port.getHost().port}"
        return urlunsplit(parts._replace(netloc=netloc)), proxy

    async def test_stop_ends_when_the_site_and_postgres_are_killed_mid_stop(self):
        url, proxy = await self.through_proxy()
        daemon = await self.start(url)
        self.site.emulator.set_latency(3600)
        outcome = await self.in_flight(daemon)
        daemon.cache.credentials.dirty = True  # a store write at stop
        stopping = defer.ensureDeferred(self.stop_within(daemon, 30))
        # both die while the daemon stops (PostgreSQL refuses reconnects too)
        await self.site.stop()
        await self.proxy_port.stopListening()
        proxy.kill()
        await stopping
        self.assertIsInstance(await outcome, Exception)
        self.assertEqual(daemon.service.site.connections.open(), [])
        self.flushLoggedErrors()

    async def test_stop_ends_when_the_site_and_postgres_hang_mid_stop(self):
        url, proxy = await self.through_proxy()
        daemon = await self.start(url)
        self.site.emulator.set_latency(3600)  # the site stops answering
        outcome = await self.in_flight(daemon)
        # a store write in flight too: the poller asks the hanging site,
        # the credentials flush writes to a PostgreSQL that hangs
        proxy.freeze()
        daemon.cache.credentials.dirty = True
        flushing = defer.ensureDeferred(daemon.service.memory._flush())
        took = await self.stop_within(daemon, 30)
        self.assertIsInstance(await outcome, Exception)
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(daemon.service.site.connections.open(), [])
        # the daemon closed its PostgreSQL connections: the proxy, reading
        # again on the daemon's side, sees them all end
        for server in proxy.servers:
            server.transport.resumeProducing()
        await task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(proxy.open_connections(), 0)
        self.assertLess(took, 30)
        await flushing  # ended (its failure logged), not left hanging
        self.flushLoggedErrors()

    async def test_stop_ends_when_the_site_is_killed_mid_stop(self):
        daemon = await self.start("sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite")
        self.site.emulator.set_latency(3600)
        outcome = await self.in_flight(daemon)
        stopping = defer.ensureDeferred(self.stop_within(daemon, 30))
        await self.site.stop()  # killed while the daemon stops
        await stopping
        self.assertIsInstance(await outcome, Exception)
        self.assertEqual(daemon.service.site.connections.open(), [])
        self.flushLoggedErrors()
