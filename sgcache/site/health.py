"""Whether the Shotgun site answers, as every request to it finds: since
when it has not, and how often it failed (for the status page, the
metrics, the ``X-Sgcache-Site`` response header and outage behaviour)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sgcache.schema.types import format_timestamp

#: HTTP statuses that mean the site (or its load balancer) is not serving
DOWN_STATUSES = frozenset([502, 503, 504])


class SiteHealth:
    def __init__(self, clock: Any):
        self.clock = clock
        #: None: not asked yet
        self.reachable: bool | None = None
        #: reactor time of the first failure of the current outage
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.last_ok_at: float | None = None
        #: failures by kind ("connect", "timeout", "http_502", ...)
        self.errors: Counter[str] = Counter()
        #: requests that got an answer, by HTTP status class ("2xx", ...)
        self.answers: Counter[str] = Counter()

    def answered(self, status: int) -> None:
        self.answers[f"{status // 100}xx"] += 1
        if status in DOWN_STATUSES:
            self.failed(f"http_{status}", f"the site answered HTTP {status}")
            return
        self.reachable = True
        self.down_since = None
        self.last_ok_at = self.clock.seconds()

    def failed(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.last_error = message
        if self.reachable is not False:
            self.down_since = self.clock.seconds()
        self.reachable = False

    def header(self) -> bytes | None:
        """The ``X-Sgcache-Site`` value while the site is unreachable."""
        if self.reachable is not False or self.down_since is None:
            return None
        return f"unreachable since {format_timestamp(self.down_since)}".encode("ascii")
