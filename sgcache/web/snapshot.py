"""One snapshot of a running daemon for the admin listener's status page
and ``/status.json``: the ``sgcache`` block of ``info`` plus what only an
operator should see (site reachability, per-type readiness, recent
problems, top read shapes, readiness for ``/readyz``)."""

from __future__ import annotations

from typing import Any

from sgcache import __version__
from sgcache.logs import RECENT_PROBLEMS
from sgcache.schema.types import format_timestamp as _iso


def snapshot(daemon: Any) -> dict[str, Any]:
    cache, upstream = daemon.cache, daemon.upstream
    now = daemon.reactor.seconds()
    try:
        block = cache.status()
    except Exception as e:  # the page must show even when a source fails
        block = {"version": __version__, "status_error": str(e)}
    info = cache.info or {}
    ready, reasons = daemon.readiness()
    types = [
        {"name": name, "fields": len(cached), "fields_ready": len(cached) - len(waiting),
         "waiting": waiting[:50], "serving": not waiting}
        for name, cached, waiting in cache.field_readiness()
    ]
    lag = daemon.event_lag()
    return {
        "generated_at": _iso(now),
        "version": __version__,
        "site": {
            "url": upstream.base_url,
            "version": info.get("version"),
            **cache.site_status(),
            "info_from": block.get("info_from"),
        },
        "ready": {"ready": ready, "reasons": reasons},
        "lag": {
            "seconds": None if lag is None else round(lag, 1),
            "caught_up_at": _iso(daemon.sync_view().caught_up_at),
            "ready_threshold_seconds": daemon.settings.get("ready_lag_seconds", 300.0),
        },
        "types": types,
        "type_scans": {name: dict(scan, finished_at=_iso(scan.get("finished_at")))
                       for name, scan in sorted(daemon.scanner.type_scans.items())},
        "recent_problems": list(RECENT_PROBLEMS)[::-1][:20],
        "top_read_shapes": cache.shapes.top(10),
        "sgcache": block,
    }
