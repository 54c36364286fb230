"""`summarize` answered from the store (`sgcache.read.summarize`).

* Differential: random summaries, groupings and filters over the random
  data of tests/test_differential.py, asked through a daemon and straight
  to the emulator with the real `shotgun_api3` client; the answers must be
  equal, and most must be answered locally (the emulator's `summarize`
  counter did not move; the daemon's `summaries_local` grew as much). On
  SQLite with the site in UTC and in Australia/Lord_Howe (a half-hour
  daylight-saving shift: date_time periods fall back to finer keys), and on
  PostgreSQL in Pacific/Auckland.
* What must pass through does, with the site's answer or fault.
* The planner's decisions and reasons, without a daemon.
* End to end: the client's `summarize()` against a daemon, on both stores.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections import Counter
from typing import Any

import shotgun_api3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.config import parse_timezone
from sgcache.read.planner import Catalog, PassThrough
from sgcache.read.summarize import plan_summary
from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url
from tests.test_differential import (
    QUERY_TYPES,
    USER_SCRIPT,
    Pools,
    SiteAndDaemon,
    filter_group,
    paths,
)

EXAMPLES = int(os.environ.get("SGCACHE_SUMMARIZE_EXAMPLES", "120"))
#: the least share of summaries the cache must answer itself
MIN_LOCAL_SHARE = 0.5

NUMBERS = {"number", "float", "percent", "duration", "timecode", "currency"}
DATES = {"date", "date_time"}


def _kinds(dtype: str) -> list[str]:
    """Summary types the engine accepts for a data type (weighted to what
    the cache answers), plus, rarely, ones it does not."""
    kinds = ["record_count", "count", "count"]
    if dtype in NUMBERS:
        kinds += ["sum", "sum", "average", "average", "maximum", "minimum"]
    if dtype in DATES:
        kinds += ["maximum", "minimum", "earliest", "latest", "earliest", "latest"]
    if dtype == "checkbox":
        kinds += ["checked", "checked", "unchecked", "unchecked"]
    return kinds


def _weighted(found: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Paths through or to the bookkeeping links left out (created_by,
    updated_by: ApiUser links, a type this schema lacks, so they pass
    through), the type's own fields thrice as likely."""
    kept = [(p, s) for p, s in found if not {"created_by", "updated_by"} & set(p.split("."))]
    return [(p, s) for p, s in kept for _ in range(1 if "." in p else 3)]


#: single-entity paths, one or two hops deep (the shapes the cache answers)
ENTITY_PATHS = {t: _weighted(paths(t, depth=2, through_multi=False)) for t in set(QUERY_TYPES)}
#: every path, multi-entity hops included (passes through: the engine faults)
ALL_PATHS = {t: _weighted(paths(t, depth=1)) for t in set(QUERY_TYPES)}
GROUPABLE = {
    t: [(p, s) for p, s in ENTITY_PATHS[t]
        if s.data_type not in ("multi_entity", "tag_list", "url", "serializable", "image")]
    for t in ENTITY_PATHS
}

OWN_DATES = {t: sorted({(p, s) for p, s in GROUPABLE[t] if "." not in p and s.data_type in DATES})
             for t in GROUPABLE}


def _rarely(draw: Any, n: int) -> bool:
    """True about once in `n` draws (hypothesis favours small integers:
    the rare choice is the last of a list, not the 0 of a range)."""
    return draw(st.sampled_from([False] * (n - 1) + [True]))


