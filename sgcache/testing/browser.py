"""Test helper: a headless Chromium (or Chrome) to look at a page the way an
operator's browser does -- a screenshot, or the DOM after loading.

    browser = require_browser(self)          # skips, or fails when CI is set
    result = await deferToThread(screenshot, browser, url, path, 1280, 1600)
    dom = (await deferToThread(dump_dom, browser, url)).stdout_text

The functions block until the browser exits: call them in a thread, so the
reactor keeps serving the page meanwhile. Each run gets a throw-away
profile and ``HOME``, and a time limit, after which the browser and every
process it started are killed. What the browser prints on stderr (Debian's
``/usr/bin/chromium`` wrapper and D-Bus complain on a bare machine) is kept
in the result, never taken as a failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Sequence

from sgcache.testing.pg import in_ci

#: the names a Chromium-based browser goes by on PATH
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: seconds one browser run may take
TIMEOUT = 60.0
#: flags for a headless run as root in a container, with no GPU and no D-Bus
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


class BrowserError(Exception):
    """The browser could not be run, timed out, or failed."""


@dataclass
class BrowserResult:
    argv: list[str]
    code: int
    stdout: bytes
    stderr: bytes

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def describe(self) -> str:
        tail = self.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        return f"exit {self.code}; stderr ends: " + " | ".join(tail)


def find_browser() -> str | None:
    """The path of the first of `CANDIDATES` on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def require_browser(testcase: Any) -> str:
    """A browser for `testcase`; skips it when there is none -- unless
    ``CI`` is set, where a missing browser is a broken build and it fails."""
    path = find_browser()
    if path is None:
        message = f"no headless browser on PATH (looked for {', '.join(CANDIDATES)}); apt-get install chromium"
        if in_ci():
            testcase.fail(f"{message} (CI is set, so this is an error)")
        testcase.skipTest(message)
    return path


def run(browser: str, args: Sequence[str], timeout: float = TIMEOUT) -> BrowserResult:
    """Run `browser` headless with `args` (blocking; call it in a thread).

    Raises `BrowserError` when it cannot start or outlives `timeout` (then
    it and its children are killed); a non-zero exit is left to the caller."""
    scratch = tempfile.mkdtemp(prefix="sgcache-browser-")
    try:
        argv = [browser, *HEADLESS_FLAGS, f"--user-data-dir={os.path.join(scratch, 'profile')}", *args]
        env = dict(os.environ, HOME=scratch, XDG_CONFIG_HOME=os.path.join(scratch, ".config"),
                   XDG_CACHE_HOME=os.path.join(scratch, ".cache"))
        try:
            # a session of its own, so that a timeout kills the renderer,
            # zygote and GPU processes too
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, cwd=scratch, start_new_session=True)
        except OSError as e:
            raise BrowserError(f"cannot run {browser}: {e}") from e
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            raise BrowserError(
                f"{os.path.basename(browser)} did not finish in {timeout:g} s and was killed; stderr ends: "
                + " | ".join(err.decode("utf-8", "replace").strip().splitlines()[-5:])
            ) from None
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        return BrowserResult(argv, proc.returncode, out, err)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the process group `proc` leads (it was started in a session of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def screenshot(browser: str, url: str, path: str, width: int = 1280, height: int = 1600,
               timeout: float = TIMEOUT) -> BrowserResult:
    """Load `url` and save a `width` x `height` PNG of it at `path`."""
    result = run(browser, [f"--screenshot={path}", f"--window-size={width},{height}", url], timeout)
    if result.code != 0 or not os.path.exists(path):
        raise BrowserError(f"no screenshot of {url} at {path}: {result.describe()}")
    return result


def dump_dom(browser: str, url: str, timeout: float = TIMEOUT) -> BrowserResult:
    """Load `url`; the DOM it ends with, serialized, is ``stdout_text``."""
    result = run(browser, ["--dump-dom", url], timeout)
    if result.code != 0 or not result.stdout.strip():
        raise BrowserError(f"no DOM of {url}: {result.describe()}")
    return result
