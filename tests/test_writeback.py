"""Write-back against the real emulator: the re-read after a write shares
the sync readers' freshness fence, so a same-second re-read overtaken by
the event poller does not overwrite the newer row."""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from sgcache.sync import writeback
from sgcache.sync.poller import EventPoller
from sgcache.testing.pg import fresh_postgres_url
from sgcache.sync.writeback import WriteBack

from .test_scanner import SCHEMA, TYPES, ScanFixture


class WriteBackMixin(ScanFixture):
    async def test_same_second_reread_overtaken_by_the_poller_does_not_win(self):
        await self.scanner.full_scan(TYPES)
        poller = EventPoller(reactor, SCHEMA, self.store, self.upstream, freshness=self.scanner.freshness)
        await poller.initialize()
        back = WriteBack(SCHEMA, self.store, self.upstream, self.scanner.freshness)
        self.emulator.set_clock(self.emulator.now())  # frozen: everything in one second
        read, release = self.hold_first_call(writeback, "fetch_by_ids")
        # a client's update through the cache; its re-read sees "first"...
        self.emulator.update("Shot", 100, {"code": "first"})
        done = defer.ensureDeferred(back.after("update", {"type": "Shot", "id": 100, "fields": []},
                                               {"type": "Shot", "id": 100}))
        await read
        # ...another script updates the shot in the same second; the poller applies it
        self.emulator.update("Shot", 100, {"code": "second"})
        await poller.poll()
        release.callback(None)
        await done
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = 100', [])
        self.assertEqual(rows, [("second",)])
        self.assertGreater(self.scanner.freshness.dropped, 0)

    async def test_reread_applies_when_nothing_younger_did(self):
        await self.scanner.full_scan(TYPES)
        back = WriteBack(SCHEMA, self.store, self.upstream, self.scanner.freshness)
        self.emulator.update("Shot", 101, {"code": "written"})
        await back.after("update", {"type": "Shot", "id": 101, "fields": []}, {"type": "Shot", "id": 101})
        rows = await self.store.fetch('SELECT code FROM "Shot" WHERE id = 101', [])
        self.assertEqual(rows, [("written",)])
        self.assertEqual(self.scanner.freshness.dropped, 0)


class SQLiteWriteBackTests(WriteBackMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresWriteBackTests(WriteBackMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
