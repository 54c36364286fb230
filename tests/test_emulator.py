"""Tests of the Shotgun emulator (sgcache.testing): CRUD, batch atomicity,
paging, values, faults, auth, schema reads, the fixture schema, the test
controls and the twistd plugin, all driven over HTTP with the real
shotgun_api3 client (in a thread) or treq. Event shapes are in
tests/test_emulator_events.py."""

from __future__ import annotations

import copy
import datetime
import gzip
import json
import os

from typing import Any

import shotgun_api3
from treq.testing import StubTreq
from twisted.internet import defer, reactor, task
from twisted.python import usage
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.site.faults import Fault
from sgcache.testing import tap
from sgcache.testing.emulator import Emulator, load_schema
from sgcache.testing.harness import EmulatorTestCase, async_test, small_schema
from sgcache.testing.server import EmulatorServer
from sgcache.testing.fixtures import FIXTURE_SCHEMA

#: The real-site schema dump (tests needing it skip without it).
FIXTURE = FIXTURE_SCHEMA


class CrudTests(EmulatorTestCase):
    @async_test
    async def test_info_needs_no_auth(self) -> None:
        anonymous = self.client(script="nobody", key="nothing")
        info = await self.call(anonymous.info)
        self.assertEqual(info["version"][:2], [8, 50])
        self.assertEqual(info["user_authentication_method"], "default")
        self.assertEqual(info["api_max_entities_per_page"], 500)
        self.assertFalse(info["s3_uploads_enabled"])

    @async_test
    async def test_create_find_update_delete_revive(self) -> None:
        sg = self.sg
        project = await self.call(sg.create, "Project", {"name": "Pied Piper"})
        shot = await self.call(
            sg.create, "Shot", {"code": "sh010", "project": project}, ["sg_status_list", "created_by"]
        )
        self.assertEqual(shot["type"], "Shot")
        self.assertEqual(shot["project"], {"type": "Project", "id": project["id"], "name": "Pied Piper"})
        self.assertEqual(shot["created_by"]["type"], "ApiUser")
        self.assertEqual(shot["created_by"]["name"], "test")
        self.assertIsNone(shot["sg_status_list"])

        found = await self.call(sg.find, "Shot", [["code", "is", "SH010"]], ["code", "project"])
        self.assertEqual(found, [{"type": "Shot", "id": shot["id"], "code": "sh010", "project": shot["project"]}])

        updated = await self.call(sg.update, "Shot", shot["id"], {"code": "sh020", "sg_status_list": "ip"})
        self.assertEqual(updated, {"type": "Shot", "id": shot["id"], "code": "sh020", "sg_status_list": "ip"})

        self.assertTrue(await self.call(sg.delete, "Shot", shot["id"]))
        self.assertFalse(await self.call(sg.delete, "Shot", shot["id"]))
        self.assertEqual(await self.call(sg.find, "Shot", []), [])
        retired = await self.call(sg.find, "Shot", [], ["code"], retired_only=True)
        self.assertEqual([r["code"] for r in retired], ["sh020"])
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(sg.update, "Shot", shot["id"], {"code": "x"})

        self.assertTrue(await self.call(sg.revive, "Shot", shot["id"]))
        self.assertFalse(await self.call(sg.revive, "Shot", shot["id"]))
        self.assertEqual(len(await self.call(sg.find, "Shot", [])), 1)

    @async_test
    async def test_ids_increase_per_type(self) -> None:
        a = await self.call(self.sg.create, "Shot", {"code": "a"})
        b = await self.call(self.sg.create, "Shot", {"code": "b"})
        s = await self.call(self.sg.create, "Sequence", {"code": "s"})
        self.assertEqual((a["id"], b["id"], s["id"]), (1, 2, 1))

    @async_test
    async def test_bookkeeping(self) -> None:
        self.emulator.set_clock("2024-03-01T10:00:00Z")
        shot = await self.call(self.sg.create, "Shot", {"code": "a"})
        other = self.client("other", "okey")
        self.emulator.set_clock("2024-03-01T11:00:00Z")
        await self.call(other.update, "Shot", shot["id"], {"code": "b"})
        row = await self.call(
            self.sg.find_one, "Shot", [["id", "is", shot["id"]]],
            ["created_at", "updated_at", "created_by", "updated_by"],
        )
        self.assertEqual(row["created_at"], datetime.datetime(2024, 3, 1, 10, 0, 0))
        self.assertEqual(row["updated_at"], datetime.datetime(2024, 3, 1, 11, 0, 0))
        self.assertEqual(row["created_by"]["name"], "test")
        self.assertEqual(row["updated_by"]["name"], "other")
        users = await self.call(self.sg.find, "ApiUser", [], ["firstname"])
        self.assertEqual(sorted(u["firstname"] for u in users), ["other", "test"])

    @async_test
    async def test_values_round_trip(self) -> None:
        data = {
            "code": "sh",
            "tag_list": ["hero", "fx", "hero"],
            "sg_cut_in": 1001,
            "sg_ratio": 2,
            "sg_flag": True,
            "sg_date": datetime.date(2024, 2, 29),
            "sg_when": datetime.datetime(2024, 2, 29, 23, 59, 58),
            "sg_link": {"url": "https://example.com", "name": "site", "link_type": "url", "content_type": None},
            "sg_data": {"a": [1, 2]},
            "description": "x" * 10,
        }
        shot = await self.call(self.sg.create, "Shot", data, list(data))
        expected = dict(data, tag_list=["hero", "fx"], sg_ratio=2.0, sg_date="2024-02-29")
        for key, value in expected.items():
            self.assertEqual(shot[key], value, key)
        found = await self.call(self.sg.find_one, "Shot", [], list(data))
        for key, value in expected.items():
            self.assertEqual(found[key], value, key)
        # Clearing: checkbox null reads false, multi/tag lists empty.
        cleared = await self.call(self.sg.update, "Shot", shot["id"], {"sg_flag": None, "tag_list": [], "sg_when": None})
        self.assertEqual((cleared["sg_flag"], cleared["tag_list"], cleared["sg_when"]), (False, [], None))

    @async_test
    async def test_bad_values_fault(self) -> None:
        bad = [
            {"sg_cut_in": "12"},
            {"sg_cut_in": True},
            {"sg_flag": "yes"},
            {"sg_date": "2024-13-01"},
            {"sg_when": "yesterday"},
            {"sg_status_list": "nope"},
            {"project": {"type": "Project", "id": 99}},
            {"project": {"type": "Shot", "id": 1}},
            {"project": "Project 1"},
            {"tasks": {"type": "Task", "id": 1}},
            {"tag_list": "hero"},
            {"sg_data": "text"},
            {"id": 5},
            {"updated_at": datetime.datetime(2024, 1, 1)},
        ]
        for data in bad:
            with self.assertRaises(shotgun_api3.Fault, msg=repr(data)):
                await self.call(self.sg.create, "Shot", dict(data, code="x"))
        self.assertEqual(await self.call(self.sg.find, "Shot", []), [])
        self.assertEqual(self.emulator._db["Shot"], {})

    @async_test
    async def test_multi_entity_update_modes(self) -> None:
        sg = self.sg
        shots = [await self.call(sg.create, "Shot", {"code": f"s{i}"}) for i in range(4)]
        links = [{"type": "Shot", "id": s["id"]} for s in shots]
        asset = await self.call(sg.create, "Asset", {"code": "a", "shots": links[:2]})

        async def shot_ids() -> list[int]:
            row = await self.call(sg.find_one, "Asset", [["id", "is", asset["id"]]], ["shots"])
            return [s["id"] for s in row["shots"]]

        self.assertEqual(await shot_ids(), [1, 2])
        await self.call(sg.update, "Asset", asset["id"], {"shots": [links[2], links[0]]}, multi_entity_update_modes={"shots": "add"})
        self.assertEqual(await shot_ids(), [1, 2, 3])
        # mockgun's remove drops everything but the last match; remove one of three here.
        await self.call(sg.update, "Asset", asset["id"], {"shots": [links[1]]}, multi_entity_update_modes={"shots": "remove"})
        self.assertEqual(await shot_ids(), [1, 3])
        result = await self.call(sg.update, "Asset", asset["id"], {"shots": [links[3], links[0]]})
        self.assertEqual([s["id"] for s in result["shots"]], [4, 1])
        self.assertEqual([s["name"] for s in result["shots"]], ["s3", "s0"])
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(sg.update, "Asset", asset["id"], {"code": "z"}, multi_entity_update_modes={"code": "add"})

    @async_test
    async def test_path_prefix(self) -> None:
        code, body = await self.post_json("/some/prefix/api3/json", {"method_name": "info", "params": []})
        self.assertEqual(code, 200)
        self.assertEqual(body["version"][:2], [8, 50])


    @async_test
    async def test_summarize(self) -> None:
        self.emulator.seed([{"type": "Shot", "fields": {"code": c, "sg_cut_in": n}} for c, n in [("a", 1), ("b", 5)]])
        result = await self.call(self.sg.summarize, "Shot", [], [{"field": "sg_cut_in", "type": "sum"},
                                                                {"field": "id", "type": "count"}])
        self.assertEqual(result["summaries"], {"sg_cut_in": 6, "id": 2})

    def test_python_api(self) -> None:
        """The mockgun-compatible methods work in-process, without HTTP."""
        em = self.emulator
        shot = em.create("Shot", {"code": "py", "sg_when": datetime.datetime(2024, 1, 1, 12, 0)})
        task = em.create("Task", {"content": "t", "entity": {"type": "Shot", "id": shot["id"]}})
        self.assertEqual(em.find_one("Shot", [["code", "is", "py"]], ["tasks", "sg_when"]),
                         {"type": "Shot", "id": shot["id"], "sg_when": "2024-01-01T12:00:00Z",
                          "tasks": [{"type": "Task", "id": task["id"], "name": "t"}]})
        em.update("Shot", shot["id"], {"tasks": [{"type": "Task", "id": task["id"]}]},
                  multi_entity_update_modes={"tasks": "remove"})
        self.assertIsNone(em.find_one("Task", [], ["entity"])["entity"])
        self.assertEqual(em.batch([{"request_type": "delete", "entity_type": "Task", "entity_id": task["id"]}]), [True])
        self.assertEqual(em.find("Task", []), [])
        self.assertEqual(len(em.find("Task", [], retired_only=True)), 1)
        self.assertEqual(em.summarize("Shot", [], [{"field": "id", "type": "count"}])["summaries"], {"id": 1})
        self.assertEqual(em.schema_field_read("Shot", "code")["code"]["data_type"]["value"], "text")


