"""Tests for sgcache.testing.engine: the emulator's read engine."""

from __future__ import annotations

import datetime

from shotgun_api3.shotgun import _translate_filters
from twisted.trial import unittest

from sgcache.site.faults import Fault
from sgcache.schema import Schema
from sgcache.testing.engine import ReadEngine
from sgcache.testing.fixtures import FIXTURE_SCHEMA

FIXTURE = FIXTURE_SCHEMA

SCHEMA = Schema.from_dict(
    {
        "entities": {
            "Project": {"fields": {"name": "text", "archived": "checkbox"}},
            "Sequence": {
                "fields": {
                    "code": "text",
                    "project": {"type": "entity", "entity_types": ["Project"]},
                    "shots": {"type": "multi_entity", "entity_types": ["Shot"]},
                }
            },
            "Shot": {
                "fields": {
                    "code": "text",
                    "description": "text",
                    "project": {"type": "entity", "entity_types": ["Project"]},
                    "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
                    "sg_link": {"type": "entity", "entity_types": ["Asset", "Sequence"]},
                    "assets": {"type": "multi_entity", "entity_types": ["Asset", "Shot"]},
                    "sg_cut_in": "number",
                    "sg_rate": "float",
                    "sg_pct": "percent",
                    "sg_status_list": "status_list",
                    "sg_due": "date",
                    "sg_shipped_at": "date_time",
                    "sg_flag": "checkbox",
                    "tags": "tag_list",
                    "image": "image",
                    "sg_data": "serializable",
                    "sg_secret": "password",
                }
            },
            "Asset": {
                "fields": {
                    "code": "text",
                    "project": {"type": "entity", "entity_types": ["Project"]},
                    "sg_asset_type": "list",
                    "shots": {"type": "multi_entity", "entity_types": ["Shot"]},
                }
            },
            "Task": {
                "fields": {
                    "content": "text",
                    "project": {"type": "entity", "entity_types": ["Project"]},
                    "entity": {"type": "entity", "entity_types": ["Shot", "Asset"]},
                    "task_assignees": {"type": "multi_entity", "entity_types": ["HumanUser"]},
                    "due_date": "date",
                    "est_in_mins": "duration",
                }
            },
            "HumanUser": {"fields": {"name": "text", "login": "text"}},
        }
    }
)

NOW = datetime.datetime(2024, 3, 13, 15, 30, 0)  # a Wednesday, naive UTC


def L(t: str, i: int) -> dict:
    return {"type": t, "id": i}


def make_db() -> dict:
    def row(t, i, retired=False, **fields):
        return {"type": t, "id": i, "__retired": retired, **fields}

    db = {
        "Project": {
            1: row("Project", 1, name="Alpha", archived=False),
            2: row("Project", 2, name="Beta", archived=True),
            3: row("Project", 3, retired=True, name="Gamma"),
        },
        "Sequence": {
            1: row("Sequence", 1, code="SEQ_A", project=L("Project", 1), shots=[L("Shot", 1), L("Shot", 6)]),
            2: row("Sequence", 2, code="seq_b", project=L("Project", 1), shots=[L("Shot", 2)]),
            3: row("Sequence", 3, retired=True, code="seq_gone", project=L("Project", 1)),
        },
        "HumanUser": {
            1: row("HumanUser", 1, name="Ann", login="ann"),
            2: row("HumanUser", 2, name="bob", login="bob"),
            3: row("HumanUser", 3, retired=True, name="Old Timer", login="old"),
        },
        "Asset": {
            1: row("Asset", 1, code="Tree", project=L("Project", 1), sg_asset_type="Prop"),
            2: row("Asset", 2, code="house", project=L("Project", 1), sg_asset_type="Environment"),
            3: row("Asset", 3, retired=True, code="Car", project=L("Project", 1)),
            4: row("Asset", 4, code="tree_big", project=L("Project", 2), sg_asset_type="prop"),
        },
        "Shot": {
            1: row(
                "Shot", 1, code="sh010", project=L("Project", 1), sg_sequence=L("Sequence", 1),
                assets=[L("Asset", 2), L("Asset", 1)], sg_cut_in=10, sg_rate=1.5, sg_pct=50,
                sg_status_list="ip", sg_due="2024-03-10",
                sg_shipped_at=datetime.datetime(2024, 3, 13, 10, 0, 0), sg_flag=True,
                tags=["hero", "FX"], description="The first shot", image="http://x/thumb.jpg",
                sg_data={"a": [1, 2]}, sg_secret="hunter2",
            ),
            2: row(
                "Shot", 2, code="SH020", project=L("Project", 1), sg_sequence=L("Sequence", 2),
                assets=[L("Asset", 2)], sg_cut_in=20, sg_rate=None, sg_status_list="fin",
                sg_due="2024-03-01", sg_shipped_at=datetime.datetime(2024, 2, 1, 0, 0, 0), sg_flag=False,
                tags=[], description="100% done_ish",
            ),
            3: row(
                "Shot", 3, code="sh030", project=L("Project", 1), sg_sequence=L("Sequence", 3),
                assets=[L("Asset", 3)], sg_cut_in=None,
            ),
            4: row(
                "Shot", 4, code="sh040", project=L("Project", 2), sg_cut_in=40, sg_status_list="ip",
                assets=[], sg_link=L("Sequence", 2),
            ),
            5: row("Shot", 5, retired=True, code="sh050", project=L("Project", 1), sg_sequence=L("Sequence", 1)),
            6: row(
                "Shot", 6, code="Sh060", project=L("Project", 1), sg_sequence=L("Sequence", 1),
                sg_link=L("Asset", 1), assets=[L("Shot", 1)], sg_cut_in=10, sg_status_list="IP",
                description="1000 done",
            ),
        },
        "Task": {
            1: row(
                "Task", 1, content="anim", project=L("Project", 1), entity=L("Shot", 1),
                task_assignees=[L("HumanUser", 1), L("HumanUser", 3)], due_date="2024-03-13",
            ),
            2: row(
                "Task", 2, content="comp", project=L("Project", 1), entity=L("Asset", 1),
                task_assignees=[L("HumanUser", 2)], due_date="2024-03-20",
            ),
            3: row("Task", 3, content="light", project=L("Project", 1), entity=L("Shot", 3), task_assignees=[]),
            4: row("Task", 4, content="fx", project=L("Project", 1), entity=L("Shot", 2),
                   task_assignees=[L("HumanUser", 3)], due_date="2024-02-29"),
        },
    }
    return db


class EngineTestCase(unittest.TestCase):
    def setUp(self):
        self.db = make_db()
        self.engine = ReadEngine(SCHEMA, self.db, now=lambda: NOW)

    def read(self, entity_type, filters=(), fields=None, order=None, filter_operator=None, **extra):
        if isinstance(filters, (list, tuple)):
            filters = _translate_filters(list(filters), filter_operator)
        args = {
            "type": entity_type,
            "return_fields": fields or ["id"],
            "filters": filters,
            "return_only": "active",
            "paging": {"entities_per_page": 500, "current_page": 1},
        }
        if order:
            args["sorts"] = [{"field_name": o[0], "direction": o[1] if len(o) > 1 else "asc"} for o in order]
        args.update(extra)
        return self.engine.read(args)

    def ids(self, entity_type, filters=(), **kw):
        return [e["id"] for e in self.read(entity_type, filters, **kw)["entities"]]

    def idset(self, entity_type, filters=(), **kw):
        return set(self.ids(entity_type, filters, **kw))


