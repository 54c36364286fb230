"""Keys that hold until a time: a bounded map of key -> expiry, the oldest
set first out when full. Used for vouched credentials and for read shapes
over the read budget."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable


class Expiring:
    """Keys with an expiry on `clock` (``clock.seconds()``), at most
    `capacity` of them."""

    def __init__(self, clock: Any, capacity: int):
        self.clock = clock
        self.capacity = capacity
        self._until: OrderedDict[Hashable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._until)

    def until(self, key: Hashable) -> float | None:
        """When `key` expires, or None when it does not hold (any more)."""
        if not self._until:
            return None
        until = self._until.get(key)
        if until is not None and until <= self.clock.seconds():
            del self._until[key]
            return None
        return until

    def __contains__(self, key: Hashable) -> bool:
        return self.until(key) is not None

    def hold(self, key: Hashable, seconds: float) -> None:
        """`key` holds for `seconds` from now (set last: kept longest)."""
        self._until.pop(key, None)
        self._until[key] = self.clock.seconds() + seconds
        while len(self._until) > self.capacity:
            self._until.popitem(last=False)

    def drop(self, key: Hashable) -> bool:
        """Forget `key`; whether it was held."""
        return self._until.pop(key, None) is not None