class PrefixTests(EmulatorTestCase):
    prefix = "/foo"

    @async_test
    async def test_client_with_prefixed_url(self) -> None:
        self.assertTrue(self.site.url.endswith("/foo"))
        self.assertEqual(await self.control("counters", figures=False), {})
        shot = await self.call(self.sg.create, "Shot", {"code": "p"})
        self.assertEqual((await self.call(self.sg.find_one, "Shot", []))["id"], shot["id"])


class BatchTests(EmulatorTestCase):
    @async_test
    async def test_batch_mixed(self) -> None:
        first = await self.call(self.sg.create, "Shot", {"code": "old"})
        results = await self.call(self.sg.batch, [
            {"request_type": "create", "entity_type": "Shot", "data": {"code": "new"}},
            {"request_type": "update", "entity_type": "Shot", "entity_id": first["id"], "data": {"code": "changed"}},
            {"request_type": "delete", "entity_type": "Shot", "entity_id": first["id"]},
        ])
        self.assertEqual(results[0]["code"], "new")
        self.assertEqual(results[1], {"type": "Shot", "id": first["id"], "code": "changed"})
        self.assertIs(results[2], True)
        live = await self.call(self.sg.find, "Shot", [], ["code"])
        self.assertEqual([s["code"] for s in live], ["new"])

    @async_test
    async def test_failed_batch_leaves_no_trace(self) -> None:
        shot = await self.call(self.sg.create, "Shot", {"code": "keep"})
        before_events = await self.events()
        before_db = copy.deepcopy(self.emulator._db)
        with self.assertRaises(shotgun_api3.Fault) as caught:
            await self.call(self.sg.batch, [
                {"request_type": "create", "entity_type": "Task", "data": {"content": "t", "entity": {"type": "Shot", "id": shot["id"]}}},
                {"request_type": "update", "entity_type": "Shot", "entity_id": shot["id"], "data": {"code": "changed"}},
                {"request_type": "create", "entity_type": "Shot", "data": {"no_such_field": 1}},
            ])
        self.assertIn("request 2", str(caught.exception))
        self.assertEqual(await self.call(self.sg.find, "Task", []), [])
        row = await self.call(self.sg.find_one, "Shot", [], ["code", "tasks", "updated_at"])
        self.assertEqual((row["code"], row["tasks"]), ("keep", []))
        self.assertEqual(await self.events(), before_events)
        self.assertEqual(self.emulator._db, before_db)


