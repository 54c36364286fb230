"""Schema sync of both stores (`IStore.sync_schema`): after moving from one
schema to another the store holds exactly what a fresh store built from the
final schema holds (tables, columns, indexes, records), keeps the values
and states of what did not change, and starts afresh what did."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import psycopg2
from twisted.internet import reactor
from twisted.trial import unittest

from sgcache.schema import FieldSpec, Schema
from sgcache.schema.changes import EntityChange
from sgcache.schema.types import is_cacheable
from sgcache.store import layout, open_store, parse_store_url
from sgcache.testing.pg import fresh_postgres_url

PENDING, READY = layout.FIELD_PENDING, layout.FIELD_READY

_USERS = {"HumanUser": {"fields": {"name": "text"}}, "ApiUser": {"fields": {"firstname": "text"}}}


def s1() -> Schema:
    """The schema the store starts on: every kind of storage."""
    return Schema.from_dict({"entities": {
        "Shot": {"fields": {
            "code": "text",
            "description": "text",
            "sg_cut_in": "number",
            "sg_ratio": "float",
            "sg_flag": "checkbox",
            "sg_date": "date",
            "sg_when": "date_time",
            "sg_kind": {"type": "list", "valid_values": ["a", "b"]},
            "sg_status_list": {"type": "status_list", "valid_values": ["ip", "fin"]},
            "tags": "tag_list",
            "image": "image",  # never cached
            "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
            "sg_links": {"type": "multi_entity", "entity_types": ["Asset"]},
            "sg_target": {"type": "entity", "entity_types": ["Asset"]},
            # retyped in S2
            "sg_notes": "text",  # -> number
            "sg_ref": {"type": "entity", "entity_types": ["Asset"]},  # -> multi_entity
            "assets": {"type": "multi_entity", "entity_types": ["Asset"]},  # -> text
            "sg_thing": "text",  # -> entity
            "sg_web": "text",  # -> url (same SQL type)
            # removed in S2
            "sg_parent": {"type": "entity", "entity_types": ["Shot"]},
            "sg_others": {"type": "multi_entity", "entity_types": ["Shot", "Asset"]},
            "sg_gone_text": "text",
            "sg_gone_num": "number",
            "sg_gone_flag": "checkbox",
            "sg_gone_date": "date",
            "sg_gone_when": "date_time",
            "sg_gone_list": {"type": "list", "valid_values": ["x"]},
        }},
        # removed in S2, with association tables
        "Sequence": {"fields": {
            "code": "text",
            "shots": {"type": "multi_entity", "entity_types": ["Shot"]},
            "sg_assets": {"type": "multi_entity", "entity_types": ["Asset"]},
        }},
        # identifier code -> name in S2
        "Asset": {"fields": {
            "code": "text",
            "name": "text",
            "shots": {"type": "multi_entity", "entity_types": ["Shot"]},
        }},
        **_USERS,
    }}, source="S1")


def s2() -> Schema:
    """S1 with fields of each kind removed, fields retyped, link types and
    an identifier changed, a type removed and one added."""
    return Schema.from_dict({"entities": {
        "Shot": {"fields": {
            "code": "text",
            "description": "text",
            "sg_cut_in": "number",
            "sg_ratio": "float",
            "sg_flag": "checkbox",
            "sg_date": "date",
            "sg_when": "date_time",
            "sg_kind": {"type": "list", "valid_values": ["a", "b"]},
            "sg_status_list": {"type": "status_list", "valid_values": ["ip", "fin"]},
            "tags": "tag_list",
            "image": "image",
            "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
            # link types changed
            "sg_links": {"type": "multi_entity", "entity_types": ["Asset", "Version"]},
            "sg_target": {"type": "entity", "entity_types": ["Asset", "Version"]},
            # retyped
            "sg_notes": "number",
            "sg_ref": {"type": "multi_entity", "entity_types": ["Asset"]},
            "assets": "text",
            "sg_thing": {"type": "entity", "entity_types": ["Asset"]},
            "sg_web": "url",
            # new
            "sg_new": "date",
        }},
        "Asset": {"identifier": "name", "fields": {
            "code": "text",
            "name": "text",
            "shots": {"type": "multi_entity", "entity_types": ["Shot"]},
        }},
        "Version": {"fields": {
            "code": "text",
            "entity": {"type": "entity", "entity_types": ["Shot", "Asset"]},
            "playlists": {"type": "multi_entity", "entity_types": ["Playlist"]},
        }},
        **_USERS,
    }}, source="S2")


RETYPED = {"sg_notes", "sg_ref", "assets", "sg_thing", "sg_web"}
REMOVED = {"sg_parent", "sg_others", "sg_gone_text", "sg_gone_num", "sg_gone_flag",
           "sg_gone_date", "sg_gone_when", "sg_gone_list"}


def A(n: int) -> dict:
    return {"type": "Asset", "id": n}


def S(n: int) -> dict:
    return {"type": "Shot", "id": n}


SHOT_1 = {
    "code": "sh010", "description": "first", "sg_cut_in": 1001, "sg_ratio": 1.5,
    "sg_flag": True, "sg_date": "2024-03-01", "sg_when": "2024-03-01T10:00:00Z",
    "sg_kind": "a", "sg_status_list": "ip", "tags": [{"type": "Tag", "id": 4}],
    "sg_sequence": {"type": "Sequence", "id": 7}, "sg_links": [A(2), A(1)],
    "sg_target": A(3), "sg_notes": "12", "sg_ref": A(5), "assets": [A(1)],
    "sg_thing": "thing", "sg_web": "plain text", "sg_parent": S(2),
    "sg_others": [S(2), A(1)], "sg_gone_text": "x", "sg_gone_num": 3,
    "sg_gone_flag": True, "sg_gone_date": "2024-01-01", "sg_gone_when": "2024-01-01T00:00:00Z",
    "sg_gone_list": "x",
}

#: what SHOT_1 leaves in the columns S2 keeps unchanged
KEPT_COLUMNS = {
    "code": "sh010", "description": "first", "sg_cut_in": 1001, "sg_ratio": 1.5,
    "sg_flag": 1, "sg_date": "2024-03-01", "sg_when": "2024-03-01T10:00:00Z",
    "sg_kind": "a", "sg_status_list": "ip", "sg_sequence__type": "Sequence",
    "sg_sequence__id": 7, "sg_target__type": "Asset", "sg_target__id": 3,
}


def recorded_view(schema: Schema) -> dict[str, Any]:
    """type -> (identifier, {field: (data type, link types)}) of the
    cacheable fields: what a store records of `schema`."""
    return {
        e.name: (e.identifier, {n: (f.data_type, tuple(f.link_types))
                                for n, f in e.fields.items() if is_cacheable(f.data_type)})
        for e in schema
    }


class SchemaSyncMixin:
    """The schema sync of one backend; subclasses say how to make a store."""

    async def store_url(self) -> str:
        raise NotImplementedError

    async def raw_execute(self, url: str, sql: str) -> None:
        raise NotImplementedError

    async def open(self) -> Any:
        store = open_store(await self.store_url(), reactor)
        await store.open()
        self.addCleanup(store.close)
        return store

    async def fresh(self, schema: Schema) -> Any:
        store = await self.open()
        await store.sync_schema(schema)
        return store

    async def assert_like_fresh(self, store: Any, schema: Schema) -> None:
        """`store` holds what a fresh store synced to `schema` holds."""
        fresh = await self.fresh(schema)
        self.assertEqual(await store.describe_storage(), await fresh.describe_storage())
        self.assertEqual(recorded_view(await store.recorded_schema()), recorded_view(schema))
        self.assertEqual(recorded_view(await fresh.recorded_schema()), recorded_view(schema))
        mine, theirs = await store.field_states(), await fresh.field_states()
        self.assertEqual({t: set(f) for t, f in mine.items()}, {t: set(f) for t, f in theirs.items()})

    async def loaded_on_s1(self) -> Any:
        """A store on S1, every field ready, with rows."""
        store = await self.fresh(s1())
        for etype in ("Shot", "Sequence", "Asset", "HumanUser", "ApiUser"):
            await store.set_field_states(etype, None, READY)
        await store.apply([
            EntityChange("Shot", 1, SHOT_1, complete=True),
            EntityChange("Shot", 2, {"code": "sh020", "sg_links": [A(3)]}),
            EntityChange("Sequence", 7, {"code": "sq7", "shots": [S(1)], "sg_assets": [A(1)]}),
            EntityChange("Asset", 1, {"code": "a1", "name": "Asset One", "shots": [S(1), S(2)]}),
        ])
        return store

    async def multi(self, store: Any, table: str, parent: int) -> list[tuple]:
        return await store.fetch(
            f"SELECT child_type, child_id FROM {layout.quote(table)} WHERE parent_id = ? "
            "ORDER BY position", [parent])

    async def shot_row(self, store: Any, *cols: str) -> dict[str, Any]:
        sql = f'SELECT {", ".join(layout.quote(c) for c in cols)} FROM "Shot" WHERE "id" = 1'
        return dict(zip(cols, (await store.fetch(sql, []))[0]))

    # -- the tests -------------------------------------------------------------
    async def test_fresh_store_holds_what_the_schema_says(self) -> None:
        store = await self.fresh(s1())
        storage = await store.describe_storage()
        self.assertEqual(
            set(storage),
            {"Shot", "Sequence", "Asset", "HumanUser", "ApiUser", "Shot__sg_links",
             "Shot__assets", "Shot__sg_others", "Sequence__shots", "Sequence__sg_assets",
             "Asset__shots"},
        )
        shot = storage["Shot"]
        self.assertIn("sg_parent__type", shot["columns"])
        self.assertIn("sg_parent__id", shot["columns"])
        self.assertNotIn("image", shot["columns"])
        self.assertNotIn("sg_links", shot["columns"])
        self.assertIn("ix_Shot__sg_parent", shot["indexes"])
        self.assertIn("ix_Shot__code__folded", shot["indexes"])
        self.assertIn("ix_Asset__code__folded", storage["Asset"]["indexes"])
        self.assertEqual(
            sorted(storage["Shot__sg_links"]["columns"]),
            ["child_id", "child_type", "parent_id", "position"],
        )
        self.assertTrue({"ix_Shot__sg_links__link", "ix_Shot__sg_links__children",
                         "ix_Shot__sg_links__parent"} <= set(storage["Shot__sg_links"]["indexes"]))
        self.assertEqual(recorded_view(await store.recorded_schema()), recorded_view(s1()))

    async def test_sync_to_s2_is_like_a_fresh_store(self) -> None:
        store = await self.loaded_on_s1()
        summary = await store.sync_schema(s2())
        self.assertEqual(summary["added_types"], ["Version"])
        self.assertEqual(summary["removed_types"], ["Sequence"])
        self.assertEqual(sorted(summary["removed_fields"]), sorted(f"Shot.{n}" for n in REMOVED))
        self.assertEqual(
            sorted(summary["changed_fields"]),
            sorted(f"Shot.{n}" for n in RETYPED | {"sg_links", "sg_target"}),
        )
        self.assertIn("Shot.sg_new", summary["added_fields"])
        self.assertIn("Version.entity", summary["added_fields"])
        self.assertFalse([f for f in summary["added_fields"] if not f.startswith(("Shot.sg_new", "Version."))])
        await self.assert_like_fresh(store, s2())

        storage = await store.describe_storage()
        self.assertNotIn("Sequence", storage)
        self.assertNotIn("Sequence__shots", storage)
        self.assertNotIn("Sequence__sg_assets", storage)
        self.assertNotIn("Shot__sg_others", storage)
        self.assertNotIn("Shot__assets", storage)
        self.assertIn("Shot__sg_ref", storage)
        self.assertNotIn("ix_Asset__code__folded", storage["Asset"]["indexes"])
        self.assertIn("ix_Asset__name__folded", storage["Asset"]["indexes"])
        self.assertNotIn("ix_Shot__sg_parent", storage["Shot"]["indexes"])
        self.assertNotIn("ix_Shot__sg_ref", storage["Shot"]["indexes"])
        self.assertIn("ix_Shot__sg_thing", storage["Shot"]["indexes"])
        for name in REMOVED:
            self.assertFalse([c for c in storage["Shot"]["columns"] if c.split("__")[0] == name], name)
        recorded = await store.recorded_schema()
        self.assertEqual(recorded["Asset"].identifier, "name")
        self.assertEqual(recorded["Shot"].fields["sg_links"].link_types, ("Asset", "Version"))
        self.assertNotIn("Sequence", recorded)

    async def test_states_after_sync(self) -> None:
        store = await self.loaded_on_s1()
        await store.sync_schema(s2())
        states = await store.field_states()
        self.assertEqual(set(states), {"Shot", "Asset", "Version", "HumanUser", "ApiUser"})
        shot = states["Shot"]
        for name in RETYPED | {"sg_new"}:
            self.assertEqual(shot[name], PENDING, name)
        for name in REMOVED:
            self.assertNotIn(name, shot)
        # untouched, and with only their link types changed: still ready
        untouched = set(shot) - RETYPED - {"sg_new"}
        self.assertIn("sg_links", untouched)
        self.assertIn("sg_target", untouched)
        self.assertIn("code", untouched)
        self.assertEqual({shot[n] for n in untouched}, {READY})
        # the identifier change alone does not make a field pending
        self.assertEqual(set(states["Asset"].values()), {READY})
        self.assertEqual(set(states["Version"].values()), {PENDING})

    async def test_values_after_sync(self) -> None:
        store = await self.loaded_on_s1()
        await store.sync_schema(s2())
        # untouched columns keep their values
        self.assertEqual(await self.shot_row(store, *KEPT_COLUMNS), KEPT_COLUMNS)
        self.assertEqual(await self.multi(store, "Shot__sg_links", 1), [("Asset", 2), ("Asset", 1)])
        self.assertEqual(await self.multi(store, "Shot__sg_links", 2), [("Asset", 3)])
        self.assertEqual(await self.multi(store, "Asset__shots", 1), [("Shot", 1), ("Shot", 2)])
        # retyped fields start empty (where the SQL type changed) and new
        # fields are empty
        self.assertEqual(
            await self.shot_row(store, "sg_notes", "assets", "sg_thing__type", "sg_thing__id", "sg_new"),
            {"sg_notes": None, "assets": None, "sg_thing__type": None, "sg_thing__id": None,
             "sg_new": None},
        )
        self.assertEqual(await self.multi(store, "Shot__sg_ref", 1), [])
        self.assertEqual(await store.count("Shot"), 2)
        self.assertEqual(await store.count("Asset"), 1)
        # and the new storage takes values
        await store.apply([EntityChange("Shot", 1, {
            "sg_notes": 12, "sg_ref": [A(5), A(6)], "assets": "text now", "sg_thing": A(9),
            "sg_web": {"url": "https://example.com", "name": "x"}, "sg_new": "2024-05-05",
            "sg_links": [{"type": "Version", "id": 3}],
        })])
        self.assertEqual(await self.shot_row(store, "sg_notes", "assets", "sg_thing__id", "sg_new"),
                         {"sg_notes": 12, "assets": "text now", "sg_thing__id": 9,
                          "sg_new": "2024-05-05"})
        self.assertEqual(await self.multi(store, "Shot__sg_ref", 1), [("Asset", 5), ("Asset", 6)])
        self.assertEqual(await self.multi(store, "Shot__sg_links", 1), [("Version", 3)])

    async def test_sync_is_idempotent(self) -> None:
        store = await self.loaded_on_s1()
        await store.sync_schema(s2())
        before = await store.describe_storage()
        states = await store.field_states()
        generation = await store.fetch(
            "SELECT value FROM _sgcache_meta WHERE key = 'fields_generation'", [])
        again = await store.sync_schema(s2())
        self.assertEqual(again, {"added_types": [], "added_fields": [], "changed_fields": [],
                                 "removed_fields": [], "removed_types": []})
        self.assertEqual(await store.describe_storage(), before)
        self.assertEqual(await store.field_states(), states)
        self.assertEqual(await store.fetch(
            "SELECT value FROM _sgcache_meta WHERE key = 'fields_generation'", []), generation)
        self.assertEqual(await self.shot_row(store, *KEPT_COLUMNS), KEPT_COLUMNS)
        # on the first schema too
        fresh = await self.fresh(s1())
        before = await fresh.describe_storage()
        again = await fresh.sync_schema(s1())
        self.assertFalse(any(again.values()), again)
        self.assertEqual(await fresh.describe_storage(), before)

    async def test_back_to_s1(self) -> None:
        # removed fields and types come back as fresh, empty, pending storage;
        # retyped fields get their old type back, empty
        store = await self.loaded_on_s1()
        await store.sync_schema(s2())
        await store.set_field_states("Shot", None, READY)
        summary = await store.sync_schema(s1())
        self.assertEqual(summary["added_types"], ["Sequence"])
        self.assertEqual(summary["removed_types"], ["Version"])
        self.assertEqual(sorted(summary["removed_fields"]), ["Shot.sg_new"])
        await self.assert_like_fresh(store, s1())
        shot = (await store.field_states())["Shot"]
        for name in REMOVED | RETYPED:
            self.assertEqual(shot[name], PENDING, name)
        self.assertEqual(shot["code"], READY)
        self.assertEqual(
            await self.shot_row(store, "sg_gone_text", "sg_gone_num", "sg_gone_flag", "sg_gone_date",
                                "sg_gone_when", "sg_gone_list", "sg_parent__id", "sg_notes",
                                "sg_ref__id", "sg_thing"),
            dict.fromkeys(["sg_gone_text", "sg_gone_num", "sg_gone_flag", "sg_gone_date",
                           "sg_gone_when", "sg_gone_list", "sg_parent__id", "sg_notes",
                           "sg_ref__id", "sg_thing"]),
        )
        self.assertEqual(await self.multi(store, "Shot__sg_others", 1), [])
        self.assertEqual(await self.multi(store, "Shot__assets", 1), [])
        self.assertEqual(await store.count("Sequence"), 0)
        self.assertEqual(await self.multi(store, "Sequence__shots", 7), [])
        self.assertEqual(await self.shot_row(store, *KEPT_COLUMNS), KEPT_COLUMNS)

    async def test_re_added_field_is_a_fresh_column(self) -> None:
        store = await self.loaded_on_s1()
        without = s1()
        del without["Shot"].fields["description"]
        del without["Shot"].fields["sg_links"]
        summary = await store.sync_schema(without)
        self.assertEqual(sorted(summary["removed_fields"]), ["Shot.description", "Shot.sg_links"])
        self.assertNotIn("description", (await store.describe_storage())["Shot"]["columns"])
        self.assertNotIn("Shot__sg_links", await store.describe_storage())
        summary = await store.sync_schema(s1())
        self.assertEqual(sorted(summary["added_fields"]), ["Shot.description", "Shot.sg_links"])
        self.assertEqual(await self.shot_row(store, "description", "code"),
                         {"description": None, "code": "sh010"})
        self.assertEqual(await self.multi(store, "Shot__sg_links", 1), [])
        states = (await store.field_states())["Shot"]
        self.assertEqual((states["description"], states["sg_links"], states["code"]),
                         (PENDING, PENDING, READY))
        await self.assert_like_fresh(store, s1())

    async def test_identifier_change_alone(self) -> None:
        store = await self.loaded_on_s1()
        changed = s1()
        changed["Shot"].identifier = "description"
        summary = await store.sync_schema(changed)
        self.assertFalse(any(summary.values()), summary)
        await self.assert_like_fresh(store, changed)
        indexes = (await store.describe_storage())["Shot"]["indexes"]
        self.assertIn("ix_Shot__description__folded", indexes)
        self.assertNotIn("ix_Shot__code__folded", indexes)
        self.assertEqual((await store.recorded_schema())["Shot"].identifier, "description")
        self.assertEqual(set((await store.field_states())["Shot"].values()), {READY})

    async def test_left_behind_storage_is_pruned(self) -> None:
        # a store of an older release kept what a removal left behind: a
        # column, an association table and an index no field owns
        store = await self.fresh(s1())
        await store.close()
        for sql in ('ALTER TABLE "Shot" ADD COLUMN "sg_old" TEXT',
                    'CREATE TABLE "Shot__sg_old_links" (parent_id INTEGER)',
                    'CREATE INDEX "ix_Shot__sg_old" ON "Shot" ("sg_old")',
                    'CREATE INDEX "ix_Shot__sg_stray" ON "Shot" ("description")'):
            await self.raw_execute(self.url, sql)
        store = open_store(self.url, reactor)
        await store.open()
        self.addCleanup(store.close)
        summary = await store.sync_schema(s1())
        self.assertFalse(any(summary.values()), summary)
        await self.assert_like_fresh(store, s1())

    async def column_types(self, store: Any, table: str) -> dict[str, str]:
        if store.dialect == "sqlite":
            sql = "SELECT name, type FROM pragma_table_info(?)"
        else:
            sql = ("SELECT column_name, upper(data_type) FROM information_schema.columns "
                   "WHERE table_schema = current_schema() AND table_name = ?")
        return dict(await store.fetch(sql, [table]))

    async def test_storage_an_older_release_left_is_not_reused(self) -> None:
        # An older release dropped a removed field's record but kept its
        # storage. A field of that name added again must get fresh storage
        # of its data type, not the old column (old type, old values) or
        # the old association rows.
        store = await self.loaded_on_s1()
        await store.close()
        await self.raw_execute(
            self.url, "DELETE FROM _sgcache_fields WHERE entity_type = 'Shot' AND field_name IN "
            "('sg_gone_text', 'sg_gone_date', 'sg_others', 'sg_parent')")
        store = open_store(self.url, reactor)
        await store.open()
        self.addCleanup(store.close)
        again = s1()
        again["Shot"].fields["sg_gone_text"] = FieldSpec("Shot", "sg_gone_text", "number")
        summary = await store.sync_schema(again)
        self.assertEqual(sorted(summary["added_fields"]),
                         ["Shot.sg_gone_date", "Shot.sg_gone_text", "Shot.sg_others", "Shot.sg_parent"])
        await self.assert_like_fresh(store, again)
        fresh = await self.fresh(again)
        self.assertEqual(await self.column_types(store, "Shot"), await self.column_types(fresh, "Shot"))
        self.assertEqual(
            await self.shot_row(store, "sg_gone_text", "sg_gone_date", "sg_parent__id", "code"),
            {"sg_gone_text": None, "sg_gone_date": None, "sg_parent__id": None, "code": "sh010"})
        self.assertEqual(await self.multi(store, "Shot__sg_others", 1), [])
        shot = (await store.field_states())["Shot"]
        self.assertEqual([shot[n] for n in ("sg_gone_text", "sg_gone_date", "sg_others", "code")],
                         [PENDING, PENDING, PENDING, READY])
        await store.apply([EntityChange("Shot", 1, {"sg_gone_text": 12})])
        self.assertEqual(await self.shot_row(store, "sg_gone_text"), {"sg_gone_text": 12})

    async def test_analyzed_store(self) -> None:
        # the planner statistics a bulk load leaves (SQLite: sqlite_stat1)
        # are not part of what a schema built
        store = await self.loaded_on_s1()
        await store.analyze("Shot")
        await store.sync_schema(s2())
        await store.analyze("Shot")
        self.assertFalse(any((await store.sync_schema(s2())).values()))
        await self.assert_like_fresh(store, s2())

    async def test_long_type_name(self) -> None:
        # the primary key index of a table whose name is near the server's
        # limit is not taken for a field's index
        long = "L" * 60
        schema = Schema.from_dict({"entities": {
            long: {"fields": {"code": "text", "sg_x": {"type": "entity", "entity_types": [long]}}},
            **_USERS,
        }})
        store = await self.fresh(schema)
        self.assertFalse(any((await store.sync_schema(schema)).values()))
        await self.assert_like_fresh(store, schema)
        smaller = Schema.from_dict({"entities": {long: {"fields": {"code": "text"}}, **_USERS}})
        await store.sync_schema(smaller)
        await self.assert_like_fresh(store, smaller)


class SQLiteSchemaSyncTests(SchemaSyncMixin, unittest.TestCase):
    async def store_url(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        self.url = "sqlite:///" + os.path.join(path, "cache.sqlite")
        return self.url

    async def raw_execute(self, url: str, sql: str) -> None:
        conn = sqlite3.connect(parse_store_url(url)[1], isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()


class PostgresSchemaSyncTests(SchemaSyncMixin, unittest.TestCase):
    async def store_url(self) -> str:
        self.url = await fresh_postgres_url(self)
        return self.url

    async def raw_execute(self, url: str, sql: str) -> None:
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()
