"""Tests for sgcache.schema.tools (rules, filter, dump, YAML output), the
``sgcache schema`` commands of sgcache.admin.cli, and the checked-in schema/basic.yml."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import shotgun_api3
import yaml
from twisted.trial import unittest

from sgcache.admin import cli

from sgcache.schema import tools as schema_tools
from sgcache.schema.types import is_cacheable
from sgcache.schema import Schema, SchemaError
from sgcache.schema.tools import Rule, filter_schema, filter_schema_report, parse_rules
from sgcache.testing.fixtures import FIXTURE_SCHEMA

FIXTURE = FIXTURE_SCHEMA
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASIC_YML = os.path.join(REPO, "schema", "basic.yml")
BASIC_RULES = os.path.join(REPO, "schema", "basic.rules")
ALWAYS = {"id", "created_at", "updated_at", "created_by", "updated_by"}

_fixture: Schema | None = None


def fixture() -> Schema:
    """The real site's schema (loaded once; tests must not mutate it)."""
    global _fixture
    if not os.path.isdir(FIXTURE):
        raise unittest.SkipTest(f"schema fixture not found at {FIXTURE}")
    if _fixture is None:
        _fixture = Schema.load(FIXTURE)
    return _fixture


def rules(text: str) -> list[Rule]:
    return parse_rules(text, source="test.rules")


def fake_shotgun(test: unittest.TestCase, fail: Exception | None = None) -> list:
    """Replace shotgun_api3.Shotgun with a fake serving the fixture; returns its call log."""
    calls: list = []
    with open(os.path.join(FIXTURE, "schema_read.json")) as fh:
        schema_read = json.load(fh)
    with open(os.path.join(FIXTURE, "schema_entity_read.json")) as fh:
        entity_read = json.load(fh)

    class FakeShotgun:
        def __init__(self, base_url, script_name=None, api_key=None, connect=True):
            calls.append(("init", base_url, script_name, api_key))

        def schema_read(self):
            calls.append(("schema_read",))
            if fail is not None:
                raise fail
            return schema_read

        def schema_entity_read(self):
            calls.append(("schema_entity_read",))
            return entity_read

        def close(self):
            calls.append(("close",))

    test.patch(shotgun_api3, "Shotgun", FakeShotgun)
    return calls


class ParseRulesTests(unittest.TestCase):
    def test_parse(self) -> None:
        parsed = parse_rules(
            """
            # a comment

            + Shot.*
            -*.sg_*
            + *.code   # trailing comment
            + Task.step
            + Asset
            - Cust?mEntity0[1-3].sg_x
            """,
            source="r.rules",
        )
        self.assertEqual(
            [(r.include, r.type_pattern, r.field_pattern, r.line) for r in parsed],
            [
                (True, "Shot", "*", 4),
                (False, "*", "sg_*", 5),
                (True, "*", "code", 6),
                (True, "Task", "step", 7),
                (True, "Asset", "*", 8),
                (False, "Cust?mEntity0[1-3]", "sg_x", 9),
            ],
        )
        self.assertEqual(parsed[0].source, "r.rules")
        self.assertEqual(str(parsed[1]), "- *.sg_*")

    def test_empty(self) -> None:
        self.assertEqual(parse_rules("\n# nothing\n   \n"), [])

    def test_bad_lines(self) -> None:
        for bad in ["Shot.code", "+", "+ Shot.code.name", "+ Shot code", "* Shot", "+ .code",
                    "+ Shot.", "+ Shot/code", "++ Shot"]:
            error = self.assertRaises(SchemaError, parse_rules, f"+ Task.*\n\n{bad}\n", "my.rules")
            self.assertIn("my.rules:3:", str(error), bad)

    def test_matching(self) -> None:
        rule = rules("+ *.sg_*")[0]
        self.assertTrue(rule.matches("Shot", "sg_sequence"))
        self.assertFalse(rule.matches("Shot", "code"))
        # Case-sensitive.
        self.assertFalse(rules("+ shot.code")[0].matches("Shot", "code"))
        self.assertTrue(rules("+ Shot")[0].matches("Shot", "anything"))

    def test_last_match_wins(self) -> None:
        parsed = rules("+ Shot.*\n- *.sg_*\n+ Shot.sg_sequence")
        self.assertTrue(schema_tools.is_included(parsed, "Shot", "code"))
        self.assertFalse(schema_tools.is_included(parsed, "Shot", "sg_status_list"))
        self.assertTrue(schema_tools.is_included(parsed, "Shot", "sg_sequence"))
        self.assertFalse(schema_tools.is_included(parsed, "Asset", "code"))

    def test_load_rules(self) -> None:
        path = self.mktemp()
        with open(path, "w") as fh:
            fh.write("+ Shot.code\nnonsense\n")
        self.assertIn(f"{path}:2:", str(self.assertRaises(SchemaError, schema_tools.load_rules, path)))
        missing = self.assertRaises(SchemaError, schema_tools.load_rules, path + ".nope")
        self.assertIn("cannot read rules", str(missing))


