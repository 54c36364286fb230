"""Normalized entity changes: what every sync source (event poller, scanner,
write-back of passthrough results) hands to the one apply path.

A change carries wire-format values (as the Shotgun client sends and receives
them) for cached fields only; the store encodes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Where a change came from (recorded in the update log).
SOURCE_EVENT = "event"
SOURCE_SCAN = "scan"
SOURCE_PASSTHROUGH = "passthrough"


@dataclass
class EntityChange:
    """One entity's new state, or part of it.

    * `fields`: field name -> wire value, replacing the stored value
      (multi_entity: the full list, in order).
    * `active`: True/False to revive/retire; None leaves it.
    * `delete`: remove the row (a hard delete found by a full scan).
    * `updated_at`: the entity's updated_at (wire form) as this change saw
      it; the store refuses to overwrite a row holding a newer one.
    * `complete`: True when `fields` holds every cached field (a fetched
      entity); a row first created from a partial change is marked
      incomplete so reads of it pass through until it is fetched.
    * `source`: where it came from (`SOURCE_EVENT`, ...).
    * `changed_fields`, `event_id`: what the update log records of it: the
      fields an event named (None: those given, or ``*`` for a complete
      change) and the event that led to it. Neither is compared with what
      is stored.
    """

    entity_type: str
    entity_id: int
    fields: dict[str, Any] = field(default_factory=dict)
    active: bool | None = None
    delete: bool = False
    updated_at: str | None = None
    complete: bool = False
    source: str = SOURCE_PASSTHROUGH
    changed_fields: list[str] | None = None
    event_id: int | None = None
