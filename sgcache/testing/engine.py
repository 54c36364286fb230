"""The read engine of the Shotgun emulator: `read` and `summarize` over a
mockgun-style db, with Shotgun's documented semantics (filters, NULLs, deep
links, sorting, paging, archived projects, retired rows).

The db maps entity type -> id -> row. A row holds ``type``, ``id``,
``__retired`` (bool) and field values in storage form:

* date_time: naive UTC `datetime.datetime`; date: ``"YYYY-MM-DD"``;
* entity: ``{"type", "id"}`` or None; multi_entity: list of those, in order;
* tag_list: list of str; checkbox: bool;
* anything else: its wire value. A missing key means None ([] for links).

Filters and links live in `sgcache.testing.filters`; every choice where
Shotgun's behaviour is unknown or differs is listed in docs/emulator.md
("Reads"). The cache's planner must agree with this module exactly.
"""

from __future__ import annotations

import bisect
import copy
import datetime
from typing import Any, Callable

from sgcache.site import faults
from sgcache.site.faults import Fault
from sgcache.schema.types import format_datetime
from sgcache.schema import FieldSpec, Schema
from sgcache.testing.filters import (
    NUMBER_TYPES,
    TEXT_TYPES,
    FilterCompiler,
    Links,
    Path,
    Row,
    norm_date,
    norm_datetime,
    normalize_filters,
    parse_path,
    path_rows,
)

#: A sort key value: (0, value) for non-null, (1,) for null.
SortKey = tuple

_SUMMARY_TYPES = frozenset(
    "record_count count sum maximum minimum average earliest latest checked unchecked".split()
)
_GROUPING_TYPES = frozenset(["exact", "day", "week", "month", "year"])

_NULL: SortKey = (1,)


class IdTable(dict):
    """A table (``id -> row``) that remembers its ids in sorted order between
    reads, for the id-ordered fast path of `ReadEngine.read`.

    Any change to the set of ids through the dict API drops the remembered
    order (a new id above every known one is appended instead), so the table
    may be written like any dict; changing a row in place, or replacing the
    row of an existing id, keeps it. Copies (`copy`, `deepcopy`, pickle) are
    rebuilt from the items and start without it. The engine reads plain
    dicts too (it then sorts the ids on every read)."""

    _ids: list | None = None

    def sorted_ids(self) -> list:
        """The ids in ascending order (shared: do not modify the list)."""
        ids = self._ids
        if ids is None:
            ids = self._ids = sorted(dict.keys(self))
        return ids

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))

    def __setitem__(self, key: Any, value: Any) -> None:
        new = key not in self
        dict.__setitem__(self, key, value)
        ids = self._ids
        if new and ids is not None:
            if type(key) is int and (not ids or key > ids[-1]):
                ids.append(key)
            else:
                self._ids = None

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self._ids = None

    def pop(self, key: Any, *default: Any) -> Any:
        if key in self:
            self._ids = None
        return dict.pop(self, key, *default)

    def popitem(self) -> tuple:
        self._ids = None
        return dict.popitem(self)

    def clear(self) -> None:
        dict.clear(self)
        self._ids = None

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._ids = None
        dict.update(self, *args, **kwargs)

    def __ior__(self, other: Any) -> "IdTable":
        self.update(other)
        return self


