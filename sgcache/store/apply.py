"""The one apply algorithm that writes `EntityChange`s, whoever found
them (events, scans, passed-through writes): stale changes refused by
`updated_at`, values encoded, each batch written set-based."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from twisted.internet import defer

from sgcache.logs import logger
from sgcache.schema.changes import EntityChange
from sgcache.schema.types import data_type
from sgcache.schema.types.base import identity
from sgcache.store import layout
from sgcache.store.catalog import Synced, write_state
from sgcache.store.dialect import Dialect, SQLCursor
from sgcache.store.statements import Statement, id_conditions, insert_statements, run_pipelined
from sgcache.store.updatelog import log_entry, log_statements

log = logger(__name__)


@dataclass
class ApplyResult:
    applied: int = 0
    skipped_stale: int = 0
    unknown_types: int = 0
    ignored_fields: int = 0
    #: update-log entries (see log_statements)
    log: list[tuple] = field(default_factory=list)


def _link(value: Any, where: str) -> tuple[str, int]:
    if not isinstance(value, dict) or "type" not in value or "id" not in value:
        raise ValueError(f"{where}: expected an entity link {{type, id}}, got {value!r}")
    return str(value["type"]), int(value["id"])


def _links(values: Any, where: str) -> list[tuple[str, int]]:
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where}: expected a list of entity links, got {values!r}")
    out: list[tuple[str, int]] = []
    seen = set()
    for value in values:
        if value is None:
            continue
        link = _link(value, where)
        if link not in seen:
            seen.add(link)
            out.append(link)
    return out


@dataclass
class _RowPlan:
    """The net write apply makes to one entity row, decided in Python and
    flushed set-based at the end of the batch."""

    #: delete the row stored before this batch
    delete: bool = False
    #: every column of a row (re)created in this batch
    insert: dict[str, Any] | None = None
    #: columns to set on the row stored before this batch
    sets: dict[str, Any] | None = None


@dataclass
class _Plan:
    rows: dict[tuple[str, int], _RowPlan] = field(default_factory=dict)
    #: (type, field, parent id) -> the parent's links after this batch, in
    #: order (its stored links are replaced)
    multi: dict[tuple[str, str, int], list[tuple[str, int]]] = field(default_factory=dict)
    #: ids stored before this batch, per (type, id)
    stored: set[tuple[str, int]] = field(default_factory=set)

    def row(self, key: tuple[str, int]) -> _RowPlan:
        plan = self.rows.get(key)
        if plan is None:
            plan = self.rows[key] = _RowPlan()
        return plan


async def apply_changes(
    cur: SQLCursor,
    synced: Synced,
    changes: Sequence[EntityChange],
    state: dict[str, str] | None = None,
    now: float | None = None,
) -> ApplyResult:
    """Write `changes` (and `state`) through `cur`, inside the caller's
    transaction. Raises on bad values; the caller then rolls back. With
    `now` (epoch seconds), what was applied goes to the update log too.

    Changes are decided one by one, in order, against an in-memory copy of
    the stale-check columns; the net effect on each row and link list is
    then written with a few set-based statements per table (one round trip
    each on PostgreSQL), exactly as if each change had been written in turn.
    Values are encoded while the rows are being read, and each statement is
    built while the previous one runs."""
    result = ApplyResult()
    plan = _Plan()

    wanted: dict[str, set[int]] = {}
    for change in changes:
        if change.entity_type in synced.types:
            wanted.setdefault(change.entity_type, set()).add(int(change.entity_id))

    # When no entity appears twice, the batch is planned and written in parts
    # (disjoint rows: the same writes), each part planned while the previous
    # one's statements run; else as one part.
    step = max(1, len(changes))
    if cur.dialect.part_size and len(changes) > cur.dialect.part_size:
        if len({(c.entity_type, int(c.entity_id)) for c in changes}) == len(changes):
            step = cur.dialect.part_size
    coders: dict[tuple, _RowCoder] = {}

    def encode(change: EntityChange) -> _Encoded | None:
        fields = synced.types.get(change.entity_type)
        return None if fields is None else _encode(change, fields, coders)

    # Start reading the rows (and links) the batch touches; encode the first
    # parts meanwhile (an encoding error is raised only if its change is applied).
    reading = defer.ensureDeferred(_read_stored(cur, synced, wanted, plan))
    try:
        first = [encode(change) for change in changes[: 2 * step]]
    except BaseException:
        try:
            await reading
        except Exception:
            pass
        raise
    rows = await reading

    def statements() -> Iterator[Statement]:
        for start in range(0, len(changes), step):
            part = _Plan(stored=plan.stored)
            for i in range(start, min(start + step, len(changes))):
                change = changes[i]
                enc = first[i] if i < len(first) else encode(change)
                if enc is None:
                    result.unknown_types += 1
                    log.debug(
                        "ignoring change to uncached type {entity_type} {entity_id}",
                        entity_type=change.entity_type, entity_id=change.entity_id,
                    )
                    continue
                _plan_one(part, change, synced.types[change.entity_type], enc, rows, result)
            yield from _plan_statements(cur.dialect, synced, part)
        if now is not None and result.log:
            # built while the last part's statements run
            yield from log_statements(cur.dialect, result.log, now)

    await run_pipelined(cur, statements())
    if state:
        await write_state(cur, state)
    log.debug(
        "apply: {applied} applied, {stale} stale, {unknown} uncached types, {ignored} uncached fields",
        applied=result.applied, stale=result.skipped_stale,
        unknown=result.unknown_types, ignored=result.ignored_fields,
    )
    return result


async def _read_stored(
    cur: SQLCursor, synced: Synced, wanted: dict[str, set[int]], plan: _Plan
) -> dict[tuple[str, int], list[Any]]:
    """The stale-check columns of the rows the batch touches (locked on
    PostgreSQL), per (type, id): [updated_at, _active]."""
    lock = cur.dialect.lock_suffix
    rows: dict[tuple[str, int], list[Any]] = {}
    for etype, id_set in wanted.items():
        has_updated = synced.data_type(etype, "updated_at") == "date_time"
        cols = '"id", ' + ('"updated_at"' if has_updated else "NULL") + ', "_active"'
        for cond, params in id_conditions(cur.dialect, '"id"', sorted(id_set)):
            for row in await cur.execute(
                f"SELECT {cols} FROM {layout.entity_table(etype)} WHERE {cond}{lock}", params
            ):
                rows[(etype, int(row[0]))] = [row[1], row[2]]
    plan.stored = set(rows)
    return rows


@dataclass
class _Encoded:
    """A change's `fields` as column values, encoded once."""

    values: dict[str, Any]
    #: multi_entity field -> its new links
    multi_set: dict[str, list[tuple[str, int]]]
    #: uncached fields given (ignored)
    ignored: Sequence[str]
    #: the error encoding met (raised if the change is applied)
    error: BaseException | None = None