class PagingTests(EmulatorTestCase):
    page_size = 3

    @async_test
    async def test_client_pages_on_its_own(self) -> None:
        self.emulator.seed([{"type": "Shot", "fields": {"code": f"sh{i:02d}"}} for i in range(10)])
        self.emulator.reset_counters()
        shots = await self.call(self.sg.find, "Shot", [], ["code"], order=[{"field_name": "code", "direction": "asc"}])
        self.assertEqual([s["code"] for s in shots], [f"sh{i:02d}" for i in range(10)])
        counts = self.emulator.counters()
        self.assertEqual(counts["read"], 4)
        limited = await self.call(self.sg.find, "Shot", [], ["code"], order=[{"field_name": "code", "direction": "desc"}], limit=5)
        self.assertEqual([s["code"] for s in limited], ["sh09", "sh08", "sh07", "sh06", "sh05"])
        two = await self.call(self.sg.find, "Shot", [], ["code"], limit=2)
        self.assertEqual(len(two), 2)


class FaultTests(EmulatorTestCase):
    @async_test
    async def test_bad_auth(self) -> None:
        for script, key in [("test", "wrong"), ("nobody", "key")]:
            sg = self.client(script, key)
            with self.assertRaises(shotgun_api3.AuthenticationFault):
                await self.call(sg.find, "Shot", [])
        code, body = await self.post_json("/api3/json", {"method_name": "read", "params": [{}, {"type": "Shot"}]})
        self.assertEqual((code, body["exception"], body["error_code"]), (200, True, 102))
        code, body = await self.post_json("/api3/json", {"method_name": "read", "params": []})
        self.assertEqual(body["error_code"], 102)

    @async_test
    async def test_unknown_type_and_field(self) -> None:
        with self.assertRaises(shotgun_api3.Fault) as caught:
            await self.call(self.sg.find, "NoSuchType", [])
        self.assertIn("NoSuchType", str(caught.exception))
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.create, "NoSuchType", {"code": "x"})
        with self.assertRaises(shotgun_api3.Fault) as caught:
            await self.call(self.sg.create, "Shot", {"sg_nope": "x"})
        self.assertIn("sg_nope", str(caught.exception))
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.find, "Shot", [["sg_nope", "is", 1]])
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.create, "Shot", {"code": "x"}, ["sg_nope"])
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.delete, "Shot", 12345)

    @async_test
    async def test_malformed_requests_get_faults(self) -> None:
        cases = [
            (b"{not json", 400),
            (b"\xff\xfe", 400),
            (b"[1, 2]", 400),
            (json.dumps({"params": []}).encode(), 400),
            (json.dumps({"method_name": "read", "params": {"a": 1}}).encode(), 400),
            (json.dumps({"method_name": "no_such_method", "params": [{"script_name": "test", "script_key": "key"}]}).encode(), 103),
            (json.dumps({"method_name": "read", "params": [{"script_name": "test", "script_key": "key"}, ["x"]]}).encode(), 103),
            (json.dumps({"method_name": "batch", "params": [{"script_name": "test", "script_key": "key"}, {"x": 1}]}).encode(), 103),
        ]
        for raw, error_code in cases:
            code, body = await self.post_json("/api3/json", None, raw=raw)
            self.assertEqual(code, 200, raw)
            self.assertIsInstance(body, dict, raw)
            self.assertEqual((body["exception"], body["error_code"]), (True, error_code), raw)
            self.assertIsInstance(body["message"], str)

    @async_test
    async def test_gzip_request_body(self) -> None:
        payload = {"method_name": "read", "params": [{"script_name": "test", "script_key": "key"},
                                                      {"type": "Shot", "return_fields": ["id"],
                                                       "filters": {"logical_operator": "and", "conditions": []},
                                                       "paging": {"entities_per_page": 10, "current_page": 1},
                                                       "return_paging_info_without_counts": True}]}
        response = await self.http().post(
            self.site.url + "/api3/json", data=gzip.compress(json.dumps(payload).encode()),
            headers={b"content-type": [b"application/json"], b"content-encoding": [b"gzip"]},
        )
        body = json.loads(await response.content())
        self.assertEqual(body["results"]["entities"], [])
        self.assertEqual(response.headers.getRawHeaders(b"content-type")[0][:16], b"application/json")


