"""Answers to repeated identical reads, kept in memory until the store
changes.

A farm sends the same read thousands of times between two changes of the
data. The first is planned and read from the store; its encoded answer is
kept under the request's key and the store's read generation (a token the
store changes whenever a read could answer differently: a write by this
process, a commit by another one). A later identical read gets those bytes
while the generation is the same. Only clock-free plans are kept (relative
date filters read the clock), and only answers whose generation did not move
while they were read. The store says when it cannot tell (its generation is
None): nothing is kept or reused then.

Bounded by bytes, least recently used first out; a generation change
empties it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class Answers:
    """Encoded answers by request key, for one store generation."""

    def __init__(self, max_bytes: int, max_entry_bytes: int | None = None):
        self.max_bytes = max(0, int(max_bytes))
        #: one answer may take at most this share of the budget
        self.max_entry_bytes = max_entry_bytes if max_entry_bytes is not None else self.max_bytes // 8
        self._generation: Hashable = None
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.kept = 0
        self.dropped = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def _at(self, generation: Hashable) -> None:
        """Forget everything kept under another generation."""
        if generation != self._generation:
            if self._entries:
                self.dropped += len(self._entries)
                self._entries.clear()
                self.bytes = 0
            self._generation = generation

    def get(self, key: Hashable, generation: Hashable) -> bytes | None:
        """The answer kept for `key` at `generation`, or None."""
        if key is None or generation is None:
            return None
        self._at(generation)
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        return body

    def put(self, key: Hashable, generation: Hashable, body: bytes) -> None:
        """Keep `body` as the answer to `key`, read entirely at `generation`."""
        if key is None or generation is None or not self.enabled or len(body) > self.max_entry_bytes:
            return
        self._at(generation)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        self._entries[key] = body
        self.bytes += len(body)
        self.kept += 1
        while self.bytes > self.max_bytes and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)
            self.dropped += 1

    def clear(self) -> None:
        self.dropped += len(self._entries)
        self._entries.clear()
        self.bytes = 0

    def status(self) -> dict[str, int]:
        return {"entries": len(self._entries), "bytes": self.bytes, "reused": self.hits}