@st.composite
def summary_query(draw: Any, pools: Pools) -> dict:
    etype = draw(st.sampled_from(QUERY_TYPES))
    summaries = []
    for _ in range(draw(st.integers(1, 4))):
        pool = ALL_PATHS[etype] if _rarely(draw, 20) else ENTITY_PATHS[etype]
        path, spec = draw(st.sampled_from(pool))
        dtype = "number" if spec.name == "id" else spec.data_type
        if _rarely(draw, 30):
            kind = draw(st.sampled_from(["percentage", "status_percentage", "bogus", "sum", "checked"]))
        else:
            kind = draw(st.sampled_from(_kinds(dtype)))
        summaries.append({"field": path, "type": kind})
    grouping = []
    if draw(st.sampled_from([False, False, True])):
        # a period of one of the type's own dates (created_at at least):
        # the values spread over two years, across daylight-saving changes
        path, spec = draw(st.sampled_from(OWN_DATES[etype]))
        grouping.append({"field": path, "type": draw(st.sampled_from(["day", "week", "month", "year"])),
                         "direction": draw(st.sampled_from(["asc", "desc"]))})
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 2, 0, 3])) - len(grouping)):
        path, spec = draw(st.sampled_from(GROUPABLE[etype]))
        if spec.data_type in DATES and not _rarely(draw, 4):
            kind = draw(st.sampled_from(["day", "week", "month", "year", "exact"]))
        elif _rarely(draw, 30):
            kind = draw(st.sampled_from(["tens", "quarter", "day"]))
        else:
            kind = "exact"
        item = {"field": path, "type": kind, "direction": draw(st.sampled_from(["asc", "desc", "DESC"]))}
        if _rarely(draw, 6):
            del item["direction"]
        grouping.append(item)
    return {
        "type": etype,
        "filters": draw(filter_group(pools, etype)),
        "summaries": summaries,
        "grouping": grouping or None,
        "include_archived_projects": not _rarely(draw, 5),
        "filter_operator": draw(st.sampled_from(["all", "all", "any"])),
    }


def run_summary(sg: shotgun_api3.Shotgun, q: dict) -> Any:
    """One summarize through a client; a fault is a result too."""
    try:
        return sg.summarize(q["type"], q["filters"], q["summaries"], filter_operator=q["filter_operator"],
                            grouping=q["grouping"], include_archived_projects=q["include_archived_projects"])
    except shotgun_api3.Fault as e:
        return ("fault", type(e).__name__, str(e))
    except (IndexError, KeyError, TypeError, ValueError) as e:  # raised by the client itself
        return ("client error", type(e).__name__, str(e))


