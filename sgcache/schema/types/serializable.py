"""The ``serializable`` data type: any JSON mapping, stored as JSON text; not
filterable or sortable."""

from sgcache.schema.types.base import DataType, from_json, to_json

TYPE = DataType("serializable", encode=to_json, decode=from_json)
