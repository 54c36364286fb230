"""Test helpers: run a Shotgun emulator in-process on an ephemeral port and
talk to it with the real (synchronous) `shotgun_api3.Shotgun` client.

`EmulatorTestCase` does all of this for a trial test; by hand::

    async def _setUp(self):
        self.site = await start_emulator(schema, scripts={"test": "key"})
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.sg = client(self.site.url, "test", "key")
        self.addCleanup(self.sg.close)
        ...
        shot = await deferToThread(self.sg.create, "Shot", {"code": "sh010"})

`RunningEmulator.stop` stops listening and drops every server-side
connection (the client keeps its keep-alive socket open), waiting until they
are gone, so trial's reactor is left clean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import shotgun_api3
import treq
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import WrappingFactory
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from sgcache.schema import Schema
from sgcache.testing.emulator import Emulator
from sgcache.testing.server import EmulatorServer


class TrackingFactory(WrappingFactory):
    """A WrappingFactory that can say when its last connection is gone."""

    def __init__(self, wrapped: Any):
        super().__init__(wrapped)
        self._idle: list[defer.Deferred] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drop_all(self) -> defer.Deferred:
        """Abort every open connection; fires once none is left."""
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        for proto in list(self.protocols):
            proto.transport.abortConnection()
        return d


@dataclass
class RunningEmulator:
    """An emulator listening on 127.0.0.1."""

    url: str
    emulator: Emulator
    server: EmulatorServer
    port: IListeningPort
    factory: TrackingFactory

    async def stop(self) -> None:
        """Stop listening and drop its connections (again: nothing more)."""
        stopped = self.port.stopListening()
        if stopped is not None:
            await stopped
        await self.factory.drop_all()


async def start_emulator(
    schema: Schema,
    *,
    scripts: Mapping[str, str] | None = None,
    users: Mapping[str, str] | None = None,
    page_size: int = 500,
    test_mode: bool = True,
    schema_read: dict | None = None,
    schema_entity_read: dict | None = None,
    prefix: str = "",
    reactor: Any = None,
    **emulator_kwargs: Any,
) -> RunningEmulator:
    """Start an emulator on an ephemeral port; its url carries `prefix`."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    emulator = Emulator(
        schema,
        scripts=scripts if scripts is not None else {"test": "key"},
        users=users,
        page_size=page_size,
        schema_read=schema_read,
        schema_entity_read=schema_entity_read,
        clock=reactor,
        **emulator_kwargs,
    )
    server = EmulatorServer(emulator, reactor, test_mode=test_mode)
    site = Site(server.resource())
    site.displayTracebacks = False
    factory = TrackingFactory(site)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}{prefix.rstrip('/')}"
    return RunningEmulator(url, emulator, server, port, factory)


def client(
    url: str,
    script: str = "test",
    key: str = "key",
    timeout_secs: float = 10.0,
    **kwargs: Any,
) -> shotgun_api3.Shotgun:
    """A real client for `url` that has not connected yet (its first call,
    made in a thread, fetches `info`). Call `.close()` at the end."""
    if "login" in kwargs or "session_token" in kwargs:
        sg = shotgun_api3.Shotgun(url, connect=False, **kwargs)
    else:
        sg = shotgun_api3.Shotgun(url, script_name=script, api_key=key, connect=False, **kwargs)
    sg.config.timeout_secs = timeout_secs
    # Retrying a connection-level failure hides injected faults; fail fast.
    sg.config.max_rpc_attempts = 1
    return sg


# -- a trial base class for emulator tests ---------------------------------------

#: A small schema with backrefs on both sides (Task.entity <-> *.tasks,
#: Shot.sg_sequence <-> Sequence.shots, Asset.shots <-> Shot.assets) and one
#: field of most data types on Shot.
SMALL_SCHEMA = {
    "entities": {
        "Project": {
            "fields": {
                "name": "text",
                "tasks": {"type": "multi_entity", "entity_types": ["Task"], "reverse": "Task.entity"},
            }
        },
        "Sequence": {
            "fields": {
                "code": "text",
                "project": {"type": "entity", "entity_types": ["Project"]},
                "shots": {"type": "multi_entity", "entity_types": ["Shot"], "reverse": "Shot.sg_sequence"},
            }
        },
        "Shot": {
            "fields": {
                "code": "text",
                "description": "text",
                "sg_status_list": {"type": "status_list", "valid_values": ["wtg", "ip", "fin"]},
                "project": {"type": "entity", "entity_types": ["Project"]},
                "sg_sequence": {"type": "entity", "entity_types": ["Sequence"], "reverse": "Sequence.shots"},
                "tasks": {"type": "multi_entity", "entity_types": ["Task"], "reverse": "Task.entity"},
                "assets": {"type": "multi_entity", "entity_types": ["Asset"], "reverse": "Asset.shots"},
                "tag_list": "tag_list",
                "sg_cut_in": "number",
                "sg_ratio": "float",
                "sg_flag": "checkbox",
                "sg_date": "date",
                "sg_when": "date_time",
                "sg_link": "url",
                "sg_data": "serializable",
            }
        },
        "Asset": {
            "fields": {
                "code": "text",
                "project": {"type": "entity", "entity_types": ["Project"]},
                "shots": {"type": "multi_entity", "entity_types": ["Shot"], "reverse": "Shot.assets"},
                "tasks": {"type": "multi_entity", "entity_types": ["Task"], "reverse": "Task.entity"},
            }
        },
        "Task": {
            "fields": {
                "content": "text",
                "project": {"type": "entity", "entity_types": ["Project"]},
                "entity": {
                    "type": "entity",
                    "entity_types": ["Shot", "Asset", "Project"],
                    "reverse": "Shot.tasks,Asset.tasks,Project.tasks",
                },
                "task_assignees": {"type": "multi_entity", "entity_types": ["HumanUser"]},
            }
        },
    }
}

