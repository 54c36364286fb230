"""Prometheus metrics of one daemon (the admin listener's ``/metrics``).

Two kinds, in one registry per daemon (tests run several in one process):

* counted as they happen: every RPC by method and outcome (``local``,
  ``reused``, ``passthrough`` with its reason category, ``fault``) and its
  latency, observed by the endpoint (`Metrics.observe_request`);
* read at each scrape from the state the daemon keeps anyway (`_Collector`):
  kept answers, event lag and events applied, holes, scan progress per type,
  the site's health and the poller's back-off, store pools, credential
  checks, serving state per type; and the process figures
  (``prometheus_client``'s process, platform and GC collectors).

Label values are bounded: methods outside the known set count as
``other``; reasons are the fixed categories of `sgcache.read.reasons`; type
names come from the schema.

The metric names and what to alert on are in docs/operations.md and
contrib/prometheus/sgcache-alerts.yml.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder

from sgcache import __version__
from sgcache.read.reasons import REASONS
from sgcache.site.client import IDEMPOTENT_METHODS
from sgcache.sync.writeback import WRITE_METHODS

KNOWN_METHODS = IDEMPOTENT_METHODS | WRITE_METHODS | {"upload_url", "get_upload_link"}

#: latency buckets (seconds): local reads take about a millisecond, the
#: site 0.1-3 s
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The registry of one daemon and what the endpoint tells it."""

    def __init__(self, daemon: Any):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sgcache_requests", "RPC requests by method and how they were answered "
            "(local, reused, passthrough, fault); reason: why a passthrough went to the site.",
            ["method", "outcome", "reason"], registry=self.registry,
        )
        self.latency = Histogram(
            "sgcache_request_duration_seconds", "Time to answer an RPC request, by outcome.",
            ["outcome"], buckets=BUCKETS, registry=self.registry,
        )
        self.registry.register(_Collector(daemon))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe_request(self, method: str, outcome: str, reason: str, seconds: float) -> None:
        if method not in KNOWN_METHODS:
            method = "other" if method != "(malformed)" else "malformed"
        self.requests.labels(method, outcome, reason if outcome == "passthrough" else "").inc()
        self.latency.labels(outcome).observe(seconds)

    def exposition(self, accept: bytes | None) -> tuple[bytes, str]:
        """(body, content type) for a scrape, in the format it accepts."""
        encoder, content_type = choose_encoder((accept or b"").decode("latin-1"))
        return encoder(self.registry), content_type


def _gauge(name: str, doc: str, value: Any, labels: dict[str, str] | None = None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=list(labels or {}))
    if value is not None:
        family.add_metric(list((labels or {}).values()), float(value))
    return family


