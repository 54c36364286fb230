"""Who syncs, when several daemons share one PostgreSQL store.

Every daemon on PostgreSQL with ``--role all`` or ``--role sync`` stands
for election; exactly one at a time (the leader) runs the event poller, the
scanner, the update-log pruner and the schema keeper. ``--role web``
daemons serve reads and passthrough only.

* **Election**: a session-level advisory lock (`LOCK_KEY`), taken with
  ``pg_try_advisory_lock`` on a connection of its own (`Leadership`), tried
  every ``--failover-seconds`` / 3. PostgreSQL drops it when that session
  ends: the leader's process died (kill -9 closes its sockets), or its
  connection was lost. The session asks the server for TCP keepalives
  tight enough that a leader cut off by a partition loses the lock within
  about ``--failover-seconds`` too.
* **Fencing**: on election the leader bumps ``_sgcache_leader.epoch`` and
  remembers the value (`PostgresStore.fence_epoch`). Every sync
  transaction (poller, scanner, schema sync, field states) first reads the
  epoch ``FOR SHARE`` and fails with `Deposed` when it moved: a deposed
  leader, even one that does not know yet (a partition), can never commit,
  and the next leader's bump waits for a sync transaction in progress.
* **Losing it**: when the leader's election connection fails or a heartbeat
  on it does not answer within the interval, it is deposed at once: its
  sync stops (the daemon under twistd exits with status 1, for systemd to
  start it again as a candidate; it never leads twice in one life).
* **Nodes**: each daemon records itself in ``_sgcache_nodes`` (name, role,
  host, pid, started, last seen, leading) on every round, for ``sgcache
  status`` and the admin listener, with its read floor (``read_floor``:
  no read ticket of its open or future reads is below it; see
  `sgcache.sync.freshness.SharedFreshness`), taken after one ``nextval`` of
  the ticket sequence. The leader then prunes the read stamps below the
  least floor of the daemons seen in the last `floor_grace` seconds
  (`sgcache.store.readstamps`), in the background on its sync pool; while
  no live daemon leads (``--role web`` daemons alone), every daemon does,
  one at a time (a transaction-level advisory lock, `PRUNE_LOCK_KEY`).
* **Knowing each other**: after each read of the nodes table a daemon
  records when that read was made (``nodes_read_at``, the server's
  clock): from then on it acts on what it read (`others_alive`). A daemon
  that joins waits, at most about one round, until every other live
  daemon has read the table since its registration (`announce`).

SQLite is single-process: no election (`sgcache.store.onedaemon`).
"""

from __future__ import annotations

import datetime
import itertools
import os
import socket
from typing import Any, Awaitable, Callable

from twisted.internet import defer, task
from twisted.python.failure import Failure

from sgcache.logs import logger
from sgcache.store.interface import StoreError
from sgcache.store.pgadapter import Connection, first_line
from sgcache.store.readstamps import FLOOR_GRACE, TICKET_SQL

log = logger(__name__)

#: the advisory lock the leader holds (``'sgcache'`` folded to 63 bits)
LOCK_KEY = 0x736763616368

#: the transaction lock daemons take while they create or upgrade the
#: store's layout (`PostgresStore.open`)
LAYOUT_LOCK_KEY = LOCK_KEY + 1

