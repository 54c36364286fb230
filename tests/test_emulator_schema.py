"""Site schema changes on the Shotgun emulator, driven with the real client:
``schema_field_create|update|delete`` over HTTP, the Python-level knobs
(`create_field`, `update_field`, `delete_field`, `change_field_type`) and
their control endpoints, what reads, filters and writes see at once, and the
``Shotgun_DisplayColumn_*`` events they log."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import shotgun_api3
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.site.faults import Fault
from sgcache.testing.emulator import Emulator, field_system_name, load_schema
from sgcache.testing.fixtures import FIXTURE_SCHEMA
from sgcache.testing.harness import EmulatorTestCase, async_test, small_schema


class SchemaChangeTests(EmulatorTestCase):
    async def column_events(self, after: int = 0) -> list[dict]:
        return [e for e in await self.events(after=after) if "DisplayColumn" in e["event_type"]]

    async def last_event_id(self) -> int:
        events = await self.events()
        return events[-1]["id"] if events else 0

    async def fault(self, fn: Any, *args: Any) -> str:
        with self.assertRaises(shotgun_api3.Fault) as caught:
            await self.call(fn, *args)
        return str(caught.exception)

    # -- create ----------------------------------------------------------------
    @async_test
    async def test_create_field_is_served_at_once(self) -> None:
        sg = self.sg
        old = await self.call(sg.create, "Shot", {"code": "old"})
        name = await self.call(sg.schema_field_create, "Shot", "number", "Frame Count",
                               {"description": "frames in the cut"})
        self.assertEqual(name, "sg_frame_count")
        definition = (await self.call(sg.schema_field_read, "Shot", "sg_frame_count"))["sg_frame_count"]
        self.assertEqual(definition["data_type"]["value"], "number")
        self.assertEqual(definition["name"]["value"], "Frame Count")
        self.assertEqual(definition["description"]["value"], "frames in the cut")
        self.assertEqual(definition["entity_type"]["value"], "Shot")
        self.assertIn("sg_frame_count", (await self.call(sg.schema_read))["Shot"])

        # existing rows read null; the field filters and sorts as a number
        found = await self.call(sg.find, "Shot", [["sg_frame_count", "is", None]], ["sg_frame_count"])
        self.assertEqual(found, [{"type": "Shot", "id": old["id"], "sg_frame_count": None}])
        new = await self.call(sg.create, "Shot", {"code": "new", "sg_frame_count": 12})
        self.assertEqual(new["sg_frame_count"], 12)
        await self.call(sg.update, "Shot", old["id"], {"sg_frame_count": 3})
        big = await self.call(sg.find, "Shot", [["sg_frame_count", "greater_than", 10]], ["code"])
        self.assertEqual([s["code"] for s in big], ["new"])
        ordered = await self.call(sg.find, "Shot", [], ["code"],
                                  order=[{"field_name": "sg_frame_count", "direction": "desc"}])
        self.assertEqual([s["code"] for s in ordered], ["new", "old"])
        await self.fault(sg.find, "Shot", [["sg_frame_count", "contains", "1"]])
        await self.fault(sg.update, "Shot", old["id"], {"sg_frame_count": "many"})

    @async_test
    async def test_create_names(self) -> None:
        self.assertEqual(field_system_name("Client's Cut #2"), "sg_client_s_cut__2")
        first = await self.call(self.sg.schema_field_create, "Shot", "text", "Notes For Editor")
        second = await self.call(self.sg.schema_field_create, "Shot", "text", "notes for editor")
        third = await self.call(self.sg.schema_field_create, "Shot", "checkbox", "Notes-For-Editor")
        self.assertEqual((first, second, third),
                         ("sg_notes_for_editor", "sg_notes_for_editor_1", "sg_notes_for_editor_2"))
        fields = await self.call(self.sg.schema_field_read, "Shot")
        self.assertEqual(fields["sg_notes_for_editor_1"]["name"]["value"], "notes for editor")
        shot = await self.call(self.sg.find_one, "Shot", [], ["sg_notes_for_editor_2"])
        self.assertIsNone(shot)
        await self.call(self.sg.create, "Shot", {"code": "x"})
        shot = await self.call(self.sg.find_one, "Shot", [], ["sg_notes_for_editor_2"])
        self.assertIs(shot["sg_notes_for_editor_2"], False)  # a new checkbox reads false

    @async_test
    async def test_create_link_field(self) -> None:
        sg = self.sg
        name = await self.call(sg.schema_field_create, "Shot", "entity", "Hero Sequence",
                               {"valid_types": ["Sequence"]})
        definition = (await self.call(sg.schema_field_read, "Shot", name))[name]
        self.assertEqual(definition["properties"]["valid_types"]["value"], ["Sequence"])
        seq = await self.call(sg.create, "Sequence", {"code": "seq1"})
        asset = await self.call(sg.create, "Asset", {"code": "a1"})
        shot = await self.call(sg.create, "Shot", {"code": "sh", name: seq})
        found = await self.call(sg.find, "Shot", [[f"{name}.Sequence.code", "is", "seq1"]],
                                [name, f"{name}.Sequence.code"])
        self.assertEqual(found, [{"type": "Shot", "id": shot["id"], f"{name}.Sequence.code": "seq1",
                                  name: {"type": "Sequence", "id": seq["id"], "name": "seq1"}}])
        await self.fault(sg.create, "Shot", {"code": "bad", name: asset})
        many = await self.call(sg.schema_field_create, "Shot", "multi_entity", "Refs",
                               {"valid_types": ["Asset", "Sequence"]})
        await self.call(sg.update, "Shot", shot["id"], {many: [asset, seq]})
        found = await self.call(sg.find, "Shot", [[many, "type_is", "Asset"]], [many])
        self.assertEqual([len(s[many]) for s in found], [2])

    @async_test
    async def test_create_faults(self) -> None:
        sg = self.sg
        self.assertIn("NoSuchType", await self.fault(sg.schema_field_create, "NoSuchType", "text", "X"))
        self.assertIn("data_type", await self.fault(sg.schema_field_create, "Shot", "nonsense", "X"))
        await self.fault(sg.schema_field_create, "Shot", "summary", "X")  # not creatable through the API
        await self.fault(sg.schema_field_create, "Shot", "text", "")
        await self.fault(sg.schema_field_create, "Shot", "entity", "No Types")
        await self.fault(sg.schema_field_create, "Shot", "entity", "Bad Types", {"valid_types": ["Nope"]})
        await self.fault(sg.schema_field_create, "Shot", "number", "Bad Prop", {"colour": "red"})
        await self.fault(sg.schema_field_create, "Shot", "number", "Bad Values", {"valid_values": ["a"]})
        await self.fault(sg.schema_field_create, "Shot", "number", "Bad Default", {"default_value": "x"})
        self.assertNotIn("sg_x", (await self.call(sg.schema_read))["Shot"])
        self.assertEqual(await self.column_events(), [])

    @async_test
    async def test_default_value_and_valid_values(self) -> None:
        sg = self.sg
        name = await self.call(sg.schema_field_create, "Shot", "list", "Priority",
                               {"valid_values": ["low", "high"], "default_value": "low"})
        shot = await self.call(sg.create, "Shot", {"code": "a"}, [name])
        self.assertEqual(shot[name], "low")
        await self.fault(sg.update, "Shot", shot["id"], {name: "urgent"})

    @async_test
    async def test_credentials_are_required(self) -> None:
        stranger = self.client(script="nobody", key="nothing")
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await self.call(stranger.schema_field_create, "Shot", "text", "Sneaky")
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await self.call(stranger.schema_field_delete, "Shot", "sg_cut_in")
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await self.call(stranger.schema_field_update, "Shot", "sg_cut_in", {"name": "X"})
        self.assertIn("sg_cut_in", (await self.call(self.sg.schema_read))["Shot"])

    # -- update ----------------------------------------------------------------
    @async_test
    async def test_update_field(self) -> None:
        sg = self.sg
        shot = await self.call(sg.create, "Shot", {"code": "a", "sg_status_list": "ip"})
        last = await self.last_event_id()
        ok = await self.call(sg.schema_field_update, "Shot", "sg_status_list",
                             {"name": "State", "description": "where it is", "valid_values": ["ip", "done"]})
        self.assertIs(ok, True)
        definition = (await self.call(sg.schema_field_read, "Shot", "sg_status_list"))["sg_status_list"]
        self.assertEqual(definition["name"]["value"], "State")
        self.assertEqual(definition["description"]["value"], "where it is")
        self.assertEqual(definition["properties"]["valid_values"]["value"], ["ip", "done"])
        await self.call(sg.update, "Shot", shot["id"], {"sg_status_list": "done"})
        await self.fault(sg.update, "Shot", shot["id"], {"sg_status_list": "fin"})

        events = await self.events(after=last)
        changes = [e for e in events if e["event_type"] == "Shotgun_DisplayColumn_Change"]
        self.assertEqual([e["attribute_name"] for e in changes], ["human_name", "description", "valid_values"])
        column = self.emulator.column_id("Shot", "sg_status_list")
        self.assertEqual(changes[0]["meta"], {
            "type": "attribute_change", "attribute_name": "human_name", "entity_type": "DisplayColumn",
            "entity_id": column, "old_value": "Sg Status List", "new_value": "State",
        })
        self.assertEqual(changes[0]["entity"], {"type": "DisplayColumn", "id": column, "name": "sg_status_list"})
        self.assertEqual(changes[2]["meta"]["new_value"], ["ip", "done"])

        # the same values again: True, no event
        last = await self.last_event_id()
        self.assertIs(await self.call(sg.schema_field_update, "Shot", "sg_status_list", {"name": "State"}), True)
        self.assertEqual(await self.column_events(after=last), [])

    @async_test
    async def test_update_valid_types(self) -> None:
        sg = self.sg
        asset = await self.call(sg.create, "Asset", {"code": "a"})
        await self.fault(sg.create, "Shot", {"code": "s", "sg_sequence": asset})
        await self.call(sg.schema_field_update, "Shot", "sg_sequence", {"valid_types": ["Sequence", "Asset"]})
        shot = await self.call(sg.create, "Shot", {"code": "s", "sg_sequence": asset})
        self.assertEqual(shot["sg_sequence"]["type"], "Asset")
        found = await self.call(sg.find, "Shot", [["sg_sequence.Asset.code", "is", "a"]])
        self.assertEqual([s["id"] for s in found], [shot["id"]])

    @async_test
    async def test_update_faults(self) -> None:
        sg = self.sg
        self.assertIn("sg_nope", await self.fault(sg.schema_field_update, "Shot", "sg_nope", {"name": "X"}))
        await self.fault(sg.schema_field_update, "NoSuchType", "code", {"name": "X"})
        await self.fault(sg.schema_field_update, "Shot", "code", {"colour": "red"})
        await self.fault(sg.schema_field_update, "Shot", "code", {"valid_types": ["Shot"]})
        await self.fault(sg.schema_field_update, "Shot", "sg_sequence", {"valid_types": ["Nope"]})
        await self.fault(sg.schema_field_update, "Shot", "sg_status_list", {"default_value": "not-valid"})
        self.assertEqual(await self.column_events(), [])

    # -- delete ----------------------------------------------------------------
    @async_test
    async def test_delete_field(self) -> None:
        sg = self.sg
        shot = await self.call(sg.create, "Shot", {"code": "a", "sg_cut_in": 5})
        retired = await self.call(sg.create, "Shot", {"code": "b", "sg_cut_in": 6})
        await self.call(sg.delete, "Shot", retired["id"])
        self.assertIs(await self.call(sg.schema_field_delete, "Shot", "sg_cut_in"), True)

        self.assertNotIn("sg_cut_in", (await self.call(sg.schema_read))["Shot"])
        self.assertNotIn("sg_cut_in", await self.call(sg.schema_field_read, "Shot"))
        self.assertIn("sg_cut_in", await self.fault(sg.schema_field_read, "Shot", "sg_cut_in"))
        self.assertIn("sg_cut_in", await self.fault(sg.find, "Shot", [["sg_cut_in", "is", 5]]))
        await self.fault(sg.find, "Shot", [], ["code"], [{"field_name": "sg_cut_in", "direction": "asc"}])
        await self.fault(sg.create, "Shot", {"code": "c", "sg_cut_in": 1})
        await self.fault(sg.update, "Shot", shot["id"], {"sg_cut_in": 1})
        await self.fault(sg.summarize, "Shot", [], [{"field": "sg_cut_in", "type": "sum"}])
        # unknown return fields are left out, as for any unknown field
        self.assertEqual(await self.call(sg.find_one, "Shot", [], ["sg_cut_in"]), {"type": "Shot", "id": shot["id"]})
        for row in self.emulator.db["Shot"].values():
            self.assertNotIn("sg_cut_in", row)
        await self.fault(sg.schema_field_delete, "Shot", "sg_cut_in")

        # the name is free again, and the old values are gone
        again = await self.call(sg.schema_field_create, "Shot", "number", "Cut In")
        self.assertEqual(again, "sg_cut_in")
        found = await self.call(sg.find, "Shot", [], ["sg_cut_in"], retired_only=True)
        self.assertEqual(found, [{"type": "Shot", "id": retired["id"], "sg_cut_in": None}])

    @async_test
    async def test_delete_refuses_system_fields(self) -> None:
        sg = self.sg
        for fname in ("id", "created_at", "updated_at", "created_by", "updated_by", "code"):
            await self.fault(sg.schema_field_delete, "Shot", fname)
        await self.fault(sg.schema_field_delete, "Task", "content")  # Task's identifier
        await self.fault(sg.schema_field_delete, "EventLogEntry", "meta")
        await self.fault(sg.schema_field_delete, "Shot", "sg_nope")
        await self.fault(sg.schema_field_delete, "NoSuchType", "sg_cut_in")
        fields = (await self.call(sg.schema_read))["Shot"]
        for fname in ("id", "created_at", "updated_at", "created_by", "updated_by", "code"):
            self.assertIn(fname, fields)
        self.assertEqual(await self.column_events(), [])

    @async_test
    async def test_delete_one_side_of_a_backref(self) -> None:
        sg = self.sg
        seq = await self.call(sg.create, "Sequence", {"code": "seq"})
        await self.call(sg.schema_field_delete, "Shot", "sg_sequence")
        shot = await self.call(sg.create, "Shot", {"code": "s"})
        # Sequence.shots no longer mirrors anything: setting it touches no Shot field
        await self.call(sg.update, "Sequence", seq["id"], {"shots": [shot]})
        found = await self.call(sg.find_one, "Sequence", [], ["shots"])
        self.assertEqual([s["id"] for s in found["shots"]], [shot["id"]])
        self.assertIsNone(self.emulator.schema.get_field("Sequence", "shots").reverse)

    # -- events ----------------------------------------------------------------
    @async_test
    async def test_event_shapes(self) -> None:
        sg = self.sg
        self.emulator.set_clock("2024-05-06T07:08:09Z")
        sg.set_session_uuid("6f1c0a4e-0000-4000-8000-000000000002")
        await self.call(sg.create, "Shot", {"code": "a"})
        last = await self.last_event_id()
        name = await self.call(sg.schema_field_create, "Shot", "text", "Vendor")
        column = self.emulator.column_id("Shot", name)
        self.assertIsInstance(column, int)
        await self.call(sg.schema_field_update, "Shot", name, {"description": "who does it"})
        await self.call(sg.schema_field_delete, "Shot", name)
        self.assertIsNone(self.emulator.column_id("Shot", name))

        events = await self.events(after=last)
        self.assertEqual([e["event_type"] for e in events], [
            "Shotgun_DisplayColumn_New", "Shotgun_DisplayColumn_Change", "Shotgun_DisplayColumn_Retirement",
        ])
        ids = [e["id"] for e in events]
        self.assertEqual(ids, list(range(last + 1, last + 4)))
        new, change, retirement = events
        self.assertEqual(new["meta"], {"type": "new_entity", "entity_type": "DisplayColumn", "entity_id": column})
        self.assertEqual(change["meta"], {
            "type": "attribute_change", "attribute_name": "description", "entity_type": "DisplayColumn",
            "entity_id": column, "old_value": "", "new_value": "who does it",
        })
        self.assertEqual(change["attribute_name"], "description")
        self.assertEqual(retirement["meta"], {
            "type": "entity_retirement", "class_name": "DisplayColumn", "entity_type": "DisplayColumn",
            "entity_id": column, "id": column, "display_name": name,
            "retirement_date": "2024-05-06 07:08:09 UTC",
        })
        for event in events:
            # the column is retired now: links to it read as null, as for any retired entity
            self.assertIsNone(event["entity"])
            self.assertIsNone(event["project"])
            self.assertEqual(event["user"], {"type": "ApiUser", "id": 1, "name": "test"})
            self.assertEqual(event["session_uuid"], "6f1c0a4e-0000-4000-8000-000000000002")
        filtered = await self.call(sg.find, "EventLogEntry",
                                   [["event_type", "starts_with", "Shotgun_DisplayColumn_"]], ["id"])
        self.assertEqual([e["id"] for e in filtered], ids)

    @async_test
    async def test_columns_have_stable_ids(self) -> None:
        em = self.emulator
        ids = {(t.name, f): em.column_id(t.name, f) for t in em.schema for f in t.fields}
        self.assertNotIn(None, ids.values())
        self.assertEqual(len(set(ids.values())), len(ids))
        await self.call(self.sg.schema_field_create, "Shot", "text", "Extra")
        await self.call(self.sg.schema_field_update, "Shot", "code", {"name": "Shot Name"})
        self.assertEqual({k: em.column_id(*k) for k in ids}, ids)
        self.assertGreater(em.column_id("Shot", "sg_extra"), max(ids.values()))
        # a column of a live field is readable as an event's entity with its name
        (new,) = [e for e in await self.column_events() if e["event_type"].endswith("_New")]
        self.assertEqual(new["entity"], {"type": "DisplayColumn", "id": em.column_id("Shot", "sg_extra"),
                                         "name": "sg_extra"})
        # but DisplayColumn is not a type of the site schema
        self.assertNotIn("DisplayColumn", await self.call(self.sg.schema_read))
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.find, "DisplayColumn", [])
        with self.assertRaises(shotgun_api3.Fault):
            await self.call(self.sg.create, "DisplayColumn", {})

    @async_test
    async def test_generate_events_off(self) -> None:
        await self.control("generate_events", enabled=False)
        name = await self.call(self.sg.schema_field_create, "Shot", "text", "Quiet")
        await self.call(self.sg.schema_field_update, "Shot", name, {"name": "Hush"})
        await self.call(self.sg.schema_field_delete, "Shot", name)
        self.emulator.change_field_type("Shot", "sg_cut_in", "float")
        self.assertEqual(await self.events(), [])
        await self.control("generate_events", enabled=True)
        await self.call(self.sg.schema_field_create, "Shot", "text", "Loud")
        self.assertEqual([e["event_type"] for e in await self.events()], ["Shotgun_DisplayColumn_New"])

    @async_test
    async def test_script_without_events(self) -> None:
        row = await self.call(self.sg.find_one, "ApiUser", [["firstname", "is", "other"]])
        await self.call(self.sg.update, "ApiUser", row["id"], {"generate_event_log_entries": False})
        last = await self.last_event_id()
        other = self.client(script="other", key="okey")
        await self.call(other.schema_field_create, "Shot", "text", "Silent")
        self.assertEqual(await self.events(after=last), [])
        self.emulator.create_field("Shot", "Noisy", "text", script="test")
        self.assertEqual(len(await self.column_events(after=last)), 1)

    @async_test
    async def test_held_events_and_holes_apply(self) -> None:
        last = await self.last_event_id()
        await self.control("hold_events", count=1)
        await self.call(self.sg.schema_field_create, "Shot", "text", "Held")
        self.assertEqual(await self.events(after=last), [])
        self.assertEqual(await self.control("release_events"), [last + 1])
        self.assertEqual([e["id"] for e in await self.events(after=last)], [last + 1])

    # -- the Python API and the control endpoint -----------------------------
    @async_test
    async def test_python_create_update_delete(self) -> None:
        em = self.emulator
        shot = em.create("Shot", {"code": "a"})
        self.assertEqual(em.create_field("Shot", "sg_exact", "checkbox"), "sg_exact")
        self.assertIs(em.find_one("Shot", [], ["sg_exact"])["sg_exact"], False)
        self.assertEqual(em.schema_field_read("Shot", "sg_exact")["sg_exact"]["name"]["value"], "Exact")
        with self.assertRaises(Fault):
            em.create_field("Shot", "sg_exact", "text")  # an explicit system name that exists
        self.assertEqual(em.create_field("Shot", "Exact", "text"), "sg_exact_1")
        # the Python knob takes any known data type
        self.assertEqual(em.create_field("Shot", "Blob", "serializable"), "sg_blob")
        em.update("Shot", shot["id"], {"sg_blob": {"a": 1}})
        self.assertIs(em.update_field("Shot", "sg_blob", {"description": "json"}), True)
        self.assertEqual(em.schema_read()["Shot"]["sg_blob"]["description"]["value"], "json")
        self.assertIs(em.delete_field("Shot", "sg_blob"), True)
        self.assertNotIn("sg_blob", em.schema_read()["Shot"])
        # the client's method names work in-process too
        self.assertEqual(em.schema_field_create("Shot", "date", "Due"), "sg_due")
        self.assertTrue(em.schema_field_update("Shot", "sg_due", {"name": "Due Date"}))
        self.assertTrue(em.schema_field_delete("Shot", "sg_due"))
        # and the client sees all of it
        fields = await self.call(self.sg.schema_field_read, "Shot")
        self.assertEqual(fields["sg_exact_1"]["data_type"]["value"], "text")
        self.assertNotIn("sg_due", fields)

    @async_test
    async def test_change_field_type_python(self) -> None:
        em, sg = self.emulator, self.sg
        a = await self.call(sg.create, "Shot", {"code": "a", "sg_cut_in": 5})
        b = await self.call(sg.create, "Shot", {"code": "b", "sg_cut_in": 17})
        c = await self.call(sg.create, "Shot", {"code": "c"})
        await self.call(sg.delete, "Shot", b["id"])
        column = em.column_id("Shot", "sg_cut_in")
        last = await self.last_event_id()
        self.assertEqual(em.change_field_type("Shot", "sg_cut_in", "text", convert=lambda v: None if v is None
                                              else f"frame {v}"), "sg_cut_in")

        definition = (await self.call(sg.schema_field_read, "Shot", "sg_cut_in"))["sg_cut_in"]
        self.assertEqual(definition["data_type"]["value"], "text")
        self.assertEqual(definition["name"]["value"], "Sg Cut In")  # the display name stays
        found = await self.call(sg.find, "Shot", [], ["sg_cut_in"])
        self.assertEqual({s["id"]: s["sg_cut_in"] for s in found}, {a["id"]: "frame 5", c["id"]: None})
        retired = await self.call(sg.find, "Shot", [], ["sg_cut_in"], retired_only=True)
        self.assertEqual(retired[0]["sg_cut_in"], "frame 17")
        # text semantics now
        hits = await self.call(sg.find, "Shot", [["sg_cut_in", "contains", "FRAME"]], ["code"])
        self.assertEqual([s["code"] for s in hits], ["a"])
        await self.fault(sg.find, "Shot", [["sg_cut_in", "greater_than", 3]])
        await self.fault(sg.update, "Shot", a["id"], {"sg_cut_in": 9})
        await self.call(sg.update, "Shot", a["id"], {"sg_cut_in": "frame 9"})

        events = await self.column_events(after=last)
        self.assertEqual([e["event_type"] for e in events],
                         ["Shotgun_DisplayColumn_Retirement", "Shotgun_DisplayColumn_New"])
        self.assertEqual(events[0]["meta"]["entity_id"], column)
        new_column = em.column_id("Shot", "sg_cut_in")
        self.assertNotEqual(new_column, column)
        self.assertEqual(events[1]["meta"]["entity_id"], new_column)
        self.assertEqual(events[1]["entity"], {"type": "DisplayColumn", "id": new_column, "name": "sg_cut_in"})

    @async_test
    async def test_change_field_type_default_nulls_and_links(self) -> None:
        em, sg = self.emulator, self.sg
        seq = await self.call(sg.create, "Sequence", {"code": "s1"})
        a = await self.call(sg.create, "Shot", {"code": "a", "description": "x"})
        b = await self.call(sg.create, "Shot", {"code": "b", "description": "y"})
        with self.assertRaises(Fault):
            em.change_field_type("Shot", "description", "entity")  # a link type needs valid_types
        em.change_field_type("Shot", "description", "entity", properties={"valid_types": ["Sequence"]},
                             values={a["id"]: {"type": "Sequence", "id": seq["id"]}})
        found = await self.call(sg.find, "Shot", [["description", "is", seq]], ["description"])
        self.assertEqual(found, [{"type": "Shot", "id": a["id"],
                                  "description": {"type": "Sequence", "id": seq["id"], "name": "s1"}}])
        rest = await self.call(sg.find, "Shot", [["description", "is", None]], ["code"])
        self.assertEqual([s["id"] for s in rest], [b["id"]])
        definition = (await self.call(sg.schema_field_read, "Shot", "description"))["description"]
        self.assertEqual(definition["properties"]["valid_types"]["value"], ["Sequence"])

    @async_test
    async def test_change_field_type_refusals_change_nothing(self) -> None:
        em, sg = self.emulator, self.sg
        await self.call(sg.create, "Shot", {"code": "a", "description": "not a number"})
        before = copy.deepcopy(em.db["Shot"])
        last = await self.last_event_id()
        with self.assertRaises(Fault):
            em.change_field_type("Shot", "description", "number", convert="int")
        with self.assertRaises(Fault):
            em.change_field_type("Shot", "description", "number", convert="keep")
        with self.assertRaises(Fault):
            em.change_field_type("Shot", "description", "nonsense")
        for fname in ("id", "created_at", "updated_by"):
            with self.assertRaises(Fault):
                em.change_field_type("Shot", fname, "text")
        with self.assertRaises(Fault):
            em.change_field_type("Shot", "sg_nope", "text")
        self.assertEqual(em.db["Shot"], before)
        self.assertEqual(em.schema.get_field("Shot", "description").data_type, "text")
        self.assertEqual(await self.events(after=last), [])

    @async_test
    async def test_control_endpoint(self) -> None:
        sg = self.sg
        a = await self.call(sg.create, "Shot", {"code": "a", "sg_cut_in": 5})
        b = await self.call(sg.create, "Shot", {"code": "b", "sg_cut_in": 7})
        self.assertEqual(await self.control("create_field", entity_type="Shot", name="Budget",
                                            data_type="currency", properties={"description": "$"}), "sg_budget")
        self.assertIs(await self.control("update_field", entity_type="Shot", field_name="sg_budget",
                                         properties={"name": "Money"}), True)
        column = await self.control("column_id", entity_type="Shot", field_name="sg_budget")
        self.assertEqual(column, self.emulator.column_id("Shot", "sg_budget"))
        self.assertEqual(await self.control("change_field_type", entity_type="Shot", field_name="sg_cut_in",
                                            data_type="float", convert="float",
                                            values={str(b["id"]): 7.5}), "sg_cut_in")
        found = await self.call(sg.find, "Shot", [["sg_cut_in", "between", [5.0, 7.5]]], ["sg_cut_in"],
                                order=[{"field_name": "id", "direction": "asc"}])
        self.assertEqual([s["sg_cut_in"] for s in found], [5.0, 7.5])
        self.assertIs(await self.control("delete_field", entity_type="Shot", field_name="sg_budget"), True)
        fields = await self.call(sg.schema_field_read, "Shot")
        self.assertNotIn("sg_budget", fields)
        self.assertEqual(fields["sg_cut_in"]["data_type"]["value"], "float")
        self.assertEqual([e["event_type"] for e in await self.column_events()], [
            "Shotgun_DisplayColumn_New", "Shotgun_DisplayColumn_Change",
            "Shotgun_DisplayColumn_Retirement", "Shotgun_DisplayColumn_New",
            "Shotgun_DisplayColumn_Retirement",
        ])
        # bad arguments: HTTP 400 with a fault body, nothing changed
        code, body = await self.post_json("/_emulator/change_field_type", {
            "entity_type": "Shot", "field_name": "code", "data_type": "number", "convert": "keep"})
        self.assertEqual(code, 400)
        self.assertTrue(body["exception"])
        code, body = await self.post_json("/_emulator/delete_field", {"entity_type": "Shot"})
        self.assertEqual(code, 400)
        code, body = await self.post_json("/_emulator/change_field_type", {
            "entity_type": "Shot", "field_name": "code", "data_type": "text", "convert": "nope"})
        self.assertEqual(code, 400)
        self.assertEqual((await self.call(sg.find_one, "Shot", [["id", "is", a["id"]]], ["code"]))["code"], "a")

    @async_test
    async def test_reset_restores_the_schema(self) -> None:
        em = self.emulator
        column = em.column_id("Shot", "sg_cut_in")
        await self.call(self.sg.schema_field_create, "Shot", "text", "Temp")
        await self.call(self.sg.schema_field_delete, "Shot", "sg_cut_in")
        await self.control("reset", keep_schema=True)
        fields = await self.call(self.sg.schema_field_read, "Shot")
        self.assertIn("sg_temp", fields)
        self.assertNotIn("sg_cut_in", fields)
        self.assertEqual(await self.events(), [])
        await self.control("reset")
        fields = await self.call(self.sg.schema_field_read, "Shot")
        self.assertNotIn("sg_temp", fields)
        self.assertIn("sg_cut_in", fields)
        self.assertEqual(em.column_id("Shot", "sg_cut_in"), column)
        shot = await self.call(self.sg.create, "Shot", {"code": "a", "sg_cut_in": 1})
        self.assertEqual(shot["sg_cut_in"], 1)


class SharedObjectsTests(unittest.TestCase):
    """The Schema and the dump given to an emulator are never modified."""

    def test_schema_passed_in_is_not_mutated(self) -> None:
        schema = small_schema()
        before = json.dumps(schema.to_dict(), sort_keys=True)
        em = Emulator(schema, scripts={"test": "key"})
        other = Emulator(schema, scripts={"test": "key"})
        em.create_field("Shot", "Extra", "number")
        em.update_field("Shot", "sg_status_list", {"valid_values": ["x"]})
        em.delete_field("Shot", "sg_sequence")
        em.change_field_type("Shot", "sg_cut_in", "text")
        self.assertEqual(json.dumps(schema.to_dict(), sort_keys=True), before)
        self.assertIsNot(em.schema, schema)
        self.assertIsNone(other.schema.get_field("Shot", "sg_extra"))
        self.assertEqual(other.schema.get_field("Shot", "sg_cut_in").data_type, "number")
        self.assertIn("sg_sequence", other.schema_read()["Shot"])
        self.assertIs(em.engine.schema, em.schema)

    def test_dump_passed_in_is_not_mutated(self) -> None:
        if not os.path.isdir(FIXTURE_SCHEMA):
            raise unittest.SkipTest(f"schema fixture not found at {FIXTURE_SCHEMA}")
        source = load_schema(FIXTURE_SCHEMA)
        dump_before = copy.deepcopy(source.schema_read)
        em = Emulator(source.schema, scripts={"test": "key"}, schema_read=source.schema_read,
                      schema_entity_read=source.schema_entity_read)
        self.assertEqual(em.create_field("Shot", "Vendor Notes", "text"), "sg_vendor_notes")
        em.update_field("Shot", "sg_status_list", {"name": "State", "valid_values": ["wtg", "ip"]})
        em.delete_field("Shot", "sg_cut_in")
        em.change_field_type("Shot", "sg_cut_out", "float", convert="float")
        self.assertEqual(source.schema_read, dump_before)
        served = em.schema_read()["Shot"]
        self.assertEqual(served["sg_status_list"]["name"]["value"], "State")
        self.assertEqual(served["sg_status_list"]["properties"]["valid_values"]["value"], ["wtg", "ip"])
        # the rest of the dump's definition is kept as it was
        self.assertEqual(served["sg_status_list"]["properties"]["default_value"],
                         dump_before["Shot"]["sg_status_list"]["properties"]["default_value"])
        self.assertEqual(served["sg_cut_out"]["data_type"]["value"], "float")
        self.assertNotIn("sg_cut_in", served)
        self.assertIsNone(Schema.from_schema_read(dump_before).get_field("Shot", "sg_vendor_notes"))
        em.reset()
        self.assertEqual(em.schema_read(), {**em.schema.to_schema_read(), **dump_before})
