"""Shadow checks (``--shadow-rate``): a sample of the reads answered locally
is asked again of the site, in the background, and the two answers are
compared -- the cache checking its one rule against the real site while it
runs.

How one check goes:

1. A local answer is sampled (probability ``rate``) after it went to the
   client; nothing of the check runs in the client's request. At most
   `MAX_PENDING` checks are open at once; a sample beyond that is skipped
   (counted).
2. The same read is sent to the site with the cache's own credentials, in
   the gate's ``scan`` lane (`sgcache.site.gate`: after the sync's own
   requests, within ``--site-max-concurrency``). Both answers are compared
   after canonicalisation (JSON with sorted keys: key order is not part of
   an answer, everything else is -- list order, ``1`` against ``1.0``).
3. Equal: agreed (one site request). Different: the difference may be lag
   (the site changed after the local answer was made, or the cache has not
   applied the change yet), so the check settles it. It reads the site's
   newest event id, asks the site again, and reads the newest event id
   again; when both reads give the same id, the site's answer is the one
   as of that event. The check waits until the store has applied every
   event up to it (the stored cursor at or past it, no hole at or below
   it), answers the read locally again (never from kept answers), and
   reads the newest event id once more: unchanged, nothing newer can be in
   the local answer, and the two answers are as of the same event. Still
   different then: a mismatch. Equal: agreed (counted as lag). Events
   keep coming, the store does not catch up within `SETTLE_WAIT`, or the
   site does not answer: unsettled (counted, never reported), after
   `SETTLE_ATTEMPTS` tries.
4. A mismatch: counted (status, metrics), logged at error once per read
   shape with a reproducer (the read's arguments, trimmed, and the first
   difference), and recorded in the store's bounded table
   (`sgcache.store.shadowlog`; ``sgcache shadow report`` lists it). With
   ``--shadow-action passthrough`` reads of that shape pass through from
   then on, until a restart or ``sgcache shadow clear``.

Local `summarize` answers are sampled the same way.

Where NULLs fall in a sort is the one read corner the cache answers without
public evidence (`shared/PROTOCOL.md`, "Read corners"; the store sorts them
as PostgreSQL does, last ascending), so reads sorted on a field other than
``id`` are sampled `SORTED_WEIGHT` times as often. What settles it: checks
whose answer shows the order of NULLs (`orders_nulls`: the first sort field
returned, null in some entities and not in others) are counted apart
(``null_order``: agreed, mismatched). Agreements on a real site confirm the
rule; one mismatch shows the site's rule in its reproducer. A read shape (`shape`)
is the read's type, the fields its filters and sorts name and the fields it
returns (a summarize's: the fields it summarizes and groups by): never a
value. Answers made on behalf of a
user are compared with the site's answer to the cache's own credentials,
which is what the cache serves them (``--serve-users`` skips the site's
per-user rules).
"""

from __future__ import annotations

import json
import os
import random
import socket
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from twisted.internet import defer, task

from sgcache.logs import clip, logger
from sgcache.read.reasons import PassThrough
from sgcache.site.client import UpstreamError
from sgcache.site.faults import Fault
from sgcache.site.gate import SCAN
from sgcache.web.shapes import describe

log = logger(__name__)

#: checks open at once; samples beyond are skipped
MAX_PENDING = 32
#: tries to see the site and the store at the same event
SETTLE_ATTEMPTS = 4
#: seconds a try waits for the store to apply the site's newest event
SETTLE_WAIT = 120.0
#: seconds between looks at the store's cursor while waiting
CURSOR_LOOK = 0.25
#: characters of a read's arguments kept in a reproducer
REPRODUCER_CHARS = 2000
#: the local answers whose canonical form is kept (`ShadowChecks._locals`),
#: in characters of answer and canonical form together
LOCALS_CHARS = 8 * 2**20
#: reads sorted on a field other than id are sampled this many times more
#: often (capped at every one): where NULLs fall in a sort is the read
#: corner nobody outside Autodesk has shown (the store uses PostgreSQL's
#: rule, NULLs last ascending), so it is watched first
SORTED_WEIGHT = 10.0

ACTIONS = ("log", "passthrough")

