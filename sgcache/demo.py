"""`twistd sgcache --demo`: an in-process Shotgun emulator, seeded with a
small believable project, standing in for the site.

The emulator listens on an ephemeral 127.0.0.1 port; the daemon is pointed
at it with the emulator's script (``demo`` / ``demo``), which clients use as
well. Unless a store is given with ``--db`` / ``SGCACHE_DB``, the demo uses
an in-memory SQLite store, so each run starts clean.

The emulator's site is quiet: no line per request (they are the daemon's
own calls to its site, every poll included), no "Starting factory".
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.web.server import Site

from sgcache.schema import Schema
from sgcache.logs import logger

log = logger(__name__)

DEMO_SCRIPT = ("demo", "demo")
DEFAULT_DB = "sqlite:///sgcache.sqlite"


def bundled_schema_path(name: str = "basic.yml") -> str:
    """The shipped schema file: installed package data, or the checkout's."""
    try:
        from importlib.resources import files

        candidate = files("sgcache.schemas") / name
        if candidate.is_file():
            return str(candidate)
    except (ModuleNotFoundError, TypeError):
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "schema", name)


def demo_entities() -> list[dict[str, Any]]:
    """The demo project, as emulator seed items (ids fixed so links work)."""
    items: list[dict[str, Any]] = []

    def add(entity_type: str, entity_id: int, /, **fields: Any) -> dict[str, Any]:
        items.append({"type": entity_type, "id": entity_id, "fields": fields})
        return {"type": entity_type, "id": entity_id}

    project = add("Project", 1, name="Demo Project", tank_name="demo", sg_status="Active", archived=False)
    users = [
        add("HumanUser", 10 + i, name=name, login=login, firstname=name.split()[0], email=f"{login}@studio.example")
        for i, (name, login) in enumerate(
            [("Ada Lovelace", "ada"), ("Grace Hopper", "grace"), ("Alan Turing", "alan"), ("Edsger Dijkstra", "edsger")]
        )
    ]
    steps = [
        add("Step", 20 + i, code=code, short_name=short, entity_type=etype, list_order=i)
        for i, (code, short, etype) in enumerate(
            [("Model", "MOD", "Asset"), ("Rig", "RIG", "Asset"), ("Layout", "LAY", "Shot"),
             ("Animation", "ANM", "Shot"), ("Lighting", "LGT", "Shot"), ("Comp", "CMP", "Shot")]
        )
    ]
    asset_steps, shot_steps = steps[:2], steps[2:]
    assets = [
        add("Asset", 100 + i, code=code, sg_asset_type=kind, project=project, sg_status_list=status,
            description=f"The {code} asset")
        for i, (code, kind, status) in enumerate(
            [("hero", "Character", "ip"), ("sidekick", "Character", "rdy"), ("car", "Vehicle", "fin"),
             ("lamp", "Prop", "wtg"), ("city", "Environment", "ip")]
        )
    ]
    task_id = 1000
    version_id = 5000
    statuses = ["wtg", "rdy", "ip", "fin", "hld"]
    for a_index, asset in enumerate(assets):
        for s_index, step in enumerate(asset_steps):
            task_id += 1
            add("Task", task_id, content=step_name(step), entity=asset, step=step,
                project=project, sg_status_list=statuses[(a_index + s_index) % 5],
                task_assignees=[users[(a_index + s_index) % len(users)]],
                start_date=f"2026-0{1 + s_index}-0{1 + a_index}", due_date=f"2026-0{2 + s_index}-1{a_index}")
    shot_id = 200
    for seq_index in range(3):
        sequence = add("Sequence", 50 + seq_index, code=sequence_code(seq_index), project=project,
                       sg_status_list="ip", description=f"Sequence {seq_index + 1}")
        for shot_index in range(4):
            shot_id += 1
            code = f"{sequence_code(seq_index)}_{(shot_index + 1) * 10:04d}"
            shot = add("Shot", shot_id, code=code, sg_sequence=sequence, project=project,
                       sg_status_list=statuses[(seq_index + shot_index) % 5],
                       sg_cut_in=1001, sg_cut_out=1001 + 24 * (shot_index + 2),
                       sg_cut_duration=24 * (shot_index + 2) + 1,
                       assets=[assets[(seq_index + shot_index) % len(assets)], assets[0]] if shot_index % 2 == 0
                       else [assets[(seq_index + shot_index) % len(assets)]],
                       description=f"Shot {code}")
            for s_index, step in enumerate(shot_steps):
                task_id += 1
                task = add("Task", task_id, content=step_name(step), entity=shot, step=step,
                           project=project, sg_status_list=statuses[(shot_index + s_index) % 5],
                           task_assignees=[users[(shot_index + s_index + seq_index) % len(users)]],
                           est_in_mins=60 * (s_index + 1) * 8)
                if s_index in (1, 3):
                    for take in range(1, 3):
                        version_id += 1
                        add("Version", version_id, code=f"{code}_{step_short(step)}_v{take:03d}",
                            entity=shot, sg_task=task, project=project,
                            sg_status_list="rev" if take == 2 else "na",
                            user=users[(shot_index + take) % len(users)],
                            description=f"take {take}")
    return items


_STEP_CODES = {20: ("Model", "MOD"), 21: ("Rig", "RIG"), 22: ("Layout", "LAY"), 23: ("Animation", "ANM"),
               24: ("Lighting", "LGT"), 25: ("Comp", "CMP")}


def step_name(step: dict) -> str:
    return _STEP_CODES[step["id"]][0].lower()


def step_short(step: dict) -> str:
    return _STEP_CODES[step["id"]][1].lower()


def sequence_code(index: int) -> str:
    return f"SEQ{(index + 1) * 10:03d}"


def quiet_site(resource: Any) -> Site:
    """A Site that logs no request and no factory start or stop."""
    site = Site(resource)
    site.displayTracebacks = False
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return site


class DemoSite(service.Service):
    """The emulator as a service, listening on 127.0.0.1 (ephemeral port)."""

    def __init__(self, reactor: Any, schema_path: str | None = None):
        self.reactor = reactor
        self.schema_path = schema_path or bundled_schema_path()
        self.ready: defer.Deferred = defer.Deferred()
        self.port: Any = None
        self.url: str | None = None
        self.emulator: Any = None

    def apply(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Settings pointing the daemon at this site."""
        out = dict(settings)
        if not out.get("schema"):
            out["schema"] = self.schema_path
        else:
            self.schema_path = out["schema"]
        if out.get("db") == DEFAULT_DB and "SGCACHE_DB" not in os.environ:
            out["db"] = "sqlite://:memory:"
        out["shotgun"] = "http://127.0.0.1:0"  # replaced once listening
        out["script_name"], out["api_key"] = DEMO_SCRIPT
        return out

    def startService(self) -> None:
        super().startService()
        from sgcache.testing.emulator import Emulator
        from sgcache.testing.server import EmulatorServer

        schema = Schema.load(self.schema_path)
        self.emulator = Emulator(schema, scripts=dict([DEMO_SCRIPT]), clock=self.reactor)
        items = [i for i in demo_entities() if i["type"] in schema]
        self.emulator.seed(items, events=False)
        site = quiet_site(EmulatorServer(self.emulator, self.reactor).resource())
        self.port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port.getHost().port}"
        log.info(
            "demo site (Shotgun emulator) at {url} with {count} entities; "
            "connect with shotgun_api3.Shotgun(<sgcache url>, 'demo', 'demo')",
            url=self.url,
            count=len(items),
        )
        self.ready.callback(self.url)

    def stopService(self) -> Any:
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()
        return None