_DDL = (
    "CREATE TABLE IF NOT EXISTS _sgcache_leader (id INTEGER PRIMARY KEY, epoch BIGINT NOT NULL, "
    "node TEXT, since TIMESTAMPTZ)",
    "INSERT INTO _sgcache_leader (id, epoch) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS _sgcache_nodes (node TEXT PRIMARY KEY, role TEXT NOT NULL, host TEXT, "
    "pid INTEGER, started TIMESTAMPTZ, seen TIMESTAMPTZ, is_leader BOOLEAN NOT NULL DEFAULT FALSE, "
    "lag_seconds DOUBLE PRECISION, read_floor BIGINT, nodes_read_at TIMESTAMPTZ)",
    # a nodes table an older sgcache made (checked first: ALTER TABLE
    # locks the table even when it has nothing to do)
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '_sgcache_nodes'::regclass "
    "AND attname = 'read_floor' AND NOT attisdropped) THEN "
    "ALTER TABLE _sgcache_nodes ADD COLUMN IF NOT EXISTS read_floor BIGINT; END IF; END $$",
    "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = '_sgcache_nodes'::regclass "
    "AND attname = 'nodes_read_at' AND NOT attisdropped) THEN "
    "ALTER TABLE _sgcache_nodes ADD COLUMN IF NOT EXISTS nodes_read_at TIMESTAMPTZ; END IF; END $$",
)

#: the epoch check every fenced transaction starts with
FENCE_SQL = "SELECT epoch FROM _sgcache_leader WHERE id = 1 FOR SHARE"

#: nodes not seen for this many rounds are shown as gone (and forgotten
#: after a day)
GONE_ROUNDS = 3

#: a joining daemon waits for the others to know it at most this many
#: rounds after its registration (`Leadership.announce`): one round, and
#: half of one for that round's statements
ANNOUNCE_ROUNDS = 1.5

#: the other live daemons that have not read the nodes table since a
#: daemon's registration (`Leadership.announce`): (its name, when its
#: registration was known committed, rounds' length in seconds)
_UNAWARE_SQL = (
    "SELECT node FROM _sgcache_nodes WHERE node <> ? AND seen > ? - make_interval(secs => ?) "
    "AND (nodes_read_at IS NULL OR nodes_read_at <= ?) ORDER BY node"
)


class Deposed(StoreError):
    """A sync transaction of a leader that is no longer the leader."""


_made = itertools.count(1)


def node_name() -> str:
    """host:pid (and /N for the Nth daemon of one process: tests)."""
    n = next(_made)
    return f"{socket.gethostname()}:{os.getpid()}" + (f"/{n}" if n > 1 else "")


