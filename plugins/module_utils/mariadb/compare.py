# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A table of a MariaDB database as one side of the comparison engine (compare/engine.py), in
canonical mode (compare/sql_side.py reads and digests the ranges), so it compares with another
engine's rows (sqlite/compare.py).

Text key columns are compared and ordered by code point (COLLATE utf8mb4_nopad_bin, as SQLite's
BINARY collation): a table the copy created has that collation already, so the index serves;
another collation is overridden in the query. Reads only, each range one statement outside any
transaction.
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.sql_side import SqlSide
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import MariaDBError, quote_ident

CODE_POINT_ORDER = "utf8mb4_nopad_bin"


class MariaDBSide(SqlSide):
    """One table of the client's database: `columns` in the order of `canonical`, `key` its column names."""

    mark = "%s"
    no_limit = 18446744073709551615  # MariaDB's LIMIT needs a number before OFFSET

    def __init__(self, client, role: str, table: str, columns: list[str], key: list[str], canonical):
        # information_schema compares names without regard to case: the exact name is kept in Python
        found = {
            row[0]: row
            for row in client.query(
                "SELECT column_name, table_name, character_set_name, collation_name FROM information_schema.columns "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                (table,),
            )
            if row[1] == table
        }
        missing = [column for column in columns if column not in found]
        if missing:
            raise MariaDBError(
                f"table {client.database}.{table} on the {role} ({client.where}) has no column {', '.join(missing)}: add it, "
                f"or compare only tables whose columns match"
            )
        selected = ", ".join(quote_ident(column) for column in columns)
        ordered = [self.ordered(column, *found[column][2:]) for column in key]
        super().__init__(client, role, quote_ident(table), selected, ordered, [quote_ident(column) for column in key], canonical)

    @staticmethod
    def ordered(column: str, charset: str | None, collation: str | None) -> str:
        """A key column as compared and sorted: text by code point, whatever its collation."""
        name = quote_ident(column)
        if charset is None or collation == CODE_POINT_ORDER:
            return name
        if charset != "utf8mb4":
            name = f"CONVERT({name} USING utf8mb4)"
        return f"{name} COLLATE {CODE_POINT_ORDER}"
