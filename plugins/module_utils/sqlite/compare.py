# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A table of an SQLite file as one side of the comparison engine (compare/engine.py), in
canonical mode (compare/sql_side.py reads and digests the ranges).

Keys are integers (ordered by value) or text (SQLite's BINARY collation: by code point, as
PostgreSQL's COLLATE "C"), so the key columns are ordered as they are. Reads only; each range is
one statement, so a writer waits at most for one chunk's read (none in WAL mode).
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.compare.sql_side import SqlSide
from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import quote_ident


class SqliteSide(SqlSide):
    """One table of one SQLite file (sqlite.client.Client): `columns` in the order of `canonical`, `key` its column names."""

    def __init__(self, client, role: str, table: str, columns: list[str], key: list[str], canonical):
        quoted_key = [quote_ident(column) for column in key]
        selected = ", ".join(quote_ident(column) for column in columns)
        super().__init__(client, role, quote_ident(table), selected, quoted_key, quoted_key, canonical)