class Leadership:
    """This daemon's part in the election (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        store: Any,
        role: str = "all",
        failover_seconds: float = 10.0,
        node: str | None = None,
        on_elected: Callable[[int], Awaitable[None]] | None = None,
        on_deposed: Callable[[str], Any] | None = None,
        transient: bool = False,
    ):
        self.reactor = reactor
        self.store = store
        self.role = role
        self.failover_seconds = max(1.0, float(failover_seconds))
        self.interval = self.failover_seconds / 3
        self.node = node or node_name()
        self.host = socket.gethostname()
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        #: the epoch this node leads at (None: not leading)
        self.epoch: int | None = None
        self.since: float | None = None
        #: deposed once: never stands again in this life
        self.deposed: str | None = None
        self.started = reactor.seconds()
        #: fires after the first round (True: this node leads)
        self.first_round: defer.Deferred = defer.Deferred()
        self._conn: Connection | None = None
        self._loop: task.LoopingCall | None = None
        self._done: defer.Deferred | None = None
        self._round: defer.Deferred | None = None
        self._stopping = False
        #: the cluster as last read: node rows
        self.nodes: list[dict[str, Any]] = []
        self.leader: dict[str, Any] | None = None
        self.errors = 0
        self.last_error: str | None = None
        #: this daemon's event lag while it leads (the poller's), recorded
        #: for the others' readiness
        self.lag: Callable[[], float | None] | None = None
        self.read_at: float | None = None
        #: a daemon not seen for this long no longer holds the pruning of
        #: read stamps back (its floor is left out)
        self.floor_grace = max(FLOOR_GRACE, 6 * self.interval)
        #: the read-stamp prune in progress (the leader's, or any daemon's
        #: while none leads)
        self._pruning: defer.Deferred | None = None
        self.stamps_pruned = 0
        #: called after each round that read the cluster (not awaited)
        self.on_round: Callable[[], Any] | None = None
        #: the server's time of the last read of the nodes table this node
        #: acts on (`nodes` was set from it)
        self.nodes_read_at: Any = None
        #: the server's time by which this node's first registration was
        #: committed, and the reactor's then (`announce`)
        self.registered_at: Any = None
        self._registered_here: float | None = None
        #: not a daemon (an admin command): its row goes when it stops
        self.transient = transient

    @property
    def leading(self) -> bool:
        return self.epoch is not None

    @property
    def candidate(self) -> bool:
        return self.role in ("all", "sync") and self.deposed is None

    # -- running ----------------------------------------------------------------
    def start(self) -> None:
        fence = self._fence()
        if fence is not None:
            # its first tickets wait for the first floor recorded
            fence.attach(self.reactor, self.failover_seconds)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._done = self._loop.start(self.interval, now=True)
        self._done.addErrback(lambda f: log.failure("the election loop stopped", f))

    async def stop(self) -> None:
        """Leave: the lock is given back (the session ends), the node row
        says it no longer leads."""
        self._stopping = True
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        conn, self._conn = self._conn, None
        leading, self.epoch = self.epoch is not None, None
        busy = self._round is not None and not self._round.called
        if busy and self.transient and conn is not None:
            # (an admin command's row must go: let the round end first)
            await defer.DeferredList([self._round], consumeErrors=True)
            busy = False
        if conn is not None:
            if not busy:
                # (a stopping daemon holds the pruning of read stamps back
                # no longer: a late apply of its reads is refused if overtaken)
                # (an admin command's row goes: it was no daemon)
                sql = ("DELETE FROM _sgcache_nodes WHERE node = %s" if self.transient else
                       "UPDATE _sgcache_nodes SET is_leader = FALSE, seen = now(), read_floor = NULL "
                       "WHERE node = %s" if leading else
                       "UPDATE _sgcache_nodes SET read_floor = NULL WHERE node = %s")
                try:
                    await self._query(conn, sql, (self.node,), rows=False)
                except Exception:
                    pass
            # (a round in progress fails on the closed connection, quietly)
            _close(conn)
        if not self.first_round.called:
            self.first_round.callback(False)

    def round_soon(self) -> None:
        """Run a round now (unless one runs): what this node records, such
        as its lag once known, reaches the others without waiting."""
        if self._stopping or self._loop is None or (self._round is not None and not self._round.called):
            return
        self._tick()

    def _tick(self) -> defer.Deferred:
        self._round = defer.ensureDeferred(self._one_round())
        return self._round

    async def _one_round(self) -> None:
        try:
            await self._round_on_connection()
        except Exception as e:
            self.errors += 1
            self.last_error = first_line(e)
            conn, self._conn = self._conn, None
            if conn is not None:
                _close(conn)
            if self.epoch is not None:
                self._depose(f"the election connection failed: {first_line(e)}")
            elif not self._stopping:
                log.warn("election round failed ({error}); trying again in {s:.1f}s",
                         error=first_line(e), s=self.interval)
        finally:
            if not self.first_round.called:
                self.first_round.callback(self.leading)

    async def _round_on_connection(self) -> None:
        if self._stopping:
            return
        if self._conn is None:
            self._conn = await self._connect()
        conn = self._conn
        elected = False
        if self.epoch is None and self.candidate:
            got = (await self._query(conn, "SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)))[0][0]
            if got:
                epoch = (await self._query(
                    conn, "UPDATE _sgcache_leader SET epoch = epoch + 1, node = %s, since = now() "
                          "WHERE id = 1 RETURNING epoch", (self.node,)))[0][0]
                self.epoch = int(epoch)
                self.since = self.reactor.seconds()
                self.store.fence_epoch = self.epoch
                elected = True
                log.info("leading the sync of this store from {at} (epoch {epoch}, node {node})",
                         at=_iso(self.since), epoch=self.epoch, node=self.node)
        fence, floor = self._fence(), None
        if fence is not None:
            # the floor is computed once this ticket is taken: every ticket
            # asked for later is larger
            floor = fence.floor(int((await self._query(conn, TICKET_SQL))[0][0]))
        await self._query(
            conn,
            "INSERT INTO _sgcache_nodes (node, role, host, pid, started, seen, is_leader, lag_seconds, "
            "read_floor) VALUES (%s, %s, %s, %s, to_timestamp(%s), now(), %s, %s, %s) "
            "ON CONFLICT (node) DO UPDATE SET role = excluded.role, seen = now(), "
            "is_leader = excluded.is_leader, lag_seconds = excluded.lag_seconds, "
            "read_floor = excluded.read_floor",
            (self.node, self.role, self.host, os.getpid(), self.started, self.leading,
             self.lag() if self.leading and self.lag is not None else None, floor), rows=False)
        if fence is not None:
            fence.recorded()
        await self._read_cluster(conn)
        if self.leading or not any(node["leading"] for node in self.nodes):
            self._prune_stamps()
        if self.on_round is not None:
            try:
                self.on_round()
            except Exception:
                log.failure("after an election round")
        if elected and self.on_elected is not None and self.first_round.called:
            # (elected in the first round: the daemon's start-up syncs)
            # the sync starts in the background; the rounds go on meanwhile
            d = defer.ensureDeferred(self.on_elected(self.epoch))
            d.addErrback(lambda f: log.failure("taking over the sync failed", f))

    def _fence(self) -> Any:
        """The store's shared read fence, if it has one."""
        fence = getattr(self.store, "read_fence", None)
        return fence if hasattr(fence, "floor") else None

    def _prune_stamps(self) -> None:
        """Prune the read stamps no open read needs, in the background (a
        large prune must not hold the round up), one prune at a time: the
        leader's, or, while no live daemon leads, any daemon's (the store
        lets one at a time prune: `PostgresStore.prune_read_stamps`)."""
        prune = getattr(self.store, "prune_read_stamps", None)
        if prune is None or self._stopping or (self._pruning is not None and not self._pruning.called):
            return

        def pruned(count: int) -> None:
            self.stamps_pruned += count

        def failed(failure: Failure) -> None:
            if not self._stopping:
                log.warn("pruning read stamps failed ({error}); next round tries again",
                         error=first_line(failure.value))

        self._pruning = defer.maybeDeferred(prune, self.floor_grace).addCallbacks(pruned, failed)

    async def _read_cluster(self, conn: Connection) -> None:
        """Read the nodes (and the leader), act on them, and record when
        they were read (``nodes_read_at``: a daemon joining waits for it to
        pass its registration, `announce`)."""
        # (now(): the start of the statement, whose snapshot is taken after
        # it: every registration committed before that time is in the rows)
        rows = await self._query(
            conn,
            "SELECT node, role, host, pid, extract(epoch FROM started), extract(epoch FROM now() - seen), "
            "is_leader, lag_seconds, now() FROM _sgcache_nodes ORDER BY node")
        gone_after = GONE_ROUNDS * self.interval
        leader = await self._query(
            conn, "SELECT node, epoch, extract(epoch FROM since) FROM _sgcache_leader WHERE id = 1")
        if leader and leader[0][0] is not None:
            self.leader = {"node": leader[0][0], "epoch": int(leader[0][1]),
                           "since": _iso(float(leader[0][2]))}
        current = (self.leader or {}).get("node")
        # the one leading is the one the epoch names (a killed leader's row
        # says it leads until it is seen no more)
        self.nodes = [
            {"node": node, "role": role, "host": host, "pid": pid, "started": _iso(float(started or 0)),
             "seen_seconds_ago": round(float(ago), 1), "alive": float(ago) <= gone_after,
             "leading": bool(leading) and node == current and float(ago) <= gone_after,
             "this": node == self.node,
             "lag_seconds": None if lag is None else round(float(lag) + float(ago), 1)}
            for node, role, host, pid, started, ago, leading, lag, _ in rows
        ]
        self.read_at = self.reactor.seconds()
        if rows:
            # (this node's own row is among them: it was just written)
            read_at = self.nodes_read_at = rows[0][-1]
            await self._query(conn, "UPDATE _sgcache_nodes SET nodes_read_at = %s WHERE node = %s",
                              (read_at, self.node), rows=False)
            if self.registered_at is None:
                self.registered_at, self._registered_here = read_at, self.reactor.seconds()
        await self._query(conn, "DELETE FROM _sgcache_nodes WHERE seen < now() - interval '1 day'", rows=False)

    async def _connect(self) -> Connection:
        conn = Connection(self.reactor)
        idle = max(1, int(self.failover_seconds / 3))
        try:
            await self._within_a_round(conn.connect(
                self.store.dsn, connect_timeout=max(2, int(self.failover_seconds)),
                application_name="sgcache election", keepalives=1, keepalives_idle=idle,
                keepalives_interval=1, keepalives_count=max(1, idle)), "connecting")
            # the server, too, finds a silent leader within the failover time
            for setting in (f"tcp_keepalives_idle = {idle}", "tcp_keepalives_interval = 1",
                            f"tcp_keepalives_count = {max(1, idle)}",
                            f"tcp_user_timeout = {int(self.failover_seconds * 1000 / 2)}"):
                await self._query(conn, f"SET {setting}", rows=False)
            # (two daemons creating these at once: one fails, and its next
            # round finds them)
            for stmt in _DDL:
                await self._query(conn, stmt, rows=False)
        except BaseException:
            _close(conn)
            raise
        return conn

    async def _query(self, conn: Connection, sql: str, params: tuple = (), rows: bool = True) -> list:
        """One statement (its rows, or none), failed when it takes longer
        than a round."""
        d = conn.runQuery(sql, params) if rows else conn.runOperation(sql, params)
        result = await self._within_a_round(d, sql.split()[0])
        return list(result) if rows and result else []

    def _within_a_round(self, d: defer.Deferred, what: str) -> defer.Deferred:
        """`d`'s outcome, or a TimeoutError after a round. `d` itself is
        never cancelled: psycopg2 cancels a statement by connecting to the
        server again, blocking the reactor while the server does not
        answer (the case a timeout is for); the caller closes the
        connection instead."""
        out: defer.Deferred = defer.Deferred()

        def late() -> None:
            if not out.called:
                out.errback(TimeoutError(f"{what} on the election connection took over {self.interval:.1f}s"))

        timer = self.reactor.callLater(self.interval, late)

        def settle(result: Any) -> None:
            if timer.active():
                timer.cancel()
            if not out.called:
                if isinstance(result, Failure):
                    out.errback(result)
                else:
                    out.callback(result)

        d.addBoth(settle)
        return out

    def _depose(self, why: str) -> None:
        epoch, self.epoch = self.epoch, None
        self.deposed = why
        log.error("stopped leading the sync of this store at {at} (epoch {epoch}): {why}",
                  at=_iso(self.reactor.seconds()), epoch=epoch, why=why)
        if self.on_deposed is not None:
            self.on_deposed(why)

    async def announce(self) -> tuple[float, list[str]]:
        """Wait until every other live daemon has read the nodes table since
        this one's registration, so each knows it (`others_alive`) and
        checks the store's data generation before reusing a kept answer;
        at most `ANNOUNCE_ROUNDS` rounds after the registration (the
        others' rounds come every `interval`). A registration the first
        round could not make is waited for within the failover time.
        (seconds waited, the daemons that did not confirm in time: stuck,
        gone, or of an sgcache that does not record it.)"""
        started = self.reactor.seconds()
        step = self.interval / 10
        while self.registered_at is None:
            if self._stopping or self.reactor.seconds() - started > self.failover_seconds:
                return self.reactor.seconds() - started, ["(this daemon's registration)"]
            await task.deferLater(self.reactor, step, lambda: None)
        assert self._registered_here is not None
        deadline = self._registered_here + ANNOUNCE_ROUNDS * self.interval
        while True:
            # (the live ones: a round since shortly before the registration)
            rows = await self.store.fetch(_UNAWARE_SQL, [self.node, self.registered_at,
                                                         ANNOUNCE_ROUNDS * self.interval, self.registered_at])
            unaware = [row[0] for row in rows]
            if not unaware or self._stopping or self.reactor.seconds() >= deadline:
                return self.reactor.seconds() - started, unaware
            await task.deferLater(self.reactor, step, lambda: None)

    def others_alive(self) -> bool:
        """Another daemon was seen on this store in the last rounds."""
        return any(node["alive"] and not node["this"] for node in self.nodes)

    def leader_lag(self, others: bool = False) -> float | None:
        """The store's event lag as the daemon that syncs last recorded it
        (plus the time since); while a new leader has not caught up yet,
        the last one recorded by any (a dead leader's row keeps it: the
        store was last known complete then). `others`: not this daemon's
        own record (it knows its own). None: never recorded."""
        if self.read_at is None:
            return None
        elapsed = self.reactor.seconds() - self.read_at
        nodes = [node for node in self.nodes if not (others and node["this"])]
        for node in nodes:
            if node["leading"] and node["lag_seconds"] is not None:
                return node["lag_seconds"] + elapsed
        known = [node["lag_seconds"] for node in nodes if node["lag_seconds"] is not None]
        return min(known) + elapsed if known else None

    # -- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {
            "cluster": {
                "node": self.node,
                "role": self.role,
                "leading": self.leading,
                "leading_since": _iso(self.since) if self.leading and self.since else None,
                "epoch": self.epoch,
                "deposed": self.deposed,
                "failover_seconds": self.failover_seconds,
                "leader": self.leader,
                "nodes": self.nodes,
                "election_errors": self.errors,
                "last_election_error": self.last_error,
            }
        }


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except Exception:
        pass


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


