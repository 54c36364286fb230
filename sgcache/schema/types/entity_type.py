"""The ``entity_type`` data type: the name of an entity type, compared and
sorted as text (case-insensitively)."""

from sgcache.schema.types.base import FREE_TEXT, DataType

TYPE = DataType("entity_type", relations=FREE_TEXT, filter="text", sort="text", as_name="text")
