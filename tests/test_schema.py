"""Tests for sgcache.schema: the Schema model, its YAML and schema_read loaders."""

from __future__ import annotations

import json
import os
import textwrap

from twisted.trial import unittest

from sgcache.schema import Schema, SchemaError
from sgcache.testing.fixtures import FIXTURE_SCHEMA

FIXTURE = FIXTURE_SCHEMA

MINIMAL = """
entities:
  Project:
    fields:
      name: text
  Shot:
    fields:
      code: text
      sg_sequence: {type: entity, entity_types: [Sequence], reverse: Sequence.shots}
      tasks: {type: multi_entity, entity_types: [Task], reverse: Task.entity}
  Sequence:
    fields:
      code: text
      shots: {type: multi_entity, entity_types: [Shot], reverse: Shot.sg_sequence}
  Task:
    fields:
      content: text
      entity: {type: entity, entity_types: [Shot, Sequence], reverse: "Shot.tasks"}
      sg_status_list: {type: status_list, valid_values: [wtg, ip, fin]}
  Note:
    display_name: Comment
    fields:
      subject: text
  Connection:
    identifier: id
"""


def fixture_or_skip(test: unittest.TestCase) -> str:
    if not os.path.isdir(FIXTURE):
        raise unittest.SkipTest(f"schema fixture not found at {FIXTURE}")
    return FIXTURE


