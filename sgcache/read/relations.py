"""Filter relations as SQL: the per-data-type half of the read planner.

Everything here mirrors the emulator's read engine (`sgcache.testing.filters`,
documented in docs/emulator.md, "Reads") exactly; whatever the engine would
answer with a fault, or whatever the store cannot decide exactly, raises
`PassThrough` so the site answers instead.

SQL is built from `Q` fragments (text plus its ``?`` parameters, kept in text
order). Entity type names are inlined as SQL literals (they are checked
identifiers); client values always travel as parameters.

Positive relations are compiled to predicates that may be SQL NULL where they
are false; a negation wraps its positive relation in ``NOT COALESCE(.., FALSE)``
so it is the exact complement, NULL rows included.
"""

from __future__ import annotations

import calendar
import datetime
from typing import Any, Iterable, Sequence

from sgcache.schema.types import DATA_TYPES, format_datetime, parse_datetime
from sgcache.read.reasons import PassThrough
from sgcache.store import layout
from sgcache.store.prepared import literal_type

#: Relations accepted per data type, as each data type declares them
#: (`sgcache.schema.types`); anything else passes through (the site faults).
RELATIONS: dict[str, frozenset[str]] = {
    name: dtype.relations for name, dtype in DATA_TYPES.items() if dtype.relations
}

#: Negated relation -> the positive relation it is the complement of.
NEGATIONS = {
    "is_not": "is",
    "not_in": "in",
    "not_contains": "contains",
    "not_between": "between",
    "name_not_contains": "name_contains",
    "type_is_not": "type_is",
    "not_in_last": "in_last",
    "not_in_next": "in_next",
}

UNITS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")


# -- SQL fragments -----------------------------------------------------------


class Q:
    """A SQL fragment and its parameters, in text order."""

    __slots__ = ("sql", "params")

    def __init__(self, sql: str, params: Iterable[Any] = ()):
        self.sql = sql
        self.params = list(params)

    def __repr__(self) -> str:
        return f"Q({self.sql!r}, {self.params!r})"


TRUE = Q("TRUE")
FALSE = Q("FALSE")


def param(value: Any) -> Q:
    return Q("?", [value])


def fmt(template: str, *parts: Any) -> Q:
    """Fill each ``{}`` of `template` with a part (a Q or plain SQL text)."""
    pieces = template.split("{}")
    if len(pieces) != len(parts) + 1:
        raise ValueError(f"template {template!r} wants {len(pieces) - 1} parts, got {len(parts)}")
    sql = [pieces[0]]
    params: list[Any] = []
    for part, piece in zip(parts, pieces[1:]):
        if isinstance(part, Q):
            sql.append(part.sql)
            params.extend(part.params)
        else:
            sql.append(str(part))
        sql.append(piece)
    return Q("".join(sql), params)


def join(sep: str, parts: Sequence[Q]) -> Q:
    return Q(sep.join(p.sql for p in parts), [x for p in parts for x in p.params])


def in_list(dialect: str, expr: str, wanted: Sequence[Any]) -> Q:
    """`expr` equal to one of `wanted` (no None). On PostgreSQL a list of
    ints or of texts goes as one array parameter, ``= ANY(?)``: the same
    prepared statement whatever the count, which the server plans once;
    with one parameter per value it may plan the read again every time
    (``NOT (x = ANY(a))`` keeps ``NOT IN``'s NULL semantics)."""
    if dialect == "postgresql" and literal_type(list(wanted)) is not None:
        return Q(f"{expr} = ANY(?)", [list(wanted)])
    return Q(f"{expr} IN ({', '.join('?' for _ in wanted)})", wanted)


def any_of(parts: Sequence[Q]) -> Q:
    if not parts:
        return FALSE
    if len(parts) == 1:
        return parts[0]
    return fmt("({})", join(" OR ", [fmt("({})", p) for p in parts]))


def all_of(parts: Sequence[Q]) -> Q:
    if not parts:
        return TRUE
    if len(parts) == 1:
        return parts[0]
    return fmt("({})", join(" AND ", [fmt("({})", p) for p in parts]))


def negate(q: Q) -> Q:
    """The exact complement of a positive predicate (NULL counts as false)."""
    return fmt("NOT COALESCE(({}), FALSE)", q)


def literal(entity_type: str) -> str:
    """An entity type name as a SQL string literal (names are identifiers)."""
    layout.quote(entity_type)  # validates
    return f"'{entity_type}'"


def col(alias: str, name: str) -> str:
    return f"{alias}.{layout.quote(name)}"


