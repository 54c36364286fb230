"""Tests for sgcache.store: one suite run against both backends, plus the
URL parser and the PostgreSQL reconnection."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import psycopg2
from twisted.internet import reactor, task
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from sgcache.schema.changes import EntityChange
from sgcache.schema import Schema
from sgcache.store import IStore, StoreError, open_store, parse_store_url
from sgcache.store.interface import ReadTimeout
from sgcache.store import ddl, layout, statements
from sgcache.store.dialect import POSTGRESQL, SQLITE
from sgcache.store.pgadapter import to_pyformat
from sgcache.testing.pg import fresh_postgres_url
from sgcache.testing.fixtures import FIXTURE_SCHEMA



def make_schema(extra_shot_fields: dict | None = None, drop: tuple[str, ...] = ()) -> Schema:
    shot_fields: dict[str, Any] = {
        "code": "text",
        "description": "text",
        "sg_status_list": {"type": "status_list", "valid_values": ["ip", "fin"]},
        "sg_cut_in": "number",
        "sg_ratio": "float",
        "sg_flag": "checkbox",
        "sg_date": "date",
        "tags": "tag_list",
        "image": "image",  # never cached
        "sg_sequence": {"type": "entity", "entity_types": ["Sequence"]},
        "assets": {"type": "multi_entity", "entity_types": ["Asset"]},
    }
    shot_fields.update(extra_shot_fields or {})
    for name in drop:
        shot_fields.pop(name)
    return Schema.from_dict(
        {
            "entities": {
                "Shot": {"fields": shot_fields},
                "Sequence": {"fields": {"code": "text"}},
                "Asset": {"fields": {"code": "text"}},
                "HumanUser": {"fields": {"name": "text"}},
                "ApiUser": {"fields": {"firstname": "text"}},
            }
        }
    )


def A(n: int) -> dict:
    return {"type": "Asset", "id": n}


class StoreTestsMixin:
    """Everything an IStore must do; subclasses say how to make one."""

    async def store_url(self) -> str:
        raise NotImplementedError

    async def raw_execute(self, url: str, sql: str) -> None:
        """Run a statement behind the store's back (its own connection)."""
        raise NotImplementedError

    async def open(self, url: str | None = None) -> Any:
        if url is None:
            url = self.url = await self.store_url()
        store = open_store(url, reactor)
        await store.open()
        self.addCleanup(store.close)
        return store

    async def synced(self) -> Any:
        store = await self.open()
        await store.sync_schema(make_schema())
        return store

    async def row(self, store: Any, entity_id: int, *cols: str) -> tuple | None:
        columns = ", ".join(layout.quote(c) for c in cols)
        rows = await store.fetch(f'SELECT {columns} FROM "Shot" WHERE "id" = ?', [entity_id])
        return rows[0] if rows else None

    async def columns(self, store: Any, table: str) -> list[str]:
        return (await store.describe_storage())[table]["columns"]

    async def links(self, store: Any, entity_id: int) -> list[tuple]:
        return await store.fetch(
            'SELECT child_type, child_id, position FROM "Shot__assets" '
            "WHERE parent_id = ? ORDER BY position",
            [entity_id],
        )

    # -- the read budget ---------------------------------------------------------
    #: a statement that runs for seconds on either store
    SLOW_SQL = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "SELECT count(*) FROM n")

    async def test_a_read_over_the_budget_is_stopped(self) -> None:
        url = self.url = await self.store_url()
        store = open_store(url, reactor)
        store.set_read_budget(0.05)
        await store.open()
        self.addCleanup(store.close)
        started = reactor.seconds()
        with self.assertRaises(ReadTimeout):
            await store.read(self.SLOW_SQL, [10**9])
        self.assertLess(reactor.seconds() - started, 5.0)
        # the store goes on serving reads; the cache's own queries have no budget
        self.assertEqual(await store.read("SELECT ?", [3]), [(3,)])
        self.assertEqual(await store.fetch(self.SLOW_SQL, [300_000]), [(300_000,)])
        store.set_read_budget(None)

    # -- lifecycle ---------------------------------------------------------------
    async def test_open_close(self) -> None:
        store = await self.open()
        self.assertTrue(verifyObject(IStore, store))
        self.assertIn(store.dialect, ("sqlite", "postgresql"))
        self.assertIsNone(await store.get_state("nothing"))
        self.assertEqual(await store.field_states(), {})
        await store.close()
        await store.close()  # twice is fine

    async def test_newer_layout_refused(self) -> None:
        store = await self.open()
        await store.close()
        await self.raw_execute(
            self.url, "UPDATE _sgcache_meta SET value = '99' WHERE key = 'layout_version'"
        )
        again = open_store(self.url, reactor)
        with self.assertRaises(StoreError) as ctx:
            await again.open()
        self.assertIn("newer", str(ctx.exception))
        await again.close()

    # -- schema --------------------------------------------------------------------
    async def test_sync_schema(self) -> None:
        store = await self.open()
        summary = await store.sync_schema(make_schema())
        self.assertEqual(
            sorted(summary["added_types"]), ["ApiUser", "Asset", "HumanUser", "Sequence", "Shot"]
        )
        self.assertIn("Shot.sg_sequence", summary["added_fields"])
        states = await store.field_states()
        self.assertEqual(set(states), {"ApiUser", "Asset", "HumanUser", "Sequence", "Shot"})
        self.assertNotIn("image", states["Shot"])  # not cacheable
        self.assertIn("assets", states["Shot"])
        self.assertEqual(set(states["Shot"].values()), {layout.FIELD_PENDING})
        # every column and the association table exist
        await store.fetch(
            'SELECT "id", "_active", "_complete", "code", "sg_sequence__type", '
            '"sg_sequence__id", "created_by__id", "updated_at", "tags" FROM "Shot"',
            [],
        )
        await store.fetch(
            'SELECT parent_id, child_type, child_id, position FROM "Shot__assets"', []
        )
        rows = await store.fetch(
            "SELECT data_type, link_types FROM _sgcache_fields "
            "WHERE entity_type = ? AND field_name = ?",
            ["Shot", "sg_sequence"],
        )
        self.assertEqual(rows, [("entity", "Sequence")])

        again = await store.sync_schema(make_schema())
        self.assertEqual(again["added_types"], [])
        self.assertEqual(again["added_fields"], [])
        self.assertEqual(await store.field_states(), states)

    async def test_add_and_drop_fields(self) -> None:
        store = await self.synced()
        await store.set_field_states("Shot", None, layout.FIELD_READY)
        await store.apply([EntityChange("Shot", 1, {"code": "sh1", "description": "d"})])
        summary = await store.sync_schema(
            make_schema({"sg_new": "text", "sg_links": {"type": "multi_entity", "entity_types": ["Asset"]}},
                        drop=("description",))
        )
        self.assertEqual(summary["added_types"], [])
        self.assertEqual(sorted(summary["added_fields"]), ["Shot.sg_links", "Shot.sg_new"])
        self.assertEqual(summary["removed_fields"], ["Shot.description"])
        states = (await store.field_states())["Shot"]
        self.assertEqual(states["sg_new"], layout.FIELD_PENDING)
        self.assertEqual(states["sg_links"], layout.FIELD_PENDING)
        self.assertEqual(states["code"], layout.FIELD_READY)
        self.assertNotIn("description", states)
        # the new column works; the removed field's column is gone (issue 14:
        # a store holds what a fresh one built from the same schema would)
        self.assertEqual(await self.row(store, 1, "code", "sg_new"), ("sh1", None))
        self.assertNotIn("description", await self.columns(store, "Shot"))
        await store.apply([EntityChange("Shot", 1, {"sg_new": "x", "sg_links": [A(1)], "description": "z"})])
        self.assertEqual(await self.row(store, 1, "sg_new"), ("x",))
        # re-adding the field makes a new, empty column (pending until scanned)
        summary = await store.sync_schema(make_schema({"sg_new": "text"}))
        self.assertEqual(summary["added_fields"], ["Shot.description"])
        self.assertEqual(summary["removed_fields"], ["Shot.sg_links"])
        self.assertEqual(await self.row(store, 1, "sg_new", "description"), ("x", None))
        self.assertEqual((await store.field_states())["Shot"]["description"], layout.FIELD_PENDING)

    async def test_field_type_change(self) -> None:
        store = await self.synced()
        await store.set_field_states("Shot", None, layout.FIELD_READY)
        await store.apply([EntityChange("Shot", 1, {"sg_cut_in": 12})])
        summary = await store.sync_schema(make_schema({"sg_cut_in": "text"}))
        self.assertEqual(summary["changed_fields"], ["Shot.sg_cut_in"])
        self.assertEqual((await store.field_states())["Shot"]["sg_cut_in"], layout.FIELD_PENDING)
        await store.apply([EntityChange("Shot", 1, {"sg_cut_in": "twelve"})])
        self.assertEqual(await self.row(store, 1, "sg_cut_in"), ("twelve",))
        # widening the link types of an entity field keeps its state
        summary = await store.sync_schema(
            make_schema({"sg_cut_in": "text",
                         "sg_sequence": {"type": "entity", "entity_types": ["Sequence", "Scene"]}})
        )
        self.assertEqual(summary["changed_fields"], ["Shot.sg_sequence"])
        self.assertEqual((await store.field_states())["Shot"]["sg_sequence"], layout.FIELD_READY)
        rows = await store.fetch(
            "SELECT link_types FROM _sgcache_fields WHERE entity_type = ? AND field_name = ?",
            ["Shot", "sg_sequence"],
        )
        self.assertEqual(rows, [("Sequence,Scene",)])

    async def test_field_states(self) -> None:
        store = await self.synced()
        await store.set_field_states("Shot", None, layout.FIELD_READY)
        await store.set_field_states("Shot", ["code", "assets"], layout.FIELD_PENDING)
        states = await store.field_states()
        self.assertEqual(states["Shot"]["code"], layout.FIELD_PENDING)
        self.assertEqual(states["Shot"]["assets"], layout.FIELD_PENDING)
        self.assertEqual(states["Shot"]["sg_sequence"], layout.FIELD_READY)
        self.assertEqual(set(states["Asset"].values()), {layout.FIELD_PENDING})
        with self.assertRaises(ValueError):
            await store.set_field_states("Shot", None, "bogus")

    async def test_fixture_schema(self) -> None:
        schema = Schema.load(FIXTURE_SCHEMA)
        store = await self.open()
        summary = await store.sync_schema(schema)
        self.assertEqual(len(summary["added_types"]), 77)
        states = await store.field_states()
        self.assertEqual(len(states), 77)
        again = await store.sync_schema(schema)
        self.assertEqual(again["added_fields"], [])
        self.assertEqual(await store.count("Shot"), 0)

    # -- apply -------------------------------------------------------------------------
    async def test_insert_update_partial(self) -> None:
        store = await self.synced()
        full = EntityChange(
            "Shot", 1,
            {
                "code": "sh010", "description": "first", "sg_status_list": "ip",
                "sg_cut_in": 1001, "sg_ratio": 1.5, "sg_flag": True,
                "sg_date": "2024-03-01", "tags": [{"type": "Tag", "id": 1}],
                "updated_at": "2024-01-01T00:00:00Z",
                "sg_sequence": {"type": "Sequence", "id": 7, "name": "seq"},
                "assets": [], "created_by": None,
            },
            complete=True,
        )
        self.assertEqual(await store.apply([full]), 1)
        row = await self.row(
            store, 1, "code", "sg_cut_in", "sg_ratio", "sg_flag", "sg_date", "tags",
            "sg_sequence__type", "sg_sequence__id", "_active", "_complete",
        )
        self.assertEqual(
            row,
            ("sh010", 1001, 1.5, 1, "2024-03-01", '[{"id":1,"type":"Tag"}]',
             "Sequence", 7, 1, 1),
        )
        # partial update: only the given columns change
        await store.apply([EntityChange("Shot", 1, {"code": "sh011"})])
        self.assertEqual(
            await self.row(store, 1, "code", "description", "sg_cut_in", "_complete"),
            ("sh011", "first", 1001, 1),
        )
        # a row first seen through a partial change is incomplete...
        await store.apply([EntityChange("Shot", 2, {"code": "sh020"})])
        self.assertEqual(await self.row(store, 2, "code", "_active", "_complete"), ("sh020", 1, 0))
        # ...until a complete change arrives
        await store.apply([EntityChange("Shot", 2, {"code": "sh020"}, complete=True)])
        self.assertEqual(await self.row(store, 2, "_complete"), (1,))

    async def test_ignored_fields_and_types(self) -> None:
        store = await self.synced()
        n = await store.apply(
            [
                EntityChange("Shot", 1, {"code": "a", "image": "http://x", "nope": 1}),
                EntityChange("Version", 5, {"code": "v"}),
            ]
        )
        self.assertEqual(n, 1)
        self.assertEqual(await self.row(store, 1, "code"), ("a",))
        with self.assertRaises(StoreError):
            await store.count("Version")

    async def test_entity_field(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"sg_sequence": {"type": "Sequence", "id": 3}})])
        self.assertEqual(await self.row(store, 1, "sg_sequence__type", "sg_sequence__id"), ("Sequence", 3))
        await store.apply([EntityChange("Shot", 1, {"sg_sequence": None})])
        self.assertEqual(await self.row(store, 1, "sg_sequence__type", "sg_sequence__id"), (None, None))

    async def test_multi_entity(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"assets": [A(3), A(1), A(3), A(2)]})])
        self.assertEqual(
            await self.links(store, 1), [("Asset", 3, 0), ("Asset", 1, 1), ("Asset", 2, 2)]
        )
        # a full list replaces everything, in its order
        await store.apply([EntityChange("Shot", 1, {"assets": [A(5), A(6)]})])
        self.assertEqual(await self.links(store, 1), [("Asset", 5, 0), ("Asset", 6, 1)])
        await store.apply([EntityChange("Shot", 1, {"assets": []})])
        self.assertEqual(await self.links(store, 1), [])

    async def test_retire_revive_delete(self) -> None:
        store = await self.synced()
        await store.apply(
            [
                EntityChange("Shot", 1, {"code": "a", "assets": [A(1)]}, complete=True),
                EntityChange("Shot", 2, {"code": "b"}, complete=True),
                EntityChange("Shot", 3, active=False),  # retired before we saw it
            ]
        )
        self.assertEqual(await self.row(store, 3, "_active", "_complete"), (0, 0))
        await store.apply([EntityChange("Shot", 1, active=False)])
        self.assertEqual(await self.row(store, 1, "_active", "code"), (0, "a"))
        self.assertEqual(await store.count("Shot"), 3)
        self.assertEqual(await store.count("Shot", active=True), 1)
        self.assertEqual(await store.count("Shot", active=False), 2)
        self.assertEqual(await store.ids("Shot"), [1, 2, 3])
        await store.apply([EntityChange("Shot", 1, active=True)])
        self.assertEqual(await self.row(store, 1, "_active"), (1,))
        await store.apply([EntityChange("Shot", 1, delete=True)])
        self.assertIsNone(await self.row(store, 1, "id"))
        self.assertEqual(await self.links(store, 1), [])
        self.assertEqual(await store.ids("Shot"), [2, 3])
        self.assertEqual(await store.count("Asset"), 0)

    async def test_update_log_holds_what_wrote_something(self) -> None:
        store = await self.synced()

        async def logged() -> list:
            return [(e["source"], e["fields"]) for e in await store.update_log("Shot", 1)]

        scan = dict(source="scan", complete=True, updated_at="2024-01-01T00:00:00Z")
        fields = {"code": "a", "updated_at": "2024-01-01T00:00:00Z"}
        await store.apply([EntityChange("Shot", 1, fields, **scan)])
        await store.apply([EntityChange("Shot", 1, fields, **scan)])
        await store.apply([EntityChange("Shot", 1, {"code": "a"}, source="event",
                                        changed_fields=["code"], event_id=5)])
        self.assertEqual(await logged(), [("scan", "*")])
        # a scan that finds a value moved without updated_at moving: logged
        await store.apply([EntityChange("Shot", 1, dict(fields, code="b"), **scan)])
        await store.apply([EntityChange("Shot", 1, {"code": "c"}, source="event",
                                        changed_fields=["code"], event_id=6)])
        self.assertEqual(await logged(), [("scan", "*"), ("scan", "*"), ("event", "code")])
        self.assertEqual((store.rows_written, store.rows_unchanged), (3, 2))
        await store.apply([EntityChange("Shot", 2, delete=True)])
        self.assertEqual(await store.update_log("Shot", 2), [])
        await store.apply([EntityChange("Shot", 1, delete=True)])
        self.assertEqual((await logged())[-1], ("passthrough", "(deleted)"))

    async def test_stale_updated_at_refused(self) -> None:
        store = await self.synced()
        await store.apply(
            [EntityChange("Shot", 1, {"code": "new", "updated_at": "2024-01-02T00:00:00Z"},
                          updated_at="2024-01-02T00:00:00Z")]
        )
        n = await store.apply(
            [EntityChange("Shot", 1, {"code": "old", "updated_at": "2024-01-01T00:00:00Z"},
                          updated_at="2024-01-01T00:00:00Z", active=False, complete=True)]
        )
        self.assertEqual(n, 0)
        self.assertEqual(await self.row(store, 1, "code", "_active", "_complete"), ("new", 1, 0))
        # same or newer is applied
        n = await store.apply(
            [EntityChange("Shot", 1, {"code": "newer"}, updated_at="2024-01-02T00:00:00Z")]
        )
        self.assertEqual(n, 1)
        self.assertEqual(await self.row(store, 1, "code"), ("newer",))
        # a delete is honoured even from an older view
        await store.apply([EntityChange("Shot", 1, delete=True, updated_at="2023-01-01T00:00:00Z")])
        self.assertIsNone(await self.row(store, 1, "id"))

    async def test_state_committed_with_rows(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"code": "a"})], state={"events.cursor": "42"})
        self.assertEqual(await store.get_state("events.cursor"), "42")
        self.assertEqual(await self.row(store, 1, "code"), ("a",))
        await store.set_state({"events.cursor": "43", "scan.Shot": "2024-01-01T00:00:00Z"})
        self.assertEqual(await store.get_state("events.cursor"), "43")
        self.assertEqual(await store.get_state("scan.Shot"), "2024-01-01T00:00:00Z")

    async def test_failure_rolls_back_everything(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"code": "kept"})], state={"cursor": "1"})
        with self.assertRaises(ValueError):
            await store.apply(
                [
                    EntityChange("Shot", 1, {"code": "changed"}),
                    EntityChange("Shot", 2, {"code": "new", "assets": [A(1)]}),
                    EntityChange("Shot", 3, {"sg_date": "not a date"}),
                ],
                state={"cursor": "2"},
            )
        self.assertEqual(await self.row(store, 1, "code"), ("kept",))
        self.assertIsNone(await self.row(store, 2, "id"))
        self.assertEqual(await self.links(store, 2), [])
        self.assertEqual(await store.get_state("cursor"), "1")
        # the store is still usable afterwards
        await store.apply([EntityChange("Shot", 2, {"code": "new"})], state={"cursor": "3"})
        self.assertEqual(await store.get_state("cursor"), "3")

    async def test_bad_link_fails(self) -> None:
        store = await self.synced()
        with self.assertRaises(ValueError):
            await store.apply([EntityChange("Shot", 1, {"sg_sequence": "Sequence 3"})])
        self.assertEqual(await store.ids("Shot"), [])

    # -- reads ------------------------------------------------------------------------------
    async def test_fetch_params_and_percent(self) -> None:
        store = await self.synced()
        await store.apply(
            [
                EntityChange("Shot", 1, {"code": "sh010"}),
                EntityChange("Shot", 2, {"code": "sh020"}),
                EntityChange("Shot", 3, {"code": "what?"}),
                EntityChange("Shot", 4, {"code": "50%"}),
            ]
        )
        rows = await store.fetch(
            """SELECT "id" FROM "Shot" WHERE "code" LIKE 'sh%' AND "id" > ? ORDER BY "id" """, [1]
        )
        self.assertEqual(rows, [(2,)])
        rows = await store.fetch("""SELECT "id" FROM "Shot" WHERE "code" = 'what?'""", [])
        self.assertEqual(rows, [(3,)])
        rows = await store.fetch(
            """SELECT "id", ? FROM "Shot" WHERE "code" LIKE '%\\%' ESCAPE '\\' OR "code" = ?""",
            ["x", "what?"],
        )
        self.assertEqual(sorted(rows), [(3, "x"), (4, "x")])

    async def test_unicode_lower(self) -> None:
        store = await self.synced()
        await store.apply(
            [EntityChange("Shot", 1, {"code": "ÉCOLE"}), EntityChange("Shot", 2, {"code": "Straße"})]
        )
        rows = await store.fetch('SELECT "id" FROM "Shot" WHERE lower("code") = lower(?)', ["école"])
        self.assertEqual(rows, [(1,)])
        rows = await store.fetch('SELECT "id" FROM "Shot" WHERE lower("code") LIKE ?', ["%cole"])
        self.assertEqual(rows, [(1,)])
        rows = await store.fetch('SELECT lower("code") FROM "Shot" WHERE "id" = ?', [2])
        self.assertEqual(rows, [("straße",)])

    async def test_reopen_finds_data(self) -> None:
        store = await self.synced()
        await store.set_field_states("Shot", ["code"], layout.FIELD_READY)
        await store.apply([EntityChange("Shot", 1, {"code": "a"}, complete=True)], state={"k": "v"})
        await store.close()
        again = await self.open(self.url)
        self.assertEqual(await again.ids("Shot"), [1])
        self.assertEqual(await again.get_state("k"), "v")
        self.assertEqual((await again.field_states())["Shot"]["code"], layout.FIELD_READY)
        await again.apply([EntityChange("Shot", 2, {"code": "b"})])
        self.assertEqual(await again.count("Shot"), 2)

    # -- set-based apply: a batch writes exactly what its changes one by one do --
    async def dump(self, store: Any, ids: range, offset: int) -> tuple:
        marks = ", ".join("?" * len(ids))
        cols = ('"id", "_active", "_complete", "code", "description", '
                '"sg_cut_in", "sg_sequence__type", "sg_sequence__id", "updated_at"')
        rows = await store.fetch(
            f'SELECT {cols} FROM "Shot" WHERE "id" IN ({marks}) ORDER BY "id"', list(ids)
        )
        links = await store.fetch(
            f'SELECT parent_id, child_type, child_id, position FROM "Shot__assets" '
            f"WHERE parent_id IN ({marks}) ORDER BY parent_id, position", list(ids)
        )
        logged = await store.fetch(
            f"SELECT entity_id, fields, source, event_id FROM _sgcache_updates "
            f"WHERE entity_type = 'Shot' AND entity_id IN ({marks}) ORDER BY seq", list(ids)
        )
        return (
            [(r[0] - offset, *r[1:]) for r in rows],
            [(r[0] - offset, *r[1:]) for r in links],
            [(r[0] - offset, *r[1:]) for r in logged],
        )

    def random_changes(self, rng: Any, offset: int, count: int) -> list[EntityChange]:
        out = []
        for _ in range(count):
            eid = offset + rng.randint(1, 6)
            kind = rng.choice(["full", "full", "partial", "partial", "delete", "flags"])
            stamp = f"2024-01-01T00:00:{rng.randint(0, 9):02d}Z" if rng.random() < 0.8 else None
            active = rng.choice([None, None, True, False])
            source = rng.choice(["scan", "event", "passthrough"])
            links = [A(rng.randint(1, 8)) for _ in range(rng.randint(0, 4))]
            if kind == "delete":
                change = EntityChange("Shot", eid, delete=True, source=source)
            elif kind == "full":
                fields = {
                    "code": f"c{rng.randint(0, 99)}", "description": rng.choice([None, "d"]),
                    "sg_cut_in": rng.randint(0, 9),
                    "sg_sequence": rng.choice([None, {"type": "Sequence", "id": rng.randint(1, 3)}]),
                    "assets": links, "updated_at": stamp,
                }
                change = EntityChange("Shot", eid, fields, active=active, updated_at=stamp,
                                      complete=True, source=source)
            elif kind == "partial":
                names = rng.sample(["code", "description", "sg_cut_in", "updated_at", "assets"], 2)
                values = {"code": f"p{rng.randint(0, 99)}", "description": "x",
                          "sg_cut_in": rng.randint(0, 9), "updated_at": stamp, "assets": links}
                change = EntityChange("Shot", eid, {n: values[n] for n in names}, active=active,
                                      updated_at=stamp, source=source)
            else:
                change = EntityChange("Shot", eid, active=active, updated_at=stamp, source=source)
            out.append(change)
        return out

    async def test_batch_same_as_one_by_one(self) -> None:
        import random

        store = await self.synced()
        for seed in range(12):
            rng = random.Random(seed)
            batch_base, single_base = 1000 * (2 * seed + 1), 1000 * (2 * seed + 2)
            # some stored state first (with links), identical on both sides
            for base_id in (batch_base, single_base):
                await store.apply([
                    EntityChange("Shot", base_id + i, {"code": "s", "assets": [A(i), A(i + 1)],
                                                        "updated_at": "2024-01-01T00:00:04Z"},
                                 updated_at="2024-01-01T00:00:04Z", complete=True)
                    for i in (1, 2, 3)
                ])
            changes = self.random_changes(rng, 0, 25)

            def moved(base_id: int) -> list[EntityChange]:
                return [
                    EntityChange(**{**c.__dict__, "entity_id": c.entity_id + base_id}) for c in changes
                ]

            applied = await store.apply(moved(batch_base))
            one_by_one = 0
            for change in moved(single_base):
                one_by_one += await store.apply([change])
            self.assertEqual(applied, one_by_one, f"seed {seed}")
            self.assertEqual(
                await self.dump(store, range(batch_base + 1, batch_base + 7), batch_base),
                await self.dump(store, range(single_base + 1, single_base + 7), single_base),
                f"seed {seed}",
            )

    async def test_batch_of_distinct_entities_same_as_one_by_one(self) -> None:
        # no entity twice: PostgreSQL plans and writes such a batch in parts
        import random

        store = await self.synced()
        rng = random.Random(7)
        count = 300
        for base_id in (10_000, 20_000):
            await store.apply([
                EntityChange("Shot", base_id + i, {"code": "s", "assets": [A(i % 5), A(i % 5 + 1)],
                                                    "updated_at": "2024-01-01T00:00:04Z"},
                             updated_at="2024-01-01T00:00:04Z", complete=True)
                for i in range(1, count + 1, 2)
            ])
        changes = []
        for eid in rng.sample(range(1, count + 1), count):
            change = self.random_changes(rng, 0, 1)[0]
            change.entity_id = eid
            changes.append(change)
        changes.insert(150, EntityChange("Nope", 1, {"code": "x"}))

        def moved(base_id: int) -> list[EntityChange]:
            return [EntityChange(**{**c.__dict__, "entity_id": c.entity_id + base_id}) for c in changes]

        applied = await store.apply(moved(10_000), state={"k": "v"})
        one_by_one = 0
        for change in moved(20_000):
            one_by_one += await store.apply([change])
        self.assertEqual(applied, one_by_one)
        self.assertGreater(applied, 100)
        self.assertEqual(
            await self.dump(store, range(10_001, 10_001 + count), 10_000),
            await self.dump(store, range(20_001, 20_001 + count), 20_000),
        )
        self.assertEqual(await store.get_state("k"), "v")

    async def test_bad_value_of_skipped_change_is_ignored(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"code": "a", "updated_at": "2024-01-02T00:00:00Z"},
                                        updated_at="2024-01-02T00:00:00Z")])
        stale = EntityChange("Shot", 1, {"sg_cut_in": "not a number"}, updated_at="2024-01-01T00:00:00Z")
        self.assertEqual(await store.apply([stale]), 0)
        with self.assertRaises(ValueError):
            await store.apply([EntityChange("Shot", 2, {"code": "b"}),
                               EntityChange("Shot", 1, {"sg_cut_in": "nope"})])
        self.assertEqual(await store.ids("Shot"), [1])

    async def test_page_with_constant_columns(self) -> None:
        # a scan page: many columns hold one value in every row (bound once on
        # PostgreSQL), others vary; then the same rows updated in one batch
        store = await self.synced()
        odd = "it's 100% ?, \\ \"quoted\"\t\u00e9"

        def page(version: int) -> list[EntityChange]:
            return [
                EntityChange(
                    "Shot", i,
                    {"code": f"c{i}", "description": odd if version else None, "sg_cut_in": 7,
                     "sg_ratio": 1.5, "sg_flag": version == 1, "sg_date": "2024-03-01",
                     "sg_sequence": {"type": "Sequence", "id": 3}, "tags": [],
                     "updated_at": f"2024-01-0{1 + version}T00:00:00Z"},
                    updated_at=f"2024-01-0{1 + version}T00:00:00Z", complete=True, source="scan",
                )
                for i in range(1, 301)
            ]

        cols = ("code", "description", "sg_cut_in", "sg_ratio", "sg_flag", "sg_date",
                "sg_sequence__type", "sg_sequence__id", "tags", "updated_at", "_active", "_complete")
        self.assertEqual(await store.apply(page(0)), 300)
        self.assertEqual(
            await self.row(store, 299, *cols),
            ("c299", None, 7, 1.5, 0, "2024-03-01", "Sequence", 3, "[]", "2024-01-01T00:00:00Z", 1, 1),
        )
        self.assertEqual(await store.apply(page(1)), 300)
        for eid in (1, 300):
            self.assertEqual(
                await self.row(store, eid, *cols),
                (f"c{eid}", odd, 7, 1.5, 1, "2024-03-01", "Sequence", 3, "[]",
                 "2024-01-02T00:00:00Z", 1, 1),
            )
        logged = await store.fetch(
            "SELECT COUNT(*), MIN(entity_id), MAX(entity_id), MIN(source), MAX(fields) "
            "FROM _sgcache_updates WHERE entity_type = 'Shot'", []
        )
        self.assertEqual(tuple(logged[0]), (600, 1, 300, "scan", "*"))

    async def test_large_batch_is_chunked(self) -> None:
        store = await self.synced()
        many = [
            EntityChange("Shot", i, {"code": f"c{i}", "assets": [A(i), A(i + 1)]}, complete=True)
            for i in range(1, 1301)
        ]
        self.assertEqual(await store.apply(many), 1300)
        self.assertEqual(await store.count("Shot"), 1300)
        partial = [EntityChange("Shot", i, {"description": "d", "assets": [A(i), A(i + 1), A(0)]})
                   for i in range(1, 1301)]
        self.assertEqual(await store.apply(partial), 1300)
        self.assertEqual(await self.row(store, 1300, "code", "description"), ("c1300", "d"))
        self.assertEqual(await self.links(store, 1300), [("Asset", 1300, 0), ("Asset", 1301, 1), ("Asset", 0, 2)])
        rows = await store.fetch('SELECT COUNT(*) FROM "Shot__assets"', [])
        self.assertEqual(rows[0][0], 3900)
        self.assertEqual(await store.apply([EntityChange("Shot", i, delete=True) for i in range(1, 1301)]), 1300)
        self.assertEqual(await store.count("Shot"), 0)
        rows = await store.fetch('SELECT COUNT(*) FROM "Shot__assets"', [])
        self.assertEqual(rows[0][0], 0)


    # -- read generation ----------------------------------------------------------
    async def until(self, what: str, done: Any, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.01)):
            if done():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail(f"not within {timeout}s: {what}")

    async def test_read_generation_moves_with_writes_a_read_can_see(self) -> None:
        store = await self.synced()
        self.assertIsNone(store.read_generation(), "before track_changes")
        await store.track_changes()
        before = store.read_generation()
        self.assertIsNotNone(before)
        # bookkeeping and reads leave it (and other processes' caches) alone
        await store.set_state({"k": "v"})
        await store.apply([], {"k": "w"})
        await store.fetch('SELECT "code" FROM "Shot"', [])
        await store.prune_update_log(0)
        await store.analyze("Shot")
        await task.deferLater(reactor, 0.2, lambda: None)  # any notification has arrived
        self.assertEqual(store.read_generation(), before)
        writes = [
            ("apply", lambda: store.apply([EntityChange("Shot", 1, {"code": "a"})])),
            ("set_field_states", lambda: store.set_field_states("Shot", None, "ready")),
            ("sync_schema", lambda: store.sync_schema(make_schema({"sg_new": "text"}))),
        ]
        for name, write in writes:
            await write()
            self.assertNotEqual(store.read_generation(), before, name)
            before = store.read_generation()
        await store.set_field_states("Shot", None, "ready")  # sg_new, pending since the sync
        self.assertNotEqual(store.read_generation(), before)
        await task.deferLater(reactor, 0.2, lambda: None)
        before = store.read_generation()
        # fields marked as they are: nothing written, nothing moves
        await store.set_field_states("Shot", None, "ready")
        await store.set_field_states("Shot", ["code", "nope"], "ready")
        self.assertEqual((await store.field_states())["Shot"]["sg_new"], "ready")
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(store.read_generation(), before)
        # an apply that changes nothing is bookkeeping too (its state is written)
        self.assertEqual(await store.apply([EntityChange("Shot", 1, {"code": "a"})], {"k": "x"}), 1)
        self.assertEqual((store.last_apply.written, store.last_apply.unchanged), (0, 1))
        await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(store.read_generation(), before)
        self.assertEqual(await store.get_state("k"), "x")
        await store.close()
        self.assertIsNone(store.read_generation(), "closed")

    async def test_read_generation_hears_other_processes_writes(self) -> None:
        store = await self.synced()
        other = await self.open(self.url)  # another process's store, as `sgcache scan` has
        await store.track_changes()
        before = store.read_generation()
        await other.apply([EntityChange("Shot", 1, {"code": "elsewhere"})])
        await self.until("the other store's write is heard", lambda: store.read_generation() != before)
        self.assertIsNotNone(store.read_generation())


