"""The Shotgun emulator's data layer: the in-memory site a test talks to.

`Emulator` owns the data (``db[type][id] -> row``, mockgun's layout), the
JSON-RPC method semantics (auth, create / update / delete / revive / batch,
schema reads), bookkeeping (``created_at``, ``updated_at``, ``created_by``,
``updated_by``), backref fields and the event log (`sgcache.testing.eventlog`).
Reads go to the read engine (`sgcache.testing.engine.ReadEngine`), which also
renders values to their wire form.

It subclasses mockgun's ``Shotgun`` so code written against mockgun keeps
working (``create``, ``update``, ``find``, ``schema_read``... as Python
methods), but it is built from a `Schema` instead of mockgun's class-level
pickle paths, and it replaces mockgun's writes: values are validated per data
type with Shotgun-style faults, converted to storage form, and every change
writes events. The HTTP face is `sgcache.testing.server`.

Storage form (shared with the engine): date_time = naive UTC datetime;
date = ``"YYYY-MM-DD"``; entity = ``{"type", "id"}`` or None; multi_entity =
list of ``{"type", "id"}``; tag_list = list of str; checkbox = bool; other
types = the wire value. A missing key means None (``[]`` for multi_entity).

Site schema changes (`create_field`, `update_field`, `delete_field`,
`change_field_type`, and the ``schema_field_create|update|delete`` RPCs)
replace the emulator's `Schema` with a new object (the one passed in is never
modified), update the ``schema_read`` description, the rows and the read
engine at once, and log ``Shotgun_DisplayColumn_*`` events: every field has a
stable id of the hidden ``DisplayColumn`` type (see docs/emulator.md,
"Schema changes").

Test controls (reset, seed, latency, throttle, failures, counters,
event-log holes, truncation, generate_events, the clock, schema changes) are
plain methods here; the server exposes them over HTTP in test mode.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
import re
import secrets
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from shotgun_api3.lib.mockgun import Shotgun as Mockgun
from shotgun_api3.shotgun import _translate_filters
from twisted.logger import Logger

from sgcache.site import faults
from sgcache.site.faults import Fault
from sgcache.schema.types import format_datetime, parse_datetime
from sgcache.schema import KNOWN_DATA_TYPES, LINK_TYPES, EntitySpec, FieldSpec, Schema
from sgcache.testing.engine import IdTable, ReadEngine
from sgcache.testing.eventlog import COLUMN_TYPE, EVENT_TYPE, EventContext, EventLog, format_meta_datetime

log = Logger()

#: What `info` reports unless told otherwise: a modern site, so clients use
#: the paging path without counts.
DEFAULT_VERSION = (8, 50, 0)

#: Data types a client can never write.
READ_ONLY_TYPES = frozenset(["pivot_column", "summary", "calculated", "system_task_type"])

#: Fields only the site writes (a create may set created_at / created_by).
SITE_FIELDS = frozenset(["id", "type", "updated_at", "updated_by"])
CREATE_ONLY_FIELDS = frozenset(["created_at", "created_by"])

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# -- site schema changes --

#: Data types ``schema_field_create`` accepts (the Python-level `create_field`
#: and `change_field_type` take any data type of `KNOWN_DATA_TYPES`).
CREATABLE_TYPES = frozenset(
    "checkbox color currency date date_time duration entity float footage list multi_entity "
    "number percent status_list text timecode url".split()
)

#: Fields no schema change may delete or retype (nor each type's identifier,
#: for a delete); EventLogEntry's fields are all kept.
PROTECTED_FIELDS = frozenset(["id", "type", "created_at", "updated_at", "created_by", "updated_by"])

#: Properties ``schema_field_create`` / ``schema_field_update`` accept.
FIELD_PROPERTIES = (
    "name", "description", "valid_types", "valid_values", "default_value", "summary_default",
    "custom_metadata", "visible",
)

#: Property -> ``attribute_name`` of its DisplayColumn Change event (others
#: keep their property name). ``human_name``: public code filtering a real
#: site's rename events uses it; the rest is a guess.
COLUMN_ATTRIBUTES = {"name": "human_name"}

#: A name `create_field` takes as the system name itself.
_SYSTEM_NAME_RE = re.compile(r"^sg_[a-z0-9_]+$")


def field_system_name(display_name: str) -> str:
    """The system name Shotgun gives a field created with `display_name`:
    ``sg_`` + the name lowercased, every character but a-z0-9 made ``_``."""
    return "sg_" + re.sub(r"[^a-z0-9]", "_", display_name.lower())


def _convert_str(value: Any) -> Any:
    if value is None or value == []:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _convert_number(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, bool):
            return kind(int(value))
        return kind(float(value)) if kind is int and isinstance(value, str) else kind(value)

    return convert


#: Named value conversions for `change_field_type` (usable over HTTP).
CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "none": lambda value: None,
    "keep": lambda value: value,
    "str": _convert_str,
    "int": _convert_number(int),
    "float": _convert_number(float),
    "bool": lambda value: bool(value),
}

#: Fields added to a schema that lacks these types (YAML schemas often do).
_EXTRA_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "EventLogEntry": (
        "description",
        {
            "event_type": ("text",),
            "attribute_name": ("text",),
            "entity": ("entity", ()),  # any type: filled in at load
            "meta": ("serializable",),
            "project": ("entity", ("Project",)),
            "user": ("entity", ("HumanUser", "ApiUser")),
            "session_uuid": ("uuid",),
            "description": ("text",),
        },
    ),
    "ApiUser": (
        "firstname",
        {
            "firstname": ("text",),
            "lastname": ("text",),
            "description": ("text",),
            "email": ("text",),
            "generate_event_log_entries": ("checkbox",),
        },
    ),
    "HumanUser": (
        "name",
        {
            "name": ("text",),
            "login": ("text",),
            "firstname": ("text",),
            "lastname": ("text",),
            "email": ("text",),
        },
    ),
}


# -- schema loading ------------------------------------------------------------


@dataclass
class SchemaSource:
    """A schema plus the raw Shotgun dumps it came from, when it came from one."""

    schema: Schema
    schema_read: dict | None = None
    schema_entity_read: dict | None = None


def load_schema(path: str) -> SchemaSource:
    """Load a YAML schema, a schema_read JSON file or a dump directory,
    keeping the raw dumps so the emulator can serve them verbatim."""
    schema = Schema.load(path)
    schema_read = entity_read = None
    if os.path.isdir(path):
        with open(os.path.join(path, "schema_read.json")) as fh:
            schema_read = json.load(fh)
        entity_path = os.path.join(path, "schema_entity_read.json")
        if os.path.exists(entity_path):
            with open(entity_path) as fh:
                entity_read = json.load(fh)
    elif path.endswith(".json"):
        with open(path) as fh:
            data = json.load(fh)
        if isinstance(data, dict) and "entities" not in data:
            schema_read = data
    return SchemaSource(schema, schema_read, entity_read)


def complete_schema(schema: Schema) -> Schema:
    """`schema` plus what the emulator needs to exist: EventLogEntry, ApiUser
    and HumanUser (added with minimal fields when missing). The input is not
    modified."""
    entities = dict(schema.entities)
    for type_name, (identifier, fields_in) in _EXTRA_TYPES.items():
        if type_name in entities:
            continue
        fields: dict[str, FieldSpec] = {}
        for fname, desc in fields_in.items():
            data_type = desc[0]
            links: tuple[str, ...] = desc[1] if len(desc) > 1 else ()
            if type_name == "EventLogEntry" and fname == "entity":
                links = tuple(sorted(set(entities) | set(_EXTRA_TYPES)))
            fields[fname] = FieldSpec(type_name, fname, data_type, links)
        for fname, dtype in (("id", "number"), ("created_at", "date_time"), ("updated_at", "date_time")):
            fields[fname] = FieldSpec(type_name, fname, dtype)
        for fname in ("created_by", "updated_by"):
            fields[fname] = FieldSpec(type_name, fname, "entity", ("HumanUser", "ApiUser"))
        entities[type_name] = EntitySpec(type_name, identifier, fields)
    if len(entities) == len(schema.entities):
        return schema
    return Schema(entities.values(), source=schema.source)


# -- the caller and the test-control state -------------------------------------


@dataclass
class Caller:
    """Who is calling: the user link events and bookkeeping record."""

    user: dict
    name: str
    session_uuid: str | None = None


@dataclass
class FailurePlan:
    """Fail the next `count` RPC requests (of `methods`, if given), with a
    ``Retry-After: <retry_after>`` header when `retry_after` is set."""

    count: int
    status: int = 500
    reset: bool = False
    methods: frozenset[str] | None = None
    retry_after: float | None = None


#: The transport figures `Emulator.counters(figures=True)` adds to the
#: per-method counts; the angle brackets keep them apart from method names.
FIGURE_KEYS = ("<in_flight>", "<max_in_flight>", "<bytes_in>", "<bytes_out>", "<gzipped>", "<throttled>")


@dataclass
class Controls:
    """Transport-level test knobs the server consults on every request, and
    what it measures (docs/emulator.md, "Test controls")."""

    latency: float = 0.0
    #: the latency is the response time of reads (their answer made first,
    #: sent `latency` after arrival) rather than a wait before serving
    latency_includes_work: bool = False
    failures: list[FailurePlan] = field(default_factory=list)
    #: RPC requests received per method name ("<invalid>" for malformed ones)
    counters: dict[str, int] = field(default_factory=dict)
    #: throttle: at most this many RPCs served at once (None = no limit) ...
    throttle_limit: int | None = None
    #: ... the others answered HTTP 429 with ``Retry-After`` (seconds)
    throttle_retry_after: float = 1.0
    #: RPCs being served now: from arrival (after the throttle check) until
    #: the response is written, latency wait included
    in_flight: int = 0
    #: the most RPCs in flight at once since the counters were reset
    max_in_flight: int = 0
    #: RPC request body bytes as received (before any decompression)
    bytes_in: int = 0
    #: RPC response body bytes as sent (after gzip)
    bytes_out: int = 0
    #: RPC responses sent gzip-compressed
    gzipped: int = 0
    #: RPC requests refused with HTTP 429 by the throttle
    throttled: int = 0

    def count(self, method: str) -> None:
        self.counters[method] = self.counters.get(method, 0) + 1

    def should_throttle(self) -> bool:
        """True when a request arriving now is over the throttle's limit."""
        return self.throttle_limit is not None and self.in_flight >= self.throttle_limit

    def enter(self) -> None:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight

    def leave(self) -> None:
        self.in_flight -= 1

    def figures(self) -> dict[str, int]:
        return dict(zip(FIGURE_KEYS, (self.in_flight, self.max_in_flight, self.bytes_in, self.bytes_out,
                                      self.gzipped, self.throttled)))

    def reset_counters(self) -> None:
        self.counters.clear()
        self.max_in_flight = self.in_flight
        self.bytes_in = self.bytes_out = self.gzipped = self.throttled = 0

    def take_failure(self, method: str) -> FailurePlan | None:
        """The failure to apply to this request, if one is pending."""
        for plan in self.failures:
            if plan.methods is None or method in plan.methods:
                plan.count -= 1
                if plan.count <= 0:
                    self.failures.remove(plan)
                return plan
        return None