class YamlLoadingTests(unittest.TestCase):
    def write(self, text: str, name: str = "schema.yml") -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w") as fh:
            fh.write(textwrap.dedent(text))
        return path

    def load_error(self, text: str) -> tuple[str, str]:
        path = self.write(text)
        error = self.assertRaises(SchemaError, Schema.load, path)
        return path, str(error)

    def test_load(self) -> None:
        path = self.write(MINIMAL)
        schema = Schema.load(path)
        self.assertEqual(schema.source, path)
        self.assertEqual(
            [e.name for e in schema], ["Connection", "Note", "Project", "Sequence", "Shot", "Task"]
        )
        self.assertIn("Shot", schema)
        self.assertNotIn("Asset", schema)
        spec = schema.get_field("Shot", "sg_sequence")
        self.assertEqual(spec.data_type, "entity")
        self.assertEqual(spec.link_types, ("Sequence",))
        self.assertEqual(spec.reverse, "Sequence.shots")
        self.assertTrue(spec.is_link)
        self.assertEqual(schema.get_field("Task", "sg_status_list").valid_values, ("wtg", "ip", "fin"))
        self.assertIsNone(schema.get_field("Shot", "nope"))
        self.assertIsNone(schema.get_field("Nope", "code"))
        self.assertEqual(schema["Note"].display_name, "Comment")

    def test_identifier_defaults(self) -> None:
        schema = Schema.load(self.write(MINIMAL))
        self.assertEqual(schema.identifier("Shot"), "code")
        self.assertEqual(schema.identifier("Task"), "content")
        self.assertEqual(schema.identifier("Note"), "subject")
        self.assertEqual(schema.identifier("Project"), "name")
        self.assertEqual(schema.identifier("Connection"), "id")
        # Types the schema lacks get the well-known defaults.
        self.assertEqual(schema.identifier("HumanUser"), "name")
        self.assertEqual(schema.identifier("CustomEntity07"), "code")

    def test_explicit_identifier(self) -> None:
        schema = Schema.load(
            self.write(
                """
                entities:
                  Shot:
                    identifier: sg_name
                    fields: {sg_name: text}
                """
            )
        )
        self.assertEqual(schema.identifier("Shot"), "sg_name")

    def test_bookkeeping_fields_added(self) -> None:
        schema = Schema.load(self.write(MINIMAL))
        for entity in schema:
            self.assertEqual(entity.fields["id"].data_type, "number")
            self.assertEqual(entity.fields["created_at"].data_type, "date_time")
            self.assertEqual(entity.fields["updated_at"].data_type, "date_time")
            self.assertEqual(entity.fields["created_by"].link_types, ("HumanUser", "ApiUser"))
            self.assertEqual(entity.fields["updated_by"].data_type, "entity")

    def test_reverse_of(self) -> None:
        schema = Schema.load(self.write(MINIMAL))
        self.assertEqual(schema.reverse_of("Task", "entity", "Shot").name, "tasks")
        self.assertIsNone(schema.reverse_of("Task", "entity", "Sequence"))
        self.assertIsNone(schema.reverse_of("Task", "content", "Shot"))

    def test_round_trip(self) -> None:
        schema = Schema.load(self.write(MINIMAL))
        again = Schema.from_dict(schema.to_dict(), source="again")
        self.assertEqual(again.to_dict(), schema.to_dict())
        for entity in schema:
            self.assertEqual(again[entity.name].fields, entity.fields)
            self.assertEqual(again[entity.name].identifier, entity.identifier)

    def test_empty_type_body(self) -> None:
        schema = Schema.load(self.write("entities:\n  Connection: {identifier: id}\n"))
        self.assertEqual(sorted(schema["Connection"].fields), [
            "created_at", "created_by", "id", "updated_at", "updated_by"])

    # -- errors: each names the file, and the type / field where there is one

    def test_not_a_mapping(self) -> None:
        path, message = self.load_error("- just\n- a list\n")
        self.assertIn(path, message)
        self.assertIn("'entities'", message)

    def test_invalid_yaml(self) -> None:
        path, message = self.load_error("entities: {Shot: [\n")
        self.assertIn(path, message)
        self.assertIn("not valid YAML", message)

    def test_missing_file(self) -> None:
        path = os.path.join(self.mktemp(), "nope.yml")
        message = str(self.assertRaises(SchemaError, Schema.load, path))
        self.assertIn(path, message)
        self.assertIn("cannot read", message)

    def test_invalid_type_name(self) -> None:
        path, message = self.load_error("entities:\n  'Bad Type': {}\n")
        self.assertIn(f"{path}: Bad Type: invalid entity type name", message)

    def test_type_body_not_mapping(self) -> None:
        path, message = self.load_error("entities:\n  Shot: [code]\n")
        self.assertIn(f"{path}: Shot: expected a mapping", message)

    def test_unknown_type_key(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: {code: text}, colour: red}\n")
        self.assertIn(f"{path}: Shot: unknown keys ['colour']", message)

    def test_fields_not_mapping(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: [code]}\n")
        self.assertIn(f"{path}: Shot: 'fields' must be a mapping", message)

    def test_invalid_field_name(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: {'sg code': text}}\n")
        self.assertIn(f"{path}: Shot.sg code: invalid field name", message)

    def test_field_body_wrong_shape(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: {code: [text]}}\n")
        self.assertIn(f"{path}: Shot.code: expected a data type name or a mapping", message)

    def test_unknown_field_key(self) -> None:
        path, message = self.load_error(
            "entities:\n  Shot: {fields: {code: {type: text, unique: true}}}\n"
        )
        self.assertIn(f"{path}: Shot.code: unknown keys ['unique']", message)

    def test_unknown_data_type(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: {code: txt}}\n")
        self.assertIn(f"{path}: Shot.code: unknown data type 'txt'", message)

    def test_entity_types_on_scalar(self) -> None:
        path, message = self.load_error(
            "entities:\n  Shot: {fields: {code: {type: text, entity_types: [Asset]}}}\n"
        )
        self.assertIn(f"{path}: Shot.code: entity_types given for a text field", message)

    def test_link_without_entity_types(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: {code: text, assets: multi_entity}}\n")
        self.assertIn(f"{path}: Shot.assets: multi_entity field needs entity_types", message)

    def test_malformed_reverse(self) -> None:
        path, message = self.load_error(
            "entities:\n  Shot: {fields: {code: text, "
            "assets: {type: multi_entity, entity_types: [Asset], reverse: shots}}}\n"
        )
        self.assertIn(f"{path}: Shot.assets: reverse must look like 'Type.field'", message)

    def test_reverse_to_missing_field(self) -> None:
        path, message = self.load_error(
            """
            entities:
              Asset: {fields: {code: text}}
              Shot:
                fields:
                  code: text
                  assets: {type: multi_entity, entity_types: [Asset], reverse: Asset.shots}
            """
        )
        self.assertIn(f"{path}: Shot.assets: reverse field 'Asset.shots' does not exist", message)

    def test_identifier_not_a_field(self) -> None:
        path, message = self.load_error("entities:\n  Shot: {fields: {name: text}}\n")
        self.assertIn(f"{path}: Shot: identifier field 'code' is not a field of the type", message)

    def test_json_file_in_our_format(self) -> None:
        path = self.write(json.dumps({"entities": {"Shot": {"fields": {"code": "text"}}}}), "s.json")
        self.assertEqual(Schema.load(path).get_field("Shot", "code").data_type, "text")

    def test_invalid_json(self) -> None:
        path = self.write("{nope", "schema_read.json")
        message = str(self.assertRaises(SchemaError, Schema.load, path))
        self.assertIn(path, message)
        self.assertIn("not valid JSON", message)

    def test_directory_without_dump(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        message = str(self.assertRaises(SchemaError, Schema.load, directory))
        self.assertIn("no schema_read.json", message)

    def test_directory_with_invalid_json(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        with open(os.path.join(directory, "schema_read.json"), "w") as fh:
            fh.write("{truncated")
        message = str(self.assertRaises(SchemaError, Schema.load, directory))
        self.assertIn("schema_read.json: not valid JSON", message)

    def test_schema_read_without_data_type(self) -> None:
        message = str(
            self.assertRaises(
                SchemaError, Schema.from_schema_read, {"Shot": {"code": {}}}, None, "dump.json"
            )
        )
        self.assertIn("dump.json: Shot.code: no data_type", message)


class FixtureTests(unittest.TestCase):
    """The real site's schema_read dump."""

    def setUp(self) -> None:
        self.schema = Schema.load(fixture_or_skip(self))

    def test_types(self) -> None:
        self.assertEqual(len(self.schema), 77)
        for name in ["Project", "Shot", "Task", "Version", "PublishedFile", "EventLogEntry"]:
            self.assertIn(name, self.schema)

    def test_fields(self) -> None:
        spec = self.schema.get_field("Shot", "sg_sequence")
        self.assertEqual((spec.data_type, spec.link_types), ("entity", ("Sequence",)))
        self.assertEqual(self.schema.get_field("Shot", "image").data_type, "image")
        self.assertIn("ip", self.schema.get_field("Shot", "sg_status_list").valid_values)
        self.assertEqual(self.schema.get_field("Project", "archived").data_type, "checkbox")

    def test_display_names(self) -> None:
        self.assertEqual(self.schema["HumanUser"].display_name, "Person")
        self.assertEqual(self.schema["PublishedFile"].display_name, "Published File")

    def test_identifiers(self) -> None:
        expected = {
            "Shot": "code", "Asset": "code", "Task": "content", "Note": "subject",
            "Project": "name", "HumanUser": "name", "Reply": "content", "Step": "code",
        }
        for type_name, identifier in expected.items():
            self.assertEqual(self.schema.identifier(type_name), identifier, type_name)
        # Connection types have no display field.
        self.assertEqual(self.schema.identifier("AssetShotConnection"), "id")
        for entity in self.schema:
            self.assertIn(entity.identifier, entity.fields, entity.name)

    def test_reverse_inference(self) -> None:
        task_entity = self.schema.get_field("Task", "entity")
        self.assertIn("Shot.tasks", task_entity.reverse.split(","))
        self.assertIn("Asset.tasks", task_entity.reverse.split(","))
        self.assertEqual(self.schema.get_field("Shot", "tasks").reverse, "Task.entity")
        self.assertEqual(self.schema.reverse_of("Task", "entity", "Shot").name, "tasks")
        self.assertEqual(self.schema.reverse_of("Shot", "tasks", "Task").name, "entity")
        self.assertEqual(self.schema.get_field("Shot", "sg_sequence").reverse, "Sequence.shots")
        self.assertEqual(self.schema.get_field("Playlist", "versions").reverse, "Version.playlists")

    def test_a_dump_holds_exactly_the_sites_fields(self) -> None:
        # The site's Reply and EventLogEntry have no updated_at: a dump does
        # not add it (it once did, and the cache served it as null)
        self.assertNotIn("updated_at", self.schema["Reply"].fields)
        self.assertEqual(sorted(self.schema["EventLogEntry"].fields), [
            "attribute_name", "cached_display_name", "created_at", "description", "entity",
            "event_type", "filmstrip_image", "id", "image", "meta", "project", "session_uuid", "user"])

    def test_a_yaml_type_listing_id_is_taken_as_is(self) -> None:
        data = {"entities": {"Reply": {"identifier": "content",
                                       "fields": {"id": "number", "content": "text"}}}}
        self.assertEqual(sorted(Schema.from_dict(data)["Reply"].fields), ["content", "id"])

    def test_round_trip_through_our_format(self) -> None:
        data = self.schema.to_dict()
        again = Schema.from_dict(data, source="again")
        self.assertEqual(again.to_dict(), data)
        self.assertEqual(again["Shot"].fields, self.schema["Shot"].fields)
        json.dumps(data)  # plain data only

    def test_to_schema_read_shape(self) -> None:
        out = self.schema.to_schema_read()
        self.assertEqual(sorted(out), sorted(self.schema.entities))
        field = out["Shot"]["sg_sequence"]
        self.assertEqual(field["data_type"], {"editable": False, "value": "entity"})
        self.assertEqual(field["entity_type"]["value"], "Shot")
        self.assertEqual(field["properties"]["valid_types"]["value"], ["Sequence"])
        for key in ("description", "editable", "mandatory", "name", "unique"):
            self.assertIn("value", field[key])
        self.assertFalse(out["Shot"]["id"]["editable"]["value"])
        self.assertTrue(out["Shot"]["code"]["editable"]["value"])
        self.assertIn("ip", out["Shot"]["sg_status_list"]["properties"]["valid_values"]["value"])
        entities = self.schema.to_schema_entity_read()
        self.assertEqual(entities["HumanUser"]["name"]["value"], "Person")
        # And it loads back as the same schema.
        again = Schema.from_schema_read(out, entities, source="again")
        self.assertEqual(again.to_dict(), self.schema.to_dict())
