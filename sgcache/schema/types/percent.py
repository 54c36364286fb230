"""The ``percent`` data type: an integer percentage."""

from sgcache.schema.types.base import NUMERIC, DataType, to_int

TYPE = DataType("percent", sql_types=("INTEGER", "BIGINT"), encode=to_int, native=int, relations=NUMERIC,
                filter="number", sort="value", as_name="value")