class SummarizeMixin(SiteAndDaemon):
    def summaries(self) -> int:
        return self.emulator.counters().get("summarize", 0)

    def local_summaries(self) -> int:
        return self.daemon.cache.counters.get("summarize.local", 0)

    async def both(self, q: dict) -> tuple[Any, Any, bool]:
        """(through the cache, straight, answered locally)."""
        before = self.summaries()
        via_cache = await deferToThread(run_summary, self.sg, q)
        local = self.summaries() == before
        direct = await deferToThread(run_summary, self.direct, q)
        return via_cache, direct, local

    def test_random_summaries_match_the_site(self):
        stats: Counter[str] = Counter()
        lock = threading.Lock()
        failures: list[str] = []
        locals_before = self.local_summaries()

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(summary_query(self.pools))
        def check(q: dict) -> None:
            with lock:
                before = self.summaries()
                reasons_before = Counter(self.daemon.cache.passthrough_reasons)
                via_cache = run_summary(self.sg, q)
                local = self.summaries() == before
                direct = run_summary(self.direct, q)
                stats["queries"] += 1
                if isinstance(direct, tuple) and direct[0] == "client error":
                    stats["client errors"] += 1  # never sent
                else:
                    stats["local" if local else "passthrough"] += 1
                if isinstance(direct, tuple):
                    if direct[0] == "fault":
                        stats["faults"] += 1
                elif direct["groups"]:
                    stats["grouped"] += 1
                    if local:
                        for item in q["grouping"] or ():
                            stats[f"local {item['type']} groups"] += 1
                for reason, n in (Counter(self.daemon.cache.passthrough_reasons) - reasons_before).items():
                    stats["reason " + reason] += n
                if via_cache != direct:
                    stats["mismatches"] += 1
                    failures.append(f"{q!r}\n  cache:  {via_cache!r}\n  direct: {direct!r}")
                assert via_cache == direct, f"mismatch for {q!r}"

        d = deferToThread(check)

        def report(result: Any) -> Any:
            summary = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if not k.startswith("reason "))
            print(f"\n[{type(self).__name__}] {summary}")
            for n, reason in sorted(((v, k[7:]) for k, v in stats.items() if k.startswith("reason ")), reverse=True):
                print(f"    passthrough {n:4d}  {reason}")
            if failures:
                print("first mismatch:\n" + failures[0])
            return result

        d.addBoth(report)

        def shares(_: Any) -> None:
            self.assertEqual(stats["mismatches"], 0)
            sent = stats["local"] + stats["passthrough"]
            self.assertGreaterEqual(stats["local"], MIN_LOCAL_SHARE * sent,
                                    f"only {stats['local']} of {sent} answered locally")
            self.assertEqual(self.local_summaries() - locals_before, stats["local"])
            self.assertEqual(self.daemon.cache.counters.get("read.failed", 0), 0)

        d.addCallback(shares)
        return d

    async def assertPassesThrough(self, q: dict, reason: str) -> Any:
        before = Counter(self.daemon.cache.passthrough_reasons)
        via_cache, direct, local = await self.both(q)
        self.assertFalse(local, f"{q!r} was answered locally")
        self.assertEqual(via_cache, direct)
        self.assertIn(reason, Counter(self.daemon.cache.passthrough_reasons) - before)
        return via_cache

    def query(self, **kw: Any) -> dict:
        q = {"type": "Task", "filters": [], "summaries": [{"field": "id", "type": "record_count"}],
             "grouping": None, "include_archived_projects": True, "filter_operator": "all"}
        q.update(kw)
        return q

    async def test_what_is_not_known_passes_through(self):
        # the site answers these (or faults): the client gets its answer
        answer = await self.assertPassesThrough(
            self.query(summaries=[{"field": "id", "type": "bogus"}]), "summary type not answered locally")
        self.assertEqual(answer[0], "fault")
        await self.assertPassesThrough(
            self.query(summaries=[{"field": "sg_status_list", "type": "percentage"}]),
            "summary type not answered locally")
        await self.assertPassesThrough(
            self.query(summaries=[{"field": "content", "type": "sum"}]), "summary type not valid for the field")
        # a filter the planner refuses for a read (Shotgun faults; the
        # emulator answers): the site's answer
        await self.assertPassesThrough(self.query(filters=[["milestone", "is", None]]), "filter the site refuses")
        # Shotgun's rule is not known: the read planner's reason, the site's answer
        await self.assertPassesThrough(
            self.query(type="Shot", filters=[["assets.Asset.code", "is", None]]),
            "null through a multi-entity link")
        await self.assertPassesThrough(
            self.query(type="Shot", summaries=[{"field": "sg_budget", "type": "sum"}]),
            "sum or average of a float field")
        await self.assertPassesThrough(
            self.query(grouping=[{"field": "due_date", "type": "quarter", "direction": "asc"}]),
            "grouping type not answered locally")
        await self.assertPassesThrough(
            self.query(summaries=[{"field": "nope", "type": "count"}]), "summary field not cached")
        self.assertEqual(self.daemon.cache.counters.get("read.failed", 0), 0)

    async def test_grouping_by_entity_is_local_with_the_documented_group_value(self):
        q = self.query(grouping=[{"field": "entity", "type": "exact", "direction": "asc"}])
        via_cache, direct, local = await self.both(q)
        self.assertTrue(local, dict(self.daemon.cache.passthrough_reasons))
        self.assertEqual(via_cache, direct)
        linked = [g["group_value"] for g in via_cache["groups"] if g["group_value"] is not None]
        self.assertTrue(linked)
        # shotgun_api3's documented examples: {'type', 'id', 'name', 'valid': 'valid'}
        self.assertTrue(all(set(v) == {"type", "id", "name", "valid"} and v["valid"] == "valid" for v in linked))

    async def test_a_local_summary_is_counted(self):
        q = self.query(summaries=[{"field": "duration", "type": "sum"}, {"field": "due_date", "type": "latest"}],
                       grouping=[{"field": "sg_status_list", "type": "exact", "direction": "desc"}])
        via_cache, direct, local = await self.both(q)
        self.assertTrue(local, dict(self.daemon.cache.passthrough_reasons))
        self.assertEqual(via_cache, direct)
        self.assertTrue(via_cache["groups"])
        info = await deferToThread(self.sg.info)
        self.assertEqual(info["sgcache"]["summaries_local"], 1)