class FilterTests(unittest.TestCase):
    def setUp(self) -> None:
        self.schema = fixture()

    def test_glob_rules(self) -> None:
        report = filter_schema_report(self.schema, rules("+ Shot.*\n- *.sg_*\n+ *.code"))
        out = report.schema
        shot = self.schema["Shot"]
        kept = {
            name for name, spec in shot.fields.items()
            if not name.startswith("sg_") and is_cacheable(spec.data_type)
        }
        # Links to types that are not kept go too: Task and Note have no
        # `code`, so Shot.tasks and Shot.notes have nowhere to point.
        kept -= {"tasks", "notes", "open_notes"}
        kept |= {"project"}
        self.assertEqual(set(out["Shot"].fields), kept)
        self.assertNotIn("sg_sequence", out["Shot"].fields)
        self.assertNotIn("image", out["Shot"].fields)
        self.assertIn("Shot.image", report.dropped_uncacheable)
        self.assertIn("Shot.step_0", report.dropped_uncacheable)
        self.assertIn("Shot.tasks", report.dropped_links)
        self.assertEqual(out.get_field("Shot", "elements").link_types, ("Element",))
        # `+ *.code` keeps every type with a code field, with code + bookkeeping.
        self.assertIn("Sequence", out)
        self.assertEqual(set(out["Sequence"].fields), {"code", "project"} | ALWAYS)
        self.assertNotIn("Task", out)  # no code field, nothing included
        self.assertNotIn("Project", out)
        self.assertEqual(out.get_field("Shot", "assets").link_types, ("Asset",))
        self.assertIn("kept", report.summary())

    def test_always_kept_fields(self) -> None:
        out = filter_schema(self.schema, rules("+ Shot.description\n+ Task.step"))
        self.assertEqual(set(out.entities), {"Shot", "Task"})
        self.assertEqual(set(out["Shot"].fields), {"code", "description", "project"} | ALWAYS)
        # Task keeps its identifier `content`; Step is not kept, so step goes.
        self.assertEqual(set(out["Task"].fields), {"content", "project"} | ALWAYS)
        self.assertEqual(out.identifier("Task"), "content")
        # Always-kept links keep their declared types when none is kept.
        self.assertEqual(out.get_field("Shot", "project").link_types, ("Project",))
        self.assertEqual(out.get_field("Shot", "created_by").link_types, ("HumanUser", "ApiUser"))

    def test_always_kept_links_narrowed(self) -> None:
        out = filter_schema(self.schema, rules("+ Shot.code\n+ HumanUser.name"))
        self.assertEqual(out.get_field("Shot", "created_by").link_types, ("HumanUser",))

    def test_no_project_field(self) -> None:
        out = filter_schema(self.schema, rules("+ Step.code"))
        self.assertNotIn("project", out["Step"].fields)

    def test_excluding_a_type(self) -> None:
        out = filter_schema(self.schema, rules("+ *.code\n- Shot"))
        self.assertNotIn("Shot", out)
        self.assertIn("Asset", out)
        self.assertEqual(len(filter_schema(self.schema, [])), 0)

    def test_uncacheable_dropped(self) -> None:
        report = filter_schema_report(
            self.schema, rules("+ Shot.image\n+ Shot.step_0\n+ HumanUser.password_proxy\n+ HumanUser.name")
        )
        self.assertEqual(
            sorted(report.dropped_uncacheable),
            ["HumanUser.password_proxy", "Shot.image", "Shot.step_0"],
        )
        for entity in report.schema:
            for spec in entity.fields.values():
                self.assertTrue(is_cacheable(spec.data_type), f"{entity.name}.{spec.name}")

    def test_link_narrowing(self) -> None:
        report = filter_schema_report(
            self.schema, rules("+ Task.entity\n+ Shot.code\n+ Asset.code\n+ Shot.sg_sequence")
        )
        out = report.schema
        self.assertEqual(out.get_field("Task", "entity").link_types, ("Asset", "Shot"))
        self.assertIsNone(out.get_field("Shot", "sg_sequence"))
        self.assertEqual(report.dropped_links, ["Shot.sg_sequence"])
        # The input is untouched.
        self.assertEqual(len(self.schema.get_field("Task", "entity").link_types), 6)
        self.assertIn("sg_sequence", self.schema["Shot"].fields)

    def test_reverse_pruned(self) -> None:
        out = filter_schema(self.schema, rules("+ Task.entity\n+ Shot.code\n+ Asset.code"))
        self.assertIsNone(out.get_field("Task", "entity").reverse)
        out = filter_schema(self.schema, rules("+ Task.entity\n+ Shot.tasks\n+ Asset.code"))
        self.assertEqual(out.get_field("Task", "entity").reverse, "Shot.tasks")
        self.assertEqual(out.get_field("Shot", "tasks").reverse, "Task.entity")
        self.assertEqual(out.reverse_of("Task", "entity", "Shot").name, "tasks")

    def test_everything(self) -> None:
        report = filter_schema_report(self.schema, rules("+ *"))
        out = report.schema
        self.assertEqual(len(out), 77)
        self.assertEqual(len(report.dropped_uncacheable), 69)  # 50 image, 18 pivot, 1 password
        kept = set(out.entities)
        for entity in out:
            self.assertIn(entity.identifier, entity.fields)
            for spec in entity.fields.values():
                if spec.is_link and spec.name not in ALWAYS | {"project"}:
                    self.assertTrue(set(spec.link_types) <= kept, f"{entity.name}.{spec.name}")
        # It survives the trip through YAML with strict validation.
        again = Schema.from_dict(yaml.safe_load(schema_tools.schema_to_yaml(out)), source="again")
        self.assertEqual(again.to_dict(), out.to_dict())

    def test_unused_rules(self) -> None:
        report = filter_schema_report(self.schema, rules("+ Shot.code\n+ Shot.no_such_field"))
        self.assertEqual([str(r) for r in report.unused_rules], ["+ Shot.no_such_field"])


