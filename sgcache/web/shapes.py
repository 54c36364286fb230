"""Read shapes: what kinds of reads clients send, for the status page's
"top read shapes". A shape is a read's type, the fields its filters name
and its sort fields -- never a filter value (a client's data stays out of
the status page). Bounded: at most `capacity` distinct shapes are counted;
reads of shapes beyond that count under one "(other shapes)" row.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

OTHER = "(other shapes)"


def describe(args: Any) -> str:
    """``"Shot | filters: project, sg_status_list | sort: code"`` for a
    read's arguments; ``"(unusual read)"`` when they are not a read's."""
    if not isinstance(args, dict) or not isinstance(args.get("type"), str):
        return "(unusual read)"
    fields: set[str] = set()
    _filter_fields(args.get("filters"), fields, 0)
    sorts = []
    for item in args.get("sorts") or [] if isinstance(args.get("sorts"), list) else []:
        if isinstance(item, dict) and isinstance(item.get("field_name"), str):
            sorts.append(item["field_name"][:80])
    text = args["type"][:80]
    if fields:
        text += " | filters: " + ", ".join(sorted(fields)[:12])
    if sorts:
        text += " | sort: " + ", ".join(sorts[:6])
    return text


def _filter_fields(node: Any, out: set[str], depth: int) -> None:
    if depth > 8 or len(out) > 32:
        return
    if isinstance(node, dict):
        if isinstance(node.get("path"), str):
            out.add(node["path"][:80])
        for child in node.get("conditions") or [] if isinstance(node.get("conditions"), list) else []:
            _filter_fields(child, out, depth + 1)


class ReadShapes:
    """Reads counted by shape and by how they were answered."""

    def __init__(self, capacity: int = 500):
        self.capacity = capacity
        self.local: Counter[str] = Counter()
        self.passed: Counter[str] = Counter()

    def count(self, args: Any, local: bool) -> None:
        shape = describe(args)
        if shape not in self.local and shape not in self.passed and self._distinct() >= self.capacity:
            shape = OTHER
        (self.local if local else self.passed)[shape] += 1

    def _distinct(self) -> int:
        return len(self.local.keys() | self.passed.keys())

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        total = self.local + self.passed
        return [
            {"shape": shape, "reads": count, "local": self.local.get(shape, 0),
             "passed_through": self.passed.get(shape, 0)}
            for shape, count in total.most_common(n)
        ]