class FilterGroupTests(EngineTestCase):
    def test_no_filters_active_only_by_id(self):
        self.assertEqual(self.ids("Shot"), [1, 2, 3, 4, 6])

    def test_or_group(self):
        """mockgun treats logical_operator 'or' as 'and'."""
        got = self.idset("Shot", [["code", "is", "sh010"], ["code", "is", "sh040"]], filter_operator="any")
        self.assertEqual(got, {1, 4})

    def test_nested_groups(self):
        filters = [
            ["project", "is", {"type": "Project", "id": 1}],
            {"filter_operator": "any", "filters": [
                ["sg_status_list", "is", "fin"],
                {"filter_operator": "all", "filters": [
                    ["sg_cut_in", "is", 10],
                    ["code", "starts_with", "sh0"],
                ]},
            ]},
        ]
        self.assertEqual(self.idset("Shot", filters), {1, 2, 6})

    def test_empty_groups_match_all(self):
        self.assertEqual(self.idset("Shot", {"logical_operator": "or", "conditions": []}), {1, 2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", {"logical_operator": "and", "conditions": []}), {1, 2, 3, 4, 6})
        nested = {"logical_operator": "and", "conditions": [
            {"logical_operator": "or", "conditions": []},
            {"path": "code", "relation": "is", "values": ["sh010"]}]}
        self.assertEqual(self.idset("Shot", nested), {1})

    def test_client_list_form_accepted(self):
        args = {"type": "Shot", "filters": [["code", "in", ["sh010", "sh020"]],
                                            {"filter_operator": "any", "filters": [["sg_cut_in", "greater_than", 5]]}]}
        got = [e["id"] for e in self.engine.read(args)["entities"]]
        self.assertEqual(got, [1, 2])

    def test_bad_logical_operator(self):
        self.assertRaises(Fault, self.read, "Shot", {"logical_operator": "xor", "conditions": []})

    def test_unknown_entity_type(self):
        e = self.assertRaises(Fault, self.read, "Nope")
        self.assertIn("Entity type Nope does not exist", e.message)

    def test_unknown_filter_field(self):
        e = self.assertRaises(Fault, self.read, "Shot", [["nope", "is", 1]])
        self.assertIn("Shot.nope", e.message)
        self.assertRaises(Fault, self.read, "Shot", [["sg_sequence.Sequence.nope", "is", 1]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_sequence.Nope.code", "is", 1]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_sequence.Sequence", "is", 1]])
        self.assertRaises(Fault, self.read, "Shot", [["code.Sequence.code", "is", 1]])

    def test_relation_not_allowed_for_type(self):
        self.assertRaises(Fault, self.read, "Shot", [["sg_flag", "contains", "x"]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_status_list", "contains", "i"]])
        self.assertRaises(Fault, self.read, "Shot", [["code", "less_than", "x"]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_data", "is", None]])
        self.assertRaises(Fault, self.read, "Shot", [["tags", "in", ["a"]]])
        self.assertRaises(Fault, self.read, "Shot", [["image", "is", "http://x"]])

    def test_additional_filter_presets(self):
        self.assertEqual(self.ids("Shot", additional_filter_presets=[]), [1, 2, 3, 4, 6])
        e = self.assertRaises(
            Fault, self.read, "Shot",
            additional_filter_presets=[{"preset_name": "LATEST", "latest_by": "ENTITIES_CREATED_AT"}])
        self.assertIn("additional_filter_presets not supported", e.message)


class TextTests(EngineTestCase):
    def test_is_case_insensitive(self):
        self.assertEqual(self.idset("Shot", [["code", "is", "SH010"]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_status_list", "is", "ip"]]), {1, 4, 6})

    def test_in_case_insensitive_and_null(self):
        self.assertEqual(self.idset("Shot", [["code", "in", ["sh020", "SH040"]]]), {2, 4})
        self.assertEqual(self.idset("Shot", [["sg_status_list", "in", ["fin", None]]]), {2, 3})
        self.assertEqual(self.idset("Shot", [["sg_status_list", "not_in", ["ip"]]]), {2, 3})
        self.assertEqual(self.idset("Shot", [["sg_status_list", "not_in", ["ip", None]]]), {2})

    def test_contains_is_literal(self):
        self.assertEqual(self.idset("Shot", [["description", "contains", "100%"]]), {2})
        self.assertEqual(self.idset("Shot", [["description", "contains", "0%"]]), {2})
        self.assertEqual(self.idset("Shot", [["description", "contains", "e_i"]]), {2})
        self.assertEqual(self.idset("Shot", [["description", "contains", "10_0"]]), set())
        self.assertEqual(self.idset("Shot", [["description", "contains", "FIRST"]]), {1})

    def test_starts_ends_with(self):
        self.assertEqual(self.idset("Shot", [["code", "starts_with", "SH0"]]), {1, 2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["code", "ends_with", "0"]]), {1, 2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["code", "ends_with", "60"]]), {6})

    def test_null_handling_of_negations(self):
        self.assertEqual(self.idset("Shot", [["description", "is", None]]), {3, 4})
        self.assertEqual(self.idset("Shot", [["description", "is_not", None]]), {1, 2, 6})
        self.assertEqual(self.idset("Shot", [["description", "is_not", "the first shot"]]), {2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["description", "not_contains", "done"]]), {1, 3, 4})
        self.assertEqual(self.idset("Shot", [["description", "contains", "done"]]), {2, 6})


class NumberTests(EngineTestCase):
    def test_comparisons_never_match_null(self):
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "less_than", 30]]), {1, 2, 6})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "greater_than", 10]]), {2, 4})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "between", 10, 20]]), {1, 2, 6})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "between", [15, None]]]), {2, 4})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "between", [None, 15]]]), {1, 6})

    def test_negations_include_null(self):
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "not_between", 10, 20]]), {3, 4})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "is_not", 10]]), {2, 3, 4})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "not_in", [10, 40]]]), {2, 3})
        self.assertEqual(self.idset("Shot", [["sg_cut_in", "in", [10, None]]]), {1, 3, 6})

    def test_float_and_percent(self):
        self.assertEqual(self.idset("Shot", [["sg_rate", "greater_than", 1.0]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_rate", "not_between", 0, 1.0]]), {1, 2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["sg_pct", "in", [50]]]), {1})
        self.assertEqual(self.idset("Task", [["est_in_mins", "is", None]]), {1, 2, 3, 4})

    def test_id_in(self):
        self.assertEqual(self.ids("Shot", [["id", "in", [6, 1, 5]]]), [1, 6])

    def test_non_number_value_faults(self):
        self.assertRaises(Fault, self.read, "Shot", [["sg_cut_in", "is", "ten"]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_cut_in", "less_than", None]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_cut_in", "between", 1]])


class CheckboxAndImageTests(EngineTestCase):
    def test_checkbox_null_is_false(self):
        self.assertEqual(self.idset("Shot", [["sg_flag", "is", False]]), {2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["sg_flag", "is_not", False]]), {1})
        self.assertEqual(self.read("Shot", [["id", "is", 3]], fields=["sg_flag"])["entities"][0]["sg_flag"], False)

    def test_image_has_thumbnail(self):
        self.assertEqual(self.idset("Shot", [["image", "is_not", None]]), {1})
        self.assertEqual(self.idset("Shot", [["image", "is", None]]), {2, 3, 4, 6})


class DateTests(EngineTestCase):
    def set_dates(self, field, values):
        for i, v in values.items():
            self.db["Shot"][i][field] = v

    def test_date_absolute(self):
        self.assertEqual(self.idset("Shot", [["sg_due", "is", "2024-03-10"]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_due", "is", datetime.date(2024, 3, 10).isoformat()]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_due", "greater_than", "2024-03-01"]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_due", "less_than", "2024-03-10"]]), {2})
        self.assertEqual(self.idset("Shot", [["sg_due", "between", "2024-03-01", "2024-03-10"]]), {1, 2})
        self.assertEqual(self.idset("Shot", [["sg_due", "is_not", "2024-03-10"]]), {2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["sg_due", "not_in", ["2024-03-10"]]]), {2, 3, 4, 6})
        self.assertRaises(Fault, self.read, "Shot", [["sg_due", "is", "yesterday"]])

    def test_datetime_absolute(self):
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "is", "2024-03-13T10:00:00Z"]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "greater_than", "2024-02-01T00:00:00Z"]]), {1})
        self.assertEqual(
            self.idset("Shot", [["sg_shipped_at", "between", "2024-02-01T00:00:00Z", "2024-03-13T10:00:00Z"]]),
            {1, 2})
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "is_not", "2024-02-01T00:00:00Z"]]), {1, 3, 4, 6})

    def test_datetime_in_last_and_next(self):
        # now = 2024-03-13 15:30:00Z
        self.set_dates("sg_shipped_at", {
            1: datetime.datetime(2024, 3, 13, 15, 30, 0),   # now: in_last, in_next
            2: datetime.datetime(2024, 3, 12, 15, 30, 0),   # exactly 1 day ago: not in_last 1 DAY
            3: datetime.datetime(2024, 3, 12, 15, 30, 1),   # in_last 1 DAY
            4: datetime.datetime(2024, 3, 14, 15, 29, 59),  # in_next 1 DAY
            6: datetime.datetime(2024, 3, 14, 15, 30, 0),   # exactly 1 day ahead: not in_next
        })
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "in_last", 1, "DAY"]]), {1, 3})
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "in_next", [1, "DAY"]]]), {1, 4})
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "in_last", 24, "HOUR"]]), {1, 3})
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "not_in_last", 1, "DAY"]]), {2, 4, 6})
        self.db["Shot"][6]["sg_shipped_at"] = None
        self.assertEqual(self.idset("Shot", [["sg_shipped_at", "not_in_next", 1, "DAY"]]), {2, 3, 6})

    def test_datetime_month_arithmetic_clamps(self):
        engine = ReadEngine(SCHEMA, self.db, now=lambda: datetime.datetime(2024, 3, 31, 12, 0, 0))
        self.set_dates("sg_shipped_at", {
            1: datetime.datetime(2024, 2, 29, 12, 0, 1),  # after Mar 31 - 1 month (= Feb 29 12:00)
            2: datetime.datetime(2024, 2, 29, 12, 0, 0),  # exactly the bound: out
            3: datetime.datetime(2023, 3, 31, 12, 0, 1),  # within 1 YEAR
        })
        def ids(filters):
            args = {"type": "Shot", "filters": _translate_filters(filters, None)}
            return {e["id"] for e in engine.read(args)["entities"]}
        self.assertEqual(ids([["sg_shipped_at", "in_last", 1, "MONTH"]]), {1})
        self.assertEqual(ids([["sg_shipped_at", "in_last", 1, "YEAR"]]), {1, 2, 3})

    def test_date_in_last_uses_calendar_dates(self):
        # today = 2024-03-13
        self.set_dates("sg_due", {1: "2024-03-13", 2: "2024-03-06", 3: "2024-03-05", 4: "2024-03-20", 6: "2024-03-21"})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_last", 7, "DAY"]]), {1, 2})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_last", 1, "WEEK"]]), {1, 2})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_next", 7, "DAY"]]), {1, 4})
        self.assertEqual(self.idset("Shot", [["sg_due", "not_in_next", 7, "DAY"]]), {2, 3, 6})

    def test_in_calendar(self):
        # Wednesday 2024-03-13: week is Mon 11 .. Sun 17.
        self.set_dates("sg_due", {1: "2024-03-13", 2: "2024-03-11", 3: "2024-03-10", 4: "2024-03-18", 6: "2024-02-29"})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_day", 0]]), {1})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_week", 0]]), {1, 2})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_week", -1]]), {3})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_week", 1]]), {4})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_month", 0]]), {1, 2, 3, 4})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_month", -1]]), {6})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_year", 0]]), {1, 2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["sg_due", "in_calendar_year", -1]]), set())

    def test_in_calendar_day_in_timezone(self):
        tz = datetime.timezone(datetime.timedelta(hours=10))
        # now = 2024-03-13 15:30Z = 2024-03-14 01:30 at +10.
        engine = ReadEngine(SCHEMA, self.db, now=lambda: NOW, tz=tz)
        self.set_dates("sg_shipped_at", {
            1: datetime.datetime(2024, 3, 13, 14, 0, 0),  # Mar 14 00:00 local: today
            2: datetime.datetime(2024, 3, 13, 13, 59, 59),  # Mar 13 23:59:59 local: yesterday
        })
        args = {"type": "Shot", "filters": _translate_filters([["sg_shipped_at", "in_calendar_day", 0]], None)}
        self.assertEqual({e["id"] for e in engine.read(args)["entities"]}, {1})
        args = {"type": "Shot", "filters": _translate_filters([["sg_shipped_at", "in_calendar_day", -1]], None)}
        self.assertEqual({e["id"] for e in engine.read(args)["entities"]}, {2})

    def test_aware_now(self):
        aware = NOW.replace(tzinfo=datetime.timezone.utc).astimezone(datetime.timezone(datetime.timedelta(hours=-5)))
        engine = ReadEngine(SCHEMA, self.db, now=lambda: aware)
        args = {"type": "Shot", "filters": _translate_filters([["sg_shipped_at", "in_last", 6, "HOUR"]], None)}
        self.assertEqual([e["id"] for e in engine.read(args)["entities"]], [1])

    def test_bad_relative_args(self):
        self.assertRaises(Fault, self.read, "Shot", [["sg_due", "in_last", 1, "FORTNIGHT"]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_due", "in_last", "one", "DAY"]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_due", "in_calendar_day", "x"]])


