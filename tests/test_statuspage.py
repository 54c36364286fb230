"""The admin listener's status page (`sgcache.web.statuspage`).

`render` on its own: every value escaped, any key missing or of the wrong
type, the site-unreachable banner, the refresh. Then in a real browser: a
daemon in front of the emulator, reads through the real client, and a
headless Chromium loading the admin listener's ``/`` -- its screenshot must
be a real picture of the page and its DOM must show the site, the
readiness, every cached type and the read shapes of the reads made
(``SGCACHE_KEEP_SCREENSHOT=/tmp/statuspage.png`` keeps a copy of the
screenshot, to look at).
"""

from __future__ import annotations

import os
import struct
import zlib

from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from sgcache.schema import Schema
from sgcache.testing import browser
from sgcache.testing.daemon import CACHE_SCRIPT, admin_url, start_daemon
from sgcache.testing.harness import client, start_emulator
from sgcache.web import statuspage
from sgcache.web.statuspage import render

EVIL = '<script>alert("x")</script>'


def full_snapshot() -> dict:
    """A snapshot as `sgcache.web.snapshot` makes it, with every part filled."""
    return {
        "generated_at": "2025-01-02T03:04:05Z",
        "version": "1.2.3",
        "site": {"url": "https://studio.example.com", "version": [9, 1, 2], "reachable": True,
                 "unreachable_since": None, "last_error": None},
        "ready": {"ready": False, "reasons": ["not serving yet: loading Shot"]},
        "lag": {"seconds": 12.5, "caught_up_at": "2025-01-02T03:03:50Z", "ready_threshold_seconds": 300.0},
        "types": [
            {"name": "Shot", "fields": 12, "fields_ready": 4, "waiting": ["code", "description", "a", "b", "c",
                                                                       "d", "e", "f"], "serving": False},
            {"name": "Project", "fields": 2, "fields_ready": 2, "waiting": [], "serving": True},
        ],
        "recent_problems": [
            {"time": "2025-01-02T03:04:00Z", "level": "error", "source": "sgcache.sync.poller",
             "text": "newest problem"},
            {"time": "2025-01-02T03:01:00Z", "level": "warn", "source": "sgcache.web.dispatch",
             "text": "older problem"},
        ],
        "top_read_shapes": [{"shape": "Shot | filters: code", "reads": 7, "local": 5, "passed_through": 2}],
        "sgcache": {
            "version": "1.2.3", "serving": False, "store": "sqlite", "state": "loading Shot",
            "reads_local": 5, "reads_reused": 2, "passthrough": 9, "answers_kept": 3, "answers_bytes": 20480,
            "passthrough_reasons": {"field not cached": 2, "credentials not vouched yet": 7},
            "event_lag_seconds": 12.5, "event_cursor": 4411, "last_event_id": 4411,
            "last_event_created_at": "2025-01-02T03:03:59Z", "holes": [4402, 4405], "poll_errors": 1,
            "poll_failing_for": 0, "last_poll_error": "timeout", "events": {"events": 321, "log_gaps": 1},
            "scan": {"running": True, "current": {"type": "Shot", "mode": "full", "entities": 120,
                                                  "expected": 400, "rate": 40.0, "started": 1735787000.0},
                     "last": {"mode": "incremental", "types": 2, "entities": 9, "seconds": 0.4,
                              "finished_at": 1735786000.0},
                     "watermarks": {"Project": "2025-01-02T03:00:00Z"}, "errors": 0, "last_error": None},
            "schema": {"file": "/etc/sgcache/schema.yml", "types": 2, "fields": 14, "site_known": True,
                       "missing_on_site": [], "problems": [], "changes_applied": 0},
            "loading": {"Shot": ["code"]},
            "plans_kept": 17,
            "info_age_seconds": 95.0, "info_from": "kept copy",
            "site": {"reachable": True, "unreachable_since": None, "last_error": None, "outage_reads": 4},
        },
    }


def text_of(snapshot: dict) -> str:
    return render(snapshot).decode("utf-8")