class SQLiteStoreTests(StoreTestsMixin, unittest.TestCase):
    async def store_url(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        return "sqlite:///" + os.path.join(path, "cache.sqlite")

    async def raw_execute(self, url: str, sql: str) -> None:
        conn = sqlite3.connect(parse_store_url(url)[1], isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    async def test_memory_store(self) -> None:
        store = await self.open("sqlite://:memory:")
        await store.sync_schema(make_schema())
        await store.apply([EntityChange("Shot", 1, {"code": "a"})])
        self.assertEqual(await store.ids("Shot"), [1])

    async def test_calls_fire_synchronously(self) -> None:
        store = await self.synced()
        d = store.apply([EntityChange("Shot", 1, {"code": "a"})])
        self.assertEqual(self.successResultOf(d), 1)
        self.assertEqual(self.successResultOf(store.fetch('SELECT "code" FROM "Shot"', [])), [("a",)])

    async def test_wal_mode(self) -> None:
        store = await self.open()
        self.assertEqual(await store.fetch("PRAGMA journal_mode", []), [("wal",)])
        self.assertEqual(await store.fetch("PRAGMA synchronous", []), [(1,)])  # NORMAL
        self.assertEqual(await store.fetch("PRAGMA cache_size", []), [(-128 * 1024,)])  # KiB

    async def test_locked_by_another_process_fails_fast(self) -> None:
        store = await self.synced()
        other = sqlite3.connect(parse_store_url(self.url)[1], isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        try:
            with self.assertRaises(sqlite3.OperationalError):
                await store.apply([EntityChange("Shot", 1, {"code": "a"})])
            # reads still work while another writer holds the lock (WAL)
            self.assertEqual(await store.ids("Shot"), [])
        finally:
            other.execute("ROLLBACK")
        self.assertEqual(await store.apply([EntityChange("Shot", 1, {"code": "a"})]), 1)


class PostgresStoreTests(StoreTestsMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)

    async def raw_execute(self, url: str, sql: str) -> None:
        conn = psycopg2.connect(url)
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def kill_connections(self, url: str) -> int:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                return len(cur.fetchall())
        finally:
            conn.close()

    async def test_pool_recovers_after_connections_killed(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"code": "a"})])
        self.assertGreaterEqual(self.kill_connections(self.url), 2)
        # the next operations succeed (the store retries on a fresh connection)
        self.assertEqual(await store.fetch('SELECT "code" FROM "Shot"', []), [("a",)])
        self.assertEqual(await store.apply([EntityChange("Shot", 2, {"code": "b"})]), 1)
        self.assertEqual(await store.ids("Shot"), [1, 2])
        # and again, with a write first
        self.kill_connections(self.url)
        self.assertEqual(await store.apply([EntityChange("Shot", 3, {"code": "c"})], {"k": "3"}), 1)
        self.assertEqual(await store.get_state("k"), "3")
        self.assertEqual(await store.count("Shot"), 3)

    async def test_listener_lost_and_back_moves_the_generation(self) -> None:
        store = await self.synced()
        await store.track_changes()
        before = store.read_generation()
        self.assertGreaterEqual(self.kill_connections(self.url), 3)
        seen: list[Any] = []

        def moved() -> bool:
            seen.append(store.read_generation())
            return seen[-1] is not None and seen[-1] != before

        await self.until("the listener is back", moved)
        # writes made while nobody listened are unknown: the generation
        # moved on reconnecting, and was None while the connection was down
        # (when the test looked in time)
        self.assertTrue(all(g is None or g == before for g in seen[:-1]), seen)
        back = store.read_generation()
        # the reconnected listener still probes its idle TCP connection
        # (a firewall dropping it silently would otherwise go unnoticed)
        self.assertEqual(store._listener._connection.get_dsn_parameters()["keepalives_idle"], "30")
        other = await self.open(self.url)
        await other.apply([EntityChange("Shot", 1, {"code": "after"})])
        await self.until("listening again", lambda: store.read_generation() != back)

    async def test_reads_keep_the_written_join_order(self) -> None:
        # every pooled connection (reads run on any) plans joins in the
        # order the read planner writes them: see Pool in store/pgadapter.py
        store = await self.synced()
        settings = [await store.fetch("SHOW join_collapse_limit", []) for _ in range(4)]
        self.assertEqual(settings, [[("1",)]] * 4)

    async def test_fetch_while_apply_runs(self) -> None:
        store = await self.synced()
        await store.apply([EntityChange("Shot", 1, {"code": "a"})])
        big = [EntityChange("Shot", i, {"code": f"s{i}", "assets": [A(i)]}) for i in range(2, 200)]
        applying = store.apply(big)
        read = await store.fetch('SELECT "code" FROM "Shot" WHERE "id" = ?', [1])
        self.assertEqual(read, [("a",)])
        self.assertEqual(await applying, 198)
        self.assertEqual(await store.count("Shot"), 199)

    async def test_row_lookup_uses_the_index_before_analyze(self) -> None:
        # a young table has no statistics: with a bare "= ANY(ids)" the server
        # read all of it for every batch (here ~900 pages) until it was a few
        # times larger or autovacuum analyzed it
        store = await self.synced()
        text = "x" * 300
        await store.apply(
            [EntityChange("Shot", i, {"code": f"c{i}", "description": text}) for i in range(1, 20_001)]
        )
        ids = list(range(19_001, 19_501))
        [(cond, params)] = statements.id_conditions(POSTGRESQL, '"id"', ids)
        plan = await store.fetch(f'EXPLAIN SELECT "id" FROM "Shot" WHERE {cond}', params)
        self.assertNotIn("Seq Scan", "\n".join(r[0] for r in plan))
        rows = await store.fetch(f'SELECT "id" FROM "Shot" WHERE {cond} ORDER BY "id"', params)
        self.assertEqual([r[0] for r in rows], ids)

    async def test_unreachable_server(self) -> None:
        store = open_store("postgresql://nobody@127.0.0.1:1/nothing", reactor)
        with self.assertRaises(StoreError) as ctx:
            await store.open()
        self.assertIn("cannot connect to PostgreSQL", str(ctx.exception))