class AuthTests(EmulatorTestCase):
    users = {"alice": "secret"}

    @async_test
    async def test_user_login_and_session_token(self) -> None:
        alice = self.client(login="alice", password="secret")
        shot = await self.call(alice.create, "Shot", {"code": "a"}, ["created_by"])
        self.assertEqual(shot["created_by"]["type"], "HumanUser")
        self.assertEqual(shot["created_by"]["name"], "alice")
        token = await self.call(alice.get_session_token)
        by_token = self.client(session_token=token)
        self.assertEqual(len(await self.call(by_token.find, "Shot", [])), 1)
        wrong = self.client(login="alice", password="nope")
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await self.call(wrong.find, "Shot", [])
        bad_token = self.client(session_token="0" * 32)
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await self.call(bad_token.find, "Shot", [])

    @async_test
    async def test_sudo_as_login(self) -> None:
        sudo = self.client(sudo_as_login="alice")
        shot = await self.call(sudo.create, "Shot", {"code": "a"}, ["created_by"])
        self.assertEqual(shot["created_by"]["name"], "alice")


class FixtureSchemaTests(EmulatorTestCase):
    def make_schema(self) -> tuple[Schema, dict | None, dict | None]:
        if not os.path.isdir(FIXTURE):
            raise unittest.SkipTest(f"schema fixture not found at {FIXTURE}")
        source = load_schema(FIXTURE)
        return source.schema, source.schema_read, source.schema_entity_read

    @async_test
    async def test_schema_reads_serve_the_dump(self) -> None:
        with open(os.path.join(FIXTURE, "schema_read.json")) as fh:
            dump = json.load(fh)
        self.assertEqual(await self.call(self.sg.schema_read), dump)
        entity_read = await self.call(self.sg.schema_entity_read)
        self.assertEqual(entity_read["ApiUser"]["name"]["value"], "Script")
        self.assertEqual(await self.call(self.sg.schema_field_read, "Shot", "code"), {"code": dump["Shot"]["code"]})
        self.assertEqual(await self.call(self.sg.schema_field_read, "Shot"), dump["Shot"])
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.schema_field_read, "Shot", "sg_nope")
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.schema_field_read, "NoSuchType")

    @async_test
    async def test_create_and_find_across_types(self) -> None:
        sg = self.sg
        project = await self.call(sg.create, "Project", {"name": "Big Buck"})
        sequence = await self.call(sg.create, "Sequence", {"code": "seq1", "project": project})
        shot = await self.call(sg.create, "Shot", {"code": "sh010", "project": project, "sg_sequence": sequence,
                                                   "tag_list": ["hero"]})
        step = await self.call(sg.create, "Step", {"code": "Anim"})
        task = await self.call(sg.create, "Task", {"content": "anim", "entity": shot, "step": step, "project": project})
        version = await self.call(sg.create, "Version", {"code": "v001", "entity": shot, "sg_task": task, "project": project})
        user = await self.call(sg.create, "HumanUser", {"name": "Bob", "login": "bob"})
        note = await self.call(sg.create, "Note", {"subject": "hi", "note_links": [shot, version], "project": project})
        await self.call(sg.create, "CustomEntity01", {"code": "c1", "project": project})

        found = await self.call(sg.find_one, "Shot", [["id", "is", shot["id"]]],
                                ["code", "sg_sequence", "tasks", "sg_status_list", "notes", "sg_sequence.Sequence.code"])
        self.assertEqual(found["sg_sequence"]["name"], "seq1")
        self.assertEqual(found["sg_sequence.Sequence.code"], "seq1")
        self.assertEqual(found["tasks"], [{"type": "Task", "id": task["id"], "name": "anim"}])
        self.assertEqual(found["notes"], [{"type": "Note", "id": note["id"], "name": "hi"}])
        self.assertEqual(found["sg_status_list"], "wtg")  # the dump's default value
        seq = await self.call(sg.find_one, "Sequence", [], ["shots"])
        self.assertEqual([s["id"] for s in seq["shots"]], [shot["id"]])
        versions = await self.call(sg.find, "Version", [["entity", "is", shot]], ["code", "sg_task"])
        self.assertEqual(versions[0]["sg_task"]["name"], "anim")
        self.assertEqual((await self.call(sg.find_one, "HumanUser", [["login", "is", "bob"]]))["id"], user["id"])
        self.assertEqual((await self.call(sg.find_one, "CustomEntity01", [], ["code"]))["code"], "c1")
        events = await self.events()
        self.assertIn("Shotgun_CustomEntity01_New", [e["event_type"] for e in events])


