"""The one apply algorithm that writes `EntityChange`s, whoever found
them (events, scans, passed-through writes): stale changes refused by
`updated_at`, values encoded, changes that would change nothing left out,
each batch written set-based.

No needless writes: a change is compared, column by column and link list
by link list, with what the store holds (read back in the same
transaction, rows locked on PostgreSQL). A change whose columns all hold
exactly what it would write (`_same`), whose link lists are the stored ones
in the same order, and that neither inserts nor deletes a row, writes
nothing and is not logged; a batch of such changes does not move the
store's read generation (`ApplyResult.written`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from twisted.internet import defer

from sgcache.logs import logger
from sgcache.schema.changes import EntityChange
from sgcache.schema.types import data_type
from sgcache.schema.types.base import identity
from sgcache.store import layout
from sgcache.store.catalog import Synced, write_field_states, write_state
from sgcache.store.dialect import Dialect, SQLCursor
from sgcache.store.statements import (
    MAX_PARAMS,
    Statement,
    id_conditions,
    insert_statements,
    run_pipelined,
)
from sgcache.store.updatelog import log_entry, log_statements

log = logger(__name__)


@dataclass
class ApplyResult:
    #: changes applied: not stale, of a cached type (written + unchanged)
    applied: int = 0
    #: applied changes that wrote something (a row inserted, updated or
    #: deleted, links replaced): each is in the update log
    written: int = 0
    #: applied changes that would have changed nothing (the store already
    #: held their values, links and flags; a delete of a row not stored):
    #: nothing was written for them, nor logged
    unchanged: int = 0
    skipped_stale: int = 0
    #: changes dropped by the read fence (PostgreSQL, an apply with a
    #: ticket: `sgcache.store.readstamps`): a younger read was applied to
    #: their entities; and those entities
    skipped_fresher: int = 0
    fresher: set[tuple[str, int]] = field(default_factory=set)
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


@dataclass
class _Want:
    """What the batch touches of one entity type, to be read before it is
    planned."""

    ids: set[int] = field(default_factory=set)
    #: entity-table columns the changes set (besides the flags, always read)
    columns: dict[str, None] = field(default_factory=dict)
    #: multi_entity fields whose stored links are compared
    multi: set[str] = field(default_factory=set)
    #: every multi_entity field is in `multi` (a delete clears them all)
    all_multi: bool = False
    #: the field-name tuples already looked at
    shapes: set[tuple[str, ...]] = field(default_factory=set)


#: links not read (or not stored as apply writes them): never "the same"
_UNKNOWN_LINKS = None


@dataclass
class _Stored:
    """What the rows the batch touches hold, read before it is planned and
    kept current (with what the batch plans to write) while it is."""

    #: (type, id) -> [updated_at, _active]: the stale-check columns (the
    #: type's updated_at only when it is a date_time; else None)
    rows: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    #: (type, id) -> column -> its value, as read back from the store (or
    #: as this batch will write it); a column absent is not known
    cols: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    #: (type, multi_entity field, parent id) -> the stored links in order;
    #: absent or None: not known (read, or irregular positions)
    links: dict[tuple[str, str, int], list[tuple[str, int]] | None] = field(default_factory=dict)


def _wanted(synced: Synced, changes: Sequence[EntityChange]) -> dict[str, _Want]:
    """Per cached type, the ids, columns and link lists the batch sets."""
    wanted: dict[str, _Want] = {}
    for change in changes:
        etype = change.entity_type
        fields = synced.types.get(etype)
        if fields is None:
            continue
        want = wanted.get(etype)
        if want is None:
            want = wanted[etype] = _Want()
        want.ids.add(int(change.entity_id))
        if change.delete:
            if not want.all_multi:
                want.all_multi = True
                want.multi.update(f for f, t in fields.items() if t == "multi_entity")
            continue
        shape = tuple(change.fields)
        if shape in want.shapes:
            continue
        want.shapes.add(shape)
        for fname in shape:
            dtype = fields.get(fname)
            if dtype is None or fname == "id" or fname == "type":
                continue
            if dtype == "entity":
                want.columns[f"{fname}__type"] = None
                want.columns[f"{fname}__id"] = None
            elif dtype == "multi_entity":
                want.multi.add(fname)
            else:
                want.columns[fname] = None
    return wanted


async def apply_changes(
    cur: SQLCursor,
    synced: Synced,
    changes: Sequence[EntityChange],
    state: dict[str, str] | None = None,
    now: float | None = None,
) -> ApplyResult:
    """Write `changes` (and `state`) through `cur`, inside the caller's
    transaction. Raises on bad values; the caller then rolls back. With
    `now` (epoch seconds), what was written goes to the update log too.

    Changes are decided one by one, in order, against an in-memory copy of
    the rows and links they touch (read first: `_read_stored`); a change
    that would change nothing is left out (`ApplyResult.unchanged`). The
    net effect on each row and link list is then written with a few
    set-based statements per table (one round trip each on PostgreSQL),
    exactly as if each change had been written in turn. Values are encoded
    while the rows are being read, and each statement is built while the
    previous one runs. `state` is written whatever changed."""
    result = ApplyResult()
    plan = _Plan()
    wanted = _wanted(synced, changes)

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
    stored = await reading

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
                _plan_one(part, change, synced.types[change.entity_type], enc, stored, result)
            yield from _plan_statements(cur.dialect, synced, part)
        if now is not None and result.log:
            # built while the last part's statements run
            yield from log_statements(cur.dialect, result.log, now)

    await run_pipelined(cur, statements())
    if state:
        await write_state(cur, state)
    log.debug(
        "apply: {applied} applied ({written} written, {unchanged} unchanged), {stale} stale, "
        "{unknown} uncached types, {ignored} uncached fields",
        applied=result.applied, written=result.written, unchanged=result.unchanged,
        stale=result.skipped_stale, unknown=result.unknown_types, ignored=result.ignored_fields,
    )
    return result


async def _read_stored(
    cur: SQLCursor, synced: Synced, wanted: dict[str, _Want], plan: _Plan
) -> _Stored:
    """What the rows the batch touches hold: per type, one statement (per
    id chunk) for the stale-check columns, the flags and the columns the
    changes set (locked on PostgreSQL); then one for the stored links of
    the multi_entity fields they set (all of them for a delete). The links
    are read after the rows are locked, so no other writer changes them
    before this transaction ends."""
    lock = cur.dialect.lock_suffix
    stored = _Stored()
    rows, cols = stored.rows, stored.cols
    for etype, want in wanted.items():
        id_list = sorted(want.ids)
        has_updated = synced.data_type(etype, "updated_at") == "date_time"
        names = ["_active", "_complete"] + [
            c for c in want.columns if c not in ("id", "_active", "_complete")
        ]
        select = ", ".join(
            ['"id"', '"updated_at"' if has_updated else "NULL"] + [layout.quote(c) for c in names]
        )
        table = layout.entity_table(etype)
        for cond, params in id_conditions(cur.dialect, '"id"', id_list):
            for row in await cur.execute(f"SELECT {select} FROM {table} WHERE {cond}{lock}", params):
                key = (etype, int(row[0]))
                rows[key] = [row[1], row[2]]
                cols[key] = dict(zip(names, row[2:]))
        if want.multi:
            await _read_links(cur, etype, sorted(want.multi), id_list, stored)
    plan.stored = set(rows)
    return stored


async def _read_links(
    cur: SQLCursor, etype: str, fnames: list[str], id_list: list[int], stored: _Stored
) -> None:
    """The stored links of `fnames` of the parents `id_list`, into
    `stored.links` (an empty list for a parent with none); fields read
    together with ``UNION ALL`` within the bound-parameter limit, in order
    (field, parent, position)."""
    links = stored.links
    for fname in fnames:
        for eid in id_list:
            links[(etype, fname, eid)] = []
    for cond, params in id_conditions(cur.dialect, "parent_id", id_list):
        per = max(1, MAX_PARAMS // max(1, len(params)))
        for start in range(0, len(fnames), per):
            group = fnames[start : start + per]
            sql = " UNION ALL ".join(
                f"SELECT {i}, parent_id, position, child_type, child_id "
                f"FROM {layout.multi_table(etype, fname)} WHERE {cond}"
                for i, fname in enumerate(group)
            ) + " ORDER BY 1, 2, 3"
            at: tuple[Any, Any] | None = None
            held: list[tuple[str, int]] | None = None
            for i, parent, position, ctype, cid in await cur.execute(sql, params * len(group)):
                if (i, parent) != at:
                    at = (i, parent)
                    held = links[(etype, group[i], int(parent))] = []
                if held is None:
                    continue
                if position != len(held) or type(ctype) is not str or type(cid) is not int:
                    # positions other than 0..n-1 (apply never writes
                    # them), or values of other types: never "the same"
                    held = links[(etype, group[i], int(parent))] = _UNKNOWN_LINKS
                    continue
                held.append((ctype, cid))


def _same(stored: Any, new: Any) -> bool:
    """`new` (a column value as apply writes it) is exactly what the column,
    read back as `stored`, already holds: the same Python type (the stores
    read back int / float / str / None for the column types apply writes,
    and writing a value reads back the same type: anything else, a bool, a
    str of a number column, bytes..., compares as different) and the same
    value; floats bit for bit (NaN never, -0.0 is not 0.0). A write of
    something "different" that is in fact the same costs a needless write;
    the reverse would leave a wrong value, so when in doubt: different."""
    kind = type(new)
    if type(stored) is not kind:
        return False
    if kind is str or kind is int:
        return stored == new
    if kind is float:
        return stored == new and (new != 0.0 or math.copysign(1.0, new) == math.copysign(1.0, stored))
    return new is None

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
    stored: _Stored,
    result: ApplyResult,
) -> None:
    """Decide one change against `stored` and record its writes in `plan`
    (none when it would change nothing); keep `stored` current."""
    etype = change.entity_type
    eid = int(change.entity_id)
    key = (etype, eid)
    rows = stored.rows
    row = rows.get(key)

    if change.delete:
        multi = sorted(f for f, t in fields.items() if t == "multi_entity")
        result.applied += 1
        if row is None and not any(
            stored.links.get((etype, fname, eid), _UNKNOWN_LINKS) != [] for fname in multi
        ):
            # no row, no links: nothing to delete
            result.unchanged += 1
            return
        target = plan.row(key)
        target.delete = target.delete or key in plan.stored
        target.insert = target.sets = None
        for fname in multi:
            plan.multi[(etype, fname, eid)] = stored.links[(etype, fname, eid)] = []
        rows.pop(key, None)
        stored.cols.pop(key, None)
        result.written += 1
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

    if row is None:
        target = plan.row(key)
        active = 1 if change.active is None else int(bool(change.active))
        target.insert = {
            "id": eid,
            "_active": active,
            "_complete": 1 if change.complete else 0,
            **values,
        }
        target.sets = None
        rows[key] = [values.get("updated_at"), active]
        stored.cols[key] = dict(target.insert)
        wrote = True
    else:
        sets = dict(values)
        if change.active is not None:
            sets["_active"] = int(bool(change.active))
        if change.complete:
            sets["_complete"] = 1
        have = stored.cols.get(key)
        if have is None:
            have = stored.cols[key] = {}
        wrote = False
        for col, value in sets.items():
            if col not in have or not _same(have[col], value):
                wrote = True
                break
        if wrote:
            # the whole change is written (the row is rewritten anyway, and
            # rows given the same fields share one statement)
            have.update(sets)
            target = plan.row(key)
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
        where = (etype, fname, eid)
        if stored.links.get(where, _UNKNOWN_LINKS) != links:
            plan.multi[where] = stored.links[where] = links
            wrote = True

    result.applied += 1
    if wrote:
        # only what moved is logged (scans re-read unchanged rows)
        result.written += 1
        result.log.append(log_entry(change))
    else:
        result.unchanged += 1


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


async def set_field_states(
    cur: SQLCursor, entity_type: str, fields: list[str] | None, state: str
) -> bool:
    """`catalog.write_field_states`, without needless writes: nothing is
    written when every recorded field named (None: all of the type's)
    already has `state`. Whether anything was written (the stores move the
    read generation only then: a scan marking ready fields that are ready
    keeps the kept answers)."""
    if state not in (layout.FIELD_PENDING, layout.FIELD_READY):
        raise ValueError(f"unknown field state {state!r}")
    current = {
        name: held for name, held in await cur.execute(
            f"SELECT field_name, state FROM _sgcache_fields WHERE entity_type = ?"
            f"{cur.dialect.lock_suffix}", [entity_type])
    }
    named = current if fields is None else [name for name in fields if name in current]
    if all(current[name] == state for name in named):
        return False
    await write_field_states(cur, entity_type, fields, state)
    return True
