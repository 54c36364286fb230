"""The ``sgcache`` admin command: argparse subcommands and their handlers.

Commands are registered in `COMMANDS`, a list of ``(name, register)``:
`build_parser` adds a subparser called ``name`` (its help is the first line
of ``register.__doc__``) and calls ``register(parser)``, which adds the
command's arguments (or nested subcommands) and sets ``func`` with
``parser.set_defaults(func=handler)``. ``handler(args) -> int`` returns the
exit status. ``register`` may also be given as a ``"module:function"``
string, imported only when the parser is built, so a command's module (and
what it imports) stays out of the others' way.

Handlers report expected failures by raising `SchemaError` or `OSError`
(`CommandError` for anything else): `main` prints one line to stderr and
returns 2, never a traceback. A closed stdout (``| head``) ends any command
quietly (status 141, nothing on stderr).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from typing import Callable, Sequence, Union

from sgcache import __version__
from sgcache.admin.common import CommandError, add_admin, ask_daemon, drop_stdout
from sgcache.schema import Schema, SchemaError

Handler = Callable[[argparse.Namespace], int]
Register = Callable[[argparse.ArgumentParser], None]


# -- sgcache schema ... --------------------------------------------------


def register_schema(parser: argparse.ArgumentParser) -> None:
    """Make, cut down and check schema files."""
    sub = parser.add_subparsers(dest="schema_command", metavar="ACTION", required=True)

    dump = sub.add_parser(
        "dump",
        help="write a site's whole schema as YAML",
        description="Write the whole schema of a site (or of a saved schema_read dump) as YAML.",
    )
    source = dump.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--from-file",
        metavar="PATH",
        help="a saved schema_read JSON file, or a directory holding schema_read.json "
        "(+ schema_entity_read.json)",
    )
    source.add_argument("--shotgun", metavar="URL", help="the site's base URL")
    dump.add_argument("--script-name", metavar="NAME", help="API script name (with --shotgun)")
    dump.add_argument(
        "--api-key",
        metavar="KEY",
        help="API script key (with --shotgun; default: $SGCACHE_API_KEY)",
    )
    dump.add_argument("-o", "--output", metavar="OUT.yml", help="write here instead of stdout")
    dump.set_defaults(func=_schema_dump)

    filt = sub.add_parser(
        "filter",
        help="keep the types and fields that include/exclude rules select",
        description="Cut a schema down to what the rules select. Rules come from files "
        "(--rules) and inline text (--rules-text), applied in command-line order; the last "
        "matching rule wins. See sgcache/schema_tools.py for the rule syntax.",
    )
    filt.add_argument(
        "--rules", action=_RuleSource, dest="rule_sources", metavar="FILE", help="a rules file"
    )
    filt.add_argument(
        "--rules-text",
        action=_RuleSource,
        dest="rule_sources",
        metavar="RULES",
        help="rules given inline, e.g. '+ Shot.*' (may be repeated)",
    )
    filt.add_argument(
        "input", metavar="INPUT", help="a YAML schema, a schema_read JSON file or a fixture directory"
    )
    filt.add_argument("-o", "--output", metavar="OUT.yml", help="write here instead of stdout")
    filt.add_argument(
        "-v", "--verbose", action="store_true", help="list dropped fields and unused rules"
    )
    filt.set_defaults(func=_schema_filter)

    check = sub.add_parser(
        "check",
        help="load a schema file strictly and print its size",
        description="Load a schema (YAML, schema_read JSON or fixture directory) and validate it.",
    )
    check.add_argument("input", metavar="INPUT")
    check.set_defaults(func=_schema_check)

    for action, text in (
        ("plan", "print what a reload of the running daemon's schema would do (nothing changes)"),
        ("reload", "make the running daemon read its schema file and rules again, and apply them"),
    ):
        cmd = sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ". Talks to "
                             "the daemon's admin listener (--admin-listen); SIGHUP and `systemctl reload` "
                             "reload too.")
        add_admin(cmd)
        cmd.add_argument("--json", action="store_true", help="print the daemon's whole report as JSON")
        cmd.set_defaults(func=_schema_live, action=action)


class _RuleSource(argparse.Action):
    """Collects --rules / --rules-text in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        sources = list(getattr(namespace, self.dest, None) or [])
        sources.append((option_string, values))
        setattr(namespace, self.dest, sources)


def _schema_dump(args: argparse.Namespace) -> int:
    from sgcache.schema import tools as schema_tools

    if args.shotgun:
        api_key = args.api_key or os.environ.get("SGCACHE_API_KEY")
        if not args.script_name or not api_key:
            raise CommandError("schema dump --shotgun needs --script-name and --api-key")
        schema = schema_tools.dump_from_site(args.shotgun, args.script_name, api_key)
        origin = args.shotgun
    else:
        schema = schema_tools.dump_from_file(args.from_file)
        origin = args.from_file
    try:
        Schema.from_dict(schema.to_dict(), source=args.output or "<output>")
    except SchemaError as e:
        _say(f"warning: the dump will not load as a YAML schema as is ({e}); filter it first")
    _write(schema, args.output, "sgcache schema dump", origin)
    counts = _counts(schema)
    _say(f"schema dump: {counts} from {origin}")
    return 0