#: how a field's value becomes columns (see _RowCoder)
_SCALAR, _ENTITY, _MULTI = 0, 1, 2




@dataclass(frozen=True)
class _RowCoder:
    """How a change's `fields`, given with certain names in a certain order,
    become column values: a copy of the dict, less `dropped`, with `steps`
    applied in field order (a scan's rows all share one coder, so the
    per-row work is only the fields not stored as given)."""

    #: ``id`` / ``type`` and the uncached fields
    dropped: tuple[str, ...]
    #: the uncached fields (ignored, counted)
    ignored: tuple[str, ...]
    #: (_SCALAR, field, data type, encode, type stored as given), (_ENTITY,
    #: field, type column, id column) or (_MULTI, field)
    steps: tuple[tuple, ...]


def _row_coder(fields: dict[str, str], names: tuple[str, ...]) -> _RowCoder:
    dropped: list[str] = []
    ignored: list[str] = []
    steps: list[tuple] = []
    for fname in names:
        dtype = fields.get(fname)
        if dtype is None or fname == "id" or fname == "type":
            dropped.append(fname)
            if dtype is None and fname != "id" and fname != "type":
                ignored.append(fname)
        elif dtype == "entity":
            steps.append((_ENTITY, fname, f"{fname}__type", f"{fname}__id"))
        elif dtype == "multi_entity":
            steps.append((_MULTI, fname))
        elif data_type(dtype).encode is not identity:
            ftype = data_type(dtype)
            steps.append((_SCALAR, fname, dtype, ftype.encode, ftype.native))
    return _RowCoder(tuple(dropped), tuple(ignored), tuple(steps))


