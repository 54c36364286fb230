"""Data types: one module per Shotgun data type in this package, each
declaring its `DataType` as ``TYPE`` (see `sgcache.schema.types.base` for
what a data type owns). The store, the read planner and the reader ask
these; adding a data type is one new module here (plus its tests).

Data types without a module (``password``, ``pivot_column``, ``summary``...)
are neither cached nor filterable locally: reads touching them pass
through.
"""

from __future__ import annotations

import importlib
import pkgutil

from sgcache.schema.types.base import DataType, format_datetime, format_timestamp, parse_datetime

__all__ = ["DATA_TYPES", "DataType", "data_type", "is_cacheable", "format_datetime", "format_timestamp", "parse_datetime"]


def _load() -> dict[str, DataType]:
    found: dict[str, DataType] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name == "base":
            continue
        declared = importlib.import_module(f"{__name__}.{module.name}").TYPE
        assert declared.name == module.name, f"{module.name}.py declares {declared.name}"
        found[declared.name] = declared
    return found


#: every data type with a module, by name
DATA_TYPES: dict[str, DataType] = _load()


def data_type(name: str) -> DataType | None:
    return DATA_TYPES.get(name)


def is_cacheable(name: str) -> bool:
    """The cache holds fields of this data type."""
    found = DATA_TYPES.get(name)
    return found is not None and found.cacheable
