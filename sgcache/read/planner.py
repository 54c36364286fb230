"""The read planner: decides whether the store can answer a `read` exactly,
and if so compiles it to SQL.

`plan_read(args, catalog, dialect, ...)` returns a `ReadPlan` or raises
`PassThrough(reason)`. The contract is the emulator's read engine
(docs/emulator.md, "Reads"): same rows, same order, same values, same
paging. Anything the engine would answer with a fault, and anything the
store cannot decide exactly, passes through to the site. Supported:

* return fields: ``id``/``type``, every cached field (entity values as
  ``{type, id, name}``; multi_entity in stored order with non-live items left
  out), deep paths through entity links (``f.Type.g[.Type.h]``);
* filters: every relation of every cacheable data type (see
  `sgcache.read.relations`), in nested ``and``/``or`` groups (wire or list form),
  deep paths through entity links (LEFT JOIN) and multi-entity links
  (EXISTS with the engine's "any leaf" / "no leaf" rules, where an empty
  list is one null leaf); relative dates against an injected "now" and tz;
* sorts: every sortable type, entity fields by display name, deep keys,
  nulls last ascending / first descending, ``id`` tie-break; keys the engine
  ignores are ignored;
* paging (``has_next_page`` / ``entity_count``), ``return_only``,
  ``include_archived_projects: false``.

Rows not fully loaded (``_complete = 0``) of any type a plan reads make the
request pass through at run time (`sgcache.read.reader`), as do links whose
target row the store lacks.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

from sgcache.schema.types import data_type, is_cacheable
from sgcache.schema.types.base import identity
from sgcache.read.relations import (
    NEGATIONS,
    RELATIONS,
    TRUE,
    Clock,
    check_int,
    PassThrough,
    Q,
    Text,
    all_of,
    any_of,
    col,
    conv_date,
    conv_datetime,
    conv_number,
    fmt,
    in_list,
    is_int,
    join,
    literal,
    negate,
    param,
    text_match,
)
from sgcache.schema import FieldSpec, Schema
from sgcache.store import layout

__all__ = ["Catalog", "PassThrough", "ReadPlan", "Output", "LinkJoin", "plan_read"]

RETURN_ONLY = {"active": 1, "retired": 0}

# -- cheap limits, checked before planning: a read beyond them passes through
#: leaf conditions in a read's filters
MAX_CONDITIONS = 500
#: filter groups nested in one another
MAX_GROUP_DEPTH = 16
#: values of one condition (an ``in`` list)
MAX_FILTER_VALUES = 10_000
#: return fields and sort keys, together
MAX_FIELDS = 1_000
#: rows a page may skip (``(current_page - 1) * entities_per_page``)
MAX_OFFSET = 10**9
#: the text of a plan's main statement (SQLite's and PostgreSQL's parsers
#: and statement caches grow with it)
MAX_SQL_CHARS = 64_000
#: parameters of one SQLite statement (SQLITE_MAX_VARIABLE_NUMBER's default)
SQLITE_MAX_PARAMS = 32_766

#: memory for compiled plans and pass-through decisions (`PlanCache`)
PLAN_CACHE_BYTES = 16 * 2**20

#: Read arguments the planner understands; any other key passes through.
KNOWN_ARGS = frozenset(
    """type return_fields filters return_only paging sorts api_return_image_urls
    return_paging_info return_paging_info_without_counts include_archived_projects
    additional_filter_presets""".split()
)


class Catalog:
    """What the store can serve: the schema plus the set of ready fields."""

    def __init__(self, schema: Schema, ready: dict[str, set[str]] | None = None):
        self.schema = schema
        self.ready: dict[str, set[str]] = ready or {}
        self._name_decoders: dict[str, Callable[[Any], Any]] = {}

    def is_ready(self, entity_type: str, field_name: str) -> bool:
        if field_name == "id":
            return self.type_ready(entity_type)
        return field_name in self.ready.get(entity_type, ())

    def type_ready(self, entity_type: str) -> bool:
        return entity_type in self.schema and bool(self.ready.get(entity_type))

    def name_kind(self, entity_type: str) -> str | None:
        """How links to `entity_type` get their `name` locally: ``"id"`` (the
        type has no display name: always null), ``"text"`` (a text-like,
        date or date_time identifier: usable in name filters and sorts),
        ``"value"`` (a number or url identifier: returned only), or None
        (not cached: pass through)."""
        if not self.type_ready(entity_type):
            return None
        ident = self.schema.identifier(entity_type)
        if ident == "id":
            return "id"
        spec = self.schema.get_field(entity_type, ident)
        if spec is None or not self.is_ready(entity_type, ident):
            return None
        return getattr(data_type(spec.data_type), "as_name", None)

    def nameable(self, entity_type: str) -> bool:
        """True when links to this type can be given their `name` locally."""
        return self.name_kind(entity_type) is not None

    def name_decoder(self, entity_type: str) -> Callable[[Any], Any]:
        """stored identifier value -> the link's wire `name` (memoized: it
        depends on the schema only)."""
        decoder = self._name_decoders.get(entity_type)
        if decoder is None:
            decoder = self._name_decoders[entity_type] = _name_decoder(self.schema, entity_type)
        return decoder


def _name_decoder(schema: Schema, entity_type: str) -> Callable[[Any], Any]:
    ident = schema.identifier(entity_type)
    spec = None if ident == "id" else schema.get_field(entity_type, ident)
    if ident == "id":
        return lambda raw: None
    dtype = None if spec is None else data_type(spec.data_type)
    if dtype is None or (dtype.decode is identity and dtype.link_name is None):
        return lambda raw: raw  # stored as sent; None stays None
    return dtype.name_of


@dataclass
class LinkJoin:
    """A LEFT JOIN that names one possible target type of an entity field."""

    target_type: str
    alias: str
    identifier: str  # "id" when the type has no display name


@dataclass
class Output:
    """One returned field and where its value comes from in the row.

    `kind` is ``scalar``, ``entity`` or ``multi``; `null_column`, for deep
    fields, holds the id of the row the leaf is read from (NULL: the value
    is null whatever its type).
    """

    name: str
    spec: FieldSpec | None
    kind: str = "scalar"
    columns: list[int] = field(default_factory=list)
    joins: list[LinkJoin] = field(default_factory=list)
    null_column: int | None = None
    #: multi: the SELECT of the links of some rows, ending in ``WHERE``
    #: (the reader adds the condition on ``a.parent_id``): parent_id,
    #: child_type, child_id, then per `joins` target its ``_active``
    #: (NULL: not in the store) and name column
    links_sql: str | None = None


@dataclass
class ReadPlan:
    entity_type: str
    sql: str
    params: list[Any]
    count_sql: str | None
    count_params: list[Any]
    outputs: list[Output]
    #: columns of the SELECT holding id and _complete
    id_column: int
    complete_column: int
    #: (reason, column) of tests that make the answer untrustworthy: some
    #: row the plan reads is not fully loaded, a link to an uncached type...
    guard_columns: list[tuple[str, int]]
    #: the same tests, run on their own when the page is empty
    guard_sql: str
    page_size: int | None
    #: "has_next_page", "entity_count" or None (see `sgcache.read.reader`)
    paging_mode: str | None
    want_has_next: bool
    want_count: bool
    #: every entity type the plan reads
    types: set[str] = field(default_factory=set)
    #: False when the plan depends on "now" (relative dates): not reusable
    timeless: bool = True

    @property
    def multi_fields(self) -> list[FieldSpec]:
        return [o.spec for o in self.outputs if o.kind == "multi" and o.spec is not None]


def default_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def plan_read(
    args: Any,
    catalog: Catalog,
    dialect: str,
    max_page_size: int = 500,
    now: Callable[[], datetime.datetime] | None = None,
    tz: datetime.tzinfo | None = None,
) -> ReadPlan:
    """Compile a wire `read` ARGS dict, or raise PassThrough.

    `now` gives the site's current time (aware, or naive UTC) for relative
    date filters; it is called at most once. `tz` is the site's time zone
    for calendar arithmetic (default UTC).
    """
    if not isinstance(args, dict):
        raise PassThrough("read arguments are not a mapping")
    extra = set(args) - KNOWN_ARGS
    if extra:
        raise PassThrough("unknown read argument", ",".join(sorted(str(k) for k in extra)))
    if args.get("additional_filter_presets"):
        raise PassThrough("additional_filter_presets")
    entity_type = args.get("type")
    if not isinstance(entity_type, str) or entity_type not in catalog.schema:
        raise PassThrough("type not cached")
    if not catalog.type_ready(entity_type):
        raise PassThrough("type not loaded yet", entity_type)
    return_only = args.get("return_only") or "active"
    if not isinstance(return_only, str) or return_only not in RETURN_ONLY:
        raise PassThrough("unusual return_only")
    wire = normalize_filters(args.get("filters"))
    named = [args.get(k) for k in ("return_fields", "sorts")]
    if sum(len(v) for v in named if isinstance(v, (list, tuple))) > MAX_FIELDS:
        raise PassThrough("too many return fields or sorts")

    compiler = ReadCompiler(catalog, entity_type, dialect, now or default_now, tz or datetime.timezone.utc)
    outputs = compiler.outputs(args.get("return_fields"))
    where = compiler.filters(wire)
    order = compiler.sorts(args.get("sorts"))
    conditions = [Q(f'm."_active" = {RETURN_ONLY[return_only]}')]
    if args.get("include_archived_projects", True) is False:
        conditions.append(compiler.not_archived())
    if where is not None:
        conditions.append(where)
    base_where = join(" AND ", [fmt("({})", c) for c in conditions])

    paging = args.get("paging")
    page_size: int | None = None
    offset = 0
    if paging is not None:
        if not isinstance(paging, dict):
            raise PassThrough("unusual paging")
        page_size = paging.get("entities_per_page", max_page_size)
        page = paging.get("current_page", 1)
        if not is_int(page_size) or not is_int(page) or page_size < 1 or page < 1:
            raise PassThrough("unusual paging")
        page_size = min(page_size, max_page_size)
        offset = (page - 1) * page_size
        if offset > MAX_OFFSET:
            raise PassThrough("page beyond the store's range")

    want_has_next = bool(args.get("return_paging_info_without_counts"))
    want_count = bool(args.get("return_paging_info"))

    table = layout.entity_table(entity_type)
    guards = compiler.guards()
    guard_columns = [(reason, compiler.column(f"({expr})")) for reason, expr in guards]
    select_list = ", ".join(compiler.select)
    joins = " ".join(compiler.main.joins)
    sql = f"SELECT {select_list} FROM {table} AS m {joins} WHERE {base_where.sql} ORDER BY {order}"
    if page_size is not None:
        # one extra row tells whether a next page exists
        sql += f" LIMIT {int(page_size) + 1} OFFSET {int(offset)}"
    if len(sql) > MAX_SQL_CHARS:
        raise PassThrough("read too large to plan")
    if dialect == "sqlite" and len(base_where.params) > SQLITE_MAX_PARAMS:
        raise PassThrough("too many filter values")
    count_sql = None
    if want_count and not want_has_next:
        count_sql = f"SELECT COUNT(*) FROM {table} AS m {joins} WHERE {base_where.sql}"
    return ReadPlan(
        entity_type=entity_type,
        sql=sql,
        params=list(base_where.params),
        count_sql=count_sql,
        count_params=list(base_where.params),
        outputs=outputs,
        id_column=0,
        complete_column=1,
        guard_columns=guard_columns,
        guard_sql="SELECT " + ", ".join(f"({expr})" for _, expr in guards),
        page_size=page_size,
        paging_mode="has_next_page" if want_has_next else ("entity_count" if want_count else None),
        want_has_next=want_has_next,
        want_count=want_count,
        types=set(compiler.types),
        timeless=not compiler.reads_clock,
    )


def request_key(args: Any, max_page_size: int) -> tuple[str, int] | None:
    """What makes two reads the same read (given the catalog and dialect):
    their arguments, in a canonical text, and the site's page size. None
    when the arguments are not JSON (the read is never kept)."""
    try:
        return (json.dumps(args, sort_keys=True), max_page_size)
    except (TypeError, ValueError):
        return None


class PlanCache:
    """Compiled plans (and pass-through decisions) by request, for one
    catalog: a farm sends the same few reads thousands of times. A plan is
    a function of the arguments, the catalog, the dialect and the page size
    only -- except relative dates, which read the clock: those are never
    kept. Bounded by bytes (`plan_bytes`), least recently used out; one
    entry may take at most `max_entry_bytes` (an eighth of the budget)."""

    def __init__(self, catalog: Catalog, dialect: str, max_bytes: int = PLAN_CACHE_BYTES,
                 max_entry_bytes: int | None = None):
        self.catalog = catalog
        self.dialect = dialect
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 8 if max_entry_bytes is None else max_entry_bytes
        self._plans: OrderedDict[tuple[str, int], tuple[ReadPlan | PassThrough, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._plans)

    def plan(
        self,
        args: Any,
        max_page_size: int,
        now: Callable[[], datetime.datetime] | None = None,
        tz: datetime.tzinfo | None = None,
        key: tuple[str, int] | None = None,
    ) -> ReadPlan:
        """`key`: `request_key(args, max_page_size)`, when the caller has it."""
        if key is None:
            key = request_key(args, max_page_size)
        found = self._plans.get(key) if key is not None else None
        if found is not None:
            self._plans.move_to_end(key)  # type: ignore[arg-type]
            kept = found[0]
            if isinstance(kept, PassThrough):
                raise kept.again()
            return kept
        try:
            made: ReadPlan | PassThrough = plan_read(args, self.catalog, self.dialect, max_page_size, now, tz)
        except PassThrough as p:
            made = p
        if key is not None and (isinstance(made, PassThrough) or made.timeless):
            # a decision is kept as a fresh copy: the raised one holds its
            # traceback, and through it the frames of the whole planning
            self._keep(key, made.again() if isinstance(made, PassThrough) else made)
        if isinstance(made, PassThrough):
            raise made
        return made

    def _keep(self, key: tuple[str, int], made: ReadPlan | PassThrough) -> None:
        size = plan_bytes(key[0], made)
        if size > self.max_entry_bytes:
            return
        self._plans[key] = (made, size)
        self.bytes += size
        while self.bytes > self.max_bytes and self._plans:
            _, (_, evicted) = self._plans.popitem(last=False)
            self.bytes -= evicted


def plan_bytes(key_text: str, made: ReadPlan | PassThrough) -> int:
    """About what a kept plan holds in memory: its key's text, its SQL and
    its parameters (a fixed share for the objects around them)."""
    size = 512 + sys.getsizeof(key_text)
    if isinstance(made, PassThrough):
        return size + 300 + 2 * len(made.reason)  # the exception, its args and message
    size += sum(len(text) for text in (made.sql, made.guard_sql, made.count_sql or ""))
    size += sum(len(out.links_sql or "") + 256 for out in made.outputs)
    params = _values_bytes(made.params)
    return size + (2 * params if made.count_sql else params)


def _values_bytes(values: list[Any]) -> int:
    total = 8 * len(values)
    for value in values:
        total += sys.getsizeof(value)
        if isinstance(value, list):
            total += _values_bytes(value)
    return total


# -- paths ----------------------------------------------------------------------


@dataclass(frozen=True)
class Hop:
    spec: FieldSpec
    target: str


@dataclass(frozen=True)
class Path:
    text: str
    hops: tuple[Hop, ...]
    leaf: FieldSpec
    #: the entity type holding the leaf field
    leaf_type: str

    @property
    def through_multi(self) -> bool:
        return any(h.spec.data_type == "multi_entity" for h in self.hops)


class _Scope:
    """Where LEFT JOINs go: the main query, or one EXISTS subquery."""

    def __init__(self) -> None:
        self.joins: list[str] = []
        self.known: dict[tuple[str, str, str, bool], str] = {}


def normalize_filters(filters: Any) -> Any:
    """The client-side list form as the wire form, like the engine; a read
    over the cheap limits (`MAX_CONDITIONS`, `MAX_GROUP_DEPTH`,
    `MAX_FILTER_VALUES`) passes through."""
    if filters is None:
        return None
    counted = [0]
    if isinstance(filters, (list, tuple)):
        return {"logical_operator": "and",
                "conditions": [_normalize_condition(f, 1, counted) for f in filters]}
    if isinstance(filters, dict):
        return _normalize_condition(filters, 0, counted)
    raise PassThrough("unusual filters")


def _normalize_condition(cond: Any, depth: int, counted: list[int]) -> Any:
    if depth > MAX_GROUP_DEPTH:
        raise PassThrough("filter groups nested too deeply")
    if isinstance(cond, dict) and ("filter_operator" in cond or "logical_operator" in cond):
        if "filter_operator" in cond:
            op = cond.get("filter_operator")
            if op in ("all", "and"):
                logical = "and"
            elif op in ("any", "or"):
                logical = "or"
            else:
                raise PassThrough("unusual logical operator")
            subs = cond.get("filters")
        else:
            logical, subs = cond["logical_operator"], cond.get("conditions")
        if not isinstance(subs, (list, tuple)):
            raise PassThrough("unusual filter group")
        return {"logical_operator": logical,
                "conditions": [_normalize_condition(c, depth + 1, counted) for c in subs]}
    counted[0] += 1
    if counted[0] > MAX_CONDITIONS:
        raise PassThrough("too many filter conditions")
    if isinstance(cond, (list, tuple)):
        if len(cond) < 2:
            raise PassThrough("unusual filter condition")
        values = list(cond[2:])
        if len(values) == 1 and isinstance(values[0], (list, tuple)):
            values = list(values[0])
        cond = {"path": cond[0], "relation": cond[1], "values": values}
    if isinstance(cond, dict):
        values = cond.get("values")
        if isinstance(values, (list, tuple)) and len(values) > MAX_FILTER_VALUES:
            raise PassThrough("too many filter values")
        return cond
    raise PassThrough("unusual filter condition")


class ReadCompiler:
    def __init__(
        self,
        catalog: Catalog,
        entity_type: str,
        dialect: str,
        now: Callable[[], datetime.datetime],
        tz: datetime.tzinfo,
    ):
        self.catalog = catalog
        self.schema = catalog.schema
        self.entity_type = entity_type
        self.dialect = dialect
        self.text = Text(dialect)
        self._now = now
        self._clock: Clock | None = None
        self.tz = tz
        self.select: list[str] = ['m."id"', 'm."_complete"']
        self.main = _Scope()
        self.types: set[str] = {entity_type}
        #: (table, type column, allowed types) whose other links matter
        self.foreign: set[tuple[str, str, str]] = set()
        self._aliases = 0

    # -- helpers -----------------------------------------------------------
    def column(self, expr: str) -> int:
        self.select.append(expr)
        return len(self.select) - 1

    def alias(self, prefix: str = "j") -> str:
        self._aliases += 1
        return f"{prefix}{self._aliases}"

    @property
    def reads_clock(self) -> bool:
        """The plan depends on "now" (a relative date was compiled)."""
        return self._clock is not None

    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = Clock(self._now(), self.tz)
        return self._clock

    def need_type(self, entity_type: str) -> None:
        """The plan reads rows of `entity_type`: it must be loaded."""
        if entity_type not in self.schema:
            raise PassThrough("linked type not cached", entity_type)
        if not self.catalog.type_ready(entity_type):
            raise PassThrough("linked type not loaded yet", entity_type)
        self.types.add(entity_type)

    def guards(self) -> list[tuple[str, str]]:
        """(reason, SQL true when the plan cannot be trusted) pairs."""
        out = [(
            "rows not fully loaded yet",
            " OR ".join(
                f'EXISTS (SELECT 1 FROM {layout.entity_table(t)} WHERE "_complete" = 0)'
                for t in sorted(self.types)
            ),
        )]
        if self.foreign:
            out.append((
                "links to uncached types",
                " OR ".join(
                    f"EXISTS (SELECT 1 FROM {table} WHERE {column} NOT IN ({types}))"
                    for table, column, types in sorted(self.foreign)
                ),
            ))
        return out

    def watch_foreign(self, spec: FieldSpec) -> None:
        """The relation depends on whether *every* link of `spec` is live or
        on its name: a stored link to a type outside the cached link types
        (the cached schema may list fewer than the site) makes the answer
        unknown, so the plan checks that no such link exists."""
        types = ", ".join(literal(t) for t in spec.link_types) or "NULL"
        if spec.data_type == "multi_entity":
            self.foreign.add((layout.multi_table(spec.entity_type, spec.name), "child_type", types))
        else:
            self.foreign.add(
                (layout.entity_table(spec.entity_type), layout.link_type_column(spec.name), types)
            )

    def resolve(self, path: Any, purpose: str) -> Path:
        """Parse ``field[.Type.field...]`` like the engine, against the
        cached schema; anything it does not know passes through."""
        if not isinstance(path, str) or not path:
            raise PassThrough(f"unusual {purpose} field")
        parts = path.split(".")
        if len(parts) % 2 == 0:
            raise PassThrough(f"unusual {purpose} field")
        hops = []
        current = self.entity_type
        for i in range(0, len(parts) - 1, 2):
            spec = self.schema.get_field(current, parts[i])
            target = parts[i + 1]
            if spec is None:
                raise PassThrough(f"{purpose} field not cached", f"{current}.{parts[i]}")
            if not spec.is_link:
                raise PassThrough(f"{purpose} path through a non-link field", f"{current}.{parts[i]}")
            if target not in self.schema:
                raise PassThrough("linked type not cached", target)
            if not spec.link_types or target not in spec.link_types:
                raise PassThrough(f"{purpose} path names a type the field does not link", f"{current}.{parts[i]}")
            hops.append(Hop(spec, target))
            current = target
        leaf = self.schema.get_field(current, parts[-1])
        if leaf is None:
            raise PassThrough(f"{purpose} field not cached", f"{current}.{parts[-1]}")
        return Path(path, tuple(hops), leaf, current)

    def require_ready(self, path: Path, purpose: str) -> None:
        current = self.entity_type
        for hop in path.hops:
            if not self.catalog.is_ready(current, hop.spec.name):
                raise PassThrough(f"{purpose} field not ready", f"{current}.{hop.spec.name}")
            self.need_type(hop.target)
            current = hop.target
        leaf = path.leaf
        if leaf.name != "id" and not is_cacheable(leaf.data_type):
            raise PassThrough(f"{purpose} field of an uncached data type", leaf.data_type)
        if not self.catalog.is_ready(current, leaf.name):
            raise PassThrough(f"{purpose} field not ready", f"{current}.{leaf.name}")

    def hop_join(self, scope: _Scope, alias: str, hop: Hop) -> str:
        """LEFT JOIN the live target of an entity hop; its alias."""
        key = (alias, hop.spec.name, hop.target, True)
        found = scope.known.get(key)
        if found is not None:
            return found
        new = self.alias()
        scope.joins.append(
            f"LEFT JOIN {layout.entity_table(hop.target)} AS {new} "
            f"ON {col(new, 'id')} = {col(alias, hop.spec.name + '__id')} "
            f"AND {col(alias, hop.spec.name + '__type')} = {literal(hop.target)} "
            f'AND {new}."_active" = 1'
        )
        scope.known[key] = new
        return new

    def walk(self, scope: _Scope, alias: str, hops: tuple[Hop, ...]) -> str:
        for hop in hops:
            assert hop.spec.data_type == "entity"
            alias = self.hop_join(scope, alias, hop)
        return alias

    # -- return fields -----------------------------------------------------
    def outputs(self, return_fields: Any) -> list[Output]:
        if return_fields is None:
            return_fields = ["id"]
        if not isinstance(return_fields, (list, tuple)):
            raise PassThrough("unusual return_fields")
        outputs: list[Output] = []
        seen = set()
        for name in return_fields:
            if name in ("id", "type"):
                continue
            if not isinstance(name, str):
                raise PassThrough("unusual return field")
            if name in seen:
                continue
            seen.add(name)
            path = self.resolve(name, "return")
            if path.through_multi:
                # the engine returns null; a real site may return a list
                raise PassThrough("deep return field through a multi-entity field")
            self.require_ready(path, "return")
            spec = path.leaf
            alias = self.walk(self.main, "m", path.hops)
            out = Output(name, spec)
            if path.hops:
                out.null_column = self.column(col(alias, "id"))
            if spec.name == "id":
                out.columns.append(self.column(col(alias, "id")))
            elif spec.data_type == "multi_entity":
                out.kind = "multi"
                for target in spec.link_types:
                    if target in self.schema and self.catalog.type_ready(target):
                        self.types.add(target)
                out.columns.append(self.column(col(alias, "id")))
                out.links_sql = self.links_select(out, spec)
            elif spec.data_type == "entity":
                out.kind = "entity"
                self.entity_output(out, alias, spec)
            else:
                out.columns.append(self.column(col(alias, spec.name)))
            outputs.append(out)
        return outputs

    def links_select(self, out: Output, spec: FieldSpec) -> str:
        """A multi-entity field's links with each target's state and name,
        in one statement (a target type without cached names is left out:
        a link there passes through at run time)."""
        columns = ["a.parent_id", "a.child_type", "a.child_id"]
        tables = [f"{layout.multi_table(spec.entity_type, spec.name)} AS a"]
        for target in spec.link_types:
            if target not in self.schema or not self.catalog.nameable(target):
                continue
            alias, ident = f"t{len(out.joins)}", self.schema.identifier(target)
            tables.append(
                f"LEFT JOIN {layout.entity_table(target)} AS {alias} "
                f"ON {col(alias, 'id')} = a.child_id AND a.child_type = {literal(target)}"
            )
            out.joins.append(LinkJoin(target, alias, ident))
            columns.append(col(alias, "_active"))
            if ident != "id":
                columns.append(col(alias, ident))
        return f"SELECT {', '.join(columns)} FROM {' '.join(tables)} WHERE "

    def entity_output(self, out: Output, alias: str, spec: FieldSpec) -> None:
        out.columns.append(self.column(col(alias, spec.name + "__type")))
        out.columns.append(self.column(col(alias, spec.name + "__id")))
        for target in spec.link_types:
            if self.catalog.name_kind(target) is None:
                continue  # a row linking there passes through at run time
            self.types.add(target)
            new = self.alias("n")
            ident = self.schema.identifier(target)
            self.main.joins.append(
                f"LEFT JOIN {layout.entity_table(target)} AS {new} "
                f"ON {col(new, 'id')} = {col(alias, spec.name + '__id')} "
                f"AND {col(alias, spec.name + '__type')} = {literal(target)}"
            )
            out.joins.append(LinkJoin(target, new, ident))
            out.columns.append(self.column(col(new, "id")))
            out.columns.append(self.column(f'{new}."_active"'))
            if ident != "id":
                out.columns.append(self.column(col(new, ident)))

    # -- filters -----------------------------------------------------------
    def filters(self, wire: Any) -> Q | None:
        """The WHERE condition of normalized filters (`normalize_filters`)."""
        if wire is None:
            return None
        return self.group_or_condition(self.main, "m", self.entity_type, wire)

    def group_or_condition(self, scope: _Scope, alias: str, etype: str, cond: Any) -> Q:
        if not isinstance(cond, dict):
            raise PassThrough("unusual filter condition")
        if "logical_operator" in cond:
            op = cond["logical_operator"]
            if op not in ("and", "or"):
                raise PassThrough("unusual logical operator")
            parts = [self.group_or_condition(scope, alias, etype, c) for c in cond["conditions"]]
            if not parts:
                return TRUE  # an empty group matches everything
            return all_of(parts) if op == "and" else any_of(parts)
        if "path" not in cond or "relation" not in cond:
            raise PassThrough("unusual filter condition")
        return self.condition(scope, alias, cond["path"], cond["relation"], cond.get("values", []))

    def condition(self, scope: _Scope, alias: str, path_text: Any, relation: Any, values: Any) -> Q:
        path = self.resolve(path_text, "filter")
        leaf = path.leaf
        if not isinstance(values, (list, tuple)):
            values = [values]
        values = list(values)
        allowed = RELATIONS.get(leaf.data_type, frozenset())
        if not isinstance(relation, str) or relation not in allowed:
            raise PassThrough("relation not valid for the field", f"{leaf.data_type} {relation}")
        self.require_ready(path, "filter")
        negated = relation in NEGATIONS
        positive = NEGATIONS.get(relation, relation)
        q, _ = self.match(scope, alias, self.entity_type, path.hops, path.leaf, positive, values)
        return negate(q) if negated else q

    def match(
        self,
        scope: _Scope,
        alias: str,
        alias_type: str,
        hops: tuple[Hop, ...],
        leaf: FieldSpec,
        relation: str,
        values: list,
    ) -> tuple[Q, bool]:
        """A positive relation over the leaf set reached by `hops` from
        `alias` (a row of `alias_type`): true when any leaf matches. Also
        says whether the relation matches a null leaf."""
        for i, hop in enumerate(hops):
            if hop.spec.data_type != "multi_entity":
                continue
            owner = self.walk(scope, alias, hops[:i])
            owner_type = hops[i - 1].target if i else alias_type
            sub = _Scope()
            a, t = self.alias("a"), self.alias("t")
            inner, null_match = self.match(sub, t, hop.target, hops[i + 1:], leaf, relation, values)
            if null_match:
                # whether an entity with no linked entity matches (`is
                # None` through the link, or its negation) is not known of
                # Shotgun (shared/PROTOCOL.md, "Read corners"): not guessed
                raise PassThrough("null through a multi-entity link", f"{hop.spec.name} {relation}")
            assoc = layout.multi_table(owner_type, hop.spec.name)
            head = (
                f"FROM {assoc} AS {a} JOIN {layout.entity_table(hop.target)} AS {t} "
                f'ON {col(t, "id")} = {a}.child_id AND {t}."_active" = 1'
            )
            link = f"{a}.parent_id = {col(owner, 'id')} AND {a}.child_type = {literal(hop.target)}"
            joins = " ".join(sub.joins)
            q = fmt(f"EXISTS (SELECT 1 {head} {joins} WHERE {link} AND ({{}}))", inner)
            if null_match:
                q = any_of([q, Q(f"NOT EXISTS (SELECT 1 {head} WHERE {link})")])
            return q, null_match
        if hops:
            target = self.alias("d")
            q, null_match = self.leaf(target, leaf, relation, values)
            if not null_match:
                # a broken chain cannot match: test the chain as nested IN
                # (...) sets, which every planner drives from the selective
                # end (SQLite never reorders a LEFT JOIN chain)
                return self.chain_in(alias, hops, target, q), False
        owner = self.walk(scope, alias, hops)
        return self.leaf(owner, leaf, relation, values)

    def chain_in(self, alias: str, hops: tuple[Hop, ...], target: str, q: Q) -> Q:
        """True when the live chain of entity `hops` from `alias` ends in a
        row (aliased `target`) where `q` holds -- `q` must be false on a
        missing row, as the LEFT JOIN form would then read NULLs."""
        last = hops[-1].target
        sub = fmt(
            f"SELECT {col(target, 'id')} FROM {layout.entity_table(last)} AS {target} "
            f'WHERE {target}."_active" = 1 AND ({{}})',
            q,
        )
        for i in range(len(hops) - 1, 0, -1):
            hop, owner = hops[i], self.alias("d")
            sub = fmt(
                f"SELECT {col(owner, 'id')} FROM {layout.entity_table(hops[i - 1].target)} AS {owner} "
                f'WHERE {owner}."_active" = 1 '
                f"AND {col(owner, hop.spec.name + '__type')} = {literal(hop.target)} "
                f"AND {col(owner, hop.spec.name + '__id')} IN ({{}})",
                sub,
            )
        first = hops[0]
        return fmt(
            f"{col(alias, first.spec.name + '__type')} = {literal(first.target)} "
            f"AND {col(alias, first.spec.name + '__id')} IN ({{}})",
            sub,
        )

    # -- leaf relations ----------------------------------------------------
    def leaf(self, alias: str, spec: FieldSpec, relation: str, values: list) -> tuple[Q, bool]:
        """A positive relation on one field of the row `alias`, compiled by
        the leaf strategy its data type names (`DataType.filter`)."""
        strategy = "number" if spec.name == "id" else getattr(data_type(spec.data_type), "filter", None)
        if strategy is None:
            raise PassThrough("filter on an uncached data type", spec.data_type)
        return LEAVES[strategy](self, alias, spec, relation, values)

    def checkbox_leaf(self, expr: str, relation: str, values: list) -> tuple[Q, bool]:
        want = self.one(values)
        if want is None:
            # Shotgun refuses it (its real-site test_unsupported_filters):
            # the client gets the site's own fault
            raise PassThrough("filter the site refuses", "checkbox compared with None")
        if not isinstance(want, bool):
            raise PassThrough("filter value of the wrong type", "checkbox")
        return Q(f"COALESCE({expr}, 0) = {1 if want else 0}"), not want

    @staticmethod
    def one(values: list) -> Any:
        if len(values) != 1:
            raise PassThrough("wrong number of filter values")
        return values[0]

    def text_leaf(self, expr: str, relation: str, values: list) -> tuple[Q, bool]:
        for v in values:
            if v is not None and not isinstance(v, str):
                raise PassThrough("filter value of the wrong type", "text")
        if relation == "is":
            want = self.one(values)
            if want is None:
                return Q(f"{expr} IS NULL"), True
            return text_match(self.text, expr, "is", want), False
        if relation == "in":
            wanted = sorted({v.lower() for v in values if v is not None})
            with_null = any(v is None for v in values)
            for w in wanted:
                self.text.check_value(w)
            parts = []
            if wanted:
                parts.append(in_list(self.dialect, self.text.lower(expr), wanted))
            if with_null:
                parts.append(Q(f"{expr} IS NULL"))
            return any_of(parts), with_null
        want = self.one(values)
        if want is None:
            raise PassThrough("filter value of the wrong type", "text")
        return text_match(self.text, expr, relation, want), False

    def ordered_leaf(
        self, expr: str, relation: str, values: list, conv: Callable[[Any], Any]
    ) -> tuple[Q, bool]:
        if relation == "is":
            want = self.one(values)
            if want is None:
                return Q(f"{expr} IS NULL"), True
            return fmt(f"{expr} = {{}}", param(conv(want))), False
        if relation == "in":
            wanted = [conv(v) for v in values if v is not None]
            with_null = any(v is None for v in values)
            parts = []
            if wanted:
                parts.append(in_list(self.dialect, expr, wanted))
            if with_null:
                parts.append(Q(f"{expr} IS NULL"))
            return any_of(parts), with_null
        if relation in ("less_than", "greater_than"):
            want = self.one(values)
            if want is None:
                raise PassThrough("filter value of the wrong type", relation)
            op = "<" if relation == "less_than" else ">"
            return fmt(f"{expr} {op} {{}}", param(conv(want))), False
        if relation == "between":
            if len(values) != 2:
                raise PassThrough("wrong number of filter values")
            lo, hi = values
            lo = None if lo is None else conv(lo)
            hi = None if hi is None else conv(hi)
            parts = [Q(f"{expr} IS NOT NULL")]
            if lo is not None:
                parts.append(fmt(f"{expr} >= {{}}", param(lo)))
            if hi is not None:
                parts.append(fmt(f"{expr} <= {{}}", param(hi)))
            return all_of(parts), False
        raise PassThrough("unsupported relation", relation)

    def date_leaf(self, expr: str, relation: str, values: list) -> tuple[Q, bool]:
        if relation in ("is", "in", "less_than", "greater_than", "between"):
            return self.ordered_leaf(expr, relation, values, conv_date)
        lo, hi = self.clock().date_range(relation, values)
        return Q(f"{expr} >= ? AND {expr} <= ?", [lo.isoformat(), hi.isoformat()]), False

    def datetime_leaf(self, expr: str, relation: str, values: list) -> tuple[Q, bool]:
        if relation in ("is", "in", "less_than", "greater_than", "between"):
            return self.ordered_leaf(expr, relation, values, conv_datetime)
        clock = self.clock()
        fmt_dt = conv_datetime_naive
        if relation.startswith("in_calendar_"):
            lo_d, hi_d = clock.date_range(relation, values)
            start = clock.local_midnight_utc(lo_d)
            end = clock.local_midnight_utc(hi_d + datetime.timedelta(days=1))
            return Q(f"{expr} >= ? AND {expr} < ?", [fmt_dt(start), fmt_dt(end)]), False
        n, unit = clock.relative_args(values)
        try:
            if relation == "in_last":
                lo = clock.shift_datetime(-n, unit)
                return Q(f"{expr} > ? AND {expr} <= ?", [fmt_dt(lo), fmt_dt(clock.now_utc)]), False
            if relation == "in_next":
                hi = clock.shift_datetime(n, unit)
                return Q(f"{expr} >= ? AND {expr} < ?", [fmt_dt(clock.now_utc), fmt_dt(hi)]), False
        except (OverflowError, ValueError):
            raise PassThrough("relative date out of range") from None
        raise PassThrough("unsupported relation", relation)

    # -- links ---------------------------------------------------------------
    def link_value(self, value: Any) -> tuple[str, int] | None:
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("type"), str) or "id" not in value:
            raise PassThrough("filter value of the wrong type", "entity")
        if not is_int(value["id"]):
            raise PassThrough("filter value of the wrong type", "entity id")
        check_int(value["id"])
        self.need_type(value["type"])
        return value["type"], value["id"]

    def link_types(self, spec: FieldSpec) -> tuple[str, ...]:
        """The types a link field may hold; every one must be loaded when a
        relation depends on which links are live."""
        for target in spec.link_types:
            self.need_type(target)
        return spec.link_types

    def live_target(self, etype: str, id_expr: str, extra: str = "") -> str:
        t = self.alias("l")
        return (
            f"EXISTS (SELECT 1 FROM {layout.entity_table(etype)} AS {t} "
            f'WHERE {col(t, "id")} = {id_expr} AND {t}."_active" = 1{extra})'
        )

    def entity_is(self, alias: str, spec: FieldSpec, link: tuple[str, int]) -> Q:
        type_col, id_col = col(alias, spec.name + "__type"), col(alias, spec.name + "__id")
        return Q(
            f"{id_col} = ? AND {type_col} = {literal(link[0])} AND {self.live_target(link[0], '?')}",
            [link[1], link[1]],
        )

    def entity_live(self, alias: str, spec: FieldSpec) -> Q:
        """True (never NULL) when the field holds a live link."""
        self.watch_foreign(spec)
        type_col, id_col = col(alias, spec.name + "__type"), col(alias, spec.name + "__id")
        parts = [
            Q(f"{type_col} = {literal(t)} AND {self.live_target(t, id_col)}")
            for t in self.link_types(spec)
        ]
        return fmt("COALESCE({}, FALSE)", any_of(parts))

    def name_test(self, spec: FieldSpec, relation: str, values: list) -> Callable[[str, str], Q | None]:
        """(target type, alias of the target row) -> the name test, or None
        when that type's links have no name (never match)."""
        want = self.one(values)
        if not isinstance(want, str):
            raise PassThrough("filter value of the wrong type", relation)

        def test(target: str, t: str) -> Q | None:
            kind = self.catalog.name_kind(target)
            if kind == "id":
                return None
            if kind != "text":
                raise PassThrough("link names not comparable locally", target)
            return text_match(self.text, col(t, self.schema.identifier(target)), relation, want)

        return test

    def entity_leaf(self, alias: str, spec: FieldSpec, relation: str, values: list) -> tuple[Q, bool]:
        type_col, id_col = col(alias, spec.name + "__type"), col(alias, spec.name + "__id")
        if relation == "is":
            link = self.link_value(self.one(values))
            if link is None:
                return negate(self.entity_live(alias, spec)), True
            return self.entity_is(alias, spec, link), False
        if relation == "in":
            links = [self.link_value(v) for v in values]
            parts = [self.entity_is(alias, spec, link) for link in dict.fromkeys(links) if link is not None]
            with_null = None in links
            if with_null:
                parts.append(negate(self.entity_live(alias, spec)))
            return any_of(parts), with_null
        if relation == "type_is":
            want = self.one(values)
            if want is None:
                return negate(self.entity_live(alias, spec)), True
            if not isinstance(want, str):
                raise PassThrough("filter value of the wrong type", "type_is")
            self.need_type(want)
            return Q(f"{type_col} = {literal(want)} AND {self.live_target(want, id_col)}"), False
        test = self.name_test(spec, relation, values)
        self.watch_foreign(spec)
        parts = []
        for target in self.link_types(spec):
            t = self.alias("l")
            cond = test(target, t)
            if cond is None:
                continue
            parts.append(
                fmt(
                    f"{type_col} = {literal(target)} AND EXISTS (SELECT 1 FROM "
                    f"{layout.entity_table(target)} AS {t} WHERE {col(t, 'id')} = {id_col} "
                    f'AND {t}."_active" = 1 AND ({{}}))',
                    cond,
                )
            )
        return any_of(parts), False

    def items(self, alias: str, spec: FieldSpec, target: str, extra: Q | None = None) -> Q:
        """EXISTS a live item of type `target` in a multi_entity field
        (and matching `extra`, a test on the item's row ``t``)."""
        a, t = self.alias("a"), self.alias("t")
        assoc = layout.multi_table(spec.entity_type, spec.name)
        sql = (
            f"EXISTS (SELECT 1 FROM {assoc} AS {a} JOIN {layout.entity_table(target)} AS {t} "
            f'ON {col(t, "id")} = {a}.child_id AND {t}."_active" = 1 '
            f"WHERE {a}.parent_id = {col(alias, 'id')} AND {a}.child_type = {literal(target)}"
        )
        if extra is None:
            return Q(sql + ")")
        return fmt(sql + " AND ({}))", extra(t) if callable(extra) else extra)

    def multi_contains(self, alias: str, spec: FieldSpec, link: tuple[str, int]) -> Q:
        # the target's state is tested once (an uncorrelated EXISTS), and
        # the parents holding it are read from the children index alone
        a = self.alias("a")
        assoc = layout.multi_table(spec.entity_type, spec.name)
        return Q(
            f"{self.live_target(link[0], '?')} AND {col(alias, 'id')} IN (SELECT {a}.parent_id "
            f"FROM {assoc} AS {a} WHERE {a}.child_type = {literal(link[0])} AND {a}.child_id = ?)",
            [link[1], link[1]],
        )

    def multi_empty(self, alias: str, spec: FieldSpec) -> Q:
        self.watch_foreign(spec)
        return negate(any_of([self.items(alias, spec, t) for t in self.link_types(spec)]))

    def multi_leaf(self, alias: str, spec: FieldSpec, relation: str, values: list) -> tuple[Q, bool]:
        if relation == "is":
            link = self.link_value(self.one(values))
            if link is None:
                return self.multi_empty(alias, spec), True
            return self.multi_contains(alias, spec, link), False
        if relation == "in":
            links = [self.link_value(v) for v in values]
            parts = [self.multi_contains(alias, spec, link) for link in dict.fromkeys(links) if link is not None]
            with_null = None in links
            if with_null:
                parts.append(self.multi_empty(alias, spec))
            return any_of(parts), with_null
        if relation == "type_is":
            want = self.one(values)
            if want is None:
                return self.multi_empty(alias, spec), True
            if not isinstance(want, str):
                raise PassThrough("filter value of the wrong type", "type_is")
            self.need_type(want)
            return self.items(alias, spec, want), False
        if relation == "name_contains":
            test = self.name_test(spec, relation, values)
            self.watch_foreign(spec)
            parts = []
            for target in self.link_types(spec):
                probe = test(target, "x")  # validates the type before building SQL
                if probe is None:
                    continue
                parts.append(self.items(alias, spec, target, lambda t, target=target: test(target, t)))
            return any_of(parts), False
        raise PassThrough("unsupported relation", relation)

    def tag_leaf(self, expr: str, relation: str, values: list) -> tuple[Q, bool]:
        want = self.one(values)
        if relation == "is" and want is None:
            return Q(f"({expr} IS NULL OR {expr} = '[]')"), True
        if not isinstance(want, str):
            raise PassThrough("filter value of the wrong type", "tag_list")
        if self.dialect == "postgresql":
            each, item = f"json_array_elements_text(({expr})::json) AS tg(v)", "tg.v"
        else:
            each, item = f"json_each({expr}) AS tg", "tg.value"
        cond = text_match(self.text, item, "is" if relation == "is" else "contains", want)
        return fmt(f"EXISTS (SELECT 1 FROM {each} WHERE {{}})", cond), False

    # -- include_archived_projects: false -------------------------------------
    def not_archived(self) -> Q:
        if self.entity_type == "Project":
            if not self.catalog.is_ready("Project", "archived"):
                raise PassThrough("Project.archived not cached")
            return Q('COALESCE(m."archived", 0) = 0')
        spec = self.schema.get_field(self.entity_type, "project")
        if spec is None:
            raise PassThrough("include_archived_projects false without a cached project field")
        if spec.data_type != "entity":
            return TRUE
        if not self.catalog.is_ready(self.entity_type, "project"):
            raise PassThrough("filter field not ready", f"{self.entity_type}.project")
        self.need_type("Project")
        if not self.catalog.is_ready("Project", "archived"):
            raise PassThrough("Project.archived not cached")
        return Q(
            'NOT EXISTS (SELECT 1 FROM "Project" AS ap WHERE ap."id" = m."project__id" '
            "AND m.\"project__type\" = 'Project' AND ap.\"_active\" = 1 AND ap.\"archived\" = 1)"
        )

    # -- sorts -------------------------------------------------------------
    def sorts(self, sorts: Any) -> str:
        if sorts is None:
            sorts = []
        if not isinstance(sorts, (list, tuple)):
            raise PassThrough("unusual sorts")
        keys: list[str] = []
        has_id = False
        for sort in sorts:
            if not isinstance(sort, dict):
                raise PassThrough("unusual sorts")
            name = sort.get("field_name", sort.get("column"))
            direction = sort.get("direction") or "asc"
            if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
                raise PassThrough("unusual sorts")
            desc = direction.lower() == "desc"
            path = self.resolve(name, "sort")
            strategy = "value" if path.leaf.name == "id" else getattr(data_type(path.leaf.data_type), "sort", None)
            if path.through_multi or strategy is None:
                continue  # the engine ignores keys it cannot sort by
            if has_id:
                continue  # id is unique: later keys cannot matter
            self.require_ready(path, "sort")
            alias = self.walk(self.main, "m", path.hops)
            sql_dir = "DESC" if desc else "ASC"
            nulls = "NULLS FIRST" if desc else "NULLS LAST"
            leaf = path.leaf
            if leaf.name == "id":
                keys.append(f"{col(alias, 'id')} {sql_dir} {nulls}")
                if not path.hops:
                    has_id = True
            elif strategy == "text":
                expr = col(alias, leaf.name)
                keys.append(f"{self.text.lower(expr)} {sql_dir} {nulls}")
                keys.append(f"{self.text.collate(expr)} {sql_dir} {nulls}")
            elif strategy == "checkbox":
                expr = f"COALESCE({col(alias, leaf.name)}, 0)"
                if path.hops:
                    expr = f"CASE WHEN {col(alias, 'id')} IS NULL THEN NULL ELSE {expr} END"
                keys.append(f"{expr} {sql_dir} {nulls}")
            elif strategy == "entity":
                name = self.link_name_expr(alias, leaf)
                keys.append(f"{self.text.lower(name)} {sql_dir} {nulls}")
                keys.append(f"{self.text.collate(name)} {sql_dir} {nulls}")
            elif strategy == "value":
                keys.append(f"{col(alias, leaf.name)} {sql_dir} {nulls}")
            else:
                raise PassThrough("unsupported sort", strategy)
        if not has_id:
            keys.append('m."id" ASC')
        return ", ".join(keys)

    def link_name_expr(self, alias: str, spec: FieldSpec) -> str:
        """The display name of the live target of an entity field (NULL
        when null, not live, or nameless), via one LEFT JOIN per type."""
        names = []
        self.watch_foreign(spec)
        for target in self.link_types(spec):
            kind = self.catalog.name_kind(target)
            if kind == "id":
                continue
            if kind != "text":
                raise PassThrough("link names not sortable locally", target)
            new = self.alias("s")
            self.main.joins.append(
                f"LEFT JOIN {layout.entity_table(target)} AS {new} "
                f"ON {col(new, 'id')} = {col(alias, spec.name + '__id')} "
                f"AND {col(alias, spec.name + '__type')} = {literal(target)} "
                f'AND {new}."_active" = 1'
            )
            names.append(col(new, self.schema.identifier(target)))
        if not names:
            return "CAST(NULL AS TEXT)"
        if len(names) == 1:
            return names[0]
        return f"COALESCE({', '.join(names)})"


def conv_datetime_naive(value: datetime.datetime) -> str:
    if value.year < 1000:
        raise PassThrough("relative date out of range")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


#: the planner's leaf strategies, by the name a data type gives (`DataType.filter`)
LEAVES: dict[str, Callable[..., tuple[Q, bool]]] = {
    "text": lambda c, alias, spec, rel, vals: c.text_leaf(col(alias, spec.name), rel, vals),
    "number": lambda c, alias, spec, rel, vals: c.ordered_leaf(col(alias, spec.name), rel, vals, conv_number),
    "checkbox": lambda c, alias, spec, rel, vals: c.checkbox_leaf(col(alias, spec.name), rel, vals),
    "date": lambda c, alias, spec, rel, vals: c.date_leaf(col(alias, spec.name), rel, vals),
    "date_time": lambda c, alias, spec, rel, vals: c.datetime_leaf(col(alias, spec.name), rel, vals),
    "entity": lambda c, alias, spec, rel, vals: c.entity_leaf(alias, spec, rel, vals),
    "multi_entity": lambda c, alias, spec, rel, vals: c.multi_leaf(alias, spec, rel, vals),
    "tag_list": lambda c, alias, spec, rel, vals: c.tag_leaf(col(alias, spec.name), rel, vals),
}
