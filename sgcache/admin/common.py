"""What the store and sync commands share: the daemon's settings on their
command line, the schema they load, and running work on the store (and the
site) on a fresh reactor run."""

from __future__ import annotations

import argparse
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


def settings_from(args: argparse.Namespace, need_upstream: bool) -> dict[str, Any]:
    options = {name: getattr(args, name.replace("-", "_"), None) for name in STORE_SETTINGS}
    if not need_upstream:
        # status needs no credentials: fill placeholders so resolve() passes
        options.setdefault("shotgun", None)
        for key, placeholder in (("shotgun", "http://unused.invalid"), ("script-name", "-"), ("api-key", "-")):
            if options.get(key) is None:
                options[key] = placeholder
    try:
        return resolve(options)
    except ConfigError as e:
        raise CommandError(str(e))


def load_schema(settings: dict[str, Any]) -> Schema:
    """The schema file the settings name; a `CommandError` naming --schema."""
    try:
        return Schema.load(settings["schema"])
    except SchemaError as e:
        raise CommandError(f"--schema: {e}")


def run_on_store(
    what: str,
    settings: dict[str, Any],
    work: Any,
    schema: Schema | None = None,
    with_site: bool = False,
) -> Any:
    """Open the store (syncing `schema` into it when given) and, with
    `with_site`, the upstream client; return ``await work(reactor, store,
    upstream)``; close both. Any failure becomes one `CommandError` line."""
    outcome: dict[str, Any] = {}

    async def main(reactor: Any) -> None:
        from sgcache.store import open_store
        from sgcache.site.client import Upstream

        store = open_store(settings["db"], reactor)
        upstream = None
        if with_site:
            upstream = Upstream(reactor, settings["shotgun"], settings["script_name"], settings["api_key"])
        try:
            await store.open()
            if schema is not None:
                await store.sync_schema(schema)
            outcome["result"] = await work(reactor, store, upstream)
        except CommandError as e:
            outcome["command_error"] = e
        except Exception as e:  # reported as one line below
            outcome["error"] = f"{e.__class__.__name__}: {e}"
        finally:
            if upstream is not None:
                await upstream.close()
            await store.close()

    _react(main)
    if "command_error" in outcome:
        raise outcome["command_error"]
    if "error" in outcome:
        raise CommandError(f"{what} failed: {outcome['error']}")
    return outcome["result"]


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


