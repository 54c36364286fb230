"""Tests for sgcache.schema.effective: resolving the effective schema (the
file, widened by the rules, checked against the site), keeping the site's
schema as JSON, and the diff between two effective schemas."""

from __future__ import annotations

import os
from typing import Any

from twisted.trial import unittest

from sgcache.schema import Schema, SchemaError
from sgcache.schema.effective import Resolution, SchemaDiff, diff, resolve, site_from_json, site_to_json
from sgcache.schema.model import (
    BOOKKEEPING_FIELDS,
    BOOKKEEPING_LINKS,
    DEFAULT_IDENTIFIERS,
    EntitySpec,
    FieldSpec,
)
from sgcache.schema.tools import parse_rules
from sgcache.testing.fixtures import FIXTURE_SCHEMA

BOOKKEEPING = set(BOOKKEEPING_FIELDS) | set(BOOKKEEPING_LINKS)

_USERS = {"type": "entity", "entity_types": ["HumanUser", "ApiUser"]}


def site_schema(types: dict[str, dict[str, Any]], identifiers: dict[str, str] | None = None) -> Schema:
    """A site's schema: exactly the fields given (plus `id`, as a dump has),
    nothing implied, validated as a dump is (links and reverses need not
    resolve). `types`: type -> field -> YAML-like field body."""
    entities = []
    for name, fields in types.items():
        specs = {"id": FieldSpec(name, "id", "number")}
        for fname, body in fields.items():
            if isinstance(body, str):
                body = {"type": body}
            specs[fname] = FieldSpec(
                name, fname, body["type"], tuple(body.get("entity_types", ())),
                body.get("reverse"), tuple(body.get("valid_values", ())),
            )
        identifier = (identifiers or {}).get(name) or DEFAULT_IDENTIFIERS.get(name, "code")
        entities.append(EntitySpec(name, identifier if identifier in specs else "id", specs))
    schema = Schema(entities, source="the site")
    schema.validate(strict_links=False)
    return schema


def yaml_schema(types: dict[str, Any], source: str = "schema.yml") -> Schema:
    """A hand-written YAML schema (types not listing `id` get the
    bookkeeping fields implied)."""
    return Schema.from_dict({"entities": types}, source=source)


def standard_site() -> Schema:
    return site_schema(
        {
            "Shot": {
                "code": "text",
                "description": "text",
                "sg_cut_in": "number",
                "sg_secret": "text",
                "sg_status_list": {"type": "status_list", "valid_values": ["ip", "fin"]},
                "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
                "assets": {"type": "multi_entity", "entity_types": ["Asset"]},
                "image": "image",
                "created_at": "date_time",
                "updated_at": "date_time",
                "created_by": _USERS,
                "updated_by": _USERS,
            },
            "Sequence": {"code": "text", "created_at": "date_time", "updated_at": "date_time",
                         "created_by": _USERS, "updated_by": _USERS},
            "Asset": {"code": "text", "sg_asset_type": "list",
                      "updated_at": "date_time"},  # no created_at / created_by / updated_by
            "Task": {"content": "text", "entity": {"type": "entity", "entity_types": ["Shot", "Asset"]},
                     "updated_at": "date_time"},
            "HumanUser": {"name": "text"},
            "ApiUser": {"firstname": "text"},
        }
    )


def names(schema: Schema) -> dict[str, set[str]]:
    return {e.name: set(e.fields) for e in schema}


