"""Shadow checks (``--shadow-rate``): local answers asked again of the site
in the background. A row corrupted in the store on purpose is found,
reported once (one error line, one row with a reproducer), listed by
``sgcache shadow report``; a difference that is only lag (a write at the
site the cache has not applied yet) is not reported; with
``--shadow-action passthrough`` the shape passes through until ``sgcache
shadow clear``. The real client, through a running daemon, in front of the
emulator; both stores."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.store import layout
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url
from sgcache.web.shadow import ShadowChecks, canonical, first_difference, orders_nulls, shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCHEMA = Schema.from_dict({"entities": {"Shot": {"fields": {"code": "text", "sg_cut_in": "number"}}}})
SHOTS = [{"type": "Shot", "id": n, "fields": {"code": f"sh{n:03d}", "sg_cut_in": n}} for n in range(1, 11)]
SCRIPT = ("pipeline", "pipeline-key")


def sgcache_cli(*args: str) -> defer.Deferred:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SGCACHE_")}
    environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
    return getProcessOutputAndValue(sys.executable, ["-m", "sgcache.admin.cli", *args], env=environ, path=ROOT)


class ShadowMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, SCRIPT]))
        self.addCleanup(self.site.stop)
        self.site.emulator.seed(SHOTS)
        self.db = await self.store_url()
        self.errors: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_level") is not None and event["log_level"].name == "error":
                self.errors.append(str(event.get("log_format")))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def start(self, **settings: Any) -> None:
        self.daemon = await start_daemon(SCHEMA, self.site.url, self.db,
                                         settings={"shadow_rate": 1.0, **settings})
        self.addCleanup(self.daemon.stop)
        self.shadow = self.daemon.service.shadow
        self.sg = client(self.daemon.url, *SCRIPT)
        self.direct = client(self.site.url, *SCRIPT)
        await deferToThread(self.sg.find_one, "Shot", [])  # the site vouches for the script

    async def find(self) -> list[dict]:
        return await deferToThread(self.sg.find, "Shot", [["sg_cut_in", "less_than", 5]], ["code"])

    async def settled(self) -> None:
        """Until no shadow check is open."""
        deadline = reactor.seconds() + 60
        while self.shadow.pending:
            self.assertLess(reactor.seconds(), deadline, "a shadow check did not end")
            await task.deferLater(reactor, 0.05, lambda: None)

    async def corrupt(self) -> None:
        """Shot 2's code changed in the store behind the cache's back."""
        store = self.daemon.store
        sql = (f"UPDATE {layout.entity_table('Shot')} SET {layout.scalar_column('code')} = 'CORRUPT' "
               "WHERE id = 2")

        async def work(cur: Any) -> None:
            await cur.execute(sql)

        if store.dialect == "sqlite":
            store._transaction(work)
        else:
            await store._transaction("corrupt", work)
        self.daemon.cache.answers.clear()

    def site_reads(self) -> int:
        return self.site.emulator.counters().get("read", 0)

    async def test_a_corrupted_row_is_found_and_reported_once(self):
        await self.start()
        await self.find()
        await self.settled()
        self.assertGreaterEqual(self.shadow.figures["agreed"], 1)
        self.assertEqual(self.shadow.figures["mismatched"], 0)
        await self.corrupt()
        for _ in range(3):
            await self.find()
            await self.settled()
        self.assertEqual(self.shadow.figures["mismatched"], 3)
        self.assertEqual(len(self.shadow.confirmed), 1)
        shadow_errors = [e for e in self.errors if "shadow check" in e]
        self.assertEqual(len(shadow_errors), 1, self.errors)
        rows = await self.daemon.store.shadow_mismatches()
        self.assertEqual(len(rows), 1)
        row = rows[0]
        self.assertEqual(row["count"], 3)
        self.assertIn("Shot | filters: sg_cut_in | fields: code", row["shape"])
        self.assertIn("CORRUPT", row["difference"])
        self.assertIn("entities[1].code", row["difference"])
        # the reproducer is the read's arguments
        self.assertIn('"less_than"', row["args"])
        status = (await deferToThread(self.sg.info))["sgcache"]["shadow"]
        self.assertEqual(status["mismatched"], 3)
        # the CLI lists it from the store
        if self.daemon.store.dialect == "sqlite":
            out, err, code = await sgcache_cli("shadow", "report", "--db", self.db)
            self.assertEqual(code, 0, err)
            self.assertIn(b"CORRUPT", out)
            self.assertIn(b"3 time(s)", out)
        # the metrics count it
        metrics, _ = self.daemon.service.metrics.exposition(None)
        self.assertIn(b'sgcache_shadow_checks_total{outcome="mismatched"} 3.0', metrics)

    async def test_a_difference_that_is_only_lag_is_not_reported(self):
        await self.start()
        await deferToThread(self.direct.update, "Shot", 2, {"code": "renamed at the site"})
        # the cache has not polled: its answer is the old one
        self.assertEqual((await self.find())[1]["code"], "sh002")
        # the check waits for the store to hold the site's newest event
        await task.deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(self.shadow.pending, 1)
        await self.daemon.service.poller.poll()
        await self.settled()
        self.assertEqual(self.shadow.figures["lagged"], 1)
        self.assertEqual(self.shadow.figures["mismatched"], 0)
        self.assertEqual(await self.daemon.store.shadow_mismatches(), [])
        self.assertEqual([e for e in self.errors if "shadow check" in e], [])

    async def test_passthrough_action_until_clear(self):
        await self.start(shadow_action="passthrough")
        await self.corrupt()
        await self.find()
        await self.settled()
        self.assertEqual(self.shadow.figures["mismatched"], 1)
        # reads of that shape now go to the site, and get its answer
        before = self.site_reads()
        self.assertEqual((await self.find())[1]["code"], "sh002")
        self.assertEqual(self.site_reads(), before + 1)
        self.assertEqual(
            self.daemon.cache.passthrough_reasons["read shape the site disagreed with (shadow check)"], 1)
        # other shapes stay local
        before = self.site_reads()
        await deferToThread(self.sg.find, "Shot", [], ["sg_cut_in"])
        await self.settled()
        self.assertEqual(self.shadow.figures["agreed"], 1)
        self.assertEqual(self.site_reads(), before + 1)  # the shadow check's own read
        out, err, code = await sgcache_cli("shadow", "clear", "--admin", admin_url(self.daemon))
        self.assertEqual(code, 0, err)
        self.assertIn(b"1 shape(s) served locally again, 1 row(s) removed", out)
        self.assertEqual(await self.daemon.store.shadow_mismatches(), [])
        # served locally again (and found again: the row is still corrupt)
        await self.find()
        await self.settled()
        self.assertEqual(self.shadow.figures["mismatched"], 2)

    async def test_a_local_summarize_is_checked_too(self):
        await self.start()
        await self.corrupt()
        summary = await deferToThread(self.sg.summarize, "Shot", [], [{"field": "sg_cut_in", "type": "sum"}],
                                      grouping=[{"field": "code", "type": "exact", "direction": "asc"}])
        self.assertEqual(self.daemon.cache.counters["summarize.local"], 1)
        self.assertIn("CORRUPT", [g["group_name"] for g in summary["groups"]])
        await self.settled()
        self.assertEqual(self.shadow.figures["mismatched"], 1)
        [row] = await self.daemon.store.shadow_mismatches()
        self.assertEqual(row["shape"], "summarize Shot | fields: code, sg_cut_in")
        self.assertEqual(row["difference"], 'groups[0].group_name: local "CORRUPT", site "sh001"')

    async def test_answers_that_show_where_nulls_sort_are_counted_apart(self):
        await self.start()
        await deferToThread(self.sg.create, "Shot", {"code": "no cut in"})
        await self.daemon.service.poller.poll()
        found = await deferToThread(self.sg.find, "Shot", [], ["code", "sg_cut_in"],
                                    order=[{"field_name": "sg_cut_in", "direction": "asc"}])
        self.assertIn(None, [e["sg_cut_in"] for e in found])
        await self.settled()
        self.assertEqual(self.shadow.figures["agreed"], 1)
        self.assertEqual(self.shadow.null_order, {"agreed": 1, "mismatched": 0})

    async def test_off_at_rate_zero(self):
        await self.start(shadow_rate=0.0)
        before = self.site_reads()
        for _ in range(5):
            await self.find()
        self.assertEqual(self.site_reads(), before)
        self.assertEqual(self.shadow.figures["sampled"], 0)


class SQLiteShadowTests(ShadowMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresShadowTests(ShadowMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)


class UnitTests(unittest.TestCase):
    def test_shape_names_no_value(self):
        args = {"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
            {"path": "code", "relation": "is", "values": ["secret"]}]},
            "return_fields": ["sg_cut_in", "code"], "sorts": [{"field_name": "id", "direction": "asc"}]}
        self.assertEqual(shape(args), "Shot | filters: code | sort: id | fields: code, sg_cut_in")

    def test_canonical_ignores_key_order_only(self):
        self.assertEqual(canonical({"a": 1, "b": [1, 2]}), canonical({"b": [1, 2], "a": 1}))
        self.assertNotEqual(canonical([1, 2]), canonical([2, 1]))
        self.assertNotEqual(canonical({"a": 1}), canonical({"a": 1.0}))

    def test_first_difference(self):
        local = {"entities": [{"id": 1, "code": "a"}, {"id": 2, "code": "x"}]}
        site = {"entities": [{"id": 1, "code": "a"}, {"id": 2, "code": "b"}]}
        self.assertEqual(first_difference(local, site), 'entities[1].code: local "x", site "b"')
        self.assertIn("1 items locally, 2 at the site",
                      first_difference({"entities": [1]}, {"entities": [1, 2]}))
        self.assertIn("only in the site's answer", first_difference({}, {"paging_info": json.dumps(1)}))

    def test_reads_sorted_on_a_nullable_field_are_watched_first(self):
        draws = iter([0.05, 0.05, 0.5])
        checks = ShadowChecks(task.Clock(), None, None, None, None, rate=0.01, draw=lambda: next(draws))
        checks.sample({"type": "Shot", "sorts": [{"field_name": "code", "direction": "asc"}]}, b"{}")
        checks.sample({"type": "Shot", "sorts": [{"field_name": "id", "direction": "asc"}]}, b"{}")
        checks.sample({"type": "Shot", "sorts": [{"field_name": "code", "direction": "asc"}]}, b"{}")
        self.assertEqual(checks.figures["sampled"], 1)  # 0.05 < 0.01 x 10, not < 0.01
        args = {"sorts": [{"field_name": "sg_cut_in"}]}
        self.assertTrue(orders_nulls(args, {"entities": [{"sg_cut_in": 1}, {"sg_cut_in": None}]}))
        self.assertFalse(orders_nulls(args, {"entities": [{"sg_cut_in": 1}, {"sg_cut_in": 2}]}))
        self.assertFalse(orders_nulls(args, {"entities": [{"code": None}, {"code": "a"}]}))

    def test_the_canonical_form_of_a_local_answer_is_kept_bounded(self):
        import sgcache.web.shadow as shadow_module

        decoded = []
        loads = json.loads
        self.patch(shadow_module.json, "loads", lambda text: decoded.append(text) or loads(text))
        checks = ShadowChecks(task.Clock(), None, None, None, None)
        first = json.dumps({"results": {"b": 1, "a": [1.0, None]}}).encode()
        self.assertEqual(checks._canonical_local(first), canonical({"a": [1.0, None], "b": 1}))
        # the same bytes again: the kept form, not decoded again
        self.assertEqual(checks._canonical_local(first), canonical({"a": [1.0, None], "b": 1}))
        self.assertEqual(decoded, [first])
        # bounded: past LOCALS_CHARS the least recently checked goes
        self.patch(shadow_module, "LOCALS_CHARS", 3 * (len(first) + 30))
        bodies = [json.dumps({"results": {"n": i, "a": [1.0, None]}}).encode() for i in range(5)]
        for body in bodies:
            checks._canonical_local(body)
        self.assertNotIn(first, checks._locals)
        self.assertIn(bodies[-1], checks._locals)
        self.assertLessEqual(checks._locals_chars, shadow_module.LOCALS_CHARS)
        self.assertEqual(checks._locals_chars, sum(len(b) + len(t) for b, t in checks._locals.items()))