class EntityTests(EngineTestCase):
    def test_is_ignores_name(self):
        got = self.idset("Shot", {"logical_operator": "and", "conditions": [
            {"path": "sg_sequence", "relation": "is",
             "values": [{"type": "Sequence", "id": 1, "name": "WRONG NAME"}]}]})
        self.assertEqual(got, {1, 6})

    def test_is_compares_type(self):
        self.assertEqual(self.idset("Shot", [["sg_link", "is", {"type": "Sequence", "id": 1}]]), set())
        self.assertEqual(self.idset("Shot", [["sg_link", "is", {"type": "Asset", "id": 1}]]), {6})

    def test_in_with_several_values_and_null(self):
        """mockgun's entity `in` fails with 2+ values and crashes on null links."""
        got = self.idset("Shot", [["sg_sequence", "in", [{"type": "Sequence", "id": 1}, {"type": "Sequence", "id": 2}]]])
        self.assertEqual(got, {1, 2, 6})
        got = self.idset("Shot", [["sg_sequence", "in", [{"type": "Sequence", "id": 2}, None]]])
        self.assertEqual(got, {2, 3, 4})  # 3 links a retired sequence: reads as null
        got = self.idset("Shot", [["sg_sequence", "not_in", [{"type": "Sequence", "id": 1}]]])
        self.assertEqual(got, {2, 3, 4})

    def test_is_none_and_is_not(self):
        self.assertEqual(self.idset("Shot", [["sg_sequence", "is", None]]), {3, 4})
        self.assertEqual(self.idset("Shot", [["sg_sequence", "is_not", None]]), {1, 2, 6})
        self.assertEqual(self.idset("Shot", [["sg_sequence", "is_not", {"type": "Sequence", "id": 1}]]), {2, 3, 4})

    def test_type_is(self):
        self.assertEqual(self.idset("Shot", [["sg_link", "type_is", "Asset"]]), {6})
        self.assertEqual(self.idset("Shot", [["sg_link", "type_is", None]]), {1, 2, 3})
        self.assertEqual(self.idset("Shot", [["sg_link", "type_is_not", "Asset"]]), {1, 2, 3, 4})
        self.assertEqual(self.idset("Shot", [["sg_link", "type_is_not", None]]), {4, 6})

    def test_name_relations_case_insensitive(self):
        self.assertEqual(self.idset("Shot", [["sg_sequence", "name_contains", "seq_"]]), {1, 2, 6})
        self.assertEqual(self.idset("Shot", [["sg_sequence", "name_is", "seq_a"]]), {1, 6})
        self.assertEqual(self.idset("Shot", [["sg_sequence", "name_starts_with", "SEQ_B"]]), {2})
        self.assertEqual(self.idset("Shot", [["sg_sequence", "name_ends_with", "_a"]]), {1, 6})
        # Retired sequence 3 ("seq_gone") is absent: no name; null links match the negation.
        self.assertEqual(self.idset("Shot", [["sg_sequence", "name_contains", "gone"]]), set())
        self.assertEqual(self.idset("Shot", [["sg_sequence", "name_not_contains", "_A"]]), {2, 3, 4})

    def test_bad_entity_value(self):
        self.assertRaises(Fault, self.read, "Shot", [["sg_sequence", "is", 1]])
        self.assertRaises(Fault, self.read, "Shot", [["sg_sequence", "name_contains", None]])


