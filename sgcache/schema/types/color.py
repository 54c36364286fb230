"""The ``color`` data type: ``"r,g,b"`` or ``"pipeline_step"``, compared and
sorted as text (case-insensitively)."""

from sgcache.schema.types.base import FREE_TEXT, DataType

TYPE = DataType("color", relations=FREE_TEXT, filter="text", sort="text", as_name="text")
