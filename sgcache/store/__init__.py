"""The cache database: `IStore` and its two backends, chosen by URL.

``open_store(url, reactor)`` builds (does not yet connect) a store; call
``await store.open()`` before use. URLs:

* ``sqlite:///relative/path.sqlite`` -- a file relative to the working directory;
* ``sqlite:////absolute/path.sqlite`` -- an absolute path;
* ``sqlite://:memory:`` -- a private in-memory database;
* ``postgresql://user[:password]@host[:port]/dbname[?libpq options]`` or
  ``postgresql:///dbname`` (local socket); ``postgres://`` is accepted too.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sgcache.store.interface import IStore, StoreError

__all__ = ["IStore", "StoreError", "open_store", "parse_store_url"]

_USAGE = (
    "expected sqlite:///relative/path, sqlite:////absolute/path, sqlite://:memory: "
    "or postgresql://user@host:port/dbname"
)


def parse_store_url(url: str) -> tuple[str, str]:
    """("sqlite", path) or ("postgresql", libpq URL); ValueError with one
    line naming the problem otherwise."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"bad store URL {url!r}: {_USAGE}")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        if rest == ":memory:" or rest == "/:memory:":
            return "sqlite", ":memory:"
        if not rest.startswith("/") or rest in ("/", "//"):
            raise ValueError(f"bad store URL {url!r}: {_USAGE}")
        path = rest[1:]
        if path.endswith("/"):
            raise ValueError(f"bad store URL {url!r}: the SQLite path names a directory")
        return "sqlite", path
    if scheme in ("postgresql", "postgres"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 -- validates the port
        except ValueError as e:
            raise ValueError(f"bad store URL {url!r}: {e}") from None
        dbname = parts.path.lstrip("/")
        if not dbname or "/" in dbname:
            raise ValueError(f"bad store URL {url!r}: no database name ({_USAGE})")
        return "postgresql", url
    raise ValueError(f"bad store URL {url!r}: unknown scheme {scheme!r} ({_USAGE})")


def open_store(url: str, reactor: Any, read_pool: int | None = None) -> IStore:
    """The store a URL names, not yet opened (``await store.open()``).
    `read_pool`: PostgreSQL connections for clients' reads."""
    kind, target = parse_store_url(url)
    if kind == "sqlite":
        from sgcache.store.sqlite import SQLiteStore

        return SQLiteStore(target, reactor)
    from sgcache.store.postgres import DEFAULT_READ_POOL, PostgresStore

    return PostgresStore(target, reactor, pool_size=read_pool or DEFAULT_READ_POOL)