class YamlOutputTests(unittest.TestCase):
    def test_write_stream_and_path(self) -> None:
        schema = filter_schema(fixture(), rules("+ Shot.*\n+ Sequence.code\n+ Task.entity"))
        stream = io.StringIO()
        schema_tools.write_yaml(schema, stream, generated_by="a test", source="the fixture")
        text = stream.getvalue()
        lines = text.splitlines()
        self.assertEqual(lines[0], "# sgcache schema (format: see sgcache/schema/model.py).")
        self.assertIn("# Generated by: a test", lines)
        self.assertIn("# From: the fixture", lines)
        self.assertIn("      sg_sequence: {type: entity, entity_types: [Sequence]}", lines)
        self.assertIn("      tasks: {type: multi_entity, entity_types: [Task], reverse: Task.entity}", lines)
        # Deterministic: types and fields in name order.
        data = yaml.safe_load(text)
        self.assertEqual(list(data["entities"]), sorted(data["entities"]))
        for body in data["entities"].values():
            self.assertEqual(list(body["fields"]), sorted(body["fields"]))

        path = os.path.join(self.mktemp() + ".yml")
        schema_tools.write_yaml(schema, path, generated_by="a test", source="the fixture")
        with open(path) as fh:
            self.assertEqual(fh.read(), text)
        loaded = Schema.load(path)
        self.assertEqual(loaded.to_dict(), schema.to_dict())
        # Writing again gives the same bytes, and leaves no temporary file.
        schema_tools.write_yaml(schema, path, generated_by="a test", source="the fixture")
        with open(path) as fh:
            self.assertEqual(fh.read(), text)
        self.assertEqual(os.listdir(os.path.dirname(os.path.abspath(path))).count(os.path.basename(path)), 1)
        self.assertFalse([n for n in os.listdir(os.path.dirname(os.path.abspath(path)))
                          if n.startswith(".sgcache-schema-")])


