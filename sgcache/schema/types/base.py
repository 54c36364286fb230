"""What every data type module of `sgcache.schema.types` declares: the
`DataType` record, the codecs the types share, and the relation families.

A data type owns, in its module:

* its storage: one column (`sql_types`, per dialect), a link (type and id
  columns) or links (an association table), and its wire codec (`encode`
  wire value -> stored value, `decode` back);
* its filter relations (`relations`: what a filter on it may use) and how
  the read planner compiles them (`filter`: one of the planner's leaf
  strategies);
* how a sort key on it is ordered (`sort`: the planner's sort strategy;
  None: the key is ignored, as Shotgun ignores it);
* what a link shows as `name` when this is its type's identifier
  (`as_name` and `link_name`).

Storage conventions (both stores): text-like values as TEXT; number-like as
INTEGER (BIGINT); float-like as REAL / DOUBLE PRECISION; checkbox as INTEGER
0/1; date as ``YYYY-MM-DD`` text, date_time as the 20-character wire form
``YYYY-MM-DDTHH:MM:SSZ`` (UTC), so text order is time order; tag_list, url,
serializable as JSON text.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

def identity(value: Any) -> Any:
    return value


def to_int(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    return int(value)


def to_float(value: Any) -> Any:
    if value is None:
        return None
    return float(value)


def to_json(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is list and not value:  # most tag lists: json.dumps's own text, without its cost
        return "[]"
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def from_json(value: Any) -> Any:
    if value is None:
        return None
    return json.loads(value)


def checkbox_in(value: Any) -> int:
    return 1 if value else 0


def checkbox_out(value: Any) -> bool:
    return bool(value)


def tags_out(value: Any) -> list:
    if value is None:
        return []
    return json.loads(value)


#: The canonical wire form of a date_time (years 1000-9999: below that,
#: ``strftime("%Y")`` does not zero-pad, so such values take the general path).
_WIRE_DATETIME = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def format_datetime(value: datetime.datetime) -> str:
    """A datetime as the 20-character UTC wire form."""
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if type(value) is datetime.datetime and value.year >= 1000:
        # what strftime below gives, at a fraction of its cost
        return value.isoformat(timespec="seconds") + "Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_timestamp(seconds: float | None) -> str | None:
    """Epoch seconds (a reactor time) in the same UTC wire form; None for
    None."""
    if seconds is None:
        return None
    return format_datetime(datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc))


def _wire_datetime(value: str) -> datetime.datetime | None:
    """The wire form parsed, when `value` is exactly a valid canonical one."""
    if len(value) != 20 or _WIRE_DATETIME.fullmatch(value) is None:
        return None
    try:
        return datetime.datetime.fromisoformat(value[:19])
    except ValueError:
        return None  # an invalid date: the general path says why


def parse_datetime(value: str) -> datetime.datetime:
    """Parse the wire form (and a few tolerated variants) to a naive UTC datetime."""
    if type(value) is str:
        parsed = _wire_datetime(value)
        if parsed is not None:
            return parsed
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


def datetime_in(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is str and _wire_datetime(value) is not None:
        return value  # already the canonical wire form (the usual case)
    if isinstance(value, datetime.datetime):
        return format_datetime(value)
    return format_datetime(parse_datetime(str(value)))


def date_in(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    return datetime.date.fromisoformat(str(value)[:10]).isoformat()


#: storage kinds
COLUMN, LINK, LINKS = "column", "link", "links"


@dataclass(frozen=True)
class DataType:
    """One Shotgun data type, as the cache holds it (see the module doc)."""

    name: str
    #: COLUMN (one column), LINK (``<field>__type`` + ``<field>__id``) or
    #: LINKS (an association table)
    storage: str = COLUMN
    #: the column's SQL type: (SQLite, PostgreSQL)
    sql_types: tuple[str, str] = ("TEXT", "TEXT")
    encode: Callable[[Any], Any] = identity
    decode: Callable[[Any], Any] = identity
    #: values of exactly this Python type are stored as given (`encode`
    #: would return them unchanged, so it may be skipped; None: never)
    native: type | None = None
    #: the relations a filter on it may use
    relations: frozenset[str] = frozenset()
    #: the read planner's leaf strategy for its filters (None: not filterable
    #: locally)
    filter: str | None = None
    #: the read planner's sort strategy (None: a sort key on it is ignored)
    sort: str | None = None
    #: as a type's identifier, what a link's ``name`` is: "text" (compared
    #: and sorted like text), "value" (returned only) or None (not cacheable)
    as_name: str | None = None
    #: stored value -> a link's ``name`` (None: `decode`)
    link_name: Callable[[Any], Any] | None = None
    #: False for types the cache never holds (their values are signed URLs,
    #: secrets or computed by the site): reads touching them pass through
    cacheable: bool = True

    @property
    def textual(self) -> bool:
        """Values compare case-insensitively as text."""
        return self.filter == "text"

    def sql_type(self, dialect: str) -> str:
        """The column's SQL type in a dialect ("sqlite" / "postgresql")."""
        if self.storage != COLUMN:
            raise ValueError(f"{self.name} is not stored in one column")
        return self.sql_types[0] if dialect == "sqlite" else self.sql_types[1]

    def name_of(self, stored: Any) -> Any:
        """A link's ``name`` from the stored value of its target's identifier."""
        if stored is None:
            return None
        if self.link_name is not None:
            return self.link_name(stored)
        return self.decode(stored)


def _relations(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: relation families (a data type module lists its own; these are shared)
FREE_TEXT = _relations("is is_not contains not_contains starts_with ends_with in not_in")
CHOICE = _relations("is is_not in not_in")
NUMERIC = _relations("is is_not less_than greater_than between not_between in not_in")
#: Shotgun's table lists no not_between for float, percent, duration and
#: timecode (the emulator accepts it, docs/emulator.md): a filter with it
#: passes through, and
#: the site answers (or refuses) it
NUMERIC_NO_NOT_BETWEEN = NUMERIC - {"not_between"}
DATES = _relations(
    """is is_not greater_than less_than in_last not_in_last in_next not_in_next
    in_calendar_day in_calendar_week in_calendar_month in_calendar_year
    between in not_in""")