async def read_cluster(store: Any) -> dict[str, Any] | None:
    """The cluster as the store records it (``sgcache status``): the leader
    and the nodes seen in the last day; None on SQLite or before any
    daemon stood for election."""
    if getattr(store, "dialect", None) != "postgresql":
        return None
    try:
        leader = await store.fetch("SELECT node, epoch, extract(epoch FROM since) FROM _sgcache_leader "
                                   "WHERE id = 1", [])
        nodes = await store.fetch(
            "SELECT node, role, host, pid, extract(epoch FROM started), extract(epoch FROM now() - seen), "
            "is_leader, lag_seconds FROM _sgcache_nodes ORDER BY node", [])
    except Exception:
        return None
    return {
        "leader": ({"node": leader[0][0], "epoch": int(leader[0][1]), "since": _iso(float(leader[0][2]))}
                   if leader and leader[0][0] is not None else None),
        "nodes": [{"node": node, "role": role, "host": host, "pid": pid, "started": _iso(float(started or 0)),
                   "seen_seconds_ago": round(float(ago), 1), "leading": bool(leading),
                   "lag_seconds": None if lag is None else round(float(lag), 1)}
                  for node, role, host, pid, started, ago, leading, lag in nodes],
    }


def cluster_lines(cluster: dict[str, Any] | None) -> list[str]:
    """`read_cluster` as text lines."""
    if not cluster:
        return []
    leader = cluster["leader"]
    lines = [f"sync leader: {leader['node']} since {leader['since']} (epoch {leader['epoch']})" if leader
             else "sync leader: none elected yet"]
    for node in cluster["nodes"]:
        lines.append(f"node {node['node']:28} role {node['role']:5} {'leading ' if node['leading'] else ''}"
                     f"seen {node['seen_seconds_ago']:g}s ago, started {node['started']}")
    return lines