class URLTests(unittest.TestCase):
    def test_sqlite_urls(self) -> None:
        self.assertEqual(parse_store_url("sqlite:///rel/cache.sqlite"), ("sqlite", "rel/cache.sqlite"))
        self.assertEqual(parse_store_url("sqlite:////abs/cache.sqlite"), ("sqlite", "/abs/cache.sqlite"))
        self.assertEqual(parse_store_url("sqlite://:memory:"), ("sqlite", ":memory:"))

    def test_postgres_urls(self) -> None:
        for url in ("postgresql://me@db.example:5433/cache", "postgresql:///cache", "postgres://h/c"):
            self.assertEqual(parse_store_url(url), ("postgresql", url))

    def test_bad_urls(self) -> None:
        for url in (
            "cache.sqlite", "mysql://h/db", "sqlite://rel/path", "sqlite:///", "sqlite:///dir/",
            "postgresql://host", "postgresql://host/", "postgresql://h:notaport/db",
        ):
            with self.assertRaises(ValueError) as ctx:
                parse_store_url(url)
            message = str(ctx.exception)
            self.assertNotIn("\n", message)
            self.assertIn(repr(url), message)

    def test_open_store_types(self) -> None:
        from sgcache.store.postgres import PostgresStore
        from sgcache.store.sqlite import SQLiteStore

        self.assertIsInstance(open_store("sqlite://:memory:", reactor), SQLiteStore)
        self.assertIsInstance(open_store("postgresql:///x", reactor), PostgresStore)


