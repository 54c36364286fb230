"""The ``currency`` data type: an amount, a floating-point number."""

from sgcache.schema.types.base import NUMERIC, DataType, to_float

TYPE = DataType("currency", sql_types=("REAL", "DOUBLE PRECISION"), encode=to_float, native=float, relations=NUMERIC,
                filter="number", sort="value", as_name="value")
