"""The storage interface: `IStore`, which both backends implement (the
daemon and the admin commands use nothing else of a store), and its
errors."""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, Sequence, TypeVar

from twisted.internet import defer
from zope.interface import Attribute, Interface

from sgcache.schema.changes import EntityChange
from sgcache.schema import Schema

T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be used as asked (wrong layout version, unknown
    entity type...). The message is one line meant for an operator."""


class ReadTimeout(StoreError):
    """A client's read (`IStore.read`) went over the store's time budget
    and was stopped."""


class IStore(Interface):
    """The cache database. Every method returns a Deferred."""

    dialect = Attribute('"sqlite" or "postgresql": the SQL dialect fetch() speaks')
    reads_block = Attribute("True when reads run on the reactor thread (nothing else runs meanwhile)")
    last_apply = Attribute(
        "The `sgcache.store.apply.ApplyResult` of the last `apply` that committed (None "
        "before one): `applied`, `written` (changes that wrote something), `unchanged` "
        "(applied changes that would have changed nothing, so wrote nothing), "
        "`skipped_stale`...")
    rows_written = Attribute(
        "How many applied changes wrote something (a row inserted, updated or deleted, "
        "a link list replaced), over every `apply` of this store object")
    rows_unchanged = Attribute(
        "How many applied changes wrote nothing (the store already held exactly what "
        "they would write), over every `apply` of this store object")

    def open() -> "defer.Deferred[None]":
        """Connect; create the bookkeeping tables if missing; check and record
        the layout version (a database newer than the code is refused)."""

    def close() -> "defer.Deferred[None]":
        """Disconnect. Safe to call twice."""

    def sync_schema(schema: Schema) -> "defer.Deferred[dict]":
        """Create tables / columns / indexes / association tables for every
        entity type and cacheable field of `schema`, and record them. New
        fields start ``pending``; a field whose data type changed gets fresh
        storage and goes back to ``pending``; fields (and types) gone from the
        schema lose their record and their storage (columns, association
        tables, indexes), so the store holds what a fresh one built from
        `schema` would. Idempotent.
        Returns
        ``{"added_types": [...], "added_fields": ["Type.field", ...],
        "changed_fields": [...], "removed_fields": [...], "removed_types": [...]}``."""

    def recorded_schema() -> "defer.Deferred[Schema]":
        """What the store records of the schema it was synced to (types,
        identifiers, cacheable fields, data and link types)."""

    def describe_storage() -> "defer.Deferred[dict]":
        """table -> {"columns", "indexes"} of every non-bookkeeping table."""

    def field_states() -> "defer.Deferred[dict[str, dict[str, str]]]":
        """entity type -> field name -> state (``pending`` / ``ready``)."""

    def set_field_states(
        entity_type: str, fields: "list[str] | None", state: str
    ) -> "defer.Deferred[None]":
        """Set the state of some (None: all) recorded fields of a type.
        When they all have it already nothing is written and
        `read_generation` does not move."""

    def apply(
        changes: Sequence[EntityChange], state: "dict[str, str] | None" = None,
        ticket: "int | None" = None,
    ) -> "defer.Deferred[int]":
        """Write `changes` and the `state` items in one transaction; nothing
        is written if anything fails. Returns how many changes were applied
        (stale or uncached ones are skipped).

        `ticket` (PostgreSQL only; SQLite refuses one): the read ticket
        taken before the upstream read that produced `changes`
        (`sgcache.sync.freshness.SharedFreshness`). In the same
        transaction, changes to entities a younger read was applied to are
        dropped (`last_apply.skipped_fresher`, `.fresher`) and the others'
        entities stamped with it (`sgcache.store.readstamps`); a ticket
        below the store's prune horizon fails the apply with
        `readstamps.StaleRead`.

        No needless writes: each change is compared with what the store
        holds (read back in the same transaction; the columns it sets, the
        flags, the links of the multi_entity fields it sets). One that
        would change nothing (every column already holds exactly the value
        it would write, the same links in the same order, no row to insert
        or delete) counts as applied but writes no row, no link and no
        update-log entry. When every change is such, the `state` items are
        still written, but as bookkeeping: `read_generation` does not move
        and other processes are not notified. The update log holds exactly
        the changes that wrote something. What was written is in
        `last_apply` (and the counters `rows_written` / `rows_unchanged`)."""

    def fetch(sql: str, params: Sequence[Any]) -> "defer.Deferred[list[tuple]]":
        """Run a read-only query written with ``?`` placeholders (the
        cache's own: sync, admin; no time limit)."""

    def read(sql: str, params: Sequence[Any]) -> "defer.Deferred[list[tuple]]":
        """Run one statement of a client's read (``?`` placeholders), within
        the store's read budget (`set_read_budget`): past it the statement
        is stopped and the Deferred fails with `ReadTimeout`."""

    def set_read_budget(seconds: "float | None") -> None:
        """The most a statement of a client's read may take (None: no
        limit). Set before `open`."""

    def get_state(key: str) -> "defer.Deferred[str | None]":
        """One item of ``_sgcache_state``."""

    def set_state(items: dict[str, str]) -> "defer.Deferred[None]":
        """Write items of ``_sgcache_state`` (one transaction)."""

    def count(entity_type: str, active: "bool | None" = None) -> "defer.Deferred[int]":
        """Rows of a type: all, only active (True) or only retired (False)."""

    def ids(entity_type: str) -> "defer.Deferred[list[int]]":
        """Every stored id of a type, active and retired, ascending."""

    def links_of(entity_type: str, entity_id: int, field_name: str, data_type: str) -> "defer.Deferred[list]":
        """The (type, id) links one stored entity holds in a link field."""

    def missing_ids(entity_type: str, ids: "set[int]") -> "defer.Deferred[set[int]]":
        """The ids of a type the store holds no row for."""

    def ids_between(entity_type: str, after: int, upto: int, projects: "list[int] | None" = None,
                    active: "bool | None" = None) -> "defer.Deferred[set[int]]":
        """Stored ids in (after, upto], of the given projects when given,
        only active (or only retired) rows when `active` says so."""

    def active_fingerprint(entity_type: str) -> "defer.Deferred[tuple[int, int]]":
        """(count, sum of ids) of a type's active rows."""

    def active_ids(entity_type: str) -> "defer.Deferred[set[int]]":
        """The ids of a type's active rows."""

    def update_log(entity_type: str, entity_id: int, limit: int = 200) -> "defer.Deferred[list[dict]]":
        """The newest update-log entries about one entity, oldest first."""

    def record_shadow_mismatch(entry: dict) -> "defer.Deferred[None]":
        """Keep one shadow check's mismatch (`sgcache.store.shadowlog`)."""

    def shadow_mismatches() -> "defer.Deferred[list[dict]]":
        """The kept shadow mismatches, the latest first."""

    def clear_shadow_mismatches() -> "defer.Deferred[int]":
        """Forget every kept shadow mismatch; how many there were."""

    def analyze(entity_type: str) -> "defer.Deferred[None]":
        """Refresh the query planner's statistics of a type's tables (after
        a bulk load: without them planners pick poor plans for reads)."""

    def track_changes() -> "defer.Deferred[None]":
        """Start following writes to the database, this process's and other
        processes', for `read_generation`."""

    def read_generation() -> Any:
        """Not a Deferred: a token that differs whenever a read may answer
        differently than when the token was taken (any write that may change
        a read's answer, by this process or another, moves it). None when
        the store cannot tell: before `track_changes`, or while it cannot
        hear other processes' writes."""


def returns_deferred(fn: Callable[..., Awaitable[T]]) -> Callable[..., "defer.Deferred[T]"]:
    """Make an ``async def`` method return a Deferred (already fired when the
    coroutine never had to wait, as on SQLite)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        return defer.ensureDeferred(fn(*args, **kwargs))  # type: ignore[arg-type]

    return wrapper
