"""`summarize` answered from the store: the summaries and groupings the
cache can compute exactly as the emulator's engine does
(`sgcache.testing.engine`, docs/emulator.md "summarize"), and nothing else.

`plan_summary(args, catalog, dialect, ...)` returns a `SummaryPlan` or
raises `PassThrough`; `run_summary(store, plan, catalog)` runs it and
returns ``{"summaries": {...}, "groups": [...]}``. Filters,
``include_archived_projects`` and the run-time guards (rows not fully
loaded, links to uncached types) are the read planner's own
(`sgcache.read.planner`): a filter a read would pass through makes the
summarize pass through, for the same reason.

What is answered locally:

* summary types ``record_count``, ``count``, ``sum`` and ``average`` (of
  integer-valued fields), ``maximum``, ``minimum``, ``earliest``,
  ``latest``, ``checked``, ``unchecked``, on fields and deep paths through
  entity links (``count`` of entity, multi_entity and tag_list fields
  included);
* groupings ``exact`` (scalar fields, and entity fields: the group value
  ``{"type", "id", "name", "valid": "valid"}`` as shotgun_api3's documented
  examples show) and ``day``/``week``/``month``/``year``
  (date and date_time fields, date_time in the site's time zone), nested.

Everything else passes through: the other summary and grouping types
(``percentage``, ``status_percentage``, ``status_list``, ``tens``,
``quarter``...), sums and averages of float and currency fields (the site's
float arithmetic is not known), summaries of url/serializable fields,
whatever the engine would answer with a fault (the site's own
fault comes back), and more groups than `MAX_GROUPS`.

The aggregation runs in SQL: one statement groups the matching rows by
each grouping's *fine* key (the stored value; for a date_time grouped by
period, its UTC hour, minute or second, whichever the time zone makes
exact) and computes every summary's parts per fine group (counts, integer
sums, minima and maxima merge exactly). Python then folds the fine groups
into the wire groups, levels and order: at most `MAX_GROUPS` rows.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from sgcache.schema import FieldSpec
from sgcache.schema.types import data_type, is_cacheable
from sgcache.read.planner import (
    MAX_SQL_CHARS,
    SQLITE_MAX_PARAMS,
    Catalog,
    PassThrough,
    ReadCompiler,
    default_now,
    normalize_filters,
)
from sgcache.read.reader import guarded_rows, link_value
from sgcache.read.relations import Q, col, fmt, join, literal
from sgcache.store import layout

__all__ = ["MAX_GROUPS", "SummaryPlan", "plan_summary", "run_summary"]

#: fine groups one statement may return; more pass through
MAX_GROUPS = 20_000
#: summaries plus groupings of one request
MAX_ITEMS = 200

#: summarize arguments understood; any other passes through
KNOWN_ARGS = frozenset(["type", "filters", "summaries", "grouping", "include_archived_projects"])

SUMMARY_TYPES = frozenset(
    "record_count count sum maximum minimum average earliest latest checked unchecked".split()
)
GROUPING_TYPES = frozenset(["exact", "day", "week", "month", "year"])

_NUMBERS = frozenset(["number", "float", "percent", "duration", "timecode", "currency"])
#: numbers whose sums the store computes exactly (integers)
_INTEGERS = frozenset(["number", "percent", "duration", "timecode"])
_DATES = frozenset(["date", "date_time"])
_TEXTS = frozenset(["text", "color", "entity_type", "uuid", "list", "status_list"])
#: data types the engine refuses to group by (the site answers, or faults)
_UNGROUPABLE = frozenset(["multi_entity", "tag_list", "url", "serializable", "image"])

#: data types each summary type accepts (the engine's table; anything else
#: is a fault there)
_VALID_FOR: dict[str, Callable[[str], bool]] = {
    "record_count": lambda d: True,
    "count": lambda d: True,
    "sum": lambda d: d in _NUMBERS,
    "average": lambda d: d in _NUMBERS,
    "maximum": lambda d: d in _NUMBERS or d in _DATES,
    "minimum": lambda d: d in _NUMBERS or d in _DATES,
    "earliest": lambda d: d in _DATES,
    "latest": lambda d: d in _DATES,
    "checked": lambda d: d == "checkbox",
    "unchecked": lambda d: d == "checkbox",
}

#: date_time fine keys: characters of the stored ``YYYY-MM-DDTHH:MM:SSZ``
#: kept per precision, and the seconds one key spans
_DAY, _HOUR, _MINUTE, _SECOND = 10, 13, 16, 20
_SPAN = {_HOUR: 3600, _MINUTE: 60}
_FINER = {_DAY: _HOUR, _HOUR: _MINUTE, _MINUTE: _SECOND}
_KEY_SHAPES = {
    _DAY: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    _HOUR: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}"),
    _MINUTE: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}"),
    _SECOND: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"),
}
_DATE_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class _Finer(Exception):
    """A date_time fine key spans a local day boundary: group finer."""


@dataclass
class _Part:
    """One summary: its wire field name, type, and the columns of its parts."""

    field: str
    kind: str
    columns: list[int]


@dataclass
class _Level:
    """One grouping level: a fine group's row -> the group's wire value."""

    value: Callable[[tuple], Any]
    desc: bool


@dataclass
class SummaryPlan:
    entity_type: str
    sql: str
    params: list[Any]
    #: the guards of the read planner, on their own (when no group matched)
    guard_sql: str
    guard_columns: list[tuple[str, int]]
    #: (reason, column) of per-group flags making the answer untrustworthy
    flag_columns: list[tuple[str, int]]
    count_column: int
    first_id_column: int
    parts: list[_Part]
    levels: list[_Level]
    grouped: bool
    #: every entity type the plan reads
    types: set[str] = field(default_factory=set)
    #: date_time periods: characters of the stored value grouped by
    precision: int = _HOUR
    #: to plan again at a finer date_time precision
    replan: Callable[[int], "SummaryPlan"] | None = None
    #: the answer does not depend on the clock (no relative date filter):
    #: it may be kept and reused while the store is unchanged
    timeless: bool = True


def plan_summary(
    args: Any,
    catalog: Catalog,
    dialect: str,
    now: Callable[[], datetime.datetime] | None = None,
    tz: datetime.tzinfo | None = None,
    precision: int | None = None,
) -> SummaryPlan:
    """Compile a wire `summarize` ARGS dict, or raise PassThrough. `now`
    and `tz` as for `sgcache.read.planner.plan_read` (relative date filters;
    `tz` is also the zone date_time values are grouped by period in)."""
    tz = tz or datetime.timezone.utc
    now = now or default_now
    if precision is None:
        precision = _start_precision(tz, now)
    if not isinstance(args, dict):
        raise PassThrough("summarize arguments are not a mapping")
    extra = set(args) - KNOWN_ARGS
    if extra:
        raise PassThrough("unknown summarize argument", ",".join(sorted(str(k) for k in extra)))
    entity_type = args.get("type")
    if not isinstance(entity_type, str) or entity_type not in catalog.schema:
        raise PassThrough("type not cached")
    if not catalog.type_ready(entity_type):
        raise PassThrough("type not loaded yet", entity_type)
    summaries, grouping = args.get("summaries"), args.get("grouping")
    if not isinstance(summaries, list) or not summaries:
        raise PassThrough("unusual summaries")
    if grouping is None:
        grouping = []
    if not isinstance(grouping, list):
        raise PassThrough("unusual grouping")
    if len(summaries) + len(grouping) > MAX_ITEMS:
        raise PassThrough("too many summaries or groupings")
    wire = normalize_filters(args.get("filters"))

    compiler = ReadCompiler(catalog, entity_type, dialect, now, tz)
    where = compiler.filters(wire)
    conditions = [Q('m."_active" = 1')]
    if args.get("include_archived_projects", True) is False:
        conditions.append(compiler.not_archived())
    if where is not None:
        conditions.append(where)
    base_where = join(" AND ", [fmt("({})", c) for c in conditions])

    build = _Builder(compiler, dialect, tz, precision)
    levels = [build.level(item) for item in grouping]
    keys = len(build.select)
    count_column = build.add("COUNT(*)")
    first_id_column = build.add('MIN(m."id")')
    parts = [build.summary(item) for item in summaries]
    flag_columns = [(reason, build.add(f"MAX(CASE WHEN {expr} THEN 1 ELSE 0 END)"))
                    for reason, expr in build.flags]
    guards = compiler.guards()
    guard_columns = [(reason, build.add(f"({expr})")) for reason, expr in guards]

    table = layout.entity_table(entity_type)
    joins = " ".join(compiler.main.joins)
    sql = f"SELECT {', '.join(build.select)} FROM {table} AS m {joins} WHERE {base_where.sql}"
    if levels:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(keys))
        sql += f" LIMIT {MAX_GROUPS + 1}"
    if len(sql) > MAX_SQL_CHARS:
        raise PassThrough("read too large to plan")
    if dialect == "sqlite" and len(base_where.params) > SQLITE_MAX_PARAMS:
        raise PassThrough("too many filter values")

    def replan(finer: int) -> SummaryPlan:
        return plan_summary(args, catalog, dialect, now, tz, finer)

    return SummaryPlan(
        entity_type=entity_type,
        sql=sql,
        params=list(base_where.params),
        guard_sql="SELECT " + ", ".join(f"({expr})" for _, expr in guards),
        guard_columns=guard_columns,
        flag_columns=flag_columns,
        count_column=count_column,
        first_id_column=first_id_column,
        parts=parts,
        levels=levels,
        grouped=bool(levels),
        types=set(compiler.types),
        precision=precision,
        replan=replan if build.periods else None,
        timeless=not compiler.reads_clock,
    )


def _start_precision(tz: datetime.tzinfo, now: Callable[[], datetime.datetime]) -> int:
    """The coarsest date_time fine key likely exact in `tz`: the UTC day
    for UTC itself, the hour where the zone is a whole number of hours off
    UTC now, else the minute (`run_summary` goes finer where needed)."""
    if isinstance(tz, datetime.timezone) and tz.utcoffset(None) == datetime.timedelta(0):
        return _DAY
    try:
        at = now()
        offset = (at if at.tzinfo is not None else at.replace(tzinfo=datetime.timezone.utc)).astimezone(tz).utcoffset()
    except (OverflowError, ValueError):
        return _MINUTE
    if offset is not None and offset.total_seconds() % 3600 == 0:
        return _HOUR
    return _MINUTE


class _Builder:
    """The SELECT list of one plan, and what each column means."""

    def __init__(self, compiler: ReadCompiler, dialect: str, tz: datetime.tzinfo, precision: int):
        self.c = compiler
        self.dialect = dialect
        self.tz = tz
        self.precision = precision
        self.select: list[str] = []
        #: (reason, SQL true for a row that makes the answer untrustworthy)
        self.flags: list[tuple[str, str]] = []
        #: some grouping is by date_time period (the precision matters)
        self.periods = False

    def add(self, expr: str) -> int:
        self.select.append(expr)
        return len(self.select) - 1

    # -- paths -------------------------------------------------------------
    def path(self, name: Any, purpose: str) -> tuple[Any, str, FieldSpec]:
        """(the resolved path, the alias of the row holding its leaf, the leaf)."""
        path = self.c.resolve(name, purpose)
        if path.through_multi:
            raise PassThrough("summary or grouping through a multi-entity field")
        leaf = path.leaf
        if leaf.name != "id" and not is_cacheable(leaf.data_type):
            raise PassThrough(f"{purpose} field of an uncached data type", leaf.data_type)
        self.c.require_ready(path, purpose)
        alias = self.c.walk(self.c.main, "m", path.hops)
        return path, alias, leaf

    @staticmethod
    def dtype(leaf: FieldSpec) -> str:
        return "number" if leaf.name == "id" else leaf.data_type

    # -- groupings ---------------------------------------------------------
    def level(self, item: Any) -> _Level:
        if not isinstance(item, dict):
            raise PassThrough("unusual grouping")
        kind = item.get("type") or "exact"
        direction = item.get("direction") or "asc"
        if not isinstance(kind, str) or not isinstance(direction, str):
            raise PassThrough("unusual grouping")
        if direction.lower() not in ("asc", "desc"):
            raise PassThrough("unusual grouping")
        if kind not in GROUPING_TYPES:
            raise PassThrough("grouping type not answered locally", kind)
        path, alias, leaf = self.path(item.get("field"), "grouping")
        dtype = self.dtype(leaf)
        desc = direction.lower() == "desc"
        if dtype in _UNGROUPABLE:
            raise PassThrough("grouping by a field the cache does not group", dtype)
        if kind != "exact":
            if dtype not in _DATES:
                raise PassThrough("grouping type not answered locally", f"{kind} on {dtype}")
            return self.period(alias, leaf, kind, desc)
        if dtype == "entity":
            return self.entity_level(alias, leaf, desc)
        if leaf.name == "id":
            column = self.add(col(alias, "id"))
            return _Level(lambda row: row[column], desc)
        if dtype == "checkbox":
            expr = f"COALESCE({col(alias, leaf.name)}, 0)"
            if path.hops:
                expr = f"CASE WHEN {col(alias, 'id')} IS NULL THEN NULL ELSE {expr} END"
            column = self.add(expr)
            return _Level(lambda row: None if row[column] is None else bool(row[column]), desc)
        if dtype in _NUMBERS or dtype in _TEXTS or dtype in _DATES:
            column = self.add(col(alias, leaf.name))
            decode = data_type(dtype).decode
            return _Level(lambda row: None if row[column] is None else decode(row[column]), desc)
        raise PassThrough("grouping by a field the cache does not group", dtype)

    def period(self, alias: str, leaf: FieldSpec, kind: str, desc: bool) -> _Level:
        expr = col(alias, leaf.name)
        if leaf.data_type == "date":
            column = self.add(expr)
            to_day = _date_day
        else:
            self.periods = True
            if self.precision < _SECOND:
                expr = f"substr({expr}, 1, {self.precision})"
            column = self.add(expr)
            to_day = _DatetimeDays(self.tz, self.precision)
        start = _PERIOD_START[kind]
        memo: dict[Any, Any] = {}

        def value(row: tuple) -> Any:
            key = row[column]
            if key is None:
                return None
            found = memo.get(key)
            if found is None:
                found = memo[key] = start(to_day(key)).isoformat()
            return found

        return _Level(value, desc)

    def entity_level(self, alias: str, leaf: FieldSpec, desc: bool) -> _Level:
        link_type, link_id, joined = self.link_joins(alias, leaf, named=True)
        type_col, id_col = self.add(link_type), self.add(link_id)
        targets = {
            target: (self.add(found), self.add(active), None if name is None else self.add(name), decode)
            for target, (found, active, name, decode) in joined.items()
        }
        link = link_value(type_col, id_col, targets)

        def value(row: tuple) -> Any:
            # (shotgun_api3's documented examples: an entity group's value
            # carries 'valid': 'valid'; links to retired entities read null)
            found = link(row)
            return None if found is None else {**found, "valid": "valid"}

        return _Level(value, desc)

    def link_joins(
        self, alias: str, leaf: FieldSpec, named: bool
    ) -> tuple[str, str, dict[str, tuple[str, str, str | None, Callable[[Any], Any]]]]:
        """An entity field's link columns and, per link type the store can
        name (`named`) or at least holds, a LEFT JOIN of its target whatever
        its state: (type, id, {target: (its id, its _active, its name or
        None, the name's decoder)}), as SQL expressions."""
        c = self.c
        joined: dict[str, tuple[str, str, str | None, Callable[[Any], Any]]] = {}
        for target in leaf.link_types:
            usable = c.catalog.name_kind(target) is not None if named else c.catalog.type_ready(target)
            if not usable:
                continue  # a row linking there passes through at run time
            c.types.add(target)
            new = c.alias("n")
            c.main.joins.append(
                f"LEFT JOIN {layout.entity_table(target)} AS {new} "
                f"ON {col(new, 'id')} = {col(alias, leaf.name + '__id')} "
                f"AND {col(alias, leaf.name + '__type')} = {literal(target)}"
            )
            ident = c.schema.identifier(target) if named else "id"
            name = col(new, ident) if ident != "id" else None
            joined[target] = (col(new, "id"), f'{new}."_active"', name, c.catalog.name_decoder(target))
        return col(alias, leaf.name + "__type"), col(alias, leaf.name + "__id"), joined

    # -- summaries ---------------------------------------------------------
    def summary(self, item: Any) -> _Part:
        if not isinstance(item, dict):
            raise PassThrough("unusual summaries")
        name, kind = item.get("field"), item.get("type")
        if not isinstance(kind, str):
            raise PassThrough("unusual summaries")
        if kind not in SUMMARY_TYPES:
            raise PassThrough("summary type not answered locally", kind)
        path, alias, leaf = self.path(name, "summary")
        dtype = self.dtype(leaf)
        if not _VALID_FOR[kind](dtype):
            raise PassThrough("summary type not valid for the field", f"{kind} of {dtype}")
        if kind == "record_count":
            return _Part(name, kind, [])
        value = col(alias, "id" if leaf.name == "id" else leaf.name)
        if kind == "count":
            return _Part(name, kind, [self.add(self.count(path, alias, leaf, dtype))])
        if kind in ("checked", "unchecked"):
            exists = "TRUE" if not path.hops else f"{col(alias, 'id')} IS NOT NULL"
            want = 1 if kind == "checked" else 0
            return _Part(name, kind, [self.add(
                f"COUNT(CASE WHEN {exists} AND COALESCE({value}, 0) = {want} THEN 1 END)")])
        if kind in ("sum", "average"):
            if dtype not in _INTEGERS:
                # the site's float arithmetic (order, precision) is not known
                raise PassThrough("sum or average of a float field", dtype)
            columns = [self.add(f"SUM({value})")]
            if kind == "average":
                columns.append(self.add(f"COUNT({value})"))
            return _Part(name, kind, columns)
        # maximum / minimum / earliest / latest
        fn = "MAX" if kind in ("maximum", "latest") else "MIN"
        if dtype in _DATES and self.dialect == "postgresql":
            value = f'{value} COLLATE "C"'
        return _Part(name, kind, [self.add(f"{fn}({value})")])

    def count(self, path: Any, alias: str, leaf: FieldSpec, dtype: str) -> str:
        """COUNT of the rows whose value the engine counts (not null; a
        multi_entity or tag_list not empty; a checkbox of a row that exists)."""
        if leaf.name == "id" or dtype == "checkbox":
            return f"COUNT({col(alias, 'id')})"
        if dtype in _NUMBERS or dtype in _TEXTS or dtype in _DATES:
            return f"COUNT({col(alias, leaf.name)})"
        if dtype == "tag_list":
            value = col(alias, leaf.name)
            return f"COUNT(CASE WHEN {value} IS NOT NULL AND {value} <> '[]' THEN 1 END)"
        if dtype == "entity":
            return self.live_count(alias, leaf)
        if dtype == "multi_entity":
            c = self.c
            c.watch_foreign(leaf)
            parts = [c.items(alias, leaf, target).sql for target in c.link_types(leaf)]
            if not parts:
                return "0"
            return f"COUNT(CASE WHEN {' OR '.join(f'({p})' for p in parts)} THEN 1 END)"
        raise PassThrough("summary of a field the cache does not summarize", dtype)

    def live_count(self, alias: str, leaf: FieldSpec) -> str:
        """COUNT of live links of an entity field; a link to a type the store
        does not hold, or to a row it lacks, flags the answer."""
        link_type, link_id, joined = self.link_joins(alias, leaf, named=False)
        if not joined:
            self.flags.append(("link to a type whose names are not cached", f"{link_id} IS NOT NULL"))
            return "0"
        types = ", ".join(literal(t) for t in joined)
        found = _coalesce([j[0] for j in joined.values()])
        active = _coalesce([j[1] for j in joined.values()])
        self.flags.append((
            "link to a type whose names are not cached",
            f"{link_id} IS NOT NULL AND {link_type} NOT IN ({types})",
        ))
        self.flags.append((
            "link target not in the store",
            f"{link_id} IS NOT NULL AND {link_type} IN ({types}) AND {found} IS NULL",
        ))
        return f"COUNT(CASE WHEN {active} = 1 THEN 1 END)"


def _coalesce(exprs: list[str]) -> str:
    return exprs[0] if len(exprs) == 1 else f"COALESCE({', '.join(exprs)})"


# -- periods ------------------------------------------------------------------

def _date_day(key: Any) -> datetime.date:
    if not isinstance(key, str) or not _DATE_SHAPE.fullmatch(key):
        raise PassThrough("unusual stored value", "date")
    try:
        return datetime.date.fromisoformat(key)
    except ValueError:
        raise PassThrough("unusual stored value", "date") from None


class _DatetimeDays:
    """A date_time fine key (a prefix of the stored UTC value) -> the local
    day of every instant it spans, in `tz`; `_Finer` when they differ."""

    def __init__(self, tz: datetime.tzinfo, precision: int):
        self.tz = tz
        self.precision = precision
        self.shape = _KEY_SHAPES[precision]

    def __call__(self, key: Any) -> datetime.date:
        if not isinstance(key, str) or not self.shape.fullmatch(key):
            raise PassThrough("unusual stored value", "date_time")
        p = self.precision
        try:
            if p == _DAY:
                return datetime.date.fromisoformat(key)
            text = key[:19] if p == _SECOND else key + (":00:00" if p == _HOUR else ":00")
            start = datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)
            first = start.astimezone(self.tz)
            if p == _SECOND:
                return first.date()
            last = (start + datetime.timedelta(seconds=_SPAN[p] - 1)).astimezone(self.tz)
        except (OverflowError, ValueError):
            raise PassThrough("date grouping out of range") from None
        if first.date() != last.date() or first.utcoffset() != last.utcoffset():
            raise _Finer()
        return first.date()


def _week_start(day: datetime.date) -> datetime.date:
    return day - datetime.timedelta(days=day.weekday())


_PERIOD_START: dict[str, Callable[[datetime.date], datetime.date]] = {
    "day": lambda d: d,
    "week": _week_start,
    "month": lambda d: d.replace(day=1),
    "year": lambda d: d.replace(month=1, day=1),
}


# -- running ------------------------------------------------------------------

async def run_summary(store: Any, plan: SummaryPlan, catalog: Catalog) -> dict[str, Any]:
    """The wire result of `plan` (``{"summaries", "groups"}``), or
    PassThrough. Every statement goes through the store's `read` (the read
    budget applies)."""
    while True:
        try:
            return await _run(store, plan)
        except _Finer:
            finer = _FINER.get(plan.precision)
            if finer is None or plan.replan is None:  # pragma: no cover - seconds are exact
                raise PassThrough("date grouping out of range") from None
            plan = plan.replan(finer)


async def _run(store: Any, plan: SummaryPlan) -> dict[str, Any]:
    rows = await guarded_rows(store, plan)
    if len(rows) > MAX_GROUPS:
        raise PassThrough("too many summary groups")
    for row in rows:
        for reason, column in plan.flag_columns:
            if row[column]:
                raise PassThrough(reason)
    if not plan.grouped:
        return {"summaries": _summaries(plan, rows), "groups": []}
    # the groups' values per level, once per fine group
    fine = [(tuple(level.value(row) for level in plan.levels), row) for row in rows]
    return {"summaries": _summaries(plan, rows), "groups": _groups(plan, fine, 0)}


def _groups(plan: SummaryPlan, fine: list[tuple[tuple, tuple]], depth: int) -> list[dict]:
    level = plan.levels[depth]
    first = plan.first_id_column
    buckets: dict[Any, list] = {}
    for values, row in fine:
        value = values[depth]
        key = _hashable(value)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [value, row[first], [(values, row)]]
        else:
            bucket[1] = min(bucket[1], row[first])
            bucket[2].append((values, row))
    # the engine's buckets come in order of first appearance (rows by id),
    # then a stable sort by value in the grouping's direction
    ordered = sorted(buckets.values(), key=lambda b: b[1])
    ordered.sort(key=lambda b: _group_sort_key(b[0]), reverse=level.desc)
    deeper = depth + 1 < len(plan.levels)
    out = []
    for value, _, members in ordered:
        entry: dict[str, Any] = {
            "group_name": _group_name(value),
            "group_value": value,
            "summaries": _summaries(plan, [row for _, row in members]),
        }
        if deeper:
            entry["groups"] = _groups(plan, members, depth + 1)
        out.append(entry)
    return out


def _summaries(plan: SummaryPlan, rows: list[tuple]) -> dict[str, Any]:
    """The summaries of the fine groups `rows`, merged."""
    out: dict[str, Any] = {}
    for part in plan.parts:
        kind = part.kind
        if kind == "record_count":
            out[part.field] = sum(int(row[plan.count_column]) for row in rows)
        elif kind in ("count", "checked", "unchecked"):
            out[part.field] = sum(int(row[part.columns[0]]) for row in rows)
        elif kind == "sum":
            out[part.field] = sum(_int(row[part.columns[0]]) for row in rows)
        elif kind == "average":
            total = sum(_int(row[part.columns[0]]) for row in rows)
            n = sum(int(row[part.columns[1]]) for row in rows)
            out[part.field] = total / n if n else None
        else:
            present = [row[part.columns[0]] for row in rows if row[part.columns[0]] is not None]
            if not present:
                out[part.field] = None
            else:
                out[part.field] = max(present) if kind in ("maximum", "latest") else min(present)
    return out


def _int(value: Any) -> int:
    """An integer SUM as the engine's sum: None (no values) is 0;
    PostgreSQL's numeric sums come back as Decimal."""
    if value is None:
        return 0
    if isinstance(value, Decimal):
        return int(value)
    return value


# -- the engine's group rules (written apart from it on purpose) -------------------

_NULL = (1,)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return ("link", value.get("type"), value.get("id"))
    return None if value is None else ("v", type(value).__name__, value)


def _group_name(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        name = value.get("name")
        return "" if name is None else str(name)
    return str(value)


def _group_sort_key(value: Any) -> tuple:
    """Nulls last ascending (first descending), text ignoring case, links
    by name (a nameless link with the nulls)."""
    if value is None:
        return _NULL
    if isinstance(value, dict):
        name = value.get("name")
        if name is None:
            return _NULL
        return (0, str(name).lower(), str(name), value.get("id"))
    if isinstance(value, str):
        return (0, value.lower(), value)
    return (0, value)