class StatementTests(unittest.TestCase):
    def test_id_conditions(self) -> None:
        self.assertEqual(list(statements.id_conditions(POSTGRESQL, '"id"', [])), [])
        self.assertEqual(
            list(statements.id_conditions(POSTGRESQL, '"id"', [5, 2, 9])),
            [('"id" = ANY(?::BIGINT[]) AND "id" BETWEEN ? AND ?', ["{5,2,9}", 2, 9])],
        )
        chunks = list(statements.id_conditions(SQLITE, "parent_id", list(range(1200))))
        self.assertEqual([len(params) for _, params in chunks], [500, 500, 200])
        self.assertEqual(chunks[2][0], "parent_id IN (" + ", ".join("?" * 200) + ")")
        self.assertEqual([p for _, params in chunks for p in params], list(range(1200)))

    def test_json_rows_binds_constant_columns_once(self) -> None:
        types = ["BIGINT", "TEXT", "TEXT", "DOUBLE PRECISION", "SMALLINT"]
        rows = [[1, "a", None, 1.0, 1], [2, "a", None, 1.0, 1], [3, "a", None, 1.0, 1]]
        exprs, params = statements.json_rows(types, rows)
        self.assertEqual(
            exprs,
            "(r->>0)::BIGINT, ?::TEXT, ?::TEXT, (r->>1)::DOUBLE PRECISION, ?::SMALLINT",
        )
        self.assertEqual(params, ["a", None, 1, "[[1,1.0],[2,1.0],[3,1.0]]"])

    def test_json_rows_every_column_constant(self) -> None:
        exprs, params = statements.json_rows(["BIGINT", "TEXT"], [[4, "x"]])
        self.assertEqual(exprs, "(r->>0)::BIGINT, ?::TEXT")
        self.assertEqual(params, ["x", "[[4]]"])
        exprs, params = statements.json_rows(["BIGINT", "TEXT"], [[4, "x"], [4, "x"]])
        self.assertEqual(params, ["x", "[[4],[4]]"])

    def test_json_rows_refuses_what_json_would_change(self) -> None:
        self.assertIsNone(statements.json_rows(["BIGINT"], [[1], [True]]))
        self.assertIsNone(statements.json_rows(["BIGINT"], [[True], [True]]))
        self.assertIsNone(statements.json_rows(["TEXT"], [["a"], [1]]))
        self.assertIsNone(statements.json_rows(["DOUBLE PRECISION"], [[float("nan")], [float("nan")]]))
        self.assertIsNone(statements.json_rows(["BYTEA"], [[b"x"], [b"x"]]))


