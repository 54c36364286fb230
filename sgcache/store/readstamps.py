"""The read fence in PostgreSQL, shared by every daemon on the store: what
`sgcache.sync.freshness.SharedFreshness` asks of the database (its module
docstring says why the fence exists and why it is exact and bounded).

* ``_sgcache_read_ticket`` -- a sequence (``CACHE 1``: values are handed
  out in the order the ``nextval`` calls run, across every session). One
  value, a *ticket*, is taken before each upstream read a sync reader
  sends (`TICKET_SQL`);
* ``_sgcache_read_stamps(entity_type, entity_id, ticket)`` -- the youngest
  ticket whose read was applied to each entity (recent ones only: pruned);
* ``_sgcache_read_horizon(id = 1, below)`` -- stamps below ``below`` may
  have been pruned (no row: none was), so a read whose ticket is below it
  can no longer be judged: its apply is refused (`StaleRead`);
* ``_sgcache_nodes.read_floor`` -- per daemon, a ticket no read of it that
  is open now or opened later is below (written each election round,
  `sgcache.store.leadership`).

In an apply with a ticket (`fence_changes`, inside the apply's
transaction, before the rows are read) one statement upserts the stamps of
every entity the batch touches (a stamp only moves up) and returns those
whose stamp is younger than the ticket (usually none); their changes are
dropped. The upsert locks each stamp row (``ON CONFLICT DO UPDATE`` locks
the conflicting row even when its ``WHERE`` leaves it unchanged), in one
order (type, id), until the apply commits: two daemons' applies of one
entity, even of one not stored yet, run one after the other, the second
judged against the first's committed stamp (and then, reading the row
``FOR UPDATE``, against its committed ``updated_at``: the store's stale
check still refuses an older second, whatever the tickets). Then the
horizon is read, in a statement of its own: it sees every prune that
committed before, including one whose deletion the upsert waited for.

A fenced (leader's) transaction takes the epoch row ``FOR SHARE`` first,
the stamps next, the entity rows last; the election's epoch bump touches
no stamp, and every apply locks stamps in the same order, so no new lock
cycle appears.

`PostgresStore.prune_read_stamps` (the leader, after each election round,
on its sync pool; while no live daemon leads, every daemon after its
rounds) raises the horizon to the least ``read_floor`` of the daemons
seen within a grace period (`raise_horizon`, committed first), then
deletes the stamps below it in batches, a transaction each
(`delete_below`), skipping rows an apply holds (``SKIP LOCKED``: a prune
never waits, so it never deadlocks with an apply). A stamp an apply
locked is not deleted under it; one the prune deleted first makes the
apply's upsert wait for the prune's commit, after which the apply reads
the raised horizon. Each of those transactions first tries a
transaction-level advisory lock (`PRUNE_LOCK_KEY`): when another daemon's
prune holds it, this prune stops there (two at once would be safe, the
horizon only moves up and the deletes skip what is locked, but one does
the work).
"""

from __future__ import annotations

from typing import Sequence

from sgcache.schema.changes import EntityChange
from sgcache.store.dialect import SQLCursor
from sgcache.store.interface import StoreError

SEQUENCE = "_sgcache_read_ticket"
STAMPS = "_sgcache_read_stamps"
HORIZON = "_sgcache_read_horizon"

#: one ticket
TICKET_SQL = f"SELECT nextval('{SEQUENCE}')"

#: stamps deleted per prune transaction
PRUNE_BATCH = 5000

#: the transaction-level advisory lock each prune transaction tries first
#: (`sgcache.store.leadership.LOCK_KEY` + 2: its layout lock is + 1)
PRUNE_LOCK_KEY = 0x736763616368 + 2

_PRUNE_LOCK_SQL = f"SELECT pg_try_advisory_xact_lock({PRUNE_LOCK_KEY})"

#: seconds (at least) a daemon not seen by the election still holds the
#: pruning back (`sgcache.store.leadership.Leadership.floor_grace`)
FLOOR_GRACE = 60.0

DDL = (
    f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE} CACHE 1",
    # (room on each page: a stamp moved up is a HOT update, its key's index
    # entry stays; pruning keeps the table small)
    f"CREATE TABLE IF NOT EXISTS {STAMPS} (entity_type TEXT NOT NULL, entity_id BIGINT NOT NULL, "
    "ticket BIGINT NOT NULL, PRIMARY KEY (entity_type, entity_id)) WITH (fillfactor = 50)",
    # (its one row is written by the first prune: none is below 0)
    f"CREATE TABLE IF NOT EXISTS {HORIZON} (id INTEGER PRIMARY KEY, below BIGINT NOT NULL)",
)

#: the column each daemon's election round writes (`_sgcache_nodes` is
#: created by `sgcache.store.leadership`, with it since this column exists)
FLOOR_COLUMN = "read_floor"

