"""The update log: what apply changed, written in the same transaction
(one ``_sgcache_updates`` row per applied change that wrote something,
with where it came from; a change that found the store already holding
what it carried writes nothing and is not logged, whatever its source),
read by ``sgcache log`` and pruned by `sgcache.sync.updatelog`."""

from __future__ import annotations

from typing import Any, Iterator

from sgcache.schema.changes import EntityChange
from sgcache.store.dialect import Dialect, SQLCursor
from sgcache.store.statements import Statement, insert_statements


def update_log_ddl(dialect: Dialect) -> list[str]:
    seq = "INTEGER PRIMARY KEY" if dialect.name == "sqlite" else "BIGSERIAL PRIMARY KEY"
    return [
        f"CREATE TABLE IF NOT EXISTS _sgcache_updates (seq {seq}, entity_type TEXT NOT NULL, "
        f"entity_id {dialect.id_type} NOT NULL, fields TEXT, source TEXT, "
        f"event_id {dialect.id_type}, at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ix__sgcache_updates__entity "
        "ON _sgcache_updates (entity_type, entity_id)",
        "CREATE INDEX IF NOT EXISTS ix__sgcache_updates__at ON _sgcache_updates (at)",
    ]


_LOG_COLUMNS = ("entity_type", "entity_id", "fields", "source", "event_id", "at")


def _log_types(dialect: Dialect) -> tuple[str, ...]:
    return ("TEXT", dialect.id_type, "TEXT", "TEXT", dialect.id_type, "DOUBLE PRECISION")


def log_statements(dialect: Dialect, entries: list[tuple], now: float) -> Iterator[Statement]:
    """Insert (entity_type, entity_id, fields, source, event_id) entries."""
    return insert_statements(
        dialect, "_sgcache_updates", _LOG_COLUMNS, [[*e, now] for e in entries],
        types=_log_types(dialect),
    )


async def prune_update_log(cur: SQLCursor, before: float) -> int:
    """Delete update-log entries older than `before`; how many went."""
    rows = await cur.execute("SELECT COUNT(*) FROM _sgcache_updates WHERE at < ?", [before])
    await cur.execute("DELETE FROM _sgcache_updates WHERE at < ?", [before])
    return int(rows[0][0]) if rows else 0


def clock_now(reactor: Any) -> float:
    """The store's notion of now for update-log entries (its reactor's clock)."""
    if reactor is None:
        import time

        return time.time()
    return float(reactor.seconds())


def log_entry(change: EntityChange, what: str | None = None) -> tuple:
    """The entry of a change that wrote something (apply calls it for no
    other): its fields (the event's attribute names, ``*`` for a whole
    re-read row, else those given) or `what` (``(deleted)``)."""
    if what is None:
        if change.changed_fields:
            what = ",".join(sorted(change.changed_fields))
        elif change.complete:
            what = "*"
        else:
            what = ",".join(sorted(change.fields))
    return (change.entity_type, int(change.entity_id), what, change.source, change.event_id)