class ControlTests(EmulatorTestCase):
    @async_test
    async def test_reset_keeps_scripts(self) -> None:
        await self.call(self.sg.create, "Shot", {"code": "a"})
        await self.control("reset")
        self.assertEqual(await self.call(self.sg.find, "Shot", []), [])
        self.assertEqual(await self.events(), [])
        users = await self.call(self.sg.find, "ApiUser", [], ["firstname"])
        self.assertEqual(sorted(u["firstname"] for u in users), ["other", "test"])
        shot = await self.call(self.sg.create, "Shot", {"code": "b"})
        self.assertEqual(shot["id"], 1)

    @async_test
    async def test_seed(self) -> None:
        links = await self.control("seed", entities=[
            {"type": "Project", "fields": {"name": "P"}},
            {"type": "Shot", "id": 40, "fields": {"code": "sh040", "project": {"type": "Project", "id": 1},
                                                  "updated_at": "2020-01-01T00:00:00Z"}},
        ])
        self.assertEqual(links, [{"type": "Project", "id": 1}, {"type": "Shot", "id": 40}])
        self.assertEqual(await self.events(), [])
        shot = await self.call(self.sg.find_one, "Shot", [], ["code", "project", "updated_at"])
        self.assertEqual(shot["project"]["name"], "P")
        self.assertEqual(shot["updated_at"], datetime.datetime(2020, 1, 1))
        nxt = await self.call(self.sg.create, "Shot", {"code": "next"})
        self.assertEqual(nxt["id"], 41)
        await self.control("seed", events=True, entities=[{"type": "Shot", "fields": {"code": "e"}}])
        self.assertIn("Shotgun_Shot_New", [e["event_type"] for e in await self.events()])
        code, body = await self.post_json("/_emulator/seed", {"entities": [{"type": "Nope", "fields": {}}]})
        self.assertEqual(code, 400)
        self.assertTrue(body["exception"])

    @async_test
    async def test_fail_next_with_status(self) -> None:
        await self.call(self.sg.info)
        await self.control("fail", count=2, status=503, methods=["read"])
        for _ in range(2):
            with self.assertRaises(shotgun_api3.ProtocolError) as caught:
                await self.call(self.sg.find, "Shot", [])
            self.assertEqual(caught.exception.errcode, 503)
        await self.call(self.sg.create, "Shot", {"code": "a"})
        self.assertEqual(len(await self.call(self.sg.find, "Shot", [])), 1)

    @async_test
    async def test_fail_next_with_connection_reset(self) -> None:
        from twisted.web._newclient import ResponseNeverReceived

        self.emulator.fail_next(1, reset=True)
        with self.assertRaises(ResponseNeverReceived):
            await self.post_json("/api3/json", {"method_name": "info", "params": []})
        code, body = await self.post_json("/api3/json", {"method_name": "info", "params": []})
        self.assertEqual(code, 200)
        self.assertEqual(self.emulator.counters()["info"], 2)

    @async_test
    async def test_counters(self) -> None:
        await self.call(self.sg.find, "Shot", [])
        await self.call(self.sg.find, "Shot", [])
        await self.call(self.sg.create, "Shot", {"code": "a"})
        counts = await self.control("counters", reset=True, figures=False)
        self.assertEqual(counts, {"info": 1, "read": 2, "create": 1})
        self.assertEqual(await self.control("counters", figures=False), {})
        self.assertEqual(self.emulator.counters(), {})

    @async_test
    async def test_held_events_fill_a_hole_later(self) -> None:
        await self.call(self.sg.create, "Shot", {"code": "a"})
        last = (await self.events())[-1]["id"]
        await self.control("hold_events", ids=[last + 1])
        await self.call(self.sg.create, "Shot", {"code": "b"})  # New + Change(code)
        seen = [e["id"] for e in await self.events(after=last)]
        self.assertEqual(seen, [last + 2])
        self.assertEqual(await self.control("release_events"), [last + 1])
        seen = [e["id"] for e in await self.events(after=last)]
        self.assertEqual(seen, [last + 1, last + 2])
        # By count: the next event is withheld, whatever its id.
        self.emulator.hold_events(count=1)
        await self.call(self.sg.update, "Shot", 1, {"code": "a2"})
        self.assertEqual([e["id"] for e in await self.events(after=last + 2)], [])
        self.assertEqual(self.emulator.release_events(), [last + 3])

    @async_test
    async def test_skip_and_truncate(self) -> None:
        await self.call(self.sg.create, "Shot", {"code": "a"})  # events 1, 2
        await self.control("skip_event_ids", count=3)
        await self.call(self.sg.update, "Shot", 1, {"code": "b"})
        self.assertEqual([e["id"] for e in await self.events()], [1, 2, 6])
        removed = await self.control("truncate_events", below=6)
        self.assertEqual(removed, 2)
        self.assertEqual([e["id"] for e in await self.events()], [6])

    @async_test
    async def test_generate_events_off_still_bumps_updated_at(self) -> None:
        self.emulator.set_clock("2024-01-01T00:00:00Z")
        await self.call(self.sg.create, "Shot", {"code": "a"})
        count = len(await self.events())
        await self.control("generate_events", enabled=False)
        await self.control("clock", now="2024-01-01T00:05:00Z")
        await self.call(self.sg.update, "Shot", 1, {"code": "b"})
        await self.call(self.sg.create, "Shot", {"code": "c"})
        self.assertEqual(len(await self.events()), count)
        row = await self.call(self.sg.find_one, "Shot", [["id", "is", 1]], ["code", "updated_at"])
        self.assertEqual((row["code"], row["updated_at"]), ("b", datetime.datetime(2024, 1, 1, 0, 5)))
        await self.control("generate_events", enabled=True)
        await self.call(self.sg.update, "Shot", 1, {"code": "d"})
        self.assertEqual(len(await self.events()), count + 1)

    @async_test
    async def test_clock(self) -> None:
        now = await self.control("clock", now="2030-05-06T07:08:09Z")
        self.assertEqual(now, "2030-05-06T07:08:09Z")
        self.assertEqual(await self.control("clock", advance=60), "2030-05-06T07:09:09Z")
        shot = await self.call(self.sg.create, "Shot", {"code": "a"}, ["created_at"])
        self.assertEqual(shot["created_at"], datetime.datetime(2030, 5, 6, 7, 9, 9))
        real = await self.control("clock", now=None)
        self.assertNotEqual(real, "2030-05-06T07:09:09Z")