def _encode(
    change: EntityChange, fields: dict[str, str], coders: dict[tuple, _RowCoder]
) -> _Encoded:
    key = (change.entity_type, tuple(change.fields))
    coder = coders.get(key)
    if coder is None:
        coder = coders[key] = _row_coder(fields, key[1])
    values: dict[str, Any] = dict(change.fields)
    for fname in coder.dropped:
        del values[fname]
    out = _Encoded(values, {}, coder.ignored)
    try:
        for step in coder.steps:
            kind, fname = step[0], step[1]
            if kind == _SCALAR:
                value = values[fname]
                if type(value) is step[4]:
                    continue
                try:
                    values[fname] = step[3](value)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"{change.entity_type} {int(change.entity_id)} {fname}: "
                        f"cannot store {value!r} as {step[2]}: {e}"
                    ) from None
            elif kind == _ENTITY:
                value = values.pop(fname)
                if value is None:
                    values[step[2]] = values[step[3]] = None
                elif isinstance(value, dict) and "type" in value and "id" in value:
                    # _link's work, without formatting its error context
                    values[step[2]], values[step[3]] = str(value["type"]), int(value["id"])
                else:
                    values[step[2]], values[step[3]] = _link(
                        value, f"{change.entity_type} {int(change.entity_id)} {fname}"
                    )
            else:
                out.multi_set[fname] = _links(
                    values.pop(fname), f"{change.entity_type} {int(change.entity_id)} {fname}"
                )
    except Exception as e:
        out.error = e
    return out


def _plan_one(
    plan: _Plan,
    change: EntityChange,
    fields: dict[str, str],
    enc: _Encoded,
    rows: dict[tuple[str, int], list[Any]],
    result: ApplyResult,
) -> None:
    """Decide one change against `rows` and record its writes in `plan`."""
    etype = change.entity_type
    eid = int(change.entity_id)
    key = (etype, eid)
    row = rows.get(key)

    if change.delete:
        target = plan.row(key)
        target.delete = target.delete or key in plan.stored
        target.insert = target.sets = None
        for fname in sorted(f for f, t in fields.items() if t == "multi_entity"):
            plan.multi[(etype, fname, eid)] = []
        rows.pop(key, None)
        result.applied += 1
        if row is not None:
            result.log.append(log_entry(change, "(deleted)"))
        return

    if (
        row is not None
        and row[0] is not None
        and change.updated_at is not None
        and change.updated_at < row[0]
    ):
        result.skipped_stale += 1
        log.debug(
            "refusing stale change to {entity_type} {entity_id}: {theirs} < {ours}",
            entity_type=etype, entity_id=eid, theirs=change.updated_at, ours=row[0],
        )
        return

    for fname in enc.ignored:
        result.ignored_fields += 1
        log.debug("ignoring uncached field {entity_type}.{field}", entity_type=etype, field=fname)
    if enc.error is not None:
        raise enc.error
    values = enc.values

    target = plan.row(key)
    if row is None:
        active = 1 if change.active is None else int(bool(change.active))
        target.insert = {
            "id": eid,
            "_active": active,
            "_complete": 1 if change.complete else 0,
            **values,
        }
        target.sets = None
        rows[key] = [values.get("updated_at"), active]
        result.log.append(log_entry(change))
    else:
        if (
            change.source != "scan"
            or ("updated_at" in values and values["updated_at"] != row[0])
            or (change.active is not None and int(bool(change.active)) != int(row[1]))
        ):
            # scans re-read unchanged rows: only what moved is logged
            result.log.append(log_entry(change))
        sets = dict(values)
        if change.active is not None:
            sets["_active"] = int(bool(change.active))
        if change.complete:
            sets["_complete"] = 1
        if sets:
            if target.insert is not None:
                target.insert.update(sets)
            elif target.sets is None:
                target.sets = sets
            else:
                target.sets.update(sets)
        if "updated_at" in values:
            row[0] = values["updated_at"]
        if change.active is not None:
            row[1] = int(bool(change.active))

    for fname, links in enc.multi_set.items():
        plan.multi[(etype, fname, eid)] = links
    result.applied += 1


