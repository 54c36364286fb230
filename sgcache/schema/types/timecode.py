"""The ``timecode`` data type: milliseconds, an integer."""

from sgcache.schema.types.base import NUMERIC_NO_NOT_BETWEEN, DataType, to_int

TYPE = DataType("timecode", sql_types=("INTEGER", "BIGINT"), encode=to_int, native=int,
                relations=NUMERIC_NO_NOT_BETWEEN, filter="number", sort="value", as_name="value")
