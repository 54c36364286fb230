"""The schema model: which entity types and fields exist, their data types,
linked types, identifier fields and reverse (backref) fields.

One `Schema` object is shared by the daemon, the stores, the planner and the
emulator. It loads from either of two sources:

* our YAML format (``schema/basic.yml``)::

      entities:
        Shot:
          identifier: code            # optional; defaults per DEFAULT_IDENTIFIERS
          fields:
            code: text
            sg_sequence: {type: entity, entity_types: [Sequence]}
            tasks: {type: multi_entity, entity_types: [Task], reverse: Task.entity}

* a Shotgun ``schema_read`` JSON dump (a file, or a directory holding
  ``schema_read.json`` and optionally ``schema_entity_read.json``).

Every validation error is a `SchemaError` whose message names the file, the
entity type and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import yaml

#: Every Shotgun data type we know the name of.
KNOWN_DATA_TYPES = frozenset(
    """
    text entity multi_entity number float percent duration timecode currency
    checkbox list status_list date date_time color entity_type uuid tag_list
    serializable url image password pivot_column summary calculated
    footage system_task_type
    """.split()
)

#: Data types whose values are links to other entities.
LINK_TYPES = frozenset(["entity", "multi_entity"])

#: Identifier (display-name) field per entity type, when not `code`.
DEFAULT_IDENTIFIERS = {
    "Task": "content",
    "Reply": "content",
    "Note": "subject",
    "Ticket": "title",
    "Delivery": "title",
    "Project": "name",
    "HumanUser": "name",
    "ApiUser": "firstname",
    "Department": "name",
    "Group": "code",
    "EventLogEntry": "description",
    "Attachment": "this_file",
    "LocalStorage": "code",
    "PermissionRuleSet": "code",
    "Page": "name",
    "Booking": "note",
    "TimeLog": "description",
    "Status": "name",
    "Tag": "name",
}

#: Reverse-field pairs Shotgun maintains on its own (backrefs), used when a
#: schema_read dump is loaded (the dump itself does not say which fields pair).
#: (type, field) -> field on the linked type that mirrors it.
DEFAULT_REVERSE_FIELDS = {
    ("Task", "entity"): "tasks",
    ("Version", "entity"): "versions",  # only where the linked type has it
    ("Shot", "sg_sequence"): "shots",
    ("Asset", "shots"): "assets",
    ("Shot", "assets"): "shots",
    ("Note", "note_links"): "notes",
    ("Version", "playlists"): "versions",
    ("Playlist", "versions"): "playlists",
}


class SchemaError(ValueError):
    """A schema file or dump is invalid; the message names where."""


@dataclass(frozen=True)
class FieldSpec:
    """One field of an entity type."""

    entity_type: str
    name: str
    data_type: str
    #: For entity / multi_entity fields: the types a link may point at.
    link_types: tuple[str, ...] = ()
    #: "Type.field" of the mirror field Shotgun keeps in step, if any.
    reverse: str | None = None
    #: For list / status_list fields: the valid values, if known.
    valid_values: tuple[str, ...] = ()

    @property
    def is_link(self) -> bool:
        return self.data_type in LINK_TYPES

    def to_yaml(self) -> Any:
        if not (self.link_types or self.reverse or self.valid_values):
            return self.data_type
        out: dict[str, Any] = {"type": self.data_type}
        if self.link_types:
            out["entity_types"] = list(self.link_types)
        if self.reverse:
            out["reverse"] = self.reverse
        if self.valid_values:
            out["valid_values"] = list(self.valid_values)
        return out


@dataclass
class EntitySpec:
    """One entity type: its fields and the field that names its links."""

    name: str
    identifier: str
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    display_name: str | None = None

    def to_yaml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"identifier": self.identifier}
        if self.display_name and self.display_name != self.name:
            out["display_name"] = self.display_name
        out["fields"] = {n: f.to_yaml() for n, f in sorted(self.fields.items())}
        return out


# Fields most entity types have on a real site, with their data types. A
# type in a YAML file that does not list `id` gets them added (shorthand for
# hand-written files; the site check drops any the site lacks:
# `sgcache.schema.effective`). A type that lists `id` -- as every dump and
# filtered file does -- is taken as is, and so is a schema_read dump.
BOOKKEEPING_FIELDS = {
    "id": "number",
    "created_at": "date_time",
    "updated_at": "date_time",
}
BOOKKEEPING_LINKS = {
    "created_by": ("HumanUser", "ApiUser"),
    "updated_by": ("HumanUser", "ApiUser"),
}


class Schema:
    """Entity types by name. Iterating yields the EntitySpecs in name order."""

    def __init__(self, entities: Iterable[EntitySpec] = (), source: str = "<memory>"):
        self.source = source
        self.entities: dict[str, EntitySpec] = {e.name: e for e in entities}

    # -- lookups ---------------------------------------------------------
    def __contains__(self, entity_type: object) -> bool:
        return entity_type in self.entities

    def __iter__(self) -> Iterator[EntitySpec]:
        return iter(sorted(self.entities.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self.entities)

    def __getitem__(self, entity_type: str) -> EntitySpec:
        return self.entities[entity_type]

    def get_field(self, entity_type: str, field_name: str) -> FieldSpec | None:
        entity = self.entities.get(entity_type)
        if entity is None:
            return None
        return entity.fields.get(field_name)

    def identifier(self, entity_type: str) -> str:
        entity = self.entities.get(entity_type)
        if entity is not None:
            return entity.identifier
        return DEFAULT_IDENTIFIERS.get(entity_type, "code")

    def reverse_of(self, entity_type: str, field_name: str, target_type: str) -> FieldSpec | None:
        """The field on `target_type` that mirrors `entity_type.field_name`."""
        spec = self.get_field(entity_type, field_name)
        if spec is None or not spec.reverse:
            return None
        for candidate in spec.reverse.split(","):
            rtype, _, rfield = candidate.strip().partition(".")
            if rtype == target_type:
                return self.get_field(rtype, rfield)
        return None

    # -- loading ---------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> "Schema":
        """Load a YAML schema file, a schema_read JSON file, or a directory
        holding ``schema_read.json`` (+ ``schema_entity_read.json``)."""
        if os.path.isdir(path):
            read_path = os.path.join(path, "schema_read.json")
            entity_path = os.path.join(path, "schema_entity_read.json")
            if not os.path.exists(read_path):
                raise SchemaError(f"{path}: directory has no schema_read.json")
            schema_read = _load_json(read_path)
            entity_read = None
            if os.path.exists(entity_path):
                entity_read = _load_json(entity_path)
            return cls.from_schema_read(schema_read, entity_read, source=path)
        try:
            with open(path) as fh:
                text = fh.read()
        except OSError as e:
            raise SchemaError(f"{path}: cannot read schema: {e.strerror}") from None
        if path.endswith(".json"):
            try:
                data = json.loads(text)
            except ValueError as e:
                raise SchemaError(f"{path}: not valid JSON: {e}") from None
            if isinstance(data, dict) and "entities" not in data:
                return cls.from_schema_read(data, None, source=path)
            return cls.from_dict(data, source=path)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SchemaError(f"{path}: not valid YAML: {e}") from None
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> "Schema":
        """Build from our YAML format (already parsed)."""
        if not isinstance(data, dict) or not isinstance(data.get("entities"), dict):
            raise SchemaError(f"{source}: expected a mapping with an 'entities' mapping")
        entities = []
        for type_name, body in data["entities"].items():
            where = f"{source}: {type_name}"
            if not isinstance(type_name, str) or not type_name.isidentifier():
                raise SchemaError(f"{where}: invalid entity type name")
            if body is None:
                body = {}
            if not isinstance(body, dict):
                raise SchemaError(f"{where}: expected a mapping")
            unknown = set(body) - {"identifier", "fields", "display_name"}
            if unknown:
                raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")
            fields_in = body.get("fields") or {}
            if not isinstance(fields_in, dict):
                raise SchemaError(f"{where}: 'fields' must be a mapping")
            fields: dict[str, FieldSpec] = {}
            for field_name, fbody in fields_in.items():
                fields[field_name] = _field_from_yaml(source, type_name, field_name, fbody)
            identifier = body.get("identifier") or DEFAULT_IDENTIFIERS.get(type_name, "code")
            entity = EntitySpec(type_name, identifier, fields, body.get("display_name"))
            if "id" not in fields:
                # shorthand: a type that does not list `id` gets the
                # bookkeeping fields too (a dump lists every field)
                _add_bookkeeping(entity)
            entities.append(entity)
        schema = cls(entities, source=source)
        schema.validate()
        return schema

    @classmethod
    def from_schema_read(
        cls, schema_read: dict, entity_read: dict | None = None, source: str = "<schema_read>"
    ) -> "Schema":
        """Build from Shotgun's `schema_read` (+ `schema_entity_read`) output."""
        if not isinstance(schema_read, dict):
            raise SchemaError(f"{source}: schema_read output must be a mapping")
        entities = []
        for type_name, fields_in in schema_read.items():
            if not isinstance(fields_in, dict):
                raise SchemaError(f"{source}: {type_name}: expected a mapping of fields")
            fields: dict[str, FieldSpec] = {}
            for field_name, fd in fields_in.items():
                where = f"{source}: {type_name}.{field_name}"
                try:
                    data_type = fd["data_type"]["value"]
                except (KeyError, TypeError):
                    raise SchemaError(f"{where}: no data_type") from None
                props = fd.get("properties") or {}
                link_types: tuple[str, ...] = ()
                valid_values: tuple[str, ...] = ()
                if data_type in LINK_TYPES:
                    link_types = tuple((props.get("valid_types") or {}).get("value") or ())
                if data_type in ("list", "status_list"):
                    valid_values = tuple((props.get("valid_values") or {}).get("value") or ())
                fields[field_name] = FieldSpec(
                    type_name, field_name, data_type, link_types, None, valid_values
                )
            display = None
            if entity_read and type_name in entity_read:
                display = ((entity_read[type_name] or {}).get("name") or {}).get("value")
            identifier = DEFAULT_IDENTIFIERS.get(type_name, "code")
            if identifier not in fields:
                for candidate in ("code", "name", "content", "title", "subject"):
                    if candidate in fields:
                        identifier = candidate
                        break
                else:
                    # Connection types and the like have no display name.
                    identifier = "id"
            # exactly the site's fields: a dump never adds bookkeeping
            # fields a type lacks (EventLogEntry has no updated_at)
            if "id" not in fields:
                fields["id"] = FieldSpec(type_name, "id", "number")
            entities.append(EntitySpec(type_name, identifier, fields, display))
        schema = cls(entities, source=source)
        schema._infer_reverse_fields()
        schema.validate(strict_links=False)
        return schema

    def _infer_reverse_fields(self) -> None:
        """Pair the well-known backref fields present in a dump."""
        pairs: dict[tuple[str, str], list[str]] = {}
        for (etype, fname), rname in DEFAULT_REVERSE_FIELDS.items():
            spec = self.get_field(etype, fname)
            if spec is None or not spec.is_link:
                continue
            for target in spec.link_types:
                rspec = self.get_field(target, rname)
                if rspec is not None and rspec.is_link and etype in rspec.link_types:
                    pairs.setdefault((etype, fname), []).append(f"{target}.{rname}")
                    pairs.setdefault((target, rname), []).append(f"{etype}.{fname}")
        for (etype, fname), reverses in pairs.items():
            spec = self.entities[etype].fields[fname]
            self.entities[etype].fields[fname] = FieldSpec(
                spec.entity_type, spec.name, spec.data_type, spec.link_types,
                ",".join(sorted(set(reverses))), spec.valid_values,
            )

    def validate(self, strict_links: bool = True) -> None:
        """Check internal consistency; raise SchemaError naming the place."""
        for entity in self.entities.values():
            where = f"{self.source}: {entity.name}"
            if entity.identifier not in entity.fields and entity.identifier != "id":
                if strict_links:
                    raise SchemaError(
                        f"{where}: identifier field {entity.identifier!r} is not a field of the type"
                    )
            for spec in entity.fields.values():
                fwhere = f"{where}.{spec.name}"
                if spec.data_type not in KNOWN_DATA_TYPES:
                    raise SchemaError(f"{fwhere}: unknown data type {spec.data_type!r}")
                if spec.is_link and strict_links:
                    if not spec.link_types:
                        raise SchemaError(f"{fwhere}: {spec.data_type} field needs entity_types")
                if spec.reverse and strict_links:
                    for candidate in spec.reverse.split(","):
                        rtype, _, rfield = candidate.strip().partition(".")
                        if rtype in self.entities and self.get_field(rtype, rfield) is None:
                            raise SchemaError(
                                f"{fwhere}: reverse field {candidate.strip()!r} does not exist"
                            )

    # -- output ----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Our YAML format, ready for yaml.safe_dump."""
        return {"entities": {e.name: e.to_yaml() for e in self}}

    def to_schema_read(self) -> dict[str, dict[str, Any]]:
        """A `schema_read`-shaped description (what the emulator serves when
        it was given a YAML schema)."""
        out: dict[str, dict[str, Any]] = {}
        for entity in self:
            fields = {}
            for spec in entity.fields.values():
                props: dict[str, Any] = {
                    "default_value": {"editable": False, "value": None},
                    "summary_default": {"editable": True, "value": "none"},
                }
                if spec.link_types:
                    props["valid_types"] = {"editable": True, "value": list(spec.link_types)}
                if spec.valid_values:
                    props["valid_values"] = {"editable": True, "value": list(spec.valid_values)}
                fields[spec.name] = {
                    "data_type": {"editable": False, "value": spec.data_type},
                    "description": {"editable": True, "value": ""},
                    "editable": {"editable": False, "value": spec.name not in BOOKKEEPING_FIELDS},
                    "entity_type": {"editable": False, "value": entity.name},
                    "mandatory": {"editable": False, "value": False},
                    "name": {"editable": True, "value": spec.name.replace("_", " ").title()},
                    "properties": props,
                    "unique": {"editable": False, "value": False},
                }
            out[entity.name] = fields
        return out

    def to_schema_entity_read(self) -> dict[str, Any]:
        return {
            e.name: {
                "name": {"editable": False, "value": e.display_name or e.name},
                "visible": {"editable": False, "value": True},
            }
            for e in self
        }


