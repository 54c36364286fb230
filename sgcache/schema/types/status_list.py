"""The ``status_list`` data type: a status code (compared as text,
case-insensitively; no substring relations)."""

from sgcache.schema.types.base import CHOICE, DataType

TYPE = DataType("status_list", relations=CHOICE, filter="text", sort="text", as_name="text")
