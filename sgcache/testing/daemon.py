"""Test helper: run the sgcache daemon in-process in front of an emulator,
the way `twistd sgcache` would, and talk to both with the real client.

    site = await start_emulator(schema, scripts={"cache": "ck", "test": "key"})
    running = await start_daemon(schema_path, site.url, store_url, reactor)
    sg = client(running.url, "test", "key")     # through the cache
    direct = client(site.url, "test", "key")    # straight to the site
    ...
    await running.stop()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgcache.schema import Schema
from sgcache.service import SgcacheService

CACHE_SCRIPT = ("cache", "cache-key")


@dataclass
class RunningDaemon:
    url: str
    service: SgcacheService

    @property
    def cache(self) -> Any:
        return self.service.cache

    @property
    def store(self) -> Any:
        return self.service.store

    async def stop(self) -> None:
        # the stop closes the connections clients left open (keep-alive)
        await self.service.stopService()


async def start_daemon(
    schema: Schema,
    site_url: str,
    store_url: str,
    reactor: Any = None,
    # tests poll by hand (`service.poller.poll()`), so that the emulator's
    # read counter counts client reads only
    poll_interval: float = 3600.0,
    wait_loaded: bool = True,
    settings: dict[str, Any] | None = None,
    wait_ready: bool = True,
) -> RunningDaemon:
    """`settings` overrides the defaults below (keys as in `config.resolve`).
    `wait_ready` False: return once the client port listens (the site may
    be down: the event cursor not read yet)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    settings = {
        "schema": "<in memory>",
        "db": store_url,
        "shotgun": site_url,
        "script_name": CACHE_SCRIPT[0],
        "api_key": CACHE_SCRIPT[1],
        "listen": "tcp:0:interface=127.0.0.1",
        "admin_listen": "tcp:0:interface=127.0.0.1",
        "poll_interval": poll_interval,
        "info_refresh": 300.0,
        "demo": False,
        # off unless a test asks: its background site reads would move the
        # emulator's read counter tests assert on
        "shadow_rate": 0.0,
        **(settings or {}),
    }
    service = SgcacheService(reactor, settings, schema)
    service.startService()
    if not wait_ready:
        port = await service.listening
    else:
        port = await service.ready
        if wait_loaded:
            await service.loaded
    # (--role sync: no client port)
    url = f"http://127.0.0.1:{port.getHost().port}" if port is not None else ""
    return RunningDaemon(url, service)


def admin_url(running: RunningDaemon) -> str:
    """The base URL of a running daemon's admin listener."""
    return f"http://127.0.0.1:{running.service.admin_port.getHost().port}"
