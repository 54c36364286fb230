"""What the daemon keeps of the site across restarts, in the store's state
table: the site's last `info` answer, and the credentials the site vouched
for (the salt and salted hashes with when each was last accepted: never a
key). A daemon restarted while the site is down answers `info` from the
kept copy and serves local reads to the scripts the site vouched for before
(`sgcache.web.credentials`: the outage rule)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, task

from sgcache.logs import logger

log = logger(__name__)

INFO_KEY = "site_info"
CREDENTIALS_KEY = "site_credentials"

#: seconds between writes of changed credentials
FLUSH_EVERY = 5.0


class SiteMemory:
    def __init__(self, reactor: Any, store: Any, cache: Any):
        self.reactor = reactor
        self.store = store
        self.cache = cache
        self._loop: task.LoopingCall | None = None
        cache.on_info = self.info_changed

    async def load(self) -> None:
        """Take back the kept info and credentials (the store is open)."""
        text = await self.store.get_state(INFO_KEY)
        if text:
            try:
                kept = json.loads(text)
                if self.cache.info is None and isinstance(kept.get("info"), dict):
                    self.cache.info = kept["info"]
                    self.cache.info_fetched_at = float(kept["fetched_at"])
                    self.cache.info_kept = True
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warn("the site's info kept in the store is unreadable; ignored")
        text = await self.store.get_state(CREDENTIALS_KEY)
        if text:
            try:
                count = self.cache.credentials.restore(json.loads(text))
                log.info("{count} script credentials the site vouched for taken back from the store",
                         count=count)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warn("the credentials kept in the store are unreadable; ignored")

    def start(self) -> None:
        self._loop = task.LoopingCall(self._flush)
        self._loop.clock = self.reactor
        self._loop.start(FLUSH_EVERY, now=False).addErrback(
            lambda f: log.failure("keeping credentials in the store stopped", f))

    async def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        await self._flush()

    async def _flush(self) -> None:
        credentials = self.cache.credentials
        if not credentials.dirty:
            return
        try:
            await self.store.set_state({CREDENTIALS_KEY: json.dumps(credentials.export())})
        except Exception as e:
            credentials.dirty = True
            log.warn("could not keep the vouched credentials in the store: {error}", error=str(e)[:200])

    def info_changed(self, info: dict[str, Any]) -> None:
        text = json.dumps({"info": info, "fetched_at": self.reactor.seconds()})
        d = defer.ensureDeferred(self.store.set_state({INFO_KEY: text}))
        d.addErrback(lambda f: log.warn("could not keep the site's info in the store: {error}",
                                        error=f.getErrorMessage()[:200]))
