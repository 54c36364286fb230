"""The ``uuid`` data type: a UUID string, compared and sorted as text
(case-insensitively)."""

from sgcache.schema.types.base import FREE_TEXT, DataType

TYPE = DataType("uuid", relations=FREE_TEXT, filter="text", sort="text", as_name="text")
