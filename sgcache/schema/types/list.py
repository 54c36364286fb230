"""The ``list`` data type: one of a field's valid values (compared as text,
case-insensitively; no substring relations)."""

from sgcache.schema.types.base import CHOICE, DataType

TYPE = DataType("list", relations=CHOICE, filter="text", sort="text", as_name="text")
