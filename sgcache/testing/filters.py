"""Filters of the Shotgun emulator's read engine: resolving (deep) field paths
over the emulator's mockgun-style db, following links, and compiling wire-form
filters into one predicate per query.

The db is ``{entity_type: {id: row}}``; a row holds ``type``, ``id``,
``__retired`` and field values in storage form (see `sgcache.testing.engine`).
A link whose target row is missing or retired is treated as absent everywhere.

Every negated relation (``is_not``, ``not_in``, ``not_contains``,
``not_between``, ``name_not_contains``, ``type_is_not``, ``not_in_last``,
``not_in_next``) is the exact complement of its positive relation, which is
what Shotgun's NULL handling amounts to: negations include NULL rows.
The semantics are documented in docs/emulator.md ("Reads").
"""

from __future__ import annotations

import calendar
import datetime
from dataclasses import dataclass
from typing import Any, Callable

from sgcache.site import faults
from sgcache.site.faults import Fault
from sgcache.schema.types import format_datetime, parse_datetime
from sgcache.schema import FieldSpec, Schema

Row = dict
Predicate = Callable[[Row], bool]

# -- data type families -------------------------------------------------------
#
# The emulator's own table of which relations each data type accepts
# (docs/emulator.md, "Reads"), written apart from the cache's planner
# (`sgcache.read`) on purpose: the differential tests compare two
# implementations, so a wrong entry on either side shows as a mismatch.

TEXT_TYPES = frozenset(["text", "color", "entity_type", "uuid", "list", "status_list"])
NUMBER_TYPES = frozenset(["number", "float", "percent", "duration", "timecode", "currency"])
UNITS = ("HOUR", "DAY", "WEEK", "MONTH", "YEAR")


def _relations(text: str) -> frozenset[str]:
    return frozenset(text.split())


_FREE_TEXT = _relations("is is_not contains not_contains starts_with ends_with in not_in")
_CHOICE = _relations("is is_not in not_in")
_NUMERIC = _relations("is is_not less_than greater_than between not_between in not_in")
_DATES = _relations(
    "is is_not greater_than less_than between in not_in in_last not_in_last in_next not_in_next "
    "in_calendar_day in_calendar_week in_calendar_month in_calendar_year")

#: data type -> the relations a filter on it may use (anything else: a fault)
RELATIONS: dict[str, frozenset[str]] = {
    "text": _FREE_TEXT, "color": _FREE_TEXT, "entity_type": _FREE_TEXT, "uuid": _FREE_TEXT,
    "list": _CHOICE, "status_list": _CHOICE,
    **{t: _NUMERIC for t in NUMBER_TYPES},
    "checkbox": _relations("is is_not"),
    "date": _DATES, "date_time": _DATES,
    "entity": _relations("is is_not in not_in type_is type_is_not name_contains name_not_contains name_is "
                         "name_starts_with name_ends_with"),
    "multi_entity": _relations("is is_not in not_in type_is type_is_not name_contains name_not_contains"),
    "tag_list": _relations("is is_not name_contains name_not_contains"),
    "image": _relations("is is_not"),
}

#: each negated relation is the exact complement of this positive one
NEGATIONS = {
    "is_not": "is", "not_in": "in", "not_contains": "contains", "not_between": "between",
    "name_not_contains": "name_contains", "type_is_not": "type_is", "not_in_last": "in_last",
    "not_in_next": "in_next",
}


# -- storage-form normalizers -------------------------------------------------

