"""What sgcache.store.pgadapter relies on in txpostgres: each override and
private attribute it uses, checked against the installed txpostgres, so an
upgrade that moves them fails here (not in production). Needs no server:
the adapter's behaviour against one is in tests/test_store.py and
tests/test_prepared.py."""

from __future__ import annotations

import inspect

from twisted.trial import unittest
from txpostgres import reconnection, txpostgres

from sgcache.store import pgadapter


def source(obj: object) -> str:
    return inspect.getsource(obj)  # type: ignore[arg-type]


class AdapterTests(unittest.TestCase):
    def test_overridden_methods_exist_with_their_signatures(self) -> None:
        overridden = {
            txpostgres.Connection: ["continuePolling", "doRead", "close", "_runInteraction", "poll",
                                    "_cancel", "_handleCancellation", "checkForNotifies"],
            txpostgres.ConnectionPool: ["connectionFactory", "_runInteraction"],
            reconnection.DeadConnectionDetector: ["checkForDeadConnection", "startReconnecting"],
        }
        for cls, names in overridden.items():
            for name in names:
                self.assertTrue(callable(getattr(cls, name, None)), f"{cls.__name__}.{name} is gone")
        self.assertEqual(list(inspect.signature(txpostgres.Connection.continuePolling).parameters),
                         ["self", "swallowErrors"])
        self.assertEqual(list(inspect.signature(txpostgres.Connection._cancel).parameters), ["self", "d"])
        self.assertEqual(list(inspect.signature(txpostgres.Connection._handleCancellation).parameters),
                         ["self", "f"])

    def test_the_polling_state_it_reads(self) -> None:
        # quick_query and continuePolling drive `_pollingD` and `_connection`
        # themselves, as txpostgres's own poll does
        poll = source(txpostgres._PollingMixin.poll)
        self.assertIn("self._pollingD", poll)
        self.assertIn("self._handleCancellation", poll)  # the errback the adapter replaces
        self.assertIn("defer.Deferred(self._cancel)", poll)  # the canceller it wraps
        self.assertIn("self._pollingD", source(txpostgres._PollingMixin.continuePolling))
        self.assertIn("QueryCanceledError", source(txpostgres._PollingMixin._handleCancellation))
        self.assertIn("self._connection", source(txpostgres.Connection.connect))

    def test_the_pool_state_it_reads(self) -> None:
        init = source(txpostgres.ConnectionPool.__init__)
        for name in ("self.connections", "self._semaphore", "self.connargs", "self.connkw"):
            self.assertIn(name, init)
        self.assertTrue(callable(getattr(txpostgres.ConnectionPool, "_putBackAndPassthrough", None)))
        self.assertIn("self.connections.add", source(txpostgres.ConnectionPool._putBackAndPassthrough))

    def test_the_detector_state_it_reads(self) -> None:
        init = source(reconnection.DeadConnectionDetector.__init__)
        for name in ("self.reconnectionIterator", "self.reactor"):
            self.assertIn(name, init)
        self.assertTrue(hasattr(reconnection.DeadConnectionDetector, "connectionIsDead"))
        self.assertTrue(callable(getattr(reconnection.DeadConnectionDetector, "connectionRecovered", None)))
        self.assertTrue(callable(getattr(reconnection.DeadConnectionDetector, "reconnect", None)))

    def test_the_adapter_overrides_what_it_says(self) -> None:
        for name in ("continuePolling", "doRead", "close", "_runInteraction", "poll", "_cancel",
                     "_handleCancellation"):
            self.assertIn(name, vars(pgadapter.Connection), name)
        self.assertIn("checkForNotifies", vars(pgadapter.Listener))
        self.assertIn("connectionFactory", vars(pgadapter.Pool))
        self.assertIn("startReconnecting", vars(pgadapter.Detector))