class TransportTests(EmulatorTestCase):
    """Retry-After on injected failures, the throttle, concurrency and the
    transport figures of the counters, over real HTTP (treq)."""

    INFO = {"method_name": "info", "params": []}

    def read_args(self) -> dict:
        return {"method_name": "read", "params": [
            {"script_name": "test", "script_key": "key"},
            {"type": "Shot", "return_fields": ["code", "description"], "filters": [],
             "paging": {"entities_per_page": 500, "current_page": 1}}]}

    @async_test
    async def test_retry_after_on_injected_failures(self) -> None:
        await self.control("fail", count=1, status=429, retry_after=2.5)
        response, body = await self.post_raw("/api3/json", self.INFO)
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"3"])  # whole seconds, rounded up
        self.assertIn(b"injected failure 429", body)
        self.emulator.fail_next(1, status=503, retry_after=7)
        response, _ = await self.post_raw("/api3/json", self.INFO)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"7"])
        self.emulator.fail_next(1, status=503)
        response, _ = await self.post_raw("/api3/json", self.INFO)
        self.assertEqual(response.code, 503)
        self.assertIsNone(response.headers.getRawHeaders(b"retry-after"))
        response, _ = await self.post_raw("/api3/json", self.INFO)
        self.assertEqual(response.code, 200)
        for bad in ("soon", -1, True):
            code, _ = await self.post_json("/_emulator/fail", {"retry_after": bad})
            self.assertEqual(code, 400)
        self.assertEqual(self.emulator.controls.failures, [])

    async def _concurrent_infos(self, n: int) -> list[tuple[Any, bytes]]:
        return await defer.gatherResults(
            [defer.ensureDeferred(self.post_raw("/api3/json", self.INFO)) for _ in range(n)], consumeErrors=True
        )

    @async_test
    async def test_throttle(self) -> None:
        await self.control("throttle", max_in_flight=2, retry_after=1.5)
        await self.control("latency", seconds=0.2)
        self.emulator.reset_counters()
        answers = await self._concurrent_infos(5)
        codes = sorted(response.code for response, _ in answers)
        ok = codes.count(200)
        self.assertIn(ok, (2, 3), codes)
        self.assertEqual(codes, [200] * ok + [429] * (5 - ok))
        for response, body in answers:
            if response.code == 429:
                self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"2"])
                self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"text/plain; charset=utf-8"])
                self.assertIn(b"too many requests", body)
        counts = self.emulator.counters(figures=True)
        self.assertEqual(counts["info"], 5)  # throttled requests are counted as received
        self.assertEqual(counts["<throttled>"], 5 - ok)
        self.assertEqual(counts["<max_in_flight>"], 2)
        self.assertEqual(counts["<in_flight>"], 0)
        # Off again: all five are served, at once.
        await self.control("throttle", max_in_flight=None)
        self.emulator.reset_counters()
        answers = await self._concurrent_infos(5)
        self.assertEqual([response.code for response, _ in answers], [200] * 5)
        self.assertEqual(self.emulator.counters(figures=True)["<throttled>"], 0)
        code, _ = await self.post_json("/_emulator/throttle", {"max_in_flight": -1})
        self.assertEqual(code, 400)
        code, _ = await self.post_json("/_emulator/throttle", {})
        self.assertEqual(code, 400)

    @async_test
    async def test_latency_is_concurrent(self) -> None:
        self.emulator.set_latency(0.2)
        self.emulator.reset_counters()
        answers = await self._concurrent_infos(5)
        self.assertEqual([response.code for response, _ in answers], [200] * 5)
        figures = self.emulator.counters(figures=True)
        self.assertEqual(figures["<max_in_flight>"], 5)
        self.assertEqual(figures["<in_flight>"], 0)

    @async_test
    async def test_latency_including_work_answers_reads_on_arrival(self) -> None:
        """With ``includes_work`` a read is answered from the data as it was
        when the request arrived and sent the latency after it; a write
        waits first, then acts."""
        shot = self.emulator.create("Shot", {"code": "before"})
        self.emulator.set_latency(0.3, includes_work=True)
        started = reactor.seconds()
        reading = defer.ensureDeferred(self.post_raw("/api3/json", self.read_args()))
        await task.deferLater(reactor, 0.1, lambda: None)
        self.emulator.update("Shot", shot["id"], {"code": "after"})  # while the answer waits
        response, body = await reading
        self.assertGreaterEqual(reactor.seconds() - started, 0.3)
        codes = [e["code"] for e in json.loads(body)["results"]["entities"]]
        self.assertEqual(codes, ["before"])
        code, _ = await self.post_json("/_emulator/latency", {"seconds": 0.2, "includes_work": True})
        self.assertEqual(code, 200)
        self.assertTrue(self.emulator.controls.latency_includes_work)
        self.emulator.set_latency(0.2)
        self.assertFalse(self.emulator.controls.latency_includes_work)

    @async_test
    async def test_bytes_and_gzip_figures(self) -> None:
        from sgcache.testing.server import GZIP_THRESHOLD

        self.emulator.seed([{"type": "Shot", "fields": {"code": f"sh{i:04d}", "description": "x" * 40}}
                            for i in range(200)])
        await self.call(self.sg.info)  # the client's connection: not part of the figures below
        self.emulator.reset_counters()
        figures = self.emulator.counters(figures=True)
        self.assertEqual(figures, {"<in_flight>": 0, "<max_in_flight>": 0, "<bytes_in>": 0, "<bytes_out>": 0,
                                   "<gzipped>": 0, "<throttled>": 0})
        args = self.read_args()
        sent = len(json.dumps(args).encode())
        response, zipped = await self.post_raw("/api3/json", args, {b"accept-encoding": [b"gzip"]})
        self.assertEqual(response.headers.getRawHeaders(b"content-encoding"), [b"gzip"])
        plain = gzip.decompress(zipped)
        self.assertGreaterEqual(len(plain), GZIP_THRESHOLD)
        self.assertEqual(len(json.loads(plain)["results"]["entities"]), 200)
        response, unzipped = await self.post_raw("/api3/json", args)
        self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
        self.assertEqual(unzipped, plain)
        # small: never gzipped
        response, small = await self.post_raw("/api3/json", self.INFO, {b"accept-encoding": [b"gzip"]})
        self.assertIsNone(response.headers.getRawHeaders(b"content-encoding"))
        await self.control("counters")  # control requests are not measured
        counts = self.emulator.counters(figures=True)
        self.assertEqual(counts["read"], 2)
        self.assertEqual(counts["info"], 1)
        self.assertEqual(counts["<gzipped>"], 1)
        self.assertEqual(counts["<bytes_in>"], 2 * sent + len(json.dumps(self.INFO).encode()))
        self.assertEqual(counts["<bytes_out>"], len(zipped) + len(unzipped) + len(small))
        self.assertEqual(counts["<max_in_flight>"], 1)
        self.assertEqual(counts["<in_flight>"], 0)
        # a gzipped request body counts as received (compressed)
        body = gzip.compress(json.dumps(self.INFO).encode())
        response = await self.http().post(self.site.url + "/api3/json", data=body,
                                          headers={b"content-encoding": [b"gzip"]})
        self.assertEqual(response.code, 200)
        await response.content()
        after = await self.control("counters", reset=True)
        self.assertEqual(after["<bytes_in>"] - counts["<bytes_in>"], len(body))
        self.assertEqual(after["info"], 2)
        self.assertEqual(self.emulator.counters(figures=True)["<bytes_out>"], 0)

    @async_test
    async def test_reset_and_dropped_requests_leave_flight(self) -> None:
        from twisted.web._newclient import ResponseNeverReceived

        self.emulator.fail_next(1, reset=True)
        with self.assertRaises(ResponseNeverReceived):
            await self.post_raw("/api3/json", self.INFO)
        for _ in range(50):  # the server notices the abort on a later turn
            if self.emulator.controls.in_flight == 0:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.emulator.counters(figures=True)["<in_flight>"], 0)
        # A client that gives up during the latency wait: the request leaves too.
        self.emulator.set_latency(30)
        pending = defer.ensureDeferred(self.post_raw("/api3/json", self.INFO))
        for _ in range(50):
            if self.emulator.controls.in_flight == 1:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.emulator.controls.in_flight, 1)
        pending.cancel()
        with self.assertRaises(ResponseNeverReceived):
            await pending
        for _ in range(50):
            if self.emulator.controls.in_flight == 0:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(self.emulator.controls.in_flight, 0)


