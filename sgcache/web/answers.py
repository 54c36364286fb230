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

Bounded by bytes (answers and their keys), least recently used first out;
a generation change empties it.
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
        #: bytes each entry counts for: its answer and its key's text
        self._sizes: dict[Hashable, int] = {}
        self.bytes = 0
        #: reads answered with a kept answer
        self.hits = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def _at(self, generation: Hashable) -> None:
        """Forget everything kept under another generation."""
        if generation != self._generation:
            if self._entries:
                self.clear()
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
        if key is None or generation is None or not self.enabled:
            return
        size = len(body) + _key_size(key)
        if size > self.max_entry_bytes:
            return
        self._at(generation)
        if self._entries.pop(key, None) is not None:
            self.bytes -= self._sizes.pop(key)
        self._entries[key] = body
        self._sizes[key] = size
        self.bytes += size
        while self.bytes > self.max_bytes and self._entries:
            evicted, _ = self._entries.popitem(last=False)
            self.bytes -= self._sizes.pop(evicted)

    def clear(self) -> None:
        self._entries.clear()
        self._sizes.clear()
        self.bytes = 0


def _key_size(key: Hashable) -> int:
    """What a key holds in text (a request's canonical arguments)."""
    if isinstance(key, tuple):
        return sum(len(part) for part in key if isinstance(part, str))
    return len(key) if isinstance(key, str) else 0