class DumpTests(unittest.TestCase):
    def test_from_directory(self) -> None:
        fixture()
        schema = schema_tools.dump_from_file(FIXTURE)
        self.assertEqual(len(schema), 77)

    def test_from_json_file(self) -> None:
        fixture()
        schema = schema_tools.dump_from_file(os.path.join(FIXTURE, "schema_read.json"))
        self.assertEqual(len(schema), 77)
        self.assertIsNone(schema["HumanUser"].display_name)

    def test_from_bad_file(self) -> None:
        path = self.mktemp() + ".json"
        with open(path, "w") as fh:
            fh.write("[1, 2")
        self.assertIn("not valid JSON", str(self.assertRaises(SchemaError, schema_tools.dump_from_file, path)))
        missing = self.assertRaises(SchemaError, schema_tools.dump_from_file, path + ".nope")
        self.assertIn("cannot read", str(missing))

    def test_from_site(self) -> None:
        fixture()
        calls = fake_shotgun(self)
        schema = schema_tools.dump_from_site("https://site.example", "cache", "key")
        self.assertEqual(len(schema), 77)
        self.assertEqual(schema.source, "https://site.example")
        self.assertEqual(schema["HumanUser"].display_name, "Person")
        self.assertEqual(
            calls,
            [("init", "https://site.example", "cache", "key"), ("schema_read",),
             ("schema_entity_read",), ("close",)],
        )

    def test_from_site_failure(self) -> None:
        fixture()
        calls = fake_shotgun(self, shotgun_api3.AuthenticationFault("Can't authenticate script 'cache'"))
        error = self.assertRaises(SchemaError, schema_tools.dump_from_site, "https://site.example", "cache", "bad")
        self.assertEqual(
            str(error),
            "https://site.example: cannot read the schema: "
            "AuthenticationFault: Can't authenticate script 'cache'",
        )
        self.assertEqual(calls[-1], ("close",))


