# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A table read through SQL as one side of the comparison engine (compare/engine.py) in canonical
mode: the rows of a key range read in key order and digested in Python over canonical values
(compare/canonical.py). What differs between engines - quoting, the parameter mark, how a key
column is ordered - is the subclass's (sqlite/compare.py, mariadb/compare.py).

Key ranges are row-value comparisons on the table's key - `(a, b) >= (?, ?)` - which both engines
answer from the primary key's index. Reads only; each range is one statement.
"""

from __future__ import annotations


class SqlSide:
    """One table through `client.query(statement, args)`: `table` and the column lists already quoted."""

    mark = "?"  # the driver's parameter mark
    no_limit = -1  # a LIMIT that does not limit (OFFSET needs one)

    def __init__(self, client, role: str, table: str, selected: str, ordered_key: list[str], plain_key: list[str], canonical):
        self.client = client
        self.role = role
        self.readers = [None]  # one connection: one statement at a time
        self.table = table
        self.canonical = canonical
        self.selected = selected
        self.key_list = ", ".join(ordered_key)  # as compared and sorted (by code point)
        self.key_only = ", ".join(plain_key)  # as selected
        self.key_row = f"({self.key_list})" if len(ordered_key) > 1 else self.key_list
        self.width = len(ordered_key)

    def modulo(self) -> str:
        """`%` as the statement text spells it (a driver with %s marks needs it doubled)."""
        return "%%" if self.mark == "%s" else "%"

    def where(self, lower, upper) -> tuple[str, list]:
        """lower <= key < upper (None: unbounded) as SQL and its arguments."""
        conditions = ["1"]
        args: list = []
        marks = f"({', '.join([self.mark] * self.width)})" if self.width > 1 else self.mark
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
                f"SELECT {self.key_only} FROM (SELECT {self.key_only}, row_number() OVER (ORDER BY {self.key_list}) AS zdm_n "  # noqa: S608
                f"FROM {self.table} WHERE {where}) AS zdm_keys WHERE zdm_n {self.modulo()} {self.mark} = 0 ORDER BY zdm_n"
            )
            args.append(step)
        else:
            statement = (
                f"SELECT {self.key_only} FROM {self.table} WHERE {where} ORDER BY {self.key_list} "  # noqa: S608
                f"LIMIT {self.mark} OFFSET {self.mark}"
            )
            args.extend([self.no_limit if limit is None else limit, offset])
        return [self.canonical.bare_key(row) for row in self.client.query(statement, tuple(args))]

    def rows(self, lower, upper) -> list[tuple]:
        where, args = self.where(lower, upper)
        statement = f"SELECT {self.selected} FROM {self.table} WHERE {where} ORDER BY {self.key_list}"  # noqa: S608 (quoted identifiers)
        return self.client.query(statement, tuple(args))

    def rows_for_keys(self, keys: list, values: int = 900) -> list[tuple]:
        """The rows of these keys (each a tuple of key values; a missing one is simply not there), at most
        `values` key values a statement (SQLite before 3.32 takes 999 parameters at most)."""
        marks = f"({', '.join([self.mark] * self.width)})" if self.width > 1 else self.mark
        found: list[tuple] = []
        chunk = max(1, values // self.width)
        for start in range(0, len(keys), chunk):
            part = keys[start : start + chunk]
            listed = ", ".join([marks] * len(part))
            statement = f"SELECT {self.selected} FROM {self.table} WHERE {self.key_row} IN ({listed})"  # noqa: S608 (quoted identifiers)
            found.extend(self.client.query(statement, tuple(value for key in part for value in key)))
        return found

    def summary(self, lower=None, upper=None, keyless: bool = False, client=None) -> tuple[int, str]:
        return self.canonical.summary(self.rows(lower, upper), keyless)

    def digests(self, lower, upper) -> dict[tuple, int]:
        return self.canonical.digests(self.rows(lower, upper))
