"""The ``entity`` data type: one link ``{type, id, name}`` or null, stored as
``<field>__type`` and ``<field>__id`` columns; sorted by the linked entity's
display name."""

from sgcache.schema.types.base import LINK, DataType

TYPE = DataType(
    "entity", storage=LINK,
    # Shotgun's table lists no name_starts_with / name_ends_with for entity
    # fields: such filters pass through, and the site answers (or refuses)
    relations=frozenset("is is_not type_is type_is_not name_contains name_not_contains name_is in not_in".split()),
    filter="entity", sort="entity",
)