def _plan_statements(dialect: Dialect, synced: Synced, plan: _Plan) -> Iterator[Statement]:
    """The statements that write `plan`: per table, deletes, then inserts,
    then updates, each as multi-row statements."""
    deletes: dict[str, list[int]] = {}
    inserts: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
    updates: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
    for (etype, eid), target in plan.rows.items():
        if target.delete:
            deletes.setdefault(etype, []).append(eid)
        if target.insert is not None:
            cols = tuple(target.insert)
            inserts.setdefault((etype, cols), []).append(list(target.insert.values()))
        elif target.sets:
            cols = ("id", *target.sets)
            updates.setdefault((etype, cols), []).append([eid, *target.sets.values()])

    for etype, id_list in deletes.items():
        table = layout.entity_table(etype)
        for cond, params in id_conditions(dialect, '"id"', id_list):
            yield f"DELETE FROM {table} WHERE {cond}", params
    for (etype, cols), value_rows in inserts.items():
        yield from insert_statements(
            dialect, layout.entity_table(etype), cols, value_rows,
            types=_sql_types(dialect, synced.types[etype], cols),
        )
    for (etype, cols), value_rows in updates.items():
        # every row exists (and is locked): the upsert always updates, and
        # sets only the columns its changes gave
        assignments = ", ".join(
            f"{layout.quote(c)} = excluded.{layout.quote(c)}" for c in cols[1:]
        )
        yield from insert_statements(
            dialect, layout.entity_table(etype), cols, value_rows,
            f' ON CONFLICT ("id") DO UPDATE SET {assignments}',
            _sql_types(dialect, synced.types[etype], cols),
        )

    link_deletes: dict[tuple[str, str], list[int]] = {}
    link_inserts: dict[tuple[str, str], list[list[Any]]] = {}
    for (etype, fname, eid), links in plan.multi.items():
        where = (etype, fname)
        link_deletes.setdefault(where, []).append(eid)
        for position, link in enumerate(links):
            link_inserts.setdefault(where, []).append([eid, link[0], link[1], position])
    for (etype, fname), id_list in link_deletes.items():
        mtable = layout.multi_table(etype, fname)
        for cond, params in id_conditions(dialect, "parent_id", id_list):
            yield f"DELETE FROM {mtable} WHERE {cond}", params
    for (etype, fname), value_rows in link_inserts.items():
        yield from insert_statements(
            dialect, layout.multi_table(etype, fname),
            ("parent_id", "child_type", "child_id", "position"), value_rows,
            types=(dialect.id_type, "TEXT", dialect.id_type, "INTEGER"),
        )


def _sql_types(dialect: Dialect, fields: dict[str, str], cols: Sequence[str]) -> list[str] | None:
    """The SQL types of entity-table columns (None if one is unknown)."""
    out = []
    for col in cols:
        if col in ("id", "_event_id"):
            out.append(dialect.id_type)
        elif col in ("_active", "_complete"):
            out.append(dialect.flag_type)
        elif col in fields and fields[col] not in ("entity", "multi_entity"):
            out.append(dialect.column_type(fields[col]))
        elif col.endswith("__type") and fields.get(col[:-6]) == "entity":
            out.append("TEXT")
        elif col.endswith("__id") and fields.get(col[:-4]) == "entity":
            out.append(dialect.id_type)
        else:
            return None
    return out