_NEWEST_EVENT = {
    "type": "EventLogEntry",
    "return_fields": ["id"],
    "filters": {"logical_operator": "and", "conditions": []},
    "sorts": [{"field_name": "id", "direction": "desc"}],
    "paging": {"entities_per_page": 1, "current_page": 1},
    "return_only": "active",
}


def shape(args: Any, method: str = "read") -> str:
    """A read's shape: `describe` (type, filter and sort fields) and the
    fields it returns; a summarize's: "summarize", the same and the fields
    it summarizes and groups by."""
    text = describe(args)
    fields = args.get("return_fields") if isinstance(args, dict) else None
    if method == "summarize" and isinstance(args, dict):
        text = "summarize " + text
        fields = [item.get("field") for key in ("summaries", "grouping")
                  for item in (args.get(key) if isinstance(args.get(key), list) else [])
                  if isinstance(item, dict)]
    if isinstance(fields, list):
        names = sorted({str(f)[:80] for f in fields})
        if names:
            text += " | fields: " + ", ".join(names[:24]) + (" ..." if len(names) > 24 else "")
    return text


def sorted_on_nullable(args: Any) -> str | None:
    """The first sort field of a read, when it is not ``id`` (its values
    may be NULL)."""
    sorts = args.get("sorts") if isinstance(args, dict) else None
    if isinstance(sorts, list) and sorts and isinstance(sorts[0], dict):
        name = sorts[0].get("field_name")
        if isinstance(name, str) and name != "id":
            return name
    return None


def orders_nulls(args: Any, results: Any) -> bool:
    """Whether this answer's order shows where NULLs sort: its first sort
    field is returned, and null in some entities and not in others."""
    name = sorted_on_nullable(args)
    entities = results.get("entities") if isinstance(results, dict) else None
    if name is None or not isinstance(entities, list):
        return False
    values = [e.get(name) for e in entities if isinstance(e, dict) and name in e]
    return any(v is None for v in values) and any(v is not None for v in values)


