"""The ``text`` data type: free text, compared case-insensitively (no
wildcards), sorted by its lowered text; usable as a link's display name."""

from sgcache.schema.types.base import FREE_TEXT, DataType

TYPE = DataType("text", relations=FREE_TEXT, filter="text", sort="text", as_name="text")
