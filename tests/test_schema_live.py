"""Issue 14's proof: clients read continuously while the cached schema
changes under them, on both stores, and never get a wrong answer.

A reader (`LiveReader`) runs for the whole test, one read at a time, through
the daemon with the real `shotgun_api3` client: for each read shape it reads
the site directly, then through the cache, then the site directly again, and
the cache's answer must equal one of the two direct answers (the site may
change between them). Reads of the unaffected types (Asset, Project) must
be answered locally every time. Nothing else reads through the cache, so the
cache's counters around each cached read say whether it was local.

Meanwhile the schema changes, one kind after the other:

1. a field added to the schema file, reload (admin listener, POST);
2. a field removed from the file, reload (``sgcache schema reload``);
3. a field's data type changed on the site (text -> number, values
   converted), the keeper told directly (``check_site``);
4. a type added to the file, reload (``keeper.reload``);
5. a type removed from the file, reload (admin listener, POST);
6. a field deleted on the site, followed by its event end to end (a poll,
   then the keeper's own delayed check);
7. a field created on the site that a ``+ Shot.sg_*`` rule takes, with
   values, followed by its events end to end: cached without a reload.

A site change is seen by the daemon only once it reads its event (or checks
the site's schema): until then the cache answers the field as it was, like
any change not polled yet. A read touching the changed field while the
change is "in flight" (from the site's change until the keeper has applied
it) may give the site's answer from before the change (``stale_in_flight``,
counted), and nothing else; every other read must give the site's answer.

At the end the store's tables, columns and indexes equal those of a store
built fresh from the final effective schema, which is what the final file
and rules give on the final site, and what the store records.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import shotgun_api3
import yaml
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.admin.cli import main as cli_main
from sgcache.schema import Schema
from sgcache.schema.effective import resolve
from sgcache.schema.tools import load_rules
from sgcache.schema.types import is_cacheable
from sgcache.store import layout, open_store
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

USER_SCRIPT = ("pipeline", "pipeline-key")

PROJECT_LINK = {"type": "entity", "entity_types": ["Project"]}

#: the site: every type and field the test ever caches, and some it never does
SITE = {
    "entities": {
        "Project": {"identifier": "name", "fields": {"name": "text"}},
        "Shot": {
            "identifier": "code",
            "fields": {
                "code": "text",
                "description": "text",  # (1) added to the file
                "tank_name": "text",  # (2) removed from the file
                "sg_cut_in": "number",  # by the rule, never changes
                "sg_take": "text",  # (3) retyped on the site: text -> number
                "sg_status": {"type": "list", "valid_values": ["ip", "fin", "wtg"]},  # (6) deleted on the site
                "sg_secret": "text",  # excluded by a rule: never cached
                "project": PROJECT_LINK,
                # (7) sg_new: created on the site
            },
        },
        "Asset": {
            "identifier": "code",
            "fields": {
                "code": "text",
                "sg_asset_type": {"type": "list", "valid_values": ["Prop", "Character", "Vehicle"]},
                "project": PROJECT_LINK,
            },
        },
        "Sequence": {"identifier": "code", "fields": {"code": "text", "project": PROJECT_LINK}},  # (4)
        "HumanUser": {"identifier": "name", "fields": {"name": "text", "login": "text"}},  # (5)
    }
}

RULES = """\
# every custom field of Shot but the secret one
+ Shot.sg_*
- Shot.sg_secret
"""


def file_schema(*, description: bool, tank_name: bool, sequence: bool, human_user: bool) -> dict:
    """The schema file at each stage of the test."""
    shot = {"code": "text", "project": PROJECT_LINK}
    if description:
        shot["description"] = "text"
    if tank_name:
        shot["tank_name"] = "text"
    entities: dict[str, Any] = {
        "Project": {"identifier": "name", "fields": {"name": "text"}},
        "Shot": {"identifier": "code", "fields": shot},
        "Asset": SITE["entities"]["Asset"],
    }
    if sequence:
        entities["Sequence"] = SITE["entities"]["Sequence"]
    if human_user:
        entities["HumanUser"] = SITE["entities"]["HumanUser"]
    return {"entities": entities}


#: bookkeeping fields every cached type has (the file implies them, the
#: rules always keep them)
_BOOKKEEPING = {
    "id": ("number", ()),
    "created_at": ("date_time", ()),
    "updated_at": ("date_time", ()),
    "created_by": ("entity", ("HumanUser", "ApiUser")),
    "updated_by": ("entity", ("HumanUser", "ApiUser")),
}

#: what the daemon must cache at the end, written out by hand: type ->
#: (identifier, {field: (data type, link types)})
FINAL = {
    "Project": ("name", {**_BOOKKEEPING, "name": ("text", ())}),
    "Shot": ("code", {
        **_BOOKKEEPING,
        "code": ("text", ()),
        "description": ("text", ()),
        "project": ("entity", ("Project",)),
        "sg_cut_in": ("number", ()),
        "sg_take": ("number", ()),
        "sg_new": ("text", ()),
    }),
    "Asset": ("code", {
        **_BOOKKEEPING,
        "code": ("text", ()),
        "sg_asset_type": ("list", ()),
        "project": ("entity", ("Project",)),
    }),
    "Sequence": ("code", {**_BOOKKEEPING, "code": ("text", ()), "project": ("entity", ("Project",))}),
}


def recorded_view(schema: Schema) -> dict[str, Any]:
    """type -> (identifier, {field: (data type, link types)}) of the
    cacheable fields: what a store records of `schema`."""
    return {
        e.name: (e.identifier, {n: (f.data_type, tuple(f.link_types))
                                for n, f in e.fields.items() if is_cacheable(f.data_type)})
        for e in schema
    }


def seed_items() -> list[dict]:
    project = {"type": "Project", "id": 1}
    items: list[dict] = [{"type": "Project", "id": 1, "fields": {"name": "Live"}}]
    statuses = ["ip", "fin", "wtg", None]
    for i in range(1, 13):
        items.append({"type": "Shot", "id": i, "fields": {
            "code": f"sh{i:03d}",
            "description": f"shot {i}",
            "tank_name": f"tank_{i}" if i % 3 else None,
            "sg_cut_in": i * 2,
            # text that sorts differently from the numbers it becomes
            "sg_take": str((i * 7) % 20) if i % 5 else None,
            "sg_status": statuses[i % 4],
            "sg_secret": f"secret {i}",
            "project": project,
        }})
    kinds = ["Prop", "Character", "Vehicle", None]
    for i in range(1, 9):
        items.append({"type": "Asset", "id": i, "fields": {
            "code": f"as{i:03d}", "sg_asset_type": kinds[i % 4], "project": project,
        }})
    for i in range(1, 4):
        items.append({"type": "Sequence", "id": i, "fields": {"code": f"SQ{i:02d}", "project": project}})
    for i, name in enumerate(["Ann", "bob", "Cid"]):
        items.append({"type": "HumanUser", "id": 100 + i, "fields": {"name": name, "login": name.lower()}})
    return items


# -- the reader ------------------------------------------------------------------


@dataclass
class Shape:
    """One read the reader makes over and over."""

    name: str
    entity_type: str
    filters: list
    fields: list[str]
    order: list[dict] = field(default_factory=lambda: [{"field_name": "id", "direction": "asc"}])
    limit: int = 0
    #: an unaffected type: every read of it must be answered locally
    must_be_local: bool = False

    @property
    def touches(self) -> set[str]:
        """"Type.field" of every field the read returns, filters or sorts on."""
        names = set(self.fields) | {o["field_name"] for o in self.order}
        names |= {f[0] for f in self.filters}
        return {f"{self.entity_type}.{n}" for n in names}


SHAPES = [
    Shape("asset all", "Asset", [], ["code", "sg_asset_type", "project"], must_be_local=True),
    Shape("asset by kind", "Asset", [["sg_asset_type", "is", "Prop"]], ["code"], must_be_local=True),
    Shape("asset top codes", "Asset", [["code", "starts_with", "as0"]], ["code", "sg_asset_type"],
          order=[{"field_name": "code", "direction": "desc"}], limit=3, must_be_local=True),
    Shape("project", "Project", [], ["name"], must_be_local=True),
    Shape("shot all", "Shot", [],
          ["code", "description", "tank_name", "sg_cut_in", "sg_take", "sg_status", "sg_new", "project"]),
    Shape("shot final", "Shot", [], ["code", "description", "sg_cut_in", "sg_take", "sg_new", "project"]),
    Shape("shot description", "Shot", [["description", "contains", "1"]], ["code", "description"]),
    Shape("shot tank", "Shot", [["tank_name", "is_not", None]], ["code", "tank_name"]),
    Shape("shot take", "Shot", [["sg_take", "is_not", None]], ["code", "sg_take"],
          order=[{"field_name": "sg_take", "direction": "desc"}, {"field_name": "id", "direction": "asc"}]),
    Shape("shot status", "Shot", [["sg_status", "is", "ip"]], ["code", "sg_status"]),
    Shape("shot new", "Shot", [["sg_new", "is_not", None]], ["code", "sg_new"]),
    Shape("shot cut", "Shot", [["sg_cut_in", "greater_than", 7]], ["code", "sg_cut_in"]),
    Shape("shot secret", "Shot", [], ["code", "sg_secret"]),
    Shape("sequence", "Sequence", [], ["code", "project"]),
    Shape("human user", "HumanUser", [["id", "greater_than", 99]], ["name", "login"]),
]
SHAPES_BY_NAME = {s.name: s for s in SHAPES}



@dataclass
class Flight:
    """A site change on its way to the daemon (see the module docstring)."""

    fields: set[str]
    opened: float
    #: shape -> the site's last answer before the change
    before: dict[str, Any]
    closed: float | None = None

    def overlaps(self, shape: Shape, started: float, ended: float) -> bool:
        return bool(self.fields & shape.touches) and self.opened <= ended and (
            self.closed is None or self.closed >= started)


@dataclass
class Outcome:
    shape: str
    step: str
    cached: Any
    direct: tuple[Any, Any]
    local: int
    passed: int
    reasons: dict[str, int]
    #: the keeper's schema at the cached read's start and end
    cached_fields: tuple[set[str], set[str]]
    in_flight: bool

    @property
    def right(self) -> bool:
        return self.cached in self.direct

    @property
    def fully_local(self) -> bool:
        return self.local > 0 and self.passed == 0

    @property
    def fully_passed(self) -> bool:
        return self.local == 0 and self.passed > 0

    def describe(self) -> str:
        def clip(value: Any) -> str:
            text = repr(value)
            return text if len(text) <= 600 else text[:600] + "..."

        return (f"[{self.step}] {self.shape}: local={self.local} passed={self.passed} "
                f"reasons={self.reasons} in_flight={self.in_flight} cached={clip(self.cached)} "
                f"direct={clip(self.direct[0])} / {clip(self.direct[1])}")


class LiveReader:
    """Reads continuously (module docstring) and judges every answer."""

    def __init__(self, daemon: Any, sg: Any, direct: Any, pause: float = 0.02):
        self.daemon = daemon
        self.sg = sg
        self.direct = direct
        self.pause = pause
        self.step = "start"
        self.rounds = 0
        self.reads = 0
        self.wrong: list[Outcome] = []
        #: local answers of reads touching a field the daemon did not cache
        self.uncached_local: list[Outcome] = []
        #: reads of an unaffected type not answered (wholly) locally
        self.not_local: list[Outcome] = []
        self.errors: list[str] = []
        self.stale_in_flight = 0
        #: step -> Counter of "<shape>: local|passed|mixed"
        self.by_step: dict[str, Counter] = {}
        #: step -> local reads of the unaffected types
        self.unaffected_local: Counter = Counter()
        self._flights: list[Flight] = []
        #: shape -> the site's answer to its last read
        self._last_direct: dict[str, Any] = {}
        self._probes: list[tuple[Shape, defer.Deferred]] = []
        self._running = False
        self._done: defer.Deferred | None = None

    # -- control ----------------------------------------------------------------
    def start(self) -> None:
        self._running = True
        self._done = defer.ensureDeferred(self._loop())

    async def stop(self) -> None:
        self._running = False
        if self._done is not None:
            await self._done

    def in_flight(self, *fields: str) -> Flight:
        """A site change of `fields` ("Type.field") is about to be made (call
        it just before, in the same reactor turn): until `landed`, reads
        touching them may answer as the site did before."""
        flight = Flight(set(fields), time.monotonic(), dict(self._last_direct))
        self._flights.append(flight)
        return flight

    def landed(self, flight: Flight) -> None:
        flight.closed = time.monotonic()

    async def probe(self, name: str) -> Outcome:
        """One read of shape `name`, made next by the reader (in turn with
        its other reads, so the counters stay exact)."""
        d: defer.Deferred = defer.Deferred()
        self._probes.append((SHAPES_BY_NAME[name], d))
        return await d

    async def rounds_after(self, count: int = 1, timeout: float = 20.0) -> None:
        """Wait until the reader went `count` more times over every shape."""
        target = self.rounds + count
        await wait_for(lambda: self.rounds >= target or not self._running,
                       f"{count} rounds of reads", timeout)
        if self.errors:
            raise AssertionError(f"the reader failed: {self.errors[0]}")

    # -- the loop -------------------------------------------------------------------
    async def _loop(self) -> None:
        index = 0
        try:
            while self._running:
                while self._probes:
                    shape, d = self._probes.pop(0)
                    try:
                        outcome = await self._read(shape)
                    except Exception as e:  # handed to the prober
                        d.errback(e)
                    else:
                        d.callback(outcome)
                shape = SHAPES[index]
                await self._read(shape)
                index += 1
                if index == len(SHAPES):
                    index = 0
                    self.rounds += 1
                await task.deferLater(reactor, self.pause, lambda: None)
        except Exception as e:
            self.errors.append(f"{type(e).__name__}: {e}")
            self._running = False
            raise

    async def _call(self, sg: Any, shape: Shape) -> Any:
        try:
            return await deferToThread(sg.find, shape.entity_type, shape.filters, shape.fields,
                                       order=shape.order, limit=shape.limit)
        except shotgun_api3.Fault as e:
            return ("fault", str(e))

    def _cached_fields(self) -> set[str]:
        schema = self.daemon.service.keeper.schema
        return {f"{e.name}.{n}" for e in schema for n in e.fields}

    async def _read(self, shape: Shape) -> Outcome:
        cache = self.daemon.cache
        started = time.monotonic()
        first = await self._call(self.direct, shape)
        local, passed = cache.counters["read.local"], cache.counters["passthrough"]
        reasons = Counter(cache.passthrough_reasons)
        fields_before = self._cached_fields()
        cached = await self._call(self.sg, shape)
        fields_after = self._cached_fields()
        local, passed = cache.counters["read.local"] - local, cache.counters["passthrough"] - passed
        reasons = Counter(cache.passthrough_reasons) - reasons
        second = await self._call(self.direct, shape)
        ended = time.monotonic()
        self._last_direct[shape.name] = second
        flights = [f for f in self._flights if f.overlaps(shape, started, ended)]
        outcome = Outcome(shape.name, self.step, cached, (first, second), local, passed, dict(reasons),
                          (fields_before, fields_after), bool(flights))
        self.reads += 1
        kind = "local" if outcome.fully_local else "passed" if outcome.fully_passed else "mixed"
        self.by_step.setdefault(self.step, Counter())[f"{shape.name}: {kind}"] += 1
        if not outcome.right:
            # only the site's answer from before a change in flight will do
            if any(shape.name in f.before and cached == f.before[shape.name] for f in flights):
                self.stale_in_flight += 1
            else:
                self.wrong.append(outcome)
        in_flight = bool(flights)
        if (outcome.local and not in_flight
                and not shape.touches <= (fields_before | fields_after)
                and not isinstance(cached, tuple)):
            self.uncached_local.append(outcome)
        if shape.must_be_local:
            if outcome.fully_local:
                self.unaffected_local[self.step] += 1
            else:
                self.not_local.append(outcome)
        return outcome


async def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.05, lambda: None)


def _post(url: str) -> dict:
    request = urllib.request.Request(url, method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def _run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(list(argv))
    return code, out.getvalue()


# -- the test ----------------------------------------------------------------------


class LiveSchemaMixin:
    """The test; subclasses say which store."""

    timeout = 180

    async def store_url(self) -> str:
        raise NotImplementedError

    def write_schema(self, **stage: bool) -> None:
        with open(self.schema_path, "w") as fh:
            yaml.safe_dump(file_schema(**stage), fh, sort_keys=True)

    async def _start(self) -> None:
        self.site = await start_emulator(Schema.from_dict(SITE, source="<live test site>"),
                                         scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), page_size=4)
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(seed_items())
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.base = base
        self.schema_path = os.path.join(base, "schema.yml")
        self.rules_path = os.path.join(base, "schema.rules")
        self.stage = dict(description=False, tank_name=True, sequence=False, human_user=True)
        self.write_schema(**self.stage)
        with open(self.rules_path, "w") as fh:
            fh.write(RULES)
        self.daemon = await start_daemon(
            Schema.load(self.schema_path), self.site.url, await self.store_url(),
            settings={"schema": self.schema_path, "schema_rules": self.rules_path},
        )
        self.addCleanup(lambda: defer.ensureDeferred(self.daemon.stop()))
        self.keeper = self.daemon.service.keeper
        # small scan pages: a rescan yields to the reader between them
        self.daemon.service.scanner.page_size = 4
        self.sg = client(self.daemon.url, *USER_SCRIPT)
        self.direct = client(self.site.url, *USER_SCRIPT)
        self.addCleanup(self.sg.close)
        self.addCleanup(self.direct.close)
        # the script's first read passes through and vouches for it
        await deferToThread(self.sg.find_one, "Project", [])

    async def settle(self, what: str) -> None:
        """Every field of the schema served (scans done)."""
        await wait_for(lambda: not self.daemon.cache.status()["loading"], f"{what}: fields loaded", 30)

    async def keeper_applied(self, before: int, what: str) -> None:
        await wait_for(lambda: self.keeper.changes_applied > before, f"{what}: the keeper to apply it", 15)

    async def storage(self) -> dict:
        return await self.daemon.store.describe_storage()

    def assertLocalRight(self, outcome: Outcome) -> None:
        self.assertTrue(outcome.right, outcome.describe())
        self.assertTrue(outcome.fully_local, outcome.describe())

    def assertPassedRight(self, outcome: Outcome) -> None:
        self.assertTrue(outcome.right, outcome.describe())
        self.assertTrue(outcome.fully_passed, outcome.describe())

    def test_reads_stay_right_while_the_schema_changes(self):
        return defer.ensureDeferred(self._test())

    async def _test(self) -> None:
        began = time.monotonic()
        await self._start()
        keeper, cache = self.keeper, self.daemon.cache
        schema = keeper.schema
        self.assertNotIn("description", schema["Shot"].fields)
        self.assertIn("tank_name", schema["Shot"].fields)
        self.assertIn("sg_take", schema["Shot"].fields)  # by the rule
        self.assertNotIn("sg_secret", schema["Shot"].fields)  # excluded
        self.assertNotIn("Sequence", schema)
        self.assertEqual(cache.status()["loading"], {})

        reader = LiveReader(self.daemon, self.sg, self.direct)
        self.reader = reader
        reader.start()
        self.addCleanup(lambda: defer.ensureDeferred(reader.stop()))
        await reader.rounds_after(2)
        self.assertLocalRight(await reader.probe("shot take"))
        self.assertLocalRight(await reader.probe("human user"))
        self.assertPassedRight(await reader.probe("shot description"))
        self.assertPassedRight(await reader.probe("sequence"))

        # (1) a field added to the file, reloaded through the admin listener
        reader.step = "1 add field (reload)"
        self.stage["description"] = True
        self.write_schema(**self.stage)
        report = await deferToThread(_post, admin_url(self.daemon) + "/schema/reload")
        self.assertTrue(report["applied"])
        self.assertEqual(report["diff"]["added_fields"], ["Shot.description"])
        self.assertEqual(report["rescan"], ["Shot"])
        self.assertTrue(report["site_known"])
        self.assertIn("description", (await self.storage())["Shot"]["columns"])
        self.assertTrue((await reader.probe("shot description")).right)
        await self.settle("step 1")
        self.assertLocalRight(await reader.probe("shot description"))
        # (`shot all` asks for sg_new too, which the site lacks until step 7:
        # it passes through until then)
        self.assertPassedRight(await reader.probe("shot all"))
        await reader.rounds_after(2)

        # (2) a field removed from the file, reloaded with `sgcache schema reload`
        reader.step = "2 remove field (reload)"
        self.stage["tank_name"] = False
        self.write_schema(**self.stage)
        code, out = await deferToThread(_run_cli, "schema", "reload", "--admin", admin_url(self.daemon))
        self.assertEqual(code, 0, out)
        self.assertIn("remove field Shot.tank_name", out)
        # passed through at once, storage gone at once
        self.assertPassedRight(await reader.probe("shot tank"))
        self.assertNotIn("tank_name", (await self.storage())["Shot"]["columns"])
        self.assertNotIn("tank_name", keeper.schema["Shot"].fields)
        await self.settle("step 2")
        self.assertPassedRight(await reader.probe("shot tank"))
        self.assertLocalRight(await reader.probe("shot description"))
        await reader.rounds_after(2)

        # (3) a data type changed on the site (text -> number, converted);
        # the keeper is told directly
        reader.step = "3 retype on the site (check_site)"
        flight = reader.in_flight("Shot.sg_take")
        self.emulator.change_field_type("Shot", "sg_take", "number", convert="int")
        change = await keeper.check_site("test")
        reader.landed(flight)
        self.assertEqual(change.changed_types, ["Shot.sg_take: text -> number"])
        self.assertEqual(keeper.schema["Shot"].fields["sg_take"].data_type, "number")
        # never the old (text) value from here on: passed through until loaded
        outcome = await reader.probe("shot take")
        self.assertTrue(outcome.right, outcome.describe())
        self.assertFalse(any(isinstance(e.get("sg_take"), str) for e in outcome.cached), outcome.describe())
        await self.settle("step 3")
        outcome = await reader.probe("shot take")
        self.assertLocalRight(outcome)
        self.assertTrue(all(isinstance(e["sg_take"], int) for e in outcome.cached), outcome.describe())
        self.assertLocalRight(await reader.probe("shot cut"))
        await reader.rounds_after(2)

        # (4) a type added to the file, reloaded by the keeper itself
        reader.step = "4 add type (reload)"
        self.stage["sequence"] = True
        self.write_schema(**self.stage)
        # a plan first (the admin listener's GET): it says so, changes nothing
        plan = await deferToThread(_get, admin_url(self.daemon) + "/schema/plan")
        self.assertFalse(plan["applied"])
        self.assertEqual(plan["diff"]["added_types"], ["Sequence"])
        self.assertNotIn("Sequence", keeper.schema)
        self.assertNotIn("Sequence", await self.storage())
        report = await keeper.reload("test")
        self.assertEqual(report["diff"]["added_types"], ["Sequence"])
        self.assertIn("Sequence", await self.storage())
        self.assertTrue((await reader.probe("sequence")).right)
        await self.settle("step 4")
        self.assertLocalRight(await reader.probe("sequence"))
        await reader.rounds_after(2)

        # (5) a type removed from the file, reloaded through the admin listener
        reader.step = "5 remove type (reload)"
        self.stage["human_user"] = False
        self.write_schema(**self.stage)
        report = await deferToThread(_post, admin_url(self.daemon) + "/schema/reload")
        self.assertEqual(report["diff"]["removed_types"], ["HumanUser"])
        self.assertPassedRight(await reader.probe("human user"))
        self.assertNotIn("HumanUser", await self.storage())
        await reader.rounds_after(2)

        # (6) a field deleted on the site: its event, polled, then the
        # keeper's own delayed check (end to end)
        reader.step = "6 delete field on the site (event)"
        applied = keeper.changes_applied
        flight = reader.in_flight("Shot.sg_status")
        self.emulator.delete_field("Shot", "sg_status")
        await self.daemon.service.poller.poll()
        self.assertGreaterEqual(self.daemon.service.poller.counters["schema_changes"], 1)
        await self.keeper_applied(applied, "step 6")
        reader.landed(flight)
        self.assertIn("Shot.sg_status", keeper.last_change["changes"][0])
        self.assertNotIn("sg_status", keeper.schema["Shot"].fields)
        self.assertNotIn("sg_status", (await self.storage())["Shot"]["columns"])
        self.assertPassedRight(await reader.probe("shot status"))
        self.assertTrue((await reader.probe("shot all")).right)
        await self.settle("step 6")
        self.assertLocalRight(await reader.probe("shot take"))
        await reader.rounds_after(2)

        # (7) a field created on the site under `+ Shot.sg_*`, given values
        # at once: cached without a reload, served once loaded
        reader.step = "7 create field on the site (event)"
        applied = keeper.changes_applied
        self.assertEqual(self.emulator.create_field("Shot", "sg_new", "text"), "sg_new")
        for i in (2, 5, 9):
            self.emulator.update("Shot", i, {"sg_new": f"new {i}"})
        self.assertPassedRight(await reader.probe("shot new"))
        await self.daemon.service.poller.poll()
        await self.keeper_applied(applied, "step 7")
        self.assertEqual(keeper.schema["Shot"].fields["sg_new"].data_type, "text")
        self.assertIn("Shot.sg_new", keeper.resolution.from_rules)
        self.assertTrue((await reader.probe("shot new")).right)
        await self.settle("step 7")
        outcome = await reader.probe("shot new")
        self.assertLocalRight(outcome)
        self.assertEqual(sorted(e["sg_new"] for e in outcome.cached), ["new 2", "new 5", "new 9"])
        self.assertLocalRight(await reader.probe("shot final"))
        await reader.rounds_after(2)
        reader.step = "end"
        await reader.rounds_after(1)
        await reader.stop()

        # -- the reader's verdict ------------------------------------------------
        self.assertEqual(reader.errors, [])
        for found, what in ((reader.wrong, "wrong answers"),
                            (reader.uncached_local, "local answers touching fields not cached"),
                            (reader.not_local, "reads of unaffected types not answered locally")):
            if found:
                self.fail(f"{len(found)} {what}:\n" + "\n".join(o.describe() for o in found[:5]))
        steps = [s for s in reader.by_step if s[0].isdigit()]
        self.assertEqual(len(steps), 7, steps)
        for step in ["start", *steps, "end"]:
            self.assertGreater(reader.unaffected_local[step], 0, f"no local read of Asset/Project in {step}")
        # the changing shapes were really served locally and passed through
        seen = Counter()
        for counts in reader.by_step.values():
            seen.update(counts)
        for name in ("shot description", "shot take", "sequence", "shot new", "shot final"):
            self.assertGreater(seen[f"{name}: local"], 0, name)
        for name in ("shot tank", "shot status", "shot secret", "human user"):
            self.assertGreater(seen[f"{name}: passed"], 0, name)

        # -- the schema and the store at the end ---------------------------------
        final = keeper.schema
        self.assertEqual(recorded_view(final), FINAL)
        # ... which is what the final file and rules give on the final site
        site = Schema.from_schema_read(self.emulator.schema_read(), None, source="the site")
        expected = resolve(Schema.load(self.schema_path), load_rules(self.rules_path), site).schema
        self.assertEqual(recorded_view(expected), FINAL)
        self.assertEqual(recorded_view(await self.daemon.store.recorded_schema()), FINAL)
        states = await self.daemon.store.field_states()
        self.assertEqual({t: set(f) for t, f in states.items()}, {t: set(f) for t, (_, f) in FINAL.items()})
        self.assertEqual({s for fields in states.values() for s in fields.values()}, {layout.FIELD_READY})

        fresh = open_store(await self.fresh_store_url(), reactor)
        await fresh.open()
        try:
            await fresh.sync_schema(final)
            self.assertEqual(await self.storage(), await fresh.describe_storage())
            self.assertEqual(recorded_view(await fresh.recorded_schema()), FINAL)
        finally:
            await fresh.close()

        self.summary = {
            "reads": reader.reads,
            "rounds": reader.rounds,
            "stale_in_flight": reader.stale_in_flight,
            "unaffected_local": dict(reader.unaffected_local),
            "read.local": cache.counters["read.local"],
            "passthrough_reasons": dict(cache.passthrough_reasons),
            "seconds": round(time.monotonic() - began, 1),
        }
        print(f"\n{type(self).__name__}: {json.dumps(self.summary, sort_keys=True)}")


class SQLiteLiveSchemaTests(LiveSchemaMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"

    async def fresh_store_url(self) -> str:
        return await self.store_url()


class PostgresLiveSchemaTests(LiveSchemaMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)

    async def fresh_store_url(self) -> str:
        return await fresh_postgres_url(self)
