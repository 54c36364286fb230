"""The emulator's event log: allocating EventLogEntry ids, shaping each kind
of event the way a real Shotgun site writes it, and the test-only knobs that
make the log misbehave like a real one (ids committed late, ids never
committed, old events truncated).

Events are rows in ``db["EventLogEntry"]`` in the storage form shared with
the read engine, so ``read`` on EventLogEntry serves them like any other
type. Shapes follow PROTOCOL.md "EventLogEntry":

* ``Shotgun_<Type>_New``: meta ``{type: new_entity, entity_type, entity_id}``;
* ``Shotgun_<Type>_Change``: meta ``{type: attribute_change, attribute_name,
  entity_type, entity_id, field_data_type, old_value, new_value[, in_create]}``
  or, for multi-entity fields, ``added`` / ``removed`` instead of the values;
  backref changes add ``actual_attribute_changed`` and
  ``original_event_log_entry_id``;
* ``Shotgun_<Type>_Retirement`` (entity null) after a ``retirement_date``
  change, and ``Shotgun_<Type>_Revival``.

Meta values are wire values, except date_time values, which Shotgun writes
as ``"YYYY-MM-DD HH:MM:SS UTC"`` in event meta (`format_meta_datetime`).

Schema changes are events of the hidden ``DisplayColumn`` type (one
DisplayColumn per field): ``Shotgun_DisplayColumn_New`` / ``_Change`` /
``_Retirement``. No real payload of these is public: the shapes written by
`column_new`, `column_change` and `column_retirement` are guesses modelled
on the entity events (docs/emulator.md, "Schema changes"); a consumer should
re-read the schema on any of them rather than parse them.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass, field
from typing import Any, Iterable

from twisted.logger import Logger

EVENT_TYPE = "EventLogEntry"

#: The entity type of schema (field) events; not a type of the site schema.
COLUMN_TYPE = "DisplayColumn"

log = Logger()


def format_meta_datetime(value: datetime.datetime) -> str:
    """A naive UTC datetime as Shotgun writes it in event meta."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class EventContext:
    """Who and when, for every event one request writes."""

    #: The calling user's link ``{"type", "id"}`` (ApiUser or HumanUser).
    user: dict | None
    #: Naive UTC time of the request.
    now: datetime.datetime
    session_uuid: str | None = None
    #: False when the caller writes no events (generate_events off).
    enabled: bool = True
    #: Display name of the user, for descriptions.
    user_name: str | None = None


@dataclass
class _Snapshot:
    next_id: int
    hold_ids: set[int]
    hold_count: int
    skip: int
    held: dict[int, dict]
    written: list[int] = field(default_factory=list)