class _Collector:
    """Figures read from the daemon at each scrape."""

    def __init__(self, daemon: Any):
        self.daemon = daemon

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[Any]:
        d = self.daemon
        now = d.reactor.seconds()
        yield from self._identity(d)
        yield from self._reads(d.cache)
        yield from self._events(d.poller, now, d)
        yield from self._cluster(d)
        yield from self._scan(d.scanner, now)
        yield from self._site(d.upstream, d.poller, now)
        yield from self._store(d.store)
        yield from self._credentials(d.cache.credentials)
        yield from self._shadow(d.shadow)
        yield from self._serving(d)

    def _identity(self, d: Any) -> Iterator[Any]:
        info = InfoMetricFamily("sgcache_build", "sgcache version, store and site.")
        site_version = (d.cache.info or {}).get("version")
        info.add_metric([], {
            "version": __version__, "store": d.store.dialect,
            "site_version": ".".join(str(v) for v in site_version) if isinstance(site_version, list) else "",
        })
        yield info

    def _reads(self, cache: Any) -> Iterator[Any]:
        answers = cache.answers
        yield _gauge("sgcache_answers_kept", "Answers to repeated reads kept in memory.", len(answers))
        yield _gauge("sgcache_answers_bytes", "Bytes of the kept answers.", answers.bytes)
        hits = CounterMetricFamily("sgcache_answers_hits", "Reads answered with a kept answer.")
        hits.add_metric([], answers.hits)
        yield hits
        reasons = CounterMetricFamily(
            "sgcache_passthrough_reasons", "Reads passed through, by reason (fixed phrases) and category.",
            labels=["reason", "category"])
        for phrase, count in sorted(cache.passthrough_reasons.items()):
            reasons.add_metric([phrase, REASONS.get(phrase, "other")], count)
        yield reasons
        failed = CounterMetricFamily("sgcache_reads_failed_locally",
                                     "Reads whose local answer failed (a bug; logged) and passed through.")
        failed.add_metric([], cache.counters.get("read.failed", 0))
        yield failed
        budget = CounterMetricFamily("sgcache_reads_over_budget", "Reads stopped at --read-budget-ms.")
        budget.add_metric([], cache.slow.stopped)
        yield budget

    def _events(self, poller: Any, now: float, d: Any) -> Iterator[Any]:
        lag = d.event_lag()
        yield _gauge("sgcache_event_lag_seconds", "Seconds since the cache was last known complete "
                     "(a poll read the event log to its end and applied it all; on a daemon that does not "
                     "sync, the syncing daemon's).", lag)
        # (on a daemon that does not sync: as the store records the syncing one's)
        view = d.sync_view()
        yield _gauge("sgcache_event_caught_up_timestamp_seconds",
                     "When the cache was last known complete (Unix time).", view.caught_up_at)
        applied = CounterMetricFamily("sgcache_events_applied", "Events read from the event log and applied.")
        applied.add_metric([], poller.counters.get("events", 0))
        yield applied
        yield _gauge("sgcache_event_cursor", "Id of the last event applied (on a daemon that does not sync, "
                     "as the store records it).", view.cursor)
        yield _gauge("sgcache_event_holes", "Missing event ids waited for (--hole-timeout).", len(view.holes))
        gaps = CounterMetricFamily("sgcache_event_log_gaps", "Event log truncations or rewinds found.")
        gaps.add_metric([], poller.counters.get("log_gaps", 0))
        yield gaps
        given_up = CounterMetricFamily("sgcache_event_holes_given_up", "Missing event ids given up.")
        given_up.add_metric([], poller.counters.get("holes_given_up", 0))
        yield given_up
        errors = CounterMetricFamily("sgcache_poll_errors", "Event polls that failed.")
        errors.add_metric([], poller.errors)
        yield errors

    def _scan(self, scanner: Any, now: float) -> Iterator[Any]:
        current = scanner.current or {}
        running = _gauge("sgcache_scan_running", "1 while a scan runs.", 1 if current else 0)
        yield running
        rows = GaugeMetricFamily("sgcache_scan_rows", "Rows read by the running scan of a type "
                                 "(or by the last scan of each type).", labels=["type", "mode"])
        rate = GaugeMetricFamily("sgcache_scan_rate_rows_per_second", "Rows per second of the running "
                                 "scan of a type.", labels=["type", "mode"])
        eta = GaugeMetricFamily("sgcache_scan_eta_seconds", "Seconds the running scan of a type needs "
                                "still, at its rate so far (when the site said how many rows).",
                                labels=["type", "mode"])
        expected = GaugeMetricFamily("sgcache_scan_rows_expected", "Rows the running scan of a type will "
                                     "read, as the site counted them at its start.", labels=["type", "mode"])
        for etype, last in sorted(scanner.type_scans.items()):
            if etype != current.get("type"):
                rows.add_metric([etype, str(last.get("mode"))], last.get("entities") or 0)
        if current:
            labels = [str(current.get("type")), str(current.get("mode"))]
            count = current.get("entities") or 0
            rows.add_metric(labels, count)
            elapsed = now - current.get("started", now)
            speed = count / elapsed if elapsed > 0 else 0.0
            rate.add_metric(labels, speed)
            total = current.get("expected")
            if total is not None:
                expected.add_metric(labels, total)
                if speed > 0:
                    eta.add_metric(labels, max(0.0, (total - count) / speed))
        yield rows
        yield rate
        yield eta
        yield expected
        scanned = CounterMetricFamily("sgcache_scan_rows_read", "Rows read by scans since start.")
        scanned.add_metric([], scanner.scanned)
        yield scanned
        errors = CounterMetricFamily("sgcache_scan_errors", "Scan steps that failed (retried).")
        errors.add_metric([], scanner.errors)
        yield errors
        removed = CounterMetricFamily("sgcache_scan_rows_removed", "Rows a full scan found deleted on the site.")
        removed.add_metric([], scanner.removed)
        yield removed
        if scanner.last_scan:
            yield _gauge("sgcache_scan_last_finished_timestamp_seconds", "When the last scan finished (Unix "
                         "time).", scanner.last_scan.get("finished_at"))

    def _site(self, upstream: Any, poller: Any, now: float) -> Iterator[Any]:
        health = upstream.health
        yield _gauge("sgcache_site_up", "1 when the last request to the site got an answer (not 502/503/504).",
                     None if health.reachable is None else (1 if health.reachable else 0))
        yield _gauge("sgcache_site_down_seconds", "Seconds the site has been unreachable (0 when it answers).",
                     0 if health.down_since is None else max(0.0, now - health.down_since))
        errors = CounterMetricFamily("sgcache_upstream_errors", "Requests to the site that failed, by kind "
                                     "(connect, timeout, http_502/503/504).", labels=["kind"])
        # every kind from the start (0 until it happens): rate() needs a start
        kinds = {"connect": 0, "timeout": 0, "http_502": 0, "http_503": 0, "http_504": 0, **health.errors}
        for kind, count in sorted(kinds.items()):
            errors.add_metric([kind], count)
        yield errors
        answers = CounterMetricFamily("sgcache_upstream_responses", "Answers from the site by HTTP status class.",
                                      labels=["status"])
        for status, count in sorted(health.answers.items()):
            answers.add_metric([status], count)
        yield answers
        gate = getattr(upstream, "gate", None)
        if gate is not None:
            figures = gate.status()
            flight = GaugeMetricFamily("sgcache_site_requests_in_flight", "Requests at the site now, by lane "
                                       "(client: passed through; sync: polls, re-reads; scan).", labels=["lane"])
            queued = GaugeMetricFamily("sgcache_site_requests_waiting", "The cache's own requests waiting for "
                                       "a slot under --site-max-concurrency, by lane.", labels=["lane"])
            for lane, count in sorted(figures["in_flight"].items()):
                flight.add_metric([lane], count)
            for lane, count in sorted(figures["waiting"].items()):
                queued.add_metric([lane], count)
            yield flight
            yield queued
            yield _gauge("sgcache_site_request_limit", "--site-max-concurrency.", figures["limit"])
            throttled = CounterMetricFamily("sgcache_site_throttled", "Answers by which the site throttled "
                                            "(429, or 503 with Retry-After); the cache's own requests waited.")
            throttled.add_metric([], figures["throttled"])
            yield throttled
        yield _gauge("sgcache_poll_backoff_failures", "Consecutive failed polls (the poller backs off "
                     "exponentially while this is above 0).", poller.backoff.failures)

    def _store(self, store: Any) -> Iterator[Any]:
        stats = getattr(store, "pool_stats", None)
        if stats is not None:
            size = GaugeMetricFamily("sgcache_store_pool_size", "PostgreSQL connections per pool.", labels=["pool"])
            used = GaugeMetricFamily("sgcache_store_pool_in_use", "PostgreSQL connections in use.", labels=["pool"])
            waiting = GaugeMetricFamily("sgcache_store_pool_waiting", "Operations waiting for a connection.",
                                        labels=["pool"])
            for pool, figures in sorted(stats().items()):
                size.add_metric([pool], figures["size"])
                used.add_metric([pool], figures["in_use"])
                waiting.add_metric([pool], figures["waiting"])
            yield size
            yield used
            yield waiting
        retries = CounterMetricFamily("sgcache_store_connection_retries",
                                      "Store operations retried on a dead connection.")
        retries.add_metric([], getattr(store, "connection_retries", 0))
        yield retries

    def _credentials(self, credentials: Any) -> Iterator[Any]:
        yield _gauge("sgcache_credentials_vouched", "Script credentials the site vouched for (served locally).",
                     len(credentials))
        checks = CounterMetricFamily("sgcache_credential_checks", "Background re-checks of script credentials.")
        checks.add_metric([], credentials.checks)
        yield checks
        revoked = CounterMetricFamily("sgcache_credentials_revoked", "Credentials the site refused after "
                                      "vouching for them.")
        revoked.add_metric([], credentials.revoked)
        yield revoked

    def _shadow(self, shadow: Any) -> Iterator[Any]:
        checks = CounterMetricFamily("sgcache_shadow_checks", "Shadow checks of local answers against the "
                                     "site, by outcome (agreed, lagged: agreed once the cache caught up, "
                                     "mismatched, unsettled, skipped: too many open, failed).",
                                     labels=["outcome"])
        for outcome in ("agreed", "lagged", "mismatched", "unsettled", "skipped", "failed"):
            checks.add_metric([outcome], shadow.figures[outcome])
        yield checks
        yield _gauge("sgcache_shadow_pending", "Shadow checks open now.", shadow.pending)
        yield _gauge("sgcache_shadow_shapes_mismatched", "Read shapes with a confirmed shadow mismatch "
                     "since the start or the last `sgcache shadow clear`.", len(shadow.confirmed))
        requests = CounterMetricFamily("sgcache_shadow_site_requests", "Requests the shadow checks made to "
                                       "the site.")
        requests.add_metric([], shadow.site_requests)
        yield requests

    def _cluster(self, d: Any) -> Iterator[Any]:
        yield _gauge("sgcache_syncing", "1 while this daemon runs the sync (poller, scanner): always on SQLite, "
                     "the elected daemon on PostgreSQL.", 1 if d.syncing else 0)
        leadership = getattr(d, "leadership", None)
        if leadership is None:
            return
        yield _gauge("sgcache_sync_leaders_seen", "Daemons syncing this PostgreSQL store, alive at the last "
                     "election round (1 when healthy; 0: nobody syncs).",
                     sum(1 for node in leadership.nodes if node["leading"] and node["alive"]))
        yield _gauge("sgcache_sync_epoch", "The store's leader epoch as last read (moves at every takeover).",
                     (leadership.leader or {}).get("epoch"))

    def _serving(self, d: Any) -> Iterator[Any]:
        cache = d.cache
        ready, _ = d.readiness()
        yield _gauge("sgcache_ready", "1 when /readyz answers 200.", 1 if ready else 0)
        yield _gauge("sgcache_serving", "1 once every cached type was loaded.", 1 if cache.serving else 0)
        fields = GaugeMetricFamily("sgcache_fields", "Cached fields per type, by state (ready: served "
                                   "locally; waiting: loading or rescanning).", labels=["type", "state"])
        for name, cached, waiting in cache.field_readiness():
            fields.add_metric([name, "ready"], len(cached) - len(waiting))
            fields.add_metric([name, "waiting"], len(waiting))
        yield fields
