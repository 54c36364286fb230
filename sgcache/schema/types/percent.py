"""The ``percent`` data type: an integer percentage."""

from sgcache.schema.types.base import NUMERIC_NO_NOT_BETWEEN, DataType, to_int

TYPE = DataType("percent", sql_types=("INTEGER", "BIGINT"), encode=to_int, native=int,
                relations=NUMERIC_NO_NOT_BETWEEN, filter="number", sort="value", as_name="value")
