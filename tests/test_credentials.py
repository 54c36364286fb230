"""Who gets local answers (sgcache.web.credentials) and slow read shapes
(sgcache.web.budget): expiry on a clock, policy lists, bounds. The end-to-end
behaviour (revocation within one TTL, background checks, policy) is in
tests/test_hardening.py."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from sgcache.web.budget import SlowShapes
from sgcache.config import parse_patterns
from sgcache.web.credentials import Credentials


def script(name: str = "pipe", key: str = "k") -> dict:
    return {"script_name": name, "script_key": key}


class CredentialsTests(unittest.TestCase):
    def test_keys_are_salted_hashes_of_script_credentials_only(self) -> None:
        one, two = Credentials(Clock()), Credentials(Clock())
        key = one.key(script())
        self.assertNotIn("pipe", key)
        int(key, 16)  # a hex digest
        self.assertEqual(one.key(script()), key)
        self.assertNotEqual(two.key(script()), key)  # a salt per process
        self.assertNotEqual(one.key(script(key="other")), key)
        self.assertEqual(one.key({**script(), "session_uuid": "u"}), key)
        for auth in ({**script(), "sudo_as_login": "ann"}, {"session_token": "t"}, {"user_login": "a"},
                     {"script_name": 1, "script_key": "k"}, None, [], "x"):
            self.assertIsNone(one.key(auth), auth)
        self.assertIsNotNone(one.key(script("\ud800", "\udfff")))

    def test_vouching_expires_and_is_due_again_at_half_its_ttl(self) -> None:
        clock = Clock()
        creds = Credentials(clock, ttl=60)
        key = creds.key(script())
        self.assertFalse(creds.vouched(key))
        creds.accepted(key)
        self.assertTrue(creds.vouched(key))
        clock.advance(29)
        self.assertFalse(creds.due(key))
        clock.advance(2)
        self.assertTrue(creds.due(key))
        creds.checking(key, True)
        self.assertFalse(creds.due(key))  # one check at a time
        creds.checking(key, False)
        creds.accepted(key)
        clock.advance(59)
        self.assertTrue(creds.vouched(key))
        clock.advance(1)
        self.assertFalse(creds.vouched(key))
        self.assertEqual(len(creds), 0)

    def test_a_refusal_ends_it_at_once(self) -> None:
        creds = Credentials(Clock())
        key = creds.key(script())
        creds.accepted(key)
        creds.refused(key)
        self.assertFalse(creds.vouched(key))
        self.assertEqual(creds.revoked, 1)

    def test_bounded(self) -> None:
        creds = Credentials(Clock(), capacity=3)
        keys = [creds.key(script(key=str(i))) for i in range(5)]
        for key in keys:
            creds.accepted(key)
        self.assertEqual(len(creds), 3)
        self.assertEqual([creds.vouched(k) for k in keys], [False, False, True, True, True])

    def test_policy(self) -> None:
        creds = Credentials(Clock(), serve=parse_patterns("render, pipe-*"), deny=parse_patterns(["pipe-x*"]))
        self.assertEqual([creds.allowed(script(n)) for n in ("render", "pipe-a", "pipe-xy", "other")],
                         [True, True, False, False])
        everyone = Credentials(Clock())
        self.assertTrue(everyone.allowed(script("anything")))


class SlowShapesTests(unittest.TestCase):
    def test_a_shape_passes_through_for_the_penalty(self) -> None:
        clock = Clock()
        slow = SlowShapes(clock, penalty=300)
        slow.add(1)
        slow.add(2, stopped=False)
        self.assertEqual((1 in slow, 2 in slow, 3 in slow), (True, True, False))
        self.assertEqual((slow.stopped, slow.slow_reads), (1, 1))
        clock.advance(300)
        self.assertEqual((1 in slow, len(slow)), (False, 1))

    def test_bounded(self) -> None:
        slow = SlowShapes(Clock(), capacity=2)
        for shape in range(5):
            slow.add(shape)
        self.assertEqual((len(slow), 3 in slow, 4 in slow, 0 in slow), (2, True, True, False))