class RenderTests(unittest.TestCase):
    def test_a_full_snapshot(self):
        page = text_of(full_snapshot())
        self.assertTrue(page.startswith("<!doctype html>"))
        for expected in ("https://studio.example.com", "9.1.2", "1.2.3", "sqlite", "NOT READY",
                         "not serving yet: loading Shot", "12.5 s", "5 min", "4 / 12",
                         "code, description, a, b, c (+3 more)",
                         "Shot (full scan): 120 / 400 entities", "4402, 4405", "321", "20.0 KiB",
                         "Shot | filters: code", "newest problem", "plans_kept", "/etc/sgcache/schema.yml",
                         "1 min 35 s ago (from the kept copy)", "outage rule"):
            self.assertIn(expected, page)
        self.assertNotIn("could not be shown", page)
        # newest problem first; pass-through reasons by count
        self.assertLess(page.index("newest problem"), page.index("older problem"))
        self.assertLess(page.index("credentials not vouched yet"), page.index("field not cached"))
        # types still loading come first
        self.assertLess(page.index(">Shot<"), page.index(">Project<"))

    def test_ready(self):
        snap = full_snapshot()
        snap["ready"] = {"ready": True, "reasons": []}
        page = text_of(snap)
        self.assertIn(">READY<", page)
        self.assertNotIn("NOT READY", page)
        self.assertNotIn("Not ready because", page)

    def test_the_page_refreshes_itself_and_needs_nothing_else(self):
        page = text_of(full_snapshot())
        self.assertIn('<meta http-equiv="refresh" content="5">', page)
        self.assertIn('<meta charset="utf-8">', page)
        self.assertNotIn("<script", page)
        self.assertNotIn("<link", page)
        self.assertNotIn("src=", page)

    def test_every_value_is_escaped(self):
        snap = full_snapshot()
        snap["site"].update(url=f'https://x/"{EVIL}', version=EVIL, reachable=False,
                            unreachable_since=EVIL, last_error=EVIL)
        snap["version"] = EVIL
        snap["ready"] = {"ready": False, "reasons": [EVIL]}
        snap["types"].append({"name": EVIL, "fields": 2, "fields_ready": 1, "waiting": [EVIL], "serving": False})
        snap["top_read_shapes"].append({"shape": f"Shot | filters: {EVIL}", "reads": 1, "local": 0,
                                        "passed_through": 1})
        snap["recent_problems"].append({"time": EVIL, "level": EVIL, "source": EVIL, "text": EVIL})
        block = snap["sgcache"]
        block.update(store=EVIL, state=EVIL, last_poll_error=EVIL, holes=[EVIL], status_error=EVIL)
        block["passthrough_reasons"][EVIL] = 3
        block["events"][EVIL] = 1
        block["scan"]["watermarks"][EVIL] = EVIL
        block["scan"]["current"]["type"] = EVIL
        block["scan"]["last_error"] = EVIL
        block["schema"].update(file=EVIL, problems=[EVIL], missing_on_site=[EVIL])
        block[EVIL] = EVIL
        page = text_of(snap)
        self.assertNotIn("<script", page)
        self.assertNotIn('"x")', page)  # quotes are escaped too
        self.assertIn("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;", page)
        self.assertGreater(page.count("&lt;script&gt;"), 15)
        self.assertNotIn("could not be shown", page)

    def test_site_unreachable_banner(self):
        snap = full_snapshot()
        self.assertNotIn("The site is unreachable", text_of(snap))
        snap["site"].update(reachable=False, unreachable_since="2025-01-02T02:00:00Z",
                            last_error="connection refused")
        page = text_of(snap)
        self.assertIn("The site is unreachable since 2025-01-02T02:00:00Z", page)
        self.assertIn("connection refused", page)
        self.assertIn('class="banner bad"', page)
        # reachability unknown: no banner
        snap["site"]["reachable"] = None
        self.assertNotIn("The site is unreachable", text_of(snap))

    def test_missing_keys(self):
        for snap in ({}, {"sgcache": {}}, {"site": None, "ready": None, "lag": None, "types": None,
                                          "sgcache": None, "recent_problems": None, "top_read_shapes": None}):
            page = text_of(snap)
            self.assertIn("<!doctype html>", page)
            self.assertIn('http-equiv="refresh"', page)
            self.assertIn("READINESS UNKNOWN", page)
            self.assertNotIn("could not be shown", page)
            self.assertNotIn("None", page)

    def test_any_key_of_any_type(self):
        junk = [None, "text", 0, -1, 2.5, float("nan"), float("inf"), True, [], {}, [None], [1, "a"],
                {"a": None}, [{"x": 1}], object()]
        base = full_snapshot()

        def paths(node, prefix=()):
            if isinstance(node, dict):
                for key, value in node.items():
                    yield prefix + (key,)
                    yield from paths(value, prefix + (key,))
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    yield from paths(value, prefix + (i,))

        import copy

        count = 0
        for path in list(paths(base)):
            for value in junk:
                snap = copy.deepcopy(base)
                node = snap
                for key in path[:-1]:
                    node = node[key]
                node[path[-1]] = value
                page = text_of(snap)
                self.assertTrue(page.startswith("<!doctype html>"), path)
                self.assertNotIn("could not be", page, (path, value))
                count += 1
        self.assertGreater(count, 500)
        for snap in (None, [], "x", 3):
            self.assertIn("<!doctype html>", text_of(snap))  # type: ignore[arg-type]

    def test_a_failing_section_still_shows_the_rest(self):
        def broken(snap):
            raise RuntimeError(EVIL)

        self.patch(statuspage, "SECTIONS", [statuspage.lag, broken, statuspage.types])
        page = text_of(full_snapshot())
        self.assertIn("(broken) could not be shown: RuntimeError", page)
        self.assertIn("Serving, per type", page)
        self.assertNotIn("<script", page)

    def test_a_failing_page_is_still_a_page(self):
        def broken(snap):
            raise ValueError(EVIL)

        self.patch(statuspage, "page", broken)
        page = text_of(full_snapshot())
        self.assertIn("The status page could not be rendered: ValueError", page)
        self.assertIn('http-equiv="refresh"', page)
        self.assertNotIn("<script", page)