class MultiEntityTests(EngineTestCase):
    def test_is_acts_as_contains_and_compares_type(self):
        """mockgun compares only ids for multi_entity `is`."""
        self.assertEqual(self.idset("Shot", [["assets", "is", {"type": "Asset", "id": 1}]]), {1})
        self.assertEqual(self.idset("Shot", [["assets", "is", {"type": "Shot", "id": 1}]]), {6})
        self.assertEqual(self.idset("Shot", [["assets", "is", {"type": "Asset", "id": 2}]]), {1, 2})

    def test_is_none_and_negations(self):
        # Shot 3's only asset is retired: the list reads as empty.
        self.assertEqual(self.idset("Shot", [["assets", "is", None]]), {3, 4})
        self.assertEqual(self.idset("Shot", [["assets", "is_not", None]]), {1, 2, 6})
        self.assertEqual(self.idset("Shot", [["assets", "is_not", {"type": "Asset", "id": 2}]]), {3, 4, 6})
        self.assertEqual(self.idset("Shot", [["assets", "is", {"type": "Asset", "id": 3}]]), set())

    def test_in_not_in(self):
        got = self.idset("Shot", [["assets", "in", [{"type": "Asset", "id": 1}, {"type": "Shot", "id": 1}]]])
        self.assertEqual(got, {1, 6})
        got = self.idset("Shot", [["assets", "not_in", [{"type": "Asset", "id": 1}, {"type": "Shot", "id": 1}]]])
        self.assertEqual(got, {2, 3, 4})
        got = self.idset("Shot", [["assets", "in", [{"type": "Asset", "id": 1}, None]]])
        self.assertEqual(got, {1, 3, 4})

    def test_type_is(self):
        self.assertEqual(self.idset("Shot", [["assets", "type_is", "Shot"]]), {6})
        self.assertEqual(self.idset("Shot", [["assets", "type_is_not", "Asset"]]), {3, 4, 6})
        self.assertEqual(self.idset("Shot", [["assets", "type_is", None]]), {3, 4})

    def test_name_contains(self):
        self.assertEqual(self.idset("Shot", [["assets", "name_contains", "TRE"]]), {1})
        self.assertEqual(self.idset("Shot", [["assets", "name_contains", "car"]]), set())  # retired
        self.assertEqual(self.idset("Shot", [["assets", "name_not_contains", "HOUSE"]]), {3, 4, 6})

    def test_tag_list(self):
        self.assertEqual(self.idset("Shot", [["tags", "is", "fx"]]), {1})
        self.assertEqual(self.idset("Shot", [["tags", "is", None]]), {2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["tags", "is_not", "HERO"]]), {2, 3, 4, 6})
        self.assertEqual(self.idset("Shot", [["tags", "name_contains", "er"]]), {1})
        self.assertEqual(self.idset("Shot", [["tags", "name_not_contains", "f"]]), {2, 3, 4, 6})


class DeepPathTests(EngineTestCase):
    def test_deep_filter_through_entity(self):
        self.assertEqual(self.idset("Shot", [["sg_sequence.Sequence.code", "is", "seq_a"]]), {1, 6})
        self.assertEqual(self.idset("Task", [["entity.Shot.sg_sequence.Sequence.code", "is", "SEQ_A"]]), {1})
        # A link of another type or a retired link reads as a null leaf.
        self.assertEqual(self.idset("Task", [["entity.Shot.code", "is", None]]), {2})
        self.assertEqual(self.idset("Shot", [["sg_sequence.Sequence.code", "is", None]]), {3, 4})
        self.assertEqual(self.idset("Task", [["entity.Shot.code", "is_not", "sh010"]]), {2, 3, 4})
        self.assertEqual(self.idset("Task", [["entity.Asset.code", "contains", "tree"]]), {2})

    def test_deep_filter_through_multi_entity(self):
        # Any live linked item of the type satisfies the relation.
        self.assertEqual(self.idset("Task", [["task_assignees.HumanUser.login", "is", "ann"]]), {1})
        self.assertEqual(self.idset("Task", [["task_assignees.HumanUser.login", "in", ["ann", "bob"]]]), {1, 2})
        # Negated: no item satisfies the positive relation. Retired user 3 is absent.
        self.assertEqual(self.idset("Task", [["task_assignees.HumanUser.login", "is_not", "ann"]]), {2, 3, 4})
        # No items is one null leaf.
        self.assertEqual(self.idset("Task", [["task_assignees.HumanUser.login", "is", None]]), {3, 4})
        self.assertEqual(self.idset("Task", [["task_assignees.HumanUser.login", "is_not", None]]), {1, 2})
        self.assertEqual(self.idset("Sequence", [["shots.Shot.sg_cut_in", "greater_than", 15]]), {2})

    def test_deep_return_fields(self):
        res = self.read("Task", fields=["entity.Shot.code", "entity.Shot.sg_sequence", "entity.Shot.sg_flag",
                                        "entity.Asset.code", "task_assignees.HumanUser.name"])
        ents = {e["id"]: e for e in res["entities"]}
        self.assertEqual(ents[1]["entity.Shot.code"], "sh010")
        self.assertEqual(ents[1]["entity.Shot.sg_sequence"], {"type": "Sequence", "id": 1, "name": "SEQ_A"})
        self.assertEqual(ents[1]["entity.Shot.sg_flag"], True)
        self.assertEqual(ents[1]["entity.Asset.code"], None)
        self.assertEqual(ents[2]["entity.Shot.code"], None)
        self.assertEqual(ents[2]["entity.Asset.code"], "Tree")
        self.assertEqual(ents[2]["entity.Shot.sg_flag"], None)
        self.assertEqual(ents[3]["entity.Shot.sg_sequence"], None)  # retired sequence
        self.assertEqual(ents[1]["task_assignees.HumanUser.name"], None)  # through multi_entity

    def test_deep_sort(self):
        got = self.ids("Task", order=[("entity.Shot.code", "desc"), ("id", "asc")])
        # desc: the null leaf (task 2 links an Asset) first, then sh030, SH020, sh010
        self.assertEqual(got, [2, 3, 4, 1])
        got = self.ids("Shot", order=[("sg_sequence.Sequence.code", "asc")])
        self.assertEqual(got, [1, 6, 2, 3, 4])