def _schema_filter(args: argparse.Namespace) -> int:
    from sgcache.schema import tools as schema_tools

    if not args.rule_sources:
        raise CommandError("schema filter needs --rules FILE or --rules-text RULES")
    rules: list[schema_tools.Rule] = []
    generated_by = ["sgcache", "schema", "filter"]
    inline = 0
    for option, value in args.rule_sources:
        if option == "--rules":
            rules.extend(schema_tools.load_rules(value))
        else:
            inline += 1
            rules.extend(schema_tools.parse_rules(value, source=f"--rules-text #{inline}"))
        generated_by += [option, value]
    generated_by.append(args.input)

    schema = schema_tools.dump_from_file(args.input)
    report = schema_tools.filter_schema_report(schema, rules)
    if not len(report.schema):
        raise CommandError("schema filter: the rules select no field of " + args.input)
    _write(report.schema, args.output, shlex.join(generated_by), args.input)
    for warning in report.warnings:
        _say(f"warning: {warning}")
    if args.verbose:
        for name in report.dropped_uncacheable:
            _say(f"dropped (uncacheable): {name}")
        for name in report.dropped_links:
            _say(f"dropped (links only to dropped types): {name}")
        for rule in report.unused_rules:
            _say(f"unused rule: {rule.source}:{rule.line}: {rule}")
    _say(f"schema filter: {report.summary()}")
    return 0


def _schema_check(args: argparse.Namespace) -> int:
    from sgcache.schema import tools as schema_tools

    schema = schema_tools.dump_from_file(args.input)
    schema.validate()
    print(f"{args.input}: ok, {_counts(schema)}")
    return 0


def _schema_live(args: argparse.Namespace) -> int:
    """`schema plan` / `schema reload`: ask the running daemon."""
    report = ask_daemon(f"schema {args.action}", args.admin, "/schema/" + args.action,
                        "GET" if args.action == "plan" else "POST")
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
        return 0
    print("schema reload applied:" if report.get("applied") else "schema plan: a reload now would")
    for line in report.get("changes") or []:
        print(f"  {line}")
    for line in report.get("problems") or []:
        print(f"  problem: {line}")
    if not report.get("site_known", True):
        print("  note: the site's schema could not be read; the schema file is taken as is")
    return 0


def _write(schema: Schema, output: str | None, generated_by: str, origin: str) -> None:
    from sgcache.schema import tools as schema_tools

    schema_tools.write_yaml(schema, output or sys.stdout, generated_by=generated_by, source=origin)


def _counts(schema: Schema) -> str:
    return f"{len(schema)} types, {sum(len(e.fields) for e in schema)} fields"


def _say(message: str) -> None:
    print(f"sgcache: {message}", file=sys.stderr)


# -- the command ---------------------------------------------------------

#: Subcommands: (name, register function or "module:function").
COMMANDS: list[tuple[str, Union[Register, str]]] = [
    ("schema", register_schema),
    ("scan", "sgcache.admin.commands:register_scan"),
    ("status", "sgcache.admin.commands:register_status"),
    ("shadow", "sgcache.admin.shadow_commands:register_shadow"),
    ("log", "sgcache.admin.sync_commands:register_log"), ("reprocess", "sgcache.admin.sync_commands:register_reprocess"),
]


def build_parser(commands: Sequence[tuple[str, Union[Register, str]]] | None = None) -> argparse.ArgumentParser:
    """The ``sgcache`` argument parser with every command in `commands`
    (default `COMMANDS`). Its ``subparsers`` attribute is the subparsers
    action, for adding more commands by hand."""
    parser = argparse.ArgumentParser(
        prog="sgcache", description="Administer an sgcache (Shotgun API caching proxy)."
    )
    parser.add_argument("--version", action="version", version=f"sgcache {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.subparsers = subparsers  # type: ignore[attr-defined]
    for name, register in COMMANDS if commands is None else commands:
        if isinstance(register, str):
            module, _, func = register.partition(":")
            register = getattr(importlib.import_module(module), func)
        doc = (register.__doc__ or "").strip()
        sub = subparsers.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc or None)
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sgcache`` command; returns the exit status. When stdout's
    reader goes away (``sgcache log ... | head``) it ends quietly with 141,
    as a command killed by SIGPIPE does in a shell."""
    try:
        status = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        drop_stdout()
        return 141
    return status


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    try:
        return int(args.func(args) or 0)
    except (SchemaError, CommandError) as e:
        _say(f"error: {_one_line(str(e))}")
    except BrokenPipeError:
        raise
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _say(f"error: {where}{_one_line(e.strerror or str(e))}")
    except KeyboardInterrupt:
        return 130
    return 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    # run through the package module, so its exception classes are the ones
    # other command modules import
    from sgcache.admin.cli import main as package_main

    sys.exit(package_main())
