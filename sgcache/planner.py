"""The read planner: decides whether the store can answer a `read` exactly,
and if so compiles it to SQL.

`plan_read(args, catalog, dialect)` returns a `ReadPlan` or raises
`PassThrough(reason)`. It accepts only what it can answer exactly; every
other request goes upstream untouched. Accepted today:

* return fields: ``id``/``type``, every cached scalar field, entity fields
  (``{type, id, name}``, links to retired entities read as null) and
  multi_entity fields (stored order, retired items left out);
* filters ``is``, ``is_not``, ``in``, ``not_in``, ``less_than``,
  ``greater_than`` on scalar fields and ``is``/``is_not`` on entity fields,
  in nested ``and``/``or`` groups, with Shotgun's NULL rules for negations
  and case-insensitive text;
* sorts on scalar fields (text case-insensitively), nulls last ascending and
  first descending, ``id`` as the final tie-break;
* paging with ``has_next_page`` / ``entity_count``; ``return_only``.

Decisions that need the data (a link to a type the cache lacks, a row not yet
fully loaded) are made by `sgcache.reader` while shaping rows, which falls
back to passthrough the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .fieldtypes import FIELD_TYPES
from .schema import FieldSpec, Schema
from .store import layout

#: Relations accepted per kind of field.
SCALAR_RELATIONS = {
    "is", "is_not", "in", "not_in", "less_than", "greater_than",
}
ORDERED_TYPES = {
    "number", "float", "duration", "percent", "timecode", "currency", "date", "date_time",
}
#: Shotgun's relation table (PROTOCOL.md), restricted to what we accept.
ALLOWED_RELATIONS = {
    "text": {"is", "is_not", "in", "not_in"},
    "color": {"is", "is_not", "in", "not_in"},
    "entity_type": {"is", "is_not", "in", "not_in"},
    "uuid": {"is", "is_not", "in", "not_in"},
    "list": {"is", "is_not", "in", "not_in"},
    "status_list": {"is", "is_not", "in", "not_in"},
    "checkbox": {"is", "is_not"},
    "entity": {"is", "is_not"},
}
for _t in ORDERED_TYPES:
    ALLOWED_RELATIONS[_t] = set(SCALAR_RELATIONS)

RETURN_ONLY = {"active": 1, "retired": 0}


class PassThrough(Exception):
    """The cache cannot answer this request exactly; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Catalog:
    """What the store can serve: the schema plus the set of ready fields."""

    def __init__(self, schema: Schema, ready: dict[str, set[str]] | None = None):
        self.schema = schema
        self.ready: dict[str, set[str]] = ready or {}

    def is_ready(self, entity_type: str, field_name: str) -> bool:
        return field_name in self.ready.get(entity_type, ())

    def type_ready(self, entity_type: str) -> bool:
        return bool(self.ready.get(entity_type))

    def nameable(self, entity_type: str) -> bool:
        """True when links to this type can be given their `name` locally."""
        if not self.type_ready(entity_type):
            return False
        ident = self.schema.identifier(entity_type)
        if ident == "id":
            return True
        spec = self.schema.get_field(entity_type, ident)
        return (
            spec is not None
            and spec.data_type in FIELD_TYPES
            and spec.data_type not in ("entity", "multi_entity")
            and self.is_ready(entity_type, ident)
        )


@dataclass
class LinkJoin:
    """A LEFT JOIN that names one possible target type of an entity field."""

    target_type: str
    alias: str
    identifier: str  # "id" when the type has no display name


@dataclass
class Output:
    """One returned field and where its value comes from in the row."""

    name: str
    spec: FieldSpec | None  # None for "id"
    columns: list[int] = field(default_factory=list)
    joins: list[LinkJoin] = field(default_factory=list)