def _seconds(name: str, value: Any) -> float:
    """A non-negative number of seconds, or a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


# -- the emulator --------------------------------------------------------------


class Emulator(Mockgun):
    """An in-memory Shotgun site: data, RPC semantics, events, test controls."""

    def __init__(
        self,
        schema: Schema,
        *,
        scripts: Mapping[str, str] | None = None,
        users: Mapping[str, str] | None = None,
        page_size: int = 500,
        schema_read: dict | None = None,
        schema_entity_read: dict | None = None,
        clock: Any = None,
        now: Callable[[], datetime.datetime] | None = None,
        version: tuple[int, int, int] = DEFAULT_VERSION,
        base_url: str = "http://emulator.invalid",
        tz: datetime.tzinfo = datetime.timezone.utc,
    ):
        # Deliberately not calling mockgun's __init__: it loads pickled
        # schemas from class-level paths. Set what its methods rely on.
        self.schema = complete_schema(schema)
        #: what `reset` restores: schema changes never modify these objects
        self._initial_schema = self.schema
        self.base_url = base_url
        self.finds = 0
        # mockgun's names for what schema_read / schema_entity_read serve:
        # the original dumps when given (plus any type we had to add).
        self._schema = {**self.schema.to_schema_read(), **(schema_read or {})}
        self._schema_entity = {**self.schema.to_schema_entity_read(), **(schema_entity_read or {})}
        self._initial_schema_read = self._schema
        self.scripts = dict(scripts or {})
        self.users = dict(users or {})
        self.page_size = page_size
        self.version = tuple(version)
        self._clock = clock
        self._now_fn = now
        self._frozen_now: datetime.datetime | None = None
        self._clock_offset = datetime.timedelta(0)
        self.generate_events = True
        self.controls = Controls()
        # IdTables: dicts that remember their sorted ids for id-ordered reads.
        self._db: dict[str, dict[int, dict]] = {t.name: IdTable() for t in self.schema}
        # The schema's fields as rows of the hidden DisplayColumn type (not in
        # the schema, so never read directly): what schema events link to.
        self._db.setdefault(COLUMN_TYPE, IdTable())
        self._db.setdefault(EVENT_TYPE, IdTable())
        self._columns: dict[tuple[str, str], int] = {}
        self._next_column_id = 1
        self.events = EventLog(self._db)
        self._next_ids: dict[str, int] = {}
        self._journal: dict[tuple[str, int], dict | None] | None = None
        self._sessions: dict[str, Caller] = {}
        self._script_users: dict[str, int] = {}
        self._human_users: dict[str, int] = {}
        self._defaults = self._collect_defaults()
        #: the site's time zone: calendar relative filters are evaluated in it
        self.tz = tz
        self.engine = ReadEngine(self.schema, self._db, self.now, tz=tz, max_page_size=page_size)
        self.reset()

    @property
    def db(self) -> dict[str, dict[int, dict]]:
        """The data: ``db[type][id] -> row`` in storage form (mockgun's ``_db``)."""
        return self._db

    # -- time --------------------------------------------------------------
    def now(self) -> datetime.datetime:
        """The site's "now": naive UTC, whole seconds."""
        if self._frozen_now is not None:
            value = self._frozen_now
        elif self._now_fn is not None:
            value = self._now_fn()
        else:
            if self._clock is None:
                from twisted.internet import reactor as clock
            else:
                clock = self._clock
            value = datetime.datetime.fromtimestamp(clock.seconds(), datetime.timezone.utc)
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return (value + self._clock_offset).replace(microsecond=0)

    def set_clock(self, now: datetime.datetime | str | None) -> datetime.datetime:
        """Freeze "now" at `now` (naive = UTC; a wire string is fine), or
        follow the real clock again with None. Returns the new "now"."""
        if isinstance(now, str):
            now = parse_datetime(now)
        if now is not None and now.tzinfo is not None:
            now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        self._frozen_now = now
        self._clock_offset = datetime.timedelta(0)
        return self.now()

    def advance_clock(self, seconds: float) -> datetime.datetime:
        """Move "now" forward (frozen or not) by `seconds`."""
        if self._frozen_now is not None:
            self._frozen_now += datetime.timedelta(seconds=seconds)
        else:
            self._clock_offset += datetime.timedelta(seconds=seconds)
        return self.now()

    # -- test controls -----------------------------------------------------
    def reset(self, keep_schema: bool = False) -> None:
        """Empty every table and the event log; recreate the script and user
        rows. The schema the emulator started with comes back (field
        DisplayColumn ids too) unless `keep_schema`."""
        if not keep_schema:
            self._restore_schema()
        for etype, table in self._db.items():
            if etype != COLUMN_TYPE:
                table.clear()
        self.events.reset()
        self._next_ids.clear()
        self._sessions.clear()
        self._script_users.clear()
        self._human_users.clear()
        now = self.now()
        for name in self.scripts:
            fields = {"firstname": name, "description": f"emulator script {name}"}
            if self.schema.get_field("ApiUser", "generate_event_log_entries"):
                fields["generate_event_log_entries"] = True
            self._script_users[name] = self._insert_raw("ApiUser", fields, now)
        for login in self.users:
            fields = {"login": login, "name": login, "firstname": login}
            self._human_users[login] = self._insert_raw("HumanUser", fields, now)
        log.debug("emulator reset: {scripts} scripts, {users} users", scripts=len(self.scripts), users=len(self.users))

    def seed(self, entities: list[dict], events: bool = False, script: str | None = None) -> list[dict]:
        """Bulk-create ``[{"type", "fields"[, "id"]}]`` (wire values; a
        fixed ``id`` is allowed) in one transaction, writing events only when
        `events`; bookkeeping fields may be given. Returns the new links."""
        caller = self._default_caller(script)
        ctx = self._event_context(caller, enabled=events)
        out = []
        with self._transaction():
            for item in entities:
                if not isinstance(item, dict) or "type" not in item:
                    raise Fault("seed: each item needs a 'type'")
                etype = item["type"]
                fields = item.get("fields") or {}
                if not isinstance(fields, dict):
                    raise Fault("seed: 'fields' must be a mapping")
                values = self._coerce_values(etype, _to_wire(fields), "create", seeding=True)
                row = self._create_row(etype, values, ctx, caller, fixed_id=item.get("id"))
                out.append({"type": etype, "id": row["id"]})
        return out

    def set_generate_events(self, enabled: bool) -> None:
        """Switch event writing for every caller (updated_at still moves)."""
        self.generate_events = bool(enabled)

    def set_latency(self, seconds: float, includes_work: bool = False) -> None:
        """Delay every RPC by `seconds` (each request on its own timer:
        concurrent requests wait concurrently). With `includes_work`, the
        latency is a read's response time, as a distant site with many
        workers has it: the answer to a method that changes nothing is made
        on arrival and sent `seconds` after it, so this process's own work
        (one core for every request) is inside the latency, not added to
        it. Writes always wait first, then act."""
        self.controls.latency = max(0.0, float(seconds))
        self.controls.latency_includes_work = bool(includes_work)

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        reset: bool = False,
        methods: list[str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Fail the next `count` RPC requests with HTTP `status`, or by
        resetting the connection; only requests of `methods` when given.
        With `retry_after` (seconds), the failure carries a ``Retry-After``
        header (whole seconds, rounded up)."""
        self.controls.failures.append(
            FailurePlan(int(count), int(status), bool(reset), frozenset(methods) if methods else None,
                        _seconds("retry_after", retry_after) if retry_after is not None else None)
        )

    def set_throttle(self, max_in_flight: int | None, retry_after: float = 1) -> None:
        """Serve at most `max_in_flight` RPCs at once (latency wait
        included); requests arriving over that get HTTP 429 with
        ``Retry-After: <retry_after>`` (whole seconds, rounded up) instead of
        being served. None switches the throttle off."""
        if max_in_flight is not None:
            if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 0:
                raise ValueError(f"max_in_flight must be a non-negative integer or None, got {max_in_flight!r}")
        self.controls.throttle_retry_after = _seconds("retry_after", retry_after)
        self.controls.throttle_limit = max_in_flight

    def counters(self, figures: bool = False) -> dict[str, int]:
        """RPC requests received, per method name (malformed ones as
        ``<invalid>``; throttled and injected failures included). With
        `figures`, also the transport figures `FIGURE_KEYS`: requests in
        flight now and at most since the last reset, request and response
        body bytes, gzipped responses, throttled requests."""
        counts = dict(self.controls.counters)
        if figures:
            counts.update(self.controls.figures())
        return counts

    def reset_counters(self) -> None:
        """Zero the counts and figures (the in-flight peak restarts from
        the requests in flight now)."""
        self.controls.reset_counters()

    def hold_events(self, ids: Iterable[int] = (), count: int = 0) -> None:
        self.events.hold(ids, count)

    def release_events(self, ids: list[int] | None = None) -> list[int]:
        return self.events.release(ids)

    def skip_event_ids(self, count: int) -> None:
        self.events.skip(count)

    def truncate_events(self, below: int) -> int:
        return self.events.truncate(below)

    # -- authentication ----------------------------------------------------
    def authenticate(self, auth: Any) -> Caller:
        """The caller named by a request's AUTH params, or a 102 fault."""
        if not isinstance(auth, dict):
            raise faults.bad_auth()
        caller: Caller | None = None
        if "user_login" in auth or "user_password" in auth:
            login = auth.get("user_login")
            if login in self.users and self.users[login] == auth.get("user_password"):
                caller = self._human_caller(login)
            else:
                raise Fault("Can't authenticate user: invalid login or password", faults.ERR_AUTH)
        elif "script_name" in auth or "script_key" in auth:
            name = auth.get("script_name")
            if name in self.scripts and self.scripts[name] == auth.get("script_key"):
                caller = self._script_caller(name)
        elif "session_token" in auth:
            known = self._sessions.get(auth.get("session_token"))
            if known is not None:
                caller = Caller(known.user, known.name)
        if caller is None:
            raise faults.bad_auth()
        sudo = auth.get("sudo_as_login")
        if sudo:
            if sudo not in self._human_users:
                raise Fault(f"Can't sudo as user {sudo!r}: no such HumanUser", faults.ERR_AUTH)
            caller = self._human_caller(sudo)
        uuid = auth.get("session_uuid")
        caller.session_uuid = uuid if isinstance(uuid, str) else None
        return caller

    def _script_caller(self, name: str) -> Caller:
        return Caller({"type": "ApiUser", "id": self._script_users[name]}, name)

    def _human_caller(self, login: str) -> Caller:
        return Caller({"type": "HumanUser", "id": self._human_users[login]}, login)

    def _default_caller(self, script: str | None = None) -> Caller:
        if script is not None:
            if script not in self._script_users:
                raise Fault(f"unknown script {script!r}")
            return self._script_caller(script)
        if self._script_users:
            return self._script_caller(next(iter(self._script_users)))
        if self._human_users:
            return self._human_caller(next(iter(self._human_users)))
        raise Fault("the emulator has no scripts or users configured")

    # -- RPC dispatch ------------------------------------------------------
    def info(self) -> dict[str, Any]:  # type: ignore[override]
        major, minor, patch = self.version
        return {
            "version": [major, minor, patch],
            "full_version": [major, minor, patch, 0],
            "user_authentication_method": "default",
            "api_max_entities_per_page": self.page_size,
            "s3_uploads_enabled": False,
            "s3_direct_uploads_enabled": False,
            "sgcache_emulator": True,
        }

    def call(self, method: Any, params: Any) -> Any:
        """Run one JSON-RPC call: `params` is the wire ``params`` list.
        Returns the value for ``results`` (for info: the whole body)."""
        if not isinstance(method, str):
            raise Fault("method_name must be a string", faults.ERR_BAD_REQUEST)
        if not isinstance(params, list):
            raise Fault("params must be a list", faults.ERR_BAD_REQUEST)
        if method == "info":
            return self.info()
        caller = self.authenticate(params[0] if params else None)
        handler = self._RPC_METHODS.get(method)
        if handler is None:
            raise Fault(f"API method {method!r} is not supported by the sgcache emulator")
        args = params[1] if len(params) > 1 else None
        return handler(self, args, caller)

    def rpc_read(self, args: Any, caller: Caller) -> dict:
        _require_dict(args, "read")
        self.finds += 1
        return self.engine.read(args)

    def rpc_summarize(self, args: Any, caller: Caller) -> dict:
        _require_dict(args, "summarize")
        return self.engine.summarize(args)

    def rpc_schema_read(self, args: Any, caller: Caller) -> dict:
        return self._schema

    def rpc_schema_entity_read(self, args: Any, caller: Caller) -> dict:
        return self._schema_entity

    def rpc_schema_field_read(self, args: Any, caller: Caller) -> dict:
        _require_dict(args, "schema_field_read")
        etype = args.get("type")
        if etype not in self._schema:
            raise faults.unknown_entity_type("schema_field_read", etype)
        fields = self._schema[etype]
        name = args.get("field_name")
        if name:
            if name not in fields:
                raise faults.unknown_field("schema_field_read", etype, name)
            return {name: fields[name]}
        return fields

    def rpc_get_session_token(self, args: Any, caller: Caller) -> dict:
        token = secrets.token_hex(16)
        self._sessions[token] = Caller(caller.user, caller.name)
        return {"session_id": token}

    def rpc_create(self, args: Any, caller: Caller) -> dict:
        _require_dict(args, "create")
        etype = self._check_type("create", args.get("type"))
        field_list = _field_list("create", args.get("fields", []))
        return_fields = _string_list("create", "return_fields", args.get("return_fields") or [])
        data = {}
        for item in field_list:
            data[item["field_name"]] = item.get("value")
        values = self._coerce_values(etype, data, "create")
        self._check_return_fields("create", etype, return_fields)
        ctx = self._event_context(caller)
        with self._transaction():
            row = self._create_row(etype, values, ctx, caller)
        return self._render(etype, row, list(data) + return_fields)

    def rpc_update(self, args: Any, caller: Caller) -> dict:
        _require_dict(args, "update")
        etype = self._check_type("update", args.get("type"))
        eid = _entity_id("update", args.get("id"))
        field_list = _field_list("update", args.get("fields", []))
        modes = _update_modes(args, field_list)
        data = {item["field_name"]: item.get("value") for item in field_list}
        values = self._coerce_values(etype, data, "update")
        for fname, mode in modes.items():
            spec = self.schema.get_field(etype, fname)
            if mode not in ("set", "add", "remove"):
                raise Fault(f"API update() invalid multi_entity_update_mode {mode!r} for {etype}.{fname}")
            if mode != "set" and (spec is None or spec.data_type != "multi_entity"):
                raise Fault(
                    f"API update() multi_entity_update_mode {mode!r} given for {etype}.{fname}, "
                    f"which is not a multi-entity field"
                )
        row = self._live_row("update", etype, eid)
        ctx = self._event_context(caller)
        with self._transaction():
            self._update_row_values(etype, row["id"], values, modes, ctx, caller)
        return self._render(etype, self._db[etype][eid], list(data))

    def rpc_delete(self, args: Any, caller: Caller) -> bool:
        _require_dict(args, "delete")
        etype = self._check_type("delete", args.get("type"))
        eid = _entity_id("delete", args.get("id"))
        row = self._db[etype].get(eid)
        if row is None:
            raise Fault(f"API delete() CRUD ERROR #3: Entity {etype} with id {eid} does not exist")
        if row.get("__retired"):
            return False
        ctx = self._event_context(caller)
        with self._transaction():
            row = self._writable(etype, eid)
            row["__retired"] = True
            self.events.retirement(ctx, _ref(etype, eid), row.get("project"), self._display_name(etype, row))
        return True

    def rpc_revive(self, args: Any, caller: Caller) -> bool:
        _require_dict(args, "revive")
        etype = self._check_type("revive", args.get("type"))
        eid = _entity_id("revive", args.get("id"))
        row = self._db[etype].get(eid)
        if row is None:
            raise Fault(f"API revive() CRUD ERROR #3: Entity {etype} with id {eid} does not exist")
        if not row.get("__retired"):
            return False
        ctx = self._event_context(caller)
        with self._transaction():
            row = self._writable(etype, eid)
            row["__retired"] = False
            self.events.revival(ctx, _ref(etype, eid), row.get("project"), self._display_name(etype, row))
        return True

    def rpc_batch(self, args: Any, caller: Caller) -> list:
        if not isinstance(args, list):
            raise Fault("API batch() expects a list of requests")
        handlers = {"create": Emulator.rpc_create, "update": Emulator.rpc_update,
                    "delete": Emulator.rpc_delete, "revive": Emulator.rpc_revive}
        results = []
        with self._transaction():
            for index, request in enumerate(args):
                if not isinstance(request, dict):
                    raise Fault(f"API batch() request {index} is not a mapping")
                handler = handlers.get(request.get("request_type"))
                if handler is None:
                    raise Fault(
                        f"API batch() request {index}: invalid request_type {request.get('request_type')!r}"
                    )
                try:
                    results.append(handler(self, request, caller))
                except Fault as e:
                    raise Fault(f"API batch() request {index} failed, nothing was applied: {e.message}",
                                e.error_code) from None
        return results

    def rpc_schema_field_create(self, args: Any, caller: Caller) -> str:
        method = "schema_field_create"
        _require_dict(args, method)
        etype = self._check_type(method, args.get("type"))
        props = _property_list(method, args.get("properties"))
        display = props.get("name")
        if not isinstance(display, str) or not display.strip():
            raise Fault(f"API {method}() needs a non-empty display name (property 'name')")
        name = field_system_name(display)
        fields = self.schema[etype].fields
        if name in fields:
            # Shotgun's documented rule: _1, _2... until the name is free.
            base, n = name, 1
            while f"{base}_{n}" in fields:
                n += 1
            name = f"{base}_{n}"
        return self._create_field(method, etype, name, args.get("data_type"), props, caller,
                                  allowed=CREATABLE_TYPES)

    def rpc_schema_field_update(self, args: Any, caller: Caller) -> bool:
        method = "schema_field_update"
        _require_dict(args, method)
        etype = self._check_type(method, args.get("type"))
        props = _property_list(method, args.get("properties"))
        # "project" (per-project visibility) is accepted and ignored.
        return self._update_field(method, etype, args.get("field_name"), props, caller)

    def rpc_schema_field_delete(self, args: Any, caller: Caller) -> bool:
        method = "schema_field_delete"
        _require_dict(args, method)
        etype = self._check_type(method, args.get("type"))
        return self._delete_field(method, etype, args.get("field_name"), caller)

    _RPC_METHODS: dict[str, Callable[["Emulator", Any, Caller], Any]] = {
        "read": rpc_read,
        "summarize": rpc_summarize,
        "schema_read": rpc_schema_read,
        "schema_entity_read": rpc_schema_entity_read,
        "schema_field_read": rpc_schema_field_read,
        "schema_field_create": rpc_schema_field_create,
        "schema_field_update": rpc_schema_field_update,
        "schema_field_delete": rpc_schema_field_delete,
        "get_session_token": rpc_get_session_token,
        "create": rpc_create,
        "update": rpc_update,
        "delete": rpc_delete,
        "revive": rpc_revive,
        "batch": rpc_batch,
    }

    # -- mockgun-compatible Python API (values in wire form or Python) -----
    def create(self, entity_type: str, data: dict, return_fields: list | None = None) -> dict:  # type: ignore[override]
        args = {"type": entity_type, "fields": _dict_to_list(_to_wire(data)), "return_fields": return_fields or ["id"]}
        return self.rpc_create(args, self._default_caller())

    def update(self, entity_type: str, entity_id: int, data: dict,  # type: ignore[override]
               multi_entity_update_modes: dict | None = None) -> dict:
        fields = _dict_to_list(_to_wire(data))
        for item in fields:
            if multi_entity_update_modes and item["field_name"] in multi_entity_update_modes:
                item["multi_entity_update_mode"] = multi_entity_update_modes[item["field_name"]]
        return self.rpc_update({"type": entity_type, "id": entity_id, "fields": fields}, self._default_caller())

    def delete(self, entity_type: str, entity_id: int) -> bool:  # type: ignore[override]
        return self.rpc_delete({"type": entity_type, "id": entity_id}, self._default_caller())

    def revive(self, entity_type: str, entity_id: int) -> bool:  # type: ignore[override]
        return self.rpc_revive({"type": entity_type, "id": entity_id}, self._default_caller())

    def batch(self, requests: list[dict]) -> list:  # type: ignore[override]
        calls = []
        for req in requests:
            call = {"request_type": req["request_type"], "type": req["entity_type"]}
            if "entity_id" in req:
                call["id"] = req["entity_id"]
            if "data" in req:
                call["fields"] = _dict_to_list(_to_wire(req["data"]))
                modes = req.get("multi_entity_update_modes") or {}
                for item in call["fields"]:
                    if item["field_name"] in modes:
                        item["multi_entity_update_mode"] = modes[item["field_name"]]
            if req["request_type"] == "create":
                call["return_fields"] = req.get("return_fields") or ["id"]
            calls.append(call)
        return self.rpc_batch(calls, self._default_caller())

    def find(self, entity_type: str, filters: Any, fields: list | None = None,  # type: ignore[override]
             order: list | None = None, filter_operator: str | None = None, limit: int = 0,
             retired_only: bool = False, page: int = 0, **_: Any) -> list[dict]:
        if isinstance(filters, dict) and "conditions" in filters:
            wire_filters = filters
        else:
            wire_filters = _translate_filters(_to_wire(list(filters)), filter_operator)
        args: dict[str, Any] = {
            "type": entity_type,
            "return_fields": fields or ["id"],
            "filters": wire_filters,
            "return_only": "retired" if retired_only else "active",
            "paging": {"entities_per_page": self.page_size, "current_page": page or 1},
            "return_paging_info_without_counts": True,
        }
        if order:
            args["sorts"] = [{"field_name": o.get("field_name", o.get("column")),
                              "direction": o.get("direction", "asc")} for o in order]
        if limit and limit <= self.page_size and not page:
            args["paging"]["entities_per_page"] = limit
        records: list[dict] = []
        while True:
            self.finds += 1
            result = self.engine.read(args)
            records.extend(result["entities"])
            if page or (limit and len(records) >= limit):
                break
            if not result.get("paging_info", {}).get("has_next_page"):
                break
            args["paging"]["current_page"] += 1
        return records[:limit] if limit else records

    def find_one(self, entity_type: str, filters: Any, fields: list | None = None,  # type: ignore[override]
                 order: list | None = None, filter_operator: str | None = None,
                 retired_only: bool = False, **kw: Any) -> dict | None:
        found = self.find(entity_type, filters, fields, order, filter_operator, limit=1,
                          retired_only=retired_only)
        return found[0] if found else None

    def summarize(self, entity_type: str, filters: Any, summary_fields: list,  # type: ignore[override]
                  filter_operator: str | None = None, grouping: list | None = None, **_: Any) -> dict:
        args: dict[str, Any] = {
            "type": entity_type,
            "summaries": summary_fields,
            "filters": _translate_filters(_to_wire(list(filters)), filter_operator),
        }
        if grouping is not None:
            args["grouping"] = grouping
        return self.engine.summarize(args)

    # -- site schema changes: Python API ------------------------------------
    def schema_field_create(self, entity_type: str, data_type: str, display_name: str,  # type: ignore[override]
                            properties: dict | None = None) -> str:
        """The client's `schema_field_create`, in-process."""
        props = [{"property_name": "name", "value": display_name}]
        props += [{"property_name": k, "value": v} for k, v in (properties or {}).items()]
        return self.rpc_schema_field_create(
            {"type": entity_type, "data_type": data_type, "properties": props}, self._default_caller())

    def schema_field_update(self, entity_type: str, field_name: str, properties: dict,  # type: ignore[override]
                            project_entity: dict | None = None) -> bool:
        """The client's `schema_field_update`, in-process."""
        props = [{"property_name": k, "value": v} for k, v in (properties or {}).items()]
        return self.rpc_schema_field_update(
            {"type": entity_type, "field_name": field_name, "properties": props}, self._default_caller())

    def schema_field_delete(self, entity_type: str, field_name: str) -> bool:  # type: ignore[override]
        """The client's `schema_field_delete`, in-process."""
        return self.rpc_schema_field_delete({"type": entity_type, "field_name": field_name},
                                            self._default_caller())

    def create_field(self, entity_type: str, name_or_display: str, data_type: str,
                     properties: Mapping[str, Any] | None = None, script: str | None = None) -> str:
        """Add a field as an admin would; returns its system name.

        A name like ``sg_foo_bar`` (``sg_`` then a-z, 0-9, _) is the system
        name itself (an existing one is refused; the display name is the
        ``name`` property, or derived: "Foo Bar"); anything else is a
        display name, named as ``schema_field_create`` does. `properties`
        maps property names (``description``, ``valid_types`` for links,
        ``valid_values``, ``default_value``...) to values. Any known data
        type is accepted, not only those the RPC takes."""
        method = "create_field"
        etype = self._check_type(method, entity_type)
        if not isinstance(name_or_display, str) or not name_or_display.strip():
            raise Fault(f"{method}: the field name must be a non-empty string")
        props = dict(properties or {})
        if _SYSTEM_NAME_RE.match(name_or_display):
            name = name_or_display
            if name in self.schema[etype].fields:
                raise Fault(f"API {method}() {etype}.{name} already exists")
            props.setdefault("name", name[3:].replace("_", " ").strip().title() or name)
        else:
            props.setdefault("name", name_or_display)
            name = field_system_name(name_or_display)
            base, n = name, 1
            while name in self.schema[etype].fields:
                name = f"{base}_{n}"
                n += 1
        return self._create_field(method, etype, name, data_type, props,
                                  self._default_caller(script), allowed=KNOWN_DATA_TYPES)

    def update_field(self, entity_type: str, field_name: str, properties: Mapping[str, Any],
                     script: str | None = None) -> bool:
        """Change a field's schema properties (``name`` = display name,
        ``description``, ``valid_types``, ``valid_values``, ``default_value``,
        ``summary_default``, ``custom_metadata``; ``visible`` is ignored).
        One Change event per property whose value changed."""
        etype = self._check_type("update_field", entity_type)
        return self._update_field("update_field", etype, field_name, dict(properties or {}),
                                  self._default_caller(script))

    def delete_field(self, entity_type: str, field_name: str, script: str | None = None) -> bool:
        """Delete a field: gone from the schema and from every row."""
        etype = self._check_type("delete_field", entity_type)
        return self._delete_field("delete_field", etype, field_name, self._default_caller(script))

    def change_field_type(
        self,
        entity_type: str,
        field_name: str,
        data_type: str,
        convert: Callable[[Any], Any] | str | None = None,
        properties: Mapping[str, Any] | None = None,
        values: Mapping[Any, Any] | None = None,
        script: str | None = None,
    ) -> str:
        """A test knob no API offers (an admin deletes a field and creates
        one with the same name): `field_name` keeps its name and gets
        `data_type`. Every row's value (active and retired) becomes
        ``convert(old wire value)`` -- a callable or a `CONVERSIONS` name;
        default: None -- except rows named in `values` (id -> new wire
        value). New values are validated for the new type (a bad one
        refuses the whole change). `properties` as for `create_field`
        (``valid_types`` is needed for a link type unless the field was one).
        Logged as a delete and a create: a Retirement of the field's
        DisplayColumn, then a New one with a new id. No entity events are
        written and ``updated_at`` does not move. Returns the field name."""
        method = "change_field_type"
        etype = self._check_type(method, entity_type)
        old = self._changeable_field(method, etype, field_name)
        if data_type not in KNOWN_DATA_TYPES:
            raise Fault(f"API {method}() invalid data_type {data_type!r}")
        if convert is None:
            convert = CONVERSIONS["none"]
        elif isinstance(convert, str):
            if convert not in CONVERSIONS:
                raise Fault(f"API {method}() unknown conversion {convert!r}: one of {', '.join(CONVERSIONS)}")
            convert = CONVERSIONS[convert]
        props = self._check_properties(method, data_type, dict(properties or {}))
        link_types = props.get("valid_types")
        if link_types is None and data_type in LINK_TYPES:
            if not old.is_link or not old.link_types:
                raise Fault(f"API {method}() a {data_type} field needs 'valid_types'")
            link_types = list(old.link_types)
        spec = FieldSpec(
            entity_type=etype, name=field_name, data_type=data_type,
            link_types=tuple(link_types or ()) if data_type in LINK_TYPES else (),
            valid_values=tuple(props.get("valid_values") or ()),
        )
        self._check_default(method, spec, props)
        by_id = {}
        for key, value in (values or {}).items():
            try:
                by_id[int(key)] = value
            except (TypeError, ValueError):
                raise Fault(f"API {method}() 'values' keys must be entity ids, got {key!r}") from None
        # Every new value first: nothing changes unless all of them are good.
        new_values: dict[int, Any] = {}
        for eid, row in self._db[etype].items():
            if eid in by_id:
                wire = _to_wire(by_id[eid])
            else:
                old_wire = _storage_to_wire(old, row.get(field_name))
                try:
                    wire = _to_wire(convert(old_wire))
                except (TypeError, ValueError, ArithmeticError) as e:
                    raise Fault(f"API {method}() can't convert {etype} {eid}'s value "
                                f"{json.dumps(old_wire, default=str)[:100]}: {e}") from None
            try:
                new_values[eid] = self._coerce(method, spec, wire)
            except Fault as e:
                raise Fault(f"{e.message} (converting {etype} {eid})", e.error_code) from None
        definition = self._field_definition(etype, spec, self._definition(etype, old), props)
        for eid, value in new_values.items():
            row = self._db[etype][eid]
            if value is None:
                row.pop(field_name, None)
            else:
                row[field_name] = value
        self._apply_schema_change(etype, field_name, spec, definition)
        ctx = self._event_context(self._default_caller(script))
        with self._transaction():
            self._retire_column(ctx, etype, field_name)
            self.events.column_new(ctx, self._new_column(etype, field_name, ctx.now))
        return field_name

    def column_id(self, entity_type: str, field_name: str) -> int | None:
        """The DisplayColumn id of a field now in the schema (what its schema
        events link to), or None."""
        return self._columns.get((entity_type, field_name))

    # -- site schema changes: the work ---------------------------------------
    def _create_field(self, method: str, etype: str, name: str, data_type: Any, props: dict,
                      caller: Caller, allowed: frozenset[str]) -> str:
        if etype == "EventLogEntry":
            raise Fault(f"API {method}() the emulator does not change EventLogEntry's fields")
        if not isinstance(data_type, str) or data_type not in allowed:
            raise Fault(f"API {method}() invalid data_type {data_type!r}: "
                        f"valid data types: {', '.join(sorted(allowed))}")
        props = self._check_properties(method, data_type, props)
        if data_type in LINK_TYPES and not props.get("valid_types"):
            raise Fault(f"API {method}() a {data_type} field needs the 'valid_types' property")
        spec = FieldSpec(
            entity_type=etype, name=name, data_type=data_type,
            link_types=tuple(props.get("valid_types") or ()),
            valid_values=tuple(props.get("valid_values") or ()),
        )
        self._check_default(method, spec, props)
        definition = self._field_definition(etype, spec, None, props)
        self._apply_schema_change(etype, name, spec, definition)
        ctx = self._event_context(caller)
        with self._transaction():
            self.events.column_new(ctx, self._new_column(etype, name, ctx.now))
        log.debug("schema: created {etype}.{name} ({dtype})", etype=etype, name=name, dtype=data_type)
        return name

    def _update_field(self, method: str, etype: str, fname: Any, props: dict, caller: Caller) -> bool:
        old = self.schema.get_field(etype, fname) if isinstance(fname, str) else None
        if old is None:
            raise faults.unknown_field(method, etype, str(fname))
        props = self._check_properties(method, old.data_type, props)
        if "valid_types" in props and not props["valid_types"]:
            raise Fault(f"API {method}() 'valid_types' can't be empty")
        spec = old
        if "valid_types" in props:
            spec = dataclasses.replace(spec, link_types=tuple(props["valid_types"]))
        if "valid_values" in props:
            spec = dataclasses.replace(spec, valid_values=tuple(props["valid_values"] or ()))
        self._check_default(method, spec, props)
        before = self._definition(etype, old)
        after = self._field_definition(etype, spec, before, props)
        changes = [
            (key, _property_value(before, key), _property_value(after, key))
            for key in FIELD_PROPERTIES
            if key in props and _property_value(before, key) != _property_value(after, key)
        ]
        if not changes:
            return True
        self._apply_schema_change(etype, fname, spec, after)
        ctx = self._event_context(caller)
        column = self._columns[(etype, fname)]
        with self._transaction():
            for key, old_value, new_value in changes:
                self.events.column_change(ctx, column, COLUMN_ATTRIBUTES.get(key, key), old_value, new_value)
        return True

    def _delete_field(self, method: str, etype: str, fname: Any, caller: Caller) -> bool:
        self._changeable_field(method, etype, fname)
        if fname == self.schema.identifier(etype):
            raise Fault(f"API {method}() {etype}.{fname} is the display name field of {etype} "
                        f"and can't be deleted")
        for row in self._db[etype].values():
            row.pop(fname, None)
        self._apply_schema_change(etype, fname, None, None)
        ctx = self._event_context(caller)
        with self._transaction():
            self._retire_column(ctx, etype, fname)
        log.debug("schema: deleted {etype}.{name}", etype=etype, name=fname)
        return True

    def _changeable_field(self, method: str, etype: str, fname: Any) -> FieldSpec:
        """The spec of a field a delete or type change may touch, or a fault."""
        spec = self.schema.get_field(etype, fname) if isinstance(fname, str) else None
        if spec is None:
            raise faults.unknown_field(method, etype, str(fname))
        if fname in PROTECTED_FIELDS or etype == "EventLogEntry":
            raise Fault(f"API {method}() {etype}.{fname} is a system field and can't be changed")
        return spec

    def _check_properties(self, method: str, data_type: str, props: dict) -> dict:
        """Validate property values for a field of `data_type`; normalized copies."""
        out: dict[str, Any] = {}
        for key, value in props.items():
            if key not in FIELD_PROPERTIES:
                raise Fault(f"API {method}() invalid property {key!r}: valid property names: "
                            f"{', '.join(FIELD_PROPERTIES)}")
            if key == "name":
                if not isinstance(value, str) or not value.strip():
                    raise Fault(f"API {method}() property 'name' must be a non-empty string")
            elif key in ("description", "summary_default", "custom_metadata"):
                if value is not None and not isinstance(value, str):
                    raise Fault(f"API {method}() property {key!r} must be a string")
            elif key == "valid_types":
                if data_type not in LINK_TYPES:
                    raise Fault(f"API {method}() property 'valid_types' is only for entity and "
                                f"multi_entity fields, not {data_type}")
                if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                    raise Fault(f"API {method}() property 'valid_types' must be a list of entity types")
                for ltype in value:
                    if ltype not in self.schema:
                        raise faults.unknown_entity_type(method, ltype)
                value = list(dict.fromkeys(value))
            elif key == "valid_values":
                if data_type not in ("list", "status_list"):
                    raise Fault(f"API {method}() property 'valid_values' is only for list and "
                                f"status_list fields, not {data_type}")
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise Fault(f"API {method}() property 'valid_values' must be a list of strings")
                value = list(dict.fromkeys(value))
            elif key == "visible":
                if not isinstance(value, bool):
                    raise Fault(f"API {method}() property 'visible' must be true or false")
            out[key] = copy.deepcopy(value)
        return out

    def _check_default(self, method: str, spec: FieldSpec, props: dict) -> None:
        """Refuse a default_value the field could not hold; store it in wire form."""
        value = props.get("default_value")
        if value is None:
            return
        if spec.is_link or spec.data_type in READ_ONLY_TYPES or spec.data_type == "image":
            raise Fault(f"API {method}() a {spec.data_type} field takes no default_value")
        self._coerce(method, spec, _to_wire(value))
        props["default_value"] = _to_wire(value)

    def _field_definition(self, etype: str, spec: FieldSpec, before: dict | None, props: dict) -> dict:
        """The schema_read definition of `spec`: `before` (a definition of the
        field, not modified) with `props` applied, or a new one. A data type
        change resets the type's properties (default, summary, valid_*)."""
        fresh = Schema([EntitySpec(etype, "id", {spec.name: spec})]).to_schema_read()[etype][spec.name]
        if before is None:
            definition = fresh
            definition["name"]["value"] = spec.name
        else:
            definition = copy.deepcopy(before)
            old_type = (definition.get("data_type") or {}).get("value")
            if old_type != spec.data_type:
                definition["data_type"] = fresh["data_type"]
                definition["properties"] = fresh["properties"]
        properties = definition.setdefault("properties", {})
        if spec.is_link:
            properties["valid_types"] = {"editable": True, "value": list(spec.link_types)}
        elif "valid_types" in properties:
            del properties["valid_types"]
        if spec.data_type in ("list", "status_list"):
            properties["valid_values"] = {"editable": True, "value": list(spec.valid_values)}
        elif "valid_values" in properties:
            del properties["valid_values"]
        for key, value in props.items():
            if key in ("name", "description", "custom_metadata"):
                definition[key] = {"editable": True, "value": value if value is not None else ""}
            elif key in ("default_value", "summary_default"):
                properties[key] = {"editable": True, "value": value}
        return definition

    def _definition(self, etype: str, spec: FieldSpec) -> dict:
        """The schema_read definition the emulator serves for a field."""
        found = (self._schema.get(etype) or {}).get(spec.name)
        return found if found is not None else self._field_definition(etype, spec, None, {})

    def _apply_schema_change(self, etype: str, fname: str, spec: FieldSpec | None,
                             definition: dict | None) -> None:
        """Put `spec` (None: remove the field) in a new Schema and its
        `definition` in a new schema_read dict; the read engine and the
        row defaults follow. The objects in use before are not modified."""
        entities = dict(self.schema.entities)
        entity = entities[etype]
        fields = dict(entity.fields)
        old = fields.get(fname)
        if spec is None:
            fields.pop(fname, None)
        else:
            fields[fname] = spec
        entities[etype] = dataclasses.replace(entity, fields=fields)
        if old is not None and (spec is None or spec.data_type != old.data_type):
            # Mirrors of the old field no longer pair with it.
            _drop_reverse(entities, f"{etype}.{fname}")
        schema_read = dict(self._schema)
        type_fields = dict(schema_read.get(etype) or {})
        if definition is None:
            type_fields.pop(fname, None)
        else:
            type_fields[fname] = definition
        schema_read[etype] = type_fields
        self._schema = schema_read
        self._set_schema(Schema(entities.values(), source=self.schema.source))

    def _set_schema(self, schema: Schema) -> None:
        self.schema = schema
        self.engine.set_schema(schema)
        self._defaults = self._collect_defaults()

    def _restore_schema(self) -> None:
        """Back to the schema the emulator started with; fresh DisplayColumn ids."""
        self._schema = self._initial_schema_read
        self._set_schema(self._initial_schema)
        self._db[COLUMN_TYPE].clear()
        self._columns.clear()
        self._next_column_id = 1
        now = self.now()
        for entity in self.schema:
            for fname in sorted(entity.fields):
                self._new_column(entity.name, fname, now)

    def _new_column(self, etype: str, fname: str, now: datetime.datetime) -> int:
        """A DisplayColumn row for a field; its id. The row's ``code`` (its
        link name) is the field's system name."""
        column_id = self._next_column_id
        self._next_column_id += 1
        self._db[COLUMN_TYPE][column_id] = {
            "type": COLUMN_TYPE, "id": column_id, "__retired": False, "code": fname,
            "created_at": now, "updated_at": now,
        }
        self._columns[(etype, fname)] = column_id
        return column_id

    def _retire_column(self, ctx: EventContext, etype: str, fname: str) -> None:
        column_id = self._columns.pop((etype, fname), None)
        if column_id is None:
            return
        row = self._db[COLUMN_TYPE][column_id]
        row["__retired"] = True
        self.events.column_retirement(ctx, column_id, row.get("code"))

    # -- writing rows ------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """All or nothing: rows and events of a failing block are undone.
        Nested blocks join the outer one (a batch)."""
        if self._journal is not None:
            yield
            return
        self._journal = {}
        self.events.begin()
        try:
            yield
        except BaseException:
            for (etype, eid), before in self._journal.items():
                if before is None:
                    self._db[etype].pop(eid, None)
                else:
                    self._db[etype][eid] = before
            self.events.rollback()
            raise
        else:
            self.events.commit()
        finally:
            self._journal = None

    def _writable(self, etype: str, eid: int) -> dict:
        """The stored row, journaled before its first change in this transaction."""
        row = self._db[etype][eid]
        if self._journal is not None and (etype, eid) not in self._journal:
            self._journal[(etype, eid)] = copy.deepcopy(row)
        return row

    def _allocate_id(self, etype: str, fixed: Any = None) -> int:
        if fixed is not None:
            eid = _entity_id("seed", fixed)
            if eid in self._db[etype]:
                raise Fault(f"seed: {etype} {eid} already exists")
            self._next_ids[etype] = max(self._next_ids.get(etype, 1), eid + 1)
            return eid
        eid = self._next_ids.get(etype, 1)
        while eid in self._db[etype]:
            eid += 1
        self._next_ids[etype] = eid + 1
        return eid

    def _insert_raw(self, etype: str, fields: dict, now: datetime.datetime) -> int:
        """A bookkeeping row written outside any request (no events)."""
        eid = self._allocate_id(etype)
        row = {"type": etype, "id": eid, "__retired": False, "created_at": now, "updated_at": now}
        for fname, value in fields.items():
            if self.schema.get_field(etype, fname) is not None:
                row[fname] = value
        self._db[etype][eid] = row
        return eid

    def _create_row(self, etype: str, values: dict, ctx: EventContext, caller: Caller,
                    fixed_id: Any = None) -> dict:
        eid = self._allocate_id(etype, fixed_id)
        row: dict[str, Any] = {"type": etype, "id": eid, "__retired": False}
        row.update(copy.deepcopy(self._defaults.get(etype, {})))
        row["created_at"] = ctx.now
        row["updated_at"] = ctx.now
        row["created_by"] = _link(caller.user)
        row["updated_by"] = _link(caller.user)
        row.update(values)
        self._db[etype][eid] = row
        if self._journal is not None:
            self._journal[(etype, eid)] = None
        ref = _ref(etype, eid)
        self.events.new_entity(ctx, ref, row.get("project"), self._display_name(etype, row))
        for fname, value in values.items():
            if fname in ("created_at", "created_by", "updated_at", "updated_by"):
                continue
            spec = self.schema.get_field(etype, fname)
            if spec is None or value is None or value == []:
                continue
            if spec.data_type == "multi_entity":
                event_id = self.events.attribute_change(
                    ctx, ref, row.get("project"), fname, spec.data_type,
                    added=[self._meta_link(v) for v in value], removed=[], in_create=True)
                self._backrefs(spec, eid, value, [], ctx, caller, event_id, True)
            else:
                event_id = self.events.attribute_change(
                    ctx, ref, row.get("project"), fname, spec.data_type,
                    old_value=None, new_value=self._meta_value(spec, value), in_create=True)
                if spec.data_type == "entity":
                    self._backrefs(spec, eid, [value], [], ctx, caller, event_id, True)
        return row

    def _update_row_values(self, etype: str, eid: int, values: dict, modes: dict,
                           ctx: EventContext, caller: Caller) -> None:
        row = self._writable(etype, eid)
        ref = _ref(etype, eid)
        changed = False
        for fname, value in values.items():
            spec = self.schema.get_field(etype, fname)
            assert spec is not None
            if spec.data_type == "multi_entity":
                old = list(row.get(fname) or [])
                new = _apply_mode(old, value or [], modes.get(fname, "set"))
                if new == old:
                    continue
                added = [v for v in new if v not in old]
                removed = [v for v in old if v not in new]
                row[fname] = new
                changed = True
                if added or removed:
                    event_id = self.events.attribute_change(
                        ctx, ref, row.get("project"), fname, spec.data_type,
                        added=[self._meta_link(v) for v in added],
                        removed=[self._meta_link(v) for v in removed])
                    self._backrefs(spec, eid, added, removed, ctx, caller, event_id, False)
            else:
                old = row.get(fname)
                if spec.data_type == "checkbox":
                    old = bool(old)
                if old == value:
                    continue
                row[fname] = value
                changed = True
                event_id = self.events.attribute_change(
                    ctx, ref, row.get("project"), fname, spec.data_type,
                    old_value=self._meta_value(spec, old), new_value=self._meta_value(spec, value))
                if spec.data_type == "entity":
                    self._backrefs(spec, eid, [value] if value else [], [old] if old else [],
                                   ctx, caller, event_id, False)
        if changed:
            self._touch(row, ctx, caller)

    def _touch(self, row: dict, ctx: EventContext, caller: Caller) -> None:
        row["updated_at"] = ctx.now
        row["updated_by"] = _link(caller.user)

    def _backrefs(self, spec: FieldSpec, source_id: int, added: list, removed: list,
                  ctx: EventContext, caller: Caller, original_event_id: int | None,
                  in_create: bool) -> None:
        """Keep the mirror fields of `spec` in step (Task.entity <-> Shot.tasks),
        writing the backref events Shotgun writes on the other side."""
        source = _ref(spec.entity_type, source_id)
        cause = f"{spec.entity_type}.{spec.name}"
        for link, adding in [(l, False) for l in removed] + [(l, True) for l in added]:
            if not link:
                continue
            mirror = self.schema.reverse_of(spec.entity_type, spec.name, link["type"])
            if mirror is None or link["id"] not in self._db.get(link["type"], {}):
                continue
            self._mirror_change(mirror, link["id"], source, adding, ctx, caller, cause,
                                spec, original_event_id, in_create, cascade=True)

    def _mirror_change(self, mirror: FieldSpec, target_id: int, source: dict, adding: bool,
                       ctx: EventContext, caller: Caller, cause: str, cause_spec: FieldSpec,
                       original_event_id: int | None, in_create: bool, cascade: bool) -> None:
        target = self._writable(mirror.entity_type, target_id)
        tref = _ref(mirror.entity_type, target_id)
        extra = {"actual_attribute_changed": cause}
        if original_event_id is not None:
            extra["original_event_log_entry_id"] = original_event_id
        common = dict(entity=tref, extra_meta=extra, in_create=in_create)
        if mirror.data_type == "multi_entity":
            current = list(target.get(mirror.name) or [])
            if adding and source not in current:
                target[mirror.name] = current + [source]
                delta = {"added": [self._meta_link(source)], "removed": []}
            elif not adding and source in current:
                target[mirror.name] = [v for v in current if v != source]
                delta = {"added": [], "removed": [self._meta_link(source)]}
            else:
                return
            self._touch(target, ctx, caller)
            self.events.attribute_change(ctx, source, target.get("project"), mirror.name,
                                         cause_spec.data_type, **delta, **common)
            return
        # A single-entity mirror (Shot.tasks changed -> Task.entity).
        old = target.get(mirror.name)
        if adding:
            if old == source:
                return
            target[mirror.name] = dict(source)
        else:
            if old != source:
                return
            target[mirror.name] = None
        self._touch(target, ctx, caller)
        self.events.attribute_change(
            ctx, source, target.get("project"), mirror.name, cause_spec.data_type,
            old_value=self._meta_link(old) if old else None,
            new_value=self._meta_link(target[mirror.name]) if target[mirror.name] else None,
            **common)
        if adding and old and cascade:
            # The task left its old parent: that parent's list loses it.
            other = self.schema.reverse_of(mirror.entity_type, mirror.name, old["type"])
            if other is not None and old["id"] in self._db.get(old["type"], {}):
                self._mirror_change(other, old["id"], tref, False, ctx, caller, cause, cause_spec,
                                    original_event_id, in_create, cascade=False)

    # -- values ------------------------------------------------------------
    def _coerce_values(self, etype: str, data: dict, method: str, seeding: bool = False) -> dict:
        """Wire values -> storage values, refusing what Shotgun refuses."""
        etype = self._check_type(method, etype)
        out = {}
        for fname, value in data.items():
            if fname in ("id", "type") and not seeding:
                raise Fault(f"API {method}() CRUD ERROR #4: {etype}.{fname} can't be set")
            if fname in ("id", "type"):
                continue
            spec = self.schema.get_field(etype, fname)
            if spec is None:
                raise faults.unknown_field(method, etype, fname)
            if not seeding:
                if fname in SITE_FIELDS or (fname in CREATE_ONLY_FIELDS and method != "create"):
                    raise Fault(f"API {method}() CRUD ERROR #4: {etype}.{fname} is not editable")
                if spec.data_type in READ_ONLY_TYPES:
                    raise Fault(
                        f"API {method}() CRUD ERROR #4: {etype}.{fname} is a {spec.data_type} field "
                        f"and is not editable"
                    )
            out[fname] = self._coerce(method, spec, value)
        return out

    def _coerce(self, method: str, spec: FieldSpec, value: Any) -> Any:
        where = f"{spec.entity_type}.{spec.name}"

        def bad(expected: str) -> Fault:
            return Fault(
                f"API {method}() CRUD ERROR #6: {where} is a {spec.data_type} field; "
                f"expected {expected}, got {json.dumps(value, default=str)[:200]}"
            )

        dt = spec.data_type
        if dt == "multi_entity":
            if value is None:
                return []
            if not isinstance(value, list):
                raise bad("a list of entity links")
            out: list[dict] = []
            for item in value:
                link = self._coerce_link(method, spec, item, bad)
                if link not in out:
                    out.append(link)
            return out
        if dt == "checkbox":
            if value is None:
                return False
            if not isinstance(value, bool):
                raise bad("true or false")
            return value
        if value is None:
            return None
        if dt == "entity":
            return self._coerce_link(method, spec, value, bad)
        if dt in ("text", "color", "entity_type", "uuid", "footage", "password", "list", "status_list"):
            if not isinstance(value, str):
                raise bad("a string")
            if dt in ("list", "status_list") and spec.valid_values and value not in spec.valid_values:
                raise Fault(
                    f"API {method}() CRUD ERROR #6: {where}: {value!r} is not a valid value; "
                    f"valid values: {', '.join(spec.valid_values)}"
                )
            if dt == "entity_type" and value not in self.schema:
                raise bad("an entity type name")
            return value
        if dt in ("number", "duration", "percent", "timecode"):
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    return int(value)
                raise bad("an integer")
            return value
        if dt in ("float", "currency"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise bad("a number")
            return float(value)
        if dt == "date":
            if not isinstance(value, str) or not _DATE_RE.match(value):
                raise bad("a date 'YYYY-MM-DD'")
            try:
                datetime.date.fromisoformat(value)
            except ValueError:
                raise bad("a date 'YYYY-MM-DD'") from None
            return value
        if dt == "date_time":
            if isinstance(value, datetime.datetime):
                return parse_datetime(format_datetime(value))
            if not isinstance(value, str):
                raise bad("a date_time 'YYYY-MM-DDTHH:MM:SSZ'")
            try:
                return parse_datetime(value)
            except ValueError:
                raise bad("a date_time 'YYYY-MM-DDTHH:MM:SSZ'") from None
        if dt == "tag_list":
            if not isinstance(value, list):
                raise bad("a list of tag names")
            tags = []
            for tag in value:
                if isinstance(tag, dict) and isinstance(tag.get("name"), str):
                    tag = tag["name"]
                if not isinstance(tag, str):
                    raise bad("a list of tag names")
                if tag not in tags:
                    tags.append(tag)
            return tags
        if dt == "serializable":
            if not isinstance(value, (dict, list)):
                raise bad("a JSON object")
            return copy.deepcopy(value)
        if dt == "url":
            if not isinstance(value, dict):
                raise bad("a url mapping")
            return copy.deepcopy(value)
        if dt == "image":
            raise bad("null (images are uploaded, not written)")
        raise bad("nothing: this data type is not writable")

    def _coerce_link(self, method: str, spec: FieldSpec, value: Any, bad: Callable[[str], Fault]) -> dict:
        if not isinstance(value, dict) or "type" not in value or "id" not in value:
            raise bad("an entity link {type, id}")
        ltype, lid = value["type"], value["id"]
        if isinstance(lid, bool) or not isinstance(lid, int):
            raise bad("an entity link with an integer id")
        if spec.link_types and ltype not in spec.link_types:
            raise Fault(
                f"API {method}() CRUD ERROR #6: {spec.entity_type}.{spec.name} can't link to "
                f"{ltype}; valid types: {', '.join(spec.link_types)}"
            )
        if ltype not in self.schema:
            raise faults.unknown_entity_type(method, ltype)
        if lid not in self._db[ltype]:
            raise Fault(
                f"API {method}() CRUD ERROR #6: {spec.entity_type}.{spec.name}: "
                f"{ltype} with id {lid} does not exist"
            )
        return {"type": ltype, "id": lid}

    def _meta_value(self, spec: FieldSpec, value: Any) -> Any:
        """A storage value as event meta shows it."""
        if value is None:
            return None
        if spec.data_type == "entity":
            return self._meta_link(value)
        if spec.data_type == "date_time":
            return format_meta_datetime(value)
        if spec.data_type == "password":
            return "*******"
        return copy.deepcopy(value)

    def _meta_link(self, link: dict) -> dict:
        return {"type": link["type"], "id": link["id"], "name": self.engine.link_name(link["type"], link["id"])}

    def _display_name(self, etype: str, row: dict) -> Any:
        ident = self.schema.identifier(etype)
        if ident == "id":
            return f"{etype} {row['id']}"
        return row.get(ident)

    def _render(self, etype: str, row: dict, fields: list[str]) -> dict:
        out: dict[str, Any] = {"type": etype, "id": row["id"]}
        for fname in fields:
            if fname in ("type", "id"):
                continue
            out[fname] = self.engine.render_field(etype, row, fname)
        return out

    # -- checks --------------------------------------------------------------
    def _check_type(self, method: str, etype: Any) -> str:
        if not isinstance(etype, str) or etype not in self.schema:
            raise faults.unknown_entity_type(method, etype)
        return etype

    def _check_return_fields(self, method: str, etype: str, fields: list[str]) -> None:
        for fname in fields:
            head = fname.split(".", 1)[0]
            if head not in ("type", "id") and self.schema.get_field(etype, head) is None:
                raise faults.unknown_field(method, etype, head)

    def _live_row(self, method: str, etype: str, eid: int) -> dict:
        row = self._db[etype].get(eid)
        if row is None or row.get("__retired"):
            raise Fault(f"API {method}() CRUD ERROR #3: Entity {etype} with id {eid} does not exist")
        return row

    def _event_context(self, caller: Caller, enabled: bool = True) -> EventContext:
        enabled = enabled and self.generate_events
        if enabled and caller.user["type"] == "ApiUser":
            row = self._db["ApiUser"].get(caller.user["id"]) or {}
            if row.get("generate_event_log_entries") is False:
                enabled = False
        return EventContext(caller.user, self.now(), caller.session_uuid, enabled, caller.name)

    def _collect_defaults(self) -> dict[str, dict[str, Any]]:
        """Per type, the values a new row starts with (schema default_value
        for scalar types; False for checkboxes)."""
        out: dict[str, dict[str, Any]] = {}
        for entity in self.schema:
            defaults: dict[str, Any] = {}
            raw_fields = self._schema.get(entity.name, {})
            for spec in entity.fields.values():
                if spec.data_type == "checkbox":
                    defaults[spec.name] = False
                if spec.data_type not in ("checkbox", "text", "list", "status_list", "number", "float"):
                    continue
                try:
                    value = raw_fields[spec.name]["properties"]["default_value"]["value"]
                except (KeyError, TypeError):
                    continue
                if value is None:
                    continue
                try:
                    defaults[spec.name] = self._coerce_default(spec, value)
                except (Fault, ValueError):
                    continue
            out[entity.name] = defaults
        return out

    def _coerce_default(self, spec: FieldSpec, value: Any) -> Any:
        if spec.data_type == "checkbox":
            return bool(value)
        if spec.data_type in ("number",) and isinstance(value, int) and not isinstance(value, bool):
            return value
        if spec.data_type == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if spec.data_type in ("text", "list", "status_list") and isinstance(value, str):
            return value
        raise ValueError(value)


# -- helpers -------------------------------------------------------------------


def _ref(etype: str, eid: int) -> dict:
    return {"type": etype, "id": eid}


def _link(value: dict | None) -> dict | None:
    return None if value is None else {"type": value["type"], "id": value["id"]}


def _apply_mode(old: list[dict], value: list[dict], mode: str) -> list[dict]:
    if mode == "add":
        return old + [v for v in value if v not in old]
    if mode == "remove":
        return [v for v in old if v not in value]
    return list(value)


def _require_dict(args: Any, method: str) -> None:
    if not isinstance(args, dict):
        raise Fault(f"API {method}() expects a mapping of arguments")


def _entity_id(method: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Fault(f"API {method}() needs an integer 'id', got {value!r}")
    return value


def _field_list(method: str, fields: Any) -> list[dict]:
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("field_name"), str) for f in fields
    ):
        raise Fault(f"API {method}() 'fields' must be a list of {{field_name, value}}")
    return fields


def _string_list(method: str, key: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Fault(f"API {method}() {key!r} must be a list of field names")
    return value


def _update_modes(args: dict, field_list: list[dict]) -> dict[str, str]:
    """Per-field multi_entity_update_mode, from each field entry (what the
    client sends) or a top-level ``multi_entity_update_modes`` mapping."""
    modes: dict[str, str] = {}
    top = args.get("multi_entity_update_modes")
    if isinstance(top, dict):
        modes.update(top)
    for item in field_list:
        if "multi_entity_update_mode" in item:
            modes[item["field_name"]] = item["multi_entity_update_mode"]
    return {k: v for k, v in modes.items() if any(f["field_name"] == k for f in field_list)}


def _property_list(method: str, value: Any) -> dict[str, Any]:
    """The wire ``properties`` list ``[{property_name, value}]`` as a dict
    (a later entry for the same name wins, as the client builds it)."""
    if value is None:
        return {}
    if not isinstance(value, list) or not all(
        isinstance(p, dict) and isinstance(p.get("property_name"), str) for p in value
    ):
        raise Fault(f"API {method}() 'properties' must be a list of {{property_name, value}}")
    return {p["property_name"]: p.get("value") for p in value}


def _property_value(definition: dict, key: str) -> Any:
    """A property's value in a schema_read field definition."""
    if key in ("name", "description", "custom_metadata", "visible"):
        return (definition.get(key) or {}).get("value")
    return ((definition.get("properties") or {}).get(key) or {}).get("value")


def _drop_reverse(entities: dict[str, EntitySpec], dead: str) -> None:
    """Remove ``Type.field`` `dead` from every field's reverse pairing."""
    for name, entity in list(entities.items()):
        changed = {}
        for spec in entity.fields.values():
            if not spec.reverse:
                continue
            parts = [p.strip() for p in spec.reverse.split(",")]
            if dead in parts:
                rest = [p for p in parts if p != dead]
                changed[spec.name] = dataclasses.replace(spec, reverse=",".join(rest) or None)
        if changed:
            entities[name] = dataclasses.replace(entity, fields={**entity.fields, **changed})


def _storage_to_wire(spec: FieldSpec, value: Any) -> Any:
    """A stored value as the client would send it (links without names;
    missing multi_entity/tag_list = [], missing checkbox = False)."""
    dt = spec.data_type
    if dt in ("multi_entity", "tag_list"):
        if dt == "multi_entity":
            return [_link(v) for v in value or ()]
        return list(value or ())
    if dt == "checkbox":
        return bool(value)
    if value is None:
        return None
    if dt == "entity":
        return _link(value)
    if dt == "date_time" and isinstance(value, datetime.datetime):
        return format_datetime(value)
    return copy.deepcopy(value)


def _dict_to_list(data: dict) -> list[dict]:
    return [{"field_name": k, "value": v} for k, v in data.items()]


def _to_wire(value: Any) -> Any:
    """Python values (datetime, date) to wire form, as the client sends them
    (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime.datetime):
        return format_datetime(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    return value
