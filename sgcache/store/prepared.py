"""Server-side prepared statements for the PostgreSQL store's reads.

PostgreSQL parses and plans every query it is sent as text; for the cache's
reads that is most of the server's work (a find-one by code: ~0.15 ms of
planning for ~0.03 ms of execution; a 50-row read with two links: ~0.65 ms
for ~0.2 ms). A read sent as ``EXECUTE`` of a statement prepared on that
session once skips the parsing, and the planning too once PostgreSQL has
settled on a generic plan.

Exactness comes first, so a prepared statement must mean exactly what the
text query means. psycopg2 sends parameters as literals, whose types
PostgreSQL infers (``'x'`` and NULL are of unknown type, resolved by their
context; ``5`` is an integer, ``1.5`` a numeric...). `literal_type` declares
each parameter of the statement as that same type, so the statement is
resolved the way the literal text would be (a non-empty list of ints, which
psycopg2 writes ``ARRAY[1, 2]``, is an array of its widest element's type;
one of strings, ``ARRAY['a', 'b']``, is ``text[]``); a query with a
parameter of any other Python type is sent as text. The declared types are
part of a statement's key: the same text with an int where a float was is
another statement.

Statements are named with a random prefix per session cache, so a name can
never find another query's statement (not even through a pooler that
shares server sessions): at worst it is not found, and then the query runs
as text. Anything else that fails on its way to or through ``EXECUTE`` also
runs the query again as text, whose result (or error) is the answer.
"""

from __future__ import annotations

import datetime
import functools
import math
import secrets
from collections import OrderedDict
from typing import Any, Callable, Sequence

#: statements kept per session; past that, all are dropped and prepared anew
CAPACITY = 256
#: longer statements are never prepared (nor their rewrites memoized): with
#: CAPACITY, this bounds what a session keeps (both here and on the server)
#: to about CAPACITY x this, whatever clients send
PREPARED_SQL_CHARS = 8192
#: keys remembered as not preparable per session (then forgotten)
_UNPREPARABLE_CAPACITY = 1024


def rewrite_placeholders(sql: str, placeholder: Callable[[int], str]) -> str:
    """`sql` with each ``?`` outside quotes replaced by ``placeholder(n)``
    (n counts from 1) and each ``%`` doubled (psycopg2 formats the whole
    string when it is given parameters)."""
    out: list[str] = []
    quote: str | None = None
    n = 0
    for ch in sql:
        if ch == "%":
            out.append("%%")
        elif quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
            out.append(ch)
        elif ch == "?":
            n += 1
            out.append(placeholder(n))
        else:
            out.append(ch)
    return "".join(out)


def memoized_short(fn: Callable[[str], str]) -> Callable[[str], str]:
    """`fn` over SQL texts, memoized for texts of at most
    `PREPARED_SQL_CHARS` (the few shapes a farm sends again and again;
    1024 of them: a few MB at most)."""
    memo = functools.lru_cache(maxsize=1024)(fn)

    @functools.wraps(fn)
    def rewrite(sql: str) -> str:
        return memo(sql) if len(sql) <= PREPARED_SQL_CHARS else fn(sql)

    return rewrite


@memoized_short
def to_numbered(sql: str) -> str:
    """`sql` with ``$1, $2, ...`` for its ``?`` placeholders, ``%`` doubled."""
    return rewrite_placeholders(sql, lambda n: f"${n}")


def literal_type(value: Any) -> str | None:
    """The PostgreSQL type of `value` as psycopg2 writes it into a query,
    or None when a statement should not be prepared for it."""
    if value is None or isinstance(value, str):
        return "unknown"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if -(2**31) <= value < 2**31:
            return "integer"
        if -(2**63) <= value < 2**63:
            return "bigint"
        return "numeric"
    if isinstance(value, float):
        # 1.5 is a numeric literal; inf and nan are written 'Infinity'::float
        return "numeric" if math.isfinite(value) else "double precision"
    if isinstance(value, datetime.datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, list) and value:
        if all(type(v) is int for v in value):
            # ARRAY[1, 2]: an array of the type of its widest element
            widest = [literal_type(v) for v in value]
            for t in ("numeric", "bigint", "integer"):
                if t in widest:
                    return t + "[]"
        if all(type(v) is str for v in value):
            return "text[]"  # ARRAY['a', 'b']: its unknown literals resolve to text
    return None


def statement_key(sql: str, params: Sequence[Any]) -> tuple[str, tuple[str, ...]] | None:
    """What identifies a prepared statement; None when `sql` should go as
    text (too long to keep, or a parameter of a type not declared)."""
    if len(sql) > PREPARED_SQL_CHARS:
        return None
    types = []
    for value in params:
        t = literal_type(value)
        if t is None:
            return None
        types.append(t)
    return sql, tuple(types)


class SessionStatements:
    """The statements prepared on one PostgreSQL session (one psycopg2
    connection), by key; `session` is the connection they belong to."""

    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self.session: Any = None
        self._prefix = "sgq_" + secrets.token_hex(4) + "_"
        self._counter = 0
        #: key -> the EXECUTE text of its statement, least recently used first
        self._executes: OrderedDict[tuple, str] = OrderedDict()
        self._unpreparable: set[tuple] = set()

    def __len__(self) -> int:
        return len(self._executes)

    def bind(self, session: Any) -> None:
        """Forget everything when the connection is not the one the
        statements were prepared on (it reconnected)."""
        if session is not self.session:
            self.session = session
            self._executes.clear()
            self._unpreparable.clear()

    def query(self, key: tuple) -> tuple[str, bool] | None:
        """The text to send for `key`'s parameters, and whether it prepares
        a statement first; None when the query should go as plain text."""
        execute = self._executes.get(key)
        if execute is not None:
            self._executes.move_to_end(key)
            return execute, False
        if key in self._unpreparable:
            return None
        prefix = ""
        if len(self._executes) >= self.capacity:
            prefix = "DEALLOCATE ALL; "
            self._executes.clear()
        sql, types = key
        self._counter += 1
        name = f"{self._prefix}{self._counter}"
        execute = f"EXECUTE {name}" + (f" ({', '.join(['%s'] * len(types))})" if types else "")
        self._executes[key] = execute
        declared = f" ({', '.join(types)})" if types else ""
        return f"{prefix}PREPARE {name}{declared} AS {to_numbered(sql)}; {execute}", True

    def failed(self, key: tuple, preparing: bool) -> None:
        """The text `query` gave for `key` failed: run it as plain text
        from now on if it was being prepared; prepare it anew otherwise
        (the statement may be gone: ``DISCARD``, a pooler)."""
        self._executes.pop(key, None)
        if preparing:
            if len(self._unpreparable) >= _UNPREPARABLE_CAPACITY:
                self._unpreparable.clear()
            self._unpreparable.add(key)
