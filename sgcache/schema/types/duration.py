"""The ``duration`` data type: minutes, an integer."""

from sgcache.schema.types.base import NUMERIC, DataType, to_int

TYPE = DataType("duration", sql_types=("INTEGER", "BIGINT"), encode=to_int, native=int, relations=NUMERIC,
                filter="number", sort="value", as_name="value")
