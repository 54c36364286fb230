"""Table and column names of the cache database: the one place that says how
a Shotgun entity type / field maps onto SQL. Used by the stores (DDL, apply)
and the read planner (SELECT).

* entity type ``Shot`` -> table ``"Shot"`` with ``"id"`` (primary key),
  ``"_active"`` (1 live / 0 retired), ``"_complete"`` (1 once every cached
  field was loaded);
* scalar field ``code`` -> column ``"code"``;
* entity field ``sg_sequence`` -> columns ``"sg_sequence__type"`` and
  ``"sg_sequence__id"`` (indexed together, id first);
* multi_entity field ``Shot.assets`` -> table ``"Shot__assets"`` with
  ``parent_id``, ``child_type``, ``child_id``, ``position``; unique on
  (parent_id, child_type, child_id); indexed both ways.

Bookkeeping tables (all prefixed ``_sgcache_``):

* ``_sgcache_meta(key, value)`` -- the DB layout version (key
  ``layout_version``) and the fields generation;
* ``_sgcache_state(key, value)`` -- cursors and watermarks;
* ``_sgcache_entities(entity_type, identifier)`` -- cached types;
* ``_sgcache_fields(entity_type, field_name, data_type, link_types, state)``
  -- cached fields; ``state`` is ``pending`` until a full scan loaded it,
  then ``ready`` (only ready fields are served).

Shotgun names are ``[A-Za-z0-9_]``; every identifier is double-quoted.

Layout versions. `LAYOUT_VERSION` is the layout this code creates and
serves; the store records its own in ``_sgcache_meta``:

* 1: entity tables also had ``"_event_id"`` (the last event applied to the
  row, from when changes were compared by event id);
* 2: ``"_event_id"`` is gone (nothing wrote it any more).

Any change to what this docstring describes bumps `LAYOUT_VERSION` and
ships one upgrade step from the previous version in `sgcache.store.upgrade`,
which `catalog.ensure_layout` runs when a store is opened (SQLite: after a
backup copy of the file; PostgreSQL: in the opening transaction). A store of
a newer layout than this code knows is refused. See docs/upgrading.md.
"""

from __future__ import annotations

import re

LAYOUT_VERSION = 2

#: the ``_sgcache_meta`` key of the layout version
LAYOUT_VERSION_KEY = "layout_version"

FIELD_PENDING = "pending"
FIELD_READY = "ready"

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"invalid SQL identifier {name!r}")
    return f'"{name}"'


def entity_table(entity_type: str) -> str:
    return quote(entity_type)


def scalar_column(field_name: str) -> str:
    return quote(field_name)


def link_type_column(field_name: str) -> str:
    return quote(f"{field_name}__type")


def link_id_column(field_name: str) -> str:
    return quote(f"{field_name}__id")


def multi_table_name(entity_type: str, field_name: str) -> str:
    return f"{entity_type}__{field_name}"


def multi_table(entity_type: str, field_name: str) -> str:
    return quote(multi_table_name(entity_type, field_name))
