"""The site gate (sgcache.site.gate): lanes, the limit, pauses and the
window after throttling, on a fake clock. The end-to-end side (a throttling
emulator, the real client) is in test_wan."""

from __future__ import annotations

import email.utils

from twisted.internet.task import Clock
from twisted.trial import unittest

from sgcache.site import gate as gate_module
from sgcache.site.gate import CLIENT, SCAN, SYNC, SiteGate, retry_after


def fired(d) -> bool:
    return d.called


class LaneTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gate = SiteGate(self.clock, limit=4)

    def test_scans_leave_one_slot_for_sync(self) -> None:
        scans = [self.gate.acquire(SCAN) for _ in range(4)]
        self.assertEqual([fired(d) for d in scans], [True, True, True, False])
        self.assertTrue(fired(self.gate.acquire(SYNC)))
        self.assertEqual(self.gate.in_flight, {CLIENT: 0, SYNC: 1, SCAN: 3})

    def test_sync_is_served_before_waiting_scans(self) -> None:
        for _ in range(3):
            self.gate.acquire(SCAN)
        self.gate.acquire(SYNC)
        scan = self.gate.acquire(SCAN)
        sync = self.gate.acquire(SYNC)
        self.gate.release(SCAN)
        self.assertTrue(fired(sync))
        self.assertFalse(fired(scan))

    def test_clients_never_wait_and_sync_keeps_one_slot(self) -> None:
        clients = [self.gate.acquire(CLIENT) for _ in range(10)]
        self.assertTrue(all(fired(d) for d in clients))
        self.assertTrue(fired(self.gate.acquire(SYNC)))
        self.assertFalse(fired(self.gate.acquire(SYNC)))

    def test_a_cancelled_wait_leaves_the_queue(self) -> None:
        for _ in range(4):
            self.gate.acquire(SYNC)
        waiting = self.gate.acquire(SYNC)
        waiting.addErrback(lambda f: None)
        waiting.cancel()
        self.assertEqual(self.gate.status()["waiting"][SYNC], 0)


class ThrottleTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.gate = SiteGate(self.clock, limit=8)

    def test_a_pause_holds_sync_and_scan_until_the_time_asked(self) -> None:
        self.gate.pause(2.0)
        sync = self.gate.acquire(SYNC)
        self.assertTrue(fired(self.gate.acquire(CLIENT)))
        self.clock.advance(1.9)
        self.assertFalse(fired(sync))
        self.clock.advance(0.2)
        self.assertTrue(fired(sync))

    def test_a_burst_of_throttled_answers_halves_the_window_once(self) -> None:
        for _ in range(5):
            self.gate.pause(1.0)
        self.assertEqual(self.gate.window, 4)
        self.assertEqual(self.gate.throttled, 5)
        self.clock.advance(1.0)
        self.gate.pause(1.0)  # throttled again after the pause: halves again
        self.assertEqual(self.gate.window, 2)
        self.clock.advance(1.0)
        slots = [self.gate.acquire(SYNC) for _ in range(3)]
        self.assertEqual([fired(d) for d in slots], [True, True, False])

    def test_the_window_grows_back_with_good_answers(self) -> None:
        self.gate.pause(0.0)
        self.gate.pause(0.0)
        self.gate.pause(0.0)
        self.assertEqual(self.gate.window, 1)
        for _ in range(gate_module.GROWTH - 1):
            self.gate.answered()
        self.assertEqual(self.gate.window, 1)
        self.gate.answered()
        self.assertEqual(self.gate.window, 2)
        for _ in range(200 * gate_module.GROWTH):
            self.gate.answered()
        self.assertEqual(self.gate.window, 8)  # never past the limit
        self.assertEqual(self.gate.status()["window"], 8)

    def test_a_waiting_request_gets_a_slot_the_window_opens(self) -> None:
        self.gate.pause(0.0)
        self.gate.pause(0.0)
        self.gate.pause(0.0)
        first = self.gate.acquire(SYNC)
        second = self.gate.acquire(SYNC)
        self.assertEqual((fired(first), fired(second)), (True, False))
        for _ in range(gate_module.GROWTH):
            self.gate.answered()
        self.assertTrue(fired(second))


class RetryAfterTests(unittest.TestCase):
    def test_seconds_dates_and_junk(self) -> None:
        self.assertEqual(retry_after([(b"Retry-After", [b"7"])], 0.0), 7.0)
        self.assertEqual(retry_after([(b"retry-after", [b"99999"])], 0.0), gate_module.MAX_PAUSE)
        when = email.utils.formatdate(1000.0 + 30, usegmt=True).encode()
        self.assertAlmostEqual(retry_after([(b"Retry-After", [when])], 1000.0), 30.0)
        self.assertIsNone(retry_after([(b"Retry-After", [b"soon"])], 0.0))
        self.assertIsNone(retry_after([], 0.0))
        self.assertEqual(retry_after([(b"Retry-After", [b"-5"])], 0.0), 0.0)
