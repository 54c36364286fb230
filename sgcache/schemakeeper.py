"""The schema keeper: which schema the running daemon caches, and moving it
to a new one without a restart.

The schema the daemon runs on is *effective*: the schema file, widened by
the schema rules (``--schema-rules``), checked against the site's own
schema (`sgcache.schema.effective.resolve`). It changes when

* the operator reloads (SIGHUP, ``systemctl reload``, ``sgcache schema
  reload`` through the admin listener): the file and the rules are read
  again, and the site's schema with them;
* the site's schema changes: the poller sees a schema-change event
  (``Shotgun_DisplayColumn_*``), or the periodic check (with each refresh
  of the site's info) finds the site's schema differs from the one last read.

A change is applied in an order that never serves a wrong answer, under
the cache's ``schema_lock`` (no catalog is rebuilt and no scan marks a field
ready meanwhile):

1. the cache stops serving what goes or changes (`Cache.use_schema`): from
   here on reads of it pass through, and a read planned before that
   finishes after it passes through too;
2. the store's storage follows (`IStore.sync_schema`): new columns and
   tables (``pending``), storage of retyped fields replaced (``pending``),
   that of removed fields and types dropped;
3. the poller, the scanner and write-back sync by the new schema; the
   scanner knows which fields' storage was remade (a scan of their type
   already running does not mark them ready);
4. the catalog is rebuilt from the store's field states;
5. the types with pending fields are scanned in full in the background,
   and each type's fields are served as soon as its scan ends.

The site's schema, as last read, is kept in the store (``site_schema``), so
a restart while the site is down resolves the same way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from sgcache.logs import logger
from sgcache.schema import Schema, SchemaError
from sgcache.schema.effective import Resolution, SchemaDiff, diff, resolve, site_from_json, site_to_json
from sgcache.schema.tools import Rule, load_rules
from sgcache.site.backoff import describe

log = logger(__name__)

#: ``_sgcache_state`` key of the site's schema as last read
SITE_SCHEMA_KEY = "site_schema"

#: seconds schema-change events are gathered before the site is asked
EVENT_DELAY = 2.0


class ReloadError(SchemaError):
    """The schema file or rules cannot be read: nothing changes."""


class SchemaKeeper:
    """Owns the effective schema of a running daemon (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        schema_path: str | None,
        rules_path: str | None,
        cache: Any,
        store: Any,
        upstream: Any,
        scanner: Any,
        poller: Any,
    ):
        self.reactor = reactor
        self.schema_path = schema_path
        self.rules_path = rules_path
        self.cache = cache
        self.store = store
        self.upstream = upstream
        self.scanner = scanner
        self.poller = poller
        self.file_schema: Schema | None = None
        self.rules: list[Rule] = []
        #: the site's schema as last read (None: never)
        self.site: Schema | None = None
        self.site_read_at: float | None = None
        self.resolution: Resolution | None = None
        #: the effective schema the daemon runs on
        self.schema: Schema | None = None
        #: what the last applied change did, and when
        self.last_change: dict[str, Any] | None = None
        self.changes_applied = 0
        self.site_checks = 0
        self.site_check_errors = 0
        self._problems: list[str] = []
        self._check_call: Any = None
        self._checking: defer.Deferred | None = None
        self._check_again = False
        self._waiters: list[defer.Deferred] = []
        self._apply_lock = defer.DeferredLock()
        #: None, or why this daemon may not change the store's schema now
        #: (several daemons on one store: only the one that syncs does)
        self.refuse_apply: Any = None

    # -- start ----------------------------------------------------------------
    def load_files(self) -> tuple[Schema | None, list[Rule]]:
        """The schema file and the rules, read now (ReloadError: one line)."""
        file_schema = None
        rules: list[Rule] = []
        try:
            if self.schema_path:
                file_schema = Schema.load(self.schema_path)
            if self.rules_path:
                rules = load_rules(self.rules_path)
        except (SchemaError, OSError, ValueError) as e:
            raise ReloadError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
        return file_schema, rules

    async def start(self, file_schema: Schema | None = None) -> Schema:
        """The effective schema to start on (the store is open, not yet
        synced). The site's schema is read once; if the site cannot be
        reached the one kept in the store is used, else the file as is.
        Raises SchemaError when there is nothing to start on (rules alone,
        and the site never read): the caller retries."""
        if file_schema is None:
            file_schema, self.rules = self.load_files()
        else:
            self.rules = self.load_files()[1] if self.rules_path else []
        self.file_schema = file_schema
        if self.site is None:
            kept = await self.store.get_state(SITE_SCHEMA_KEY)
            if kept:
                try:
                    self.site = site_from_json(kept)
                except (ValueError, KeyError, TypeError, IndexError, SchemaError):
                    log.warn("the site's schema kept in the store is unreadable; reading it again")
        try:
            await self._read_site()
        except Exception as e:
            if self.site is None and self.file_schema is None:
                raise SchemaError(f"the site's schema is needed (--schema-rules without --schema): {describe(e)}")
            log.warn("could not read the site's schema ({error}); starting on {what}", error=describe(e),
                     what="the one read last" if self.site is not None else "the schema file as is")
        resolution = resolve(self.file_schema, self.rules, self.site)
        self._set(resolution)
        self._use(resolution.schema)
        return resolution.schema

    def _use(self, schema: Schema) -> None:
        """Point every component at `schema` (at start, before any sync)."""
        self.schema = schema
        self.cache.schema = schema
        self.cache.writeback.schema = schema
        self.scanner.schema = schema
        self.poller.schema = schema

    # -- reading the site's schema ----------------------------------------------
    async def _read_site(self) -> bool:
        """Read the site's schema; True if it differs from the one known."""
        self.site_checks += 1
        try:
            fields = await self.upstream.call("schema_read")
            entities = await self.upstream.call("schema_entity_read")
            site = Schema.from_schema_read(fields, entities if isinstance(entities, dict) else None,
                                           source="the site")
        except Exception:
            self.site_check_errors += 1
            raise
        self.site_read_at = self.reactor.seconds()
        text = site_to_json(site)
        known = None if self.site is None else site_to_json(self.site)
        if text == known:
            return False
        self.site = site
        await self.store.set_state({SITE_SCHEMA_KEY: text})
        return True

    def site_changed(self) -> None:
        """A schema-change event was seen: read the site's schema soon (a
        burst of events is one read)."""
        if self._check_call is not None and self._check_call.active():
            return
        self._check_call = self.reactor.callLater(EVENT_DELAY, self._check_from_event)

    def _check_from_event(self) -> None:
        self._check_call = None
        defer.ensureDeferred(self.check_site("schema change events")).addErrback(
            lambda f: log.failure("following the site's schema failed", f))

    async def check_site(self, why: str = "periodic check") -> SchemaDiff | None:
        """Read the site's schema; apply what changed for the cache."""
        if self._checking is not None:
            # one is running: it reads the site once more when it ends, and
            # this caller waits for that
            self._check_again = True
            waiter: defer.Deferred = defer.Deferred()
            self._waiters.append(waiter)
            return await waiter
        self._checking = defer.Deferred()
        result: SchemaDiff | None = None
        try:
            while True:
                self._check_again = False
                try:
                    await self._read_site()
                except Exception as e:
                    log.warn("could not read the site's schema ({why}): {error}", why=why, error=describe(e))
                    return None
                # resolved every time (cheap): a change a plan() read is
                # applied here too
                result = await self.apply(resolve(self.file_schema, self.rules, self.site),
                                          f"the site's schema changed ({why})")
                if not self._check_again:
                    return result
        finally:
            self._checking = None
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(result)

    # -- reload -------------------------------------------------------------------
    async def plan(self) -> dict[str, Any]:
        """What a reload would do now (nothing is changed)."""
        file_schema, rules = self.load_files()
        try:
            await self._read_site()
        except Exception as e:
            log.info("schema plan: the site's schema could not be read ({error}); using the one read last",
                     error=describe(e))
        resolution = resolve(file_schema, rules, self.site)
        change = diff(self.schema, resolution.schema)
        return self._report(change, resolution, applied=False)

    async def reload(self, why: str = "reload") -> dict[str, Any]:
        """Read the schema file and rules again and apply the result."""
        file_schema, rules = self.load_files()
        try:
            await self._read_site()
        except Exception as e:
            log.warn("schema reload: the site's schema could not be read ({error}); using the one read last",
                     error=describe(e))
        self.file_schema, self.rules = file_schema, rules
        resolution = resolve(file_schema, rules, self.site)
        change = await self.apply(resolution, why)
        return self._report(change, resolution, applied=True)

    def _report(self, change: SchemaDiff, resolution: Resolution, applied: bool) -> dict[str, Any]:
        return {
            "applied": applied,
            "changes": change.lines(),
            "diff": change.as_dict(),
            "rescan": change.rescan(),
            "problems": resolution.problems(),
            "site_known": resolution.site_known,
        }

    # -- applying a change ------------------------------------------------------------
    async def apply(self, resolution: Resolution, why: str) -> SchemaDiff:
        """Move the daemon to `resolution.schema` (module docstring)."""
        refused = self.refuse_apply() if self.refuse_apply is not None else None
        if refused:
            raise ReloadError(refused)
        async with self._apply_lock:
            new = resolution.schema
            change = diff(self.schema, new)
            self._set(resolution)
            if not change:
                return change
            lines = change.lines()
            log.info("schema change ({why}): {count} changes", why=why, count=len(lines))
            for line in lines:
                log.info("schema change: {line}", line=line)
            remade = list(change.added_fields)
            remade += [item.partition(":")[0] for item in change.changed_types]
            async with self.cache.schema_lock:
                self.cache.use_schema(new, change.stop_serving())
                summary = await self.store.sync_schema(new)
                self.scanner.use_schema(new, remade)
                self.poller.schema = new
                self.schema = new
                await self.cache.refresh_catalog_locked()
            pending = sorted(self.cache.not_ready())
            self.changes_applied += 1
            self.last_change = {"why": why, "at": self.reactor.seconds(), "changes": lines,
                                "store": {k: v for k, v in summary.items() if v}}
            if pending:
                self.scanner.request_full(pending, f"schema change ({why})")
            return change

    def _set(self, resolution: Resolution) -> None:
        self.resolution = resolution
        problems = resolution.problems()
        if not resolution.site_known:
            problems = ["the site's schema was never read: the schema file is taken as is"] + problems
        if problems != self._problems:
            for line in problems:
                if line not in self._problems:
                    log.warn("schema: {line}", line=line)
            self._problems = problems

    # -- status -----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The keeper's part of `info`'s ``sgcache`` block."""
        res = self.resolution
        return {
            "schema": {
                "file": self.schema_path,
                "rules": self.rules_path,
                "types": len(self.schema) if self.schema is not None else 0,
                "fields": sum(len(e.fields) for e in self.schema) if self.schema is not None else 0,
                "site_known": bool(res and res.site_known),
                "site_read_age_seconds": (
                    None if self.site_read_at is None else round(self.reactor.seconds() - self.site_read_at, 1)
                ),
                "missing_on_site": list(res.missing_on_site) if res else [],
                "type_differs": list(res.type_differs) if res else [],
                "from_rules": len(res.from_rules) if res else 0,
                "problems": list(self._problems),
                "changes_applied": self.changes_applied,
                "last_change": self.last_change,
                "site_checks": self.site_checks,
                "site_check_errors": self.site_check_errors,
            }
        }

    def stop(self) -> None:
        if self._check_call is not None and self._check_call.active():
            self._check_call.cancel()
        self._check_call = None