class SQLiteSummarizeTests(SummarizeMixin, unittest.TestCase):
    timeout = 300

    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class SQLiteHalfHourZoneSummarizeTests(SummarizeMixin, unittest.TestCase):
    timeout = 300
    # +11 on NOW (daylight time), +10:30 otherwise: whole-hour keys first,
    # minute keys where a local midnight falls on a half hour
    TIMEZONE = "Australia/Lord_Howe"

    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"

    async def test_a_local_midnight_on_the_half_hour(self):
        """In June Lord Howe is UTC+10:30: its midnight falls at 13:30 UTC,
        inside one UTC hour. 13:15Z and 13:45Z are two local days, which
        hour keys cannot tell apart: the cache groups by minute instead."""
        for code, due in (("before", "2024-06-15T13:15:00Z"), ("after", "2024-06-15T13:45:00Z"),
                          ("winter", "2024-07-01T02:00:00Z")):
            await deferToThread(self.sg.create, "Shot", {"code": code, "sg_due": due})
        q = self.query(type="Shot", filters=[["code", "in", ["before", "after", "winter"]]],
                       grouping=[{"field": "sg_due", "type": "day", "direction": "asc"}])
        via_cache, direct, local = await self.both(q)
        self.assertTrue(local, dict(self.daemon.cache.passthrough_reasons))
        self.assertEqual(via_cache, direct)
        self.assertEqual([g["group_value"] for g in via_cache["groups"]], ["2024-06-15", "2024-06-16", "2024-07-01"])


class PostgresSummarizeTests(SummarizeMixin, unittest.TestCase):
    timeout = 300
    TIMEZONE = "Pacific/Auckland"

    async def store_url(self) -> str:
        return await fresh_postgres_url(self)


# -- the planner's decisions, without a daemon -------------------------------------

PLAN_SCHEMA = Schema.from_dict({
    "entities": {
        "Project": {"fields": {"name": "text", "archived": "checkbox"}},
        "Shot": {"fields": {
            "code": "text", "image": "image", "sg_cut_in": "number", "sg_budget": "float",
            "sg_due": "date_time", "sg_date": "date", "sg_meta": "serializable", "tag_list": "tag_list",
            "project": {"type": "entity", "entity_types": ["Project"]},
            "assets": {"type": "multi_entity", "entity_types": ["Asset"]},
        }},
        "Asset": {"fields": {"code": "text"}},
    }
})


def _catalog() -> Catalog:
    return Catalog(PLAN_SCHEMA, {e.name: set(e.fields) for e in PLAN_SCHEMA})