class CliTests(unittest.TestCase):
    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def test_dump_from_file(self) -> None:
        fixture()
        out = self.path("site.yml")
        self.assertEqual(cli.main(["schema", "dump", "--from-file", FIXTURE, "-o", out]), 0)
        schema = Schema.load(out)
        self.assertEqual(len(schema), 77)
        self.assertEqual(schema.to_dict(), fixture().to_dict())
        with open(out) as fh:
            header = fh.read().split("entities:")[0]
        self.assertIn("# Generated by: sgcache schema dump", header)
        self.assertIn(f"# From: {FIXTURE}", header)
        self.assertIn("77 types", self.stderr.getvalue())
        self.assertEqual(self.stdout.getvalue(), "")

    def test_dump_to_stdout(self) -> None:
        fixture()
        self.assertEqual(cli.main(["schema", "dump", "--from-file", FIXTURE]), 0)
        self.assertEqual(len(yaml.safe_load(self.stdout.getvalue())["entities"]), 77)

    def test_dump_from_site_never_records_the_key(self) -> None:
        fixture()
        fake_shotgun(self)
        out = self.path("site.yml")
        argv = ["schema", "dump", "--shotgun", "https://site.example", "--script-name", "cache",
                "--api-key", "s3cret", "-o", out]
        self.assertEqual(cli.main(argv), 0)
        with open(out) as fh:
            text = fh.read()
        self.assertNotIn("s3cret", text)
        self.assertIn("# From: https://site.example", text)

    def test_dump_from_site_needs_credentials(self) -> None:
        self.patch(os, "environ", {})
        self.assertEqual(cli.main(["schema", "dump", "--shotgun", "https://site.example"]), 2)
        self.assertIn("--script-name and --api-key", self.stderr.getvalue())

    def test_filter(self) -> None:
        fixture()
        rules_path = self.path("my.rules")
        with open(rules_path, "w") as fh:
            fh.write("+ Shot.*\n- *.sg_*\n")
        out = self.path("out.yml")
        argv = ["schema", "filter", "--rules", rules_path, "--rules-text", "+ *.code",
                "--rules-text", "+ Shot.sg_sequence", FIXTURE, "-o", out]
        self.assertEqual(cli.main(argv), 0)
        schema = Schema.load(out)
        self.assertIn("sg_sequence", schema["Shot"].fields)
        self.assertNotIn("sg_status_list", schema["Shot"].fields)
        self.assertIn("Sequence", schema)
        expected = filter_schema(fixture(), rules("+ Shot.*\n- *.sg_*\n+ *.code\n+ Shot.sg_sequence"))
        self.assertEqual(schema.to_dict(), expected.to_dict())
        err = self.stderr.getvalue().splitlines()
        self.assertEqual(len(err), 1)
        self.assertRegex(err[0], r"^sgcache: schema filter: kept \d+ types, \d+ fields; "
                                 r"dropped \d+ uncacheable fields, \d+ links to dropped types$")
        with open(out) as fh:
            self.assertIn(f"# Generated by: sgcache schema filter --rules {rules_path} "
                          "--rules-text '+ *.code' --rules-text '+ Shot.sg_sequence' ", fh.read())

    def test_filter_order_follows_command_line(self) -> None:
        fixture()
        argv = ["schema", "filter", "--rules-text", "+ Shot.code\n+ Shot.description",
                "--rules-text", "- Shot.description", FIXTURE]
        self.assertEqual(cli.main(argv), 0)
        fields = yaml.safe_load(self.stdout.getvalue())["entities"]["Shot"]["fields"]
        self.assertNotIn("description", fields)

    def test_filter_yaml_input_verbose(self) -> None:
        argv = ["schema", "filter", "-v", "--rules-text", "+ Shot.*\n+ Shot.nope", BASIC_YML,
                "-o", self.path("shots.yml")]
        self.assertEqual(cli.main(argv), 0)
        self.assertEqual(list(Schema.load(self.path("shots.yml")).entities), ["Shot"])
        self.assertIn("unused rule: --rules-text #1:2: + Shot.nope", self.stderr.getvalue())
        self.assertIn("dropped (links only to dropped types): Shot.assets", self.stderr.getvalue())

    def assertFails(self, argv: list[str], *expected: str) -> None:
        self.assertEqual(cli.main(argv), 2)
        err = self.stderr.getvalue()
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertNotIn("Traceback", err)
        for text in expected:
            self.assertIn(text, err)

    def test_filter_bad_rule(self) -> None:
        rules_path = self.path("bad.rules")
        with open(rules_path, "w") as fh:
            fh.write("# ok\n+ Shot.code\nShot.name\n")
        self.assertFails(["schema", "filter", "--rules", rules_path, BASIC_YML], f"{rules_path}:3:")

    def test_filter_needs_rules(self) -> None:
        self.assertFails(["schema", "filter", BASIC_YML], "--rules")

    def test_filter_selects_nothing(self) -> None:
        self.assertFails(["schema", "filter", "--rules-text", "+ Nope.*", BASIC_YML], "select no field")

    def test_missing_input(self) -> None:
        missing = self.path("nope.yml")
        self.assertFails(["schema", "filter", "--rules-text", "+ Shot", missing], missing)
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertFails(["schema", "dump", "--from-file", missing], missing)

    def test_missing_rules_file(self) -> None:
        self.assertFails(["schema", "filter", "--rules", self.path("no.rules"), BASIC_YML], "no.rules")

    def test_unwritable_output(self) -> None:
        out = os.path.join(self.path("no-such-dir"), "out.yml")
        self.assertFails(["schema", "filter", "--rules-text", "+ Shot", BASIC_YML, "-o", out],
                         "no-such-dir")

    def test_invalid_yaml_input(self) -> None:
        bad = self.path("bad.yml")
        with open(bad, "w") as fh:
            fh.write("entities:\n  Shot: {fields: {code: txt}}\n")
        self.assertFails(["schema", "filter", "--rules-text", "+ Shot", bad], "Shot.code: unknown data type")

    def test_check(self) -> None:
        self.assertEqual(cli.main(["schema", "check", BASIC_YML]), 0)
        self.assertIn("ok, 20 types", self.stdout.getvalue())

    def test_usage_errors(self) -> None:
        self.assertEqual(cli.main([]), 2)
        self.assertEqual(cli.main(["schema"]), 2)
        self.assertEqual(cli.main(["schema", "dump"]), 2)
        self.assertEqual(cli.main(["schema", "dump", "--from-file", "x", "--shotgun", "y"]), 2)
        self.assertEqual(cli.main(["nope"]), 2)
        self.assertEqual(cli.main(["--help"]), 0)
        self.assertIn("schema", self.stdout.getvalue())


