"""Tests for sgcache.web.answers: the memory of answers to repeated reads."""

from __future__ import annotations

from twisted.trial import unittest

from sgcache.web.answers import Answers


class AnswersTests(unittest.TestCase):
    def test_kept_for_its_generation_only(self) -> None:
        answers = Answers(1000)
        answers.put("q", 1, b"one")
        self.assertEqual(answers.get("q", 1), b"one")
        self.assertEqual(answers.hits, 1)
        # another generation: gone, and not back when the old one is asked again
        self.assertIsNone(answers.get("q", 2))
        self.assertIsNone(answers.get("q", 1))
        self.assertEqual((len(answers), answers.bytes), (0, 0))

    def test_unknown_generation_keeps_and_reuses_nothing(self) -> None:
        answers = Answers(1000)
        answers.put("q", None, b"one")
        self.assertIsNone(answers.get("q", None))
        self.assertEqual(len(answers), 0)
        answers.put(None, 1, b"unkeyable")
        self.assertEqual(len(answers), 0)

    def test_bounded_by_bytes_least_recently_used_out(self) -> None:
        # each entry counts its answer and its key (one character here)
        answers = Answers(30, max_entry_bytes=10)
        for key in "abc":
            answers.put(key, 1, key.encode() * 9)
        self.assertEqual(answers.bytes, 30)
        answers.get("a", 1)  # a is now the most recently used
        answers.put("d", 1, b"d" * 9)
        self.assertIsNone(answers.get("b", 1))
        self.assertEqual([k for k in "acd" if answers.get(k, 1) is not None], ["a", "c", "d"])
        self.assertEqual(answers.bytes, 30)
        # too big for one entry: not kept
        answers.put("e", 1, b"e" * 10)
        self.assertIsNone(answers.get("e", 1))
        # replacing an answer counts its bytes once
        answers.put("a", 1, b"x")
        self.assertEqual(answers.bytes, 22)

    def test_a_request_key_counts_its_text(self) -> None:
        answers = Answers(1000, max_entry_bytes=1000)
        answers.put(('{"filters": "' + "x" * 500 + '"}', 500), 1, b"{}")
        self.assertEqual(answers.bytes, 2 + 515)
        answers.put(('{"filters": "' + "y" * 990 + '"}', 500), 1, b"{}")
        self.assertEqual(len(answers), 1, "a key over the entry limit is not kept")

    def test_zero_bytes_is_off(self) -> None:
        answers = Answers(0)
        self.assertFalse(answers.enabled)
        answers.put("q", 1, b"")
        self.assertIsNone(answers.get("q", 1))
