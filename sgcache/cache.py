"""The cache's answer to each RPC: serve `read` from the store when the
planner says it can be answered exactly and the caller is known to the site
(again from memory when the same read was answered since the store last
changed: `answers`); pass everything else through; write back the results of
writes; keep the site's `info` in memory.

Local reads are served only to callers the site has accepted recently:
a script's first read goes upstream, and its success vouches for the
credentials for `AUTH_TTL` seconds. Requests made on behalf of a user
(`sudo_as_login`, user logins, session tokens) always pass through, since the
site applies that user's permission rules to what they may see.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections import Counter
from typing import Any

from twisted.web.http_headers import Headers

from . import __version__
from .answers import Answers
from .faults import ERR_AUTH, ERR_UPSTREAM, Fault
from .freshness import Freshness
from .planner import Catalog, PassThrough, PlanCache, request_key
from .reader import execute
from .rpc import JSON_CONTENT_TYPE, RawReply, encode_json
from .upstream import Upstream, UpstreamError
from .writeback import WRITE_METHODS, WriteBack
from .logs import logger

log = logger(__name__)

AUTH_TTL = 600.0

#: default memory for answers to repeated reads (`Answers`)
ANSWERS_BYTES = 64 * 2**20

_JSON_HEADERS = [(b"content-type", [JSON_CONTENT_TYPE])]


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
        self.serving = False
        self.loading_message = "initial load not started"
        self.counters: Counter[str] = Counter()
        self.passthrough_reasons: Counter[str] = Counter()
        self._verified: dict[str, float] = {}
        #: callables adding to the `sgcache` block of info (poller, scanner)
        self.status_sources: list[Any] = []

    # -- state -------------------------------------------------------------
    async def refresh_catalog(self) -> None:
        states = await self.store.field_states()
        ready = {
            etype: {f for f, state in fields.items() if state == "ready"}
            for etype, fields in states.items()
        }
        self.catalog = Catalog(self.schema, ready)
        self._plans = PlanCache(self.catalog, self.store.dialect)
        self.answers.clear()

    async def refresh_info(self) -> None:
        try:
            info = await self.upstream.call("info")
        except (UpstreamError, Fault) as e:
            log.warn("could not refresh the site's info: {error}", error=str(e))
            return
        if isinstance(info, dict):
            self.info = info
            self.info_fetched_at = self.reactor.seconds()

    def max_page_size(self) -> int:
        if self.info and isinstance(self.info.get("api_max_entities_per_page"), int):
            return self.info["api_max_entities_per_page"]
        return 500

    # -- auth --------------------------------------------------------------
    @staticmethod
    def _auth_key(auth: Any) -> str | None:
        """A key for credentials the cache may vouch for, or None."""
        if not isinstance(auth, dict):
            return None
        if set(auth) - {"script_name", "script_key", "session_uuid"}:
            return None
        name, key = auth.get("script_name"), auth.get("script_key")
        if not isinstance(name, str) or not isinstance(key, str):
            return None
        digest = hashlib.sha256(f"{name}\0{key}".encode("utf-8")).hexdigest()
        return f"script:{name}:{digest}"

    def _is_verified(self, key: str | None) -> bool:
        if key is None:
            return False
        expiry = self._verified.get(key)
        return expiry is not None and expiry > self.reactor.seconds()

    # -- dispatch ----------------------------------------------------------
    async def handle(self, method: str, auth: Any, args: Any, body: bytes, headers: Headers) -> Any:
        self.counters[f"{method}"] += 1
        if method == "info":
            return {"results": await self._info()}
        if method == "read":
            key = self._auth_key(auth)
            if self.serving and self._is_verified(key):
                try:
                    return await self._read(args)
                except PassThrough as p:
                    self._count_passthrough(p.reason)
            elif not self.serving:
                self._count_passthrough("not serving yet (initial load)")
            else:
                self._count_passthrough("credentials not yet vouched for by the site")
        return await self._passthrough(method, auth, args, body, headers)

    async def _read(self, args: Any) -> RawReply:
        """A read answered from the store (or raises PassThrough): reused
        when the same read was answered since the store last changed."""
        page_size = self.max_page_size()
        request = request_key(args, page_size)
        answers = self.answers
        generation = self.store.read_generation() if answers.enabled else None
        body = answers.get(request, generation)
        if body is None:
            plans = self._plans
            plan = plans.plan(args, page_size, now=self.now, tz=self.tz, key=request)
            body = encode_json({"results": await execute(self.store, plan, self.catalog)})
            # kept only when nothing moved while it was read: the store, the
            # catalog (refresh_catalog), the clock (relative dates)
            if (plan.timeless and generation is not None and plans is self._plans
                    and self.store.read_generation() == generation):
                answers.put(request, generation, body)
        self.counters["read.local"] += 1
        return RawReply(200, _JSON_HEADERS, body)

    def _count_passthrough(self, reason: str) -> None:
        self.passthrough_reasons[reason] += 1
        log.debug("read passes through: {reason}", reason=reason)

    async def _passthrough(self, method: str, auth: Any, args: Any, body: bytes, headers: Headers) -> RawReply:
        self.counters["passthrough"] += 1
        response = await self.upstream.forward(method, body, headers)
        decoded = None
        if response.status == 200:
            try:
                decoded = json.loads(response.body) if response.body else None
            except ValueError:
                decoded = None
        fault = isinstance(decoded, dict) and bool(decoded.get("exception"))
        key = self._auth_key(auth)
        if key is not None:
            if fault and decoded.get("error_code") == ERR_AUTH:
                self._verified.pop(key, None)
            elif response.status == 200 and decoded is not None and not fault:
                self._verified[key] = self.reactor.seconds() + AUTH_TTL
        if method in WRITE_METHODS and response.status == 200 and isinstance(decoded, dict) and not fault:
            await self.writeback.after(method, args, decoded.get("results"))
        return RawReply(response.status, response.headers, response.body)

    async def forward_http(self, verb: str, uri: str, body: bytes, headers: Headers) -> Any:
        from .upstream import _DROP_REQUEST_HEADERS

        out = Headers()
        for name, values in headers.getAllRawHeaders():
            if name.lower() not in _DROP_REQUEST_HEADERS:
                out.setRawHeaders(name, values)
        try:
            return await self.upstream.request(verb, self.upstream.base_url + uri, body or None, out)
        except UpstreamError as e:
            raise Fault(f"sgcache: the Shotgun site is unreachable ({e})", ERR_UPSTREAM)

    async def _info(self) -> dict[str, Any]:
        if self.info is None:
            await self.refresh_info()
        if self.info is None:
            raise Fault(
                "sgcache: the Shotgun site is unreachable and its info was never fetched", ERR_UPSTREAM
            )
        info = dict(self.info)
        info["sgcache"] = self.status()
        return info

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "serving": self.serving,
            "store": self.store.dialect,
            "state": self.loading_message,
            "info_age_seconds": (
                None if self.info_fetched_at is None else round(self.reactor.seconds() - self.info_fetched_at, 1)
            ),
            "reads_local": self.counters.get("read.local", 0),
            # repeated reads answered with the bytes of an earlier answer
            "reads_reused": self.answers.hits,
            "answers_kept": len(self.answers),
            "answers_bytes": self.answers.bytes,
            "passthrough": self.counters.get("passthrough", 0),
            # why reads went upstream: reason -> count (the 20 commonest)
            "passthrough_reasons": dict(self.passthrough_reasons.most_common(20)),
            "event_lag_seconds": None,
        }
        for source in self.status_sources:
            out.update(source())
        return out
