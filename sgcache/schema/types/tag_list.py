"""The ``tag_list`` data type: a list of tag names, stored as JSON text
(``is`` means "holds"; not sortable)."""

from sgcache.schema.types.base import DataType, tags_out, to_json

TYPE = DataType("tag_list", encode=to_json, decode=tags_out,
                relations=frozenset(["is", "is_not", "name_contains", "name_not_contains"]), filter="tag_list")