class EventLog:
    """Allocates event ids and stores event rows (or holds them back)."""

    def __init__(self, db: dict[str, dict[int, dict]]):
        self.db = db
        self.reset()

    # -- state -----------------------------------------------------------
    def reset(self) -> None:
        """Forget every event and knob; ids start at 1 again."""
        self.db.setdefault(EVENT_TYPE, {}).clear()
        self.next_id = 1
        #: ids to withhold when they are written.
        self._hold_ids: set[int] = set()
        #: how many of the next written events to withhold.
        self._hold_count = 0
        #: ids to skip (never written) before the next allocation.
        self._skip = 0
        #: withheld rows by id, waiting for `release`.
        self.held: dict[int, dict] = {}
        self._tx: _Snapshot | None = None

    def begin(self) -> None:
        """Start recording what a transaction writes, so it can be undone."""
        self._tx = _Snapshot(
            self.next_id, set(self._hold_ids), self._hold_count, self._skip, dict(self.held)
        )

    def commit(self) -> None:
        self._tx = None

    def rollback(self) -> None:
        """Undo every event written since `begin` (ids are not reused)."""
        tx = self._tx
        if tx is None:
            return
        table = self.db[EVENT_TYPE]
        for event_id in tx.written:
            table.pop(event_id, None)
        # Ids stay burnt, as in a real database sequence: a rolled-back
        # transaction leaves a hole that never fills.
        self._hold_ids = tx.hold_ids
        self._hold_count = tx.hold_count
        self.held = tx.held
        self._tx = None

    # -- writing ---------------------------------------------------------
    def allocate_id(self) -> int:
        self.next_id += self._skip
        self._skip = 0
        event_id = self.next_id
        self.next_id += 1
        return event_id

    def append(self, row: dict) -> int:
        """Give `row` the next id and store it (or hold it back)."""
        event_id = self.allocate_id()
        row["id"] = event_id
        row.setdefault("type", EVENT_TYPE)
        row.setdefault("__retired", False)
        if event_id in self._hold_ids:
            self._hold_ids.discard(event_id)
            self.held[event_id] = row
        elif self._hold_count > 0:
            self._hold_count -= 1
            self.held[event_id] = row
        else:
            self.db[EVENT_TYPE][event_id] = row
        if self._tx is not None:
            self._tx.written.append(event_id)
        return event_id

    def write(
        self,
        ctx: EventContext,
        event_type: str,
        *,
        entity: dict | None,
        meta: dict,
        attribute_name: str | None = None,
        project: dict | None = None,
        description: str = "",
    ) -> int | None:
        """Write one event; None when the context writes no events."""
        if not ctx.enabled:
            return None
        user = _link(ctx.user)
        row = {
            "type": EVENT_TYPE,
            "event_type": event_type,
            "attribute_name": attribute_name,
            "entity": _link(entity),
            "meta": copy.deepcopy(meta),
            "project": _link(project),
            "user": user,
            "created_at": ctx.now,
            "updated_at": ctx.now,
            "created_by": user,
            "updated_by": user,
            "session_uuid": ctx.session_uuid,
            "description": description,
            "__retired": False,
        }
        return self.append(row)

    # -- the event shapes --------------------------------------------------
    def new_entity(self, ctx: EventContext, link: dict, project: dict | None, name: Any) -> int | None:
        etype, eid = link["type"], link["id"]
        return self.write(
            ctx,
            f"Shotgun_{etype}_New",
            entity=link,
            project=project,
            meta={"type": "new_entity", "entity_type": etype, "entity_id": eid},
            description=f"{_who(ctx)} created new {etype} {_name(name, eid)}",
        )

    def attribute_change(
        self,
        ctx: EventContext,
        link: dict,
        project: dict | None,
        attribute_name: str,
        field_data_type: str,
        *,
        old_value: Any = None,
        new_value: Any = None,
        added: list | None = None,
        removed: list | None = None,
        in_create: bool = False,
        entity: dict | None = None,
        extra_meta: dict | None = None,
    ) -> int | None:
        """A ``Shotgun_<Type>_Change``: values, or added/removed when given.

        `entity` overrides the event's entity (defaults to `link`); a
        backref passes `extra_meta` with the field actually changed and
        names the triggering entity in `link`.
        """
        meta: dict[str, Any] = {
            "type": "attribute_change",
            "attribute_name": attribute_name,
            "entity_type": link["type"],
            "entity_id": link["id"],
            "field_data_type": field_data_type,
        }
        if in_create:
            meta["in_create"] = True
        if added is not None or removed is not None:
            meta["added"] = added or []
            meta["removed"] = removed or []
        else:
            meta["old_value"] = old_value
            meta["new_value"] = new_value
        if extra_meta:
            meta.update(extra_meta)
        target = entity if entity is not None else link
        return self.write(
            ctx,
            f"Shotgun_{target['type']}_Change",
            entity=target,
            project=project,
            attribute_name=attribute_name,
            meta=meta,
            description=f"{_who(ctx)} changed {attribute_name!r} on {target['type']} {target['id']}",
        )

    def retirement(self, ctx: EventContext, link: dict, project: dict | None, name: Any) -> None:
        """The pair Shotgun writes on delete: retirement_date change, then Retirement."""
        etype, eid = link["type"], link["id"]
        when = format_meta_datetime(ctx.now)
        self.write(
            ctx,
            f"Shotgun_{etype}_Change",
            entity=None,
            project=project,
            attribute_name="retirement_date",
            meta={
                "type": "attribute_change",
                "attribute_name": "retirement_date",
                "entity_type": etype,
                "entity_id": eid,
                "field_data_type": "date_time",
                "old_value": None,
                "new_value": when,
            },
            description=f"{_who(ctx)} changed 'retirement_date' on {etype} {eid}",
        )
        self.write(
            ctx,
            f"Shotgun_{etype}_Retirement",
            entity=None,
            project=project,
            meta={
                "type": "entity_retirement",
                "class_name": etype,
                "entity_type": etype,
                "entity_id": eid,
                "id": eid,
                "display_name": name,
                "retirement_date": when,
            },
            description=f"{_who(ctx)} retired {etype} {_name(name, eid)}",
        )

    def revival(self, ctx: EventContext, link: dict, project: dict | None, name: Any) -> int | None:
        etype, eid = link["type"], link["id"]
        return self.write(
            ctx,
            f"Shotgun_{etype}_Revival",
            entity=link,
            project=project,
            meta={
                "class_name": etype,
                "entity_type": etype,
                "entity_id": eid,
                "id": eid,
                "display_name": name,
            },
            description=f"{_who(ctx)} revived {etype} {_name(name, eid)}",
        )

    # -- schema (DisplayColumn) events --------------------------------------
    def column_new(self, ctx: EventContext, column_id: int) -> int | None:
        """A field was created: ``Shotgun_DisplayColumn_New``."""
        link = {"type": COLUMN_TYPE, "id": column_id}
        return self.write(
            ctx,
            f"Shotgun_{COLUMN_TYPE}_New",
            entity=link,
            meta={"type": "new_entity", "entity_type": COLUMN_TYPE, "entity_id": column_id},
            description=f"{_who(ctx)} created new {COLUMN_TYPE} #{column_id}",
        )

    def column_change(
        self, ctx: EventContext, column_id: int, attribute_name: str, old_value: Any, new_value: Any
    ) -> int | None:
        """One property of a field changed: ``Shotgun_DisplayColumn_Change``."""
        link = {"type": COLUMN_TYPE, "id": column_id}
        return self.write(
            ctx,
            f"Shotgun_{COLUMN_TYPE}_Change",
            entity=link,
            attribute_name=attribute_name,
            meta={
                "type": "attribute_change",
                "attribute_name": attribute_name,
                "entity_type": COLUMN_TYPE,
                "entity_id": column_id,
                "old_value": copy.deepcopy(old_value),
                "new_value": copy.deepcopy(new_value),
            },
            description=f"{_who(ctx)} changed {attribute_name!r} on {COLUMN_TYPE} #{column_id}",
        )

    def column_retirement(self, ctx: EventContext, column_id: int, display_name: Any) -> int | None:
        """A field was deleted: ``Shotgun_DisplayColumn_Retirement``. The
        stored entity is the column's link, which reads as null (the column
        is retired), like the entity of any retirement event."""
        link = {"type": COLUMN_TYPE, "id": column_id}
        return self.write(
            ctx,
            f"Shotgun_{COLUMN_TYPE}_Retirement",
            entity=link,
            meta={
                "type": "entity_retirement",
                "class_name": COLUMN_TYPE,
                "entity_type": COLUMN_TYPE,
                "entity_id": column_id,
                "id": column_id,
                "display_name": display_name,
                "retirement_date": format_meta_datetime(ctx.now),
            },
            description=f"{_who(ctx)} retired {COLUMN_TYPE} #{column_id}",
        )

    # -- test knobs --------------------------------------------------------
    def hold(self, ids: Iterable[int] = (), count: int = 0) -> None:
        """Withhold the events that get these ids, and/or the next `count`
        events written, until `release`: a reader sees a hole that fills."""
        self._hold_ids.update(int(i) for i in ids)
        self._hold_count += int(count)

    def release(self, ids: Iterable[int] | None = None) -> list[int]:
        """Make held events visible (all, or those in `ids`); their ids."""
        chosen = sorted(self.held) if ids is None else sorted(int(i) for i in ids if int(i) in self.held)
        for event_id in chosen:
            self.db[EVENT_TYPE][event_id] = self.held.pop(event_id)
        if chosen:
            log.debug("released held events {ids}", ids=chosen)
        return chosen

    def skip(self, count: int) -> None:
        """Burn the next `count` ids: holes that never fill."""
        self._skip += int(count)

    def truncate(self, below: int) -> int:
        """Delete every event with id < `below`; how many went."""
        table = self.db[EVENT_TYPE]
        doomed = [i for i in table if i < below]
        for event_id in doomed:
            del table[event_id]
        for event_id in [i for i in self.held if i < below]:
            del self.held[event_id]
        return len(doomed)


def _link(value: dict | None) -> dict | None:
    if value is None:
        return None
    return {"type": value["type"], "id": value["id"]}


def _who(ctx: EventContext) -> str:
    return ctx.user_name or "Someone"


def _name(name: Any, entity_id: int) -> str:
    return repr(name) if name not in (None, "") else f"#{entity_id}"
