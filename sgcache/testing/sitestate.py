"""Test helper: put an emulator in a saved state (every row of every type,
the event log included, and the event log's next id), as
``tests/fixtures/layout-v1/site.json`` holds it::

    {"scripts": {name: key, ...},        # the emulator's scripts, in order
     "now": "2024-05-06T09:00:30",       # the site's clock when saved
     "next_event_id": 22,
     "rows": {type: [row, ...], ...}}    # storage form (emulator.py)

A row is the emulator's storage form with each naive UTC datetime written
as ``{"$datetime": "YYYY-MM-DDTHH:MM:SS"}``. The saving side is the fixture
generator (``tests/fixtures/layout-v1/make.py``): it runs against an old
release, so it cannot import this module.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from sgcache.testing.emulator import Emulator
from sgcache.testing.eventlog import COLUMN_TYPE


def decode(value: Any) -> Any:
    """A saved value in storage form."""
    if isinstance(value, dict):
        if set(value) == {"$datetime"}:
            return datetime.datetime.fromisoformat(value["$datetime"])
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def read_site(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_site(emulator: Emulator, state: dict) -> None:
    """Replace every row of `emulator` (made with the same scripts, in the
    same order) with those of `state`, and continue its event log after
    the saved one. The emulator's DisplayColumn rows (its schema's fields)
    stay unless `state` holds some. The clock is left alone: ``state["now"]``
    is for `Emulator.set_clock`. ValueError when the state does not fit the
    emulator."""
    if list(emulator.scripts) != list(state["scripts"]):
        raise ValueError(
            f"site state: scripts {list(state['scripts'])}, the emulator has {list(emulator.scripts)}"
        )
    # the emulator knows its scripts by the ids of the ApiUser rows it made
    scripts = {row.get("firstname"): eid for eid, row in emulator.db["ApiUser"].items()}
    unknown = sorted(set(state["rows"]) - set(emulator.db))
    if unknown:
        raise ValueError(f"site state: types the emulator lacks: {', '.join(unknown)}")
    for etype, table in emulator.db.items():
        # DisplayColumn rows are the emulator's records of its schema's
        # fields (`Emulator.reset` keeps them too): a state saved by a
        # release without them leaves them as they are
        if etype != COLUMN_TYPE or etype in state["rows"]:
            table.clear()
    for etype, rows in state["rows"].items():
        for row in rows:
            emulator.db[etype][int(row["id"])] = decode(row)
    for name in state["scripts"]:
        row = emulator.db["ApiUser"].get(scripts.get(name, -1))
        if row is None or row.get("firstname") != name:
            raise ValueError(f"site state: script {name!r} is not ApiUser {scripts.get(name)}")
    emulator.events.next_id = int(state["next_event_id"])
