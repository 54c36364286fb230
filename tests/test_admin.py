"""The admin listener as an operator's tools see it: ``/metrics`` scraped
and parsed with prometheus_client's own parser, ``/healthz``, ``/readyz``
(serving, lag under --ready-lag-seconds), ``/status.json``, and the site
going away (site metrics, the ``X-Sgcache-Site`` header). Real clients,
both stores. (The status page in a browser: tests/test_statuspage.py.)
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

SCHEMA_YAML = """\
entities:
  Project:
    fields: {name: text}
  Shot:
    fields: {code: text, sg_cut_in: number, project: {type: entity, entity_types: [Project]}}
"""

#: the site has a type the cache does not cache
SITE_YAML = SCHEMA_YAML + """\
  Asset:
    fields: {code: text}
"""


def get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


class AdminMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    async def start(self, settings: dict | None = None):
        path = os.path.abspath(self.mktemp()) + ".yml"
        with open(path, "w") as fh:
            fh.write(SCHEMA_YAML)
        schema = Schema.load(path)
        site_path = os.path.abspath(self.mktemp()) + ".yml"
        with open(site_path, "w") as fh:
            fh.write(SITE_YAML)
        site = await start_emulator(Schema.load(site_path), scripts=dict([CACHE_SCRIPT, ("farm", "key")]))
        self.site = site
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        site.emulator.seed([{"type": "Project", "id": 1, "fields": {"name": "P"}}]
                           + [{"type": "Shot", "fields": {"code": f"sh{i}", "sg_cut_in": i,
                                                          "project": {"type": "Project", "id": 1}}}
                              for i in range(5)])
        daemon = await start_daemon(schema, site.url, await self.store_url(),
                                    settings={"schema": path, **(settings or {})})
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        self.daemon = daemon
        self.admin = admin_url(daemon)
        sg = client(daemon.url, "farm", "key")
        self.addCleanup(sg.close)
        return sg

    async def scrape(self) -> dict:
        status, headers, body = await deferToThread(get, self.admin + "/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain", headers.get("Content-Type", headers.get("content-type", "")))
        return samples(body.decode("utf-8"))

    async def test_metrics_count_what_clients_saw(self):
        sg = await self.start()
        await self.daemon.service.poller.poll()
        # first read passes through (the script is vouched for by it), then
        # local, then reused; one read of an uncached type passes through
        for _ in range(3):
            await deferToThread(sg.find, "Shot", [["sg_cut_in", "greater_than", 1]], ["code"])
        await deferToThread(sg.find, "Shot", [["sg_cut_in", "greater_than", 2]], ["code"])
        await deferToThread(sg.find, "Asset", [], ["code"])
        found = await self.scrape()
        self.assertEqual(value(found, "sgcache_requests_total", method="read", outcome="passthrough",
                               reason="credentials"), 1)
        self.assertEqual(value(found, "sgcache_requests_total", method="read", outcome="passthrough",
                               reason="not cached"), 1)
        self.assertEqual(value(found, "sgcache_requests_total", method="read", outcome="local", reason=""), 2)
        self.assertEqual(value(found, "sgcache_requests_total", method="read", outcome="reused", reason=""), 1)
        self.assertGreaterEqual(value(found, "sgcache_requests_total", method="info", outcome="local",
                                      reason=""), 1)
        infos = value(found, "sgcache_requests_total", method="info", outcome="local", reason="")
        self.assertEqual(value(found, "sgcache_request_duration_seconds_count", outcome="local"), 2 + infos)
        self.assertEqual(value(found, "sgcache_request_duration_seconds_count", outcome="passthrough"), 2)
        self.assertEqual(value(found, "sgcache_answers_hits_total"), 1)
        self.assertGreaterEqual(value(found, "sgcache_answers_kept"), 1)
        self.assertEqual(value(found, "sgcache_passthrough_reasons_total", reason="type not cached",
                               category="not cached"), 1)
        self.assertLess(value(found, "sgcache_event_lag_seconds"), 60)
        self.assertEqual(value(found, "sgcache_site_up"), 1)
        self.assertEqual(value(found, "sgcache_ready"), 1)
        self.assertGreaterEqual(value(found, "sgcache_fields", type="Shot", state="ready"), 3)
        self.assertEqual(value(found, "sgcache_fields", type="Shot", state="waiting"), 0)
        self.assertEqual(value(found, "sgcache_scan_rows", type="Shot", mode="full"), 5)
        self.assertEqual(value(found, "sgcache_credentials_vouched"), 1)
        self.assertIsNotNone(value(found, "process_resident_memory_bytes"))
        self.assertIsNotNone(value(found, "python_info", **{
            k: v for (name, labels), _ in found.items() if name == "python_info" for k, v in labels}))
        self.assertEqual(sum(v for (name, _), v in found.items() if name == "sgcache_build_info"), 1)
        if self.daemon.store.dialect == "postgresql":
            self.assertIsNotNone(value(found, "sgcache_store_pool_size", pool="read"))
            self.assertEqual(value(found, "sgcache_store_pool_waiting", pool="read"), 0)
        # OpenMetrics for a scraper that asks for it
        status, headers, body = await deferToThread(
            get, self.admin + "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        self.assertEqual(status, 200)
        self.assertTrue(body.rstrip().endswith(b"# EOF"))

    async def test_health_readiness_and_status_json(self):
        sg = await self.start(settings={"ready_lag_seconds": 30.0})
        status, _, body = await deferToThread(get, self.admin + "/healthz")
        self.assertEqual((status, json.loads(body)["ok"]), (200, True))
        # loaded, and the first poll read the event log to its end
        status, _, body = await deferToThread(get, self.admin + "/readyz")
        self.assertEqual((status, json.loads(body)), (200, {"ready": True, "reasons": []}))
        poller = self.daemon.service.poller
        caught_up, poller.caught_up_at = poller.caught_up_at, None
        status, _, body = await deferToThread(get, self.admin + "/readyz")
        self.assertEqual(status, 503)
        self.assertIn("never read", json.loads(body)["reasons"][0])
        poller.caught_up_at = caught_up
        await poller.poll()
        # the lag grows past the threshold when no poll completes
        self.daemon.service.poller.caught_up_at -= 45
        status, _, body = await deferToThread(get, self.admin + "/readyz")
        self.assertEqual(status, 503)
        self.assertIn("over --ready-lag-seconds 30", json.loads(body)["reasons"][0])
        await deferToThread(sg.find, "Shot", [], ["code"])
        await deferToThread(sg.find, "Shot", [], ["code"])
        status, _, body = await deferToThread(get, self.admin + "/status.json")
        self.assertEqual(status, 200)
        snapshot = json.loads(body)
        self.assertEqual(snapshot["site"]["url"], self.site.url)
        self.assertTrue(snapshot["site"]["reachable"])
        self.assertEqual([t["name"] for t in snapshot["types"]], ["Project", "Shot"])
        self.assertTrue(all(t["serving"] for t in snapshot["types"]))
        self.assertEqual(snapshot["top_read_shapes"][0], {"shape": "Shot", "reads": 2, "local": 1,
                                                          "passed_through": 1})
        self.assertFalse(snapshot["ready"]["ready"])
        # the admin paths are not the client port's: there they go to the site
        status, _, _ = await deferToThread(get, self.daemon.url + "/metrics")
        self.assertNotEqual(status, 200)

    async def test_site_down_shows_in_metrics_and_headers(self):
        sg = await self.start()
        await self.daemon.service.poller.poll()
        await deferToThread(sg.find, "Shot", [], ["code"])
        await self.site.stop()
        # a read of an uncached type must go to the site: it is not there
        with self.assertRaises(Exception) as raised:
            await deferToThread(sg.find, "Asset", [], ["code"])
        self.assertIn("unreachable", str(raised.exception))
        found = await self.scrape()
        self.assertEqual(value(found, "sgcache_site_up"), 0)
        self.assertGreaterEqual(value(found, "sgcache_upstream_errors_total", kind="connect"), 1)
        self.assertEqual(value(found, "sgcache_requests_total", method="read", outcome="fault", reason=""), 1)
        # local reads go on, and say the site is away
        rows = await deferToThread(sg.find, "Shot", [], ["code"])
        self.assertEqual(len(rows), 5)
        status, headers, _ = await deferToThread(
            get_rpc, self.daemon.url, {"method_name": "read", "params": [
                {"script_name": "farm", "script_key": "key"},
                {"type": "Shot", "return_fields": ["code"], "filters": {"logical_operator": "and",
                                                                         "conditions": []},
                 "paging": {"entities_per_page": 500, "current_page": 1}, "return_only": "active"}]})
        self.assertEqual(status, 200)
        self.assertTrue(headers.get("X-Sgcache-Site", headers.get("x-sgcache-site", "")).startswith(
            "unreachable since "))


def get_rpc(base: str, payload: dict) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(base + "/api3/json", data=json.dumps(payload).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


class SQLiteAdminTests(AdminMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresAdminTests(AdminMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
