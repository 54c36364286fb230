"""The ``float`` data type: a floating-point number."""

from sgcache.schema.types.base import NUMERIC_NO_NOT_BETWEEN, DataType, to_float

TYPE = DataType("float", sql_types=("REAL", "DOUBLE PRECISION"), encode=to_float, native=float,
                relations=NUMERIC_NO_NOT_BETWEEN, filter="number", sort="value", as_name="value")
