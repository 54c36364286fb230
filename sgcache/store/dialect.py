"""What differs between the two SQL dialects, for DDL and apply, and the
cursor (`SQLCursor`) a backend hands the shared code inside a transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from sgcache.schema.types import data_type


@dataclass(frozen=True)
class Dialect:
    """What differs between the two SQL dialects, for DDL and apply."""

    name: str
    id_type: str  # entity ids and link ids
    flag_type: str  # _active / _complete
    #: appended to the row-reading SELECT of apply (row locks)
    lock_suffix: str
    #: longest identifier the server keeps intact (0: no limit)
    max_identifier: int
    #: multi-row inserts may ship their rows as one JSON parameter
    #: (``jsonb_array_elements``) instead of thousands of literals
    json_rows: bool = False
    #: apply writes a batch in parts of this many changes, planning each part
    #: while the server runs the previous one's statements (0: one part)
    part_size: int = 0
    #: id lists go as one array parameter (``= ANY(?::bigint[])``), far
    #: cheaper for the server to parse than a long ``IN (?, ?, ...)``
    id_arrays: bool = False

    def column_type(self, name: str) -> str:
        """The SQL type of a one-column data type's column."""
        dtype = data_type(name)
        assert dtype is not None, name
        return dtype.sql_type(self.name)


SQLITE = Dialect("sqlite", "INTEGER", "INTEGER", "", 0)

POSTGRESQL = Dialect(
    "postgresql", "BIGINT", "SMALLINT", " FOR UPDATE", 63, json_rows=True, part_size=125,
    id_arrays=True,
)


class SQLCursor(Protocol):
    """The little a backend must offer the shared code, inside a transaction."""

    dialect: Dialect

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run one statement (``?`` placeholders); its rows, or [] when none."""

    async def table_columns(self, table_name: str) -> set[str]:
        """Column names of a table (unquoted); empty when it does not exist."""

    async def table_names(self) -> set[str]:
        """Every table of the database (unquoted)."""

    async def table_indexes(self, table_name: str) -> dict[str, str]:
        """The table's indexes (unquoted name -> definition), but its
        primary key's."""

    async def drop_column(self, table_name: str, column: str) -> None:
        """Drop a column and any index that names it."""