# -- dialect text helpers ----------------------------------------------------

#: Python's str.lower() maps U+0130 to "i" + U+0307; PostgreSQL's lower()
#: (glibc, UTF-8 ctype) maps it to a plain "i". Every other character of
#: the BMP and SMP lowers the same way (measured), except the context-
#: dependent final sigma, handled by `check_value`.
_PG_DOTTED_I = "replace({}, '\u0130', 'i\u0307')"
_SIGMAS = ("\u03c3", "\u03c2")


class Text:
    """Case-insensitive text operations in one SQL dialect, matching
    Python's str.lower() semantics."""

    def __init__(self, dialect: str):
        self.dialect = dialect

    def lower(self, expr: str) -> str:
        """`expr` folded as Python's str.lower() does; on PostgreSQL compared
        by code point (``COLLATE "C"``, whatever the database's locale), so
        one index (see `sgcache.store.ddl.read_index_ddl`) serves both the
        case-insensitive relations and sorts."""
        if self.dialect == "postgresql":
            return f'(lower({_PG_DOTTED_I.format(expr)}) COLLATE "C")'
        return f"lower({expr})"

    def check_value(self, lowered: str) -> None:
        """A (lowered) text filter value the store can compare exactly.

        PostgreSQL lowers a capital sigma to "σ" everywhere, Python to "ς"
        at the end of a word: the two agree on every comparison unless the
        value itself holds a sigma. PostgreSQL text cannot hold NUL. A lone
        surrogate is no text a store can be sent."""
        if self.dialect == "postgresql":
            if any(s in lowered for s in _SIGMAS):
                raise PassThrough("text value with a Greek sigma on postgresql")
            if "\x00" in lowered:
                raise PassThrough("text value with a NUL character on postgresql")
        try:
            lowered.encode("utf-8")
        except UnicodeEncodeError:
            raise PassThrough("text value not valid Unicode") from None

    def contains(self, low_expr: str, value: str) -> Q:
        if self.dialect == "postgresql":
            return fmt("strpos({}, {}) > 0", low_expr, param(value))
        return fmt("instr({}, {}) > 0", low_expr, param(value))

    def starts_with(self, low_expr: str, value: str) -> Q:
        if self.dialect == "postgresql":
            return fmt("strpos({}, {}) = 1", low_expr, param(value))
        return fmt("instr({}, {}) = 1", low_expr, param(value))

    def ends_with(self, low_expr: str, value: str) -> Q:
        n = len(value)
        if self.dialect == "postgresql":
            return fmt(f"right({{}}, {n}) = {{}}", low_expr, param(value))
        return fmt(f"substr({{}}, -{n}) = {{}}", low_expr, param(value))

    def collate(self, expr: str) -> str:
        """An ORDER BY key comparing by code point."""
        if self.dialect == "postgresql":
            return f'{expr} COLLATE "C"'
        return expr


def text_match(text: Text, expr: str, relation: str, wanted: str) -> Q:
    """contains / starts_with / ends_with / is of a non-null lowered string
    against the raw column expression `expr` (NULL never matches)."""
    low = wanted.lower()
    text.check_value(low)
    lowered = text.lower(expr)
    if relation in ("is", "name_is"):
        return fmt(f"{lowered} = {{}}", param(low))
    if low == "":
        return Q(f"{expr} IS NOT NULL")
    if relation in ("contains", "name_contains"):
        return text.contains(lowered, low)
    if relation in ("starts_with", "name_starts_with"):
        return text.starts_with(lowered, low)
    if relation in ("ends_with", "name_ends_with"):
        return text.ends_with(lowered, low)
    raise PassThrough("unsupported relation", relation)


# -- value conversion (as strict as the engine) ---------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: integers both stores hold (64-bit); a filter on a bigger one passes through
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def check_int(value: int) -> int:
    if not INT_MIN <= value <= INT_MAX:
        raise PassThrough("number out of the store's range")
    return value


def conv_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PassThrough("filter value of the wrong type", "number")
    if isinstance(value, float) and value != value:
        raise PassThrough("filter value of the wrong type", "NaN")
    if isinstance(value, int):
        check_int(value)
    return value


def conv_date(value: Any) -> str:
    if not isinstance(value, str):
        raise PassThrough("filter value of the wrong type", "date")
    try:
        return datetime.date.fromisoformat(value[:10]).isoformat()
    except ValueError:
        raise PassThrough("filter value of the wrong type", "date") from None