class InMemoryTransportTests(unittest.TestCase):
    """In flight and throttling on a Clock: deterministic."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.emulator = Emulator(small_schema(), scripts={"test": "key"}, clock=self.clock)
        self.stub = StubTreq(EmulatorServer(self.emulator, self.clock, test_mode=True).resource())

    def post(self) -> Any:
        return self.stub.post("http://emulator/api3/json",
                              data=json.dumps({"method_name": "info", "params": []}).encode())

    def test_in_flight_counts_the_latency_wait(self) -> None:
        self.emulator.set_latency(5)
        pending = [self.post() for _ in range(3)]
        self.stub.flush()
        figures = self.emulator.counters(figures=True)
        self.assertEqual((figures["<in_flight>"], figures["<max_in_flight>"]), (3, 3))
        self.emulator.reset_counters()  # the peak restarts from what is in flight
        self.assertEqual(self.emulator.counters(figures=True)["<max_in_flight>"], 3)
        self.clock.advance(5)
        self.stub.flush()
        self.assertEqual([self.successResultOf(d).code for d in pending], [200] * 3)
        figures = self.emulator.counters(figures=True)
        self.assertEqual((figures["<in_flight>"], figures["<max_in_flight>"]), (0, 3))
        self.emulator.reset_counters()
        self.assertEqual(self.emulator.counters(figures=True)["<max_in_flight>"], 0)

    def test_throttle_answers_at_once(self) -> None:
        self.emulator.set_latency(5)
        self.emulator.set_throttle(1, retry_after=0.2)
        first = self.post()
        self.stub.flush()
        second = self.post()
        self.stub.flush()
        response = self.successResultOf(second)  # no wait: refused on arrival
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"1"])
        self.assertNoResult(first)
        self.clock.advance(5)
        self.stub.flush()
        self.assertEqual(self.successResultOf(first).code, 200)
        third = self.post()  # nothing in flight any more: served
        self.stub.flush()
        self.assertNoResult(third)
        self.clock.advance(5)
        self.stub.flush()
        self.assertEqual(self.successResultOf(third).code, 200)
        counts = self.emulator.counters(figures=True)
        self.assertEqual((counts["info"], counts["<throttled>"], counts["<max_in_flight>"]), (3, 1, 1))
        self.emulator.set_throttle(0)
        refused = self.post()
        self.stub.flush()
        self.assertEqual(self.successResultOf(refused).code, 429)
        self.assertRaises(ValueError, self.emulator.set_throttle, 1.5)
        self.assertRaises(ValueError, self.emulator.set_throttle, 2, retry_after=-1)


class SortedIdsTests(unittest.TestCase):
    """The emulator's tables keep their sorted ids for id-ordered reads
    (`engine.IdTable`): every way rows come and go keeps reads right."""

    def setUp(self) -> None:
        self.emulator = Emulator(small_schema(), scripts={"test": "key"}, clock=task.Clock())

    def page_ids(self, etype: str, after: int = 0, below: int | None = None, per_page: int = 500) -> list[int]:
        conds = [{"path": "id", "relation": "greater_than", "values": [after]}]
        if below is not None:
            conds.append({"path": "id", "relation": "less_than", "values": [below]})
        result = self.emulator.engine.read({
            "type": etype, "filters": {"logical_operator": "and", "conditions": conds},
            "paging": {"entities_per_page": per_page, "current_page": 1},
            "sorts": [{"field_name": "id", "direction": "asc"}]})
        return [e["id"] for e in result["entities"]]

    def expected(self, etype: str, after: int = 0, below: float = float("inf")) -> list[int]:
        return sorted(i for i, row in self.emulator.db[etype].items()
                      if not row.get("__retired") and after < i < below)

    def check(self) -> None:
        for etype in ("Shot", "EventLogEntry"):
            self.assertEqual(self.page_ids(etype), self.expected(etype), etype)
            self.assertEqual(self.page_ids(etype, 3, 9), self.expected(etype, 3, 9), etype)

    def test_every_table_keeps_sorted_ids(self) -> None:
        from sgcache.testing.engine import IdTable
        from sgcache.testing.sitestate import load_site

        em = self.emulator
        self.assertTrue(all(isinstance(table, IdTable) for table in em.db.values()), list(em.db))
        self.assertIn("EventLogEntry", em.db)
        self.check()
        em.seed([{"type": "Shot", "id": 20, "fields": {"code": "a"}}], events=True)
        self.check()
        em.seed([{"type": "Shot", "id": 5, "fields": {"code": "below"}}])  # below the highest id
        self.check()
        for i in range(10):
            em.create("Shot", {"code": f"c{i}"})  # 21, 22, ...
            self.check()
        self.assertEqual(self.page_ids("Shot", 20, 24), [21, 22, 23])
        with self.assertRaises(Fault):  # rolled back: its row and events are popped
            em.batch([{"request_type": "create", "entity_type": "Shot", "data": {"code": "x"}},
                      {"request_type": "create", "entity_type": "Shot", "data": {"code": 7}}])
        self.check()
        em.delete("Shot", 22)
        self.check()
        em.revive("Shot", 22)
        self.check()
        em.truncate_events(4)
        self.check()
        del em.db["Shot"][21]  # by hand, as some tests do
        self.check()
        state = {"scripts": {"test": "key"}, "next_event_id": 100, "rows": {
            "ApiUser": [{"type": "ApiUser", "id": 1, "__retired": False, "firstname": "test"}],
            "Shot": [{"type": "Shot", "id": i, "__retired": False, "code": f"s{i}"} for i in (9, 2, 7)]}}
        load_site(em, state)
        self.assertEqual(self.page_ids("Shot"), [2, 7, 9])
        self.check()
        em.reset()
        self.assertEqual(self.page_ids("Shot"), [])
        self.check()
        em.create("Shot", {"code": "again"})
        self.assertEqual(self.page_ids("Shot"), [1])
        self.check()


class NoTestModeTests(EmulatorTestCase):
    test_mode = False

    @async_test
    async def test_controls_are_hidden(self) -> None:
        code, _ = await self.post_json("/_emulator/reset", {})
        self.assertEqual(code, 404)


class LatencyTests(unittest.TestCase):
    """Latency uses the reactor's clock: driven here with a Clock, in memory."""

    def test_latency_delays_the_answer(self) -> None:
        clock = task.Clock()
        emulator = Emulator(small_schema(), scripts={"test": "key"}, clock=clock)
        server = EmulatorServer(emulator, clock, test_mode=True)
        stub = StubTreq(server.resource())
        emulator.set_latency(5)
        d = stub.post("http://emulator/api3/json", data=json.dumps({"method_name": "info", "params": []}).encode())
        stub.flush()
        self.assertNoResult(d)
        clock.advance(4.9)
        stub.flush()
        self.assertNoResult(d)
        clock.advance(0.2)
        stub.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        body = self.successResultOf(response.json())
        self.assertEqual(body["api_max_entities_per_page"], 500)
        self.assertEqual(emulator.counters(), {"info": 1})


