"""The read planner: which shapes pass through and why (stable reasons),
what the accepted shapes compile to, the run-time guards of the reader, and
(PostgreSQL) that the main query shapes can use an index.

The exactness of the answers is proven by tests/test_differential.py; these
tests pin down the decisions.
"""

from __future__ import annotations

import datetime
import itertools
import os
import re

import psycopg2
from twisted.internet import defer
from twisted.trial import unittest

from sgcache.schema.changes import EntityChange
from sgcache.read.planner import Catalog, PassThrough, PlanCache, plan_read
from sgcache.read.reader import execute
from sgcache.schema import Schema
from sgcache.store import layout, open_store
from sgcache.store.pgadapter import to_pyformat
from sgcache.store.prepared import SessionStatements, statement_key
from sgcache.testing.pg import fresh_postgres_url

SCHEMA = Schema.from_dict({
    "entities": {
        "Project": {"fields": {"name": "text", "archived": "checkbox"}},
        "Sequence": {"fields": {"code": "text", "project": {"type": "entity", "entity_types": ["Project"]}}},
        "HumanUser": {"fields": {"name": "text", "login": "text"}},
        "Group": {"fields": {"code": "text"}},
        "Asset": {"fields": {"code": "text", "tag_list": "tag_list"}},
        "Shot": {"fields": {
            "code": "text",
            "image": "image",
            "sg_cut_in": "number",
            "tag_list": "tag_list",
            "sg_due": "date_time",
            "sg_date": "date",
            "project": {"type": "entity", "entity_types": ["Project"]},
            "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
            "assets": {"type": "multi_entity", "entity_types": ["Asset"]},
        }},
        "Task": {"fields": {
            "content": "text",
            "entity": {"type": "entity", "entity_types": ["Shot", "Asset"]},
            "task_assignees": {"type": "multi_entity", "entity_types": ["Group", "HumanUser"]},
        }},
    }
})


def ready_catalog(except_fields: tuple[str, ...] = (), except_types: tuple[str, ...] = ()) -> Catalog:
    ready = {}
    for entity in SCHEMA:
        if entity.name in except_types:
            continue
        ready[entity.name] = {
            f for f in entity.fields
            if f"{entity.name}.{f}" not in except_fields and SCHEMA.get_field(entity.name, f).data_type != "image"
        }
    return Catalog(SCHEMA, ready)


NOW = datetime.datetime(2024, 3, 31, 12, 0, 0, tzinfo=datetime.timezone.utc)


def plan(args: dict, catalog: Catalog | None = None, dialect: str = "sqlite"):
    return plan_read(args, catalog or ready_catalog(), dialect, now=lambda: NOW)


def read(etype: str, filters: list | None = None, fields: list | None = None, **extra) -> dict:
    args = {"type": etype, "return_fields": fields or ["id"]}
    if filters is not None:
        args["filters"] = {"logical_operator": "and", "conditions": filters}
    args.update(extra)
    return args


def cond(path: str, relation: str, *values) -> dict:
    return {"path": path, "relation": relation, "values": list(values)}


class PassThroughReasonTests(unittest.TestCase):
    """Each shape the cache cannot answer exactly, with its counted reason."""

    CASES = [
        (read("NoSuchType"), "type not cached"),
        (read("Shot", fields=["nope"]), "return field not cached: Shot.nope"),
        (read("Shot", fields=["image"]), "return field of an uncached data type: image"),
        (read("Task", fields=["task_assignees.HumanUser.login"]),
         "deep return field through a multi-entity field"),
        (read("Shot", [cond("code", "less_than", "a")]), "relation not valid for the field: text less_than"),
        (read("Shot", [cond("image", "is", None)]), "filter field of an uncached data type: image"),
        (read("Shot", [cond("code", "is", 5)]), "filter value of the wrong type: text"),
        (read("Shot", [cond("code", "contains", None)]), "filter value of the wrong type: text"),
        (read("Shot", [cond("sg_cut_in", "is", True)]), "filter value of the wrong type: number"),
        (read("Shot", [cond("sg_cut_in", "between", 1)]), "wrong number of filter values"),
        (read("Shot", [cond("tag_list", "is", {"type": "Tag", "id": 1})]), "filter value of the wrong type: tag_list"),
        (read("Shot", [cond("sg_due", "in_last", 1, "FORTNIGHT")]), "bad relative date arguments"),
        (read("Shot", [cond("sg_sequence", "is", {"type": "Sequence"})]), "filter value of the wrong type: entity"),
        (read("Shot", [cond("sg_sequence.Asset.code", "is", "x")]),
         "filter path names a type the field does not link: Shot.sg_sequence"),
        (read("Shot", [cond("code.Shot.code", "is", "x")]), "filter path through a non-link field: Shot.code"),
        (read("Shot", additional_filter_presets=[{"preset_name": "LATEST"}]), "additional_filter_presets"),
        (read("Shot", return_only="archived"), "unusual return_only"),
        (read("Shot", paging={"entities_per_page": 0}), "unusual paging"),
        (read("Shot", grouping=[]), "unknown read argument: grouping"),
        (read("HumanUser", include_archived_projects=False),
         "include_archived_projects false without a cached project field"),
        # "guess nothing" (shared/PROTOCOL.md, "Read corners"): what Shotgun
        # refuses, and what nobody knows it answers
        (read("Project", [cond("archived", "is", None)]), "filter the site refuses: checkbox compared with None"),
        (read("Project", [cond("archived", "is_not", None)]),
         "filter the site refuses: checkbox compared with None"),
        (read("Shot", [cond("sg_cut_in", "is", 1, 2)]), "wrong number of filter values"),
        (read("Shot", [cond("assets.Asset.code", "is", None)]), "null through a multi-entity link: assets is"),
        (read("Shot", [cond("assets.Asset.code", "is_not", None)]), "null through a multi-entity link: assets is"),
        (read("Shot", [cond("assets.Asset.code", "in", "a", None)]),
         "null through a multi-entity link: assets in"),
    ]

    def test_reasons(self):
        for args, reason in self.CASES:
            with self.assertRaises(PassThrough, msg=repr(args)) as caught:
                plan(args)
            self.assertEqual(caught.exception.reason, reason, repr(args))

    def test_reasons_never_carry_client_values(self):
        with self.assertRaises(PassThrough) as caught:
            plan(read("Shot", [cond("code", "is", 12345)]))
        self.assertNotIn("12345", caught.exception.reason)

    def test_not_ready_fields_and_types(self):
        catalog = ready_catalog(except_fields=("Shot.code",))
        with self.assertRaises(PassThrough) as caught:
            plan(read("Shot", [cond("code", "is", "a")]), catalog)
        self.assertEqual(caught.exception.reason, "filter field not ready: Shot.code")
        catalog = ready_catalog(except_types=("Shot",))
        with self.assertRaises(PassThrough) as caught:
            plan(read("Shot"), catalog)
        self.assertEqual(caught.exception.reason, "type not loaded yet: Shot")
        # a relation that needs every link target: Asset not loaded
        catalog = ready_catalog(except_types=("Asset",))
        with self.assertRaises(PassThrough) as caught:
            plan(read("Task", [cond("entity", "is", None)]), catalog)
        self.assertEqual(caught.exception.reason, "linked type not loaded yet: Asset")
        # ...but a link to a loaded type does not need Asset
        plan(read("Task", [cond("entity", "is", {"type": "Shot", "id": 1})]), catalog)

    def test_sigma_only_matters_on_postgresql(self):
        args = read("Shot", [cond("code", "contains", "ΣΑ")])
        plan(args, dialect="sqlite")
        with self.assertRaises(PassThrough) as caught:
            plan(args, dialect="postgresql")
        self.assertEqual(caught.exception.reason, "text value with a Greek sigma on postgresql")


class PlanCacheTests(unittest.TestCase):
    def test_same_request_same_plan(self):
        cache = PlanCache(ready_catalog(), "sqlite")
        args = read("Shot", [cond("code", "is", "a")], ["code"])
        first = cache.plan(args, 500)
        self.assertIs(cache.plan(read("Shot", [cond("code", "is", "a")], ["code"]), 500), first)
        self.assertIsNot(cache.plan(read("Shot", [cond("code", "is", "b")], ["code"]), 500), first)
        self.assertIsNot(cache.plan(args, 100), first)  # the site's page size is part of the plan

    def test_plans_reading_the_clock_are_not_kept(self):
        cache = PlanCache(ready_catalog(), "sqlite")
        args = read("Shot", [cond("sg_due", "in_last", 1, "DAY")])
        clock = [NOW]
        first = cache.plan(args, 500, now=lambda: clock[0])
        clock[0] = NOW + datetime.timedelta(days=3)
        second = cache.plan(args, 500, now=lambda: clock[0])
        self.assertFalse(first.timeless)
        self.assertNotEqual(first.params, second.params)

    def test_pass_through_decisions_are_kept_with_their_reason(self):
        cache = PlanCache(ready_catalog(), "sqlite")
        for _ in range(2):
            with self.assertRaises(PassThrough) as caught:
                cache.plan(read("NoSuchType"), 500)
            self.assertEqual(caught.exception.reason, "type not cached")

    def test_bounded(self):
        one = PlanCache(ready_catalog(), "sqlite")
        one.plan(read("Shot", [cond("id", "is", 0)]), 500)
        size = one.bytes
        # three plans fit, not four; the least recently used goes first
        cache = PlanCache(ready_catalog(), "sqlite", max_bytes=3 * size + size // 2, max_entry_bytes=2 * size)
        plans = [cache.plan(read("Shot", [cond("id", "is", i)]), 500) for i in range(10)]
        self.assertEqual(len(cache._plans), 3)
        self.assertLessEqual(cache.bytes, cache.max_bytes)
        self.assertIs(cache.plan(read("Shot", [cond("id", "is", 9)]), 500), plans[9])
        self.assertIsNot(cache.plan(read("Shot", [cond("id", "is", 0)]), 500), plans[0])

    def test_a_plan_over_its_share_is_not_kept(self):
        cache = PlanCache(ready_catalog(), "sqlite", max_bytes=2**20)
        big = read("Shot", [cond("id", "in", *range(9000))])
        cache.plan(big, 500)
        self.assertEqual((len(cache._plans), cache.bytes), (0, 0))
        cache.plan(read("Shot", [cond("id", "in", *range(10))]), 500)
        self.assertEqual(len(cache._plans), 1)


class CompiledShapeTests(unittest.TestCase):
    def test_text_relations_are_literal_and_case_insensitive(self):
        p = plan(read("Shot", [cond("code", "contains", "A%_b")]))
        self.assertIn('instr(lower(m."code"), ?) > 0', p.sql)
        self.assertIn("a%_b", p.params)
        p = plan(read("Shot", [cond("code", "ends_with", "X_")]), dialect="postgresql")
        self.assertIn("right((lower(replace(m.\"code\", 'İ', 'i̇')) COLLATE \"C\"), 2) = ?", p.sql)

    def test_negations_are_complements(self):
        p = plan(read("Shot", [cond("code", "not_contains", "a")]))
        self.assertIn("NOT COALESCE((", p.sql)

    def test_relative_dates_use_the_injected_now(self):
        p = plan(read("Shot", [cond("sg_due", "in_last", 1, "DAY")]))
        self.assertEqual(p.params, ["2024-03-30T12:00:00Z", "2024-03-31T12:00:00Z"])
        p = plan(read("Shot", [cond("sg_date", "in_calendar_month", -1)]))
        self.assertEqual(p.params, ["2024-02-01", "2024-02-29"])
        p = plan(read("Shot", [cond("sg_due", "in_last", 1, "MONTH")]))
        self.assertEqual(p.params[0], "2024-02-29T12:00:00Z")  # day clamped

    def test_deep_paths(self):
        p = plan(read("Task", [cond("entity.Shot.sg_sequence.Sequence.code", "is", "sq1")],
                      ["entity.Shot.code"], sorts=[{"field_name": "entity.Shot.code"}]))
        self.assertIn("LEFT JOIN \"Shot\"", p.sql)
        p = plan(read("Task", [cond("task_assignees.HumanUser.login", "is_not", "ann")]))
        self.assertIn('EXISTS (SELECT 1 FROM "Task__task_assignees"', p.sql)

    def test_ignored_sort_keys(self):
        p = plan(read("Shot", sorts=[{"field_name": "assets"}, {"field_name": "tag_list"}]))
        self.assertTrue(p.sql.endswith('ORDER BY m."id" ASC'))

    def test_page_size_is_capped_like_the_site(self):
        p = plan_read(read("Shot", paging={"entities_per_page": 900, "current_page": 2}),
                      ready_catalog(), "sqlite", max_page_size=500)
        self.assertEqual(p.page_size, 500)
        self.assertIn("LIMIT 501 OFFSET 500", p.sql)


# -- against a real store ------------------------------------------------------------


def rows() -> list[EntityChange]:
    def ch(etype, eid, fields, active=True):
        return EntityChange(etype, eid, fields, active=active, complete=True)

    return [
        ch("Project", 1, {"name": "P", "archived": False}),
        ch("Project", 2, {"name": "Old", "archived": True}),
        ch("Sequence", 1, {"code": "SQ1", "project": {"type": "Project", "id": 1}}),
        ch("HumanUser", 1, {"name": "Ann", "login": "ann"}),
        ch("HumanUser", 2, {"name": "Bob", "login": "bob"}, active=False),
        ch("Asset", 1, {"code": "chair"}),
        ch("Shot", 1, {"code": "sh%1", "project": {"type": "Project", "id": 1},
                       "sg_sequence": {"type": "Sequence", "id": 1}, "assets": [{"type": "Asset", "id": 1}]}),
        ch("Shot", 2, {"code": "SH_2", "project": {"type": "Project", "id": 2}}),
        ch("Task", 1, {"content": "anim", "entity": {"type": "Shot", "id": 1},
                       "task_assignees": [{"type": "HumanUser", "id": 1}, {"type": "HumanUser", "id": 2}]}),
        ch("Task", 2, {"content": "model", "entity": {"type": "Asset", "id": 1}}),
    ]


class StoreMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.url = await self.store_url()
        self.store = open_store(self.url, None)
        await self.store.open()
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        await self.store.sync_schema(SCHEMA)
        await self.store.apply(rows())
        for entity in SCHEMA:
            await self.store.set_field_states(entity.name, None, layout.FIELD_READY)
        states = await self.store.field_states()
        self.catalog = Catalog(SCHEMA, {t: {f for f, s in fs.items() if s == "ready"} for t, fs in states.items()})

    async def answer(self, args: dict) -> dict:
        p = plan_read(args, self.catalog, self.store.dialect, now=lambda: NOW)
        return await execute(self.store, p, self.catalog)

    def test_answers(self):
        async def go():
            result = await self.answer(read("Shot", [cond("code", "starts_with", "SH%")], ["code", "sg_sequence"]))
            self.assertEqual(result["entities"], [
                {"type": "Shot", "id": 1, "code": "sh%1", "sg_sequence": {"type": "Sequence", "id": 1, "name": "SQ1"}},
            ])
            result = await self.answer(read("Task", [cond("task_assignees.HumanUser.login", "is", "bob")]))
            self.assertEqual(result["entities"], [])  # Bob is retired
            result = await self.answer(read("Task", [cond("task_assignees", "is_not", {"type": "HumanUser", "id": 1})],
                                         ["task_assignees"]))
            self.assertEqual(result["entities"], [{"type": "Task", "id": 2, "task_assignees": []}])
            result = await self.answer(read("Shot", [], ["code"], include_archived_projects=False,
                                         return_paging_info=True, paging={"entities_per_page": 5, "current_page": 1}))
            self.assertEqual(result, {"entities": [{"type": "Shot", "id": 1, "code": "sh%1"}],
                                      "paging_info": {"entity_count": 1}})

        return defer.ensureDeferred(go())

    def test_incomplete_rows_pass_through(self):
        async def go():
            await self.store.apply([EntityChange("Asset", 9, {"code": "half"})])  # not complete
            with self.assertRaises(PassThrough) as caught:
                await self.answer(read("Shot", [cond("assets.Asset.code", "is", "chair")]))
            self.assertEqual(caught.exception.reason, "rows not fully loaded yet")
            await self.answer(read("Task", [cond("content", "is", "anim")]))  # does not read Asset rows

        return defer.ensureDeferred(go())

    def test_links_to_uncached_types_pass_through_when_they_matter(self):
        async def go():
            # the site knows more link types than the cached schema lists
            await self.store.apply([EntityChange("Task", 3, {"content": "x", "entity": {"type": "Episode", "id": 4}},
                                                 complete=True)])
            with self.assertRaises(PassThrough) as caught:
                await self.answer(read("Task", [cond("entity", "is", None)]))
            self.assertEqual(caught.exception.reason, "links to uncached types")
            with self.assertRaises(PassThrough):
                await self.answer(read("Task", sorts=[{"field_name": "entity", "direction": "asc"}]))
            # relations that cannot match such a link are still answered
            result = await self.answer(read("Task", [cond("entity", "is", {"type": "Shot", "id": 1})]))
            self.assertEqual([e["id"] for e in result["entities"]], [1])
            result = await self.answer(read("Task", [cond("entity", "type_is_not", "Shot")]))
            self.assertEqual([e["id"] for e in result["entities"]], [2, 3])

        return defer.ensureDeferred(go())

    def test_multi_entity_values(self):
        async def go():
            def task(eid, assignees):
                return EntityChange("Task", eid, {"content": f"t{eid}", "task_assignees": assignees}, complete=True)

            group, ann, bob = ({"type": "Group", "id": 1}, {"type": "HumanUser", "id": 1},
                               {"type": "HumanUser", "id": 2})
            await self.store.apply([
                EntityChange("Group", 1, {"code": "Lighters"}, complete=True),
                task(3, [group, bob, ann]), task(4, [ann]), task(5, []),
            ])
            fields = ["task_assignees"]
            result = await self.answer(read("Task", [cond("id", "in", 1, 3, 4, 5)], fields))
            self.assertEqual(
                [(e["id"], [(a["type"], a["id"], a["name"]) for a in e["task_assignees"]])
                 for e in result["entities"]],
                # the stored order, mixed types; Bob is retired and left out
                [(1, [("HumanUser", 1, "Ann")]), (3, [("Group", 1, "Lighters"), ("HumanUser", 1, "Ann")]),
                 (4, [("HumanUser", 1, "Ann")]), (5, [])],
            )
            # a link to a row the store lacks, or to a type without cached names
            await self.store.apply([task(6, [ann, {"type": "Group", "id": 9}]),
                                    task(7, [{"type": "Department", "id": 1}])])
            for eid, reason in ((6, "link target not in the store: Group"),
                                (7, "link to a type whose names are not cached: Department")):
                with self.assertRaises(PassThrough) as caught:
                    await self.answer(read("Task", [cond("id", "is", eid)], fields))
                self.assertEqual(caught.exception.reason, reason)
            # ...matters only when that row is read
            result = await self.answer(read("Task", [cond("id", "in", 3, 5)], fields))
            self.assertEqual([e["id"] for e in result["entities"]], [3, 5])

        return defer.ensureDeferred(go())


class SQLitePlannerStoreTests(StoreMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresPlannerStoreTests(StoreMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)

    def explain(self, args: dict, generic: bool = False) -> str:
        """The plan of the read as text or, with `generic`, the generic plan
        of the statement the store prepares for it (which PostgreSQL may
        settle on after a few executions)."""
        p = plan_read(args, self.catalog, "postgresql", now=lambda: NOW)
        conn = psycopg2.connect(self.url)
        try:
            cur = conn.cursor()
            if generic:
                cur.execute("SET plan_cache_mode = force_generic_plan")
                statements = SessionStatements()
                statements.bind(conn)
                text, _ = statements.query(statement_key(p.sql, p.params))
                cur.execute(text.replace("; EXECUTE ", "; EXPLAIN EXECUTE "), p.params)
            else:
                cur.execute("EXPLAIN " + to_pyformat(p.sql), p.params)
            return "\n".join(r[0] for r in cur.fetchall())
        finally:
            conn.close()

    async def _more_rows(self) -> None:
        """Enough rows that the cost-based planner prefers selective indexes."""
        changes = [
            EntityChange("Sequence", 1000 + i, {"code": f"seq{i}"}, active=True, complete=True)
            for i in range(300)
        ] + [
            EntityChange("Shot", 1000 + i, {"code": f"bulk{i}", "project": {"type": "Project", "id": 1},
                                            "sg_sequence": {"type": "Sequence", "id": 1000 + i % 300},
                                            "created_at": f"2024-03-{1 + i % 28:02d}T10:00:00Z"},
                         active=True, complete=True)
            for i in range(3000)
        ] + [
            EntityChange("Task", 1000 + i, {"content": f"t{i}", "entity": {"type": "Shot", "id": 1000 + i % 3000},
                                            "task_assignees": [{"type": "HumanUser", "id": 100 + i % 400}]},
                         active=True, complete=True)
            for i in range(6000)
        ] + [
            EntityChange("HumanUser", 100 + i, {"name": f"u{i}"}, active=True, complete=True) for i in range(400)
        ]
        await self.store.apply(changes)
        conn = psycopg2.connect(self.url)
        conn.autocommit = True
        try:
            conn.cursor().execute("ANALYZE")
        finally:
            conn.close()

    def test_main_shapes_use_indexes(self):
        return defer.ensureDeferred(self._main_shapes_use_indexes())

    async def _main_shapes_use_indexes(self):
        await self._more_rows()
        shapes = [
            ("by code", read("Shot", [cond("code", "is", "SH_2")], ["code"]), "ix_Shot__code__folded"),
            ("by code in", read("Shot", [cond("code", "in", "sh%1", "x")], ["code"]), "ix_Shot__code__folded"),
            ("by id", read("Shot", [cond("id", "is", 2)], ["code"]), "Shot_pkey"),
            ("by id in", read("Shot", [cond("id", "in", 2, 1005, 2**40)], ["code"]), "Shot_pkey"),
            ("by entity link", read("Task", [cond("entity", "is", {"type": "Shot", "id": 1})], ["content"]),
             "ix_Task__entity"),
            ("by multi link", read("Task", [cond("task_assignees", "is", {"type": "HumanUser", "id": 150})]),
             "ix_Task__task_assignees__children"),
            # the run-time guards are answered from partial indexes
            ("guards", read("Task", [cond("entity", "is", None)]), "ix_Task__entity__foreign"),
            # a deep-link filter is driven from the far end of the chain
            ("deep link", read("Task", [cond("entity.Shot.sg_sequence.Sequence.code", "is", "SEQ7")], ["content"]),
             "ix_Sequence__code__folded"),
            ("deep link, middle hop", read("Task", [cond("entity.Shot.sg_sequence.Sequence.code", "is", "SEQ7")]),
             "ix_Shot__sg_sequence"),
            # a sorted page reads the identifier's folded index in order
            ("sorted page", read("Shot", None, ["code"], sorts=[{"field_name": "code", "direction": "desc"}],
                                 paging={"entities_per_page": 100, "current_page": 5}),
             "ix_Shot__code__folded"),
            ("relative date", read("Shot", [cond("created_at", "in_last", 1, "DAY")], ["code"]),
             "ix_Shot__created_at"),
            ("retired only", read("Shot", None, ["code"], return_only="retired"), "ix_Shot___retired"),
        ]
        for (name, args, index), generic in itertools.product(shapes, (False, True)):
            plan_text = self.explain(args, generic)
            if generic:
                name += " (generic plan)"
            self.assertIn(index, plan_text, f"{name} does not use {index}:\n{plan_text}")
            self.assertNotIn('Seq Scan on "Shot" m', plan_text, f"{name}:\n{plan_text}")
            self.assertNotIn('Seq Scan on "Task" m', plan_text, f"{name}:\n{plan_text}")

    def test_multi_entity_values_are_planned_once(self):
        return defer.ensureDeferred(self._multi_entity_values_are_planned_once())

    async def _multi_entity_values_are_planned_once(self):
        # The values of a multi-entity field are read by parent ids. As an
        # IN list of one parameter per id, PostgreSQL (plan_cache_mode
        # auto) kept making a custom plan of it on every read (~0.5 ms for
        # 50 parents); as one array parameter it settles on a generic plan.
        await self._more_rows()
        # 50 Tasks (two per Shot), each with one assignee
        args = read("Task", None, ["content", "task_assignees"],
                    paging={"entities_per_page": 50, "current_page": 1})
        args["filters"] = {"logical_operator": "or", "conditions": [
            cond("entity", "is", {"type": "Shot", "id": 1000 + n}) for n in range(25)]}
        for _ in range(12):
            result = await self.answer(args)
        self.assertEqual(len(result["entities"]), 50)
        self.assertTrue(all(e["task_assignees"] for e in result["entities"]))
        plans = []
        for conn in self.store._read_pool.every:
            plans += await conn.runQuery(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
                "WHERE statement LIKE '%%FROM \"Task__task_assignees\" AS a%%'")
        self.assertTrue(plans, "the values were not read through a prepared statement")
        self.assertGreater(sum(generic for generic, _ in plans), 0, plans)
        # auto mode tries five custom plans before it compares
        self.assertLessEqual(max(custom for _, custom in plans), 5, plans)

    def test_in_lists_of_any_length_share_a_statement(self):
        return defer.ensureDeferred(self._in_lists_of_any_length_share_a_statement())

    async def _in_lists_of_any_length_share_a_statement(self):
        # one parameter per value made a statement per list length: a
        # pipeline sending lists of 1..500 codes would cycle the session's
        # 256 statements (and re-prepare everything) on its own
        codes = ["sh%1", "x", "y", "z", "w"]
        for n in range(1, 6):
            result = await self.answer(read("Shot", [cond("code", "in", *codes[:n])], ["code"]))
            self.assertEqual([e["code"] for e in result["entities"]], ["sh%1"])
            result = await self.answer(read("Shot", [cond("id", "in", *range(n, 0, -1))], ["code"]))
            self.assertEqual([e["id"] for e in result["entities"]], [1, 2][:n])  # Shots 1 and 2 exist
        statements = set()
        for conn in self.store._read_pool.every:
            for (text,) in await conn.runQuery(
                    "SELECT statement FROM pg_prepared_statements WHERE statement LIKE '%%FROM \"Shot\" AS m%%'"):
                # the same statement on another pooled connection has another name
                statements.add(re.sub(r"sgq_\w+", "sgq", text.split("; EXECUTE")[0]))
        self.assertEqual(len(statements), 2, statements)
