"""The admin listener's status page (``GET /``): one server-rendered HTML
page of a daemon's `sgcache.web.snapshot`, for an operator's browser.

No JavaScript and nothing fetched from elsewhere: a small inline style
sheet and ``<meta http-equiv="refresh">`` so the page reloads itself every
`REFRESH_SECONDS`. Sections, top to bottom: the header (site, versions,
store, state, READY / NOT READY and why, a banner when the site is
unreachable), lag, serving state per type, scans, the event poller, reads,
pass-through reasons, top read shapes, the schema, recent problems, and any
figure of the ``sgcache`` block the page does not know yet.

Every value goes through `html.escape` (type and field names, read shapes
and error texts can come from clients or the site). The snapshot is taken
as it comes: any key may be missing, None or of an unexpected type. A
section that fails says so and the others still show; if the whole page
fails, `render` returns a minimal page saying so -- it never raises.
"""

from __future__ import annotations

import datetime
import html
import json
import math
from typing import Any, Callable, Iterable

REFRESH_SECONDS = 5
#: how many waiting fields the types table names per type
WAITING_SHOWN = 5
#: longest text shown for one value (error messages, JSON of other figures)
CLIP = 400

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f4f5f7}
main{max-width:1200px;margin:0 auto;padding:12px 20px 40px}
header{background:#1d2330;color:#fff;padding:14px 20px}
header h1{margin:0 0 4px;font-size:20px}
header .meta{color:#c6cbd6;font-size:13px}
header .meta b{color:#fff;font-weight:600}
h2{font-size:16px;margin:10px 0 6px;border-bottom:1px solid #d5d9e0;padding-bottom:3px}
h3{font-size:14px;margin:12px 0 2px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:4px 14px 12px;margin-top:14px}
.row{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:0 14px}
table{border-collapse:collapse;width:100%;margin-top:4px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eceef2;vertical-align:top}
th{background:#f0f2f5;font-weight:600;font-size:13px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:40%;background:none;font-weight:normal;color:#555e70}
.badge{display:inline-block;padding:3px 12px;border-radius:4px;font-weight:700;letter-spacing:.5px}
.ok{background:#1f8a4c;color:#fff}.bad{background:#c0392b;color:#fff}.unknown{background:#7f8899;color:#fff}
.banner{padding:10px 14px;border-radius:6px;margin-top:14px;font-weight:600}
.banner.bad{background:#fbe3e1;color:#8e1f14;border:1px solid #e9a29b}
.banner.warn{background:#fff4d6;color:#7a5800;border:1px solid #e8cf83}
.yes{color:#1f8a4c;font-weight:600}.no{color:#c0392b;font-weight:600}
.lvl-error,.lvl-critical{color:#c0392b;font-weight:600}.lvl-warn{color:#a06b00;font-weight:600}
.muted{color:#7f8899}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
ul.reasons{margin:6px 0 0;padding-left:20px}
footer{color:#7f8899;font-size:12px;margin-top:18px}
"""


class Html(str):
    """Text that is already HTML (built here from escaped parts)."""


def esc(value: Any) -> str:
    """`value` as escaped HTML text; ``Html`` passes as it is."""
    if isinstance(value, Html):
        return str(value)
    return html.escape(_text(value), quote=True)


def _text(value: Any) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.1f}" if value != int(value) or abs(value) >= 1e15 else f"{int(value):,}"
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, (list, tuple)) and len(value) <= 20 and all(isinstance(v, (int, str)) for v in value):
        return _clip(", ".join(str(v) for v in value))
    try:
        return _clip(json.dumps(value, sort_keys=True, default=str))
    except Exception:
        return _clip(repr(value))


def version(value: Any) -> str:
    """A version as the site gives it (``[8, 50, 0]``) or as text."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, int) for v in value):
        return ".".join(str(v) for v in value)
    return _text(value)


def _clip(text: str, limit: int = CLIP) -> str:
    return text if len(text) <= limit else f"{text[:limit]}\u2026 ({len(text)} chars)"


def get(data: Any, *path: Any) -> Any:
    """``data[path[0]][path[1]]...``; None where any step is missing."""
    for key in path:
        if isinstance(data, dict):
            data = data.get(key)
        elif isinstance(data, (list, tuple)) and isinstance(key, int) and -len(data) <= key < len(data):
            data = data[key]
        else:
            return None
    return data


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


# -- formatting -----------------------------------------------------------------

def when(value: Any) -> str:
    """A time as UTC ISO 8601: epoch seconds are converted, text is kept."""
    number = _number(value)
    if number is not None:
        try:
            return datetime.datetime.fromtimestamp(number, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except (OverflowError, OSError, ValueError):
            return str(value)
    return _text(value)


def duration(value: Any) -> str:
    """Seconds for a person: ``0.4 s``, ``12 s``, ``5 min 3 s``, ``2 h 4 min``."""
    seconds = _number(value)
    if seconds is None:
        return _text(value)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


def size(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _text(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(number) < 1024 or unit == "GiB":
            return f"{number:,.0f} {unit}" if unit == "B" else f"{number:,.1f} {unit}"
        number /= 1024
    return str(value)  # not reached


def yes_no(value: Any) -> Html:
    if value is True:
        return Html('<span class="yes">yes</span>')
    if value is False:
        return Html('<span class="no">no</span>')
    return Html(esc(value))


def mono(value: Any) -> Html:
    return Html(f'<span class="mono">{esc(value)}</span>')


def _numeric(value: Any) -> bool:
    return _number(value) is not None


# -- building blocks ------------------------------------------------------------

def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], empty: str = "none") -> str:
    """A table; cells are escaped unless `Html`; numbers (and the heads
    of all-number columns) are right-aligned."""
    headers = list(headers)
    grid = [list(row) for row in rows]
    if not grid:
        return f'<p class="muted">{esc(empty)}</p>'
    numeric = [all(_numeric(row[i]) for row in grid if i < len(row)) for i in range(len(headers))]
    body = "".join(
        "<tr>" + "".join(f'<td class="n">{esc(c)}</td>' if _numeric(c) else f"<td>{esc(c)}</td>" for c in row)
        + "</tr>"
        for row in grid
    )
    head = "".join(f'<th class="n">{esc(h)}</th>' if n else f"<th>{esc(h)}</th>" for h, n in zip(headers, numeric))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of label -> value."""
    rows = "".join(f"<tr><th>{esc(label)}</th><td>{esc(value)}</td></tr>" for label, value in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def section(title: str, body: str, anchor: str = "") -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>"


# -- sections -------------------------------------------------------------------

def header(snap: dict) -> str:
    block = _dict(snap.get("sgcache"))
    site = _dict(snap.get("site"))
    flag = get(snap, "ready", "ready")
    if flag is True:
        badge = '<span class="badge ok">READY</span>'
    elif flag is False:
        badge = '<span class="badge bad">NOT READY</span>'
    else:
        badge = '<span class="badge unknown">READINESS UNKNOWN</span>'
    meta = " &middot; ".join([
        f"site <b>{esc(site.get('url'))}</b> (version {esc(version(site.get('version')))})",
        f"sgcache <b>{esc(snap.get('version') or block.get('version'))}</b>",
        f"store <b>{esc(block.get('store'))}</b>",
        f"state <b>{esc(block.get('state'))}</b>",
    ])
    return f'<header><h1>sgcache status {badge}</h1><div class="meta">{meta}</div></header>'


def readiness(snap: dict) -> str:
    """Why the daemon is not ready, when it is not."""
    reasons = [r for r in _list(get(snap, "ready", "reasons")) if r is not None]
    if not reasons:
        return ""
    items = "".join(f"<li>{esc(r)}</li>" for r in reasons)
    return f'<div class="banner warn">Not ready because:<ul class="reasons">{items}</ul></div>'


def banners(snap: dict) -> str:
    out = []
    site = _dict(snap.get("site"))
    if site.get("reachable") is False:
        since = site.get("unreachable_since")
        text = "The site is unreachable" + (f" since {when(since)}" if since else "")
        error = site.get("last_error")
        out.append(
            f'<div class="banner bad">{esc(text)}'
            + (f': <span class="mono">{esc(error)}</span>' if error else "")
            + "</div>"
        )
    block = _dict(snap.get("sgcache"))
    if block.get("status_error"):
        out.append(f'<div class="banner warn">Part of the status is missing: {esc(block["status_error"])}</div>')
    return "".join(out)


def lag(snap: dict) -> str:
    data = _dict(snap.get("lag"))
    seconds = _number(data.get("seconds"))
    threshold = _number(data.get("ready_threshold_seconds"))
    if seconds is None:
        shown: Any = Html('<span class="no">never caught up with the event log yet</span>')
    elif threshold and seconds > threshold:
        shown = Html(f'<span class="no">{esc(duration(seconds))} (over the threshold)</span>')
    else:
        shown = duration(seconds)
    block = _dict(snap.get("sgcache"))
    return section("Lag", pairs([
        ("event lag", shown),
        ("caught up with the site at", when(data.get("caught_up_at"))),
        ("ready while under (--ready-lag-seconds)", "no limit" if threshold == 0 else duration(threshold)),
        ("age of the newest applied event", duration(block.get("newest_event_age_seconds"))),
        ("site info (version, settings) read", _info_age(block)),
    ]), "lag")


def _info_age(block: dict) -> str | None:
    age, source = block.get("info_age_seconds"), block.get("info_from")
    if not _numeric(age) and source is None:
        return None
    text = f"{duration(age)} ago" if _numeric(age) else "never"
    return text + (f" (from the {_text(source)})" if source is not None else "")


def types(snap: dict) -> str:
    rows = []
    entries = [t for t in _list(snap.get("types")) if isinstance(t, dict)]
    serving = 0
    for entry in sorted(entries, key=lambda t: (t.get("serving") is True, str(t.get("name")))):
        waiting = _list(entry.get("waiting"))[:WAITING_SHOWN]
        total, ready = entry.get("fields"), entry.get("fields_ready")
        missing = (int(total) - int(ready)) if _numeric(total) and _numeric(ready) else len(waiting)
        shown = ", ".join(str(w) for w in waiting)
        if missing > len(waiting):
            shown += f" (+{missing - len(waiting)} more)"
        serving += entry.get("serving") is True
        rows.append([
            Html(f"<b>{esc(entry.get('name'))}</b>"),
            Html(f"{esc(ready)} / {esc(total)}"),
            yes_no(entry.get("serving")),
            mono(shown) if shown else "",
        ])
    summary = f'<p class="muted">{serving} of {len(entries)} types served from the cache</p>' if entries else ""
    return section("Serving, per type", summary + table(
        ["type", "fields ready / cached", "serving", "fields waiting (loading)"], rows, "no cached types"), "types")


def scan(snap: dict) -> str:
    data = _dict(get(snap, "sgcache", "scan"))
    current = _dict(data.get("current"))
    if current:
        done, expected = current.get("entities"), current.get("expected")
        progress = f"{_text(done)}" + (f" / {_text(expected)}" if expected is not None else "") + " entities"
        if _numeric(current.get("rate")):
            progress += f", {_text(current.get('rate'))}/s"
            if _numeric(expected) and _numeric(done) and current["rate"] > 0 and expected > done:
                progress += f", about {duration((expected - done) / current['rate'])} to go"
        now_text = (f"{_text(current.get('type'))} ({_text(current.get('mode'))} scan): {progress}"
                    + (f", started {when(current.get('started'))}" if current.get("started") is not None else ""))
    else:
        now_text = "no scan running" if data else None
    last = _dict(data.get("last"))
    last_text = None
    if last:
        last_text = (f"{_text(last.get('mode'))} scan: {_text(last.get('entities'))} entities of "
                     f"{_text(last.get('types'))} types in {duration(last.get('seconds'))}, "
                     f"finished {when(last.get('finished_at'))}")
    elif data:
        last_text = "none since the daemon started"
    body = pairs([
        ("running now", now_text),
        ("last scan", last_text),
        ("errors", data.get("errors")),
        ("last error", mono(data["last_error"]) if data.get("last_error") else None),
        ("rows removed (gone on the site)", data.get("rows_removed")),
        ("rows reconciled", data.get("rows_reconciled")),
    ])
    marks = _dict(data.get("watermarks"))
    if marks:
        rows = [[k, mono(when(v))] for k, v in sorted(marks.items(), key=lambda kv: str(kv[0]))]
        body += "<h3>Watermarks (newest updated_at loaded)</h3>" + table(["type", "watermark"], rows)
    return section("Scans", body, "scan")


def poller(snap: dict) -> str:
    block = _dict(snap.get("sgcache"))
    events = _dict(block.get("events"))
    holes = _list(block.get("holes"))
    holes_text: Any = (f"{len(holes)} open: " + ", ".join(str(h) for h in holes[:10])
                       + (" \u2026" if len(holes) > 10 else "")) if holes else 0
    failing = block.get("poll_failing_for")
    items = [
        ("event cursor", block.get("event_cursor")),
        ("last event id", block.get("last_event_id")),
        ("last event created at", block.get("last_event_created_at")),
        ("events applied", events.get("events", 0 if "events" in block else None)),
        ("holes (event ids not seen yet)", holes_text),
        ("poll errors", block.get("poll_errors")),
    ]
    if _numeric(failing) and failing:
        items.append(("failing polls in a row", Html(f'<span class="no">{esc(failing)}</span>')))
    items.append(("last poll error", mono(block["last_poll_error"]) if block.get("last_poll_error") else None))
    if block.get("event_figures_from") == "store":
        # another daemon syncs: its cursor, holes and last error as it
        # records them; the counters above are this daemon's
        items.insert(0, ("polled by", "the daemon that syncs (as it records it in the store, read "
                                      f"{duration(block.get('event_figures_age_seconds'))} ago)"))
    others = sorted((k, v) for k, v in events.items() if k != "events")
    body = pairs(items)
    if others:
        body += table(["other event counters", "count"], others)
    return section("Event poller", body, "poller")


def reads(snap: dict) -> str:
    block = _dict(snap.get("sgcache"))
    local, passed = _number(block.get("reads_local")), _number(block.get("passthrough"))
    share = None
    if local is not None and passed is not None and local + passed:
        share = f"{100 * local / (local + passed):.0f}% of reads answered locally"
    items = [
        ("answered locally", block.get("reads_local")),
        ("of which reused answers", block.get("reads_reused")),
        ("passed through to the site", block.get("passthrough")),
        ("local share", share),
        ("answers kept", block.get("answers_kept")),
        ("answers kept, size", size(block.get("answers_bytes")) if "answers_bytes" in block else None),
    ]
    outage = get(block, "site", "outage_reads")
    if outage is not None:
        items.append(("answered while the site was unreachable (outage rule)", outage))
    for key, label in (("reads_failed_locally", "local reads that failed (passed through)"),
                       ("reads_over_budget", "reads stopped at --read-budget-ms"),
                       ("reads_slow", "slow reads")):
        if key in block:
            items.append((label, block.get(key)))
    return section("Reads", pairs(items), "reads")


def reasons(snap: dict) -> str:
    data = _dict(get(snap, "sgcache", "passthrough_reasons"))
    rows = sorted(data.items(), key=lambda kv: (-(_number(kv[1]) or 0), str(kv[0])))
    return section("Why reads passed through", table(["reason", "reads"], rows, "no read passed through"),
                   "passthrough")


def shapes(snap: dict) -> str:
    rows = [
        [mono(s.get("shape")), s.get("reads"), s.get("local"), s.get("passed_through")]
        for s in _list(snap.get("top_read_shapes")) if isinstance(s, dict)
    ]
    return section("Top read shapes", table(["shape", "reads", "local", "passed through"], rows, "no reads yet"),
                   "shapes")


def schema(snap: dict) -> str:
    data = _dict(get(snap, "sgcache", "schema"))
    if not data:
        return ""
    last = _dict(data.get("last_change"))
    changes = _list(last.get("changes"))
    items = [
        ("schema file", mono(data.get("file"))),
        ("rules file", mono(data.get("rules")) if data.get("rules") else None),
        ("cached types / fields", f"{_text(data.get('types'))} / {_text(data.get('fields'))}"),
        ("site schema known", yes_no(data.get("site_known"))),
        ("site schema last read", f"{duration(data.get('site_read_age_seconds'))} ago"
         if _numeric(data.get("site_read_age_seconds")) else None),
        ("fields missing on the site", ", ".join(str(f) for f in _list(data.get("missing_on_site"))) or 0),
        ("fields whose type differs", ", ".join(str(f) for f in _list(data.get("type_differs"))) or 0),
        ("changes applied", data.get("changes_applied")),
        ("last change", "; ".join(str(c) for c in changes) if changes else None),
    ]
    trouble = _list(data.get("problems"))
    body = pairs(items)
    if trouble:
        body += table(["schema problems"], [[p] for p in trouble])
    return section("Schema", body, "schema")


def problems(snap: dict) -> str:
    entries = [p for p in _list(snap.get("recent_problems")) if isinstance(p, dict)]
    # newest first; a stable sort keeps the snapshot's order within a second
    entries.sort(key=lambda p: str(p.get("time") or ""), reverse=True)
    rows = []
    for p in entries:
        level = str(p.get("level") or "").lower()
        rows.append([
            mono(when(p.get("time"))),
            Html(f'<span class="lvl-{esc(level)}">{esc(p.get("level"))}</span>'),
            mono(p.get("source")),
            p.get("text"),
        ])
    return section("Recent problems (newest first)", table(["time", "level", "source", "message"], rows,
                                                            "no warnings or errors logged"), "problems")


#: keys of the ``sgcache`` block shown by a section above
KNOWN = {
    "version", "serving", "store", "state", "reads_local", "reads_reused", "answers_kept", "answers_bytes",
    "passthrough", "passthrough_reasons", "reads_failed_locally", "reads_over_budget", "reads_slow",
    "event_lag_seconds", "loading", "event_cursor", "last_event_id", "last_event_created_at", "caught_up_at",
    "newest_event_age_seconds", "holes", "poll_errors", "poll_failing_for", "last_poll_error", "events",
    "scan", "schema", "status_error", "site", "info_age_seconds", "info_from", "shadow",
    "event_figures_from", "event_figures_age_seconds",
}


def others(snap: dict) -> str:
    block = _dict(snap.get("sgcache"))
    rows = [[mono(k), v] for k, v in sorted(block.items(), key=lambda kv: str(kv[0])) if k not in KNOWN]
    if not rows:
        return ""
    return section("Other figures", table(["figure", "value"], rows), "other")


#: the page's rows, top to bottom; a tuple is a row of sections side by side
def cluster(snap: dict) -> str:
    """Several daemons on one PostgreSQL store: who syncs, the nodes."""
    data = _dict(get(snap, "sgcache", "cluster"))
    if not data:
        return ""
    leader = _dict(data.get("leader"))
    head = pairs([
        ("this daemon", f"{_text(data.get('node'))} (role {_text(data.get('role'))})"),
        ("syncs the store", yes_no(data.get("leading"))),
        ("the daemon that syncs", f"{_text(leader.get('node'))} since {when(leader.get('since'))} "
                                  f"(epoch {_text(leader.get('epoch'))})" if leader else "none seen"),
        ("stopped syncing", data.get("deposed")),
    ])
    rows = [(mono(n.get("node")), n.get("role"), yes_no(n.get("leading")), yes_no(n.get("alive")),
             duration(n.get("seen_seconds_ago")), duration(n.get("lag_seconds")) if n.get("leading") else "")
            for n in (_dict(n) for n in _list(data.get("nodes")))]
    return section("Cluster", head + table(["node", "role", "syncs", "alive", "seen", "event lag"], rows),
                   "cluster")


def shadow(snap: dict) -> str:
    """Shadow checks: local answers asked again of the site."""
    data = _dict(get(snap, "sgcache", "shadow"))
    if not data:
        return ""
    body = pairs([
        ("sampled (--shadow-rate)", f"{_text(data.get('sampled'))} at {_text(data.get('rate'))}"),
        ("checked", data.get("checked")),
        ("agreed", data.get("agreed")),
        ("agreed once the cache caught up", data.get("lagged")),
        ("mismatched", data.get("mismatched")),
        ("read shapes mismatched", data.get("shapes_mismatched")),
        ("pending", data.get("pending")),
        ("unsettled / skipped / failed", f"{_text(data.get('unsettled'))} / {_text(data.get('skipped'))} / "
                                         f"{_text(data.get('failed'))}"),
        ("answers showing where NULLs sort: agreed / mismatched",
         f"{_text(_dict(data.get('null_order')).get('agreed'))} / "
         f"{_text(_dict(data.get('null_order')).get('mismatched'))}"),
        ("on a mismatch", data.get("action")),
    ])
    return section("Shadow checks (`sgcache shadow report` lists mismatches)", body, "shadow")


SECTIONS: list[Any] = [readiness, banners, cluster, (lag, reads), types, (scan, poller), reasons, shapes,
                       problems, (schema, shadow), others]


def _safe(part: Callable[[dict], str], snap: dict) -> str:
    try:
        return part(snap)
    except Exception as e:  # one broken section must not hide the others
        name = getattr(part, "__name__", "?")
        return (f'<div class="banner warn">This part of the page ({esc(name)}) could not be shown: '
                f"{esc(type(e).__name__)}: {esc(str(e))}</div>")


def _title(snap: dict) -> str:
    flag = get(snap, "ready", "ready")
    return "sgcache: " + ("READY" if flag is True else "NOT READY" if flag is False else "status")


def page(snap: dict) -> str:
    head = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(_title(snap))}</title><style>{CSS}</style></head><body>"
    )
    parts = [_safe(header, snap), "<main>"]
    for row in SECTIONS:
        if isinstance(row, tuple):
            cells = [cell for cell in (_safe(part, snap) for part in row) if cell]
            parts.append(f'<div class="row">{"".join(cells)}</div>' if cells else "")
        else:
            parts.append(_safe(row, snap))
    footer = (f"<footer>generated {esc(when(snap.get('generated_at')))}; this page refreshes every "
              f"{REFRESH_SECONDS} s; the same figures as JSON: <a href=\"status.json\">status.json</a>, "
              f"<a href=\"metrics\">metrics</a></footer>")
    return head + "".join(parts) + footer + "</main></body></html>"


def fallback(error: BaseException) -> bytes:
    """The page when rendering failed: it says so, and still refreshes."""
    try:
        reason = html.escape(f"{type(error).__name__}: {error}"[:2000], quote=True)
    except Exception:
        reason = "unknown error"
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}"><title>sgcache: status unavailable</title>'
        "</head><body><h1>sgcache</h1><p>The status page could not be rendered: "
        f"{reason}</p><p>See <a href=\"status.json\">status.json</a> and the service log.</p></body></html>"
    ).encode("utf-8")


def render(snapshot: dict[str, Any]) -> bytes:
    """The status page of `snapshot` as UTF-8 HTML; never raises."""
    try:
        snap = snapshot if isinstance(snapshot, dict) else {}
        return page(snap).encode("utf-8", "backslashreplace")
    except Exception as e:
        return fallback(e)