class PluginTests(unittest.TestCase):
    def test_plugin_is_listed(self) -> None:
        from twisted.application.service import IServiceMaker
        from twisted.plugin import getPlugins

        names = [p.tapname for p in getPlugins(IServiceMaker)]
        self.assertIn("sgcache-emulator", names)

    def test_options_and_service(self) -> None:
        from twisted.application.internet import StreamServerEndpointService
        from twisted.internet.testing import MemoryReactorClock

        schema_path = self.mktemp() + ".yml"
        with open(schema_path, "w") as fh:
            json.dump({"entities": {"Shot": {"fields": {"code": "text"}}}}, fh)
        config = tap.Options()
        config.parseOptions(["--schema", schema_path, "--listen", "tcp:0", "--script", "a:b",
                             "--script", "c:d:e", "--page-size", "7", "--test-mode"])
        self.assertEqual(config["scripts"], {"a": "b", "c": "d:e"})
        svc = tap.makeService(config, reactor=MemoryReactorClock())
        listeners = [s for s in svc if isinstance(s, StreamServerEndpointService)]
        self.assertEqual(len(listeners), 1)
        with self.assertRaises(usage.UsageError):
            tap.Options().parseOptions(["--script", "a:b"])
        with self.assertRaises(usage.UsageError):
            tap.Options().parseOptions(["--schema", schema_path, "--script", "nokey"])