def norm_datetime(value: Any) -> datetime.datetime | None:
    """A stored date_time as a naive UTC datetime (None stays None)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.replace(microsecond=0)
    return parse_datetime(str(value))


def norm_date(value: Any) -> str | None:
    """A stored date as ``YYYY-MM-DD`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.date().isoformat()
    if isinstance(value, datetime.date):
        return value.isoformat()
    return datetime.date.fromisoformat(str(value)[:10]).isoformat()


def add_months(value: Any, months: int) -> Any:
    """Shift a date/datetime by whole calendar months, clamping the day."""
    index = value.year * 12 + (value.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(value.day, calendar.monthrange(year, month)[1])
    return value.replace(year=year, month=month, day=day)


# -- links --------------------------------------------------------------------

class Links:
    """Link resolution and display names over one db."""

    def __init__(self, schema: Schema, db: dict):
        self.schema = schema
        self.db = db

    def target(self, link: Any) -> Row | None:
        """The live (existing, not retired) row a stored link points at."""
        if not isinstance(link, dict):
            return None
        rows = self.db.get(link.get("type"))
        if not rows:
            return None
        row = rows.get(link.get("id"))
        if row is None or row.get("__retired"):
            return None
        return row

    def live(self, link: Any) -> tuple[str, int] | None:
        """A stored entity value as (type, id), or None if absent/retired."""
        if self.target(link) is None:
            return None
        return (link["type"], link["id"])

    def live_multi(self, links: Any) -> list[tuple[str, int]]:
        """A stored multi_entity value as live (type, id) pairs, in order."""
        out = []
        for link in links or ():
            if self.target(link) is not None:
                out.append((link["type"], link["id"]))
        return out

    def name(self, entity_type: str, entity_id: int) -> Any:
        """The display name (identifier field, wire form) of any row, retired
        or not; None when the row is missing or the type has no identifier."""
        row = (self.db.get(entity_type) or {}).get(entity_id)
        if row is None:
            return None
        ident = self.schema.identifier(entity_type)
        if ident == "id":
            return None
        value = row.get(ident)
        if value is None:
            return None
        spec = self.schema.get_field(entity_type, ident)
        dtype = spec.data_type if spec is not None else "text"
        if dtype == "url" and isinstance(value, dict):
            return value.get("name")
        if dtype == "date_time":
            return format_datetime(norm_datetime(value))
        if dtype == "date":
            return norm_date(value)
        if isinstance(value, (str, int, float)):
            return value
        return None

    def name_text(self, entity_type: str, entity_id: int) -> str | None:
        """The display name as a string for name_* comparisons and sorting."""
        name = self.name(entity_type, entity_id)
        if name is None:
            return None
        return str(name)


# -- paths --------------------------------------------------------------------

@dataclass(frozen=True)
class Path:
    """A parsed (possibly deep) field path.

    `hops` are (link field spec, target type) pairs followed before `leaf`.
    """

    entity_type: str
    text: str
    hops: tuple[tuple[FieldSpec, str], ...]
    leaf: FieldSpec

    @property
    def through_multi(self) -> bool:
        return any(spec.data_type == "multi_entity" for spec, _ in self.hops)


def parse_path(schema: Schema, entity_type: str, path: Any, method: str = "read") -> Path:
    """Parse ``field[.Type.field...]``; Fault (unknown field) on anything that
    does not name real fields through link fields of the named types."""
    if not isinstance(path, str) or not path:
        raise Fault(f"API {method}() invalid field path {path!r} for {entity_type}")
    parts = path.split(".")
    if len(parts) % 2 == 0:
        raise faults.unknown_field(method, entity_type, path)
    hops = []
    current = entity_type
    for i in range(0, len(parts) - 1, 2):
        spec = schema.get_field(current, parts[i])
        target = parts[i + 1]
        if spec is None or not spec.is_link:
            raise faults.unknown_field(method, current, parts[i])
        if target not in schema or (spec.link_types and target not in spec.link_types):
            raise faults.unknown_field(method, entity_type, path)
        hops.append((spec, target))
        current = target
    leaf = schema.get_field(current, parts[-1])
    if leaf is None:
        raise faults.unknown_field(method, current, parts[-1])
    return Path(entity_type, path, tuple(hops), leaf)


def raw_value(row: Row, spec: FieldSpec) -> Any:
    if spec.name == "id":
        return row.get("id")
    return row.get(spec.name)


def path_rows(links: Links, path: Path, row: Row) -> list[Row | None]:
    """The rows holding the path's leaf field, reached from `row`.

    A single-entity hop whose link is null, retired or of another type gives
    one None (a null leaf); a multi_entity hop gives every live item of the
    hop's type, or one None when there are none.
    """
    current: list[Row | None] = [row]
    for spec, target in path.hops:
        nxt: list[Row | None] = []
        for r in current:
            if r is None:
                nxt.append(None)
                continue
            value = r.get(spec.name)
            if spec.data_type == "entity":
                t = links.target(value) if isinstance(value, dict) and value.get("type") == target else None
                nxt.append(t)
            else:
                found = [
                    t
                    for item in (value or ())
                    if isinstance(item, dict) and item.get("type") == target
                    for t in [links.target(item)]
                    if t is not None
                ]
                nxt.extend(found or [None])
        current = nxt
    return current


def path_getter(links: Links, path: Path) -> Callable[[Row], list[Any]]:
    """row -> the stored leaf values (None for null leaves) along the path."""
    leaf = path.leaf
    if not path.hops:
        if leaf.name == "id":
            return lambda row: [row.get("id")]
        name = leaf.name
        return lambda row: [row.get(name)]

    def get(row: Row) -> list[Any]:
        return [None if r is None else raw_value(r, leaf) for r in path_rows(links, path, row)]

    return get


# -- filter compilation -------------------------------------------------------

def normalize_filters(filters: Any) -> dict:
    """Accept the wire form, the client-side list form, or None; return the
    wire form ``{"logical_operator", "conditions"}``."""
    if filters is None:
        return {"logical_operator": "and", "conditions": []}
    if isinstance(filters, (list, tuple)):
        return {"logical_operator": "and", "conditions": [_normalize_condition(f) for f in filters]}
    if isinstance(filters, dict):
        return _normalize_condition(filters)
    raise Fault(f"API read() invalid filters: expected a list or a dict, got {filters!r}")


def _normalize_condition(cond: Any) -> dict:
    if isinstance(cond, (list, tuple)):
        if len(cond) < 2:
            raise Fault(f"API read() invalid filter {list(cond)!r}")
        values = list(cond[2:])
        if len(values) == 1 and isinstance(values[0], (list, tuple)):
            values = list(values[0])
        return {"path": cond[0], "relation": cond[1], "values": values}
    if isinstance(cond, dict):
        if "filter_operator" in cond:
            op = cond.get("filter_operator")
            if op in ("all", "and"):
                logical = "and"
            elif op in ("any", "or"):
                logical = "or"
            else:
                raise Fault(f"API read() invalid filter_operator {op!r}")
            subs = cond.get("filters")
            if not isinstance(subs, (list, tuple)):
                raise Fault(f"API read() invalid filters {subs!r}")
            return {"logical_operator": logical, "conditions": [_normalize_condition(f) for f in subs]}
        if "logical_operator" in cond:
            subs = cond.get("conditions")
            if not isinstance(subs, (list, tuple)):
                raise Fault(f"API read() invalid filter conditions {subs!r}")
            return {
                "logical_operator": cond["logical_operator"],
                "conditions": [_normalize_condition(c) for c in subs],
            }
        return cond
    raise Fault(f"API read() invalid filter {cond!r}")


class FilterCompiler:
    """Compiles wire-form filters for one entity type into a row predicate.

    `now_utc` (naive UTC) and `tz` fix the clock for relative date relations.
    """

    def __init__(
        self,
        schema: Schema,
        links: Links,
        now_utc: datetime.datetime,
        tz: datetime.tzinfo,
        method: str = "read",
    ):
        self.schema = schema
        self.links = links
        self.now_utc = now_utc
        self.tz = tz
        self.method = method
        self.now_local = now_utc.replace(tzinfo=datetime.timezone.utc).astimezone(tz)
        self.today = self.now_local.date()
        self._names: dict[tuple[str, int], str | None] = {}

    # -- groups ----------------------------------------------------------
    def compile(self, entity_type: str, filters: Any) -> Predicate:
        return self._compile(entity_type, normalize_filters(filters))

    def _compile(self, entity_type: str, cond: Any) -> Predicate:
        if not isinstance(cond, dict):
            raise self._fault(f"invalid filter {cond!r}")
        if "logical_operator" in cond:
            op = cond["logical_operator"]
            if op not in ("and", "or"):
                raise self._fault(f"invalid logical_operator {op!r}")
            preds = [self._compile(entity_type, c) for c in cond["conditions"]]
            if not preds:
                return _true
            if len(preds) == 1:
                return preds[0]
            if op == "and":
                return lambda row: all(p(row) for p in preds)
            return lambda row: any(p(row) for p in preds)
        if "path" not in cond or "relation" not in cond:
            raise self._fault(f"invalid filter {cond!r}")
        return self._condition(entity_type, cond["path"], cond["relation"], cond.get("values", []))

    # -- one condition ---------------------------------------------------
    def _condition(self, entity_type: str, path_text: Any, relation: Any, values: Any) -> Predicate:
        path = parse_path(self.schema, entity_type, path_text, self.method)
        leaf = path.leaf
        if not isinstance(values, (list, tuple)):
            values = [values]
        values = list(values)
        allowed = RELATIONS.get(leaf.data_type, frozenset())
        if relation not in allowed:
            raise self._fault(
                f"relation {relation!r} is not valid for {leaf.data_type} field "
                f"{entity_type}.{path_text}"
            )
        negated = relation in NEGATIONS
        positive = NEGATIONS.get(relation, relation)
        pred = self._value_predicate(leaf, positive, values, f"{entity_type}.{path_text}")
        getter = path_getter(self.links, path)
        if not path.hops:
            name = leaf.name
            if negated:
                return lambda row: not pred(row.get(name))
            return lambda row: pred(row.get(name))
        if negated:
            return lambda row: not any(pred(v) for v in getter(row))
        return lambda row: any(pred(v) for v in getter(row))

    def _value_predicate(
        self, spec: FieldSpec, relation: str, values: list, where: str
    ) -> Callable[[Any], bool]:
        """A predicate over one stored leaf value for a positive relation."""
        dtype = spec.data_type
        if dtype in TEXT_TYPES:
            return self._text(relation, values, where)
        if dtype in NUMBER_TYPES:
            return self._number(relation, values, where)
        if dtype == "checkbox":
            want = self._one(values, where)
            if want is None:
                want = False
            if not isinstance(want, bool):
                raise self._fault(f"{where}: checkbox value must be true or false, got {want!r}")
            return lambda v: bool(v) == want
        if dtype == "date":
            return self._date(relation, values, where)
        if dtype == "date_time":
            return self._datetime(relation, values, where)
        if dtype == "entity":
            return self._entity(relation, values, where)
        if dtype == "multi_entity":
            return self._multi(relation, values, where)
        if dtype == "tag_list":
            return self._tags(relation, values, where)
        if dtype == "image":
            if self._one(values, where) is not None:
                raise self._fault(f"{where}: image fields can only be compared with None")
            return lambda v: v is None
        raise self._fault(f"{where}: {dtype} fields are not filterable")

    # -- helpers ---------------------------------------------------------
    def _fault(self, message: str) -> Fault:
        return Fault(f"API {self.method}() invalid filter: {message}")

    def _one(self, values: list, where: str) -> Any:
        if len(values) != 1:
            raise self._fault(f"{where}: expected exactly one value, got {values!r}")
        return values[0]

    def _two(self, values: list, where: str) -> tuple[Any, Any]:
        if len(values) != 2:
            raise self._fault(f"{where}: between expects two values, got {values!r}")
        return values[0], values[1]

    def _name(self, link: tuple[str, int]) -> str | None:
        try:
            return self._names[link]
        except KeyError:
            name = self.links.name_text(link[0], link[1])
            low = name.lower() if name is not None else None
            self._names[link] = low
            return low

    # -- text ------------------------------------------------------------
    def _text(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        def low(x: Any) -> str:
            return (x if isinstance(x, str) else str(x)).lower()

        if relation == "is":
            want = self._one(values, where)
            if want is None:
                return lambda v: v is None
            w = low(want)
            return lambda v: v is not None and low(v) == w
        if relation == "in":
            wanted = {low(x) for x in values if x is not None}
            with_null = any(x is None for x in values)
            return lambda v: with_null if v is None else low(v) in wanted
        want = self._one(values, where)
        if want is None:
            raise self._fault(f"{where}: {relation} needs a string")
        w = low(want)
        if relation == "contains":
            return lambda v: v is not None and w in low(v)
        if relation == "starts_with":
            return lambda v: v is not None and low(v).startswith(w)
        if relation == "ends_with":
            return lambda v: v is not None and low(v).endswith(w)
        raise self._fault(f"{where}: unsupported relation {relation!r}")

    # -- ordered scalars (numbers, dates) ----------------------------------
    def _ordered(
        self, relation: str, values: list, where: str, conv: Callable[[Any], Any], norm: Callable[[Any], Any]
    ) -> Callable[[Any], bool] | None:
        """is / in / less_than / greater_than / between, or None if other."""
        if relation == "is":
            want = self._one(values, where)
            if want is None:
                return lambda v: v is None
            w = conv(want)
            return lambda v: v is not None and norm(v) == w
        if relation == "in":
            wanted = {conv(x) for x in values if x is not None}
            with_null = any(x is None for x in values)
            return lambda v: with_null if v is None else norm(v) in wanted
        if relation in ("less_than", "greater_than"):
            want = self._one(values, where)
            if want is None:
                raise self._fault(f"{where}: {relation} needs a value")
            w = conv(want)
            if relation == "less_than":
                return lambda v: v is not None and norm(v) < w
            return lambda v: v is not None and norm(v) > w
        if relation == "between":
            lo, hi = self._two(values, where)
            lo = None if lo is None else conv(lo)
            hi = None if hi is None else conv(hi)

            def between(v: Any) -> bool:
                if v is None:
                    return False
                n = norm(v)
                return (lo is None or n >= lo) and (hi is None or n <= hi)

            return between
        return None

    def _number(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        def conv(x: Any) -> Any:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise self._fault(f"{where}: expected a number, got {x!r}")
            return x

        pred = self._ordered(relation, values, where, conv, _ident)
        if pred is None:
            raise self._fault(f"{where}: unsupported relation {relation!r}")
        return pred

    def _date(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        def conv(x: Any) -> str:
            try:
                return norm_date(x)  # type: ignore[return-value]
            except (TypeError, ValueError):
                raise self._fault(f"{where}: expected a date YYYY-MM-DD, got {x!r}") from None

        pred = self._ordered(relation, values, where, conv, norm_date)
        if pred is not None:
            return pred
        lo, hi = self._date_range(relation, values, where)
        los, his = lo.isoformat(), hi.isoformat()

        def in_range(v: Any) -> bool:
            if v is None:
                return False
            d = norm_date(v)
            return los <= d <= his  # type: ignore[operator]

        return in_range

    def _datetime(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        def conv(x: Any) -> datetime.datetime:
            try:
                return norm_datetime(x)  # type: ignore[return-value]
            except (TypeError, ValueError):
                raise self._fault(f"{where}: expected a date_time YYYY-MM-DDTHH:MM:SSZ, got {x!r}") from None

        pred = self._ordered(relation, values, where, conv, norm_datetime)
        if pred is not None:
            return pred
        if relation.startswith("in_calendar_"):
            lo_d, hi_d = self._date_range(relation, values, where)
            tz = self.tz
            utc = datetime.timezone.utc

            def in_days(v: Any) -> bool:
                if v is None:
                    return False
                d = norm_datetime(v).replace(tzinfo=utc).astimezone(tz).date()  # type: ignore[union-attr]
                return lo_d <= d <= hi_d

            return in_days
        n, unit = self._relative_args(values, where)
        now = self.now_utc
        try:
            if relation == "in_last":
                lo = self._shift_datetime(-n, unit)
                return lambda v: v is not None and lo < norm_datetime(v) <= now  # type: ignore[operator]
            if relation == "in_next":
                hi = self._shift_datetime(n, unit)
                return lambda v: v is not None and now <= norm_datetime(v) < hi  # type: ignore[operator]
        except (OverflowError, ValueError):
            raise self._fault(f"{where}: relative date out of range") from None
        raise self._fault(f"{where}: unsupported relation {relation!r}")

    # -- relative dates --------------------------------------------------
    def _relative_args(self, values: list, where: str) -> tuple[int, str]:
        if len(values) != 2:
            raise self._fault(f"{where}: expected [count, unit], got {values!r}")
        n, unit = values
        if isinstance(n, bool) or not isinstance(n, int):
            raise self._fault(f"{where}: count must be an integer, got {n!r}")
        if not isinstance(unit, str) or unit.upper() not in UNITS:
            raise self._fault(f"{where}: unit must be one of {', '.join(UNITS)}, got {unit!r}")
        return n, unit.upper()

    def _shift_datetime(self, n: int, unit: str) -> datetime.datetime:
        """now shifted by n units, as naive UTC."""
        if unit in ("HOUR", "DAY", "WEEK"):
            hours = {"HOUR": 1, "DAY": 24, "WEEK": 24 * 7}[unit]
            return self.now_utc + datetime.timedelta(hours=hours * n)
        months = n if unit == "MONTH" else 12 * n
        local = add_months(self.now_local, months)
        return local.astimezone(datetime.timezone.utc).replace(tzinfo=None)

    def _shift_date(self, n: int, unit: str) -> datetime.date:
        if unit == "HOUR":
            return (self.now_local + datetime.timedelta(hours=n)).date()
        if unit == "DAY":
            return self.today + datetime.timedelta(days=n)
        if unit == "WEEK":
            return self.today + datetime.timedelta(days=7 * n)
        return add_months(self.today, n if unit == "MONTH" else 12 * n)

    def _date_range(self, relation: str, values: list, where: str) -> tuple[datetime.date, datetime.date]:
        """Inclusive calendar-date range (in tz) of a relative date relation."""
        try:
            return self._date_range_of(relation, values, where)
        except (OverflowError, ValueError):
            raise self._fault(f"{where}: relative date out of range") from None

    def _date_range_of(self, relation: str, values: list, where: str) -> tuple[datetime.date, datetime.date]:
        if relation.startswith("in_calendar_"):
            offset = self._one(values, where)
            if isinstance(offset, bool) or not isinstance(offset, int):
                raise self._fault(f"{where}: offset must be an integer, got {offset!r}")
            return calendar_range(self.today, relation[len("in_calendar_"):], offset)
        n, unit = self._relative_args(values, where)
        if relation == "in_last":
            return self._shift_date(-n, unit), self.today
        if relation == "in_next":
            return self.today, self._shift_date(n, unit)
        raise self._fault(f"{where}: unsupported relation {relation!r}")

    # -- links -----------------------------------------------------------
    def _link_value(self, value: Any, where: str) -> tuple[str, int] | None:
        if value is None:
            return None
        if isinstance(value, dict) and isinstance(value.get("type"), str) and "id" in value:
            return (value["type"], value["id"])
        raise self._fault(f"{where}: expected an entity {{'type', 'id'}} or None, got {value!r}")

    def _name_test(self, relation: str, values: list, where: str) -> Callable[[str | None], bool]:
        want = self._one(values, where)
        if not isinstance(want, str):
            raise self._fault(f"{where}: {relation} needs a string, got {want!r}")
        w = want.lower()
        if relation == "name_contains":
            return lambda n: n is not None and w in n
        if relation == "name_is":
            return lambda n: n is not None and n == w
        if relation == "name_starts_with":
            return lambda n: n is not None and n.startswith(w)
        if relation == "name_ends_with":
            return lambda n: n is not None and n.endswith(w)
        raise self._fault(f"{where}: unsupported relation {relation!r}")

    def _entity(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        live = self.links.live
        if relation == "is":
            want = self._link_value(self._one(values, where), where)
            return lambda v: live(v) == want
        if relation == "in":
            wanted = {self._link_value(x, where) for x in values}
            return lambda v: live(v) in wanted
        if relation == "type_is":
            t = self._one(values, where)
            if t is None:
                return lambda v: live(v) is None

            def type_is(v: Any) -> bool:
                link = live(v)
                return link is not None and link[0] == t

            return type_is
        test = self._name_test(relation, values, where)
        name = self._name

        def by_name(v: Any) -> bool:
            link = live(v)
            return link is not None and test(name(link))

        return by_name

    def _multi(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        live_multi = self.links.live_multi
        if relation == "is":
            want = self._link_value(self._one(values, where), where)
            if want is None:
                return lambda v: not live_multi(v)
            return lambda v: want in live_multi(v)
        if relation == "in":
            wanted = {self._link_value(x, where) for x in values}
            with_null = None in wanted

            def any_in(v: Any) -> bool:
                items = live_multi(v)
                if not items:
                    return with_null
                return any(i in wanted for i in items)

            return any_in
        if relation == "type_is":
            t = self._one(values, where)
            if t is None:
                return lambda v: not live_multi(v)
            return lambda v: any(i[0] == t for i in live_multi(v))
        if relation == "name_contains":
            test = self._name_test(relation, values, where)
            name = self._name
            return lambda v: any(test(name(i)) for i in live_multi(v))
        raise self._fault(f"{where}: unsupported relation {relation!r}")

    def _tag_name(self, value: Any, where: str) -> str | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, dict):
            if isinstance(value.get("name"), str):
                return value["name"]
            if value.get("type") == "Tag" and "id" in value:
                row = (self.links.db.get("Tag") or {}).get(value["id"])
                if row is not None and isinstance(row.get("name"), str):
                    return row["name"]
                return "\0missing tag"
        raise self._fault(f"{where}: expected a tag name, got {value!r}")

    def _tags(self, relation: str, values: list, where: str) -> Callable[[Any], bool]:
        if relation == "is":
            want = self._tag_name(self._one(values, where), where)
            if want is None:
                return lambda v: not v
            w = want.lower()
            return lambda v: any(t.lower() == w for t in (v or ()))
        if relation == "name_contains":
            want = self._one(values, where)
            if not isinstance(want, str):
                raise self._fault(f"{where}: name_contains needs a string, got {want!r}")
            w = want.lower()
            return lambda v: any(w in t.lower() for t in (v or ()))
        raise self._fault(f"{where}: unsupported relation {relation!r}")


def calendar_range(today: datetime.date, unit: str, offset: int) -> tuple[datetime.date, datetime.date]:
    """First and last day of the calendar day/week/month/year holding
    `today`, shifted by `offset` such periods. Weeks start on Monday."""
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
    raise Fault(f"API read() invalid filter: unknown calendar unit {unit!r}")


def _true(row: Row) -> bool:
    return True


def _ident(value: Any) -> Any:
    return value