EVENT_FIELDS = [
    "event_type", "attribute_name", "entity", "meta", "project", "user", "created_at", "session_uuid",
]


def small_schema() -> Schema:
    """`SMALL_SCHEMA` as a `Schema`."""
    return Schema.from_dict(SMALL_SCHEMA, source="<small test schema>")


class EmulatorTestCase(unittest.TestCase):
    """A trial TestCase with an emulator on an ephemeral port (`self.site`,
    `self.emulator`) and a client `self.sg` for script test/key.

    Override `make_schema` (schema, schema_read dump, schema_entity_read
    dump) and the class attributes to vary the site."""

    page_size = 500
    test_mode = True
    prefix = ""
    scripts = {"test": "key", "other": "okey"}
    users: dict[str, str] = {}

    def make_schema(self) -> tuple[Schema, dict | None, dict | None]:
        return small_schema(), None, None

    def setUp(self) -> Any:
        return defer.ensureDeferred(self._start())

    async def _start(self) -> None:
        schema, dump, entity_dump = self.make_schema()
        self.site: RunningEmulator = await start_emulator(
            schema,
            scripts=self.scripts,
            users=self.users,
            page_size=self.page_size,
            test_mode=self.test_mode,
            schema_read=dump,
            schema_entity_read=entity_dump,
            prefix=self.prefix,
        )
        self.addCleanup(lambda: defer.ensureDeferred(self.site.stop()))
        self.emulator = self.site.emulator
        self.sg = self.client()

    def client(self, script: str = "test", key: str = "key", **kw: Any) -> Any:
        kw.setdefault("convert_datetimes_to_utc", False)  # naive UTC datetimes back
        sg = client(self.site.url, script, key, timeout_secs=10, **kw)
        self.addCleanup(sg.close)
        return sg

    def call(self, fn: Callable, *args: Any, **kwargs: Any) -> defer.Deferred:
        """Run a blocking client call in a thread."""
        return deferToThread(fn, *args, **kwargs)

    def http(self) -> treq.client.HTTPClient:
        """A treq client with its own non-persistent pool, closed at the end."""
        from twisted.internet import reactor

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        return treq.client.HTTPClient(Agent(reactor, pool=pool))

    async def post_json(self, path: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
        """POST to the emulator (url + path); the status and decoded JSON body."""
        data = raw if raw is not None else json.dumps(body).encode()
        response = await self.http().post(
            self.site.url + path, data=data, headers={b"content-type": [b"application/json"]}
        )
        content = await response.content()
        try:
            decoded = json.loads(content)
        except ValueError:
            decoded = content
        return response.code, decoded

    async def post_raw(
        self, path: str, body: Any, headers: Mapping[bytes, list[bytes]] | None = None
    ) -> tuple[Any, bytes]:
        """POST JSON to the emulator (url + path) with extra `headers`, with a
        plain Agent (treq would decode gzip): the response (``code``,
        ``headers``) and its body bytes exactly as received."""
        from twisted.internet import reactor
        from twisted.web.client import FileBodyProducer, readBody
        from twisted.web.http_headers import Headers
        from io import BytesIO

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        all_headers = Headers({b"content-type": [b"application/json"], **(headers or {})})
        producer = FileBodyProducer(BytesIO(json.dumps(body).encode()))
        response = await Agent(reactor, pool=pool).request(
            b"POST", (self.site.url + path).encode(), all_headers, producer
        )
        return response, await readBody(response)

    async def control(self, action: str, **args: Any) -> Any:
        code, body = await self.post_json("/_emulator/" + action, args)
        self.assertEqual(code, 200, body)
        return body["result"]

    async def events(self, sg: Any = None, after: int = 0) -> list[dict]:
        sg = sg or self.sg
        return await self.call(
            sg.find, "EventLogEntry", [["id", "greater_than", after]], EVENT_FIELDS,
            order=[{"field_name": "id", "direction": "asc"}],
        )


def async_test(fn: Callable) -> Callable:
    """Let a test be an `async def`."""

    def run(self: Any) -> defer.Deferred:
        return defer.ensureDeferred(fn(self))

    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run
