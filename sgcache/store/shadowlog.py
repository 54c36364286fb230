"""The shadow checks' table of mismatches (``_sgcache_shadow``): one row per
read shape whose local answer differed from the site's as of the same event
(`sgcache.web.shadow`), with a reproducer, the first difference, when it was
first and last seen, how often and by which daemon. Bounded to `MAX_ROWS`
(the shapes seen longest ago go first). Written by the daemons, listed by
``sgcache shadow report``, emptied by ``sgcache shadow clear``. Not data:
no read generation moves for it, and no fence (any daemon of a cluster
records its own checks)."""

from __future__ import annotations

from typing import Any

from sgcache.store.dialect import Dialect, SQLCursor

#: rows kept
MAX_ROWS = 100

COLUMNS = ("shape", "first_at", "last_at", "count", "args", "difference", "node")


def shadow_ddl(dialect: Dialect) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS _sgcache_shadow (shape TEXT PRIMARY KEY, "
        "first_at DOUBLE PRECISION NOT NULL, last_at DOUBLE PRECISION NOT NULL, "
        "count INTEGER NOT NULL, args TEXT, difference TEXT, node TEXT)",
    ]


async def record_mismatch(cur: SQLCursor, entry: dict[str, Any]) -> None:
    """Add one mismatch (``shape, args, difference, at, node``): a new row,
    or one more to its shape's."""
    await cur.execute(
        "INSERT INTO _sgcache_shadow (shape, first_at, last_at, count, args, difference, node) "
        "VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (shape) DO UPDATE SET "
        "last_at = excluded.last_at, count = _sgcache_shadow.count + 1, args = excluded.args, "
        "difference = excluded.difference, node = excluded.node",
        [entry["shape"], entry["at"], entry["at"], entry["args"], entry["difference"], entry["node"]],
    )
    await cur.execute(
        "DELETE FROM _sgcache_shadow WHERE shape NOT IN "
        f"(SELECT shape FROM _sgcache_shadow ORDER BY last_at DESC LIMIT {MAX_ROWS})"
    )


async def clear_mismatches(cur: SQLCursor) -> int:
    rows = await cur.execute("SELECT count(*) FROM _sgcache_shadow")
    await cur.execute("DELETE FROM _sgcache_shadow")
    return int(rows[0][0]) if rows else 0


LIST_SQL = f"SELECT {', '.join(COLUMNS)} FROM _sgcache_shadow ORDER BY last_at DESC"


def rows_to_entries(rows: list[tuple]) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row)) for row in rows]
