"""End to end: the real `shotgun_api3.Shotgun` client, the sgcache daemon
in-process, and the Shotgun emulator over HTTP. Every call made through the
cache must give what the same call gives straight against the emulator; the
emulator's request counters show which reads reached it. Run on both stores.
"""

from __future__ import annotations

import os

import shotgun_api3
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema.changes import EntityChange
from sgcache.schema import Schema
from sgcache.store import open_store
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = Schema.load(os.path.join(ROOT, "schema", "basic.yml"))

USER_SCRIPT = ("pipeline", "pipeline-key")


def seed_items():
    project = {"type": "Project", "id": 1}
    items = [{"type": "Project", "id": 1, "fields": {"name": "Demo", "archived": False}}]
    items += [
        {"type": "Sequence", "id": 10 + i, "fields": {"code": f"SQ{i:02d}", "project": project}}
        for i in range(3)
    ]
    items += [
        {"type": "HumanUser", "id": 100 + i, "fields": {"name": name, "login": name.lower()}}
        for i, name in enumerate(["Ann", "bob", "Cid"])
    ]
    statuses = ["ip", "fin", "wtg", None]
    for i in range(25):
        items.append(
            {
                "type": "Shot",
                "id": 200 + i,
                "fields": {
                    "code": f"{'SH' if i % 2 else 'sh'}{i:03d}",
                    "project": project,
                    "sg_sequence": {"type": "Sequence", "id": 10 + i % 3} if i % 5 else None,
                    "sg_status_list": statuses[i % 4],
                    "sg_cut_in": 1000 + (i * 7) % 13 if i % 6 else None,
                    "description": f"shot number {i}",
                },
            }
        )
    for i in range(12):
        items.append(
            {
                "type": "Task",
                "id": 500 + i,
                "fields": {
                    "content": f"task {i}",
                    "project": project,
                    "entity": {"type": "Shot", "id": 200 + i % 4},
                    "task_assignees": [{"type": "HumanUser", "id": 100 + i % 3}]
                    + ([{"type": "HumanUser", "id": 100 + (i + 1) % 3}] if i % 2 else []),
                    "due_date": f"2026-0{1 + i % 9}-1{i % 10}",
                    "milestone": bool(i % 3 == 0),
                },
            }
        )
    return items


