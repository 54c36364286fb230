"""What the store and sync commands share: the daemon's settings on their
command line, the schema they load, running work on the store (and the
site) on a fresh reactor run, and durations for people (`duration`).

Only `sgcache scan` may create a store: the others (`status`, `log`,
`reprocess`) stop with one line naming --db when there is none, before
opening anything."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from twisted.internet import defer

from sgcache.config import SETTINGS, ConfigError, resolve
from sgcache.schema import Schema, SchemaError


class CommandError(Exception):
    """A command failed in a way the operator can fix; the message says how."""


STORE_SETTINGS = ("config", "schema", "schema-rules", "db", "shotgun", "script-name", "api-key")


def add_settings(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    helps = {s.name: s.help for s in SETTINGS}
    for name in names:
        parser.add_argument(f"--{name}", dest=name.replace("-", "_"), default=None,
                            help=helps.get(name, "YAML config file (as for twistd sgcache)."))


#: what each kind of command needs, by option name
UPSTREAM = ("shotgun", "script-name", "api-key")


def settings_from(args: argparse.Namespace, need_upstream: bool, need_schema: bool = True) -> dict[str, Any]:
    """The resolved settings of a command's options (with SGCACHE_* and
    --config), checked for what the command needs: --schema with
    `need_schema`, the site's URL and script with `need_upstream`."""
    options: dict[str, Any] = {name: getattr(args, name.replace("-", "_"), None) for name in STORE_SETTINGS}
    # resolve() asks for what the daemon needs (or --demo, which the admin
    # commands do not take); the commands ask for theirs below
    options["demo"] = True
    try:
        settings = resolve(options)
    except ConfigError as e:
        raise CommandError(str(e))
    needed = (("schema",) if need_schema else ()) + (UPSTREAM if need_upstream else ())
    missing = [name for name in needed if not settings[name.replace("-", "_")]]
    if missing:
        names = ", ".join("--" + name for name in missing)
        raise CommandError(f"{names}: required (on the command line, as SGCACHE_* in the environment, "
                           f"or in the --config file)")
    return settings


def load_schema(settings: dict[str, Any]) -> Schema:
    """The schema file the settings name; a `CommandError` naming --schema."""
    try:
        return Schema.load(settings["schema"])
    except SchemaError as e:
        raise CommandError(f"--schema: {e}")


def check_store_exists(url: str) -> None:
    """A `CommandError` naming --db unless `url` is a SQLite file that
    exists (or in memory, or PostgreSQL: connecting says if it is not there)."""
    from sgcache.store import parse_store_url

    try:
        kind, target = parse_store_url(url)
    except ValueError as e:
        raise CommandError(f"--db: {e}")
    if kind == "sqlite" and target != ":memory:" and not os.path.exists(target):
        raise CommandError(f"--db: no store at {os.path.abspath(target)} (start the daemon, or give --db)")


def run_on_store(
    what: str,
    settings: dict[str, Any],
    work: Any,
    schema: Schema | None = None,
    with_site: bool = False,
    create: bool = False,
) -> Any:
    """Open the store (syncing `schema` into it when given) and, with
    `with_site`, the upstream client; return ``await work(reactor, store,
    upstream)``; close both. Any failure becomes one `CommandError` line.
    Without `create`, a SQLite store that does not exist is such a failure,
    found before anything is opened."""
    if not create:
        check_store_exists(settings["db"])
    outcome: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        from sgcache.store import open_store
        from sgcache.site.client import make_upstream

        store = open_store(settings["db"], reactor)
        upstream = None
        try:
            if with_site:
                try:
                    upstream = make_upstream(reactor, settings)
                except ValueError as e:
                    raise CommandError(str(e))
            try:
                await store.open()
            except Exception as e:
                raise CommandError(f"--db: cannot open the store: {_first_line(e)}")
            if schema is not None:
                await store.sync_schema(schema)
            outcome["result"] = await work(reactor, store, upstream)
        except (CommandError, BrokenPipeError) as e:  # a closed stdout: `main` ends quietly
            outcome["raise"] = e
        except Exception as e:  # reported as one line below
            outcome["error"] = f"{e.__class__.__name__}: {e}"
        finally:
            if upstream is not None:
                await upstream.close()
            await store.close()

    _react(main)
    if "raise" in outcome:
        raise outcome["raise"]
    if "error" in outcome:
        raise CommandError(f"{what} failed: {outcome['error']}")
    return outcome["result"]


async def with_sync_fence(reactor: Any, store: Any, what: str, work: Any) -> Any:
    """``await work(fence)`` with the fence a command's sync readers (scan,
    reprocess) use (`sgcache.sync.freshness`): on PostgreSQL the one every
    daemon on the store shares, so the command's applies are ordered
    against the daemons' write-backs and syncs, the command meanwhile a
    node of the store (role ``admin``, `sgcache.store.leadership`) that
    records its read floor each round (no prune takes a stamp its open
    reads need) and whose row goes when it ends; in memory on SQLite."""
    from sgcache.store.leadership import Leadership, node_name
    from sgcache.sync.freshness import Freshness, SharedFreshness

    fence = Freshness.for_store(store)
    if not isinstance(fence, SharedFreshness):
        return await work(fence)
    member = Leadership(reactor, store, role="admin", node=f"{node_name()} sgcache {what}", transient=True)
    member.start()
    try:
        await member.first_round
        return await work(fence)
    finally:
        await member.stop()


#: where `--admin-listen`'s default listens
DEFAULT_ADMIN = "http://127.0.0.1:8011"


def add_admin(parser: Any) -> None:
    """The ``--admin URL`` argument of a command that asks the running daemon."""
    parser.add_argument("--admin", metavar="URL", default=os.environ.get("SGCACHE_ADMIN_URL", DEFAULT_ADMIN),
                        help=f"the admin listener's URL [default: $SGCACHE_ADMIN_URL or {DEFAULT_ADMIN}]")


def ask_daemon(what: str, admin: str, path: str, method: str) -> Any:
    """The JSON answer of the daemon's admin listener at `path`; one
    `CommandError` line when it refuses or cannot be reached."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(admin.rstrip("/") + path, method=method, data=None)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        try:
            message = json.loads(e.read()).get("error") or e.reason
        except ValueError:
            message = e.reason
        raise CommandError(f"{what}: the daemon refused: {message}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise CommandError(f"{what}: cannot reach the daemon's admin listener at {admin} "
                           f"({reason}); is it running, with --admin-listen there?") from None


def drop_stdout() -> None:
    """Point stdout at /dev/null once its reader has gone (``| head``), so
    later output and the flush at exit have nowhere to fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (tests), or closed
        pass


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else error.__class__.__name__


def duration(seconds: float | None, missing: str = "-") -> str:
    """Seconds for a person: ``0.4 s``, ``12 s``, ``3 min``, ``2 h 5 min``,
    ``3 d 4 h``; `missing` for None."""
    if seconds is None:
        return missing
    if seconds < 10:
        return f"{max(seconds, 0.0):.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h" if hours % 24 else f"{hours // 24} d"


def _react(main: Any) -> None:
    """Run `main(reactor)` on a fresh reactor run, without exiting."""
    from twisted.internet import reactor

    result: dict[str, Any] = {}

    def done(outcome: Any) -> None:
        result["outcome"] = outcome
        if reactor.running:
            reactor.stop()

    def start() -> None:
        defer.ensureDeferred(main(reactor)).addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    outcome = result.get("outcome")
    if hasattr(outcome, "raiseException"):
        outcome.raiseException()
