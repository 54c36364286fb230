"""The ``checkbox`` data type: a boolean, never null on the wire (stored as
0/1; a null column reads as false)."""

from sgcache.schema.types.base import DataType, checkbox_in, checkbox_out

TYPE = DataType("checkbox", sql_types=("INTEGER", "SMALLINT"), encode=checkbox_in, decode=checkbox_out,
                relations=frozenset(["is", "is_not"]), filter="checkbox", sort="checkbox")
