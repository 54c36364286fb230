"""Tests for sgcache.schema.types (the data types' codecs): the date_time fast paths give exactly what
the general path gives (value or error), for every kind of input."""

from __future__ import annotations

import datetime
import random

from twisted.trial import unittest

from sgcache.schema.types import DATA_TYPES, format_datetime, parse_datetime


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
        encode = DATA_TYPES["date_time"].encode
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
        encode = DATA_TYPES["date_time"].encode
        for _ in range(3000):
            text = (
                f"{rng.randint(0, 9999):04d}-{rng.randint(0, 13):02d}-{rng.randint(0, 32):02d}T"
                f"{rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d}Z"
            )
            self.assertSame(encode, ref_encode, text)
            self.assertSame(parse_datetime, ref_parse, text)


class DataTypeModuleTests(unittest.TestCase):
    """Every data type module declares what the store, the planner and the
    reader need of it, in terms they know."""

    def test_each_module_declares_its_type(self) -> None:
        import pkgutil

        import sgcache.schema.types as types

        modules = {m.name for m in pkgutil.iter_modules(types.__path__)} - {"base"}
        self.assertEqual(set(DATA_TYPES), modules)

    def test_declarations_are_complete(self) -> None:
        from sgcache.read.planner import LEAVES
        from sgcache.read.relations import NEGATIONS
        from sgcache.schema.types.base import COLUMN, LINK, LINKS

        known_relations = set(NEGATIONS) | set(NEGATIONS.values()) | {
            "less_than", "greater_than", "starts_with", "ends_with", "name_is", "name_starts_with",
            "name_ends_with", "in_calendar_day", "in_calendar_week", "in_calendar_month", "in_calendar_year"}
        for name, dtype in DATA_TYPES.items():
            self.assertEqual(dtype.name, name)
            self.assertIn(dtype.storage, (COLUMN, LINK, LINKS), name)
            self.assertTrue(dtype.relations <= known_relations, (name, dtype.relations - known_relations))
            self.assertIn(dtype.sort, (None, "text", "value", "checkbox", "entity"), name)
            self.assertIn(dtype.as_name, (None, "text", "value"), name)
            if not dtype.cacheable:
                continue
            if dtype.storage == COLUMN:
                self.assertTrue(dtype.sql_type("sqlite") and dtype.sql_type("postgresql"), name)
            if dtype.relations:
                self.assertIn(dtype.filter, LEAVES, name)
            if dtype.native is not None:
                sample = dtype.native(1)
                self.assertIs(dtype.encode(sample), sample)  # stored as given, as declared

    def test_codecs_round_trip(self) -> None:
        samples = {
            "text": "Ab", "number": 3, "float": 1.5, "checkbox": True, "date": "2024-03-01",
            "date_time": "2024-03-01T12:00:00Z", "tag_list": ["a", "b"],
            "url": {"name": "n", "url": "https://x", "link_type": "web", "content_type": None},
            "serializable": {"k": [1, 2]},
        }
        for name, value in samples.items():
            dtype = DATA_TYPES[name]
            self.assertEqual(dtype.decode(dtype.encode(value)), value, name)
        self.assertEqual(DATA_TYPES["url"].name_of(DATA_TYPES["url"].encode(samples["url"])), "n")
        self.assertIsNone(DATA_TYPES["text"].name_of(None))
