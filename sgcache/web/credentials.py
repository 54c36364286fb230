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

Credentials are remembered only as salted hashes (a salt per process), at
most `capacity` of them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import secrets
from typing import Any, Sequence

from sgcache.web.expiring import Expiring

#: default seconds the site's acceptance of a script key is trusted
DEFAULT_TTL = 60.0
#: most credentials remembered (least recently vouched dropped first)
CAPACITY = 10_000

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
    ):
        self.clock = clock
        self.ttl = float(ttl)
        self.serve = tuple(serve) or ("*",)
        self.deny = tuple(deny)
        self._salt = secrets.token_bytes(16)
        #: key -> the time its vouching expires
        self._vouched = Expiring(clock, capacity)
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
        return key is not None and key in self._vouched

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

    def refused(self, key: str) -> None:
        """The site refused these credentials (an authentication fault)."""
        if self._vouched.drop(key):
            self.revoked += 1

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
