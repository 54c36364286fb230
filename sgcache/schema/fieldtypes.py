"""Data types as the cache stores them: one `FieldType` per Shotgun data type,
owning its SQL column(s), its encode (wire value -> DB value) and decode
(DB value -> wire value), and whether the cache can hold it at all.

Adding a cacheable data type means adding one entry to `FIELD_TYPES`.

Storage conventions (both stores):

* text-like values as TEXT; number-like as INTEGER (BIGINT); float-like as
  REAL / DOUBLE PRECISION; checkbox as INTEGER 0/1;
* date as ``YYYY-MM-DD`` text, date_time as the 20-character wire form
  ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), so text order is time order;
* entity as two columns ``<field>__type`` / ``<field>__id``;
* multi_entity in an association table (see `sgcache.store.layout`);
* tag_list, url, serializable as JSON text.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any, Callable


def _ident(value: Any) -> Any:
    return value


def _to_int(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    return int(value)


def _to_float(value: Any) -> Any:
    if value is None:
        return None
    return float(value)


def _to_json(value: Any) -> Any:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _from_json(value: Any) -> Any:
    if value is None:
        return None
    return json.loads(value)


def _checkbox_in(value: Any) -> int:
    return 1 if value else 0


def _checkbox_out(value: Any) -> bool:
    return bool(value)


def _tags_out(value: Any) -> list:
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


def _datetime_in(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is str and _wire_datetime(value) is not None:
        return value  # already the canonical wire form (the usual case)
    if isinstance(value, datetime.datetime):
        return format_datetime(value)
    return format_datetime(parse_datetime(str(value)))


def _date_in(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    return datetime.date.fromisoformat(str(value)[:10]).isoformat()


@dataclass(frozen=True)
class FieldType:
    """How one Shotgun data type lives in the store."""

    name: str
    #: SQL type per dialect for the single value column; None for types that
    #: need their own layout (entity, multi_entity).
    sqlite_type: str | None
    postgres_type: str | None
    encode: Callable[[Any], Any] = _ident
    decode: Callable[[Any], Any] = _ident
    #: True when values compare case-insensitively as text.
    textual: bool = False
    #: True when the planner may sort on this column directly.
    sortable: bool = True
    #: values of exactly this Python type are stored as given: `encode`
    #: would return them unchanged, so it may be skipped (None: never)
    native: type | None = None


FIELD_TYPES: dict[str, FieldType] = {
    t.name: t
    for t in [
        FieldType("text", "TEXT", "TEXT", textual=True),
        FieldType("color", "TEXT", "TEXT", textual=True),
        FieldType("entity_type", "TEXT", "TEXT", textual=True),
        FieldType("uuid", "TEXT", "TEXT", textual=True),
        FieldType("list", "TEXT", "TEXT", textual=True),
        FieldType("status_list", "TEXT", "TEXT", textual=True),
        FieldType("number", "INTEGER", "BIGINT", _to_int, native=int),
        FieldType("duration", "INTEGER", "BIGINT", _to_int, native=int),
        FieldType("percent", "INTEGER", "BIGINT", _to_int, native=int),
        FieldType("timecode", "INTEGER", "BIGINT", _to_int, native=int),
        FieldType("float", "REAL", "DOUBLE PRECISION", _to_float, native=float),
        FieldType("currency", "REAL", "DOUBLE PRECISION", _to_float, native=float),
        FieldType("checkbox", "INTEGER", "SMALLINT", _checkbox_in, _checkbox_out),
        FieldType("date", "TEXT", "TEXT", _date_in),
        FieldType("date_time", "TEXT", "TEXT", _datetime_in),
        FieldType("tag_list", "TEXT", "TEXT", _to_json, _tags_out, sortable=False),
        FieldType("url", "TEXT", "TEXT", _to_json, _from_json, sortable=False),
        FieldType("serializable", "TEXT", "TEXT", _to_json, _from_json, sortable=False),
        FieldType("entity", None, None, sortable=False),
        FieldType("multi_entity", None, None, sortable=False),
    ]
}

#: Data types the cache never holds (values are signed URLs, secrets or
#: computed server-side): reads touching them pass through.
UNCACHEABLE = frozenset(
    ["image", "password", "pivot_column", "summary", "calculated", "footage", "system_task_type"]
)


def is_cacheable(data_type: str) -> bool:
    return data_type in FIELD_TYPES


def get_type(data_type: str) -> FieldType:
    return FIELD_TYPES[data_type]