def canonical(value: Any) -> str:
    """An answer as compared: JSON with sorted keys."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def first_difference(local: Any, site: Any, path: str = "") -> str:
    """Where two answers first differ, and how: ``entities[3].code: local
    'x', site 'y'``."""
    if isinstance(local, dict) and isinstance(site, dict):
        for key in sorted(set(local) | set(site), key=str):
            if key not in site:
                return f"{path}{'.' if path else ''}{key}: only in the local answer"
            if key not in local:
                return f"{path}{'.' if path else ''}{key}: only in the site's answer"
            if canonical(local[key]) != canonical(site[key]):
                return first_difference(local[key], site[key], f"{path}{'.' if path else ''}{key}")
    elif isinstance(local, list) and isinstance(site, list):
        for i, (a, b) in enumerate(zip(local, site)):
            if canonical(a) != canonical(b):
                return first_difference(a, b, f"{path}[{i}]")
        if len(local) != len(site):
            return f"{path or 'answer'}: {len(local)} items locally, {len(site)} at the site"
    return f"{path or 'answer'}: local {clip(canonical(local), 200)}, site {clip(canonical(site), 200)}"


class SiteFault:
    """The site answered a read with a fault (compared like an answer)."""

    def __init__(self, fault: Fault):
        self.answer = {"exception": True, "message": fault.message, "error_code": fault.error_code}


class ShadowChecks:
    """The sample, the open checks, their figures, and the shapes found to
    disagree."""

    def __init__(
        self,
        reactor: Any,
        upstream: Any,
        local_answer: Callable[[str, Any], Awaitable[Any]],
        applied_through: Callable[[], Awaitable[tuple[int | None, set[int]]]],
        record: Callable[[dict[str, Any]], Awaitable[Any]],
        rate: float = 0.01,
        action: str = "log",
        draw: Callable[[], float] = random.random,
    ):
        self.reactor = reactor
        self.upstream = upstream
        #: (method, args): the read or summarize answered from the store
        #: again, never from kept answers (raises `PassThrough` when it no
        #: longer can be)
        self.local_answer = local_answer
        #: (the stored event cursor, the holes below it)
        self.applied_through = applied_through
        #: keeps one mismatch in the store's table
        self.record = record
        self.rate = rate
        self.action = action
        self.draw = draw
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        #: outcome -> count: agreed, lagged (agreed once settled), mismatched,
        #: unsettled, skipped (too many open), failed (a bug; logged)
        self.figures: dict[str, int] = dict.fromkeys(
            ("sampled", "agreed", "lagged", "mismatched", "unsettled", "skipped", "failed"), 0)
        #: checks whose answer put NULLs and values of its first sort field
        #: in an order (`orders_nulls`), by outcome: agreements are the
        #: evidence that settles the NULL-ordering corner for the site
        self.null_order: dict[str, int] = {"agreed": 0, "mismatched": 0}
        #: requests this made to the site
        self.site_requests = 0
        self.pending = 0
        #: shape -> mismatches confirmed since the start (or `clear`)
        self.confirmed: dict[str, int] = {}
        self._open: set[defer.Deferred] = set()
        #: local answer bytes -> their canonical results, least recently
        #: checked first, bounded by `LOCALS_CHARS` (both counted)
        self._locals: OrderedDict[bytes, str] = OrderedDict()
        self._locals_chars = 0

    # -- the request path --------------------------------------------------
    def refuses(self, args: Any, method: str = "read") -> bool:
        """With ``--shadow-action passthrough``: reads of a shape with a
        confirmed mismatch pass through."""
        return self.action == "passthrough" and bool(self.confirmed) and shape(args, method) in self.confirmed

    def sample(self, args: Any, body: bytes, method: str = "read") -> None:
        """Maybe check this local answer (`body`: the JSON sent) to a read
        or a summarize."""
        rate = self.rate
        if method == "read" and sorted_on_nullable(args) is not None:
            rate = min(1.0, rate * SORTED_WEIGHT)
        if rate <= 0 or self.draw() >= rate:
            return
        self.figures["sampled"] += 1
        if self.pending >= MAX_PENDING:
            self.figures["skipped"] += 1
            return
        self.pending += 1
        d = task.deferLater(self.reactor, 0, lambda: defer.ensureDeferred(self._check(method, args, body)))
        self._open.add(d)

        def done(result: Any) -> None:
            self.pending -= 1
            self._open.discard(d)

        d.addBoth(done)

    def clear(self) -> int:
        """Forget the confirmed shapes (their reads are served locally
        again); returns how many there were."""
        count = len(self.confirmed)
        self.confirmed.clear()
        return count

    def stop(self) -> None:
        """Drop the open checks (the daemon stops)."""
        for d in list(self._open):
            d.cancel()

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rate": self.rate, "action": self.action, "pending": self.pending,
                               "checked": sum(self.figures[k] for k in ("agreed", "lagged", "mismatched")),
                               "site_requests": self.site_requests, "shapes_mismatched": len(self.confirmed),
                               "null_order": dict(self.null_order)}
        out.update(self.figures)
        return out

    # -- one check ---------------------------------------------------------
    async def _check(self, method: str, args: Any, body: bytes) -> None:
        try:
            local = self._canonical_local(body)
            await self._turn()
            site = await self._site(method, args)
            if site is None:
                self.figures["unsettled"] += 1
                return
            await self._turn()
            if local == canonical(site):
                self.figures["agreed"] += 1
                if method == "read" and orders_nulls(args, site):  # the same answer as the local one
                    self.null_order["agreed"] += 1
                return
            nulls = method == "read" and orders_nulls(args, json.loads(local))
            outcome = await self._settle(method, args)
            if outcome is None:
                self.figures["unsettled"] += 1
                log.debug("a shadow check of {shape} could not settle a difference", shape=shape(args, method))
            elif outcome[0] == outcome[1]:
                self.figures["lagged"] += 1
            else:
                self.figures["mismatched"] += 1
                if nulls:
                    self.null_order["mismatched"] += 1
                await self._mismatch(method, args, json.loads(outcome[0]), json.loads(outcome[1]))
        except defer.CancelledError:
            raise
        except Exception:
            self.figures["failed"] += 1
            log.failure("a shadow check failed: {args}", args=clip(canonical(args), 300))

    def _canonical_local(self, body: bytes) -> str:
        """The canonical form of a local answer's results (`body`: the JSON
        sent), from `_locals` when the same answer was checked before (a
        kept answer is the same bytes each time it is sent)."""
        known = self._locals.get(body)
        if known is not None:
            self._locals.move_to_end(body)
            return known
        text = canonical(json.loads(body).get("results"))
        self._locals[body] = text
        self._locals_chars += len(body) + len(text)
        while self._locals_chars > LOCALS_CHARS and len(self._locals) > 1:
            old, old_text = self._locals.popitem(last=False)
            self._locals_chars -= len(old) + len(old_text)
        return text

    async def _turn(self) -> None:
        """Let the reactor serve what came in meanwhile (a client's request
        waits for no more than one step of a check: a decode, an encode)."""
        await task.deferLater(self.reactor, 0, lambda: None)

    async def _site(self, method: str, args: Any) -> Any:
        """The site's answer (a fault as `SiteFault.answer`), None when it
        does not answer."""
        self.site_requests += 1
        try:
            return await self.upstream.call(method, args, lane=SCAN)
        except Fault as fault:
            return SiteFault(fault).answer
        except UpstreamError as e:
            log.debug("a shadow check's read got no answer from the site: {error}", error=str(e))
            return None

    async def _newest_event(self) -> int | None:
        self.site_requests += 1
        try:
            result = await self.upstream.call("read", _NEWEST_EVENT, lane=SCAN)
        except (Fault, UpstreamError) as e:
            log.debug("a shadow check could not read the newest event: {error}", error=str(e))
            return None
        entities = result.get("entities") if isinstance(result, dict) else None
        return int(entities[0]["id"]) if entities else 0

    async def _settle(self, method: str, args: Any) -> tuple[str, str] | None:
        """(local, site) answers as of one event, canonical; None when no
        try found the two at the same event."""
        for attempt in range(SETTLE_ATTEMPTS):
            if attempt:
                await task.deferLater(self.reactor, min(2.0 ** attempt, 10.0), lambda: None)
            before = await self._newest_event()
            site = await self._site(method, args)
            after = await self._newest_event()
            if before is None or site is None or after is None or before != after:
                continue
            if not await self._applied(after):
                continue
            try:
                local = await self.local_answer(method, args)
            except PassThrough:
                return None  # no longer answered locally: nothing to compare
            if await self._newest_event() != after:
                continue
            return canonical(local), canonical(site)
        return None

    async def _applied(self, event_id: int) -> bool:
        """Wait (up to `SETTLE_WAIT`) until the store holds every event up to
        `event_id`."""
        deadline = self.reactor.seconds() + SETTLE_WAIT
        while True:
            cursor, holes = await self.applied_through()
            if cursor is not None and cursor >= event_id and not any(h <= event_id for h in holes):
                return True
            if self.reactor.seconds() >= deadline:
                return False
            await task.deferLater(self.reactor, CURSOR_LOOK, lambda: None)

    async def _mismatch(self, method: str, args: Any, local: Any, site: Any) -> None:
        read_shape = shape(args, method)
        difference = first_difference(local, site)
        reproducer = clip(canonical(args), REPRODUCER_CHARS)
        first = read_shape not in self.confirmed
        self.confirmed[read_shape] = self.confirmed.get(read_shape, 0) + 1
        if first:
            log.error(
                "shadow check: a local answer differs from the site's, as of the same event ({shape}): "
                "{difference}; reproduce with {method} {args}{then}", method=method,
                shape=read_shape, difference=difference, args=reproducer,
                then="; reads of this shape pass through from now on (--shadow-action passthrough)"
                if self.action == "passthrough" else "")
        else:
            log.debug("shadow check: {shape} differs from the site's again: {difference}",
                      shape=read_shape, difference=difference)
        try:
            await self.record({"shape": read_shape, "args": reproducer, "difference": difference,
                               "at": self.reactor.seconds(), "node": self.node})
        except Exception as e:
            log.warn("could not record a shadow mismatch in the store: {error}", error=clip(str(e), 300))