class ReadEngine:
    """Answers `read` and `summarize` RPCs from an in-memory db.

    `now` gives the emulator's clock (naive UTC or aware); relative date
    filters are evaluated in `tz`. Page sizes are capped at `max_page_size`.
    """

    def __init__(
        self,
        schema: Schema,
        db: dict,
        now: Callable[[], datetime.datetime],
        tz: datetime.tzinfo = datetime.timezone.utc,
        max_page_size: int = 500,
    ):
        self.schema = schema
        self.db = db
        self.now = now
        self.tz = tz
        self.max_page_size = max_page_size
        self.links = Links(schema, db)

    # -- public API --------------------------------------------------------
    def set_schema(self, schema: Schema) -> None:
        """Serve `schema` from now on (the emulator's site schema changed).
        Nothing else is cached per schema: filters are compiled per request."""
        self.schema = schema
        self.links.schema = schema

    def read(self, args: dict) -> dict:
        """A wire `read`: returns ``{"entities": [...], "paging_info": {...}}``."""
        if not isinstance(args, dict):
            raise Fault("API read() expects a dict of arguments")
        entity_type = self._entity_type(args, "read")
        presets = args.get("additional_filter_presets")
        if presets:
            raise Fault("additional_filter_presets not supported by the emulator")
        return_only = args.get("return_only") or "active"
        if return_only not in ("active", "retired"):
            raise Fault(f"API read() invalid return_only {return_only!r}: expected 'active' or 'retired'")
        predicate = self._compiler("read").compile(entity_type, args.get("filters"))
        fields = self._return_fields(entity_type, args.get("return_fields"))
        keys = self._sort_keys(entity_type, args.get("sorts"))
        retired = return_only == "retired"
        include_archived = args.get("include_archived_projects", True) is not False
        paging = args.get("paging")
        if paging is not None and not args.get("return_paging_info") and _by_id_only(args.get("sorts")):
            # Fast path for id-ordered pages (scans, event polls): walk the
            # sorted ids between the seek bounds the filters put on id (see
            # `_id_bounds`) and stop once the page and one more row are
            # found. Same result as the general path.
            per_page, current = self._paging(paging)
            wanted = current * per_page + 1
            rows = self._select_by_id(
                entity_type, predicate, retired, include_archived, _id_bounds(args.get("filters")), wanted
            )
            start = (current - 1) * per_page
            page, has_next = rows[start:start + per_page], len(rows) > start + per_page
            return {
                "entities": [self._render_row(entity_type, row, fields) for row in page],
                "paging_info": {"has_next_page": has_next},
            }
        rows = self._select(entity_type, predicate, retired=retired, include_archived=include_archived)
        rows = _sort(rows, keys)

        total = len(rows)
        paging = args.get("paging")
        if paging is None:
            page, has_next = rows, False
        else:
            per_page, current = self._paging(paging)
            start = (current - 1) * per_page
            page = rows[start:start + per_page]
            has_next = total > start + per_page

        if args.get("return_paging_info_without_counts"):
            paging_info: dict[str, Any] = {"has_next_page": has_next}
        elif args.get("return_paging_info"):
            paging_info = {"entity_count": total}
        else:
            paging_info = {"has_next_page": has_next}
        return {
            "entities": [self._render_row(entity_type, row, fields) for row in page],
            "paging_info": paging_info,
        }

    def summarize(self, args: dict) -> dict:
        """A wire `summarize`: returns ``{"summaries": {...}, "groups": [...]}``."""
        if not isinstance(args, dict):
            raise Fault("API summarize() expects a dict of arguments")
        entity_type = self._entity_type(args, "summarize")
        predicate = self._compiler("summarize").compile(entity_type, args.get("filters"))
        summaries = self._summary_specs(entity_type, args.get("summaries"))
        grouping = self._grouping_specs(entity_type, args.get("grouping"))
        rows = self._select(
            entity_type,
            predicate,
            retired=False,
            include_archived=args.get("include_archived_projects", True) is not False,
        )
        rows.sort(key=lambda r: r["id"])
        return {
            "summaries": _summarize(rows, summaries),
            "groups": self._groups(rows, summaries, grouping),
        }

    def render_field(self, entity_type: str, row: dict, path: str) -> Any:
        """One (possibly deep) field of `row` in wire form. Faults on a path
        that does not name a field; deep paths through multi_entity give None."""
        if entity_type not in self.schema:
            raise faults.unknown_entity_type("read", entity_type)
        return self._render_path(parse_path(self.schema, entity_type, path), row)

    def link_name(self, entity_type: str, entity_id: int) -> Any:
        """The display name of an entity (its identifier field, wire form),
        retired or not; None if it does not exist or has no identifier."""
        return self.links.name(entity_type, entity_id)

    # -- request parsing ---------------------------------------------------
    def _entity_type(self, args: dict, method: str) -> str:
        entity_type = args.get("type")
        if not isinstance(entity_type, str) or entity_type not in self.schema:
            raise faults.unknown_entity_type(method, entity_type)
        return entity_type

    def _compiler(self, method: str) -> FilterCompiler:
        now = self.now()
        if now.tzinfo is not None:
            now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return FilterCompiler(self.schema, self.links, now.replace(microsecond=0), self.tz, method)

    def _paging(self, paging: Any) -> tuple[int, int]:
        if not isinstance(paging, dict):
            raise Fault(f"API read() invalid paging {paging!r}")
        per_page = paging.get("entities_per_page", self.max_page_size)
        current = paging.get("current_page", 1)
        for name, value in (("entities_per_page", per_page), ("current_page", current)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise Fault(f"API read() invalid paging: {name} must be a positive integer, got {value!r}")
        return min(per_page, self.max_page_size), current

    def _return_fields(self, entity_type: str, return_fields: Any) -> list[tuple[str, Path]]:
        if return_fields is None:
            return_fields = ["id"]
        if not isinstance(return_fields, (list, tuple)):
            raise Fault(f"API read() invalid return_fields {return_fields!r}: expected a list")
        out = []
        for name in return_fields:
            if name in ("type", "id"):
                continue
            try:
                out.append((name, parse_path(self.schema, entity_type, name)))
            except Fault:
                continue  # unknown return fields are left out
        return out

    # -- selection ---------------------------------------------------------
    def _select(
        self, entity_type: str, predicate: Callable[[Row], bool], retired: bool, include_archived: bool
    ) -> list[Row]:
        archived = None if include_archived else self._archived_test(entity_type)
        out = []
        for row in (self.db.get(entity_type) or {}).values():
            if bool(row.get("__retired")) != retired:
                continue
            if archived is not None and archived(row):
                continue
            if predicate(row):
                out.append(row)
        return out

    def _select_by_id(
        self,
        entity_type: str,
        predicate: Callable[[Row], bool],
        retired: bool,
        include_archived: bool,
        bounds: tuple[list[tuple[Any, bool]], list[tuple[Any, bool]]],
        limit: int,
    ) -> list[Row]:
        """Up to `limit` matching rows in id order, walking only the ids
        within `bounds` (lower and upper bounds as (value, inclusive), all of
        which hold for every matching row: a seek range, not a filter)."""
        archived = None if include_archived else self._archived_test(entity_type)
        table = self.db.get(entity_type) or {}
        ids = table.sorted_ids() if isinstance(table, IdTable) else sorted(table)
        lows, highs = bounds
        start, end = 0, len(ids)
        for value, inclusive in lows:
            start = max(start, (bisect.bisect_left if inclusive else bisect.bisect_right)(ids, value))
        for value, inclusive in highs:
            end = min(end, (bisect.bisect_right if inclusive else bisect.bisect_left)(ids, value))
        out: list[Row] = []
        for index in range(start, end):
            row = table[ids[index]]
            if bool(row.get("__retired")) != retired:
                continue
            if archived is not None and archived(row):
                continue
            if predicate(row):
                out.append(row)
                if len(out) >= limit:
                    break
        return out

    def _archived_test(self, entity_type: str) -> Callable[[Row], bool] | None:
        """row -> True when it belongs to (or is) an archived Project."""
        if entity_type == "Project":
            return lambda row: bool(row.get("archived"))
        spec = self.schema.get_field(entity_type, "project")
        if spec is None or spec.data_type != "entity":
            return None
        target = self.links.target

        def archived(row: Row) -> bool:
            link = row.get("project")
            if not isinstance(link, dict) or link.get("type") != "Project":
                return False
            project = target(link)
            return project is not None and bool(project.get("archived"))

        return archived

    # -- rendering ---------------------------------------------------------
    def _render_row(self, entity_type: str, row: Row, fields: list[tuple[str, Path]]) -> dict:
        out: dict[str, Any] = {"type": entity_type, "id": row["id"]}
        for name, path in fields:
            out[name] = self._render_path(path, row)
        return out

    def _render_path(self, path: Path, row: Row) -> Any:
        if not path.hops:
            return self._render_value(path.leaf, row)
        if path.through_multi:
            return None
        leaf_row = path_rows(self.links, path, row)[0]
        if leaf_row is None:
            return None
        return self._render_value(path.leaf, leaf_row)

    def _render_value(self, spec: FieldSpec, row: Row) -> Any:
        if spec.name == "id":
            return row.get("id")
        value = row.get(spec.name)
        dtype = spec.data_type
        if dtype == "entity":
            return self._render_link(value)
        if dtype == "multi_entity":
            rendered = (self._render_link(item) for item in (value or ()))
            return [r for r in rendered if r is not None]
        if dtype == "checkbox":
            return bool(value)
        if dtype == "tag_list":
            return [str(t) for t in (value or ())]
        if dtype == "image":
            return None
        if value is None:
            return None
        if dtype == "date_time":
            return format_datetime(norm_datetime(value))  # type: ignore[arg-type]
        if dtype == "date":
            return norm_date(value)
        if dtype == "password":
            return "*******"
        return copy.deepcopy(value)

    def _render_link(self, value: Any) -> dict | None:
        link = self.links.live(value)
        if link is None:
            return None
        return {"type": link[0], "id": link[1], "name": self.links.name(link[0], link[1])}

    # -- sorting -----------------------------------------------------------
    def _sort_keys(self, entity_type: str, sorts: Any) -> list[tuple[Callable[[Row], SortKey], bool]]:
        if sorts is None:
            sorts = []
        if not isinstance(sorts, (list, tuple)):
            raise Fault(f"API read() invalid sorts {sorts!r}: expected a list")
        keys = []
        has_id = False
        for sort in sorts:
            if not isinstance(sort, dict):
                raise Fault(f"API read() invalid sort {sort!r}")
            name = sort.get("field_name", sort.get("column"))
            direction = str(sort.get("direction") or "asc").lower()
            if direction not in ("asc", "desc"):
                raise Fault(f"API read() invalid sort direction {sort.get('direction')!r}")
            path = parse_path(self.schema, entity_type, name)
            key = self._sort_key(path)
            if key is None:
                continue  # not sortable: the key is ignored
            if not path.hops and path.leaf.name == "id":
                has_id = True
            keys.append((key, direction == "desc"))
        if not has_id:
            keys.append((_id_key, False))
        return keys

    def _sort_key(self, path: Path) -> Callable[[Row], SortKey] | None:
        """row -> SortKey for a path, or None when the path cannot be sorted."""
        if path.through_multi:
            return None
        transform = self._sort_transform(path.leaf)
        if transform is None:
            return None
        leaf = path.leaf
        if not path.hops:
            return lambda row: transform(row, leaf)
        links = self.links

        def deep(row: Row) -> SortKey:
            target = path_rows(links, path, row)[0]
            return _NULL if target is None else transform(target, leaf)

        return deep

    def _sort_transform(self, spec: FieldSpec) -> Callable[[Row, FieldSpec], SortKey] | None:
        dtype = spec.data_type
        if spec.name == "id":
            return lambda row, s: (0, row["id"])
        if dtype in TEXT_TYPES:
            return _text_key
        if dtype in NUMBER_TYPES:
            return _plain_key
        if dtype == "checkbox":
            return lambda row, s: (0, bool(row.get(s.name)))
        if dtype == "date":
            return lambda row, s: _wrap(norm_date(row.get(s.name)))
        if dtype == "date_time":
            return lambda row, s: _wrap(norm_datetime(row.get(s.name)))
        if dtype == "entity":
            links = self.links

            def entity_key(row: Row, s: FieldSpec) -> SortKey:
                link = links.live(row.get(s.name))
                if link is None:
                    return _NULL
                name = links.name_text(link[0], link[1])
                return _NULL if name is None else (0, name.lower(), name)

            return entity_key
        return None

    # -- summarize ---------------------------------------------------------
    def _summary_specs(self, entity_type: str, summaries: Any) -> list[tuple[str, str, Path, Callable]]:
        if not isinstance(summaries, (list, tuple)):
            raise Fault(f"API summarize() invalid summaries {summaries!r}: expected a list")
        out = []
        for item in summaries:
            if not isinstance(item, dict):
                raise Fault(f"API summarize() invalid summary {item!r}")
            field, kind = item.get("field"), item.get("type")
            if kind not in _SUMMARY_TYPES:
                raise Fault(f"API summarize() summary type {kind!r} not supported by the emulator")
            path = parse_path(self.schema, entity_type, field, "summarize")
            if path.through_multi:
                raise Fault(f"API summarize() cannot summarize {field!r} through a multi-entity field")
            dtype = path.leaf.data_type
            ok = {
                "record_count": True,
                "count": True,
                "sum": dtype in NUMBER_TYPES,
                "average": dtype in NUMBER_TYPES,
                "maximum": dtype in NUMBER_TYPES or dtype in ("date", "date_time"),
                "minimum": dtype in NUMBER_TYPES or dtype in ("date", "date_time"),
                "earliest": dtype in ("date", "date_time"),
                "latest": dtype in ("date", "date_time"),
                "checked": dtype == "checkbox",
                "unchecked": dtype == "checkbox",
            }[kind]
            if not ok:
                raise Fault(f"API summarize() summary type {kind!r} is not valid for {dtype} field {field!r}")
            out.append((field, kind, path, self._value_getter(path)))
        return out

    def _value_getter(self, path: Path) -> Callable[[Row], Any]:
        """row -> the leaf's wire value (None through a null link)."""
        return lambda row: self._render_path(path, row)

    def _grouping_specs(self, entity_type: str, grouping: Any) -> list[dict]:
        if grouping is None:
            return []
        if not isinstance(grouping, (list, tuple)):
            raise Fault("API summarize() 'grouping' must be a list")
        out = []
        for item in grouping:
            if not isinstance(item, dict):
                raise Fault(f"API summarize() invalid grouping {item!r}")
            path = parse_path(self.schema, entity_type, item.get("field"), "summarize")
            kind = item.get("type") or "exact"
            direction = str(item.get("direction") or "asc").lower()
            dtype = path.leaf.data_type
            if kind not in _GROUPING_TYPES or (kind != "exact" and dtype not in ("date", "date_time")):
                raise Fault(f"API summarize() grouping type {kind!r} on {dtype} not supported by the emulator")
            if direction not in ("asc", "desc"):
                raise Fault(f"API summarize() invalid grouping direction {item.get('direction')!r}")
            if path.through_multi or dtype in ("multi_entity", "tag_list", "url", "serializable", "image"):
                raise Fault(f"API summarize() cannot group by {item.get('field')!r} in the emulator")
            out.append({"path": path, "kind": kind, "desc": direction == "desc"})
        return out

    def _group_value(self, group: dict, row: Row) -> Any:
        value = self._render_path(group["path"], row)
        kind = group["kind"]
        if kind == "exact" or value is None:
            return value
        if group["path"].leaf.data_type == "date_time":
            utc = norm_datetime(value).replace(tzinfo=datetime.timezone.utc)  # type: ignore[union-attr]
            day = utc.astimezone(self.tz).date()
        else:
            day = datetime.date.fromisoformat(value)
        if kind == "week":
            day -= datetime.timedelta(days=day.weekday())
        elif kind == "month":
            day = day.replace(day=1)
        elif kind == "year":
            day = day.replace(month=1, day=1)
        return day.isoformat()

    def _groups(self, rows: list[Row], summaries: list, grouping: list[dict]) -> list[dict]:
        if not grouping:
            return []
        group, rest = grouping[0], grouping[1:]
        buckets: dict[Any, tuple[Any, list[Row]]] = {}
        for row in rows:
            value = self._group_value(group, row)
            if isinstance(value, dict):
                # an entity group's value carries `valid` (shotgun_api3's
                # documented summarize examples: 'valid': 'valid')
                value = {**value, "valid": "valid"}
            buckets.setdefault(_hashable(value), (value, []))[1].append(row)
        ordered = sorted(buckets.values(), key=lambda b: _group_sort_key(b[0]), reverse=group["desc"])
        out = []
        for value, members in ordered:
            entry: dict[str, Any] = {
                "group_name": _group_name(value),
                "group_value": value,
                "summaries": _summarize(members, summaries),
            }
            if rest:
                entry["groups"] = self._groups(members, summaries, rest)
            out.append(entry)
        return out


# -- helpers ------------------------------------------------------------------

def _by_id_only(sorts: Any) -> bool:
    """True when the order is plain ascending id."""
    return not sorts or (
        isinstance(sorts, list)
        and len(sorts) == 1
        and isinstance(sorts[0], dict)
        and sorts[0].get("field_name") == "id"
        and sorts[0].get("direction", "asc") == "asc"
    )


def _id_bounds(filters: Any) -> tuple[list[tuple[Any, bool]], list[tuple[Any, bool]]]:
    """Seek bounds on id: ``(lows, highs)``, each a list of ``(value,
    inclusive)``, from the conditions on ``id`` that every matching row must
    meet: those of the top-level `and` group (any filter form), and of `and`
    groups nested in it. ``greater_than N`` gives a lower bound, ``less_than
    N`` an upper one, ``between [a, b]`` both (inclusive; a null end is
    open), ``is N`` both, ``in [...]`` its smallest and largest value.
    Negations and anything under an `or` give none. A seek range only: the
    full predicate is still applied to every row within it."""
    lows: list[tuple[Any, bool]] = []
    highs: list[tuple[Any, bool]] = []
    try:
        group = normalize_filters(filters)
    except Fault:
        return lows, highs

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def walk(cond: Any) -> None:
        if not isinstance(cond, dict):
            return
        if "logical_operator" in cond:
            if cond.get("logical_operator") == "and" and isinstance(cond.get("conditions"), (list, tuple)):
                for sub in cond["conditions"]:
                    walk(sub)
            return
        if cond.get("path") != "id":
            return
        relation, values = cond.get("relation"), cond.get("values", [])
        if not isinstance(values, (list, tuple)):
            values = [values]
        if relation == "greater_than" and len(values) == 1 and number(values[0]):
            lows.append((values[0], False))
        elif relation == "less_than" and len(values) == 1 and number(values[0]):
            highs.append((values[0], False))
        elif relation == "is" and len(values) == 1 and number(values[0]):
            lows.append((values[0], True))
            highs.append((values[0], True))
        elif relation == "between" and len(values) == 2:
            lo, hi = values
            if number(lo):
                lows.append((lo, True))
            if number(hi):
                highs.append((hi, True))
        elif relation == "in" and values and all(number(v) for v in values):
            lows.append((min(values), True))
            highs.append((max(values), True))

    walk(group)
    return lows, highs


def _wrap(value: Any) -> SortKey:
    return _NULL if value is None else (0, value)


def _id_key(row: Row) -> SortKey:
    return (0, row["id"])


def _text_key(row: Row, spec: FieldSpec) -> SortKey:
    value = row.get(spec.name)
    if value is None:
        return _NULL
    text = value if isinstance(value, str) else str(value)
    return (0, text.lower(), text)


def _plain_key(row: Row, spec: FieldSpec) -> SortKey:
    return _wrap(row.get(spec.name))


def _sort(rows: list[Row], keys: list[tuple[Callable[[Row], SortKey], bool]]) -> list[Row]:
    """Sort by keys (first is primary): stable sorts from the last key up.
    Nulls sort last ascending and first descending."""
    decorated = [(row, [key(row) for key, _ in keys]) for row in rows]
    for i in range(len(keys) - 1, -1, -1):
        decorated.sort(key=lambda d: d[1][i], reverse=keys[i][1])
    return [row for row, _ in decorated]


def _summarize(rows: list[Row], summaries: list) -> dict:
    out: dict[str, Any] = {}
    for field, kind, path, get in summaries:
        if kind == "record_count":
            out[field] = len(rows)
            continue
        values = [get(row) for row in rows]
        present = [v for v in values if v is not None and v != []]
        if kind == "count":
            out[field] = len(present)
        elif kind == "sum":
            out[field] = sum(present)
        elif kind == "average":
            out[field] = (sum(present) / len(present)) if present else None
        elif kind in ("maximum", "latest"):
            out[field] = max(present) if present else None
        elif kind in ("minimum", "earliest"):
            out[field] = min(present) if present else None
        elif kind == "checked":
            out[field] = sum(1 for v in values if v is True)
        elif kind == "unchecked":
            out[field] = sum(1 for v in values if v is False)
    return out


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return (value.get("type"), value.get("id"))
    return ("v", type(value).__name__, value) if value is not None else None


def _group_name(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        name = value.get("name")
        return "" if name is None else str(name)
    return str(value)


def _group_sort_key(value: Any) -> SortKey:
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