class ReturnValueTests(EngineTestCase):
    def test_default_fields(self):
        self.assertEqual(self.read("Shot", [["id", "is", 1]])["entities"], [{"type": "Shot", "id": 1}])
        res = self.engine.read({"type": "Shot", "filters": {"logical_operator": "and", "conditions": []}})
        self.assertEqual(res["entities"][0], {"type": "Shot", "id": 1})

    def test_rendering(self):
        fields = ["code", "sg_sequence", "assets", "sg_shipped_at", "sg_due", "sg_flag", "tags", "image",
                  "sg_data", "sg_secret", "sg_cut_in", "sg_rate", "project", "nonexistent", "sg_sequence.Nope.code"]
        e = self.read("Shot", [["id", "is", 1]], fields=fields)["entities"][0]
        self.assertEqual(e, {
            "type": "Shot", "id": 1, "code": "sh010",
            "sg_sequence": {"type": "Sequence", "id": 1, "name": "SEQ_A"},
            "assets": [{"type": "Asset", "id": 2, "name": "house"}, {"type": "Asset", "id": 1, "name": "Tree"}],
            "sg_shipped_at": "2024-03-13T10:00:00Z", "sg_due": "2024-03-10", "sg_flag": True,
            "tags": ["hero", "FX"], "image": None, "sg_data": {"a": [1, 2]}, "sg_secret": "*******",
            "sg_cut_in": 10, "sg_rate": 1.5, "project": {"type": "Project", "id": 1, "name": "Alpha"},
        })

    def test_nulls_and_retired_links(self):
        fields = ["sg_sequence", "assets", "sg_shipped_at", "sg_due", "sg_flag", "tags", "sg_secret", "description"]
        e = self.read("Shot", [["id", "is", 3]], fields=fields)["entities"][0]
        self.assertEqual(e, {"type": "Shot", "id": 3, "sg_sequence": None, "assets": [], "sg_shipped_at": None,
                             "sg_due": None, "sg_flag": False, "tags": [], "sg_secret": None, "description": None})
        e = self.read("Task", [["id", "is", 1]], fields=["task_assignees"])["entities"][0]
        self.assertEqual(e["task_assignees"], [{"type": "HumanUser", "id": 1, "name": "Ann"}])

    def test_results_do_not_alias_storage(self):
        e = self.read("Shot", [["id", "is", 1]], fields=["sg_data", "tags", "sg_sequence", "assets"])["entities"][0]
        e["sg_data"]["a"].append(3)
        e["tags"].append("x")
        e["sg_sequence"]["id"] = 99
        e["assets"].clear()
        row = self.db["Shot"][1]
        self.assertEqual(row["sg_data"], {"a": [1, 2]})
        self.assertEqual(row["tags"], ["hero", "FX"])
        self.assertEqual(row["sg_sequence"], {"type": "Sequence", "id": 1})
        self.assertEqual(len(row["assets"]), 2)

    def test_link_name_picks_up_renames(self):
        self.db["Sequence"][1]["code"] = "renamed"
        e = self.read("Shot", [["id", "is", 1]], fields=["sg_sequence"])["entities"][0]
        self.assertEqual(e["sg_sequence"]["name"], "renamed")

    def test_render_field_and_link_name(self):
        row = self.db["Task"][1]
        self.assertEqual(self.engine.render_field("Task", row, "entity.Shot.sg_sequence.Sequence.code"), "SEQ_A")
        self.assertEqual(self.engine.render_field("Task", row, "due_date"), "2024-03-13")
        self.assertRaises(Fault, self.engine.render_field, "Task", row, "nope")
        self.assertEqual(self.engine.link_name("Task", 1), "anim")
        self.assertEqual(self.engine.link_name("HumanUser", 3), "Old Timer")  # retired: still named
        self.assertEqual(self.engine.link_name("HumanUser", 99), None)

    def test_return_only_retired(self):
        self.assertEqual(self.ids("Shot", return_only="retired"), [5])
        self.assertRaises(Fault, self.read, "Shot", return_only="all")


class SortTests(EngineTestCase):
    def test_default_id_asc(self):
        self.db["Shot"] = dict(reversed(list(self.db["Shot"].items())))
        self.assertEqual(self.ids("Shot"), [1, 2, 3, 4, 6])

    def test_text_case_insensitive(self):
        self.assertEqual(self.ids("Shot", order=[("code", "asc")]), [1, 2, 3, 4, 6])
        self.assertEqual(self.ids("Shot", order=[("code", "desc")]), [6, 4, 3, 2, 1])

    def test_multi_key_order(self):
        """mockgun applies multi-key sorts in reverse (last key primary)."""
        got = self.ids("Shot", order=[("sg_cut_in", "asc"), ("code", "desc")])
        # cut_in 10: sh010 (1), Sh060 (6) -> code desc: 6, 1; then 20 (2), 40 (4); null (3) last.
        self.assertEqual(got, [6, 1, 2, 4, 3])
        got = self.ids("Shot", order=[("code", "desc"), ("sg_cut_in", "asc")])
        self.assertEqual(got, [6, 4, 3, 2, 1])

    def test_nulls_last_asc_first_desc(self):
        self.assertEqual(self.ids("Shot", order=[("sg_cut_in", "asc")]), [1, 6, 2, 4, 3])
        self.assertEqual(self.ids("Shot", order=[("sg_cut_in", "desc")]), [3, 4, 2, 1, 6])
        self.assertEqual(self.ids("Shot", order=[("sg_due", "asc")]), [2, 1, 3, 4, 6])

    def test_tie_break_is_id_asc_unless_id_given(self):
        # "IP" and "ip" tie on lower(), then codepoint order puts "IP" first; ids break the "ip" tie.
        self.assertEqual(self.ids("Shot", order=[("sg_status_list", "asc")]), [2, 6, 1, 4, 3])
        self.assertEqual(self.ids("Shot", order=[("sg_status_list", "asc"), ("id", "desc")]), [2, 6, 4, 1, 3])
        self.assertEqual(self.ids("Shot", order=[("id", "desc")]), [6, 4, 3, 2, 1])

    def test_entity_sorts_by_display_name(self):
        self.db["Sequence"][2]["code"] = "AAA"
        self.assertEqual(self.ids("Shot", order=[("sg_sequence", "asc")]), [2, 1, 6, 3, 4])
        self.assertEqual(self.ids("Shot", order=[("sg_link", "asc")]), [4, 6, 1, 2, 3])  # seq_b < Tree

    def test_checkbox_and_datetime(self):
        self.assertEqual(self.ids("Shot", order=[("sg_flag", "desc")]), [1, 2, 3, 4, 6])
        self.assertEqual(self.ids("Shot", order=[("sg_shipped_at", "desc")]), [3, 4, 6, 1, 2])

    def test_unsortable_key_ignored_unknown_faults(self):
        self.assertEqual(self.ids("Shot", order=[("tags", "asc"), ("code", "desc")]), [6, 4, 3, 2, 1])
        self.assertEqual(self.ids("Shot", order=[("assets", "desc")]), [1, 2, 3, 4, 6])
        self.assertRaises(Fault, self.read, "Shot", order=[("nope", "asc")])
        self.assertRaises(Fault, self.read, "Shot", order=[("code", "sideways")])


