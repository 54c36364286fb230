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

    def __init__(self, capacity: int = 500, memo: int = 4096):
        self.capacity = capacity
        self.local: Counter[str] = Counter()
        self.passed: Counter[str] = Counter()
        #: hash of a request key -> its shape: a farm repeats the same reads,
        #: and a local read's key is made anyway (`planner.request_key`);
        #: by hash, so a large read's text is not held twice
        self._memo: dict[int, str] = {}
        self._memo_size = memo

    def count(self, args: Any, local: bool, key: Any = None) -> None:
        """Count one read; `key`, its request key when known, spares
        describing the same read again."""
        memo = hash(key) if key is not None else None
        shape = self._memo.get(memo) if memo is not None else None
        if shape is None:
            shape = describe(args)
            if memo is not None:
                if len(self._memo) >= self._memo_size:
                    self._memo.clear()
                self._memo[memo] = shape
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