class ResolveTests(unittest.TestCase):
    def test_site_unknown_takes_the_file_as_is(self) -> None:
        file_schema = yaml_schema({"Shot": {"fields": {"code": "text", "sg_typo": "text"}}})
        result = resolve(file_schema, parse_rules("+ Asset.*"), None)
        self.assertIsInstance(result, Resolution)
        self.assertFalse(result.site_known)
        self.assertEqual(names(result.schema), names(file_schema))
        self.assertEqual(result.missing_on_site, [])
        self.assertEqual(result.from_rules, [])
        self.assertEqual(result.problems(), [])
        # a copy: the file's schema is not shared
        self.assertIsNot(result.schema, file_schema)
        self.assertIsNot(result.schema["Shot"], file_schema["Shot"])
        result.schema["Shot"].fields.pop("code")
        self.assertIn("code", file_schema["Shot"].fields)

    def test_no_file_no_site_is_an_error(self) -> None:
        with self.assertRaises(SchemaError):
            resolve(None, None, None)
        with self.assertRaises(SchemaError):
            resolve(None, parse_rules("+ Shot.*"), None)

    def test_file_fields_the_site_has(self) -> None:
        site = standard_site()
        file_schema = yaml_schema(
            {"Shot": {"fields": {"code": "text", "sg_cut_in": "number",
                                 "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]}}},
             "Sequence": {"fields": {"code": "text"}}}
        )
        result = resolve(file_schema, None, site)
        self.assertTrue(result.site_known)
        self.assertEqual(result.missing_on_site, [])
        self.assertEqual(result.type_differs, [])
        self.assertEqual(result.from_rules, [])
        self.assertEqual(result.problems(), [])
        self.assertEqual(
            names(result.schema),
            {"Shot": {"code", "sg_cut_in", "sg_sequence"} | BOOKKEEPING,
             "Sequence": {"code"} | BOOKKEEPING},
        )
        self.assertEqual(result.schema["Shot"].identifier, "code")
        self.assertEqual(result.schema.source, "schema.yml")

    def test_fields_and_types_missing_on_site_are_left_out_and_reported(self) -> None:
        site = standard_site()
        file_schema = yaml_schema(
            {"Shot": {"fields": {"code": "text", "sg_typo": "text", "sg_retired": "number"}},
             "Widget": {"fields": {"code": "text"}}}
        )
        result = resolve(file_schema, None, site)
        self.assertEqual(sorted(result.missing_on_site), ["Shot.sg_retired", "Shot.sg_typo", "Widget"])
        self.assertNotIn("Widget", result.schema)
        self.assertNotIn("sg_typo", result.schema["Shot"].fields)
        self.assertNotIn("sg_retired", result.schema["Shot"].fields)
        self.assertIn("code", result.schema["Shot"].fields)
        problems = result.problems()
        self.assertEqual(len(problems), 3)
        self.assertIn("Shot.sg_typo: in the schema file, not on the site (not served)", problems)
        self.assertIn("Widget: in the schema file, not on the site (not served)", problems)

    def test_implied_bookkeeping_fields_the_site_lacks_are_not_reported(self) -> None:
        # the YAML file implies created_at / created_by / updated_by on Asset;
        # the site's Asset has only updated_at
        site = standard_site()
        file_schema = yaml_schema({"Asset": {"fields": {"code": "text"}}})
        self.assertTrue(BOOKKEEPING <= set(file_schema["Asset"].fields))
        result = resolve(file_schema, None, site)
        self.assertEqual(result.missing_on_site, [])
        self.assertEqual(result.problems(), [])
        self.assertEqual(set(result.schema["Asset"].fields), {"id", "code", "updated_at"})

    def test_the_sites_data_type_wins_and_is_reported(self) -> None:
        site = standard_site()
        file_schema = yaml_schema(
            {"Shot": {"fields": {"code": "text", "sg_cut_in": "text",
                                 "assets": {"type": "entity", "entity_types": ["Asset"]}}},
             "Asset": {"fields": {"code": "text"}}}
        )
        result = resolve(file_schema, None, site)
        self.assertEqual(
            sorted(result.type_differs),
            ["Shot.assets: the file says entity, the site says multi_entity",
             "Shot.sg_cut_in: the file says text, the site says number"],
        )
        self.assertEqual(result.schema["Shot"].fields["sg_cut_in"].data_type, "number")
        self.assertEqual(result.schema["Shot"].fields["assets"], site["Shot"].fields["assets"])
        self.assertEqual(result.missing_on_site, [])
        self.assertIn(
            "Shot.sg_cut_in: the file says text, the site says number (the site's is used)",
            result.problems(),
        )

    def test_identifier_the_site_lacks_falls_back(self) -> None:
        site = site_schema({"Shot": {"name": "text", "sg_x": "text"}}, identifiers={"Shot": "name"})
        file_schema = yaml_schema({"Shot": {"identifier": "code", "fields": {"code": "text", "sg_x": "text"}}})
        result = resolve(file_schema, None, site)
        self.assertEqual(result.missing_on_site, ["Shot.code"])
        # neither the file's identifier nor the site's is cached: links are named by id
        self.assertEqual(result.schema["Shot"].identifier, "id")
        file_schema = yaml_schema({"Shot": {"identifier": "code",
                                            "fields": {"code": "text", "name": "text"}}})
        result = resolve(file_schema, None, site)
        self.assertEqual(result.schema["Shot"].identifier, "name")

    def test_rules_add_site_fields_and_whole_types(self) -> None:
        site = standard_site()
        file_schema = yaml_schema({"Shot": {"fields": {"code": "text"}},
                                   "Sequence": {"fields": {"code": "text"}}})
        rules = parse_rules("+ Shot.description\n+ Shot.sg_cut_in\n+ HumanUser\n")
        result = resolve(file_schema, rules, site)
        self.assertEqual(
            sorted(result.from_rules),
            ["HumanUser.id", "HumanUser.name", "Shot.description", "Shot.sg_cut_in"],
        )
        self.assertEqual(result.schema["Shot"].fields["description"], site["Shot"].fields["description"])
        self.assertEqual(result.schema["HumanUser"].identifier, "name")
        self.assertEqual(set(result.schema["HumanUser"].fields), {"id", "name"})
        # what the file has is not "from the rules"
        self.assertNotIn("Shot.code", result.from_rules)
        self.assertEqual(result.missing_on_site, [])

    def test_exclude_rules_leave_fields_out(self) -> None:
        site = standard_site()
        file_schema = yaml_schema({"Sequence": {"fields": {"code": "text"}}})
        rules = parse_rules("+ Shot.*\n- Shot.sg_secret\n- Shot.description\n")
        result = resolve(file_schema, rules, site)
        shot = result.schema["Shot"].fields
        self.assertNotIn("sg_secret", shot)
        self.assertNotIn("description", shot)
        self.assertIn("sg_cut_in", shot)
        self.assertIn("code", shot)
        self.assertNotIn("image", shot)  # not cacheable: the filter drops it
        self.assertNotIn("Shot.sg_secret", result.from_rules)
        # rules only widen: an excluded field the file names is still cached
        file_schema = yaml_schema({"Shot": {"fields": {"code": "text", "sg_secret": "text"}}})
        result = resolve(file_schema, parse_rules("+ Shot.sg_cut_in\n- Shot.sg_secret"), site)
        self.assertIn("sg_secret", result.schema["Shot"].fields)
        self.assertIn("sg_cut_in", result.schema["Shot"].fields)

    def test_rules_alone_with_the_site(self) -> None:
        site = standard_site()
        result = resolve(None, parse_rules("+ Shot.code\n+ Shot.sg_sequence\n+ Sequence.code"), site)
        self.assertTrue(result.site_known)
        self.assertEqual(set(result.schema.entities), {"Shot", "Sequence"})
        self.assertEqual(
            set(result.schema["Shot"].fields),
            {"id", "code", "sg_sequence", "created_at", "updated_at", "created_by", "updated_by"},
        )
        self.assertEqual(result.schema["Shot"].fields["sg_sequence"].link_types, ("Sequence",))
        self.assertIn("Shot.sg_sequence", result.from_rules)
        self.assertEqual(result.missing_on_site, [])
        self.assertEqual(result.schema.source, "the site")

    def test_no_file_no_rules_with_the_site_is_empty(self) -> None:
        result = resolve(None, None, standard_site())
        self.assertEqual(len(result.schema), 0)
        self.assertTrue(result.site_known)

    def test_rules_link_field_to_a_type_only_the_file_caches(self) -> None:
        # Was a bug (fixed in effective.resolve): the rules' selection is filtered on its own
        # (filter_schema_report(site, rules)), so a link field the rules
        # include is narrowed to the types *the rules* keep and dropped when
        # none is left -- although the file caches its linked type. Here
        # `+ Task.*` with Shot cached by the file drops Task.entity (links to
        # Shot, Asset) silently: it is neither in the schema nor reported.
        site = standard_site()
        file_schema = yaml_schema({"Shot": {"fields": {"code": "text"}}})
        result = resolve(file_schema, parse_rules("+ Task.*"), site)
        self.assertIn("content", result.schema["Task"].fields)
        self.assertIn("entity", result.schema["Task"].fields)
        self.assertEqual(result.schema["Task"].fields["entity"].link_types, ("Shot",))

    def test_rules_field_on_a_file_type_linking_to_a_file_type(self) -> None:
        # Was a bug (fixed in effective.resolve): same cause as above, on a type of the file: `+ Shot.sg_sequence`
        # with Sequence cached by the file does not add Shot.sg_sequence.
        site = standard_site()
        file_schema = yaml_schema({"Shot": {"fields": {"code": "text"}},
                                   "Sequence": {"fields": {"code": "text"}}})
        result = resolve(file_schema, parse_rules("+ Shot.sg_sequence"), site)
        self.assertIn("sg_sequence", result.schema["Shot"].fields)
        self.assertIn("Shot.sg_sequence", result.from_rules)

    def reverse_pair(self) -> tuple[Schema, Schema]:
        """A site with Shot.sg_sequence / Sequence.shots paired, and a file
        with only Shot.sg_sequence."""
        site = site_schema(
            {
                "Shot": {"code": "text",
                         "sg_sequence": {"type": "entity", "entity_types": ["Sequence"],
                                         "reverse": "Sequence.shots"}},
                "Sequence": {"code": "text",
                             "shots": {"type": "multi_entity", "entity_types": ["Shot"],
                                       "reverse": "Shot.sg_sequence"}},
            }
        )
        file_schema = site_schema({
            "Shot": {"code": "text",
                     "sg_sequence": {"type": "entity", "entity_types": ["Sequence"],
                                     "reverse": "Sequence.shots"}},
            "Sequence": {"code": "text"},
        })
        return site, file_schema

    def test_reverse_fields_are_kept_only_when_present(self) -> None:
        site, file_schema = self.reverse_pair()
        result = resolve(file_schema, None, site)
        self.assertIsNone(result.schema["Shot"].fields["sg_sequence"].reverse)
        # the mirror comes with the rules: the file's field points at it again
        result = resolve(file_schema, parse_rules("+ Sequence.shots\n+ Shot.code"), site)
        self.assertEqual(result.schema["Shot"].fields["sg_sequence"].reverse, "Sequence.shots")
        self.assertIn("shots", result.schema["Sequence"].fields)

    def test_reverse_of_a_rules_field_to_a_file_field(self) -> None:
        # Was a bug (fixed in effective.resolve): the rules' selection is filtered on its own, so the reverse of
        # a field the rules add is cut to the fields *the rules* select:
        # Sequence.shots (from the rules) loses its mirror Shot.sg_sequence
        # (from the file) while Shot.sg_sequence keeps Sequence.shots -- a
        # one-sided pair (sync.writeback refreshes the other side of a write
        # only from a field with a reverse).
        site, file_schema = self.reverse_pair()
        result = resolve(file_schema, parse_rules("+ Sequence.shots\n+ Shot.code"), site)
        self.assertEqual(result.schema["Sequence"].fields["shots"].reverse, "Shot.sg_sequence")


class SiteJSONTests(unittest.TestCase):
    def test_round_trip_of_the_real_sites_schema(self) -> None:
        if not os.path.isdir(FIXTURE_SCHEMA):
            raise unittest.SkipTest(f"schema fixture not found at {FIXTURE_SCHEMA}")
        site = Schema.load(FIXTURE_SCHEMA)
        text = site_to_json(site)
        back = site_from_json(text)
        self.assertEqual(back.source, "the site (as last read)")
        self.assertEqual(set(back.entities), set(site.entities))
        self.assertEqual(len(back), 77)
        for entity in site:
            other = back[entity.name]
            self.assertEqual(other.identifier, entity.identifier, entity.name)
            self.assertEqual(other.fields, entity.fields, entity.name)
        # some of each kind of field made the trip
        self.assertEqual(back["Shot"].fields["sg_sequence"].reverse, "Sequence.shots")
        self.assertEqual(back["Shot"].fields["sg_sequence"].link_types, ("Sequence",))
        self.assertTrue(back["Shot"].fields["sg_status_list"].valid_values)
        # stable: the same text again
        self.assertEqual(site_to_json(back), text)
        # resolving against either gives the same schema
        rules = parse_rules("+ Shot.*\n+ Sequence.*\n- *.sg_*")
        one, two = resolve(None, rules, site).schema, resolve(None, rules, back).schema
        self.assertEqual({e.name: e.fields for e in one}, {e.name: e.fields for e in two})

    def test_round_trip_of_every_shape_of_field(self) -> None:
        site = site_schema({
            "Shot": {
                "code": "text",
                "sg_list": {"type": "list", "valid_values": ["a", "b"]},
                "sg_link": {"type": "entity", "entity_types": ["Shot"]},
                "sg_back": {"type": "entity", "entity_types": ["Shot"], "reverse": "Shot.sg_link"},
                "sg_both": {"type": "status_list", "valid_values": []},
            },
        })
        back = site_from_json(site_to_json(site), source="x")
        self.assertEqual(back.source, "x")
        self.assertEqual(back["Shot"].fields, site["Shot"].fields)
        self.assertEqual(back["Shot"].identifier, "code")


def _two(old_types: dict[str, Any], new_types: dict[str, Any]) -> SchemaDiff:
    return diff(site_schema(old_types), site_schema(new_types))


class DiffTests(unittest.TestCase):
    OLD = {
        "Shot": {
            "code": "text",
            "sg_cut_in": "number",
            "sg_gone": "text",
            "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
            "assets": {"type": "multi_entity", "entity_types": ["Asset"]},
            "image": "image",
        },
        "Sequence": {"code": "text", "shots": {"type": "multi_entity", "entity_types": ["Shot"]}},
        "Asset": {"code": "text", "name": "text"},
    }
    NEW = {
        "Shot": {
            "code": "text",
            "sg_cut_in": "text",
            "sg_new": "date",
            "sg_sequence": {"type": "entity", "entity_types": ["Sequence", "Scene"]},
            "assets": {"type": "multi_entity", "entity_types": ["Asset"]},
            "image": "text",
        },
        "Asset": {"code": "text", "name": "text"},
        "Scene": {"code": "text"},
    }

    def diff(self) -> SchemaDiff:
        old = site_schema(self.OLD)
        new = site_schema(self.NEW, identifiers={"Asset": "name"})
        return diff(old, new)

    def test_what_changed(self) -> None:
        d = self.diff()
        self.assertTrue(d)
        self.assertEqual(d.added_types, ["Scene"])
        self.assertEqual(d.removed_types, ["Sequence"])
        # an uncacheable field turned cacheable is added; the new type's fields too
        self.assertEqual(d.added_fields, ["Scene.code", "Scene.id", "Shot.image", "Shot.sg_new"])
        self.assertEqual(d.removed_fields, ["Sequence.code", "Sequence.id", "Sequence.shots", "Shot.sg_gone"])
        self.assertEqual(d.changed_types, ["Shot.sg_cut_in: number -> text"])
        self.assertEqual(d.changed_links, ["Shot.sg_sequence: ['Sequence'] -> ['Sequence', 'Scene']"])
        self.assertEqual(d.changed_identifiers, ["Asset: code -> name"])
        self.assertEqual(set(d.as_dict()), {
            "added_types", "removed_types", "added_fields", "removed_fields",
            "changed_types", "changed_links", "changed_identifiers",
        })

    def test_entity_to_multi_entity_and_back(self) -> None:
        d = _two({"Shot": {"a": {"type": "entity", "entity_types": ["Shot"]},
                           "b": {"type": "multi_entity", "entity_types": ["Shot"]}}},
                 {"Shot": {"a": {"type": "multi_entity", "entity_types": ["Shot"]}, "b": "text"}})
        self.assertEqual(d.changed_types, ["Shot.a: entity -> multi_entity", "Shot.b: multi_entity -> text"])
        self.assertEqual(d.changed_links, [])

    def test_cacheable_to_uncacheable_is_a_removal(self) -> None:
        d = _two({"Shot": {"thumb": "url"}}, {"Shot": {"thumb": "image"}})
        self.assertEqual(d.removed_fields, ["Shot.thumb"])
        self.assertEqual(d.changed_types, [])

    def test_no_change(self) -> None:
        d = diff(site_schema(self.OLD), site_schema(self.OLD))
        self.assertFalse(d)
        self.assertEqual(d, SchemaDiff())
        self.assertEqual(d.lines(), ["no change"])
        self.assertEqual(d.rescan(), [])
        self.assertEqual(d.stop_serving(), {})
        # fields the cache does not hold do not count
        self.assertFalse(_two({"Shot": {"image": "image"}}, {"Shot": {"thumb": "image"}}))
        self.assertFalse(diff(Schema(), Schema()))

    def test_each_list_alone_makes_it_true(self) -> None:
        for name in SchemaDiff().as_dict():
            self.assertTrue(SchemaDiff(**{name: ["X"]}), name)

    def test_rescan(self) -> None:
        # new types, types with new or retyped fields; not link-type or
        # identifier changes, not removals
        self.assertEqual(self.diff().rescan(), ["Scene", "Shot"])
        d = _two({"Shot": {"a": {"type": "entity", "entity_types": ["Shot"]}}, "Asset": {"code": "text"}},
                 {"Shot": {"a": {"type": "entity", "entity_types": ["Shot", "Asset"]}}})
        self.assertEqual(d.rescan(), [])

    def test_stop_serving(self) -> None:
        self.assertEqual(
            self.diff().stop_serving(),
            {"Shot": {"sg_gone", "sg_cut_in"}, "Sequence": {"*"}},
        )

    def test_lines(self) -> None:
        lines = self.diff().lines()
        self.assertEqual(
            lines,
            [
                "add type Scene: table created, scanned in full, served once loaded",
                "add field Shot.image: column created, Shot rescanned, served once loaded",
                "add field Shot.sg_new: column created, Shot rescanned, served once loaded",
                "change data type Shot.sg_cut_in: number -> text: not served from now; new storage, "
                "Shot rescanned, served once loaded, old storage dropped",
                "change link types Shot.sg_sequence: ['Sequence'] -> ['Sequence', 'Scene']: "
                "served as before (stored links are the site's)",
                "change identifier Asset: code -> name: link names re-derived from the new field "
                "(served once it is loaded)",
                "remove field Shot.sg_gone: not served from now; its storage dropped",
                "remove type Sequence: not served from now; its tables dropped",
            ],
        )
        # the fields of an added / removed type are not listed one by one
        self.assertFalse(any("Scene.code" in line or "Sequence.code" in line for line in lines))

    def test_diff_of_resolutions(self) -> None:
        # what a reload does when the rules grow
        site = standard_site()
        file_schema = yaml_schema({"Shot": {"fields": {"code": "text"}}})
        before = resolve(file_schema, None, site).schema
        after = resolve(file_schema, parse_rules("+ Shot.description\n+ Asset.code"), site).schema
        d = diff(before, after)
        self.assertEqual(d.added_types, ["Asset"])
        self.assertIn("Shot.description", d.added_fields)
        self.assertEqual(d.removed_fields, [])
        self.assertEqual(d.rescan(), ["Asset", "Shot"])


class SchemaFromHandsTests(unittest.TestCase):
    """The helpers above build what they claim (guards the other tests)."""

    def test_site_schema_implies_nothing(self) -> None:
        schema = site_schema({"Asset": {"code": "text"}})
        self.assertEqual(set(schema["Asset"].fields), {"id", "code"})

    def test_yaml_schema_implies_bookkeeping(self) -> None:
        schema = yaml_schema({"Asset": {"fields": {"code": "text"}}})
        self.assertEqual(set(schema["Asset"].fields), {"code"} | BOOKKEEPING)
        self.assertEqual(schema["Asset"].fields["created_by"],
                         FieldSpec("Asset", "created_by", "entity", ("HumanUser", "ApiUser")))
        self.assertIsInstance(schema["Asset"], EntitySpec)