def _load_json(path: str) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except OSError as e:
        raise SchemaError(f"{path}: cannot read schema: {e.strerror}") from None
    except ValueError as e:
        raise SchemaError(f"{path}: not valid JSON: {e}") from None


def _field_from_yaml(source: str, type_name: str, field_name: str, body: Any) -> FieldSpec:
    where = f"{source}: {type_name}.{field_name}"
    if not isinstance(field_name, str) or not field_name.replace("_", "a").isalnum():
        raise SchemaError(f"{where}: invalid field name")
    if isinstance(body, str):
        body = {"type": body}
    if not isinstance(body, dict):
        raise SchemaError(f"{where}: expected a data type name or a mapping")
    unknown = set(body) - {"type", "entity_types", "reverse", "valid_values"}
    if unknown:
        raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")
    data_type = body.get("type")
    if data_type not in KNOWN_DATA_TYPES:
        raise SchemaError(f"{where}: unknown data type {data_type!r}")
    link_types = body.get("entity_types") or ()
    if isinstance(link_types, str):
        link_types = [link_types]
    if link_types and data_type not in LINK_TYPES:
        raise SchemaError(f"{where}: entity_types given for a {data_type} field")
    if data_type in LINK_TYPES and not link_types:
        raise SchemaError(f"{where}: {data_type} field needs entity_types")
    reverse = body.get("reverse")
    if reverse is not None and (not isinstance(reverse, str) or "." not in reverse):
        raise SchemaError(f"{where}: reverse must look like 'Type.field'")
    valid_values = body.get("valid_values") or ()
    return FieldSpec(type_name, field_name, data_type, tuple(link_types), reverse, tuple(valid_values))


def _add_bookkeeping(entity: EntitySpec) -> None:
    for fname, dtype in BOOKKEEPING_FIELDS.items():
        if fname not in entity.fields:
            entity.fields[fname] = FieldSpec(entity.name, fname, dtype)
    for fname, links in BOOKKEEPING_LINKS.items():
        if fname not in entity.fields:
            entity.fields[fname] = FieldSpec(entity.name, fname, "entity", links)
