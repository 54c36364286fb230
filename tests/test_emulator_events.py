"""The Shotgun emulator's event log, read back through the real client:
every event shape of PROTOCOL.md ("EventLogEntry"), backrefs on both sides,
and the switches that stop events."""

from __future__ import annotations

import datetime
from typing import Any

from sgcache.testing.harness import EmulatorTestCase, async_test


def _link(entity: dict, name: Any) -> dict:
    return {"type": entity["type"], "id": entity["id"], "name": name}


class EventShapeTests(EmulatorTestCase):
    def setUp(self) -> Any:
        d = super().setUp()
        d.addCallback(lambda _: self.emulator.set_clock("2024-05-06T07:08:09Z"))
        return d

    @async_test
    async def test_new_and_change_in_create(self) -> None:
        self.sg.set_session_uuid("6f1c0a4e-0000-4000-8000-000000000001")
        project = await self.call(self.sg.create, "Project", {"name": "P"})
        shot = await self.call(self.sg.create, "Shot", {"code": "sh010", "project": project, "sg_cut_in": 7})
        events = await self.events(after=2)
        self.assertEqual([e["event_type"] for e in events],
                         ["Shotgun_Shot_New"] + ["Shotgun_Shot_Change"] * 3)
        new = events[0]
        self.assertEqual(new["entity"], _link(shot, "sh010"))
        self.assertEqual(new["meta"], {"type": "new_entity", "entity_type": "Shot", "entity_id": shot["id"]})
        self.assertEqual(new["project"], _link(project, "P"))
        self.assertEqual(new["user"], {"type": "ApiUser", "id": 1, "name": "test"})
        self.assertEqual(new["session_uuid"], "6f1c0a4e-0000-4000-8000-000000000001")
        self.assertEqual(new["created_at"], datetime.datetime(2024, 5, 6, 7, 8, 9))
        by_field = {e["attribute_name"]: e for e in events[1:]}
        self.assertEqual(by_field["code"]["meta"], {
            "type": "attribute_change", "attribute_name": "code", "entity_type": "Shot",
            "entity_id": shot["id"], "field_data_type": "text", "in_create": True,
            "old_value": None, "new_value": "sh010",
        })
        self.assertEqual(by_field["project"]["meta"]["new_value"], _link(project, "P"))
        self.assertEqual(by_field["sg_cut_in"]["meta"]["field_data_type"], "number")
        ids = [e["id"] for e in await self.events()]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), len(ids))

    @async_test
    async def test_update_change(self) -> None:
        shot = await self.call(self.sg.create, "Shot", {"code": "a", "sg_when": "2024-01-01T00:00:00Z"})
        last = (await self.events())[-1]["id"]
        await self.call(self.sg.update, "Shot", shot["id"], {
            "code": "b", "sg_when": datetime.datetime(2024, 1, 2, 3, 4, 5), "description": None,
        })
        events = await self.events(after=last)
        # description was already null: no event for it.
        self.assertEqual([e["attribute_name"] for e in events], ["code", "sg_when"])
        code, when = events
        self.assertEqual(code["event_type"], "Shotgun_Shot_Change")
        self.assertNotIn("in_create", code["meta"])
        self.assertEqual((code["meta"]["old_value"], code["meta"]["new_value"]), ("a", "b"))
        # Event meta writes date_times as Shotgun does, not in the wire form.
        self.assertEqual(when["meta"]["old_value"], "2024-01-01 00:00:00 UTC")
        self.assertEqual(when["meta"]["new_value"], "2024-01-02 03:04:05 UTC")

    @async_test
    async def test_multi_entity_added_removed(self) -> None:
        users = [await self.call(self.sg.create, "HumanUser", {"name": n, "login": n}) for n in ("ann", "bob", "cy")]
        task = await self.call(self.sg.create, "Task", {"content": "t", "task_assignees": users[:2]})
        events = await self.events()
        create_change = [e for e in events if e["attribute_name"] == "task_assignees"][0]
        self.assertEqual(create_change["meta"]["added"], [_link(users[0], "ann"), _link(users[1], "bob")])
        self.assertEqual(create_change["meta"]["removed"], [])
        self.assertTrue(create_change["meta"]["in_create"])
        last = events[-1]["id"]
        await self.call(self.sg.update, "Task", task["id"], {"task_assignees": [users[1], users[2]]})
        (change,) = await self.events(after=last)
        self.assertEqual(change["meta"]["field_data_type"], "multi_entity")
        self.assertEqual(change["meta"]["added"], [_link(users[2], "cy")])
        self.assertEqual(change["meta"]["removed"], [_link(users[0], "ann")])
        self.assertNotIn("old_value", change["meta"])
        await self.call(self.sg.update, "Task", task["id"], {"task_assignees": [users[1]]},
                        multi_entity_update_modes={"task_assignees": "remove"})
        (change,) = await self.events(after=change["id"])
        self.assertEqual((change["meta"]["added"], change["meta"]["removed"]), ([], [_link(users[1], "bob")]))

    @async_test
    async def test_backref_from_entity_field(self) -> None:
        shot_a = await self.call(self.sg.create, "Shot", {"code": "A"})
        shot_b = await self.call(self.sg.create, "Shot", {"code": "B"})
        last = (await self.events())[-1]["id"]
        task = await self.call(self.sg.create, "Task", {"content": "anim", "entity": shot_a})
        a = await self.call(self.sg.find_one, "Shot", [["id", "is", shot_a["id"]]], ["tasks"])
        self.assertEqual(a["tasks"], [_link(task, "anim")])
        events = await self.events(after=last)
        self.assertEqual([(e["event_type"], e["attribute_name"]) for e in events], [
            ("Shotgun_Task_New", None),
            ("Shotgun_Task_Change", "content"),
            ("Shotgun_Task_Change", "entity"),
            ("Shotgun_Shot_Change", "tasks"),
        ])
        entity_change, backref = events[2], events[3]
        self.assertEqual(backref["entity"], _link(shot_a, "A"))
        self.assertEqual(backref["meta"], {
            "type": "attribute_change", "attribute_name": "tasks", "actual_attribute_changed": "Task.entity",
            "entity_type": "Task", "entity_id": task["id"], "field_data_type": "entity", "in_create": True,
            "original_event_log_entry_id": entity_change["id"],
            "added": [_link(task, "anim")], "removed": [],
        })

        # Moving the task: A loses it, B gains it, both get backref events.
        self.emulator.set_clock("2024-05-06T08:00:00Z")
        await self.call(self.sg.update, "Task", task["id"], {"entity": shot_b})
        shots = await self.call(self.sg.find, "Shot", [], ["tasks", "updated_at"], order=[{"field_name": "id"}])
        self.assertEqual([s["tasks"] for s in shots], [[], [_link(task, "anim")]])
        # The backref side's updated_at moves too.
        self.assertEqual({s["updated_at"] for s in shots}, {datetime.datetime(2024, 5, 6, 8, 0)})
        moved = await self.events(after=events[-1]["id"])
        self.assertEqual([(e["event_type"], e["attribute_name"]) for e in moved], [
            ("Shotgun_Task_Change", "entity"), ("Shotgun_Shot_Change", "tasks"), ("Shotgun_Shot_Change", "tasks"),
        ])
        self.assertEqual(moved[0]["meta"]["old_value"], _link(shot_a, "A"))
        self.assertEqual(moved[0]["meta"]["new_value"], _link(shot_b, "B"))
        self.assertEqual((moved[1]["entity"]["id"], moved[1]["meta"]["removed"]), (shot_a["id"], [_link(task, "anim")]))
        self.assertEqual((moved[2]["entity"]["id"], moved[2]["meta"]["added"]), (shot_b["id"], [_link(task, "anim")]))
        self.assertNotIn("in_create", moved[1]["meta"])

    @async_test
    async def test_backref_from_multi_entity_field(self) -> None:
        shot_a = await self.call(self.sg.create, "Shot", {"code": "A"})
        task = await self.call(self.sg.create, "Task", {"content": "t", "entity": shot_a})
        shot_b = await self.call(self.sg.create, "Shot", {"code": "B"})
        last = (await self.events())[-1]["id"]
        # Setting B.tasks moves the task: Task.entity changes and A.tasks loses it.
        await self.call(self.sg.update, "Shot", shot_b["id"], {"tasks": [task]})
        row = await self.call(self.sg.find_one, "Task", [], ["entity"])
        self.assertEqual(row["entity"], _link(shot_b, "B"))
        a = await self.call(self.sg.find_one, "Shot", [["id", "is", shot_a["id"]]], ["tasks"])
        self.assertEqual(a["tasks"], [])
        events = await self.events(after=last)
        self.assertEqual([(e["event_type"], e["attribute_name"]) for e in events], [
            ("Shotgun_Shot_Change", "tasks"), ("Shotgun_Task_Change", "entity"), ("Shotgun_Shot_Change", "tasks"),
        ])
        direct, task_side, old_parent = events
        self.assertEqual(direct["meta"]["added"], [_link(task, "t")])
        self.assertEqual(task_side["meta"]["actual_attribute_changed"], "Shot.tasks")
        self.assertEqual(task_side["meta"]["original_event_log_entry_id"], direct["id"])
        self.assertEqual((task_side["meta"]["old_value"], task_side["meta"]["new_value"]),
                         (_link(shot_a, "A"), _link(shot_b, "B")))
        self.assertEqual((task_side["meta"]["entity_type"], task_side["meta"]["entity_id"]), ("Shot", shot_b["id"]))
        self.assertEqual(old_parent["entity"], _link(shot_a, "A"))
        self.assertEqual(old_parent["meta"]["removed"], [_link(task, "t")])
        # Removing it from B.tasks clears Task.entity.
        await self.call(self.sg.update, "Shot", shot_b["id"], {"tasks": []})
        row = await self.call(self.sg.find_one, "Task", [], ["entity"])
        self.assertIsNone(row["entity"])

    @async_test
    async def test_many_to_many_backref(self) -> None:
        shot = await self.call(self.sg.create, "Shot", {"code": "s"})
        asset = await self.call(self.sg.create, "Asset", {"code": "a", "shots": [shot]})
        row = await self.call(self.sg.find_one, "Shot", [], ["assets"])
        self.assertEqual(row["assets"], [_link(asset, "a")])
        await self.call(self.sg.update, "Shot", shot["id"], {"assets": []})
        row = await self.call(self.sg.find_one, "Asset", [], ["shots"])
        self.assertEqual(row["shots"], [])

    @async_test
    async def test_retirement_and_revival(self) -> None:
        project = await self.call(self.sg.create, "Project", {"name": "P"})
        shot = await self.call(self.sg.create, "Shot", {"code": "gone", "project": project})
        last = (await self.events())[-1]["id"]
        await self.call(self.sg.delete, "Shot", shot["id"])
        change, retirement = await self.events(after=last)
        self.assertEqual((change["event_type"], change["attribute_name"], change["entity"]),
                         ("Shotgun_Shot_Change", "retirement_date", None))
        self.assertEqual(change["meta"]["new_value"], "2024-05-06 07:08:09 UTC")
        self.assertEqual(change["meta"]["entity_id"], shot["id"])
        self.assertEqual(retirement["event_type"], "Shotgun_Shot_Retirement")
        self.assertIsNone(retirement["entity"])
        self.assertEqual(retirement["project"], _link(project, "P"))
        self.assertEqual(retirement["meta"], {
            "type": "entity_retirement", "class_name": "Shot", "entity_type": "Shot",
            "entity_id": shot["id"], "id": shot["id"], "display_name": "gone",
            "retirement_date": "2024-05-06 07:08:09 UTC",
        })
        await self.call(self.sg.revive, "Shot", shot["id"])
        (revival,) = await self.events(after=retirement["id"])
        self.assertEqual(revival["event_type"], "Shotgun_Shot_Revival")
        self.assertEqual(revival["entity"], _link(shot, "gone"))
        self.assertEqual(revival["meta"], {
            "class_name": "Shot", "entity_type": "Shot", "entity_id": shot["id"],
            "id": shot["id"], "display_name": "gone",
        })
        # Deleting or reviving a second time writes nothing.
        await self.call(self.sg.revive, "Shot", shot["id"])
        self.assertEqual(await self.events(after=revival["id"]), [])

    @async_test
    async def test_batch_events(self) -> None:
        await self.call(self.sg.batch, [
            {"request_type": "create", "entity_type": "Shot", "data": {"code": "x"}},
            {"request_type": "delete", "entity_type": "Shot", "entity_id": 1},
        ])
        self.assertEqual([e["event_type"] for e in await self.events()], [
            "Shotgun_Shot_New", "Shotgun_Shot_Change", "Shotgun_Shot_Change", "Shotgun_Shot_Retirement",
        ])

    @async_test
    async def test_script_without_events(self) -> None:
        other = self.client("other", "okey")
        (row,) = await self.call(self.sg.find, "ApiUser", [["firstname", "is", "other"]])
        await self.call(self.sg.update, "ApiUser", row["id"], {"generate_event_log_entries": False})
        count = len(await self.events())
        shot = await self.call(other.create, "Shot", {"code": "quiet"})
        self.emulator.set_clock("2024-05-06T09:00:00Z")
        await self.call(other.update, "Shot", shot["id"], {"code": "quieter"})
        self.assertEqual(len(await self.events()), count)
        found = await self.call(self.sg.find_one, "Shot", [], ["code", "updated_at"])
        self.assertEqual((found["code"], found["updated_at"]), ("quieter", datetime.datetime(2024, 5, 6, 9, 0)))
        await self.call(self.sg.update, "Shot", shot["id"], {"code": "loud"})
        self.assertEqual(len(await self.events()), count + 1)
