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
pass through by default: the site applies that user's permissions.
``--serve-users`` (`users`, globs of logins) vouches for them like scripts
and answers them from the store, without the site's per-user permission
rules and project access: a login/password or a script's ``sudo_as_login``
is served when its login matches; a session token (whose login the cache
cannot see) only when the policy is ``*``. Their credentials are kept as
salted hashes in memory only (never in the store: no outage rule for
them). Scripts are served everything the store holds (the site's
permission rules for scripts are not applied); `serve`/`deny` name the
scripts (globs) that may or may not get local answers at all.

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

#: the credential parts of each kind of caller (what is hashed, and what a
#: background check sends again)
_KINDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("script", frozenset(["script_name", "script_key"])),
    ("sudo", frozenset(["script_name", "script_key", "sudo_as_login"])),
    ("login", frozenset(["user_login", "user_password"])),
    ("session", frozenset(["session_token"])),
)
#: what may come with them and is not a credential (the client adds
#: ``reject_if_expired`` to a session token)
_EXTRA = frozenset(["session_uuid", "reject_if_expired"])


def kind_of(auth: Any) -> str | None:
    """Which caller `auth` is (`_KINDS`), None for anything else (a login
    with a two-factor token, malformed auth)."""
    if not isinstance(auth, dict):
        return None
    parts = set(auth) - _EXTRA
    for kind, names in _KINDS:
        if parts == names and all(isinstance(auth[n], str) for n in names):
            return kind
    return None


def credential_parts(auth: dict) -> dict[str, str]:
    """The credentials of `auth`, as a background check sends them again."""
    return {k: v for k, v in auth.items() if k != "session_uuid"}


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
        users: Sequence[str] = (),
    ):
        self.clock = clock
        self.ttl = float(ttl)
        self.serve = tuple(serve) or ("*",)
        self.deny = tuple(deny)
        #: logins (globs) whose reads may be answered locally (empty: none)
        self.users = tuple(users)
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
        """A key for credentials the cache may vouch for, or None: scripts
        always; users (`kind_of`) only with a `users` policy."""
        kind = kind_of(auth)
        if kind is None or (kind != "script" and not self.users):
            return None
        names = dict(_KINDS)[kind]
        text = kind + "".join(f"\0{n}\0{auth[n]}" for n in sorted(names))
        if kind == "script":
            # (the form kept in stores before users could be served)
            text = f"{auth['script_name']}\0{auth['script_key']}"
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), key=self._salt, digest_size=20).hexdigest()

    def allowed(self, auth: dict) -> bool:
        """The policy lets these credentials' reads be answered locally."""
        kind = kind_of(auth)
        if kind in ("script", "sudo"):
            name = auth.get("script_name", "")
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.deny):
                return False
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.serve):
                return False
            if kind == "script":
                return True
            return self._user_allowed(auth["sudo_as_login"])
        if kind == "login":
            return self._user_allowed(auth["user_login"])
        if kind == "session":
            return "*" in self.users
        return False

    def _user_allowed(self, login: str) -> bool:
        return any(fnmatch.fnmatchcase(login, pattern) for pattern in self.users)

    def is_user(self, auth: Any) -> bool:
        return kind_of(auth) in ("sudo", "login", "session")

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

    def accepted(self, key: str, user: bool = False) -> None:
        """The site answered a request made with these credentials (`user`:
        a user's, kept in memory only)."""
        self._vouched.hold(key, self.ttl)
        if user:
            return
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
