"""The update log's pruner (sgcache.sync.updatelog.Pruner): its lifecycle."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from sgcache.sync.updatelog import Pruner


class GatedStore:
    """A store whose prune waits until the test lets it finish."""

    def __init__(self) -> None:
        self.gates: list[defer.Deferred] = []

    def prune_update_log(self, before: float) -> defer.Deferred:
        gate: defer.Deferred = defer.Deferred()
        self.gates.append(gate)
        return gate


class PrunerTests(unittest.TestCase):
    def test_a_stop_during_a_prune_ends_with_the_prune(self) -> None:
        # a stop that arrives while a prune runs used to find no wait to
        # wake: the loop then slept a whole interval (an hour) before it
        # ended, and the daemon's stop with it
        clock, store = Clock(), GatedStore()
        pruner = Pruner(clock, store, every=3600.0)
        pruner.start()
        self.assertEqual(len(store.gates), 1)
        stopped = pruner.stop()
        self.assertFalse(stopped.called)
        store.gates[0].callback(0)
        self.assertTrue(stopped.called)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_stop_during_the_wait_ends_it(self) -> None:
        clock, store = Clock(), GatedStore()
        pruner = Pruner(clock, store, every=3600.0)
        pruner.start()
        store.gates[0].callback(3)
        self.assertEqual(pruner.pruned, 3)
        clock.advance(3600)
        self.assertEqual(len(store.gates), 2)
        store.gates[1].callback(0)
        stopped = pruner.stop()
        self.assertTrue(stopped.called)
        self.assertEqual(clock.getDelayedCalls(), [])
