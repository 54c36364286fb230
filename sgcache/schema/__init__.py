"""The schema: what the cache holds and how it is described. Bottom of the
house: imports nothing of sgcache but `sgcache.config` and `sgcache.logs`.

* `model` -- `Schema`, `EntitySpec`, `FieldSpec` (re-exported here), loaded
  from our YAML or a site's ``schema_read`` output;
* `types` -- the data types, one module each: storage, wire codec, filter
  relations, sort, link names;
* `tools` -- dump, filter and check schema files (the ``sgcache schema``
  commands);
* `changes` -- `EntityChange`, the normalized change every sync source hands
  to the store's one apply path.
"""

from sgcache.schema.model import (
    BOOKKEEPING_FIELDS,
    BOOKKEEPING_LINKS,
    DEFAULT_IDENTIFIERS,
    DEFAULT_REVERSE_FIELDS,
    KNOWN_DATA_TYPES,
    LINK_TYPES,
    EntitySpec,
    FieldSpec,
    Schema,
    SchemaError,
)

__all__ = [
    "BOOKKEEPING_FIELDS", "BOOKKEEPING_LINKS", "DEFAULT_IDENTIFIERS", "DEFAULT_REVERSE_FIELDS",
    "KNOWN_DATA_TYPES", "LINK_TYPES", "EntitySpec", "FieldSpec", "Schema", "SchemaError",
]
