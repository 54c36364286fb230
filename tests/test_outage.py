"""A daemon restarted while the site is down, as a studio meets it: the
real `shotgun_api3.Shotgun` client connects (its constructor's `info` comes
from the copy kept in the store), scripts the site vouched for before get
local answers equal to what they got with the site up, the `sgcache` block
and a response header say since when the site is unreachable, anyone else
gets a Shotgun fault naming the cause. With an empty store the daemon
listens anyway and every call gets that fault. Both stores.
"""

from __future__ import annotations

import json
import os
import urllib.request

import shotgun_api3
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

SCHEMA_YAML = """\
entities:
  Project:
    fields: {name: text}
  Shot:
    fields: {code: text, sg_cut_in: number, project: {type: entity, entity_types: [Project]}}
"""

READ = {"type": "Shot", "return_fields": ["code", "sg_cut_in"],
        "filters": {"logical_operator": "and", "conditions": [
            {"path": "sg_cut_in", "relation": "greater_than", "values": [1]}]},
        "sorts": [{"field_name": "code", "direction": "desc"}],
        "paging": {"entities_per_page": 500, "current_page": 1}, "return_only": "active"}


def rpc(base: str, method: str, auth: dict, args: dict) -> tuple[dict, dict]:
    body = json.dumps({"method_name": method, "params": [auth, args]}).encode()
    request = urllib.request.Request(base + "/api3/json", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


class OutageMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    def schema(self) -> Schema:
        path = os.path.abspath(self.mktemp()) + ".yml"
        with open(path, "w") as fh:
            fh.write(SCHEMA_YAML)
        self.schema_path = path
        return Schema.load(path)

    async def test_restart_while_the_site_is_down_serves_vouched_scripts(self):
        schema = self.schema()
        site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT, ("farm", "key"), ("other", "key2")]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        site.emulator.seed([{"type": "Project", "id": 1, "fields": {"name": "P"}}]
                           + [{"type": "Shot", "fields": {"code": f"sh{i}", "sg_cut_in": i,
                                                          "project": {"type": "Project", "id": 1}}}
                              for i in range(6)])
        store = await self.store_url()
        # a short TTL: the restart comes after it ran out, so only the
        # outage rule can serve the script then
        settings = {"schema": self.schema_path, "auth_ttl": 0.5}
        daemon = await start_daemon(schema, site.url, store, settings=settings)
        sg = client(daemon.url, "farm", "key")
        self.addCleanup(sg.close)
        before = await deferToThread(sg.find, "Shot", [["sg_cut_in", "greater_than", 1]], ["code", "sg_cut_in"],
                                     [{"field_name": "code", "direction": "desc"}])
        info_before = await deferToThread(sg.info)
        await daemon.stop()

        await site.stop()  # the site goes down
        await sleep(1.0)  # the TTL runs out
        daemon = await start_daemon(schema, site.url, store, settings=settings)
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        # a new client: its first call is info, from the kept copy
        sg2 = client(daemon.url, "farm", "key")
        self.addCleanup(sg2.close)
        info = await deferToThread(sg2.info)
        self.assertEqual(info["version"], info_before["version"])
        block = info["sgcache"]
        self.assertEqual(block["info_from"], "kept copy")
        self.assertFalse(block["site"]["reachable"])
        # (an ISO time: the client turns it into a datetime)
        self.assertIsNotNone(block["site"]["unreachable_since"])
        after = await deferToThread(sg2.find, "Shot", [["sg_cut_in", "greater_than", 1]],
                                    ["code", "sg_cut_in"], [{"field_name": "code", "direction": "desc"}])
        self.assertEqual(after, before)
        self.assertEqual(daemon.cache.counters["read.local"], 1)
        self.assertGreaterEqual(daemon.cache.credentials.outage_reads, 1)
        # the answer says the site is away
        answer, headers = await deferToThread(rpc, daemon.url, "read",
                                              {"script_name": "farm", "script_key": "key"}, READ)
        self.assertEqual(answer["results"]["entities"], before)
        self.assertTrue(headers["x-sgcache-site"].startswith("unreachable since "))
        # a script the site never vouched for: the site's answer is needed
        answer, _ = await deferToThread(rpc, daemon.url, "read",
                                        {"script_name": "other", "script_key": "key2"}, READ)
        self.assertTrue(answer["exception"])
        self.assertIn("unreachable", answer["message"])
        # the key itself is nowhere in the store: only salted hashes
        from sgcache.web.sitememory import CREDENTIALS_KEY

        kept = await daemon.store.get_state(CREDENTIALS_KEY)
        self.assertNotIn("key", json.loads(kept)["accepted"])
        self.assertNotIn('"farm"', kept)
        self.assertEqual(len(json.loads(kept)["accepted"]), 1)

    async def test_empty_store_and_site_down_listens_and_names_the_cause(self):
        schema = self.schema()
        site = await start_emulator(schema, scripts=dict([CACHE_SCRIPT, ("farm", "key")]))
        await site.stop()  # never up
        daemon = await start_daemon(schema, site.url, await self.store_url(),
                                    settings={"schema": self.schema_path}, wait_ready=False)
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        sg = client(daemon.url, "farm", "key")
        self.addCleanup(sg.close)
        with self.assertRaises(shotgun_api3.Fault) as raised:
            await deferToThread(sg.info)
        self.assertIn("unreachable", str(raised.exception))
        self.assertIn("never fetched", str(raised.exception))
        with self.assertRaises(shotgun_api3.Fault) as raised:
            await deferToThread(sg.find, "Shot", [], ["code"])
        self.assertIn("unreachable", str(raised.exception))
        # the status says what it waits for, and why
        deadline = reactor.seconds() + 20
        while not daemon.cache.loading_message.startswith("reading the event cursor: upstream:"):
            self.assertLess(reactor.seconds(), deadline, daemon.cache.loading_message)
            await sleep(0.05)
        self.assertIn("unreachable", daemon.cache.loading_message)


class SQLiteOutageTests(OutageMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresOutageTests(OutageMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
