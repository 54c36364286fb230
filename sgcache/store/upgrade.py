"""Layout upgrades: bringing a store an older sgcache wrote to this code's
layout (`layout.LAYOUT_VERSION`) in place, when the store is opened.

This module owns:

* `STEPS`, the ordered registry of upgrade steps: one `Step` per layout
  version, taking a store from that version to the next;
* `stored_version` (the version a store records, read the one way both
  `catalog.ensure_layout` and the SQLite backup use) and `steps_from` (the
  steps from a version to the current one, or a one-line `StoreError`);
* `run_steps`, which `catalog.ensure_layout` calls inside the transaction
  that opens the store (PostgreSQL: the version bump commits with the steps,
  or nothing does);
* `backup_sqlite`, the copy of a SQLite file `SQLiteStore.open` makes next
  to it before an upgrade runs.

Adding a layout version N+1: bump `layout.LAYOUT_VERSION`, document it in
layout.py's docstring, write one ``async def`` taking the `SQLCursor` (it
runs inside the opening transaction; it returns a few words for the log
line, and raises `StoreError` with a one-line reason when it cannot run),
and append ``Step(N, "what it does", the_function)`` to `STEPS`. Make the
step tolerate what a store of version N may or may not hold (a type
recorded without its table, a column already gone). tests/test_upgrade.py
checks that every version below the current one has its step. See
docs/upgrading.md.
"""

from __future__ import annotations

import os
import re
import sqlite3
from dataclasses import dataclass
from typing import Awaitable, Callable

from sgcache.logs import logger
from sgcache.store import layout
from sgcache.store.dialect import SQLCursor
from sgcache.store.interface import StoreError
from sgcache.store.pgadapter import connection_failed

log = logger(__name__)


@dataclass(frozen=True)
class Step:
    """Takes a store from layout `from_version` to ``from_version + 1``."""

    from_version: int
    #: what the step does, for the log line
    what: str
    #: runs inside the opening transaction; returns a few words for the log
    run: Callable[[SQLCursor], Awaitable[str]]

    @property
    def to_version(self) -> int:
        return self.from_version + 1


# -- the steps ----------------------------------------------------------------

#: layout 1's column of entity tables that layout 2 drops
EVENT_ID_COLUMN = "_event_id"

#: SQLite learnt ``ALTER TABLE ... DROP COLUMN`` in 3.35.0
SQLITE_DROP_COLUMN = (3, 35, 0)


async def drop_event_id(cur: SQLCursor) -> str:
    """1 -> 2: entity tables lose ``_event_id``, which nothing writes any
    more. The tables are those `_sgcache_entities` names (one recorded
    without its table is passed over) and those of types no longer cached
    (still there, with their ``_active`` / ``_complete`` columns: a later
    schema may cache the type again). Layout 1 has no index on the column;
    any index naming it (a hand-made one) is dropped first, as SQLite
    refuses to drop an indexed column."""
    tables = await _tables_with_column(cur, EVENT_ID_COLUMN)
    if not tables:
        return "no entity table had it"
    if cur.dialect.name == "sqlite" and sqlite3.sqlite_version_info < SQLITE_DROP_COLUMN:
        raise StoreError(
            f"dropping a column needs SQLite {'.'.join(map(str, SQLITE_DROP_COLUMN))} or later; "
            f"this Python's sqlite3 has {sqlite3.sqlite_version}"
        )
    recorded: set[str] = set()
    if await cur.table_columns("_sgcache_entities"):
        recorded = {row[0] for row in await cur.execute("SELECT entity_type FROM _sgcache_entities")}
    dropped = []
    for table in sorted(tables):
        if table not in recorded:
            columns = await cur.table_columns(table)
            if not {"id", "_active", "_complete"} <= columns:
                continue  # not an entity table of ours
        for index in await _indexes_naming(cur, table, EVENT_ID_COLUMN):
            await cur.execute(f"DROP INDEX IF EXISTS {layout.quote(index)}")
        await cur.execute(
            f"ALTER TABLE {layout.quote(table)} DROP COLUMN {layout.quote(EVENT_ID_COLUMN)}"
        )
        dropped.append(table)
    return f"dropped {EVENT_ID_COLUMN} from {len(dropped)} entity tables"


#: every upgrade step, by the version it starts from (oldest first)
STEPS: list[Step] = [
    Step(1, f"entity tables lose the unused {EVENT_ID_COLUMN} column", drop_event_id),
]


# -- running them ----------------------------------------------------------------