#: upsert the stamps (ticket, types, ids: parallel arrays sorted by type
#: and id); the entities whose stamp is younger than the ticket (usually
#: none: only those come back)
_STAMP_SQL = (
    "WITH w (t, i) AS (SELECT * FROM unnest(?::text[], ?::bigint[])), "
    f"up AS (INSERT INTO {STAMPS} AS s (entity_type, entity_id, ticket) "
    "SELECT t, i, ?::bigint FROM w ORDER BY 1, 2 "
    "ON CONFLICT (entity_type, entity_id) DO UPDATE SET ticket = excluded.ticket "
    "WHERE s.ticket <= excluded.ticket RETURNING s.entity_type, s.entity_id) "
    "SELECT t, i FROM w EXCEPT ALL SELECT entity_type, entity_id FROM up"
)

_HORIZON_SQL = f"SELECT below FROM {HORIZON} WHERE id = 1"

_FLOOR_SQL = (
    f"SELECT min({FLOOR_COLUMN}) FROM _sgcache_nodes WHERE {FLOOR_COLUMN} IS NOT NULL "
    "AND seen > now() - make_interval(secs => ?)"
)

_RAISE_SQL = (
    f"INSERT INTO {HORIZON} AS h (id, below) VALUES (1, ?) "
    "ON CONFLICT (id) DO UPDATE SET below = GREATEST(h.below, excluded.below) RETURNING below"
)

_DELETE_SQL = (
    f"DELETE FROM {STAMPS} AS s USING (SELECT entity_type, entity_id FROM {STAMPS} WHERE ticket < ? "
    "LIMIT ? FOR UPDATE SKIP LOCKED) AS d WHERE s.entity_type = d.entity_type AND s.entity_id = d.entity_id"
)


class StaleRead(StoreError):
    """An apply of a read whose ticket is below the prune horizon: stamps
    it should be judged against may be gone, so nothing of it is applied.
    The reader reads again (a new ticket). Only a daemon whose election
    rounds stopped recording its floor for the whole grace period meets
    this."""


async def ensure(cur: SQLCursor) -> None:
    """The sequence and tables, and ``_sgcache_nodes.read_floor`` on a
    store whose nodes table predates it (inside the opening transaction,
    under the layout lock)."""
    for stmt in DDL:
        await cur.execute(stmt)
    columns = await cur.table_columns("_sgcache_nodes")
    if columns and FLOOR_COLUMN not in columns:
        await cur.execute(f"ALTER TABLE _sgcache_nodes ADD COLUMN IF NOT EXISTS {FLOOR_COLUMN} BIGINT")


async def fence_changes(
    cur: SQLCursor, changes: Sequence[EntityChange], ticket: int, cached: set[str] | dict
) -> tuple[list[EntityChange], set[tuple[str, int]]]:
    """Inside an apply's transaction: stamp the entities of `changes` (of
    the `cached` types) with `ticket`; (the changes to apply, the keys
    dropped because a younger read was applied to them). Raises
    `StaleRead` when `ticket` is below the prune horizon."""
    keys = sorted({(c.entity_type, int(c.entity_id)) for c in changes if c.entity_type in cached})
    if not keys:
        return list(changes), set()
    # (type names are identifiers: the array literals need no quoting)
    rows = await cur.execute(_STAMP_SQL, [
        "{" + ",".join(k[0] for k in keys) + "}", "{" + ",".join(str(k[1]) for k in keys) + "}", int(ticket)])
    horizon = await cur.execute(_HORIZON_SQL)
    below = int(horizon[0][0]) if horizon else 0
    if ticket < below:
        raise StaleRead(f"a read with ticket {ticket} is older than the read-stamp horizon {below}; "
                        "read again")
    dropped = {(row[0], int(row[1])) for row in rows}
    if not dropped:
        return list(changes), dropped
    return [c for c in changes if (c.entity_type, int(c.entity_id)) not in dropped], dropped


async def pruning_alone(cur: SQLCursor) -> bool:
    """Take the prune lock for this transaction; False: another daemon's
    prune transaction holds it."""
    rows = await cur.execute(_PRUNE_LOCK_SQL)
    return bool(rows and rows[0][0])


async def raise_horizon(cur: SQLCursor, grace: float) -> int | None:
    """Move the horizon up to the least floor of the daemons seen in the
    last `grace` seconds; the horizon (None: no daemon records a floor, or
    another daemon is pruning)."""
    if not await pruning_alone(cur):
        return None
    rows = await cur.execute(_FLOOR_SQL, [float(grace)])
    if not rows or rows[0][0] is None:
        return None
    raised = await cur.execute(_RAISE_SQL, [int(rows[0][0])])
    return int(raised[0][0]) if raised else None


async def delete_below(cur: SQLCursor, below: int, batch: int = PRUNE_BATCH) -> int | None:
    """Delete up to `batch` stamps below `below` (a horizon already
    committed, or raised in this transaction); how many went (None:
    another daemon is pruning)."""
    if not await pruning_alone(cur):
        return None
    rows = await cur.execute(f"WITH gone AS ({_DELETE_SQL} RETURNING 1) SELECT count(*) FROM gone",
                             [below, batch])
    return int(rows[0][0]) if rows else 0