@dataclass
class ReadPlan:
    entity_type: str
    sql: str
    params: list[Any]
    count_sql: str | None
    count_params: list[Any]
    outputs: list[Output]
    multi_fields: list[FieldSpec]
    #: columns of the SELECT holding id and _complete
    id_column: int
    complete_column: int
    page_size: int | None
    #: "has_next_page", "entity_count" or None (see `paging_info`)
    paging_mode: str | None
    #: the original paging info flags, for shaping the reply
    want_has_next: bool
    want_count: bool


def plan_read(args: Any, catalog: Catalog, dialect: str, max_page_size: int = 500) -> ReadPlan:
    """Compile a wire `read` ARGS dict, or raise PassThrough."""
    if not isinstance(args, dict):
        raise PassThrough("read arguments are not a mapping")
    known = {
        "type", "return_fields", "filters", "return_only", "paging", "sorts",
        "api_return_image_urls", "return_paging_info", "return_paging_info_without_counts",
        "include_archived_projects", "additional_filter_presets", "grouping",
    }
    extra = set(args) - known
    if extra:
        raise PassThrough(f"unknown read arguments {sorted(extra)}")
    if args.get("grouping"):
        raise PassThrough("grouping")
    if args.get("additional_filter_presets"):
        raise PassThrough("additional_filter_presets")
    if args.get("include_archived_projects") is False:
        raise PassThrough("include_archived_projects false")
    entity_type = args.get("type")
    if not isinstance(entity_type, str) or entity_type not in catalog.schema:
        raise PassThrough(f"type {entity_type!r} not cached")
    if not catalog.type_ready(entity_type):
        raise PassThrough(f"type {entity_type} not loaded yet")
    return_only = args.get("return_only", "active")
    if return_only not in RETURN_ONLY:
        raise PassThrough(f"return_only {return_only!r}")

    compiler = _Compiler(catalog, entity_type, dialect)
    outputs, multi_fields = compiler.outputs(args.get("return_fields") or ["id"])
    where = compiler.filters(args.get("filters"))
    order = compiler.sorts(args.get("sorts"))

    base_where = f'm."_active" = {RETURN_ONLY[return_only]}'
    if where:
        base_where = f"{base_where} AND ({where})"

    paging = args.get("paging")
    page_size: int | None = None
    offset = 0
    if paging is not None:
        if not isinstance(paging, dict):
            raise PassThrough("paging is not a mapping")
        page_size = paging.get("entities_per_page", max_page_size)
        page = paging.get("current_page", 1)
        if not _is_int(page_size) or not _is_int(page) or page_size < 1 or page < 1:
            raise PassThrough("unusual paging values")
        if page_size > max_page_size:
            raise PassThrough("entities_per_page above the site's maximum")
        offset = (page - 1) * page_size

    want_has_next = bool(args.get("return_paging_info_without_counts"))
    want_count = bool(args.get("return_paging_info"))

    table = layout.entity_table(entity_type)
    select_list = ", ".join(compiler.select)
    joins = " ".join(compiler.joins)
    sql = f"SELECT {select_list} FROM {table} AS m {joins} WHERE {base_where} ORDER BY {order}"
    params = compiler.join_params + compiler.where_params
    if page_size is not None:
        # one extra row tells whether a next page exists
        sql += f" LIMIT {int(page_size) + 1} OFFSET {int(offset)}"
    count_sql = None
    if want_count and not want_has_next:
        count_sql = f"SELECT COUNT(*) FROM {table} AS m WHERE {base_where}"
    return ReadPlan(
        entity_type=entity_type,
        sql=sql,
        params=params,
        count_sql=count_sql,
        count_params=list(compiler.where_params),
        outputs=outputs,
        multi_fields=multi_fields,
        id_column=0,
        complete_column=1,
        page_size=page_size,
        paging_mode="has_next_page" if want_has_next else ("entity_count" if want_count else None),
        want_has_next=want_has_next,
        want_count=want_count,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Compiler:
    def __init__(self, catalog: Catalog, entity_type: str, dialect: str):
        self.catalog = catalog
        self.schema = catalog.schema
        self.entity_type = entity_type
        self.dialect = dialect
        self.select: list[str] = ['m."id"', 'm."_complete"']
        self.joins: list[str] = []
        self.join_params: list[Any] = []
        self.where_params: list[Any] = []
        self._aliases = 0

    # -- helpers -----------------------------------------------------------
    def _field(self, name: Any, purpose: str) -> FieldSpec:
        if not isinstance(name, str):
            raise PassThrough(f"{purpose} field name is not a string")
        if "." in name:
            raise PassThrough(f"deep {purpose} field {name}")
        spec = self.schema.get_field(self.entity_type, name)
        if spec is None:
            raise PassThrough(f"{purpose} field {self.entity_type}.{name} not in the cached schema")
        if spec.data_type not in FIELD_TYPES:
            raise PassThrough(f"{purpose} field {self.entity_type}.{name} is {spec.data_type}, not cached")
        if not self.catalog.is_ready(self.entity_type, name):
            raise PassThrough(f"{purpose} field {self.entity_type}.{name} not ready")
        return spec

    def _column(self, name: str) -> int:
        self.select.append(name)
        return len(self.select) - 1

    def _alias(self) -> str:
        self._aliases += 1
        return f"j{self._aliases}"

    def _lower(self, expr: str) -> str:
        return f"LOWER({expr})"

    # -- return fields -----------------------------------------------------
    def outputs(self, return_fields: Any) -> tuple[list[Output], list[FieldSpec]]:
        if not isinstance(return_fields, list):
            raise PassThrough("return_fields is not a list")
        outputs: list[Output] = []
        multi: list[FieldSpec] = []
        seen = set()
        for name in return_fields:
            if name in seen:
                continue
            seen.add(name)
            if name in ("id", "type"):
                continue
            spec = self._field(name, "return")
            out = Output(name, spec)
            if spec.data_type == "multi_entity":
                for target in spec.link_types:
                    if target in self.schema and not self.catalog.nameable(target):
                        raise PassThrough(f"names of {target} links not cached")
                multi.append(spec)
            elif spec.data_type == "entity":
                out.columns.append(self._column(f'm.{layout.link_type_column(name)}'))
                out.columns.append(self._column(f'm.{layout.link_id_column(name)}'))
                for target in spec.link_types:
                    if target not in self.schema or not self.catalog.nameable(target):
                        continue  # a row linking there falls back at run time
                    alias = self._alias()
                    ident = self.schema.identifier(target)
                    self.joins.append(
                        f"LEFT JOIN {layout.entity_table(target)} AS {alias} "
                        f"ON m.{layout.link_type_column(name)} = ? "
                        f"AND {alias}.\"id\" = m.{layout.link_id_column(name)}"
                    )
                    self.join_params.append(target)
                    join = LinkJoin(target, alias, ident)
                    out.joins.append(join)
                    out.columns.append(self._column(f'{alias}."id"'))
                    out.columns.append(self._column(f'{alias}."_active"'))
                    if ident != "id":
                        out.columns.append(self._column(f"{alias}.{layout.scalar_column(ident)}"))
            else:
                out.columns.append(self._column(f"m.{layout.scalar_column(name)}"))
            outputs.append(out)
        return outputs, multi

    # -- filters -----------------------------------------------------------
    def filters(self, filters: Any) -> str:
        if filters is None:
            return ""
        if isinstance(filters, list):
            raise PassThrough("filters in client-side list form")
        return self._group(filters)

    def _group(self, group: Any) -> str:
        if not isinstance(group, dict):
            raise PassThrough("filter group is not a mapping")
        op = group.get("logical_operator", "and")
        if op not in ("and", "or"):
            raise PassThrough(f"logical_operator {op!r}")
        conditions = group.get("conditions")
        if not isinstance(conditions, list):
            raise PassThrough("filter conditions is not a list")
        if not conditions:
            # Shotgun: an empty group (and or or) matches everything
            return "1 = 1"
        parts = []
        for cond in conditions:
            if isinstance(cond, dict) and "conditions" in cond:
                parts.append(f"({self._group(cond)})")
            else:
                parts.append(f"({self._condition(cond)})")
        return f" {op.upper()} ".join(parts)

    def _condition(self, cond: Any) -> str:
        if not isinstance(cond, dict) or set(cond) - {"path", "relation", "values"}:
            raise PassThrough("unusual filter condition")
        path, relation, values = cond.get("path"), cond.get("relation"), cond.get("values")
        if not isinstance(values, list):
            raise PassThrough("filter values is not a list")
        if path == "id":
            return self._scalar_condition("id", "number", relation, values)
        spec = self._field(path, "filter")
        allowed = ALLOWED_RELATIONS.get(spec.data_type, set())
        if relation not in allowed:
            raise PassThrough(f"relation {relation} on {spec.data_type} field {path}")
        if spec.data_type == "entity":
            return self._entity_condition(spec, relation, values)
        return self._scalar_condition(path, spec.data_type, relation, values)

    def _encode(self, data_type: str, value: Any) -> Any:
        ftype = FIELD_TYPES[data_type]
        if value is None:
            return None
        if data_type in ("number", "duration", "percent", "timecode"):
            if not _is_int(value):
                raise PassThrough(f"non-integer value for a {data_type} filter")
        elif data_type in ("float", "currency"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PassThrough(f"non-numeric value for a {data_type} filter")
        elif data_type == "checkbox":
            if not isinstance(value, bool):
                raise PassThrough("non-boolean value for a checkbox filter")
        elif not isinstance(value, str):
            raise PassThrough(f"non-string value for a {data_type} filter")
        try:
            return ftype.encode(value)
        except (ValueError, TypeError):
            raise PassThrough(f"value {value!r} not valid for a {data_type} filter")

    def _scalar_condition(self, path: str, data_type: str, relation: Any, values: list) -> str:
        col = f"m.{layout.scalar_column(path)}"
        textual = FIELD_TYPES[data_type].textual
        expr = self._lower(col) if textual else col

        def param(value: Any) -> str:
            encoded = self._encode(data_type, value)
            if textual:
                encoded = encoded.lower()
            self.where_params.append(encoded)
            return "?"

        if relation in ("is", "is_not"):
            if len(values) != 1:
                raise PassThrough(f"{relation} with {len(values)} values")
            value = values[0]
            if data_type == "checkbox":
                if value is None:
                    raise PassThrough("checkbox compared with null")
                sql = f"{col} = {param(value)}"
                return sql if relation == "is" else f"NOT ({sql})"
            if value is None:
                return f"{col} IS NULL" if relation == "is" else f"{col} IS NOT NULL"
            if relation == "is":
                return f"{expr} = {param(value)}"
            return f"({col} IS NULL OR {expr} <> {param(value)})"
        if relation in ("in", "not_in"):
            if not values:
                raise PassThrough(f"{relation} with no values")
            non_null = [v for v in values if v is not None]
            has_null = len(non_null) != len(values)
            placeholders = ", ".join(param(v) for v in non_null)
            if relation == "in":
                parts = []
                if non_null:
                    parts.append(f"{expr} IN ({placeholders})")
                if has_null:
                    parts.append(f"{col} IS NULL")
                return " OR ".join(parts)
            if not non_null:
                return f"{col} IS NOT NULL"
            if has_null:
                return f"({col} IS NOT NULL AND {expr} NOT IN ({placeholders}))"
            return f"({col} IS NULL OR {expr} NOT IN ({placeholders}))"
        if relation in ("less_than", "greater_than"):
            if len(values) != 1 or values[0] is None:
                raise PassThrough(f"{relation} needs one non-null value")
            op = "<" if relation == "less_than" else ">"
            return f"{col} {op} {param(values[0])}"
        raise PassThrough(f"relation {relation!r}")

    def _alive(self, spec: FieldSpec) -> str:
        """SQL true when the entity field holds a link to a live entity."""
        type_col = f"m.{layout.link_type_column(spec.name)}"
        id_col = f"m.{layout.link_id_column(spec.name)}"
        parts = []
        for target in spec.link_types:
            if target not in self.schema or not self.catalog.type_ready(target):
                raise PassThrough(f"link target type {target} of {spec.name} not cached")
            self.where_params.append(target)
            parts.append(
                f"({type_col} = ? AND EXISTS (SELECT 1 FROM {layout.entity_table(target)} AS t "
                f'WHERE t."id" = {id_col} AND t."_active" = 1))'
            )
        return "(" + " OR ".join(parts) + ")" if parts else "(1 = 0)"

    def _entity_condition(self, spec: FieldSpec, relation: str, values: list) -> str:
        if len(values) != 1:
            raise PassThrough(f"{relation} with {len(values)} values")
        value = values[0]
        type_col = f"m.{layout.link_type_column(spec.name)}"
        id_col = f"m.{layout.link_id_column(spec.name)}"
        if value is None:
            alive = self._alive(spec)
            if relation == "is":
                return f"({id_col} IS NULL OR NOT {alive})"
            return f"({id_col} IS NOT NULL AND {alive})"
        if not isinstance(value, dict) or not _is_int(value.get("id")) or not isinstance(value.get("type"), str):
            raise PassThrough("entity filter value is not a {type, id} link")
        target = value["type"]
        if target not in self.schema or not self.catalog.type_ready(target):
            raise PassThrough(f"entity filter on uncached type {target}")
        self.where_params.extend([target, value["id"], value["id"]])
        match = (
            f"({type_col} = ? AND {id_col} = ? AND EXISTS (SELECT 1 FROM "
            f'{layout.entity_table(target)} AS t WHERE t."id" = ? AND t."_active" = 1))'
        )
        if relation == "is":
            return match
        # a null link is "not" every entity (SQL NULL would drop the row)
        return f"({id_col} IS NULL OR NOT {match})"

    # -- sorts -------------------------------------------------------------
    def sorts(self, sorts: Any) -> str:
        keys: list[str] = []
        has_id = False
        if sorts is None:
            sorts = []
        if not isinstance(sorts, list):
            raise PassThrough("sorts is not a list")
        for sort in sorts:
            if not isinstance(sort, dict) or set(sort) - {"field_name", "direction"}:
                raise PassThrough("unusual sort")
            name = sort.get("field_name")
            direction = sort.get("direction", "asc")
            if direction not in ("asc", "desc"):
                raise PassThrough(f"sort direction {direction!r}")
            sql_dir = "ASC" if direction == "asc" else "DESC"
            if name == "id":
                keys.append(f'm."id" {sql_dir}')
                has_id = True
                break  # id is unique: later keys cannot matter
            spec = self._field(name, "sort")
            ftype = FIELD_TYPES[spec.data_type]
            if not ftype.sortable:
                raise PassThrough(f"sort on {spec.data_type} field {name}")
            col = f"m.{layout.scalar_column(name)}"
            nulls = "NULLS LAST" if direction == "asc" else "NULLS FIRST"
            if ftype.textual:
                # case-insensitively, then by the exact characters (codepoints)
                collate = ' COLLATE "C"' if self.dialect == "postgresql" else ""
                keys.append(f"{self._lower(col)}{collate} {sql_dir} {nulls}")
                keys.append(f"{col}{collate} {sql_dir} {nulls}")
            else:
                keys.append(f"{col} {sql_dir} {nulls}")
        if not has_id:
            keys.append('m."id" ASC')
        return ", ".join(keys)