async def stored_version(cur: SQLCursor, where: str, lock: bool = False) -> int | None:
    """The layout version the store records; None for a new store (no
    ``_sgcache_meta`` table, or no version in it). `lock`: hold the row for
    the rest of the transaction (PostgreSQL: a second process opening the
    store waits, then sees the upgraded version)."""
    if not await cur.table_columns("_sgcache_meta"):
        return None
    suffix = cur.dialect.lock_suffix if lock else ""
    rows = await cur.execute(
        f"SELECT value FROM _sgcache_meta WHERE key = ?{suffix}", [layout.LAYOUT_VERSION_KEY]
    )
    if not rows:
        return None
    try:
        return int(rows[0][0])
    except (TypeError, ValueError):
        raise StoreError(f"{where}: unreadable layout version {rows[0][0]!r}") from None


def steps_from(version: int, where: str) -> list[Step]:
    """The steps from `version` to `layout.LAYOUT_VERSION`, in order."""
    by_version = {step.from_version: step for step in STEPS}
    out = []
    for current in range(version, layout.LAYOUT_VERSION):
        step = by_version.get(current)
        if step is None:
            raise StoreError(
                f"{where}: database layout version {version} has no upgrade path to "
                f"{layout.LAYOUT_VERSION} (no step from version {current})"
            )
        out.append(step)
    return out


async def run_steps(cur: SQLCursor, version: int, where: str) -> None:
    """Run the steps from `version` on, inside the caller's transaction,
    with one log line each. The caller records the new version in the same
    transaction. A step's failure (its `StoreError`, or the database's
    error) becomes one `StoreError` line naming the step; the caller's
    transaction then rolls back."""
    for step in steps_from(version, where):
        try:
            done = await step.run(cur)
        except Exception as e:
            # a dead PostgreSQL connection is the store's to retry (the
            # whole opening transaction, upgrade included, runs again)
            if connection_failed(e):
                raise
            raise StoreError(
                f"{where}: layout upgrade {step.from_version} -> {step.to_version} "
                f"({step.what}) failed: {_first_line(e)}"
            ) from e
        log.info(
            "{where}: layout upgrade {old} -> {new}: {what} ({done})",
            where=where, old=step.from_version, new=step.to_version, what=step.what, done=done,
        )


def backup_path(path: str, version: int) -> str:
    """A free name next to the SQLite file for its copy at `version`:
    ``<path>.layout-v<version>.backup`` (``.1``, ``.2``... appended when
    taken: an earlier backup is never overwritten)."""
    base = f"{path}.layout-v{version}.backup"
    candidate, n = base, 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}.{n}"
    return candidate


def backup_sqlite(conn: sqlite3.Connection, path: str, version: int) -> str:
    """Copy the database `conn` has open (consistent, even in WAL mode, with
    `sqlite3.Connection.backup`) to `backup_path`; the copy's path."""
    target = backup_path(path, version)
    try:
        copy = sqlite3.connect(target)
        try:
            conn.backup(copy)
        finally:
            copy.close()
    except (sqlite3.Error, OSError) as e:
        raise StoreError(
            f"{path}: cannot back up the database to {target} before upgrading its layout: "
            f"{_first_line(e)}"
        ) from None
    return target


# -- the catalogue, per dialect --------------------------------------------------


async def _tables_with_column(cur: SQLCursor, column: str) -> set[str]:
    """Tables of the store (PostgreSQL: of its schema) with `column`."""
    if cur.dialect.name == "sqlite":
        rows = await cur.execute(
            "SELECT m.name FROM sqlite_master AS m, pragma_table_info(m.name) AS c "
            "WHERE m.type = 'table' AND c.name = ?",
            [column],
        )
    else:
        rows = await cur.execute(
            "SELECT table_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND column_name = ?",
            [column],
        )
    return {row[0] for row in rows}


async def _indexes_naming(cur: SQLCursor, table: str, column: str) -> list[str]:
    """Indexes of `table` whose definition names `column` (in its keys or
    its WHERE), but those of constraints."""
    if cur.dialect.name == "sqlite":
        rows = await cur.execute(
            "SELECT name, sql FROM sqlite_master "
            "WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            [table],
        )
    else:
        rows = await cur.execute(
            "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index AS x "
            "JOIN pg_class AS i ON i.oid = x.indexrelid "
            "JOIN pg_class AS t ON t.oid = x.indrelid "
            "JOIN pg_namespace AS n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema() AND t.relname = ? "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k WHERE k.conindid = x.indexrelid)",
            [table],
        )
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(column)}(?![A-Za-z0-9_])")
    return sorted(name for name, sql in rows if word.search(sql))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
