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

Reads go at WAN speed: `concurrency` workers read id slices of a type
(``low < id <= high``, keyset paging inside a slice, the next page asked
for as soon as one arrives) and several types at once, within the site
gate's limit (`sgcache.site.gate`, scans in its lowest lane). A type read
in several slices reads its retired rows (few, as a rule) in one slice of
their own over all its ids, not a retired pass per slice: each slice's
deletion candidates are the stored rows of its own kind (active, or
retired) the site did not list, confirmed by id before they go.

A type's plan (mode, since, its slices) is kept in ``scan_progress:<Type>``
when it opens; each page is applied with its slice's position in the same
store transaction (``scan_slice:<Type>:<n>``: phase, last id, newest
``updated_at``, done), and a type's new watermark (``scan_watermark:<Type>``:
the highest ``updated_at`` seen, or the site's time when the scan began if
later, so a type with no rows gets one too) with its last step, so a
crashed scan resumes slice by slice where it stopped (``scan_pending``
names the scan). Progress is logged with entities, rate and ETA (from a `summarize`
count). Upstream and store failures are retried with exponential back-off.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator, Callable, Iterable

from twisted.internet import defer, task
from twisted.python.failure import Failure

from sgcache.site.backoff import Backoff, Sleeper, describe
from sgcache.schema.changes import SOURCE_SCAN, EntityChange
from sgcache.sync.fetch import cached_fields, fetch_by_ids, gather, to_change
from sgcache.sync.freshness import Freshness, LocalFreshness, StaleRead
from sgcache.sync.linkfill import fill_missing_links
from sgcache.schema import Schema
from sgcache.site.faults import ERR_AUTH, ERR_UPSTREAM, Fault
from sgcache.site.gate import SCAN
from sgcache.site.pages import PAGE_SIZE, read_page
from sgcache.store import layout
from sgcache.logs import logger

log = logger(__name__)