class PagingTests(EngineTestCase):
    def setUp(self):
        super().setUp()
        for i in range(10, 35):
            self.db["HumanUser"][i] = {"type": "HumanUser", "id": i, "__retired": False, "name": f"u{i}"}

    def page(self, n, p, **flags):
        args = {"type": "HumanUser", "return_fields": ["name"],
                "paging": {"entities_per_page": n, "current_page": p}, **flags}
        return self.engine.read(args)

    def test_has_next_page(self):
        # 27 active users.
        r = self.page(10, 1, return_paging_info_without_counts=True)
        self.assertEqual([e["id"] for e in r["entities"]], [1, 2] + list(range(10, 18)))
        self.assertEqual(r["paging_info"], {"has_next_page": True})
        r = self.page(10, 3, return_paging_info_without_counts=True)
        self.assertEqual(len(r["entities"]), 7)
        self.assertEqual(r["paging_info"], {"has_next_page": False})
        r = self.page(9, 3, return_paging_info_without_counts=True)
        self.assertEqual(r["paging_info"], {"has_next_page": False})
        r = self.page(10, 4, return_paging_info_without_counts=True)
        self.assertEqual(r, {"entities": [], "paging_info": {"has_next_page": False}})

    def test_entity_count(self):
        r = self.page(10, 2, return_paging_info=True)
        self.assertEqual(r["paging_info"], {"entity_count": 27})
        self.assertEqual(len(r["entities"]), 10)

    def test_no_flags_single_page(self):
        r = self.page(1, 1, return_paging_info_without_counts=False)
        self.assertEqual(r["entities"], [{"type": "HumanUser", "id": 1, "name": "Ann"}])
        self.assertEqual(r["paging_info"], {"has_next_page": True})

    def test_page_size_capped(self):
        engine = ReadEngine(SCHEMA, self.db, now=lambda: NOW, max_page_size=5)
        r = engine.read({"type": "HumanUser", "paging": {"entities_per_page": 500, "current_page": 2},
                         "return_paging_info_without_counts": True})
        self.assertEqual([e["id"] for e in r["entities"]], [13, 14, 15, 16, 17])
        self.assertEqual(r["paging_info"], {"has_next_page": True})

    def test_no_paging_returns_everything(self):
        r = self.engine.read({"type": "HumanUser"})
        self.assertEqual(len(r["entities"]), 27)

    def test_bad_paging(self):
        self.assertRaises(Fault, self.page, 0, 1)
        self.assertRaises(Fault, self.page, 10, 0)

    def test_client_paging_loop(self):
        """Drive the engine the way shotgun_api3's find() pages."""
        engine = ReadEngine(SCHEMA, self.db, now=lambda: NOW, max_page_size=4)
        params = {"type": "HumanUser", "return_fields": ["id"], "filters": _translate_filters([], None),
                  "return_only": "active", "paging": {"entities_per_page": 4, "current_page": 1},
                  "return_paging_info_without_counts": True}
        records, has_next = [], True
        while has_next:
            result = engine.read(params)
            records.extend(result["entities"])
            has_next = result["paging_info"]["has_next_page"]
            params["paging"]["current_page"] += 1
        self.assertEqual(len(records), 27)
        self.assertEqual(len({r["id"] for r in records}), 27)


class ArchivedProjectTests(EngineTestCase):
    def test_include_archived_projects_false(self):
        self.assertEqual(self.idset("Shot", include_archived_projects=False), {1, 2, 3, 6})
        self.assertEqual(self.idset("Shot", include_archived_projects=True), {1, 2, 3, 4, 6})
        self.assertEqual(self.idset("Asset", include_archived_projects=False), {1, 2})
        self.assertEqual(self.idset("Project", include_archived_projects=False), {1})
        self.assertEqual(self.idset("HumanUser", include_archived_projects=False), {1, 2})


class SummarizeTests(EngineTestCase):
    def summarize(self, filters, summaries, grouping=None, **kw):
        args = {"type": "Shot", "filters": _translate_filters(filters, None), "summaries": summaries}
        if grouping is not None:
            args["grouping"] = grouping
        args.update(kw)
        return self.engine.summarize(args)

    def test_totals(self):
        r = self.summarize([], [
            {"field": "id", "type": "record_count"},
            {"field": "sg_cut_in", "type": "count"},
            {"field": "sg_cut_in", "type": "sum"},
        ])
        self.assertEqual(r, {"summaries": {"id": 5, "sg_cut_in": 80}, "groups": []})
        r = self.summarize([["project", "is", {"type": "Project", "id": 1}]], [
            {"field": "sg_cut_in", "type": "average"},
            {"field": "sg_due", "type": "latest"},
            {"field": "sg_shipped_at", "type": "earliest"},
            {"field": "sg_flag", "type": "checked"},
            {"field": "code", "type": "count"},
        ])
        self.assertEqual(r["summaries"], {"sg_cut_in": 40 / 3, "sg_due": "2024-03-10",
                                          "sg_shipped_at": "2024-02-01T00:00:00Z", "sg_flag": 1, "code": 4})

    def test_grouping(self):
        r = self.summarize([["sg_cut_in", "is_not", None]], [{"field": "sg_cut_in", "type": "sum"}],
                           grouping=[{"field": "sg_sequence", "type": "exact", "direction": "asc"},
                                     {"field": "code", "type": "exact", "direction": "desc"}])
        self.assertEqual(r["summaries"], {"sg_cut_in": 80})
        self.assertEqual([g["group_name"] for g in r["groups"]], ["SEQ_A", "seq_b", ""])
        first = r["groups"][0]
        self.assertEqual(first["group_value"], {"type": "Sequence", "id": 1, "name": "SEQ_A", "valid": "valid"})
        self.assertEqual(first["summaries"], {"sg_cut_in": 20})
        self.assertEqual([g["group_value"] for g in first["groups"]], ["Sh060", "sh010"])
        self.assertEqual(r["groups"][2]["group_value"], None)

    def test_date_grouping(self):
        r = self.summarize([], [{"field": "id", "type": "record_count"}],
                           grouping=[{"field": "sg_due", "type": "month", "direction": "asc"}])
        self.assertEqual([(g["group_value"], g["summaries"]["id"]) for g in r["groups"]],
                         [("2024-03-01", 2), (None, 3)])

    def test_unsupported(self):
        self.assertRaises(Fault, self.summarize, [], [{"field": "id", "type": "percentage"}])
        self.assertRaises(Fault, self.summarize, [], [{"field": "code", "type": "sum"}])
        self.assertRaises(Fault, self.summarize, [], [{"field": "nope", "type": "count"}])


