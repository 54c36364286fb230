"""Tools that make the schema files sgcache runs on: dump a site's schema,
cut it down with include/exclude rules, write it as YAML.

Rules (``schema/basic.rules`` is an example), one per line::

    # comments and blank lines are ignored
    + Shot.*            include every field of Shot
    - *.sg_*            exclude custom fields of every type
    + *.code            include `code` wherever it exists
    + Task.step         one field
    + Asset             a bare type: the same as `+ Asset.*`

Patterns are ``Type.field`` shell globs (`fnmatch`, case-sensitive). For
every (type, field) the last matching rule wins; no match means excluded.
See `filter_schema` for what is kept beyond what the rules say.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import os
import re
import tempfile
import xmlrpc.client
from dataclasses import dataclass, field
from typing import IO, Iterable

import yaml

from sgcache.schema.types import is_cacheable
from sgcache.schema import EntitySpec, FieldSpec, Schema, SchemaError

#: Fields kept for every kept type, whatever the rules say (besides the
#: identifier, and `project` where the type has one).
ALWAYS_KEPT_FIELDS = ("id", "created_at", "updated_at", "created_by", "updated_by")

_RULE_LINE = re.compile(r"^([+-])\s*(\S+)\s*(?:#.*)?$")
_GLOB_PART = r"[A-Za-z0-9_*?\[\]!-]+"
_PATTERN = re.compile(rf"^({_GLOB_PART})(?:\.({_GLOB_PART}))?$")


@dataclass(frozen=True)
class Rule:
    """One include (``+``) or exclude (``-``) rule."""

    include: bool
    type_pattern: str
    field_pattern: str
    source: str = "<rules>"
    line: int = 0

    def matches(self, entity_type: str, field_name: str) -> bool:
        return fnmatch.fnmatchcase(entity_type, self.type_pattern) and fnmatch.fnmatchcase(
            field_name, self.field_pattern
        )

    def __str__(self) -> str:
        return f"{'+' if self.include else '-'} {self.type_pattern}.{self.field_pattern}"


def parse_rules(text: str, source: str = "<rules>") -> list[Rule]:
    """Parse rules text; a malformed line raises SchemaError naming
    `source` and the line number."""
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _RULE_LINE.match(line)
        pattern = match and _PATTERN.match(match.group(2))
        if not match or not pattern:
            raise SchemaError(
                f"{source}:{number}: expected '+ Type.field' or '- Type.field', got {line!r}"
            )
        rules.append(
            Rule(
                include=match.group(1) == "+",
                type_pattern=pattern.group(1),
                field_pattern=pattern.group(2) or "*",
                source=source,
                line=number,
            )
        )
    return rules


def load_rules(path: str) -> list[Rule]:
    """Parse a rules file."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise SchemaError(f"{path}: cannot read rules: {e.strerror}") from None
    return parse_rules(text, source=path)


def is_included(rules: Iterable[Rule], entity_type: str, field_name: str) -> bool:
    """What the rules say about one field: the last matching rule wins,
    excluded when none matches."""
    included = False
    for rule in rules:
        if rule.matches(entity_type, field_name):
            included = rule.include
    return included


@dataclass
class FilterReport:
    """A filtered schema and what the filter left out on the way."""

    schema: Schema
    #: "Type.field" of fields the rules (or the always-kept list) wanted but
    #: whose data type the cache cannot hold.
    dropped_uncacheable: list[str] = field(default_factory=list)
    #: "Type.field" of link fields whose linked types were all dropped.
    dropped_links: list[str] = field(default_factory=list)
    #: Rules that matched no field of the input.
    unused_rules: list[Rule] = field(default_factory=list)
    #: Anything else worth telling the operator.
    warnings: list[str] = field(default_factory=list)

    @property
    def field_count(self) -> int:
        return sum(len(e.fields) for e in self.schema)

    def summary(self) -> str:
        """One line: what was kept and dropped."""
        return (
            f"kept {len(self.schema)} types, {self.field_count} fields; "
            f"dropped {len(self.dropped_uncacheable)} uncacheable fields, "
            f"{len(self.dropped_links)} links to dropped types"
        )


def filter_schema(schema: Schema, rules: list[Rule]) -> Schema:
    """A new, strictly validated Schema holding what `rules` include.

    * A type is kept when the rules include at least one of its fields.
    * A kept type always keeps its identifier field and the bookkeeping
      fields (id, created_at, updated_at, created_by, updated_by, and
      `project` when it has one).
    * Fields of data types the cache cannot hold are dropped.
    * Link fields keep only the linked types that are kept; one left with
      none is dropped (an always-kept link keeps its declared types, since
      every loaded Schema has those fields).
    * `reverse` references to fields that are not kept are removed.
    """
    return filter_schema_report(schema, rules).schema


