"""The ``multi_entity`` data type: an ordered list of links, stored in an
association table (``<Type>__<field>``); ``is`` means "holds"; not
sortable."""

from sgcache.schema.types.base import LINKS, DataType

TYPE = DataType(
    "multi_entity", storage=LINKS,
    relations=frozenset("is is_not type_is type_is_not name_contains name_not_contains in not_in".split()),
    filter="multi_entity",
)