class PyformatTests(unittest.TestCase):
    def test_placeholders(self) -> None:
        self.assertEqual(to_pyformat("a = ? AND b LIKE 'x%?' AND \"c?\" = ?"),
                         "a = %s AND b LIKE 'x%%?' AND \"c?\" = %s")
        self.assertEqual(to_pyformat("'it''s ?' || ?"), "'it''s ?' || %s")

    def test_index_names_fit(self) -> None:
        name = ddl.index_name(POSTGRESQL, "X" * 40, "y" * 40, "child")
        self.assertLessEqual(len(name.strip('"')), 63)
        self.assertNotEqual(name, ddl.index_name(POSTGRESQL, "X" * 40, "y" * 40, "parent"))


class _FakeCase:
    def __init__(self) -> None:
        self.cleanups: list = []

    def skipTest(self, reason: str) -> None:
        raise unittest.SkipTest(reason)

    def fail(self, message: str) -> None:
        raise unittest.FailTest(message)

    def addCleanup(self, f: Any, *args: Any) -> None:
        self.cleanups.append(f)


class FreshPostgresTests(unittest.TestCase):
    """The test-database helper: skip when unreachable, fail under CI."""

    def setUp(self) -> None:
        from sgcache.testing import pg

        self.patch(pg, "base_url", lambda: "postgresql://nobody:secret@127.0.0.1:1/x")

    async def test_unreachable_skips(self) -> None:
        from sgcache.testing import pg

        self.patch(pg, "in_ci", lambda: False)
        with self.assertRaises(unittest.SkipTest) as ctx:
            await fresh_postgres_url(_FakeCase())
        self.assertIn("PostgreSQL not reachable at postgresql://nobody:***@127.0.0.1:1/x", str(ctx.exception))

    async def test_unreachable_fails_in_ci(self) -> None:
        from sgcache.testing import pg

        self.patch(pg, "in_ci", lambda: True)
        with self.assertRaises(unittest.FailTest):
            await fresh_postgres_url(_FakeCase())

    def test_in_ci(self) -> None:
        from sgcache.testing import pg

        for value, expected in (("true", True), ("1", True), ("", False), ("false", False)):
            self.patch(os, "environ", {"CI": value})
            self.assertEqual(pg.in_ci(), expected)
