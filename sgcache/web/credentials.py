"""Which callers get local answers: script credentials the site accepted
recently, within the studio's policy.

The cache cannot check a script key itself; the site can. A script's first
read passes through, and the site's success vouches for its credentials for
`ttl` seconds. While a vouched script keeps reading, its credentials are
checked again in the background once half the TTL has passed (a one-row
read of the type it reads, with its own credentials), so no client waits for
it; the site refusing them (a 102 fault) ends local answers at once, and
credentials nobody re-vouches expire. So a key the site revoked is served
for at most one TTL after the last time the site accepted it.

Requests on behalf of a user (``sudo_as_login``, logins, session tokens)
always pass through: the site applies that user's permissions. Scripts are
served everything the store holds (the site's permission rules for scripts
are not applied); `serve`/`deny` name the scripts (globs) that may or may
not get local answers at all.

Credentials are remembered only as salted hashes, at most `capacity` of
them. The daemon keeps the salt and the hashes with the time the site last
accepted each (never a key) in the store (`export` / `restore`), so a
daemon restarted while the site is down still knows whom the site vouched
for: while the site is unreachable (`site_down`), credentials it accepted
within `outage_grace` seconds keep their local answers although their TTL
ran out -- there is nobody to ask. The first answer of the site ends that.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
from collections import OrderedDict
from typing import Any, Callable, Sequence

from sgcache.web.expiring import Expiring

#: default seconds the site's acceptance of a script key is trusted
DEFAULT_TTL = 60.0
#: most credentials remembered (least recently vouched dropped first)
CAPACITY = 10_000
#: default seconds a credential the site accepted is served during an outage
DEFAULT_OUTAGE_GRACE = 24 * 3600.0

SCRIPT_KEYS = frozenset(["script_name", "script_key", "session_uuid"])


class Credentials:
    """Vouched script credentials, by salted hash."""

    def __init__(
        self,
        clock: Any,
        ttl: float = DEFAULT_TTL,
        serve: Sequence[str] = ("*",),
        deny: Sequence[str] = (),
        capacity: int = CAPACITY,
        outage_grace: float = DEFAULT_OUTAGE_GRACE,
    ):
        self.clock = clock
        self.ttl = float(ttl)
        self.serve = tuple(serve) or ("*",)
        self.deny = tuple(deny)
        self.capacity = capacity
        self.outage_grace = float(outage_grace)
        self._salt = secrets.token_bytes(16)
        #: key -> the time its vouching expires
        self._vouched = Expiring(clock, capacity)
        #: key -> when the site last accepted it (kept in the store)
        self._accepted: OrderedDict[str, float] = OrderedDict()
        #: the accepted keys changed since the last `export`
        self.dirty = False
        #: whether the site is unreachable now (set by the daemon)
        self.site_down: Callable[[], bool] = lambda: False
        #: local answers given under the outage rule
        self.outage_reads = 0
        #: keys with a background check in flight
        self._checking: set[str] = set()
        self.checks = 0
        self.revoked = 0

    def __len__(self) -> int:
        return len(self._vouched)

    # -- who is asking -----------------------------------------------------------
    def key(self, auth: Any) -> str | None:
        """A key for script credentials the cache may vouch for, or None
        (not a script: a user, a session, sudo_as_login, a malformed auth)."""
        if not isinstance(auth, dict) or set(auth) - SCRIPT_KEYS:
            return None
        name, secret = auth.get("script_name"), auth.get("script_key")
        if not isinstance(name, str) or not isinstance(secret, str):
            return None
        digest = hashlib.blake2b(
            f"{name}\0{secret}".encode("utf-8", "surrogatepass"), key=self._salt, digest_size=20
        ).hexdigest()
        return digest

    def allowed(self, auth: dict) -> bool:
        """The policy lets this script's reads be answered locally."""
        name = auth.get("script_name", "")
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.deny):
            return False
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.serve)

    # -- what the site said ------------------------------------------------------
    def vouched(self, key: str | None) -> bool:
        if key is None:
            return False
        if key in self._vouched:
            return True
        accepted = self._accepted.get(key)
        if accepted is not None and self.clock.seconds() - accepted <= self.outage_grace and self.site_down():
            self.outage_reads += 1
            return True
        return False

    def due(self, key: str) -> bool:
        """A vouched key should be checked again now: half its TTL has
        passed and no check is in flight."""
        expiry = self._vouched.until(key)
        return (
            expiry is not None
            and key not in self._checking
            and expiry - self.clock.seconds() < self.ttl / 2
        )

    def accepted(self, key: str) -> None:
        """The site answered a request made with these credentials."""
        self._vouched.hold(key, self.ttl)
        self._accepted.pop(key, None)
        self._accepted[key] = self.clock.seconds()
        while len(self._accepted) > self.capacity:
            self._accepted.popitem(last=False)
        self.dirty = True

    def refused(self, key: str) -> None:
        """The site refused these credentials (an authentication fault)."""
        if self._accepted.pop(key, None) is not None:
            self.dirty = True
        if self._vouched.drop(key):
            self.revoked += 1

    # -- kept across restarts ----------------------------------------------------
    def export(self) -> dict[str, Any]:
        """What the store keeps: the salt and, per salted hash, when the
        site last accepted it (within the outage grace)."""
        self.dirty = False
        horizon = self.clock.seconds() - max(self.outage_grace, self.ttl)
        return {
            "salt": self._salt.hex(),
            "accepted": {key: round(when, 3) for key, when in self._accepted.items() if when >= horizon},
        }

    def restore(self, kept: dict[str, Any]) -> int:
        """Take back what `export` gave (another process's): the salt, the
        accepted keys, and their vouching while their TTL holds. Returns
        how many keys came back."""
        self._salt = bytes.fromhex(kept["salt"])
        now = self.clock.seconds()
        self._accepted.clear()
        items = sorted(kept.get("accepted", {}).items(), key=lambda item: item[1])[-self.capacity:]
        for key, when in items:
            when = min(float(when), now)
            self._accepted[str(key)] = when
            if when + self.ttl > now:
                self._vouched.hold(str(key), when + self.ttl - now)
        return len(self._accepted)

    def checking(self, key: str, busy: bool) -> None:
        if busy:
            self._checking.add(key)
            self.checks += 1
        else:
            self._checking.discard(key)


def check_args(entity_type: str) -> dict[str, Any]:
    """The read that checks credentials again: one id of the type the
    script reads (so the site also says whether it may still read it)."""
    return {
        "type": entity_type,
        "return_fields": ["id"],
        "filters": {"logical_operator": "and", "conditions": []},
        "paging": {"entities_per_page": 1, "current_page": 1},
        "return_paging_info_without_counts": True,
    }