class FixtureSchemaTests(unittest.TestCase):
    def test_every_fixture_type_reads_on_empty_db(self):
        schema = Schema.load(FIXTURE)
        engine = ReadEngine(schema, {}, now=lambda: NOW)
        for spec in schema:
            fields = sorted(spec.fields)
            res = engine.read({
                "type": spec.name, "return_fields": fields,
                "filters": {"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "greater_than", "values": [0]}]},
                "sorts": [{"field_name": spec.identifier, "direction": "desc"}],
                "paging": {"entities_per_page": 500, "current_page": 1},
                "return_paging_info_without_counts": True,
                "include_archived_projects": False,
            })
            self.assertEqual(res, {"entities": [], "paging_info": {"has_next_page": False}})

    def test_fixture_rows_render(self):
        schema = Schema.load(FIXTURE)
        db = {"Project": {1: {"type": "Project", "id": 1, "__retired": False, "name": "P"}},
              "Shot": {1: {"type": "Shot", "id": 1, "__retired": False, "code": "s1",
                           "project": {"type": "Project", "id": 1}}}}
        engine = ReadEngine(schema, db, now=lambda: NOW)
        res = engine.read({"type": "Shot", "return_fields": sorted(schema["Shot"].fields)})
        (shot,) = res["entities"]
        self.assertEqual(shot["project"], {"type": "Project", "id": 1, "name": "P"})
        self.assertEqual(shot["code"], "s1")


class PerformanceSanityTests(unittest.TestCase):
    def test_twenty_thousand_rows(self):
        db = make_db()
        for i in range(100, 20100):
            db["Shot"][i] = {"type": "Shot", "id": i, "__retired": False, "code": f"s{i % 997}",
                             "sg_sequence": {"type": "Sequence", "id": 1 + i % 2}, "sg_cut_in": i % 50}
        engine = ReadEngine(SCHEMA, db, now=lambda: NOW)
        filters = _translate_filters([["sg_sequence.Sequence.code", "is", "seq_b"],
                                      ["sg_cut_in", "between", 10, 20]], None)
        res = engine.read({"type": "Shot", "filters": filters, "return_fields": ["code", "sg_sequence"],
                           "sorts": [{"field_name": "code", "direction": "asc"}],
                           "paging": {"entities_per_page": 50, "current_page": 2},
                           "return_paging_info": True})
        self.assertEqual(len(res["entities"]), 50)
        expected = sum(1 for i in range(100, 20100) if i % 2 == 1 and 10 <= i % 50 <= 20) + 1  # + Shot 2
        self.assertEqual(res["paging_info"]["entity_count"], expected)


class _EngineBackedShotgun:
    """A real shotgun_api3 client whose HTTP layer is answered by the engine."""

    def __init__(self, engine, version, page_size):
        import json

        import shotgun_api3

        self.calls = []
        sg = shotgun_api3.Shotgun("https://sg.example.com", "script", "key", connect=False,
                                  convert_datetimes_to_utc=False)

        def http_request(verb, path, body, headers):
            payload = json.loads(body)
            method, params = payload["method_name"], payload["params"]
            self.calls.append((method, params[1] if len(params) > 1 else None))
            try:
                if method == "info":
                    results = {"version": version, "api_max_entities_per_page": page_size}
                elif method == "read":
                    results = engine.read(params[1])
                elif method == "summarize":
                    results = engine.summarize(params[1])
                else:
                    raise AssertionError(method)
                out = {"results": results}
            except Fault as f:
                out = f.to_wire()
            return (200, "OK"), {"content-type": "application/json"}, json.dumps(out)

        sg._http_request = http_request
        self.sg = sg


class ClientRoundTripTests(EngineTestCase):
    """shotgun_api3's own find()/find_one()/summarize() driving the engine."""

    def setUp(self):
        super().setUp()
        for i in range(10, 35):
            self.db["HumanUser"][i] = {"type": "HumanUser", "id": i, "__retired": False, "name": f"u{i}"}
        self.engine = ReadEngine(SCHEMA, self.db, now=lambda: NOW, max_page_size=4)

    def client(self, version=(8, 50, 0)):
        return _EngineBackedShotgun(self.engine, list(version), 4)

    def test_find_pages_with_has_next_page(self):
        c = self.client()
        users = c.sg.find("HumanUser", [], ["name"])
        self.assertEqual(len(users), 27)
        reads = [p for m, p in c.calls if m == "read"]
        self.assertEqual(len(reads), 7)
        self.assertTrue(all(p["return_paging_info_without_counts"] for p in reads))

    def test_find_pages_with_entity_count_on_old_server(self):
        c = self.client((7, 0, 0))
        users = c.sg.find("HumanUser", [["name", "starts_with", "U"]], ["name"], order=[{"field_name": "name", "direction": "desc"}])
        self.assertEqual([u["name"] for u in users], [f"u{i}" for i in range(34, 9, -1)])
        self.assertTrue(all(p["return_paging_info"] for m, p in c.calls if m == "read"))

    def test_limit_page_and_find_one(self):
        c = self.client()
        self.assertEqual(len(c.sg.find("HumanUser", [], limit=3)), 3)
        self.assertEqual(len(c.sg.find("HumanUser", [], limit=10)), 10)
        self.assertEqual([u["id"] for u in c.sg.find("HumanUser", [], limit=4, page=2)], [12, 13, 14, 15])
        one = c.sg.find_one("Shot", [["sg_sequence", "is", {"type": "Sequence", "id": 2, "name": "x"}]],
                            ["sg_sequence", "sg_shipped_at"])
        self.assertEqual(one, {"type": "Shot", "id": 2, "sg_sequence": {"type": "Sequence", "id": 2, "name": "seq_b"},
                               "sg_shipped_at": datetime.datetime(2024, 2, 1, 0, 0, 0)})

    def test_datetime_filter_values_from_client(self):
        c = self.client()
        got = c.sg.find("Shot", [["sg_shipped_at", "greater_than", datetime.datetime(2024, 3, 1)],
                                 ["sg_due", "is", datetime.date(2024, 3, 10)]])
        self.assertEqual([s["id"] for s in got], [1])

    def test_fault_reaches_client(self):
        import shotgun_api3

        c = self.client()
        self.assertRaises(shotgun_api3.Fault, c.sg.find, "Shot", [["nope", "is", 1]])

    def test_summarize(self):
        c = self.client()
        r = c.sg.summarize("Shot", [["project", "is", {"type": "Project", "id": 1}]],
                           [{"field": "id", "type": "count"}],
                           grouping=[{"field": "sg_status_list", "type": "exact", "direction": "asc"}])
        self.assertEqual(r["summaries"], {"id": 4})
        self.assertEqual([(g["group_value"], g["summaries"]["id"]) for g in r["groups"]],
                         [("fin", 1), ("IP", 1), ("ip", 1), (None, 1)])


# -- the id-ordered fast path: sorted ids kept per table, seek bounds on id ----

class IdTableTests(unittest.TestCase):
    def test_sorted_ids_follow_every_change(self):
        from sgcache.testing.engine import IdTable

        table = IdTable({5: "e", 1: "a"})
        self.assertEqual(table.sorted_ids(), [1, 5])
        self.assertIs(table.sorted_ids(), table.sorted_ids())  # kept between reads
        table[9] = "i"  # above every id: appended
        self.assertEqual(table.sorted_ids(), [1, 5, 9])
        table[5] = "E"  # an existing id: nothing to do
        table[3] = "c"  # below: dropped and sorted again
        self.assertEqual(table.sorted_ids(), [1, 3, 5, 9])
        del table[1]
        self.assertEqual(table.sorted_ids(), [3, 5, 9])
        self.assertEqual(table.pop(9), "i")
        self.assertEqual(table.pop(42, None), None)
        self.assertEqual(table.sorted_ids(), [3, 5])
        table.setdefault(4, "d")
        table.setdefault(3, "x")
        self.assertEqual(table.sorted_ids(), [3, 4, 5])
        table.update({2: "b"}, **{})
        self.assertEqual(table.sorted_ids(), [2, 3, 4, 5])
        table |= {0: "z"}
        self.assertEqual(table.sorted_ids(), [0, 2, 3, 4, 5])
        table.popitem()
        self.assertEqual(table.sorted_ids(), sorted(table))
        table.clear()
        self.assertEqual(table.sorted_ids(), [])
        table[7] = "g"
        self.assertEqual(table.sorted_ids(), [7])
        self.assertEqual(table, {7: "g"})

    def test_copies(self):
        import copy
        import pickle

        from sgcache.testing.engine import IdTable

        table = IdTable({3: {"id": 3}, 1: {"id": 1}})
        table.sorted_ids()
        for clone in (copy.copy(table), copy.deepcopy(table), pickle.loads(pickle.dumps(table))):
            self.assertIsInstance(clone, IdTable)
            self.assertEqual(clone, table)
            self.assertEqual(clone.sorted_ids(), [1, 3])
            clone[2] = {"id": 2}
            self.assertEqual(clone.sorted_ids(), [1, 2, 3])
            self.assertEqual(table.sorted_ids(), [1, 3])
        deep = copy.deepcopy(table)
        self.assertIsNot(deep[1], table[1])


class IdBoundsTests(unittest.TestCase):
    def test_bounds_from_filters(self):
        from sgcache.testing.engine import _id_bounds

        def wire(*conds, op="and"):
            return {"logical_operator": op, "conditions": list(conds)}

        def c(relation, *values, path="id"):
            return {"path": path, "relation": relation, "values": list(values)}

        self.assertEqual(_id_bounds(None), ([], []))
        self.assertEqual(_id_bounds(wire(c("greater_than", 5), c("less_than", 9))), ([(5, False)], [(9, False)]))
        self.assertEqual(_id_bounds(wire(c("between", 2, None))), ([(2, True)], []))
        self.assertEqual(_id_bounds(wire(c("between", None, 7.5))), ([], [(7.5, True)]))
        self.assertEqual(_id_bounds(wire(c("is", 4))), ([(4, True)], [(4, True)]))
        self.assertEqual(_id_bounds(wire(c("in", 8, 3, 5))), ([(3, True)], [(8, True)]))
        self.assertEqual(_id_bounds(wire(c("in", 8, None))), ([], []))
        # nested and-groups count; or-groups, negations, other paths, bools do not
        self.assertEqual(_id_bounds(wire(wire(c("less_than", 9)), c("sg_cut_in", "greater_than", 1))),
                         ([], [(9, False)]))
        self.assertEqual(_id_bounds(wire(c("greater_than", 5), c("less_than", 9), op="or")), ([], []))
        self.assertEqual(_id_bounds(wire(wire(c("less_than", 9), op="or"))), ([], []))
        self.assertEqual(_id_bounds(wire(c("not_between", 1, 5), c("is_not", 3), c("greater_than", True),
                                         c("greater_than", 1, path="sg_sequence.Sequence.id"))), ([], []))
        # the client's list form and a single bare condition
        self.assertEqual(_id_bounds(_translate_filters([["id", "greater_than", 10], ["id", "less_than", 20]], None)),
                         ([(10, False)], [(20, False)]))
        self.assertEqual(_id_bounds([["id", "between", [1, 4]]]), ([(1, True)], [(4, True)]))
        self.assertEqual(_id_bounds(c("less_than", 3)), ([], [(3, False)]))

    def _random_db(self, rng, count=1500):
        from sgcache.testing.engine import IdTable

        db = make_db()
        shots = IdTable(db["Shot"])
        ids = rng.sample(range(7, 6000), count)
        for i in ids:  # random order: the sorted ids are rebuilt, not appended
            shots[i] = {"type": "Shot", "id": i, "__retired": rng.random() < 0.1, "code": f"s{i}",
                        "project": L("Project", rng.choice([1, 2])),
                        "sg_cut_in": rng.choice([None, *range(10)])}
        db["Shot"] = shots
        return db

    def _random_filters(self, rng, top):
        conds = []
        for _ in range(rng.randint(0, 4)):
            kind = rng.choice(["gt", "lt", "between", "is", "in", "cut", "nested", "float"])
            a, b = rng.randint(-10, top + 10), rng.randint(-10, top + 10)
            if kind == "gt":
                conds.append({"path": "id", "relation": "greater_than", "values": [a]})
            elif kind == "lt":
                conds.append({"path": "id", "relation": "less_than", "values": [b]})
            elif kind == "float":
                conds.append({"path": "id", "relation": rng.choice(["greater_than", "less_than"]),
                              "values": [a + 0.5]})
            elif kind == "between":
                lo, hi = sorted((a, b)) if rng.random() < 0.8 else (b, a)
                conds.append({"path": "id", "relation": "between",
                              "values": [rng.choice([lo, lo, None]), rng.choice([hi, hi, None])]})
            elif kind == "is":
                conds.append({"path": "id", "relation": "is", "values": [a]})
            elif kind == "in":
                conds.append({"path": "id", "relation": "in", "values": [a, b, rng.randint(0, top)]})
            elif kind == "cut":
                conds.append({"path": "sg_cut_in", "relation": "greater_than", "values": [rng.randint(0, 9)]})
            else:
                conds.append({"logical_operator": "and", "conditions": [
                    {"path": "id", "relation": "less_than", "values": [b]},
                    {"path": "sg_cut_in", "relation": "is_not", "values": [None]}]})
        return {"logical_operator": "and", "conditions": conds}

    def test_bounds_give_the_results_of_the_general_path(self):
        import random

        rng = random.Random(20240313)
        db = self._random_db(rng)
        top = max(db["Shot"])
        engine = ReadEngine(SCHEMA, db, now=lambda: NOW)
        nonempty = 0
        for _ in range(400):
            filters = self._random_filters(rng, top)
            args = {
                "type": "Shot", "return_fields": ["code", "sg_cut_in"], "filters": filters,
                "return_only": rng.choice(["active", "active", "retired"]),
                "include_archived_projects": rng.random() < 0.7,
                "paging": {"entities_per_page": rng.randint(1, 60), "current_page": rng.randint(1, 3)},
                "return_paging_info_without_counts": True,
            }
            if rng.random() < 0.5:
                args["sorts"] = [{"field_name": "id", "direction": "asc"}]
            fast = engine.read(args)
            # The same filter under a one-member "or": the fast path without bounds...
            unbounded = engine.read({**args, "filters": {"logical_operator": "or", "conditions": [filters]}})
            # ... and the general path (select everything, sort, slice).
            general = engine.read({**args, "return_paging_info": True, "return_paging_info_without_counts": False})
            self.assertEqual(fast, unbounded, filters)
            self.assertEqual(fast["entities"], general["entities"], filters)
            per_page, page = args["paging"]["entities_per_page"], args["paging"]["current_page"]
            self.assertEqual(fast["paging_info"]["has_next_page"],
                             general["paging_info"]["entity_count"] > per_page * page)
            nonempty += bool(fast["entities"])
        self.assertGreater(nonempty, 100)

    def test_id_slices_on_a_big_table(self):
        """Not a timing assert: prints what the seek ceiling saves on 100k rows."""
        import time

        from sgcache.testing.engine import IdTable

        rows = IdTable()
        for i in range(1, 100_001):
            rows[i] = {"type": "Shot", "id": i, "__retired": False, "code": f"s{i}", "sg_cut_in": i % 10}
        db = {**make_db(), "Shot": rows}
        engine = ReadEngine(SCHEMA, db, now=lambda: NOW)
        plain = ReadEngine(SCHEMA, {**db, "Shot": dict(rows)}, now=lambda: NOW)

        def read(eng, after, hi, wrap=False):
            filters = {"logical_operator": "and", "conditions": [
                {"path": "id", "relation": "greater_than", "values": [after]},
                {"path": "id", "relation": "less_than", "values": [hi]},
                {"path": "sg_cut_in", "relation": "is", "values": [7]}]}
            if wrap:
                filters = {"logical_operator": "or", "conditions": [filters]}
            return eng.read({"type": "Shot", "return_fields": ["code"], "filters": filters,
                             "sorts": [{"field_name": "id", "direction": "asc"}],
                             "paging": {"entities_per_page": 500, "current_page": 1},
                             "return_paging_info_without_counts": True})

        slices = [(after, after + 2000) for after in range(0, 100_000, 5000)]  # 200 matches each
        timings = {}
        results = {}
        for name, eng, wrap in (("seek floor+ceiling", engine, False), ("floor+ceiling, plain dict", plain, False),
                                ("no seek bounds", engine, True)):
            start = time.perf_counter()
            results[name] = [read(eng, after, hi, wrap) for after, hi in slices]
            timings[name] = (time.perf_counter() - start) / len(slices) * 1000
        first = results["seek floor+ceiling"]
        for name, got in results.items():
            self.assertEqual(got, first, name)
        self.assertEqual([len(r["entities"]) for r in first], [200] * len(slices))
        print("\n  id slices of 2000 on 100k rows, 200 matches each (ms per read): "
              + ", ".join(f"{name} {ms:.2f}" for name, ms in timings.items()))
