"""User sessions by policy (``--serve-users``): reads made as a user
(login/password, a session token, a script's ``sudo_as_login``) pass
through by default; the logins the policy names are vouched for like
scripts (one successful passthrough, the TTL, checked again in the
background) and answered from the store; a revoked session token stops
being served within one TTL. The real client, through a running daemon,
in front of the emulator; both stores."""

from __future__ import annotations

from typing import Any

import shotgun_api3
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.testing.daemon import CACHE_SCRIPT, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.testing.pg import fresh_postgres_url

SCHEMA = Schema.from_dict({"entities": {
    "Shot": {"fields": {"code": "text", "sg_cut_in": "number"}},
    "HumanUser": {"fields": {"login": "text", "name": "text"}},
}})
SHOTS = [{"type": "Shot", "id": n, "fields": {"code": f"sh{n:03d}", "sg_cut_in": n}} for n in range(1, 11)]
USERS = {"alice": "alice-pw", "bob": "bob-pw"}
SCRIPT = ("pipeline", "pipeline-key")


class UsersMixin:
    async def store_url(self) -> str:
        raise NotImplementedError

    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._setUp())

    async def _setUp(self) -> None:
        self.site = await start_emulator(SCHEMA, scripts=dict([CACHE_SCRIPT, SCRIPT]), users=USERS)
        self.addCleanup(self.site.stop)
        self.site.emulator.seed(SHOTS)
        self.db = await self.store_url()
        self.daemon: Any = None

    async def start(self, **settings: Any) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
        self.daemon = await start_daemon(SCHEMA, self.site.url, self.db, settings=settings)
        self.addCleanup(self.daemon.stop)

    def reads(self) -> int:
        return self.site.emulator.counters().get("read", 0)

    def clients(self) -> dict[str, Any]:
        token = self.site.emulator.rpc_get_session_token(
            {}, self.site.emulator.authenticate({"user_login": "alice", "user_password": "alice-pw"}))["session_id"]
        url = self.daemon.url
        return {
            "alice": client(url, login="alice", password=USERS["alice"]),
            "bob": client(url, login="bob", password=USERS["bob"]),
            "sudo alice": client(url, *SCRIPT, sudo_as_login="alice"),
            "sudo bob": client(url, *SCRIPT, sudo_as_login="bob"),
            "alice's session": client(url, session_token=token),
        }

    async def local(self, sg: Any) -> bool:
        """Two reads: the first may vouch; whether the second stayed local
        (and both answered what the site has)."""
        want = await deferToThread(client(self.site.url, *SCRIPT).find, "Shot", [], ["code", "sg_cut_in"])
        for _ in range(2):
            before = self.reads()
            self.assertEqual(await deferToThread(sg.find, "Shot", [], ["code", "sg_cut_in"]), want)
        return self.reads() == before

    async def test_users_pass_through_by_default(self):
        await self.start()
        for name, sg in self.clients().items():
            self.assertFalse(await self.local(sg), name)
        self.assertGreater(self.daemon.cache.passthrough_reasons["request on behalf of a user"], 0)

    async def test_the_logins_the_policy_names_are_served_locally(self):
        await self.start(serve_users="alice")
        served = {name: await self.local(sg) for name, sg in self.clients().items()}
        # a session token's login is unknown to the cache: served only with "*"
        self.assertEqual(served, {"alice": True, "bob": False, "sudo alice": True, "sudo bob": False,
                                  "alice's session": False})
        self.assertGreater(self.daemon.cache.passthrough_reasons["user not served locally (policy)"], 0)
        await self.start(serve_users="*")
        served = {name: await self.local(sg) for name, sg in self.clients().items()}
        self.assertTrue(all(served.values()), served)
        # the script alone, and a wrong password, as before
        self.assertTrue(await self.local(client(self.daemon.url, *SCRIPT)))
        with self.assertRaises(shotgun_api3.AuthenticationFault):
            await deferToThread(client(self.daemon.url, login="alice", password="wrong").find, "Shot", [], ["code"])

    async def test_a_revoked_session_token_stops_being_served_within_one_ttl(self):
        ttl = 1.0
        await self.start(serve_users="*", auth_ttl=ttl)
        sg = self.clients()["alice's session"]
        self.assertTrue(await self.local(sg))
        self.site.emulator._sessions.clear()  # the site ends every session
        revoked_at = reactor.seconds()
        while True:
            try:
                await deferToThread(sg.find, "Shot", [], ["code"])
            except shotgun_api3.AuthenticationFault:
                break
            self.assertLess(reactor.seconds() - revoked_at, ttl + 0.5, "a revoked token was served too long")
            await task.deferLater(reactor, 0.05, lambda: None)
        self.assertLessEqual(reactor.seconds() - revoked_at, ttl + 0.5)
        # users' credentials are never kept in the store
        kept = self.daemon.cache.credentials.export()
        self.assertEqual(len(kept["accepted"]), 0)


class SQLiteUsersTests(UsersMixin, unittest.TestCase):
    async def store_url(self) -> str:
        import os

        return "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"


class PostgresUsersTests(UsersMixin, unittest.TestCase):
    async def store_url(self) -> str:
        return await fresh_postgres_url(self)