def filter_schema_report(schema: Schema, rules: list[Rule]) -> FilterReport:
    """Like `filter_schema`, with an account of what was dropped."""
    used: set[int] = set()
    wanted: dict[str, set[str]] = {}
    for entity in schema:
        names = set()
        for fname in entity.fields:
            decision = None
            for index, rule in enumerate(rules):
                if rule.matches(entity.name, fname):
                    decision = rule.include
                    used.add(index)
            if decision:
                names.add(fname)
        if names:
            wanted[entity.name] = names

    kept_types = set(wanted)
    report = FilterReport(Schema(source=schema.source))
    report.unused_rules = [r for i, r in enumerate(rules) if i not in used]

    entities: list[EntitySpec] = []
    for type_name in sorted(kept_types):
        entity = schema[type_name]
        always = set(ALWAYS_KEPT_FIELDS) | {entity.identifier}
        if "project" in entity.fields:
            always.add("project")
        names = wanted[type_name] | (always & set(entity.fields))
        fields: dict[str, FieldSpec] = {}
        for fname in sorted(names):
            spec = entity.fields[fname]
            where = f"{type_name}.{fname}"
            if not is_cacheable(spec.data_type):
                report.dropped_uncacheable.append(where)
                continue
            if spec.is_link:
                links = tuple(t for t in spec.link_types if t in kept_types)
                if not links and fname not in always:
                    report.dropped_links.append(where)
                    continue
                spec = dataclasses.replace(spec, link_types=links or spec.link_types)
            fields[fname] = spec
        identifier = entity.identifier
        if identifier not in fields:
            report.warnings.append(
                f"{type_name}: identifier field {identifier!r} cannot be cached; "
                "links to the type will be named by id"
            )
            identifier = "id"
        entities.append(EntitySpec(type_name, identifier, fields, entity.display_name))

    result = Schema(entities, source=schema.source)
    for entity in entities:
        for fname, spec in list(entity.fields.items()):
            if spec.reverse:
                entity.fields[fname] = dataclasses.replace(
                    spec, reverse=_kept_reverse(result, spec.reverse)
                )
    result.validate()
    report.schema = result
    return report


def _kept_reverse(schema: Schema, reverse: str) -> str | None:
    kept = []
    for candidate in reverse.split(","):
        rtype, _, rfield = candidate.strip().partition(".")
        if schema.get_field(rtype, rfield) is not None:
            kept.append(f"{rtype}.{rfield}")
    return ",".join(kept) or None


# -- sources -------------------------------------------------------------


def dump_from_site(base_url: str, script_name: str, api_key: str) -> Schema:
    """The schema of a live site, read with the `shotgun_api3` client
    (`schema_read` + `schema_entity_read`). Failures raise SchemaError."""
    import shotgun_api3
    from shotgun_api3.lib.httplib2 import HttpLib2Error

    failures = (shotgun_api3.ShotgunError, xmlrpc.client.Error, HttpLib2Error, OSError, ValueError)
    try:
        sg = shotgun_api3.Shotgun(base_url, script_name=script_name, api_key=api_key, connect=False)
    except failures as e:
        raise SchemaError(f"{base_url}: cannot connect: {_describe(e)}") from None
    try:
        schema_read = sg.schema_read()
        entity_read = sg.schema_entity_read()
    except failures as e:
        raise SchemaError(f"{base_url}: cannot read the schema: {_describe(e)}") from None
    finally:
        sg.close()
    return Schema.from_schema_read(schema_read, entity_read, source=base_url)


def dump_from_file(path: str) -> Schema:
    """The schema in a saved `schema_read` JSON file or a fixture directory
    (``schema_read.json`` + optional ``schema_entity_read.json``); a YAML
    schema file is accepted too."""
    try:
        return Schema.load(path)
    except SchemaError:
        raise
    except ValueError as e:  # malformed JSON inside a fixture directory
        raise SchemaError(f"{path}: not valid JSON: {e}") from None
    except OSError as e:
        raise SchemaError(f"{path}: cannot read schema: {e.strerror or e}") from None


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


# -- output --------------------------------------------------------------


class _Flow(dict):
    """A mapping written on one line."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, True)
)


def schema_to_yaml(schema: Schema, generated_by: str | None = None, source: str | None = None) -> str:
    """The schema as YAML text: a header comment, then types and fields in
    name order, one line per field."""
    data = schema.to_dict()
    for body in data["entities"].values():
        body["fields"] = {
            name: _Flow(spec) if isinstance(spec, dict) else spec
            for name, spec in body["fields"].items()
        }
    header = [
        "# sgcache schema (format: see sgcache/schema/model.py).",
        f"# Generated by: {_comment(generated_by or 'sgcache.schema.tools')}",
        f"# From: {_comment(source or schema.source)}",
        f"# {len(schema)} entity types, {sum(len(e.fields) for e in schema)} fields.",
    ]
    body = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16, allow_unicode=True
    )
    return "\n".join(header) + "\n" + body


def _comment(text: str) -> str:
    """Text fit for a one-line comment."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def write_yaml(
    schema: Schema,
    path_or_stream: str | IO[str],
    generated_by: str | None = None,
    source: str | None = None,
) -> None:
    """Write the schema as YAML (see `schema_to_yaml`) to a path (replaced
    atomically) or an open text stream."""
    text = schema_to_yaml(schema, generated_by, source)
    if not isinstance(path_or_stream, (str, os.PathLike)):
        path_or_stream.write(text)
        return
    path = os.fspath(path_or_stream)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".sgcache-schema-", suffix=".yml", dir=directory)
    try:
        with io.open(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise

