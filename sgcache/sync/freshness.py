"""An in-process fence against stale re-reads that carry the same
`updated_at` as what the store holds.

The store refuses a change whose `updated_at` is older than the stored one,
but Shotgun's `updated_at` has one-second resolution: a slow scan page read
before an update and applied after the poller applied that update can carry
the same second, and would win. Every sync reader takes a ticket (a local
sequence number) before it sends its upstream read; after an apply, the
entities applied are stamped with the ticket of the read that produced them.
A later apply drops the entities already stamped by a younger read.
"""

from __future__ import annotations

from typing import Sequence

from sgcache.schema.changes import EntityChange


class Freshness:
    """Tickets for upstream reads, and the newest ticket applied per entity."""

    def __init__(self) -> None:
        self._seq = 0
        self._open: set[int] = set()
        self._applied: dict[tuple[str, int], int] = {}
        self.dropped = 0

    def ticket(self) -> int:
        """Take a ticket before an upstream read; `done` it after applying."""
        self._seq += 1
        self._open.add(self._seq)
        return self._seq

    def fresh(self, changes: Sequence[EntityChange], ticket: int) -> list[EntityChange]:
        """`changes` without those a younger read already applied."""
        out = []
        for change in changes:
            if self._applied.get((change.entity_type, int(change.entity_id)), 0) > ticket:
                self.dropped += 1
                continue
            out.append(change)
        return out

    def applied(self, changes: Sequence[EntityChange], ticket: int) -> None:
        for change in changes:
            key = (change.entity_type, int(change.entity_id))
            if self._applied.get(key, 0) < ticket:
                self._applied[key] = ticket

    def done(self, ticket: int) -> None:
        """The read with this ticket is applied (or abandoned): forget what
        no open read can be older than."""
        self._open.discard(ticket)
        if not self._open:
            self._applied.clear()
        else:
            oldest = min(self._open)
            if len(self._applied) > 10000:
                self._applied = {k: v for k, v in self._applied.items() if v > oldest}