PENDING_KEY = "scan_pending"
PROGRESS_PREFIX = "scan_progress:"
SLICE_PREFIX = "scan_slice:"
#: a type is split into one id slice per this many pages it is expected to
#: hold (at most `SLICES_PER_WORKER` times the concurrency): small slices,
#: so the workers finish a type together (a slice costs no request)
SLICE_PAGES = 4
SLICES_PER_WORKER = 2
#: a slice that reads only retired rows (the third item of its bounds)
RETIRED_SLICE = "retired"
WATERMARK_PREFIX = "scan_watermark:"
LAST_SCAN_KEY = "scan_last"
FULL = "full"
INCREMENTAL = "incremental"
PHASES = (("active", True), ("retired", False))
#: the phases a slice reads, by the kind its bounds name (a type read in
#: several slices; a type in one slice reads both)
_SLICE_PHASES: dict[str | None, tuple[int, ...]] = {None: (0,), RETIRED_SLICE: (1,)}
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
        concurrency: int = 4,
    ):
        self.reactor = reactor
        self.schema = schema
        self.store = store
        #: scan traffic goes in the gate's lowest lane (`sgcache.site.gate`)
        self.upstream = upstream.with_lane(SCAN) if hasattr(upstream, "with_lane") else upstream
        #: scan pages requested from the site at once (slices of a type,
        #: and several types); twice as many workers share them, so one
        #: worker's apply and move to its next slice leave no slot idle
        self.concurrency = max(1, int(concurrency))
        self._page_slots = defer.DeferredSemaphore(self.concurrency)
        self.page_size = page_size
        self.progress = progress
        self.overlap = overlap
        self.interval = interval
        self.freshness = freshness or LocalFreshness()
        self.backoff = backoff or Backoff(1.0, 60.0)
        #: one-shot scans (the CLI) give up after this many failures in a row
        self.max_failures = max_failures
        self.report_every = report_every
        self.scanned = 0
        self.current_type: str | None = None
        #: type -> progress of its running scan (entities, expected, started)
        self.running: dict[str, dict[str, Any]] = {}
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
        # the site's time is asked for while the first type opens
        site_now = defer.ensureDeferred(self._retrying(lambda: defer.ensureDeferred(self._site_now())))
        runner = _PlanRunner(self, plan, site_now)
        count = 1 if self.concurrency == 1 else 2 * self.concurrency
        workers = [self._cooperate(self._worker(runner)) for _ in range(count)]
        results = await defer.DeferredList(workers, consumeErrors=True)
        await runner.close()
        for ok, outcome in results:
            if not ok:
                outcome.raiseException()
        if runner._error is not None:
            runner._error.raiseException()
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
        self.running.clear()
        return self.scanned

    async def _worker(self, runner: "_PlanRunner") -> AsyncIterator[None]:
        """One of `concurrency` workers: takes slices (of the type being
        opened, then the next types) until the plan has none left; the
        worker ending a type's last slice finishes the type."""
        backoff = Backoff(self.backoff.initial, self.backoff.maximum, self.backoff.factor)
        try:
            while True:
                unit = await runner.next_slice(backoff)
                if unit is None:
                    return
                run, piece = unit
                async for _ in self._scan_slice(run, piece, backoff):
                    yield None
                    if runner.failed:
                        return
                run.running -= 1
                if run.finished():
                    await self._retrying(lambda: defer.ensureDeferred(self._finish_type(run)), backoff)
                    await runner.type_done(run.entity_type, backoff)
                    yield None
        except BaseException:
            runner.failed = True
            raise

    async def _site_now(self) -> str | None:
        """A time on the site's clock no later than now: the newest event's
        ``created_at``. Every row changed after it is read by a later
        incremental scan, so a type scanned now (even one with no rows, or
        none with an ``updated_at``) gets it as its watermark."""
        try:
            result = await self.upstream.call("read", {
                "type": "EventLogEntry", "return_fields": ["id", "created_at"],
                "filters": {"logical_operator": "and", "conditions": []},
                "sorts": [{"field_name": "id", "direction": "desc"}],
                "paging": {"entities_per_page": 1, "current_page": 1}, "return_only": "active",
            })
        except Fault as e:
            if e.error_code in (ERR_AUTH, ERR_UPSTREAM):
                raise  # retried
            log.info("no site time for the scan's watermarks ({error})", error=describe(e))
            return None
        entities = result.get("entities") or []
        return _event_time_to_wire(entities[0].get("created_at")) if entities else None

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

    async def _retrying(self, op: Callable[[], Any], backoff: Backoff | None = None,
                        passing: tuple[type[Exception], ...] = ()) -> Any:
        """`op()` (a Deferred or coroutine), retried with back-off (each
        worker has its own); the `passing` errors are raised at once."""
        backoff = backoff or self.backoff
        while True:
            try:
                result = await defer.maybeDeferred(op)
            except passing:
                raise
            except Exception as e:
                await self._failed_step(e, backoff)
                continue
            backoff.reset()
            return result

    async def _failed_step(self, error: Exception, backoff: Backoff) -> None:
        """Count a failed step and wait before it is tried again (raises
        ScanAborted when a one-shot scan gives up, or the scanner stops)."""
        self._note_error(error)
        if self.max_failures is not None and backoff.failures + 1 >= self.max_failures:
            raise ScanAborted(f"giving up after {backoff.failures} failures: {describe(error)}") from error
        delay = backoff.next_delay()
        log.warn("scan step failed ({error}); retrying in {delay:.0f}s", error=describe(error), delay=delay)
        await self._sleeper.sleep(delay)
        if self._stopping:
            raise ScanAborted("the scanner was stopped") from error

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

    async def _open_type(
        self, entity_type: str, plan: dict[str, Any], site_now: Callable[[], Any], backoff: Backoff
    ) -> "_TypeRun | None":
        """A type's scan, ready to hand out its slices: resumed from its
        progress when a crash interrupted it, else planned (mode, since,
        id slices). None when the type is skipped."""
        projects = plan.get("projects")
        conditions = self._type_conditions(entity_type, projects)
        if conditions is None:
            self._report(f"{entity_type}: skipped (no project field)", force=True)
            return None
        key = PROGRESS_PREFIX + entity_type
        raw = await self._retrying(lambda: self.store.get_state(key), backoff)
        progress = json.loads(raw) if raw else None
        watermark = await self._retrying(lambda: self.store.get_state(WATERMARK_PREFIX + entity_type), backoff) or None
        states: list[dict[str, Any] | None] = []
        if progress is None:
            mode = plan["mode"]
            since = None
            if mode == INCREMENTAL:
                since = watermark
                if plan.get("since") and (since is None or plan["since"] < since):
                    since = plan["since"]
                if since is None or not self._has_updated_at(entity_type):
                    mode = FULL  # never scanned (or no updated_at): read it all
            conditions = _with_since(conditions, mode, since, self.overlap)
            # one round trip: the count, the lowest and highest ids (a full scan's
            # slices) and the site's time, asked for at once
            asked = [defer.ensureDeferred(self._expected(entity_type, conditions)),
                     defer.ensureDeferred(site_now())]
            if mode == FULL and self.concurrency > 1:
                asked.append(defer.ensureDeferred(self._retrying(
                    lambda: defer.ensureDeferred(self._span(entity_type, conditions)), backoff)))
            answers = await gather(asked)
            expected, now = answers[0], answers[1]
            span = answers[2] if len(answers) > 2 else None
            if span is None and len(answers) <= 2 and self._slice_count(expected) > 1:
                # an incremental scan with many changes is read in slices too
                span = await self._retrying(
                    lambda: defer.ensureDeferred(self._span(entity_type, conditions)), backoff)
            progress = {"mode": mode, "since": since, "max_updated": watermark,
                        "fields": self._field_types(entity_type), "site_now": now,
                        "slices": self._slice_bounds(expected, span)}
            await self._retrying(lambda: self.store.set_state({key: json.dumps(progress)}), backoff)
            states = [None] * len(progress["slices"])
        else:
            mode = progress["mode"]
            conditions = _with_since(conditions, mode, progress.get("since"), self.overlap)
            expected = await self._expected(entity_type, conditions)
            if "slices" not in progress:
                # an earlier release's progress: one slice, its position
                progress["slices"] = [[0, None]]
                states = [{"phase": progress.get("phase", 0), "after_id": progress.get("after_id", 0),
                           "max_updated": progress.get("max_updated")}]
            else:
                for index in range(len(progress["slices"])):
                    raw_slice = await self._retrying(
                        lambda: self.store.get_state(_slice_key(entity_type, index)), backoff)
                    states.append(json.loads(raw_slice) if raw_slice else None)
        progress["generation"] = self.generation  # this process's, for _loaded_fields
        run = _TypeRun(entity_type, mode, conditions, progress, projects, expected, self.reactor.seconds())
        # a plan with a retired slice: its other slices read active rows only
        sliced = any(len(bounds) > 2 for bounds in progress["slices"])
        for index, bounds in enumerate(progress["slices"]):
            low, high, kind = (list(bounds) + [None])[:3]
            phases = _SLICE_PHASES.get(kind, _SLICE_PHASES[None]) if sliced else (0, 1)
            state = states[index] or {"phase": phases[0], "after_id": low, "max_updated": None}
            run.slices.append(_Slice(index, int(low), None if high is None else int(high), state, phases))
        for piece in run.slices:
            if mode == FULL and not piece.state.get("done") and (
                    piece.state["phase"] > piece.phases[0] or int(piece.state["after_id"]) > piece.low):
                piece.candidates = await self._retrying(
                    lambda: defer.ensureDeferred(self._rebuild_candidates(run, piece)), backoff)
        self.current_type = entity_type
        self.running[entity_type] = run.info
        return run

    def _slice_count(self, expected: int | None) -> int:
        if self.concurrency <= 1 or not expected:
            return 1
        return max(1, min(SLICES_PER_WORKER * self.concurrency, -(-expected // (SLICE_PAGES * self.page_size))))

    def _slice_bounds(self, expected: int | None, span: tuple[int, int] | None) -> list[list]:
        """The id slices (``[low, high]``: ``low < id <= high``; the first
        one from 0, the last one open-ended) a type is read in: equal spans
        of its ids on the site, from its lowest id to its highest (`span`;
        a type created late on a large site has its ids far from 0)."""
        count = self._slice_count(expected)
        if count <= 1 or span is None:
            return [[0, None]]
        bottom, top = span
        base = max(0, bottom - 1)
        step = (top - base) // count
        if step < 1:
            return [[0, None]]
        cuts = [base + i * step for i in range(1, count)]
        # the retired rows first, in a slice of their own (usually a page)
        return [[0, None, RETIRED_SLICE]] + [[low, high] for low, high in zip([0] + cuts, cuts + [None])]

    async def _span(self, entity_type: str, conditions: list[dict]) -> tuple[int, int] | None:
        """The lowest and highest ids of a type on the site, active or
        retired (four one-row reads, sent together); None when it has none."""
        ends = await gather([
            defer.ensureDeferred(self._end_id(entity_type, conditions, return_only, direction))
            for return_only in ("active", "retired") for direction in ("asc", "desc")
        ])
        found = [e for e in ends if e is not None]
        return (min(found), max(found)) if found else None

    async def _end_id(self, entity_type: str, conditions: list[dict], return_only: str,
                      direction: str) -> int | None:
        result = await self.upstream.call("read", {
            "type": entity_type, "return_fields": ["id"],
            "filters": {"logical_operator": "and", "conditions": conditions},
            "sorts": [{"field_name": "id", "direction": direction}],
            "paging": {"entities_per_page": 1, "current_page": 1}, "return_only": return_only,
        })
        entities = result.get("entities") or []
        return int(entities[0]["id"]) if entities else None

    async def _scan_slice(self, run: "_TypeRun", piece: "_Slice", backoff: Backoff) -> AsyncIterator[None]:
        """Read one slice of a type, active then retired, a page per step;
        then confirm its deletion candidates and mark it done. The next
        page is asked for as soon as a page arrives (its ids say where the
        next one starts), so the site's latency overlaps the apply: a slice
        keeps one request at the site nearly all the time."""
        if piece.state.get("done"):
            return
        entity_type = run.entity_type
        conditions = piece.conditions(run.conditions)

        def ask(phase_index: int, after: int) -> tuple[int, int, dict[str, Any], defer.Deferred]:
            held: dict[str, Any] = {}

            async def read() -> tuple[list[dict[str, Any]], bool]:
                # the fence's ticket is taken before the read is sent
                held["ticket"] = await self.freshness.ticket()
                return await self._read(entity_type, conditions, PHASES[phase_index][0], after)

            return phase_index, after, held, defer.ensureDeferred(read())

        def drop(pending: tuple[int, int, dict[str, Any], defer.Deferred] | None) -> None:
            if pending is not None:
                pending[3].addErrback(lambda _: None)
                pending[3].cancel()
                if "ticket" in pending[2]:
                    self.freshness.done(pending[2]["ticket"])

        pending: tuple[int, int, dict[str, Any], defer.Deferred] | None = None
        if piece.state["phase"] <= piece.phases[-1]:
            pending = ask(piece.state["phase"], int(piece.state["after_id"]))
        while pending is not None:
            phase_index, after, held, reading = pending
            pending = None
            try:
                entities, has_next = await reading
            except Exception as e:
                if "ticket" in held:
                    self.freshness.done(held["ticket"])
                await self._failed_step(e, backoff)
                pending = ask(phase_index, after)
                continue
            ticket = held["ticket"]
            backoff.reset()
            last = max((int(e["id"]) for e in entities), default=after)
            if has_next:
                pending = ask(phase_index, last)
            elif phase_index + 1 <= piece.phases[-1]:
                pending = ask(phase_index + 1, piece.low)
            if pending is not None:
                # two reactor turns first: the next page's request leaves
                # now, not after the apply (its body is written by a timed
                # call, the socket write happens when the reactor next
                # polls, and an apply holds the reactor)
                await task.deferLater(self.reactor, 0, lambda: None)
                await task.deferLater(self.reactor, 0, lambda: None)
            try:
                page = await self._retrying(
                    lambda: defer.ensureDeferred(
                        self._apply_page(run, piece, entities, has_next, phase_index, after, ticket)),
                    backoff, passing=(StaleRead,),
                )
            except StaleRead as e:
                # older than the store's read-stamp horizon: read the page again
                self._note_error(e)
                drop(pending)
                pending = ask(phase_index, after)
                continue
            except BaseException:
                drop(pending)
                raise
            finally:
                self.freshness.done(ticket)
            if not has_next:
                piece.state = dict(piece.state, phase=phase_index + 1, after_id=piece.low)
            run.count += page
            self.scanned += page
            run.info["entities"] = run.count
            self._report_progress(run)
            try:
                yield None
            except BaseException:
                drop(pending)
                raise
        await self._retrying(lambda: defer.ensureDeferred(self._finish_slice(run, piece)), backoff)
        yield None

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
        """One page, when one of the `concurrency` page slots is free."""
        await self._page_slots.acquire()
        try:
            return await read_page(self.upstream, entity_type, fields or cached_fields(self.schema, entity_type),
                                   conditions, return_only, self.page_size, after_id=after_id)
        finally:
            self._page_slots.release()

    async def _apply_page(
        self, run: "_TypeRun", piece: "_Slice", entities: list[dict[str, Any]], has_next: bool,
        phase_index: int, after: int, ticket: Any,
    ) -> int:
        """Apply one page of a slice (read with `ticket` taken before it was
        asked for), with the slice's new position; the entities applied."""
        entity_type = run.entity_type
        active = PHASES[phase_index][1]
        changes = [to_change(self.schema, entity_type, e, active, SOURCE_SCAN) for e in entities]
        last = max((c.entity_id for c in changes), default=after)
        new_candidates = set(piece.candidates)
        if run.mode == FULL:
            ids = {c.entity_id for c in changes}
            if piece.collects(phase_index):
                upto = last if has_next else piece.ceiling()
                new_candidates |= await self.store.ids_between(
                    entity_type, after, upto, run.projects, active=piece.stored_kind()) - ids
            else:
                new_candidates -= ids
        max_updated = piece.state.get("max_updated")
        for c in changes:
            if isinstance(c.updated_at, str) and (max_updated is None or c.updated_at > max_updated):
                max_updated = c.updated_at
        new_state = dict(piece.state, after_id=last, phase=phase_index, max_updated=max_updated)
        fresh = await self.freshness.apply(
            self.store, changes, ticket, {_slice_key(entity_type, piece.index): json.dumps(new_state)})
        piece.state = new_state
        piece.candidates = new_candidates
        if run.mode == INCREMENTAL and fresh:
            await fill_missing_links(self.store, self.schema, self.upstream, fresh, SOURCE_SCAN,
                                     freshness=self.freshness)
        return len(changes)

    async def _rebuild_candidates(self, run: "_TypeRun", piece: "_Slice") -> set[int]:
        """After a crash: the deletion candidates of the part of a slice
        already done, from id-only reads."""
        entity_type = run.entity_type
        conditions = piece.conditions(run.conditions)
        candidates: set[int] = set()
        progress = piece.state
        first = piece.phases[0]
        limit = piece.ceiling() if progress["phase"] > first else int(progress["after_id"])
        for phase_index, (return_only, _) in enumerate(PHASES):
            if phase_index > progress["phase"] or phase_index not in piece.phases:
                continue
            stop = limit if phase_index == first else int(progress["after_id"])
            after = piece.low
            while after < stop:
                entities, has_next = await self._read(entity_type, conditions, return_only, after, ["id"])
                ids = {int(e["id"]) for e in entities if int(e["id"]) <= stop}
                page_max = max((int(e["id"]) for e in entities), default=after)
                if piece.collects(phase_index):
                    upto = min(page_max if has_next else piece.ceiling(), stop)
                    candidates |= await self.store.ids_between(
                        entity_type, after, upto, run.projects, active=piece.stored_kind()) - ids
                else:
                    candidates -= ids
                if not has_next or page_max >= stop:
                    break
                after = page_max
        return candidates

    async def _finish_slice(self, run: "_TypeRun", piece: "_Slice") -> None:
        """A slice read: rows the site no longer has removed (its deletion
        candidates, confirmed by id), the slice marked done."""
        changes: list[EntityChange] = []
        confirming = run.mode == FULL and bool(piece.candidates)
        # the fence's ticket, before the confirming reads are sent
        ticket = await self.freshness.ticket() if confirming else None
        try:
            if confirming:
                changes = await self._confirm(run.entity_type, piece.candidates)
            state = dict(piece.state, done=True)
            changes = await self.freshness.apply(
                self.store, changes, ticket, {_slice_key(run.entity_type, piece.index): json.dumps(state)})
        finally:
            if ticket is not None:
                self.freshness.done(ticket)
        piece.state = state
        piece.candidates = set()
        removed = sum(1 for c in changes if c.delete)
        if removed:
            self.removed += removed
            log.info("{type}: removed {count} rows the site no longer has", type=run.entity_type, count=removed)

    async def _finish_type(self, run: "_TypeRun") -> None:
        """Every slice of a type read: (incremental) the fingerprint check,
        the watermark, (full) its fields marked ready."""
        entity_type, mode, progress, projects = run.entity_type, run.mode, run.progress, run.projects
        changes: list[EntityChange] = []
        # the fence's ticket, before the reconciling reads are sent
        ticket = await self.freshness.ticket() if mode == INCREMENTAL else None
        try:
            if mode == INCREMENTAL:
                changes = await self._reconcile(entity_type)
            watermark = run.watermark()
            state = {PROGRESS_PREFIX + entity_type: ""}
            state.update({_slice_key(entity_type, piece.index): "" for piece in run.slices})
            if watermark and not projects:
                state[WATERMARK_PREFIX + entity_type] = watermark
            changes = await self.freshness.apply(self.store, changes, ticket, state)
        finally:
            if ticket is not None:
                self.freshness.done(ticket)
        if watermark and not projects:
            self.watermarks[entity_type] = watermark
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
        elapsed = max(self.reactor.seconds() - run.started, 1e-6)
        self.type_scans[entity_type] = {"mode": mode, "entities": run.count, "seconds": round(elapsed, 1),
                                        "finished_at": self.reactor.seconds()}
        self.running.pop(entity_type, None)
        self._report(f"{entity_type}: {run.count} entities loaded ({mode} scan, {elapsed:.1f}s, "
                     f"{len(run.slices)} slices)", force=True)

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
        """Current copies of `ids`, and deletes for those the site lacks
        (the caller applies them with the ticket it took before)."""
        found = await fetch_by_ids(self.upstream, self.schema, entity_type, ids, SOURCE_SCAN)
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
    @property
    def current(self) -> dict[str, Any]:
        """The scan of the type opened first among those running ({} when
        none): what one-line status shows."""
        return next(iter(self.running.values()), {})

    def _report_progress(self, run: "_TypeRun") -> None:
        now = self.reactor.seconds()
        elapsed = max(now - run.started, 1e-6)
        rate = run.count / elapsed
        run.info.update(rate=round(rate, 1))
        if now - self._last_report < self.report_every:
            return
        expected = run.info.get("expected")
        eta = ""
        if expected and rate > 0 and expected > run.count:
            eta = f", ETA {(expected - run.count) / rate:.0f}s"
        total = f"/{expected}" if expected is not None else ""
        self._report(f"{run.entity_type}: {run.count}{total} entities, {rate:.0f}/s{eta}")

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
                "running": bool(self.running),
                "current": dict(self.current) or None,
                # every type being scanned now (several at once)
                "types_running": [dict(info) for info in self.running.values()],
                "concurrency": self.concurrency,
                "last": self.last_scan,
                "watermarks": dict(sorted(self.watermarks.items())),
                "errors": self.errors,
                "last_error": self.last_error,
                "rows_removed": self.removed,
                "rows_reconciled": self.reconciled,
            }
        }


def _slice_key(entity_type: str, index: int) -> str:
    return f"{SLICE_PREFIX}{entity_type}:{index}"


def _with_since(conditions: list[dict], mode: str, since: str | None, overlap: float) -> list[dict]:
    """An incremental scan's filters: rows changed since its watermark
    (less the overlap, for rows committed late)."""
    if mode != INCREMENTAL or not since:
        return conditions
    return conditions + [{
        "path": "updated_at", "relation": "greater_than",
        "values": [_wire_minus(since, overlap + 1)],
    }]


class _Slice:
    """Ids ``low < id <= high`` of a type (``high`` None: no end), read by
    ascending id; `state` (phase, after_id, max_updated, done) is what is
    stored with each page, so a crash resumes the slice where it stopped."""

    def __init__(self, index: int, low: int, high: int | None, state: dict[str, Any],
                 phases: tuple[int, ...] = (0, 1)):
        self.index = index
        self.low = low
        self.high = high
        self.state = state
        #: the `PHASES` it reads: both (a type in one slice), or one
        self.phases = phases
        #: stored ids of this slice not (yet) seen on the site (full scans)
        self.candidates: set[int] = set()

    def ceiling(self) -> int:
        return _END if self.high is None else self.high

    def collects(self, phase_index: int) -> bool:
        """Whether a page of `phase_index` adds deletion candidates (stored
        ids it does not list) rather than clearing them: the active phase,
        or a slice's only phase."""
        return PHASES[phase_index][1] or len(self.phases) == 1

    def stored_kind(self) -> bool | None:
        """Which stored rows its deletion candidates are among: active ones
        (it reads only active rows), retired ones, or all (it reads both)."""
        return PHASES[self.phases[0]][1] if len(self.phases) == 1 else None

    def conditions(self, base: list[dict]) -> list[dict]:
        if self.high is None:
            return base
        return base + [{"path": "id", "relation": "less_than", "values": [self.high + 1]}]


class _TypeRun:
    """One type's scan within a plan: its mode, filters, progress (kept in
    ``scan_progress:<Type>``) and slices."""

    def __init__(self, entity_type: str, mode: str, conditions: list[dict], progress: dict[str, Any],
                 projects: list[int] | None, expected: int | None, started: float):
        self.entity_type = entity_type
        self.mode = mode
        self.conditions = conditions
        self.progress = progress
        self.projects = projects
        self.slices: list[_Slice] = []
        self.next = 0
        self.running = 0
        self.count = 0
        self.started = started
        #: what status and metrics show of it
        self.info: dict[str, Any] = {"type": entity_type, "mode": mode, "entities": 0, "expected": expected,
                                     "started": started}

    def take(self) -> _Slice | None:
        while self.next < len(self.slices):
            piece = self.slices[self.next]
            self.next += 1
            if not piece.state.get("done"):
                self.running += 1
                return piece
        return None

    def has_more(self) -> bool:
        return any(not p.state.get("done") for p in self.slices[self.next:])

    def finished(self) -> bool:
        return self.running == 0 and all(p.state.get("done") for p in self.slices)

    def watermark(self) -> str | None:
        """The newest ``updated_at`` read, or the site's time when the scan
        began if later (a type with no rows gets a watermark too)."""
        marks = [self.progress.get("max_updated"), self.progress.get("site_now")]
        marks += [p.state.get("max_updated") for p in self.slices]
        found = [m for m in marks if isinstance(m, str) and m]
        return max(found) if found else None


class _PlanRunner:
    """Hands out the slices of a plan's types to the workers: the open
    type's first, then the next type is opened; types finish in any order,
    and the plan's pending list (``scan_pending``) keeps those not finished."""

    def __init__(self, scanner: Scanner, plan: dict[str, Any], site_now: defer.Deferred):
        self.scanner = scanner
        self.plan = plan
        self._site_now = site_now
        self._site_now_value: list[str | None] = []
        self.queue = list(plan["types"])
        self.remaining = list(plan["types"])
        self.open: list[_TypeRun] = []
        self.failed = False
        self._lock = defer.DeferredLock()
        #: the next type being opened while the open ones' last slices run
        self._opening: defer.Deferred | None = None
        self._error: Failure | None = None

    async def site_now(self) -> str | None:
        if not self._site_now_value:
            self._site_now_value.append(await self._site_now)
        return self._site_now_value[0]

    async def close(self) -> None:
        """Wait for what was started in the background (its errors were
        met by a worker, or do not matter once the plan is over)."""
        for pending in (self._site_now, self._opening):
            if pending is not None:
                try:
                    await pending
                except Exception:
                    pass

    async def next_slice(self, backoff: Backoff) -> tuple[_TypeRun, _Slice] | None:
        await self._lock.acquire()
        try:
            while True:
                if self._error is not None:
                    self._error.raiseException()
                if self.failed:
                    return None
                for run in self.open:
                    piece = run.take()
                    if piece is not None:
                        if self.queue and self._opening is None and not any(r.has_more() for r in self.open):
                            # the last slice handed out: open the next type
                            # now, so no worker waits for it later
                            self._start_opening(backoff)
                        return run, piece
                if self._opening is not None:
                    await self._opening
                elif self.queue:
                    self._start_opening(backoff)
                else:
                    return None
        finally:
            self._lock.release()

    def _start_opening(self, backoff: Backoff) -> None:
        opening = defer.ensureDeferred(self._open_next(backoff))

        def opened(result: Any) -> None:
            if self._opening is opening:
                self._opening = None
            if isinstance(result, Failure):
                self.failed = True
                self._error = result  # raised to the next worker asking

        self._opening = opening
        opening.addBoth(opened)

    async def _open_next(self, backoff: Backoff) -> None:
        entity_type = self.queue.pop(0)
        run = None
        if entity_type in self.scanner.schema:  # not removed by a schema change meanwhile
            run = await self.scanner._open_type(entity_type, self.plan, self.site_now, backoff)
        if run is None:
            await self.type_done(entity_type, backoff)
        elif run.finished():  # every slice done before a crash: only its end is left
            await self.scanner._retrying(lambda: defer.ensureDeferred(self.scanner._finish_type(run)), backoff)
            await self.type_done(entity_type, backoff)
        else:
            self.open.append(run)

    async def type_done(self, entity_type: str, backoff: Backoff) -> None:
        self.open = [r for r in self.open if r.entity_type != entity_type]
        if entity_type in self.remaining:
            self.remaining.remove(entity_type)
        rest = dict(self.plan, types=list(self.remaining))
        items = {PENDING_KEY: json.dumps(rest) if self.remaining else ""}
        if not self.remaining and self.plan.get("answers_request"):
            items["rescan_requested"] = ""
        await self.scanner._retrying(lambda: self.scanner.store.set_state(items), backoff)