def conv_datetime(value: Any) -> str:
    if not isinstance(value, str):
        raise PassThrough("filter value of the wrong type", "date_time")
    try:
        parsed = parse_datetime(value)
    except (ValueError, TypeError):
        raise PassThrough("filter value of the wrong type", "date_time") from None
    if parsed.year < 1000:
        raise PassThrough("filter value of the wrong type", "date_time before year 1000")
    return format_datetime(parsed)


# -- relative dates (the engine's arithmetic, verbatim) -------------------------


def add_months(value: Any, months: int) -> Any:
    """Shift a date/datetime by whole calendar months, clamping the day."""
    index = value.year * 12 + (value.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


def calendar_range(today: datetime.date, unit: str, offset: int) -> tuple[datetime.date, datetime.date]:
    if unit == "day":
        d = today + datetime.timedelta(days=offset)
        return d, d
    if unit == "week":
        start = today - datetime.timedelta(days=today.weekday()) + datetime.timedelta(days=7 * offset)
        return start, start + datetime.timedelta(days=6)
    if unit == "month":
        start = add_months(today.replace(day=1), offset)
        end = add_months(start, 1) - datetime.timedelta(days=1)
        return start, end
    if unit == "year":
        year = today.year + offset
        return datetime.date(year, 1, 1), datetime.date(year, 12, 31)
    raise PassThrough("unsupported relation", f"in_calendar_{unit}")


class Clock:
    """One request's "now" (naive UTC, whole seconds) and the site's tz.

    The emulator's engine computes the same periods on its own
    (`sgcache.testing.filters`); the two are kept separate on purpose, so
    the differential tests compare two implementations, not one with itself.
    """

    def __init__(self, now: datetime.datetime, tz: datetime.tzinfo):
        if now.tzinfo is not None:
            now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        self.now_utc = now.replace(microsecond=0)
        self.tz = tz
        self.now_local = self.now_utc.replace(tzinfo=datetime.timezone.utc).astimezone(tz)
        self.today = self.now_local.date()

    @staticmethod
    def relative_args(values: list) -> tuple[int, str]:
        if len(values) != 2:
            raise PassThrough("bad relative date arguments")
        n, unit = values
        if not is_int(n) or not isinstance(unit, str) or unit.upper() not in UNITS:
            raise PassThrough("bad relative date arguments")
        return n, unit.upper()

    def shift_datetime(self, n: int, unit: str) -> datetime.datetime:
        if unit in ("HOUR", "DAY", "WEEK"):
            hours = {"HOUR": 1, "DAY": 24, "WEEK": 24 * 7}[unit]
            return self.now_utc + datetime.timedelta(hours=hours * n)
        months = n if unit == "MONTH" else 12 * n
        local = add_months(self.now_local, months)
        return local.astimezone(datetime.timezone.utc).replace(tzinfo=None)

    def shift_date(self, n: int, unit: str) -> datetime.date:
        if unit == "HOUR":
            return (self.now_local + datetime.timedelta(hours=n)).date()
        if unit == "DAY":
            return self.today + datetime.timedelta(days=n)
        if unit == "WEEK":
            return self.today + datetime.timedelta(days=7 * n)
        return add_months(self.today, n if unit == "MONTH" else 12 * n)

    def date_range(self, relation: str, values: list) -> tuple[datetime.date, datetime.date]:
        try:
            return self._date_range(relation, values)
        except (OverflowError, ValueError):
            raise PassThrough("relative date out of range") from None

    def _date_range(self, relation: str, values: list) -> tuple[datetime.date, datetime.date]:
        if relation.startswith("in_calendar_"):
            if len(values) != 1 or not is_int(values[0]):
                raise PassThrough("bad relative date arguments")
            return calendar_range(self.today, relation[len("in_calendar_"):], values[0])
        n, unit = self.relative_args(values)
        if relation == "in_last":
            return self.shift_date(-n, unit), self.today
        if relation == "in_next":
            return self.today, self.shift_date(n, unit)
        raise PassThrough("unsupported relation", relation)

    def local_midnight_utc(self, day: datetime.date) -> datetime.datetime:
        """The UTC instant a local calendar day starts, when that is
        unambiguous (no UTC offset change within a day of it)."""
        try:
            local = datetime.datetime.combine(day, datetime.time(0), tzinfo=self.tz)
        except (OverflowError, ValueError):
            raise PassThrough("relative date out of range") from None
        offsets = {
            (local + datetime.timedelta(hours=h)).utcoffset() for h in (-26, -13, 0, 13, 26)
        }
        if len(offsets) != 1:
            raise PassThrough("calendar period edge near a time zone change")
        return local.astimezone(datetime.timezone.utc).replace(tzinfo=None)
