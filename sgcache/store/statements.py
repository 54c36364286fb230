"""Building and running write statements: id lists as SQL conditions,
multi-row inserts (PostgreSQL: rows as one JSON parameter), statements run
one after another while the next is built."""

from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

from twisted.internet import defer

from sgcache.store import layout
from sgcache.store.dialect import Dialect, SQLCursor


Statement = tuple[str, list[Any]]

CHUNK = 500

#: bound parameters per statement (SQLite's default limit is 32766)
MAX_PARAMS = 32000


def per_statement(width: int) -> int:
    """Rows per multi-row statement of `width` parameters a row."""
    return max(1, min(CHUNK, MAX_PARAMS // max(1, width)))


def id_conditions(dialect: Dialect, column: str, id_list: list[int]) -> Iterator[tuple[str, list[Any]]]:
    """(SQL condition, params) pairs that together match `column` against
    the ints of `id_list`, in order: one array parameter where the dialect
    takes it, else ``IN`` lists of at most CHUNK.

    The array form also bounds `column` by the ids' range: redundant, but it
    keeps PostgreSQL on the index while the table is young and unanalyzed
    (else it reads the whole table for every batch until it has ~50k rows)."""
    if not id_list:
        return
    if dialect.id_arrays:
        ints = [int(i) for i in id_list]
        literal = "{" + ",".join(map(str, ints)) + "}"
        yield (
            f"{column} = ANY(?::{dialect.id_type}[]) AND {column} BETWEEN ? AND ?",
            [literal, min(ints), max(ints)],
        )
        return
    for start in range(0, len(id_list), CHUNK):
        chunk = id_list[start : start + CHUNK]
        yield f"{column} IN ({', '.join('?' * len(chunk))})", chunk


async def run_pipelined(cur: SQLCursor, statements: Iterator[Statement]) -> None:
    """Run `statements` in order, building each (the generator's work) while
    the previous one runs on the server."""
    pending: defer.Deferred | None = None
    try:
        for sql, params in statements:
            if pending is not None:
                await pending
            pending = defer.ensureDeferred(cur.execute(sql, params))
    except BaseException:
        if pending is not None and not pending.called:
            try:
                await pending
            except Exception:
                pass
        raise
    if pending is not None:
        await pending


def insert_statements(
    dialect: Dialect,
    table: str,
    cols: tuple[str, ...],
    value_rows: list[list[Any]],
    suffix: str = "",
    types: Sequence[str] | None = None,
) -> Iterator[Statement]:
    """Multi-row ``INSERT INTO table (cols) VALUES ...`` (+ `suffix`), chunked
    within the bound-parameter limit. Where the dialect allows and the SQL
    `types` of the columns are given, rows whose values are what their
    columns hold (int / float / str / None) go as one JSON parameter instead,
    far less to format and parse than thousands of literals (see
    `json_rows`)."""
    names = ", ".join(layout.quote(c) for c in cols)
    if dialect.json_rows and types is not None and value_rows:
        shaped = json_rows(types, value_rows)
        if shaped is not None:
            exprs, params = shaped
            yield (
                f"INSERT INTO {table} ({names}) SELECT {exprs} "
                f"FROM jsonb_array_elements(?::jsonb) AS r{suffix}",
                params,
            )
            return
    head = f"INSERT INTO {table} ({names}) VALUES "
    mark = "(" + ", ".join("?" * len(cols)) + ")"
    step = per_statement(len(cols))
    for start in range(0, len(value_rows), step):
        chunk = value_rows[start : start + step]
        yield head + ", ".join([mark] * len(chunk)) + suffix, [p for values in chunk for p in values]


_NONE = type(None)

#: Python types a column of each SQL type takes unchanged through JSON
_JSON_TYPES = {
    "BIGINT": frozenset([int, _NONE]),
    "INTEGER": frozenset([int, _NONE]),
    "SMALLINT": frozenset([int, _NONE]),
    "DOUBLE PRECISION": frozenset([int, float, _NONE]),
    "TEXT": frozenset([str, _NONE]),
}


def json_rows(types: Sequence[str], value_rows: list[list[Any]]) -> tuple[str, list[Any]] | None:
    """The select list and parameters that produce `value_rows` from rows
    ``r`` of one JSON array of arrays (the last parameter); None when some
    value is not plainly what its column holds (a bool, bytes, NaN, text in
    a number column...): those rows go as literals.

    A column holding one int / text / NULL value in every row (``_active``,
    a link's type, most of an update-log entry...) is bound once instead of
    sent and cast per row."""
    columns = list(zip(*value_rows))
    exprs: list[str] = []
    constants: list[Any] = []
    varying: list[tuple] = []
    for sqltype, column in zip(types, columns):
        kinds = set(map(type, column))
        allowed = _JSON_TYPES.get(sqltype)
        if allowed is None or not kinds <= allowed:
            return None
        if float not in kinds and column.count(column[0]) == len(column):
            exprs.append(f"?::{sqltype}")
            constants.append(column[0])
        else:
            exprs.append(f"(r->>{len(varying)})::{sqltype}")
            varying.append(column)
    if not varying:
        # every column constant: the rows still have to be counted out
        exprs[0] = f"(r->>0)::{types[0]}"
        del constants[0]
        varying.append(columns[0])
    try:
        doc = json.dumps(
            list(zip(*varying)), allow_nan=False, ensure_ascii=False, separators=(",", ":")
        )
    except ValueError:
        return None
    return ", ".join(exprs), [*constants, doc]
