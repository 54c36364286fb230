"""One snapshot of a running daemon for the admin listener's status page
and ``/status.json``: the ``sgcache`` block of ``info`` plus what only an
operator should see (site reachability, per-type readiness, recent
problems, top read shapes, readiness for ``/readyz``)."""

from __future__ import annotations

import datetime
from typing import Any

from sgcache import __version__
from sgcache.logs import RECENT_PROBLEMS
from sgcache.schema.types import is_cacheable


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot(daemon: Any) -> dict[str, Any]:
    cache, upstream = daemon.cache, daemon.upstream
    now = daemon.reactor.seconds()
    try:
        block = cache.status()
    except Exception as e:  # the page must show even when a source fails
        block = {"version": __version__, "status_error": str(e)}
    info = cache.info or {}
    ready, reasons = daemon.readiness()
    types = []
    for entity in cache.schema:
        cached = sorted(f for f, spec in entity.fields.items() if is_cacheable(spec.data_type))
        served = cache.catalog.ready.get(entity.name, set())
        waiting = [f for f in cached if f not in served]
        types.append({
            "name": entity.name, "fields": len(cached), "fields_ready": len(cached) - len(waiting),
            "waiting": waiting[:50], "serving": not waiting,
        })
    lag = daemon.poller.lag_seconds()
    site = getattr(upstream, "health", None)
    down = site is not None and site.reachable is False
    return {
        "generated_at": _iso(now),
        "version": __version__,
        "site": {
            "url": upstream.base_url,
            "version": info.get("version"),
            "reachable": site.reachable if site is not None else None,
            "unreachable_since": _iso(site.down_since) if down else None,
            "last_error": site.last_error if down else None,
            "last_answer_at": _iso(site.last_ok_at) if site is not None else None,
            "errors": dict(site.errors) if site is not None else {},
            "info_from": None if not cache.info else ("kept copy" if cache.info_kept else "site"),
        },
        "ready": {"ready": ready, "reasons": reasons},
        "lag": {
            "seconds": None if lag is None else round(lag, 1),
            "caught_up_at": _iso(daemon.poller.caught_up_at),
            "ready_threshold_seconds": daemon.settings.get("ready_lag_seconds", 300.0),
        },
        "types": types,
        "type_scans": {name: dict(scan, finished_at=_iso(scan.get("finished_at")))
                       for name, scan in sorted(daemon.scanner.type_scans.items())},
        "recent_problems": list(RECENT_PROBLEMS)[::-1][:20],
        "top_read_shapes": cache.shapes.top(10),
        "sgcache": block,
    }