def register_hello(parser: argparse.ArgumentParser) -> None:
    """Say hello (a test command)."""
    parser.add_argument("name")
    parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 3)


class CommandHookTests(unittest.TestCase):
    def test_build_parser(self) -> None:
        parser = cli.build_parser()
        self.assertIn("schema", parser.subparsers.choices)
        args = parser.parse_args(["schema", "filter", "--rules-text", "+ Shot", "in.yml"])
        self.assertEqual(args.rule_sources, [("--rules-text", "+ Shot")])
        self.assertEqual(args.input, "in.yml")

    def test_registered_commands(self) -> None:
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        self.patch(cli, "COMMANDS", cli.COMMANDS + [
            ("hello", register_hello),
            ("hello-lazy", "tests.test_schema_tools:register_hello"),
        ])
        self.assertEqual(cli.main(["hello", "world"]), 3)
        self.assertEqual(cli.main(["hello-lazy", "again"]), 3)
        self.assertEqual(stdout.getvalue(), "hello world\nhello again\n")
        parser = cli.build_parser()
        self.assertEqual(parser.subparsers.choices["hello"].description, "Say hello (a test command).")

    def test_explicit_command_list(self) -> None:
        parser = cli.build_parser([("hello", register_hello)])
        self.assertEqual(set(parser.subparsers.choices), {"hello"})


class BasicSchemaTests(unittest.TestCase):
    """The checked-in schema/basic.yml."""

    TYPES = [
        "Project", "Sequence", "Shot", "Asset", "Task", "Step", "HumanUser", "ApiUser", "Group",
        "Version", "PublishedFile", "PublishedFileType", "Note", "Playlist", "Department",
        "TaskTemplate", "LocalStorage", "PipelineConfiguration", "Reply", "Attachment",
    ]

    def setUp(self) -> None:
        self.schema = Schema.load(BASIC_YML)

    def test_types(self) -> None:
        self.assertEqual(sorted(self.schema.entities), sorted(self.TYPES))

    def test_useful_fields(self) -> None:
        expected = {
            "Project": ["name", "archived", "users"],
            "Shot": ["code", "sg_sequence", "sg_status_list", "assets", "tasks", "project", "description"],
            "Asset": ["code", "sg_asset_type", "shots", "tasks"],
            "Task": ["content", "entity", "step", "task_assignees", "sg_status_list", "due_date"],
            "Version": ["code", "entity", "sg_task", "user", "sg_path_to_frames", "playlists"],
            "PublishedFile": ["code", "path", "version_number", "published_file_type", "task", "entity"],
            "Note": ["subject", "content", "note_links", "addressings_to", "replies"],
            "HumanUser": ["name", "login", "email", "groups"],
            "PipelineConfiguration": ["code", "windows_path", "linux_path", "mac_path"],
        }
        for type_name, names in expected.items():
            for name in names:
                self.assertIsNotNone(self.schema.get_field(type_name, name), f"{type_name}.{name}")
        self.assertEqual(self.schema.get_field("Project", "archived").data_type, "checkbox")

    def test_only_cacheable_and_no_private_fields(self) -> None:
        for entity in self.schema:
            for spec in entity.fields.values():
                where = f"{entity.name}.{spec.name}"
                self.assertTrue(is_cacheable(spec.data_type), where)
                self.assertNotIn("password", spec.name, where)
                self.assertNotIn("current_user", spec.name, where)
                for linked in spec.link_types:
                    if spec.name not in ("created_by", "updated_by", "project"):
                        self.assertIn(linked, self.schema, where)

    def test_reverse_pairs(self) -> None:
        self.assertEqual(self.schema.reverse_of("Task", "entity", "Shot").name, "tasks")
        self.assertEqual(self.schema.reverse_of("Shot", "sg_sequence", "Sequence").name, "shots")

    def test_regenerates_from_rules(self) -> None:
        """basic.yml is what basic.rules makes from the fixture (bar the header)."""
        fixture()
        made = filter_schema(fixture(), schema_tools.load_rules(BASIC_RULES))
        with open(BASIC_YML) as fh:
            checked_in = fh.read()

        def body(text: str) -> list[str]:
            return [line for line in text.splitlines() if not line.startswith("#")]

        self.assertEqual(body(schema_tools.schema_to_yaml(made)), body(checked_in))
