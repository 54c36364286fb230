"""The ``url`` data type: a link mapping (``{content_type, link_type, name,
url}``), stored as JSON text; not filterable or sortable. As an identifier,
a link's ``name`` is the url's ``name``."""

from typing import Any

from sgcache.schema.types.base import DataType, from_json, to_json


def _name(stored: Any) -> Any:
    value = from_json(stored)
    return value.get("name") if isinstance(value, dict) else None


TYPE = DataType("url", encode=to_json, decode=from_json, as_name="value", link_name=_name)
