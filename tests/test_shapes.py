"""Read shapes for the status page: type, filter and sort fields, never a
value; bounded; a repeated read (same request key) counted under the shape
described the first time."""

from __future__ import annotations

from twisted.trial import unittest

from sgcache.web.shapes import OTHER, ReadShapes, describe

READ = {"type": "Shot", "filters": {"logical_operator": "and", "conditions": [
    {"path": "sg_status_list", "relation": "is", "values": ["secret-value"]},
    {"logical_operator": "or", "conditions": [{"path": "project", "relation": "is", "values": [1]}]}]},
    "sorts": [{"field_name": "code", "direction": "asc"}]}


class ShapeTests(unittest.TestCase):
    def test_a_shape_names_fields_never_values(self):
        self.assertEqual(describe(READ), "Shot | filters: project, sg_status_list | sort: code")
        self.assertEqual(describe(["not", "a", "read"]), "(unusual read)")

    def test_counts_by_shape_and_outcome_with_the_memo(self):
        shapes = ReadShapes()
        key = ("the request's text", 500)
        for _ in range(3):
            shapes.count(READ, True, key)
        shapes.count(READ, False)
        self.assertEqual(shapes.top(), [{"shape": describe(READ), "reads": 4, "local": 3, "passed_through": 1}])

    def test_bounded(self):
        shapes = ReadShapes(capacity=2, memo=2)
        for i in range(5):
            shapes.count({"type": f"T{i}"}, True, (str(i), 500))
        self.assertEqual({row["shape"]: row["reads"] for row in shapes.top()}, {"T0": 1, "T1": 1, OTHER: 3})
        self.assertLessEqual(len(shapes._memo), 2)
