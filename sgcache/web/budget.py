"""The time budget of a local read: read shapes that went over it.

A local read whose statement runs past ``--read-budget-ms`` is stopped by
the store (`sgcache.store.interface.ReadTimeout`) and passes through; its shape
(the plan's SQL text: the same filters, fields and sorts, whatever the
values) then passes through without a local try for `PENALTY` seconds, so
a client looping a heavy read does not stall the others once per loop. A
read that finishes but takes more than `SLOW_SHARE` of the budget (100 ms
at the default budget) is
answered, and marks its shape the same way when the store's reads run on
the reactor (SQLite): there a client looping reads just under the budget
would otherwise hold everyone else up nearly all the time.
"""

from __future__ import annotations

from typing import Any, Hashable

from sgcache.web.expiring import Expiring

#: seconds a shape that went over the budget passes through
PENALTY = 300.0
#: shapes remembered at most (oldest first out)
CAPACITY = 1024
#: a finished read that took more than this share of the budget marks its
#: shape (stores whose reads block the reactor only)
SLOW_SHARE = 0.1


class SlowShapes:
    """Shapes over the budget recently, by key (a hash of the plan's SQL)."""

    def __init__(self, clock: Any, penalty: float = PENALTY, capacity: int = CAPACITY):
        self.penalty = penalty
        self._shapes = Expiring(clock, capacity)
        #: reads stopped at the budget, and reads that finished slowly
        self.stopped = 0
        self.slow_reads = 0

    def __len__(self) -> int:
        return len(self._shapes)

    def __contains__(self, shape: Hashable) -> bool:
        return shape in self._shapes

    def add(self, shape: Hashable, stopped: bool = True) -> None:
        """A read of this shape was stopped at the budget (or, `stopped`
        False, finished but took more than `SLOW_SHARE` of it)."""
        if stopped:
            self.stopped += 1
        else:
            self.slow_reads += 1
        self._shapes.hold(shape, self.penalty)
