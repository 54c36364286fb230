"""Tests for sgcache.schema.fieldtypes: the date_time fast paths give exactly what
the general path gives (value or error), for every kind of input."""

from __future__ import annotations

import datetime
import random

from twisted.trial import unittest

from sgcache.schema.fieldtypes import FIELD_TYPES, format_datetime, parse_datetime


# -- the general path, as it was before the fast paths (the reference) -------


def ref_format(value: datetime.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def ref_parse(value: str) -> datetime.datetime:
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return parsed.replace(microsecond=0)


def ref_encode(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return ref_format(value)
    return ref_format(ref_parse(str(value)))


class _Str(str):
    pass


TEXTS = [
    "2024-01-02T03:04:05Z",
    "1000-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2024-02-29T12:00:00Z",
    "2023-02-29T12:00:00Z",  # not a leap year
    "2024-13-01T00:00:00Z",
    "2024-01-32T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T23:60:00Z",
    "2024-01-01T23:59:60Z",
    "0999-01-01T00:00:00Z",  # strftime does not pad years below 1000
    "0000-01-01T00:00:00Z",
    "2024-01-02T03:04:05z",
    "2024-01-02 03:04:05Z",
    "2024-01-02T03:04:05",
    "2024-01-02T03:04:05.123456Z",
    "2024-01-02T03:04:05+02:00",
    "2024-01-01T01:00:00+02:00",
    "2024-01-02T03:04:05 UTC",
    " 2024-01-02T03:04:05Z ",
    "2024-01-02T03:04:05ZZ",
    "２０２４-01-02T03:04:05Z",  # full-width digits
    "2024-01-02",
    "",
    "garbage",
    "+024-01-02T03:04:05Z",
]


class DateTimeTests(unittest.TestCase):
    def outcome(self, fn, value):
        try:
            return ("ok", fn(value))
        except Exception as e:  # noqa: BLE001 -- the error is the outcome
            return ("error", type(e), str(e))

    def assertSame(self, new, ref, value) -> None:
        self.assertEqual(self.outcome(new, value), self.outcome(ref, value), repr(value))

    def test_parse_same_as_general_path(self) -> None:
        for text in TEXTS + [_Str(TEXTS[0])]:
            self.assertSame(parse_datetime, ref_parse, text)

    def test_encode_same_as_general_path(self) -> None:
        encode = FIELD_TYPES["date_time"].encode
        values: list[object] = TEXTS + [
            _Str("2024-01-02T03:04:05Z"),
            None,
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            datetime.datetime(2024, 1, 2, 3, 4, 5, 999999),
            datetime.datetime(999, 1, 2, 3, 4, 5),
            datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            datetime.datetime(
                2024, 1, 1, 1, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            datetime.date(2024, 1, 2),
            12345,
        ]
        for value in values:
            self.assertSame(encode, ref_encode, value)

    def test_format_same_as_general_path(self) -> None:
        for value in [
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            datetime.datetime(2024, 1, 2, 3, 4, 5, 123),
            datetime.datetime(1000, 1, 1),
            datetime.datetime(999, 12, 31, 23, 59, 59),
            datetime.datetime(1, 1, 1),
            datetime.datetime(9999, 12, 31, 23, 59, 59, 999999),
            datetime.datetime(2024, 6, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
        ]:
            self.assertSame(format_datetime, ref_format, value)

    def test_random_wire_texts(self) -> None:
        rng = random.Random(5)
        encode = FIELD_TYPES["date_time"].encode
        for _ in range(3000):
            text = (
                f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}Z"
            )
            self.assertSame(encode, ref_encode, text)
            self.assertSame(parse_datetime, ref_parse, text)