# -- in a browser -----------------------------------------------------------------

SITE_YAML = """\
entities:
  Project:
    fields: {name: text}
  Sequence:
    fields: {code: text, project: {type: entity, entity_types: [Project]}}
  Shot:
    fields: {code: text, description: text, sg_cut_in: number, project: {type: entity, entity_types: [Project]},
             sg_sequence: {type: entity, entity_types: [Sequence]}}
"""

WIDTH, HEIGHT = 1280, 1600


def png_pixels(data: bytes, enough: int = 16) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct pixels) of an 8-bit RGB(A) PNG; unfilters
    rows until `enough` distinct pixels are seen (a page's header is
    enough), all of them otherwise."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + chunk) != struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if ihdr is None:
        raise ValueError("no IHDR")
    width, height, depth, color, _, _, interlace = ihdr
    if depth != 8 or color not in (2, 6) or interlace:
        raise ValueError(f"unexpected PNG format {ihdr}")
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    if len(raw) != height * (stride + 1):
        raise ValueError(f"IDAT holds {len(raw)} bytes, not {height * (stride + 1)}")
    distinct: set[bytes] = set()
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, prev))
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        elif kind != 0:
            raise ValueError(f"bad filter {kind} on row {y}")
        distinct.update(bytes(row[i:i + bpp]) for i in range(0, stride, bpp))
        if len(distinct) >= enough:
            break
        prev = row
    return width, height, distinct


class BrowserTests(unittest.TestCase):
    async def start(self):
        self.browser = browser.require_browser(self)
        site_schema = Schema.load(self.write("site.yml", SITE_YAML))
        site = await start_emulator(site_schema, scripts=dict([CACHE_SCRIPT, ("user", "key")]))
        self.addCleanup(lambda: defer.ensureDeferred(site.stop()))
        project = {"type": "Project", "id": 1}
        site.emulator.seed(
            [{"type": "Project", "id": 1, "fields": {"name": "Demo"}},
             {"type": "Sequence", "id": 5, "fields": {"code": "SQ01", "project": project}}]
            + [{"type": "Shot", "fields": {"code": f"sh{i:03d}", "description": f"shot {i}", "sg_cut_in": i,
                                           "project": project, "sg_sequence": {"type": "Sequence", "id": 5}}}
               for i in range(6)]
        )
        store = "sqlite:///" + os.path.abspath(self.mktemp()) + ".sqlite"
        daemon = await start_daemon(site_schema, site.url, store)
        self.addCleanup(lambda: defer.ensureDeferred(daemon.stop()))
        sg = client(daemon.url, "user", "key")
        self.addCleanup(sg.close)
        return site, daemon, sg

    def write(self, name: str, text: str) -> str:
        path = os.path.join(os.path.abspath(self.mktemp()) + "-" + name)
        with open(path, "w") as fh:
            fh.write(text)
        return path

    def test_the_status_page_in_a_browser(self):
        async def go():
            site, daemon, sg = await self.start()
            await deferToThread(sg.find, "Shot", [], ["code"])  # vouches for "user"; passes through
            for _ in range(2):
                await deferToThread(sg.find, "Shot", [["sg_cut_in", "greater_than", 2]], ["code", "description"],
                                    order=[{"field_name": "code", "direction": "asc"}])
            await deferToThread(sg.find_one, "Project", [["name", "is", "Demo"]], ["name"])
            self.assertGreater(daemon.cache.status()["reads_local"], 0)
            url = admin_url(daemon) + "/"

            path = os.path.abspath(self.mktemp()) + ".png"
            shot, dom = await defer.gatherResults([
                deferToThread(browser.screenshot, self.browser, url, path, WIDTH, HEIGHT),
                deferToThread(browser.dump_dom, self.browser, url),
            ], consumeErrors=True)
            if os.environ.get("SGCACHE_KEEP_SCREENSHOT"):
                with open(path, "rb") as src, open(os.environ["SGCACHE_KEEP_SCREENSHOT"], "wb") as dst:
                    dst.write(src.read())

            with open(path, "rb") as fh:
                data = fh.read()
            width, height, distinct = png_pixels(data)
            self.assertEqual((width, height), (WIDTH, HEIGHT))
            self.assertGreaterEqual(len(distinct), 8, "the screenshot is (nearly) blank")

            page = dom.stdout_text
            self.assertIn("sgcache status", page)
            self.assertIn(site.url, page)
            self.assertRegex(page, r">(NOT )?READY<")
            for name in ("Project", "Sequence", "Shot"):
                self.assertIn(f"<b>{name}</b>", page)
            self.assertIn("Shot | filters: sg_cut_in | sort: code", page)
            self.assertIn("Project | filters: name", page)
            self.assertNotIn("could not be", page)

        return defer.ensureDeferred(go())
