"""The scanner: loads every cached entity type from the site, page by page,
as a cooperative task (`twisted.internet.task.cooperate`) so the reactor
keeps serving requests between pages.

A full scan reads active and retired entities of each type by ascending id,
applies each page as complete rows, removes rows the site no longer returns
(hard deletes), then marks the type's fields `ready` so reads may use them.
Progress (entities, rate, ETA-free totals) is logged per page.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from twisted.internet import defer, task
from twisted.logger import Logger

from .changes import SOURCE_SCAN, EntityChange
from .fetch import PAGE_SIZE, iter_pages, to_change
from .schema import Schema
from .store import layout

log = Logger()


class Scanner:
    def __init__(
        self,
        reactor: Any,
        schema: Schema,
        store: Any,
        upstream: Any,
        page_size: int = PAGE_SIZE,
        progress: Callable[[str], None] | None = None,
    ):
        self.reactor = reactor
        self.schema = schema
        self.store = store
        self.upstream = upstream
        self.page_size = page_size
        self.progress = progress
        self.scanned = 0
        self.current_type: str | None = None

    def full_scan(self, types: Iterable[str] | None = None) -> defer.Deferred:
        """Scan the given types (default: all); fires when done."""
        names = list(types) if types is not None else [e.name for e in self.schema]
        unknown = [n for n in names if n not in self.schema]
        if unknown:
            return defer.fail(ValueError(f"types not in the cached schema: {', '.join(unknown)}"))
        started = self.reactor.seconds()
        self.scanned = 0

        def steps() -> Iterator[defer.Deferred]:
            for entity_type in names:
                yield from self._scan_type_steps(entity_type)

        cooperative = task.cooperate(steps())
        d = cooperative.whenDone()

        def finished(_: Any) -> int:
            elapsed = max(self.reactor.seconds() - started, 1e-6)
            self._report(
                f"full scan done: {self.scanned} entities of {len(names)} types "
                f"in {elapsed:.1f}s ({self.scanned / elapsed:.0f}/s)"
            )
            self.current_type = None
            return self.scanned

        d.addCallback(finished)
        return d

    def _report(self, message: str) -> None:
        log.info("{message}", message=message)
        if self.progress is not None:
            self.progress(message)

    def _scan_type_steps(self, entity_type: str) -> Iterator[defer.Deferred]:
        """Deferreds, one per page, that together scan one type."""
        state = {"seen": set(), "count": 0}
        self.current_type = entity_type
        for return_only, active in (("active", True), ("retired", False)):
            pages = iter_pages(self.upstream, self.schema, entity_type, return_only, page_size=self.page_size)
            while True:
                yield defer.ensureDeferred(self._apply_next(pages, entity_type, active, state))
                if state.get("done_" + return_only):
                    break
        yield defer.ensureDeferred(self._finish_type(entity_type, state))

    async def _apply_next(self, pages: Any, entity_type: str, active: bool, state: dict) -> bool:
        key = "done_" + ("active" if active else "retired")
        try:
            page = await pages.__anext__()
        except StopAsyncIteration:
            state[key] = True
            return False
        changes = [to_change(self.schema, entity_type, e, active, SOURCE_SCAN) for e in page]
        await self.store.apply(changes)
        state["seen"].update(c.entity_id for c in changes)
        state["count"] += len(changes)
        self.scanned += len(changes)
        self._report(f"{entity_type}: {state['count']} entities loaded")
        return True

    async def _finish_type(self, entity_type: str, state: dict) -> None:
        stored = await self.store.ids(entity_type)
        gone = sorted(set(stored) - state["seen"])
        if gone:
            await self.store.apply(
                [EntityChange(entity_type, i, delete=True, source=SOURCE_SCAN) for i in gone]
            )
            log.info("{type}: removed {count} rows the site no longer has", type=entity_type, count=len(gone))
        await self.store.set_field_states(entity_type, None, layout.FIELD_READY)
        self._report(f"{entity_type}: done ({state['count']} entities)")
