# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A table of an SQLite file as one side of the comparison engine (compare/engine.py), in
canonical mode: rows of a key range read in key order and digested in Python over canonical
values (compare/canonical.py), so they compare with another engine's rows.

Key ranges are row-value comparisons on the table's key - `("a", "b") >= (?, ?)` - which SQLite
answers from the primary key's index. Keys are integers (ordered by value) or text (SQLite's
BINARY collation: by code point, as PostgreSQL's COLLATE "C"). Reads only; each range is one
statement, so a writer waits at most for one chunk's read (none in WAL mode).
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import quote_ident


class SqliteSide:
    """One table of one SQLite file (sqlite.client.Client): `columns` in the order of `canonical`, `key` its column names."""

    def __init__(self, client, role: str, table: str, columns: list[str], key: list[str], canonical):
        self.client = client
        self.role = role
        self.readers = [None]  # one connection: SQLite reads one statement at a time per connection
        self.table = quote_ident(table)
        self.canonical = canonical
        self.selected = ", ".join(quote_ident(column) for column in columns)
        self.key_list = ", ".join(quote_ident(column) for column in key)
        self.key_row = f"({self.key_list})" if len(key) > 1 else self.key_list
        self.width = len(key)

    def where(self, lower, upper) -> tuple[str, list]:
        """lower <= key < upper (None: unbounded) as SQL and its arguments."""
        conditions = ["1"]
        args: list = []
        marks = f"({', '.join('?' * self.width)})" if self.width > 1 else "?"
        for bound, operator in ((lower, ">="), (upper, "<")):
            if bound is not None:
                conditions.append(f"{self.key_row} {operator} {marks}")
                args.extend(bound)
        return " AND ".join(conditions), args

    def estimate_rows(self) -> int:
        return self.client.query(f"SELECT count(*) FROM {self.table}")[0][0]  # noqa: S608 (quoted identifier)

    def keys(self, lower=None, upper=None, limit: int | None = None, offset: int = 0, sample_percent: float | None = None) -> list[tuple]:
        """Keys in [lower, upper) in key order; with `sample_percent`, every (100 / sample_percent)th of them."""
        where, args = self.where(lower, upper)
        if sample_percent and sample_percent < 100:
            step = max(1, round(100 / sample_percent))
            statement = (
                f"SELECT {self.key_list} FROM (SELECT {self.key_list}, row_number() OVER (ORDER BY {self.key_list}) AS zdm_n "  # noqa: S608
                f"FROM {self.table} WHERE {where}) WHERE zdm_n % ? = 0 ORDER BY {self.key_list}"
            )
            args.append(step)
        else:
            statement = f"SELECT {self.key_list} FROM {self.table} WHERE {where} ORDER BY {self.key_list} LIMIT ? OFFSET ?"  # noqa: S608
            args.extend([-1 if limit is None else limit, offset])
        return [self.canonical.bare_key(row) for row in self.client.query(statement, tuple(args))]

    def rows(self, lower, upper) -> list[tuple]:
        where, args = self.where(lower, upper)
        statement = f"SELECT {self.selected} FROM {self.table} WHERE {where} ORDER BY {self.key_list}"  # noqa: S608 (quoted identifiers)
        return self.client.query(statement, tuple(args))

    def summary(self, lower=None, upper=None, keyless: bool = False, client=None) -> tuple[int, str]:
        return self.canonical.summary(self.rows(lower, upper), keyless)

    def digests(self, lower, upper) -> dict[tuple, int]:
        return self.canonical.digests(self.rows(lower, upper))
