"""The cache's answer to each RPC: serve `read` from the store when the
planner says it can be answered exactly and the caller is known to the site
(again from memory when the same read was answered since the store last
changed: `answers`), and `summarize` the same way (`sgcache.read.summarize`,
never kept); pass everything else through; write back the results of
writes; keep the site's `info` in memory.

Local reads are served only to credentials the site has accepted
recently, within the studio's policy (`sgcache.web.credentials`). Requests made
on behalf of a user (`sudo_as_login`, user logins, session tokens) pass
through, since the site applies that user's permission rules, unless
``--serve-users`` names them.

When not sure, pass through -- without exception: a read the planner
refuses, a read over its time budget (`sgcache.web.budget`), and any error in
the local read path (logged at error, counted) all go to the site.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from typing import Any, Awaitable, Callable

from twisted.internet import defer
from twisted.web.http_headers import Headers

from sgcache import __version__
from sgcache.web.answers import Answers
from sgcache.web.budget import SLOW_SHARE, SlowShapes
from sgcache.web.credentials import Credentials, check_args, credential_parts
from sgcache.web.shadow import ShadowChecks
from sgcache.web.shapes import ReadShapes
from sgcache.site.faults import ERR_AUTH, ERR_UPSTREAM, Fault
from sgcache.sync.freshness import Freshness
from sgcache.read.planner import Catalog, PassThrough, PlanCache, request_key
from sgcache.read.reader import execute
from sgcache.read.reasons import REASONS, category
from sgcache.read.summarize import plan_summary, run_summary
from sgcache.web.rpc import JSON_CONTENT_TYPE, RawReply, encode_json
from sgcache.store.interface import ReadTimeout
from sgcache.site.client import IDEMPOTENT_METHODS, Upstream, UpstreamError
from sgcache.sync.writeback import WRITE_METHODS, WriteBack
from sgcache.logs import clip, logger
from sgcache.schema import Schema
from sgcache.schema.types import format_timestamp, is_cacheable

log = logger(__name__)

#: default memory for answers to repeated reads (`Answers`)
ANSWERS_BYTES = 64 * 2**20

#: methods counted by name (`counters`); any other counts as "other"
COUNTED_METHODS = IDEMPOTENT_METHODS | WRITE_METHODS

_JSON_HEADERS = [(b"content-type", [JSON_CONTENT_TYPE])]


def _trimmed(args: Any, limit: int = 300) -> str:
    """A read's arguments for a log line: JSON, ASCII, at most `limit` chars."""
    try:
        text = json.dumps(args, sort_keys=True, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


class Cache:
    """Everything the RPC endpoint needs to answer a call."""

    def __init__(
        self,
        reactor: Any,
        schema: Any,
        store: Any,
        upstream: Upstream,
        now: Any = None,
        tz: datetime.tzinfo | None = None,
        freshness: Freshness | None = None,
        answers: Answers | None = None,
        credentials: Credentials | None = None,
        slow: SlowShapes | None = None,
    ):
        self.reactor = reactor
        #: the site's clock and time zone, for relative date filters
        self.now = now or (
            lambda: datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.timezone.utc)
        )
        self.tz = tz or datetime.timezone.utc
        self.schema = schema
        self.store = store
        self.upstream = upstream
        self.catalog = Catalog(schema, {})
        self._plans = PlanCache(self.catalog, store.dialect)
        #: answers to repeated reads, while the store's read generation holds
        self.answers = answers if answers is not None else Answers(ANSWERS_BYTES)
        self.writeback = WriteBack(schema, store, upstream, freshness)
        self.info: dict[str, Any] | None = None
        self.info_fetched_at: float | None = None
        #: `info` is the copy kept in the store (the site not asked since start)
        self.info_kept = False
        #: called with the site's info when it changed (kept in the store)
        self.on_info: Any = None
        #: every cached type loaded (reads are answered per field as soon as
        #: their fields are ready, whatever this says)
        self.serving = False
        self.loading_message = "initial load not started"
        #: held while the catalog is rebuilt and while a schema change is
        #: applied (the schema keeper), so a catalog never mixes the two
        self.schema_lock = defer.DeferredLock()
        #: per type, moved each time a schema change drops or replaces some
        #: of its storage (a read of it that ran meanwhile passes through)
        self._storage_generation: Counter[str] = Counter()
        #: requests by method (known methods only), and read outcomes
        self.counters: Counter[str] = Counter()
        #: reads passed through, by reason phrase (`sgcache.read.reasons.REASONS`)
        self.passthrough_reasons: Counter[str] = Counter()
        #: the script credentials served locally
        self.credentials = credentials if credentials is not None else Credentials(reactor)
        #: read shapes over the read budget recently
        self.slow = slow if slow is not None else SlowShapes(reactor)
        #: seconds a local read may take (the store stops it then); None: no limit
        self.read_budget: float | None = None
        #: called with (method, outcome, reason, seconds) per request (metrics)
        self.observe: Any = None
        #: callables adding to the `sgcache` block of info (poller, scanner)
        self.status_sources: list[Any] = []
        #: reads by shape (type, filter and sort fields), local or not
        self.shapes = ReadShapes()
        #: a daemon that does not sync (several on one PostgreSQL store):
        #: says, after a local read, whether the stored schema is still the
        #: one its catalog was built on (another daemon changes it)
        self.storage_check: Callable[[], Awaitable[bool]] | None = None
        #: several daemons serving: the store's data generation, read after
        #: it is asked for (`sgcache.web.storagecheck.FreshRead`); kept
        #: answers are reused only while it holds
        self.shared_generation: Callable[[], Any] | None = None
        #: the shadow checks of local answers against the site (--shadow-rate)
        self.shadow: ShadowChecks | None = None

    # -- state -------------------------------------------------------------
    async def refresh_catalog(self) -> None:
        """Serve the fields the store has ready now."""
        async with self.schema_lock:
            await self.refresh_catalog_locked()

    async def refresh_catalog_locked(self) -> None:
        """`refresh_catalog` for a caller already holding `schema_lock`."""
        states = await self.store.field_states()
        ready = {
            etype: {f for f, state in fields.items() if state == "ready"}
            for etype, fields in states.items()
        }
        if self.catalog.schema is self.schema and self.catalog.ready == ready:
            return  # nothing new to serve: plans and kept answers stay good
        self._use_catalog(Catalog(self.schema, ready))

    def use_schema(self, schema: Schema, unserved: dict[str, set[str]]) -> None:
        """Answer by `schema` from now on, no longer serving `unserved`
        (type -> fields whose storage is about to be dropped or replaced;
        ``{"*"}``: the whole type). Called before the store changes: a read
        planned on the old catalog that finishes after this passes through
        (`_read`)."""
        self.schema = schema
        self.writeback.schema = schema
        for etype in unserved:
            self._storage_generation[etype] += 1
        ready = {}
        for etype, fields in self.catalog.ready.items():
            gone = unserved.get(etype, set())
            if etype in schema and "*" not in gone:
                ready[etype] = {f for f in fields if f not in gone and schema.get_field(etype, f) is not None}
        self._use_catalog(Catalog(schema, ready))

    def _use_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._plans = PlanCache(catalog, self.store.dialect)
        self.answers.clear()

    def field_readiness(self) -> list[tuple[str, list[str], list[str]]]:
        """Per cached type: (name, its cached fields, those not served yet)."""
        out = []
        for entity in self.schema:
            ready = self.catalog.ready.get(entity.name, set())
            cached = sorted(f for f, spec in entity.fields.items() if is_cacheable(spec.data_type))
            out.append((entity.name, cached, [f for f in cached if f not in ready]))
        return out

    def not_ready(self) -> dict[str, list[str]]:
        """type -> its cached fields not served yet (loading)."""
        return {name: waiting for name, _, waiting in self.field_readiness() if waiting}

    async def refresh_info(self) -> None:
        try:
            info = await self.upstream.call("info")
        except (UpstreamError, Fault) as e:
            log.warn("could not refresh the site's info: {error}", error=str(e))
            return
        if isinstance(info, dict):
            changed = info != self.info
            self.info = info
            self.info_fetched_at = self.reactor.seconds()
            self.info_kept = False
            if changed and self.on_info is not None:
                self.on_info(info)

    def max_page_size(self) -> int:
        if self.info and isinstance(self.info.get("api_max_entities_per_page"), int):
            return self.info["api_max_entities_per_page"]
        return 500

    # -- dispatch ----------------------------------------------------------
    async def handle(self, method: str, auth: Any, args: Any, body: bytes, headers: Headers,
                     note: dict[str, str] | None = None) -> Any:
        """The answer to one call. `note`, when given, is filled with how it
        was answered (for the metrics): ``outcome`` (local, reused,
        passthrough) and, for a pass-through, ``reason`` (a category of
        `sgcache.read.reasons`, or ``write`` / ``not a read``); a local
        read's ``request`` key."""
        note = note if note is not None else {}
        self.counters[method if method in COUNTED_METHODS else "other"] += 1
        if method == "info":
            note["outcome"] = "local" if self.info is not None else "passthrough"
            return {"results": await self._info()}
        if method == "summarize":
            summary = await self._summary(auth, args, note)
            if summary is not None:
                if self.shadow is not None:
                    self.shadow.sample(args, summary.body, method)
                return summary
            note["outcome"] = "passthrough"
            return await self._passthrough(method, auth, args, body, headers)
        if method == "read":
            refusal, key = self._who(auth)
            if refusal is not None:
                self._count_passthrough(refusal)
                note["reason"] = category(refusal)
            else:
                try:
                    reply = await self._read(args, note)
                except PassThrough as p:
                    self._count_passthrough(p.phrase, p.reason)
                    note["reason"] = p.category
                except Exception:
                    # when not sure, pass through: a bug in the local path
                    # must cost a round trip, never a wrong or failed answer
                    self.counters["read.failed"] += 1
                    self._count_passthrough("local read failed")
                    note["reason"] = category("local read failed")
                    log.failure("a local read failed and passes through: {args}", args=_trimmed(args))
                else:
                    self.shapes.count(args, True, note.get("request"))
                    if self.credentials.due(key):
                        self._check_again(key, auth, args)
                    if self.shadow is not None:
                        self.shadow.sample(args, reply.body)
                    return reply
            self.shapes.count(args, False)
        else:
            note["reason"] = "write" if method in WRITE_METHODS else "not a read"
        note["outcome"] = "passthrough"
        return await self._passthrough(method, auth, args, body, headers)

    def _who(self, auth: Any) -> tuple[str | None, Any]:
        """(why the caller's reads pass through, or None; its credentials' key)."""
        key = self.credentials.key(auth)
        if key is None:
            return "request on behalf of a user", None
        if not self.credentials.allowed(auth):
            if self.credentials.is_user(auth):
                return "user not served locally (policy)", key
            return "script not served locally (policy)", key
        if not self.credentials.vouched(key):
            return "credentials not yet vouched for by the site", key
        return None, key

    def _check_again(self, key: str, auth: dict, args: Any) -> None:
        """Have the site check these credentials again, in the background
        (the client already has its answer)."""
        entity_type = args.get("type") if isinstance(args, dict) else None
        if not isinstance(entity_type, str):
            return
        self.credentials.checking(key, True)
        defer.ensureDeferred(self._verify(key, credential_parts(auth), entity_type))

    async def _verify(self, key: str, auth: dict, entity_type: str) -> None:
        user = self.credentials.is_user(auth)
        who = _who_is(auth)
        try:
            await self.upstream.call("read", check_args(entity_type), auth=auth)
        except Fault as fault:
            if fault.error_code == ERR_AUTH:
                self.credentials.refused(key)
                log.info("the site refused the credentials of {who}; their reads pass through", who=who)
            else:
                # (a user the site no longer lets read the type: not served)
                if user:
                    self.credentials.refused(key)
                log.info("the site did not renew the credentials of {who}: {message}",
                         who=who, message=clip(fault.message))
        except UpstreamError as e:
            log.info("could not check a script's credentials again: {error}", error=clip(str(e)))
        except Exception:
            log.failure("checking a script's credentials again failed")
        else:
            self.credentials.accepted(key, user)
        finally:
            self.credentials.checking(key, False)

    async def local_answer(self, method: str, args: Any) -> Any:
        """The `results` of a read or summarize answered from the store
        now, never from a kept answer, uncounted (the shadow checks' second
        look); raises PassThrough as the request would."""
        reply = await (self._read(args, keep=False) if method == "read" else self._summarize(args, keep=False))
        return json.loads(reply.body)["results"]

    async def _read(self, args: Any, note: dict[str, str] | None = None, keep: bool = True) -> RawReply:
        """A read answered from the store (or raises PassThrough): reused
        when the same read was answered since the store last changed
        (`keep`: False, neither reused nor kept nor counted)."""
        if keep and self.shadow is not None and self.shadow.refuses(args):
            raise PassThrough("read shape the site disagreed with (shadow check)")
        page_size = self.max_page_size()
        request = request_key(args, page_size)
        answers = self.answers
        local, generation = await self._generation() if keep else (None, None)
        body = answers.get(request, generation)
        if note is not None:
            note["outcome"] = "reused" if body is not None else "local"
            note["request"] = request
        if body is None:
            catalog, plans = self.catalog, self._plans
            plan = plans.plan(args, page_size, now=self.now, tz=self.tz, key=request)
            result = await self._run_local("read", args, plan, catalog, lambda: execute(self.store, plan, catalog))
            body = encode_json({"results": result})
            # kept only when nothing moved while it was read: the store, the
            # catalog (refresh_catalog), the clock (relative dates)
            if (plan.timeless and generation is not None and plans is self._plans
                    and self.store.read_generation() == local):
                answers.put(request, generation, body)
        if keep:
            self.counters["read.local"] += 1
        return RawReply(200, _JSON_HEADERS, body)

    async def _generation(self) -> tuple[Any, Any]:
        """(the store's read generation, the generation a kept answer is
        valid at now): (None, None) when nothing is kept or reused."""
        generation = local = self.store.read_generation() if self.answers.enabled else None
        if generation is not None and self.shared_generation is not None:
            # several daemons: the store's own generation, read after the
            # request came (a write another daemon committed before it
            # moved it, whether or not its notification arrived yet)
            try:
                generation = (generation, await self.shared_generation())
            except Exception:
                generation = None
        return local, generation

    async def _summary(self, auth: Any, args: Any, note: dict[str, str]) -> RawReply | None:
        """A `summarize` answered from the store (`sgcache.read.summarize`)
        under the guards of a local read: credentials vouched for, the
        types loaded, the read budget, any error passes through. None: it
        passes through (`note` says why)."""
        refusal, key = self._who(auth)
        if refusal is not None:
            self._count_passthrough(refusal)
            note["reason"] = category(refusal)
            return None
        try:
            reply = await self._summarize(args, note=note)
        except PassThrough as p:
            self._count_passthrough(p.phrase, p.reason)
            note["reason"] = p.category
            return None
        except Exception:
            self.counters["read.failed"] += 1
            self._count_passthrough("local read failed")
            note["reason"] = category("local read failed")
            log.failure("a local summarize failed and passes through: {args}", args=_trimmed(args))
            return None
        note.setdefault("outcome", "local")
        if self.credentials.due(key):
            self._check_again(key, auth, args)
        return reply

    async def _summarize(self, args: Any, keep: bool = True, note: dict[str, str] | None = None) -> RawReply:
        """A summarize answered from the store (or raises PassThrough),
        reused like a read's answer (`_read`) while the store is unchanged."""
        if keep and self.shadow is not None and self.shadow.refuses(args, "summarize"):
            raise PassThrough("read shape the site disagreed with (shadow check)")
        text = request_key(args, 0)
        request = None if text is None else (text[0], "summarize")
        local, generation = await self._generation() if keep else (None, None)
        body = self.answers.get(request, generation)
        if note is not None:
            note["outcome"] = "reused" if body is not None else "local"
        if body is None:
            catalog = self.catalog
            plan = plan_summary(args, catalog, self.store.dialect, now=self.now, tz=self.tz)
            result = await self._run_local("summarize", args, plan, catalog,
                                           lambda: run_summary(self.store, plan, catalog))
            body = encode_json({"results": result})
            if (plan.timeless and generation is not None and catalog is self.catalog
                    and self.store.read_generation() == local):
                self.answers.put(request, generation, body)
        if keep:
            self.counters["summarize.local"] += 1
        return RawReply(200, _JSON_HEADERS, body)

    async def _run_local(self, what: str, args: Any, plan: Any, catalog: Catalog,
                         run: Callable[[], Awaitable[Any]]) -> Any:
        """`run` (a local read or summarize of `plan`) under the read budget;
        raises PassThrough when its shape is over budget, when it goes over,
        and when a schema change ran across it."""
        storage = [self._storage_generation[t] for t in sorted(plan.types)]
        shape = hash(plan.sql)
        if shape in self.slow:
            raise PassThrough("read shape over its time budget recently")
        started = self.reactor.seconds()
        try:
            result = await run()
        except ReadTimeout:
            self.slow.add(shape)
            log.warn("a {what} of {type} went over the read budget; it and others of its shape pass "
                     "through for {penalty:.0f} s: {args}", what=what,
                     type=plan.entity_type, penalty=self.slow.penalty, args=_trimmed(args))
            raise PassThrough("read over its time budget") from None
        if self.catalog is not catalog and storage != [self._storage_generation[t] for t in sorted(plan.types)]:
            # a schema change dropped or replaced storage of a type it
            # reads while it ran: its plan may have read a column going
            # away, or a new empty one of the same name
            raise PassThrough("schema changed during the read")
        if self.storage_check is not None and not await self.storage_check():
            # the same, made by another daemon (the one that syncs)
            raise PassThrough("schema changed during the read")
        took = self.reactor.seconds() - started
        if (self.read_budget is not None and took > self.read_budget * SLOW_SHARE
                and getattr(self.store, "reads_block", False)):
            self.slow.add(shape, stopped=False)
            log.info("a {what} of {type} took {ms:.0f} ms; others of its shape pass through for "
                     "{penalty:.0f} s: {args}", what=what, type=plan.entity_type, ms=took * 1000,
                     penalty=self.slow.penalty, args=_trimmed(args))
        return result

    def _count_passthrough(self, phrase: str, detail: str | None = None) -> None:
        if phrase not in REASONS:
            phrase = "other"
        self.passthrough_reasons[phrase] += 1
        log.debug("read passes through: {reason}", reason=clip(detail or phrase, 300))

    async def _passthrough(self, method: str, auth: Any, args: Any, body: bytes, headers: Headers) -> RawReply:
        self.counters["passthrough"] += 1
        response = await self.upstream.forward(method, body, headers)
        decoded = None
        if response.status == 200:
            try:
                # the body goes to the client as the site sent it (gzipped
                # when the client asked); the cache reads it inflated
                text = response.decoded()
                decoded = json.loads(text) if text else None
            except (ValueError, RecursionError):
                decoded = None
        fault = isinstance(decoded, dict) and bool(decoded.get("exception"))
        key = self.credentials.key(auth)
        if key is not None:
            if fault and decoded.get("error_code") == ERR_AUTH:
                self.credentials.refused(key)
            elif response.status == 200 and decoded is not None and not fault:
                self.credentials.accepted(key, self.credentials.is_user(auth))
        if method in WRITE_METHODS and response.status == 200 and isinstance(decoded, dict) and not fault:
            await self.writeback.after(method, args, decoded.get("results"))
        return RawReply(response.status, response.headers, response.body, relayed=True)

    async def relay(self, verb: str, target: bytes, body: Any, headers: Headers) -> Any:
        """A non-RPC request relayed to the site (see `Upstream.relay`)."""
        try:
            return await self.upstream.relay(verb, target, body, headers)
        except UpstreamError as e:
            raise Fault(f"sgcache: the Shotgun site is unreachable ({e})", ERR_UPSTREAM)

    async def _info(self) -> dict[str, Any]:
        if self.info is None:
            await self.refresh_info()
        if self.info is None:
            health = self.upstream.health
            since = health.header()
            raise Fault(
                "sgcache: the Shotgun site is unreachable"
                + (f" ({since.decode('ascii')}: {health.last_error})" if since else "")
                + " and its info was never fetched; nothing can be served until it answers once",
                ERR_UPSTREAM,
            )
        info = dict(self.info)
        try:
            info["sgcache"] = self.status()
        except Exception:
            # info must always answer: every client calls it when it starts
            log.failure("the sgcache block of info could not be made")
            info["sgcache"] = {"version": __version__, "serving": self.serving, "status_error": True}
        return info

    def site_status(self) -> dict[str, Any]:
        """Whether the site answers, since when not, and why."""
        health = self.upstream.health
        down = health.reachable is False
        return {
            "reachable": health.reachable,
            "unreachable_since": format_timestamp(health.down_since) if down else None,
            "last_error": health.last_error if down else None,
            "last_answer_at": format_timestamp(health.last_ok_at),
            "errors": dict(health.errors),
            # local answers given because the site, unreachable, cannot be
            # asked about the credentials (the outage rule)
            "outage_reads": self.credentials.outage_reads,
        }

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "serving": self.serving,
            "store": self.store.dialect,
            "state": self.loading_message,
            "info_age_seconds": (
                None if self.info_fetched_at is None else round(self.reactor.seconds() - self.info_fetched_at, 1)
            ),
            "info_from": None if self.info is None else ("kept copy" if self.info_kept else "site"),
            "site": self.site_status(),
            "reads_local": self.counters.get("read.local", 0),
            "summaries_local": self.counters.get("summarize.local", 0),
            # repeated reads answered with the bytes of an earlier answer
            "reads_reused": self.answers.hits,
            "answers_kept": len(self.answers),
            "answers_bytes": self.answers.bytes,
            "passthrough": self.counters.get("passthrough", 0),
            # why reads went upstream: reason -> count (fixed phrases only,
            # sgcache.read.reasons; never a client's text)
            "passthrough_reasons": dict(self.passthrough_reasons.most_common()),
            # reads whose local answer failed (a bug; logged) and passed through
            "reads_failed_locally": self.counters.get("read.failed", 0),
            # reads stopped at --read-budget-ms, reads that took over a tenth
            # of it (SQLite), and the shapes passing through for either
            "reads_over_budget": self.slow.stopped,
            "reads_slow": self.slow.slow_reads,
            "slow_shapes": len(self.slow),
            "plans_kept": len(self._plans),
            "plans_bytes": self._plans.bytes,
            "credentials_vouched": len(self.credentials),
            "event_lag_seconds": None,
            # cached fields not served yet (being loaded), by type
            "loading": self.not_ready(),
        }
        for source in self.status_sources:
            out.update(source())
        return out


def _who_is(auth: dict) -> str:
    """Whose credentials, for a log line (a name or login, never a secret)."""
    if "user_login" in auth:
        return f"user {clip(str(auth['user_login']), 80)}"
    if "session_token" in auth:
        return "a session token"
    name = f"script {clip(str(auth.get('script_name')), 80)}"
    if "sudo_as_login" in auth:
        name += f" as {clip(str(auth['sudo_as_login']), 80)}"
    return name
