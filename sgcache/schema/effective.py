"""The schema the cache actually runs on: the schema file, widened by the
schema rules, checked against the site's own schema.

    effective = resolve(file_schema, rules, site_schema)

* Every type and field of the file is cached **when the site has it**; a
  field (or type) the site lacks is left out and reported (a typo, or a
  field retired on the site): it is never served as null.
* Where the site's data type differs from the file's, the site's wins
  (it is what the site answers with) and the difference is reported.
* The rules (``+ Type.field`` / ``- Type.field``, as `sgcache schema
  filter` takes them) add whatever fields of the site's schema they
  include, with the site's definitions, so a studio can run on rules alone;
  a field new on the site is cached as soon as the rules include it.
* Without the site's schema (never read: the site unreachable at the first
  start) the file is taken as is, and the report says so.

`diff(old, new)` says what moving from one effective schema to another
does: types and fields added, removed, changed data type, changed link
types or identifier. It is what `sgcache schema plan` prints and what a
reload applies.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from sgcache.schema.model import (
    BOOKKEEPING_FIELDS,
    BOOKKEEPING_LINKS,
    EntitySpec,
    FieldSpec,
    Schema,
    SchemaError,
)
from sgcache.schema.tools import Rule, filter_schema_report, is_included
from sgcache.schema.types import is_cacheable

#: fields a YAML schema gets on every type whether it names them or not
_IMPLIED = frozenset(BOOKKEEPING_FIELDS) | frozenset(BOOKKEEPING_LINKS)


@dataclass
class Resolution:
    """An effective schema and what resolving it found."""

    schema: Schema
    #: the site's schema was known (False: the file was taken as is)
    site_known: bool = True
    #: "Type.field" (or "Type") of the file the site does not have
    missing_on_site: list[str] = field(default_factory=list)
    #: "Type.field: file says X, the site says Y" (the site's type is used)
    type_differs: list[str] = field(default_factory=list)
    #: "Type.field" added by the rules (not in the file)
    from_rules: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """One line per thing an operator should fix in the file."""
        out = [f"{name}: in the schema file, not on the site (not served)" for name in self.missing_on_site]
        out += [f"{line} (the site's is used)" for line in self.type_differs]
        return out


def resolve(file_schema: Schema | None, rules: list[Rule] | None, site: Schema | None) -> Resolution:
    """The effective schema (see the module docstring)."""
    if site is None:
        if file_schema is None:
            raise SchemaError("no schema: give a schema file, or rules and a reachable site")
        return Resolution(_copy(file_schema), site_known=False)
    result = Resolution(Schema(source=_source(file_schema, site)))
    entities: dict[str, EntitySpec] = {}
    for entity in file_schema or ():
        site_entity = site.entities.get(entity.name)
        if site_entity is None:
            result.missing_on_site.append(entity.name)
            continue
        fields: dict[str, FieldSpec] = {}
        for name, spec in entity.fields.items():
            theirs = site_entity.fields.get(name)
            if theirs is None:
                if name not in _IMPLIED:
                    result.missing_on_site.append(f"{entity.name}.{name}")
                continue
            if theirs.data_type != spec.data_type:
                result.type_differs.append(
                    f"{entity.name}.{name}: the file says {spec.data_type}, the site says {theirs.data_type}"
                )
                spec = theirs
            fields[name] = spec
        identifier = entity.identifier if entity.identifier in fields else _identifier(site_entity, fields)
        entities[entity.name] = EntitySpec(entity.name, identifier, fields, entity.display_name)
    if rules:
        # filtered with the file's types counted as kept, so a link field the
        # rules include keeps its links to types the file caches
        keep_file_types = [Rule(True, name, "id", source="<the schema file>") for name in entities]
        wanted = filter_schema_report(site, rules + keep_file_types).schema
        for entity in wanted:
            mine = entities.get(entity.name)
            if mine is None:
                entities[entity.name] = EntitySpec(entity.name, entity.identifier, dict(entity.fields),
                                                   entity.display_name)
                result.from_rules += [f"{entity.name}.{f}" for f in sorted(entity.fields)]
                continue
            for name, spec in entity.fields.items():
                if name not in mine.fields and is_included(rules, entity.name, name):
                    mine.fields[name] = spec
                    result.from_rules.append(f"{entity.name}.{name}")
    for entity in entities.values():
        for name, spec in list(entity.fields.items()):
            if not is_cacheable(spec.data_type) and name != "id":
                continue
            theirs = site.get_field(entity.name, name)
            if not spec.reverse and theirs is not None and theirs.reverse:
                spec = dataclasses.replace(spec, reverse=theirs.reverse)
            entity.fields[name] = _keep_known_reverse(spec, entities)
    _pair_reverses(entities)
    result.schema = Schema(entities.values(), source=result.schema.source)
    result.schema.validate(strict_links=False)
    return result


def _pair_reverses(entities: dict[str, EntitySpec]) -> None:
    """Where one field of a pair names its mirror and the mirror names
    nothing (it came from the site, whose schema_read may not say), the
    mirror points back: write-back refreshes the other side of a write only
    from a field with a reverse."""
    for entity in entities.values():
        for name, spec in entity.fields.items():
            if not spec.reverse or "," in spec.reverse:
                continue
            rtype, _, rfield = spec.reverse.partition(".")
            mirror = getattr(entities.get(rtype), "fields", {}).get(rfield)
            if mirror is not None and not mirror.reverse:
                entities[rtype].fields[rfield] = dataclasses.replace(mirror, reverse=f"{entity.name}.{name}")


def _identifier(site_entity: EntitySpec, fields: dict[str, FieldSpec]) -> str:
    return site_entity.identifier if site_entity.identifier in fields else "id"


def _keep_known_reverse(spec: FieldSpec, entities: dict[str, EntitySpec]) -> FieldSpec:
    if not spec.reverse:
        return spec
    kept = []
    for candidate in spec.reverse.split(","):
        rtype, _, rfield = candidate.strip().partition(".")
        if rfield in getattr(entities.get(rtype), "fields", {}):
            kept.append(f"{rtype}.{rfield}")
    reverse = ",".join(kept) or None
    return spec if reverse == spec.reverse else dataclasses.replace(spec, reverse=reverse)


def _copy(schema: Schema) -> Schema:
    return Schema(
        (EntitySpec(e.name, e.identifier, dict(e.fields), e.display_name) for e in schema),
        source=schema.source,
    )


def _source(file_schema: Schema | None, site: Schema) -> str:
    return file_schema.source if file_schema is not None else site.source


# -- the site's schema, kept between runs -----------------------------------


def site_to_json(site: Schema) -> str:
    """The parts of the site's schema `resolve` needs, as compact JSON (kept
    in the store so a restart during an outage resolves the same way)."""
    out: dict[str, Any] = {}
    for entity in site:
        fields = {}
        for spec in entity.fields.values():
            item: list[Any] = [spec.data_type]
            if spec.link_types or spec.reverse or spec.valid_values:
                item.append(list(spec.link_types))
            if spec.reverse or spec.valid_values:
                item.append(spec.reverse)
            if spec.valid_values:
                item.append(list(spec.valid_values))
            fields[spec.name] = item
        out[entity.name] = {"identifier": entity.identifier, "fields": fields}
    return json.dumps(out, sort_keys=True, separators=(",", ":"))


def site_from_json(text: str, source: str = "the site (as last read)") -> Schema:
    data = json.loads(text)
    entities = []
    for name, body in data.items():
        fields = {}
        for fname, item in body["fields"].items():
            links = tuple(item[1]) if len(item) > 1 else ()
            reverse = item[2] if len(item) > 2 else None
            values = tuple(item[3]) if len(item) > 3 else ()
            fields[fname] = FieldSpec(name, fname, item[0], links, reverse, values)
        entities.append(EntitySpec(name, body["identifier"], fields))
    return Schema(entities, source=source)


# -- what a change of schema does -------------------------------------------


@dataclass
class SchemaDiff:
    """What moving from one effective schema to another does."""

    added_types: list[str] = field(default_factory=list)
    removed_types: list[str] = field(default_factory=list)
    #: "Type.field"
    added_fields: list[str] = field(default_factory=list)
    removed_fields: list[str] = field(default_factory=list)
    #: "Type.field: old -> new"
    changed_types: list[str] = field(default_factory=list)
    #: "Type.field: [old] -> [new]"
    changed_links: list[str] = field(default_factory=list)
    #: "Type: old -> new"
    changed_identifiers: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))

    def rescan(self) -> list[str]:
        """Types a full scan must (re)load: new, or with new or retyped fields."""
        names = set(self.added_types)
        names |= {item.partition(".")[0] for item in self.added_fields + self.changed_types}
        return sorted(names)

    def stop_serving(self) -> dict[str, set[str]]:
        """type -> fields no longer answered locally from the moment the
        change is applied (removed or retyped; a removed type: all)."""
        out: dict[str, set[str]] = {}
        for item in self.removed_fields + self.changed_types:
            etype, _, rest = item.partition(".")
            out.setdefault(etype, set()).add(rest.partition(":")[0])
        for etype in self.removed_types:
            out[etype] = {"*"}
        return out

    def lines(self) -> list[str]:
        """What a reload does, one line each, for people."""
        out = []
        for etype in self.added_types:
            out.append(f"add type {etype}: table created, scanned in full, served once loaded")
        for name in self.added_fields:
            if name.partition(".")[0] in self.added_types:
                continue
            out.append(f"add field {name}: column created, {name.partition('.')[0]} rescanned, "
                       "served once loaded")
        for item in self.changed_types:
            name = item.partition(":")[0]
            out.append(f"change data type {item.strip()}: not served from now; new storage, "
                       f"{name.partition('.')[0]} rescanned, served once loaded, old storage dropped")
        for item in self.changed_links:
            out.append(f"change link types {item.strip()}: served as before (stored links are the site's)")
        for item in self.changed_identifiers:
            out.append(f"change identifier {item.strip()}: link names re-derived from the new field "
                       "(served once it is loaded)")
        for name in self.removed_fields:
            if name.partition(".")[0] in self.removed_types:
                continue
            out.append(f"remove field {name}: not served from now; its storage dropped")
        for etype in self.removed_types:
            out.append(f"remove type {etype}: not served from now; its tables dropped")
        return out or ["no change"]

    def as_dict(self) -> dict[str, list[str]]:
        return dataclasses.asdict(self)


def diff(old: Schema, new: Schema) -> SchemaDiff:
    """What changes from `old` to `new` (cacheable fields only)."""
    out = SchemaDiff()
    for etype in sorted(set(old.entities) | set(new.entities)):
        before, after = old.entities.get(etype), new.entities.get(etype)
        if before is None:
            out.added_types.append(etype)
        elif after is None:
            out.removed_types.append(etype)
        elif before.identifier != after.identifier:
            out.changed_identifiers.append(f"{etype}: {before.identifier} -> {after.identifier}")
        old_fields = _cacheable(before)
        new_fields = _cacheable(after)
        for name in sorted(set(old_fields) | set(new_fields)):
            a, b = old_fields.get(name), new_fields.get(name)
            where = f"{etype}.{name}"
            if a is None:
                out.added_fields.append(where)
            elif b is None:
                out.removed_fields.append(where)
            elif a.data_type != b.data_type:
                out.changed_types.append(f"{where}: {a.data_type} -> {b.data_type}")
            elif a.link_types != b.link_types:
                out.changed_links.append(f"{where}: {list(a.link_types)} -> {list(b.link_types)}")
    return out


def _cacheable(entity: EntitySpec | None) -> dict[str, FieldSpec]:
    if entity is None:
        return {}
    return {n: s for n, s in entity.fields.items() if is_cacheable(s.data_type)}