class EndToEndMixin:
    """The suite; subclasses say which store to use."""

    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self):
        self.site = await start_emulator(
            SCHEMA, scripts=dict([CACHE_SCRIPT, USER_SCRIPT]), page_size=7
        )
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.emulator.seed(seed_items())
        url = self.db_url = await self.store_url()
        self.daemon = await start_daemon(SCHEMA, self.site.url, url)
        self.addCleanup(lambda: defer.ensureDeferred(self.daemon.stop()))
        self.sg = client(self.daemon.url, *USER_SCRIPT)
        self.direct = client(self.site.url, *USER_SCRIPT)
        self.addCleanup(self.sg.close)
        self.addCleanup(self.direct.close)
        # the first read of a script passes through and vouches for it
        await deferToThread(self.sg.find_one, "Project", [])

    async def both(self, method, *args, **kwargs):
        via_cache = await deferToThread(getattr(self.sg, method), *args, **kwargs)
        direct = await deferToThread(getattr(self.direct, method), *args, **kwargs)
        return via_cache, direct

    def reads(self) -> int:
        return self.emulator.counters().get("read", 0)

    async def assertLocal(self, method, *args, **kwargs):
        before = self.reads()
        via_cache = await deferToThread(getattr(self.sg, method), *args, **kwargs)
        self.assertEqual(
            self.reads(), before,
            f"{method}{args} reached the site: {dict(self.daemon.cache.passthrough_reasons)}",
        )
        direct = await deferToThread(getattr(self.direct, method), *args, **kwargs)
        self.assertEqual(via_cache, direct)
        return via_cache

    async def assertPassedThrough(self, method, *args, **kwargs):
        before = self.reads()
        via_cache = await deferToThread(getattr(self.sg, method), *args, **kwargs)
        self.assertGreater(self.reads(), before, f"{method}{args} did not reach the site")
        direct = await deferToThread(getattr(self.direct, method), *args, **kwargs)
        self.assertEqual(via_cache, direct)
        return via_cache

    # -- reads -----------------------------------------------------------------
    async def test_info_is_the_sites_plus_sgcache_block(self):
        info = await deferToThread(self.sg.info)
        direct = await deferToThread(self.direct.info)
        block = info.pop("sgcache")
        self.assertEqual(info, direct)
        self.assertTrue(block["serving"])
        self.assertIn("event_cursor", block)

    async def test_find_simple_filters_served_locally(self):
        fields = ["code", "sg_status_list", "sg_cut_in", "sg_sequence", "project", "description"]
        result = await self.assertLocal("find", "Shot", [["sg_status_list", "is", "ip"]], fields)
        self.assertTrue(result)
        linked = [r for r in result if r["sg_sequence"] is not None]
        self.assertTrue(linked)
        self.assertEqual(linked[0]["sg_sequence"]["name"][:2], "SQ")
        await self.assertLocal("find", "Shot", [["code", "is", "SH001"]], fields)  # case-insensitive
        await self.assertLocal("find", "Shot", [["sg_status_list", "is_not", "ip"]], fields)
        await self.assertLocal("find", "Shot", [["sg_status_list", "in", ["ip", "fin"]]], fields)
        await self.assertLocal("find", "Shot", [["sg_status_list", "not_in", ["ip", "fin"]]], fields)
        await self.assertLocal("find", "Shot", [["sg_cut_in", "less_than", 1005]], fields)
        await self.assertLocal("find", "Shot", [["sg_cut_in", "greater_than", 1005]], fields)
        await self.assertLocal("find", "Shot", [["sg_cut_in", "is", None]], fields)
        await self.assertLocal("find", "Shot", [["sg_sequence", "is", {"type": "Sequence", "id": 11}]], fields)
        await self.assertLocal("find", "Shot", [["sg_sequence", "is_not", {"type": "Sequence", "id": 11}]], fields)
        await self.assertLocal("find", "Shot", [["sg_sequence", "is", None]], fields)
        await self.assertLocal(
            "find", "Shot", [["sg_status_list", "is", "ip"], ["sg_cut_in", "greater_than", 1002]],
            fields, filter_operator="any",
        )

    async def test_sorting_and_paging_served_locally(self):
        fields = ["code", "sg_cut_in"]
        # the client pages on its own (emulator page size 7)
        await self.assertLocal("find", "Shot", [], fields, order=[{"field_name": "code", "direction": "asc"}])
        await self.assertLocal(
            "find", "Shot", [], fields,
            order=[{"field_name": "sg_cut_in", "direction": "desc"}, {"field_name": "code", "direction": "asc"}],
        )
        await self.assertLocal("find", "Shot", [], fields, order=[{"field_name": "sg_cut_in", "direction": "asc"}])
        await self.assertLocal("find", "Shot", [], fields, limit=3, page=2,
                               order=[{"field_name": "code", "direction": "desc"}])
        await self.assertLocal("find_one", "Shot", [["sg_status_list", "is", "fin"]], fields)

    async def test_multi_entity_and_dates_served_locally(self):
        fields = ["content", "entity", "task_assignees", "due_date", "milestone", "created_at", "updated_at"]
        tasks = await self.assertLocal("find", "Task", [], fields)
        self.assertEqual(len(tasks[1]["task_assignees"]), 2)
        await self.assertLocal("find", "Task", [["due_date", "greater_than", "2026-04-01"]], fields)
        await self.assertLocal("find", "Task", [["milestone", "is", True]], fields)

    async def test_retired_only(self):
        await deferToThread(self.direct.delete, "Shot", 201)
        await self.daemon.service.poller.poll()
        result = await self.assertLocal("find", "Shot", [], ["code"], retired_only=True)
        self.assertEqual([r["id"] for r in result], [201])

    async def test_reads_the_planner_rejects_pass_through(self):
        await self.assertPassedThrough("find", "Shot", [], ["image"])
        await self.assertPassedThrough("find", "Task", [], ["task_assignees.HumanUser.login"])
        await self.assertPassedThrough("find", "HumanUser", [], ["name"], include_archived_projects=False)

    async def test_what_shotgun_refuses_or_nobody_knows_passes_through(self):
        """shared/PROTOCOL.md, "Read corners": a null-accepting condition
        through a multi-entity link (whether an entity with no linked entity
        matches is not known of Shotgun) and a checkbox compared with None
        (Shotgun answers with a fault) are the site's to answer."""
        await self.assertPassedThrough("find", "Shot", [["assets.Asset.code", "is", None]], ["code"])
        await self.assertPassedThrough("find", "Shot", [["assets.Asset.code", "is_not", None]], ["code"])
        for relation in ("is", "is_not"):
            before = self.reads()
            outcomes = []
            for sg in (self.sg, self.direct):
                try:
                    outcomes.append(await deferToThread(sg.find, "Task", [["milestone", relation, None]], ["content"]))
                except shotgun_api3.Fault as e:
                    outcomes.append(str(e))
            self.assertGreater(self.reads(), before + 1, "the cache asked the site")
            self.assertEqual(outcomes[0], outcomes[1])
        reasons = self.daemon.cache.passthrough_reasons
        # (counted per page read: the site's pages are of 7 here)
        self.assertGreaterEqual(reasons["null through a multi-entity link"], 2)
        self.assertGreaterEqual(reasons["filter the site refuses"], 2)

    async def test_exact_reads_served_locally(self):
        await self.assertLocal("find", "Shot", [["code", "contains", "01"]], ["code"])
        await self.assertLocal("find", "Shot", [], ["code", "sg_sequence.Sequence.code"])
        await self.assertLocal("find", "Shot", [], ["code"], include_archived_projects=False)

    async def test_unknown_type_gives_the_sites_fault(self):
        with self.assertRaises(shotgun_api3.Fault) as direct:
            await deferToThread(self.direct.find, "NoSuchType", [], ["code"])
        with self.assertRaises(shotgun_api3.Fault) as via_cache:
            await deferToThread(self.sg.find, "NoSuchType", [], ["code"])
        self.assertEqual(str(via_cache.exception), str(direct.exception))

    async def test_bad_credentials_are_refused(self):
        bad = client(self.daemon.url, "pipeline", "wrong")
        self.addCleanup(bad.close)
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await deferToThread(bad.find, "Shot", [], ["code"])

    async def test_unvouched_credentials_do_not_get_local_reads(self):
        fresh = client(self.daemon.url, *CACHE_SCRIPT)
        self.addCleanup(fresh.close)
        before = self.reads()
        await deferToThread(fresh.find, "Shot", [], ["code"])
        self.assertGreater(self.reads(), before)
        before = self.reads()
        await deferToThread(fresh.find, "Shot", [], ["code"])
        self.assertEqual(self.reads(), before)

    # -- answers to repeated reads -------------------------------------------------
    async def test_repeated_reads_reuse_the_answer_until_the_store_changes(self):
        answers = self.daemon.cache.answers
        query = ("find", "Shot", [["sg_sequence.Sequence.code", "is", "SQ01"]], ["code", "description"],
                 [{"field_name": "code", "direction": "desc"}])
        first = await self.assertLocal(*query)
        hits = answers.hits
        self.assertEqual(await self.assertLocal(*query), first)
        self.assertEqual(answers.hits, hits + 1)
        # a write through the cache (written back at once), then a change
        # made elsewhere (arriving by events): each read after gives the
        # site's new answer (assertLocal compares), not the one kept
        await deferToThread(self.sg.update, "Shot", 204, {"description": "changed here"})
        self.assertNotEqual(await self.assertLocal(*query), first)
        await deferToThread(self.direct.update, "Shot", 207, {"description": "changed there"})
        await self.daemon.service.poller.poll()
        third = await self.assertLocal(*query)
        self.assertIn("changed there", [shot["description"] for shot in third])
        info = await deferToThread(self.sg.info)
        self.assertGreaterEqual(info["sgcache"]["reads_reused"], 1)

    async def test_relative_date_reads_are_not_reused(self):
        answers = self.daemon.cache.answers
        query = ("find", "Task", [["due_date", "in_last", 36500, "DAY"]], ["content"])
        await self.assertLocal(*query)
        hits = answers.hits
        await self.assertLocal(*query)
        self.assertEqual(answers.hits, hits)

    async def test_writes_by_another_process_are_not_hidden(self):
        # `sgcache scan` / `reprocess` write the store from another process
        query = ("find", "Shot", [["id", "is", 208]], ["description"])
        await self.assertLocal(*query)
        await self.assertLocal(*query)
        other = open_store(self.db_url, reactor)
        await other.open()
        self.addCleanup(other.close)
        await other.apply([EntityChange("Shot", 208, {"description": "written elsewhere"})])
        for _ in range(500):
            got = await deferToThread(self.sg.find, *query[1:])
            if got[0]["description"] == "written elsewhere":
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        else:
            self.fail(f"the daemon still answers {got} 5s after another process's write")

    # -- writes ------------------------------------------------------------------
    async def test_create_is_readable_from_the_store_at_once(self):
        created = await deferToThread(
            self.sg.create, "Shot",
            {"code": "new010", "project": {"type": "Project", "id": 1},
             "sg_sequence": {"type": "Sequence", "id": 10}},
        )
        self.assertEqual(created["code"], "new010")
        result = await self.assertLocal(
            "find", "Shot", [["code", "is", "new010"]], ["code", "sg_sequence", "created_by", "updated_at"]
        )
        self.assertEqual(len(result), 1)
        # the backref side (Sequence.shots) was refreshed too
        await self.assertLocal("find", "Sequence", [["id", "is", 10]], ["code", "shots"])

    async def test_update_delete_revive_through_the_cache(self):
        updated = await deferToThread(self.sg.update, "Shot", 203, {"sg_status_list": "fin", "description": "x"})
        self.assertEqual(updated["sg_status_list"], "fin")
        await self.assertLocal("find", "Shot", [["id", "is", 203]], ["sg_status_list", "description"])
        self.assertTrue(await deferToThread(self.sg.delete, "Shot", 203))
        self.assertEqual(await self.assertLocal("find", "Shot", [["id", "is", 203]], ["code"]), [])
        self.assertTrue(await deferToThread(self.sg.revive, "Shot", 203))
        self.assertEqual(len(await self.assertLocal("find", "Shot", [["id", "is", 203]], ["code"])), 1)
        # a task on that shot: entity links read again once it is alive
        await self.assertLocal("find", "Task", [["entity", "is", {"type": "Shot", "id": 203}]], ["entity"])

    async def test_multi_entity_update_modes(self):
        await deferToThread(
            self.sg.update, "Task", 500, {"task_assignees": [{"type": "HumanUser", "id": 102}]},
            multi_entity_update_modes={"task_assignees": "add"},
        )
        result = await self.assertLocal("find", "Task", [["id", "is", 500]], ["task_assignees"])
        self.assertEqual([a["id"] for a in result[0]["task_assignees"]], [100, 102])

    async def test_batch(self):
        results = await deferToThread(
            self.sg.batch,
            [
                {"request_type": "create", "entity_type": "Shot", "data": {"code": "b1", "project": {"type": "Project", "id": 1}}},
                {"request_type": "update", "entity_type": "Shot", "entity_id": 204, "data": {"code": "renamed"}},
                {"request_type": "delete", "entity_type": "Shot", "entity_id": 205},
            ],
        )
        self.assertEqual(results[2], True)
        await self.assertLocal("find", "Shot", [["code", "in", ["b1", "renamed", "SH005"]]], ["code"])
        # an atomic failure leaves nothing behind, in the site or the cache
        with self.assertRaises(shotgun_api3.Fault):
            await deferToThread(
                self.sg.batch,
                [
                    {"request_type": "create", "entity_type": "Shot", "data": {"code": "b2"}},
                    {"request_type": "update", "entity_type": "Shot", "entity_id": 99999, "data": {"code": "x"}},
                ],
            )
        self.assertEqual(await self.assertLocal("find", "Shot", [["code", "is", "b2"]], ["code"]), [])

    async def test_other_methods_pass_through(self):
        via, direct = await self.both("schema_read")
        self.assertEqual(via, direct)
        via, direct = await self.both("schema_field_read", "Shot", "code")
        self.assertEqual(via, direct)
        via, direct = await self.both(
            "summarize", "Shot", [], summary_fields=[{"field": "id", "type": "count"}]
        )
        self.assertEqual(via, direct)

    # -- sync ------------------------------------------------------------------
    async def test_changes_made_elsewhere_arrive_by_events(self):
        await deferToThread(self.direct.update, "Shot", 206, {"code": "elsewhere"})
        await deferToThread(
            self.direct.create, "Task",
            {"content": "late", "entity": {"type": "Shot", "id": 206}, "project": {"type": "Project", "id": 1}},
        )
        await self.daemon.service.poller.poll()
        await self.assertLocal("find", "Shot", [["id", "is", 206]], ["code", "tasks"])
        await self.assertLocal("find", "Task", [["content", "is", "late"]], ["content", "entity"])

    async def _copy_read_while_retired(self):
        """Task 501 links to Shot 201 (entity) and HumanUser 101
        (task_assignees); both are retired, then the cache reads Task 501
        again (a change of its content): the site hides the dead links, so
        the cache's copy has no entity and only user 102."""
        await deferToThread(self.direct.delete, "Shot", 201)
        await deferToThread(self.direct.delete, "HumanUser", 101)
        await deferToThread(self.direct.update, "Task", 501, {"content": "read while retired"})
        await self.daemon.service.poller.poll()
        task = await self.assertLocal("find_one", "Task", [["id", "is", 501]], ["entity", "task_assignees"])
        self.assertIsNone(task["entity"])
        self.assertEqual([u["id"] for u in task["task_assignees"]], [102])

    async def test_revival_by_event_shows_the_links_to_it_again(self):
        await self._copy_read_while_retired()
        await deferToThread(self.direct.revive, "Shot", 201)
        await deferToThread(self.direct.revive, "HumanUser", 101)
        await self.daemon.service.poller.poll()
        task = await self.assertLocal("find_one", "Task", [["id", "is", 501]], ["entity", "task_assignees"])
        self.assertEqual(task["entity"]["id"], 201)
        self.assertEqual([u["id"] for u in task["task_assignees"]], [101, 102])
        await self.assertLocal("find", "Task", [["task_assignees", "is", {"type": "HumanUser", "id": 101}]],
                               ["content"])

    async def test_revival_through_the_cache_shows_the_links_to_it_again(self):
        await self._copy_read_while_retired()
        self.assertTrue(await deferToThread(self.sg.revive, "Shot", 201))
        self.assertTrue(await deferToThread(self.sg.revive, "HumanUser", 101))
        # written back before the revive's answer: no poll needed
        task = await self.assertLocal("find_one", "Task", [["id", "is", 501]], ["entity", "task_assignees"])
        self.assertEqual(task["entity"]["id"], 201)
        self.assertEqual([u["id"] for u in task["task_assignees"]], [101, 102])

    async def test_link_moved_away_from_a_retired_entity(self):
        # the backref event of a retired Sequence names no entity (it is
        # null in events): the Shot's own event names it as the old value
        await deferToThread(self.direct.delete, "Sequence", 10)
        await self.daemon.service.poller.poll()
        await deferToThread(self.direct.update, "Shot", 203, {"sg_sequence": {"type": "Sequence", "id": 11}})
        await self.daemon.service.poller.poll()
        await self.assertLocal("find", "Sequence", [["id", "is", 10]], ["shots", "updated_at"], retired_only=True)
        await self.assertLocal("find", "Sequence", [["id", "is", 11]], ["shots", "updated_at"])

    # -- upstream trouble ---------------------------------------------------------
    async def test_upstream_failure_on_a_write_is_a_fault_not_a_retry(self):
        self.emulator.fail_next(1, status=502, methods=["update"])
        with self.assertRaises(shotgun_api3.Fault):
            await deferToThread(self.sg.update, "Shot", 207, {"code": "once"})
        self.assertEqual(self.emulator.counters().get("update", 0), 1)

    async def test_bad_json_is_a_fault(self):
        import treq
        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.post(self.daemon.url + "/api3/json", data=b"{not json", pool=pool)
        body = await treq.json_content(response)
        self.assertEqual(response.code, 200)
        self.assertTrue(body["exception"])
        self.assertIn("JSON", body["message"])


class SQLiteEndToEndTests(EndToEndMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresEndToEndTests(EndToEndMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)