class PlanTests(unittest.TestCase):
    def refuse(self, args: Any, phrase: str) -> None:
        with self.assertRaises(PassThrough) as caught:
            plan_summary(args, _catalog(), "sqlite")
        self.assertEqual(caught.exception.phrase, phrase, caught.exception.reason)

    def args(self, summaries: Any = None, grouping: Any = None, **kw: Any) -> dict:
        out = {"type": "Shot", "filters": {"logical_operator": "and", "conditions": []},
               "summaries": summaries if summaries is not None else [{"field": "id", "type": "count"}]}
        if grouping is not None:
            out["grouping"] = grouping
        out.update(kw)
        return out

    def test_refusals(self):
        self.refuse([], "summarize arguments are not a mapping")
        self.refuse(self.args(return_only="active"), "unknown summarize argument")
        self.refuse(self.args(type="Nope"), "type not cached")
        self.refuse(self.args(summaries=[]), "unusual summaries")
        self.refuse(self.args(summaries="id"), "unusual summaries")
        self.refuse(self.args(grouping={"field": "code"}), "unusual grouping")
        self.refuse(self.args(grouping=[{"field": "code", "direction": "up"}]), "unusual grouping")
        for kind in ("percentage", "status_percentage", "status_list", "median"):
            self.refuse(self.args([{"field": "code", "type": kind}]), "summary type not answered locally")
        self.refuse(self.args([{"field": "code", "type": "sum"}]), "summary type not valid for the field")
        self.refuse(self.args([{"field": "sg_budget", "type": "average"}]), "sum or average of a float field")
        self.refuse(self.args([{"field": "image", "type": "count"}]), "summary field of an uncached data type")
        self.refuse(self.args([{"field": "sg_meta", "type": "count"}]),
                    "summary of a field the cache does not summarize")
        self.refuse(self.args([{"field": "assets.Asset.code", "type": "count"}]),
                    "summary or grouping through a multi-entity field")
        self.refuse(self.args([{"field": "nope", "type": "count"}]), "summary field not cached")
        self.refuse(self.args(grouping=[{"field": "code", "type": "tens"}]), "grouping type not answered locally")
        self.refuse(self.args(grouping=[{"field": "code", "type": "day"}]), "grouping type not answered locally")
        self.refuse(self.args(grouping=[{"field": "tag_list", "type": "exact"}]),
                    "grouping by a field the cache does not group")
        self.refuse(self.args(grouping=[{"field": "nope", "type": "exact"}]), "grouping field not cached")
        self.refuse(self.args(filters=[["code", "is", "a", "b"]]), "wrong number of filter values")

    def test_not_ready(self):
        catalog = _catalog()
        catalog.ready["Shot"].discard("sg_cut_in")
        with self.assertRaises(PassThrough) as caught:
            plan_summary(self.args([{"field": "sg_cut_in", "type": "sum"}]), catalog, "sqlite")
        self.assertEqual(caught.exception.phrase, "summary field not ready")

    def test_accepted(self):
        plan = plan_summary(self.args(
            [{"field": "sg_cut_in", "type": "sum"}, {"field": "sg_due", "type": "latest"},
             {"field": "tag_list", "type": "count"}, {"field": "assets", "type": "count"},
             {"field": "project.Project.archived", "type": "checked"}],
            [{"field": "sg_due", "type": "week", "direction": "desc"}, {"field": "code"}]), _catalog(), "postgresql")
        self.assertIn("GROUP BY 1, 2", plan.sql)
        self.assertIn('COLLATE "C"', plan.sql)
        self.assertEqual(plan.types, {"Shot", "Project", "Asset"})

    def test_precision_follows_the_time_zone(self):
        args = self.args(grouping=[{"field": "sg_due", "type": "day"}])
        now = lambda: datetime.datetime(2024, 1, 1)  # noqa: E731
        for zone, chars in (("UTC", 10), ("Pacific/Auckland", 13), ("Asia/Kolkata", 16), ("+05:45", 16)):
            plan = plan_summary(args, _catalog(), "sqlite", now=now, tz=parse_timezone(zone))
            self.assertEqual(plan.precision, chars, zone)
            self.assertIn(f'substr(m."sg_due", 1, {chars})', plan.sql)


# -- end to end --------------------------------------------------------------------

E2E_SCHEMA = Schema.load(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                      "schema", "basic.yml"))


def e2e_items() -> list[dict]:
    project = {"type": "Project", "id": 1}
    items = [{"type": "Project", "id": 1, "fields": {"name": "Demo", "archived": False}}]
    items += [{"type": "Sequence", "id": 10 + i, "fields": {"code": f"SQ{i:02d}", "project": project}}
              for i in range(3)]
    for i in range(30):
        items.append({"type": "Shot", "id": 200 + i, "fields": {
            "code": f"sh{i:03d}", "project": project,
            "sg_sequence": {"type": "Sequence", "id": 10 + i % 3} if i % 5 else None,
            "sg_status_list": ["ip", "fin", "wtg", None][i % 4],
            "sg_cut_in": 1000 + (i * 7) % 13 if i % 6 else None,
        }})
    for i in range(40):
        items.append({"type": "Task", "id": 500 + i, "fields": {
            "content": f"task {i}", "project": project, "entity": {"type": "Shot", "id": 200 + i % 30},
            "due_date": f"2026-0{1 + i % 9}-1{i % 10}", "milestone": i % 3 == 0,
        }})
    return items


class EndToEndMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.site = await start_emulator(E2E_SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]))
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(e2e_items())
        self.daemon = await start_daemon(E2E_SCHEMA, self.site.url, await self.store_url())
        self.addCleanup(lambda: defer.ensureDeferred(self.daemon.stop()))
        self.sg = client(self.daemon.url, *USER_SCRIPT)
        self.direct = client(self.site.url, *USER_SCRIPT)
        self.addCleanup(self.sg.close)
        self.addCleanup(self.direct.close)
        await deferToThread(self.sg.find_one, "Project", [])  # vouches for the script

    async def test_client_summarize(self):
        """The client's own summarize(), as its docs show it: totals,
        then grouped by a deep field and by month, nested."""
        calls = [
            (("Shot", [["project", "is", {"type": "Project", "id": 1}]], [{"field": "id", "type": "count"}]), {}),
            (("Task", [["entity.Shot.sg_status_list", "is_not", "fin"]],
              [{"field": "id", "type": "count"}, {"field": "due_date", "type": "latest"},
               {"field": "milestone", "type": "checked"}]),
             {"grouping": [{"field": "entity.Shot.sg_sequence.Sequence.code", "type": "exact", "direction": "desc"},
                           {"field": "due_date", "type": "month", "direction": "asc"}]}),
            (("Shot", [], [{"field": "sg_cut_in", "type": "average"}, {"field": "sg_cut_in", "type": "sum"}]),
             {"filter_operator": "any", "include_archived_projects": False}),
        ]
        for args, kwargs in calls:
            before = self.emulator.counters().get("summarize", 0)
            via_cache = await deferToThread(self.sg.summarize, *args, **kwargs)
            self.assertEqual(self.emulator.counters().get("summarize", 0), before,
                             f"{args} reached the site: {dict(self.daemon.cache.passthrough_reasons)}")
            direct = await deferToThread(self.direct.summarize, *args, **kwargs)
            self.assertEqual(via_cache, direct)
        self.assertEqual(via_cache["summaries"], {"sg_cut_in": 25 * 1000 + sum(
            (i * 7) % 13 for i in range(30) if i % 6)})
        # a summary type the cache does not answer: the site's answer
        with self.assertRaises(shotgun_api3.Fault):
            await deferToThread(self.sg.summarize, "Shot", [], [{"field": "sg_status_list", "type": "percentage"}])

    async def test_a_repeated_summarize_is_reused_until_the_store_changes(self):
        args = ("Shot", [], [{"field": "sg_cut_in", "type": "sum"}, {"field": "id", "type": "count"}])
        kwargs = {"grouping": [{"field": "sg_status_list", "type": "exact", "direction": "asc"}]}

        async def summarize() -> tuple[Any, int]:
            got = await deferToThread(self.sg.summarize, *args, **kwargs)
            return got, self.daemon.cache.answers.hits

        first, hits = await summarize()
        again, hits_again = await summarize()
        self.assertEqual(again, first)
        self.assertEqual(hits_again, hits + 1)  # the kept answer
        self.assertEqual(again, await deferToThread(self.direct.summarize, *args, **kwargs))
        # a change at the site, applied: the next answer is made again, and new
        shot = await deferToThread(self.direct.find_one, "Shot", [["sg_cut_in", "is_not", None]], ["sg_cut_in"])
        await deferToThread(self.direct.update, "Shot", shot["id"], {"sg_cut_in": shot["sg_cut_in"] + 1000})
        await self.daemon.service.poller.poll()
        changed, hits_changed = await summarize()
        self.assertEqual(hits_changed, hits_again)
        self.assertNotEqual(changed, first)
        self.assertEqual(changed, await deferToThread(self.direct.summarize, *args, **kwargs))
        # a relative date filter reads the clock: never kept
        dated = ("Shot", [["created_at", "in_last", 7, "DAY"]], [{"field": "id", "type": "count"}])
        await deferToThread(self.sg.summarize, *dated)
        before, local = self.daemon.cache.answers.hits, self.daemon.cache.counters["summarize.local"]
        await deferToThread(self.sg.summarize, *dated)
        self.assertEqual(self.daemon.cache.counters["summarize.local"], local + 1)  # answered here
        self.assertEqual(self.daemon.cache.answers.hits, before)  # made again


class SQLiteEndToEndTests(EndToEndMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresEndToEndTests(EndToEndMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
