"""Test support for PostgreSQL: a throw-away database per test.

The server comes from ``SGCACHE_TEST_POSTGRES`` (a libpq URL of a database
the role can connect to and create databases from; default
``postgresql://postgres@127.0.0.1:5432/postgres``). When the server cannot be
reached the test is skipped -- unless ``CI`` is set, where a missing
database is a broken build and the test fails.
"""

from __future__ import annotations

import itertools
import os
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from twisted.internet import defer
from txpostgres import txpostgres

from sgcache.store.postgres import redact

DEFAULT_BASE = "postgresql://postgres@127.0.0.1:5432/postgres"

_counter = itertools.count(1)


def base_url() -> str:
    return os.environ.get("SGCACHE_TEST_POSTGRES") or DEFAULT_BASE


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


async def _admin(base: str, sql: str) -> None:
    from twisted.internet import reactor

    conn = txpostgres.Connection(reactor=reactor)
    try:
        await conn.connect(base, connect_timeout=5)
        await conn.runOperation(sql)
    finally:
        if conn.pollable() is not None:
            conn.close()


async def fresh_postgres_url(testcase: Any) -> str:
    """The URL of a new, empty database, dropped when `testcase` ends."""
    base = base_url()
    name = f"sgcache_test_{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
    try:
        try:
            # A UTF-8 ctype, so lower() folds non-ASCII text.
            await _admin(
                base,
                f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' "
                "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
            )
        except psycopg2.errors.InvalidParameterValue:
            # No C.UTF-8 locale on this server: take its default.
            await _admin(base, f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    except psycopg2.Error as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        message = f"PostgreSQL not reachable at {redact(base)}: {reason}"
        if in_ci():
            testcase.fail(f"{message} (CI is set, so this is an error)")
        testcase.skipTest(message)

    def drop() -> defer.Deferred:
        return defer.ensureDeferred(
            _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )

    testcase.addCleanup(drop)
    return urlunsplit(urlsplit(base)._replace(path="/" + name))
