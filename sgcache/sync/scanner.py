"""The scanner: reads cached entity types from the site page by page, as a
cooperative task (`twisted.internet.task.cooperate`), so the reactor keeps
serving reads between pages.

* A **full scan** reads every active and retired entity of a type by
  ascending id (optionally only some projects), applies each page as
  complete rows, removes rows the site no longer has (hard deletes), and
  marks `ready` the type's fields that were in the schema when its scan
  started and still are, unchanged (a field added or retyped during the
  scan waits for the next one; `use_schema`). Deletions are found range by range: the
  stored ids inside an active page's id range that the page lacks are
  candidates, crossed off when the retired pass returns them; the rest are
  re-read by id (a concurrent change is not mistaken for a delete) and
  deleted when the site has nothing. Memory stays O(page + retired).
* An **incremental scan** reads ``updated_at > watermark - overlap``, active
  and retired, and then compares a fingerprint of the active rows (count and
  sum of ids, from `summarize`) with the store: a mismatch (a retirement or
  revival made without events, which does not move ``updated_at``, or a hard
  delete) triggers an id reconciliation of that type.

Each page is applied with its progress in the same store transaction
(``scan_progress:<Type>``: mode, phase, last id), and a type's new watermark
(``scan_watermark:<Type>``, the highest ``updated_at`` seen) with its last
step, so a crashed scan resumes where it stopped (``scan_pending`` names the
scan). Progress is logged with entities, rate and ETA (from a `summarize`
count). Upstream and store failures are retried with exponential back-off.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable, Iterable

from twisted.internet import defer, task

from sgcache.site.backoff import Backoff, Sleeper, describe
from sgcache.schema.changes import SOURCE_SCAN, EntityChange
from sgcache.sync.fetch import cached_fields, fetch_by_ids, to_change
from sgcache.sync.freshness import Freshness
from sgcache.sync.linkfill import fill_missing_links
from sgcache.schema import Schema
from sgcache.site.pages import PAGE_SIZE, read_page
from sgcache.store import layout
from sgcache.logs import logger

log = logger(__name__)

PENDING_KEY = "scan_pending"
PROGRESS_PREFIX = "scan_progress:"
WATERMARK_PREFIX = "scan_watermark:"
LAST_SCAN_KEY = "scan_last"
FULL = "full"
INCREMENTAL = "incremental"
PHASES = (("active", True), ("retired", False))
_END = 2**62


def _wire_minus(value: str, seconds: float) -> str:
    """A wire date_time moved back by `seconds`."""
    import calendar
    import time

    epoch = calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")) - int(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(epoch, 0)))


def _event_time_to_wire(value: str | None) -> str | None:
    """Event ``created_at`` (wire form) or None."""
    return value if isinstance(value, str) and len(value) == 20 else None


class ScanAborted(Exception):
    """A scan gave up after too many failures (one-shot scans only)."""


class Scanner:
    def __init__(
        self,
        reactor: Any,
        schema: Schema,
        store: Any,
        upstream: Any,
        page_size: int = PAGE_SIZE,
        progress: Callable[[str], None] | None = None,
        overlap: float = 60.0,
        interval: float = 600.0,
        freshness: Freshness | None = None,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
        report_every: float = 5.0,
    ):
        self.reactor = reactor
        self.schema = schema
        self.store = store
        self.upstream = upstream
        self.page_size = page_size
        self.progress = progress
        self.overlap = overlap
        self.interval = interval
        self.freshness = freshness or Freshness()
        self.backoff = backoff or Backoff(1.0, 60.0)
        #: one-shot scans (the CLI) give up after this many failures in a row
        self.max_failures = max_failures
        self.report_every = report_every
        self.scanned = 0
        self.current_type: str | None = None
        self.current: dict[str, Any] = {}
        self.watermarks: dict[str, str] = {}
        self.errors = 0
        self.last_error: str | None = None
        self.last_scan: dict[str, Any] | None = None
        #: type -> its last scan: mode, entities, seconds, finished_at
        self.type_scans: dict[str, dict[str, Any]] = {}
        self.removed = 0
        self.reconciled = 0
        self._lock = defer.DeferredLock()
        self._sleeper = Sleeper(reactor)
        self._running = False
        self._stopping = False
        self._loop: defer.Deferred | None = None
        self._requested: dict[str, Any] | None = None
        self._last_report = 0.0
        #: types a schema change asked to (re)load in full (background loop)
        self._full_wanted: set[str] = set()
        #: schema generation (one per applied schema change) and, per
        #: (type, field), the generation its storage was (re)made at
        self.generation = 0
        self._field_since: dict[tuple[str, str], int] = {}
        #: held while a type's fields are marked ready; the schema keeper
        #: holds it while it applies a change (no field is marked ready on
        #: storage that is being replaced)
        self.schema_lock = defer.DeferredLock()
        #: called with a type's name once a full scan marked fields ready
        self.on_type_loaded: Callable[[str], Any] | None = None

    # -- public entry points -------------------------------------------------
    def full_scan(
        self, types: Iterable[str] | None = None, projects: Iterable[int] | None = None
    ) -> defer.Deferred:
        """Scan the given types (default: all) in full; fires with the
        number of entities read."""
        return self._scan(FULL, types, projects=projects)

    def incremental_scan(
        self, types: Iterable[str] | None = None, since: str | None = None, reason: str | None = None,
        answers_request: bool = False,
    ) -> defer.Deferred:
        """Read what changed since each type's watermark (or `since`, if
        older); fires with the number of entities read. `answers_request`:
        it answers a persisted rescan request, cleared when done."""
        return self._scan(INCREMENTAL, types, since=since, reason=reason, answers_request=answers_request)

    def _scan(
        self,
        mode: str,
        types: Iterable[str] | None,
        projects: Iterable[int] | None = None,
        since: str | None = None,
        reason: str | None = None,
        answers_request: bool = False,
    ) -> defer.Deferred:
        names = list(types) if types is not None else [e.name for e in self.schema]
        unknown = [n for n in names if n not in self.schema]
        if unknown:
            return defer.fail(ValueError(f"types not in the cached schema: {', '.join(unknown)}"))
        plan = {
            "mode": mode,
            "types": names,
            "projects": sorted(int(p) for p in projects) if projects else None,
            "since": since,
            "reason": reason,
            "answers_request": answers_request,
        }
        return self._lock.run(lambda: defer.ensureDeferred(self._run_plan(plan, resume=False)))

    async def resume(self) -> int | None:
        """Finish a scan a crash interrupted (None when there was none)."""
        raw = await self.store.get_state(PENDING_KEY)
        if not raw:
            return None
        plan = json.loads(raw)
        log.info("resuming an interrupted {mode} scan of {count} types", mode=plan["mode"], count=len(plan["types"]))
        return await self._lock.run(lambda: defer.ensureDeferred(self._run_plan(plan, resume=True)))

    def use_schema(self, schema: Schema, remade: Iterable[str] = ()) -> None:
        """Scan with `schema` from now on. `remade`: ``"Type.field"`` whose
        storage was created or replaced: a scan of their type already
        running does not mark them ready (its earlier pages lack them)."""
        self.schema = schema
        self.generation += 1
        for item in remade:
            etype, _, fname = item.partition(".")
            self._field_since[(etype, fname)] = self.generation

    def request_full(self, types: Iterable[str], reason: str) -> None:
        """Ask the background loop for a full scan of `types` soon (fields
        added or retyped by a schema change; served once loaded)."""
        new = set(types) - self._full_wanted
        if not new:
            return
        self._full_wanted |= new
        log.info("full scan of {types} requested: {reason}", types=", ".join(sorted(new)), reason=reason)
        self._sleeper.wake()

    def request_incremental(self, reason: str, since: str | None = None) -> None:
        """Ask the background loop for an incremental scan soon (e.g. after
        the event log was truncated)."""
        since = _event_time_to_wire(since)
        if self._requested is None:
            self._requested = {"reason": reason, "since": since}
        elif since is not None:
            old = self._requested.get("since")
            self._requested["since"] = since if old is None else min(old, since)
        self._sleeper.wake()

    # -- background loop -------------------------------------------------------
    def start(self) -> None:
        """Run an incremental scan every `interval` seconds (and on request)."""
        if self._running:
            return
        self._running = True
        self._loop = defer.ensureDeferred(self._run_loop())
        self._loop.addErrback(lambda f: log.failure("scanner loop stopped", f))

    def stop(self) -> defer.Deferred:
        self._running = False
        self._stopping = True
        self._sleeper.wake()
        loop, self._loop = self._loop, None
        return loop if loop is not None else defer.succeed(None)

    async def _run_loop(self) -> None:
        raw = await self.store.get_state("rescan_requested")
        if raw:
            try:
                wanted = json.loads(raw)
                self.request_incremental(wanted.get("reason") or "rescan requested", wanted.get("since"))
            except ValueError:
                self.request_incremental("rescan requested")
        while self._running:
            if self._requested is None and not self._full_wanted:
                await self._sleeper.sleep(self.interval)
            if not self._running:
                return
            if self._full_wanted:
                wanted = sorted(t for t in self._full_wanted if t in self.schema)
                self._full_wanted.clear()
                try:
                    await self.resume()  # a scan a crash interrupted comes first
                    if wanted:
                        await self.full_scan(wanted)
                except Exception as e:
                    self._note_error(e)
                    self._full_wanted.update(wanted)
                    await self._sleeper.sleep(self.backoff.next_delay())
                continue
            request, self._requested = self._requested, None
            try:
                if await self.resume() is None:
                    await self.incremental_scan(
                        since=(request or {}).get("since"),
                        reason=(request or {}).get("reason") or "periodic",
                        answers_request=request is not None,
                    )
            except Exception as e:
                self._note_error(e)
                if request is not None and self._requested is None:
                    self._requested = request
                await self._sleeper.sleep(self.backoff.next_delay())

    # -- running a plan -----------------------------------------------------------
    async def _run_plan(self, plan: dict[str, Any], resume: bool) -> int:
        started = self.reactor.seconds()
        self.scanned = 0
        mode = plan["mode"]
        if not resume:
            await self.store.set_state({PENDING_KEY: json.dumps(plan)})
        if plan.get("reason"):
            log.info("{mode} scan: {reason}", mode=mode, reason=plan["reason"])
        remaining = list(plan["types"])
        for entity_type in list(remaining):
            if entity_type in self.schema:  # not removed by a schema change meanwhile
                await self._cooperate(self._scan_type(entity_type, plan))
            remaining.remove(entity_type)
            rest = dict(plan, types=remaining)
            items = {PENDING_KEY: json.dumps(rest) if remaining else ""}
            if not remaining and plan.get("answers_request"):
                items["rescan_requested"] = ""
            await self._retrying(lambda: self.store.set_state(items))
        elapsed = max(self.reactor.seconds() - started, 1e-6)
        self.last_scan = {
            "mode": mode,
            "types": len(plan["types"]),
            "entities": self.scanned,
            "seconds": round(elapsed, 1),
            "finished_at": self.reactor.seconds(),
        }
        self._report(
            f"{mode} scan done: {self.scanned} entities of {len(plan['types'])} types "
            f"in {elapsed:.1f}s ({self.scanned / elapsed:.0f}/s)",
            force=True,
        )
        self.current_type = None
        self.current = {}
        return self.scanned

    def _cooperate(self, steps: AsyncIterator[Any]) -> defer.Deferred:
        """Drive an async generator one step per cooperative iteration."""
        finished: list[bool] = []

        def step(_: Any = None) -> defer.Deferred:
            d = defer.ensureDeferred(steps.__anext__())

            def end(f: Any) -> None:
                f.trap(StopAsyncIteration)
                finished.append(True)

            return d.addErrback(end)

        def iterate() -> Any:
            while not finished:
                yield step()

        return task.cooperate(iterate()).whenDone()

    async def _retrying(self, op: Callable[[], Any]) -> Any:
        """`op()` (a Deferred or coroutine), retried with back-off."""
        while True:
            try:
                result = await defer.maybeDeferred(op)
            except Exception as e:
                self._note_error(e)
                if self.max_failures is not None and self.backoff.failures + 1 >= self.max_failures:
                    raise ScanAborted(f"giving up after {self.backoff.failures} failures: {describe(e)}") from e
                delay = self.backoff.next_delay()
                log.warn("scan step failed ({error}); retrying in {delay:.0f}s", error=describe(e), delay=delay)
                await self._sleeper.sleep(delay)
                if self._stopping:
                    raise ScanAborted("the scanner was stopped") from e
                continue
            self.backoff.reset()
            return result

    def _note_error(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = describe(error)

    # -- one type ------------------------------------------------------------------
    def _type_conditions(self, entity_type: str, projects: list[int] | None) -> list[dict] | None:
        """Filters restricting a scan to projects (None: skip the type)."""
        if not projects:
            return []
        if entity_type == "Project":
            return [{"path": "id", "relation": "in", "values": projects}]
        spec = self.schema.get_field(entity_type, "project")
        if spec is None or spec.data_type != "entity":
            return None
        return [{"path": "project", "relation": "in",
                 "values": [{"type": "Project", "id": p} for p in projects]}]

    async def _scan_type(self, entity_type: str, plan: dict[str, Any]) -> AsyncIterator[None]:
        projects = plan.get("projects")
        conditions = self._type_conditions(entity_type, projects)
        if conditions is None:
            self._report(f"{entity_type}: skipped (no project field)", force=True)
            return
        key = PROGRESS_PREFIX + entity_type
        raw = await self._retrying(lambda: self.store.get_state(key))
        progress = json.loads(raw) if raw else None
        watermark = await self._retrying(lambda: self.store.get_state(WATERMARK_PREFIX + entity_type)) or None
        mode = plan["mode"]
        has_updated = self._has_updated_at(entity_type)
        if progress is None:
            since = None
            if mode == INCREMENTAL:
                since = watermark
                if plan.get("since") and (since is None or plan["since"] < since):
                    since = plan["since"]
                if since is None or not has_updated:
                    mode = FULL  # never scanned (or no updated_at): read it all
            progress = {"mode": mode, "phase": 0, "after_id": 0, "since": since, "max_updated": watermark,
                        "fields": self._field_types(entity_type)}
            resumed = False
        else:
            mode = progress["mode"]
            resumed = progress["phase"] > 0 or progress["after_id"] > 0
        if mode == INCREMENTAL and progress.get("since"):
            conditions = conditions + [{
                "path": "updated_at", "relation": "greater_than",
                "values": [_wire_minus(progress["since"], self.overlap + 1)],
            }]
        self.current_type = entity_type
        started = self.reactor.seconds()
        progress["generation"] = self.generation  # this process's, for _loaded_fields
        count = 0
        expected = await self._expected(entity_type, conditions)
        self.current = {"type": entity_type, "mode": mode, "entities": 0, "expected": expected,
                        "started": started}
        candidates: set[int] = set()
        if mode == FULL and resumed:
            candidates = await self._rebuild_candidates(entity_type, conditions, projects, progress)
        for phase_index, (return_only, active) in enumerate(PHASES):
            if phase_index < progress["phase"]:
                continue
            while True:
                page, has_next = await self._retrying(
                    lambda: defer.ensureDeferred(
                        self._page(entity_type, conditions, return_only, active, progress, candidates,
                                   mode, projects, phase_index)
                    )
                )
                count += page
                self.scanned += page
                self.current["entities"] = count
                self._report_progress(entity_type, count, expected, started)
                yield None
                if not has_next:
                    break
            progress["phase"], progress["after_id"] = phase_index + 1, 0
        await self._retrying(lambda: defer.ensureDeferred(
            self._finish_type(entity_type, mode, progress, candidates, projects)))
        yield None
        elapsed = max(self.reactor.seconds() - started, 1e-6)
        self.type_scans[entity_type] = {"mode": mode, "entities": count, "seconds": round(elapsed, 1),
                                        "finished_at": self.reactor.seconds()}
        self._report(f"{entity_type}: {count} entities loaded ({mode} scan, {elapsed:.1f}s)", force=True)

    def _has_updated_at(self, entity_type: str) -> bool:
        spec = self.schema.get_field(entity_type, "updated_at")
        return spec is not None and spec.data_type == "date_time"

    async def _expected(self, entity_type: str, conditions: list[dict]) -> int | None:
        """How many active entities the scan will read (for the ETA)."""
        try:
            result = await self.upstream.call("summarize", {
                "type": entity_type,
                "filters": {"logical_operator": "and", "conditions": conditions},
                "summaries": [{"field": "id", "type": "record_count"}],
            })
            return int(result["summaries"]["id"])
        except Exception:
            return None

    async def _read(
        self, entity_type: str, conditions: list[dict], return_only: str, after_id: int,
        fields: list[str] | None = None,
    ) -> tuple[list[dict[str, Any]], bool]:
        return await read_page(self.upstream, entity_type, fields or cached_fields(self.schema, entity_type),
                               conditions, return_only, self.page_size, after_id=after_id)

    async def _page(
        self, entity_type: str, conditions: list[dict], return_only: str, active: bool,
        progress: dict[str, Any], candidates: set[int], mode: str, projects: list[int] | None,
        phase_index: int,
    ) -> tuple[int, bool]:
        """Read and apply one page; (entities read, more to come)."""
        after = int(progress["after_id"])
        ticket = self.freshness.ticket()
        try:
            entities, has_next = await self._read(entity_type, conditions, return_only, after)
            changes = [to_change(self.schema, entity_type, e, active, SOURCE_SCAN) for e in entities]
            last = max((c.entity_id for c in changes), default=after)
            new_candidates = set(candidates)
            if mode == FULL:
                ids = {c.entity_id for c in changes}
                if active:
                    upto = last if has_next else _END
                    new_candidates |= await self.store.ids_between(entity_type, after, upto, projects) - ids
                else:
                    new_candidates -= ids
            max_updated = progress.get("max_updated")
            for c in changes:
                if isinstance(c.updated_at, str) and (max_updated is None or c.updated_at > max_updated):
                    max_updated = c.updated_at
            new_progress = dict(progress, after_id=last, phase=phase_index, max_updated=max_updated)
            fresh = self.freshness.fresh(changes, ticket)
            await self.store.apply(fresh, {PROGRESS_PREFIX + entity_type: json.dumps(new_progress)})
            self.freshness.applied(fresh, ticket)
        finally:
            self.freshness.done(ticket)
        progress.update(new_progress)
        candidates.clear()
        candidates.update(new_candidates)
        if mode == INCREMENTAL and fresh:
            await fill_missing_links(self.store, self.schema, self.upstream, fresh, SOURCE_SCAN)
        return len(changes), has_next

    async def _rebuild_candidates(
        self, entity_type: str, conditions: list[dict], projects: list[int] | None, progress: dict
    ) -> set[int]:
        """After a crash: the deletion candidates of the part already done,
        from id-only reads."""
        candidates: set[int] = set()
        limit = _END if progress["phase"] > 0 else int(progress["after_id"])
        for phase_index, (return_only, active) in enumerate(PHASES):
            if phase_index > progress["phase"]:
                break
            stop = limit if active else int(progress["after_id"])
            after = 0
            while after < stop:
                entities, has_next = await self._retrying(
                    lambda: defer.ensureDeferred(self._read(entity_type, conditions, return_only, after, ["id"])))
                ids = {int(e["id"]) for e in entities if int(e["id"]) <= stop}
                page_max = max((int(e["id"]) for e in entities), default=after)
                if active:
                    upto = min(page_max if has_next else _END, stop)
                    candidates |= await self.store.ids_between(entity_type, after, upto, projects) - ids
                else:
                    candidates -= ids
                if not has_next or page_max >= stop:
                    break
                after = page_max
        return candidates

    async def _finish_type(
        self, entity_type: str, mode: str, progress: dict[str, Any], candidates: set[int],
        projects: list[int] | None,
    ) -> None:
        changes: list[EntityChange] = []
        if mode == FULL and candidates:
            changes = await self._confirm(entity_type, candidates)
        elif mode == INCREMENTAL:
            changes = await self._reconcile(entity_type)
        state = {PROGRESS_PREFIX + entity_type: ""}
        if progress.get("max_updated") and not projects:
            state[WATERMARK_PREFIX + entity_type] = progress["max_updated"]
        await self.store.apply(changes, state)
        if progress.get("max_updated") and not projects:
            self.watermarks[entity_type] = progress["max_updated"]
        removed = sum(1 for c in changes if c.delete)
        if removed:
            self.removed += removed
            log.info("{type}: removed {count} rows the site no longer has", type=entity_type, count=removed)
        if mode == FULL and not projects:
            async with self.schema_lock:
                loaded = self._loaded_fields(entity_type, progress)
                if loaded:
                    await self.store.set_field_states(entity_type, loaded, layout.FIELD_READY)
            if self.on_type_loaded is not None:
                await self.on_type_loaded(entity_type)
        if mode == FULL:
            # fresh statistics, or the first reads after a bulk load get
            # plans made for an empty table
            await self.store.analyze(entity_type)

    def _field_types(self, entity_type: str) -> dict[str, str]:
        return {name: spec.data_type for name, spec in self.schema[entity_type].fields.items()}

    def _loaded_fields(self, entity_type: str, progress: dict[str, Any]) -> list[str]:
        """The fields a full scan of `entity_type` loaded: in the schema when
        it started (recorded in its progress, which survives a crash) and
        still, with the same data type, their storage not remade since."""
        if entity_type not in self.schema:
            return []
        now = self._field_types(entity_type)
        before = progress.get("fields") or now
        since = progress.get("generation", self.generation)
        return sorted(
            name for name, dtype in now.items()
            if before.get(name) == dtype and self._field_since.get((entity_type, name), 0) <= since
        )

    async def _confirm(self, entity_type: str, ids: set[int]) -> list[EntityChange]:
        """Current copies of `ids`, and deletes for those the site lacks."""
        ticket = self.freshness.ticket()
        try:
            found = await fetch_by_ids(self.upstream, self.schema, entity_type, ids, SOURCE_SCAN)
            found = self.freshness.fresh(found, ticket)
        finally:
            self.freshness.done(ticket)
        gone = sorted(set(ids) - {c.entity_id for c in found})
        return found + [EntityChange(entity_type, i, delete=True, source=SOURCE_SCAN) for i in gone]

    async def _reconcile(self, entity_type: str) -> list[EntityChange]:
        """Compare active-row fingerprints; on a mismatch, compare ids."""
        try:
            count = await self.upstream.call("summarize", {
                "type": entity_type, "filters": {"logical_operator": "and", "conditions": []},
                "summaries": [{"field": "id", "type": "record_count"}]})
            total = await self.upstream.call("summarize", {
                "type": entity_type, "filters": {"logical_operator": "and", "conditions": []},
                "summaries": [{"field": "id", "type": "sum"}]})
            site = (int(count["summaries"]["id"]), int(total["summaries"]["id"] or 0))
        except Exception as e:
            log.info("{type}: no fingerprint from the site ({error})", type=entity_type, error=describe(e))
            return []
        ours = await self.store.active_fingerprint(entity_type)
        if site == ours:
            return []
        log.info("{type}: active rows differ from the site ({ours} vs {site}); reconciling ids",
                 type=entity_type, ours=ours, site=site)
        site_ids: set[int] = set()
        after = 0
        while True:
            entities, has_next = await self._read(entity_type, [], "active", after, ["id"])
            site_ids.update(int(e["id"]) for e in entities)
            if not has_next:
                break
            after = max(int(e["id"]) for e in entities)
        stored = await self.store.active_ids(entity_type)
        differ = site_ids ^ stored
        self.reconciled += len(differ)
        return await self._confirm(entity_type, differ) if differ else []

    # -- reporting --------------------------------------------------------------------
    def _report_progress(self, entity_type: str, count: int, expected: int | None, started: float) -> None:
        now = self.reactor.seconds()
        if now - self._last_report < self.report_every:
            return
        elapsed = max(now - started, 1e-6)
        rate = count / elapsed
        eta = ""
        if expected and rate > 0 and expected > count:
            eta = f", ETA {(expected - count) / rate:.0f}s"
        total = f"/{expected}" if expected is not None else ""
        self.current.update(rate=round(rate, 1))
        self._report(f"{entity_type}: {count}{total} entities, {rate:.0f}/s{eta}")

    def _report(self, message: str, force: bool = False) -> None:
        now = self.reactor.seconds()
        if not force and now - self._last_report < self.report_every:
            return
        self._last_report = now
        log.info("{message}", message=message)
        if self.progress is not None:
            self.progress(message)

    async def load_watermarks(self) -> dict[str, str]:
        for entity in self.schema:
            value = await self.store.get_state(WATERMARK_PREFIX + entity.name)
            if value:
                self.watermarks[entity.name] = value
        return self.watermarks

    def status(self) -> dict[str, Any]:
        """The scanner's part of `info`'s ``sgcache`` block."""
        return {
            "scan": {
                "running": bool(self.current),
                "current": dict(self.current) or None,
                "last": self.last_scan,
                "watermarks": dict(sorted(self.watermarks.items())),
                "errors": self.errors,
                "last_error": self.last_error,
                "rows_removed": self.removed,
                "rows_reconciled": self.reconciled,
            }
        }
