# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MariaDB as the copy's target: its column types as logical types (copy/types.py) and back, a
table created from the source's columns and key when missing (an existing one is used as it is),
batches written with multi-row INSERTs (PyMySQL's executemany), and the replay's delete-and-insert
by key - the same interface as postgres/copy_target.py's PgTarget, for the same engine.

Identifiers only through client.quote_ident; a type name in DDL only from TYPE_NAMES (never the
user's text). A table the copy creates is utf8mb4 with the binary, no-pad collation, so its text
keys are unique and ordered by code point as in SQLite ('a', 'A' and 'a ' are three keys).
MariaDB keeps no time zone: a timestamptz is written in UTC into DATETIME(6) (the session runs
in UTC, so an existing TIMESTAMP column is read and written in UTC too).
"""

from __future__ import annotations

import re

from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.client import (
    VALUE_ERRORS,
    MariaDBError,
    pymysql,
    quote_ident,
    statement_error,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.mariadb.compare import MariaDBSide

# MariaDB's type names (information_schema COLUMN_TYPE, without its parameters) -> logical type,
# integer bits. tinyint(1) is MariaDB's BOOLEAN: see parse_type.
TYPE_NAMES = {
    "tinyint": ("integer", 8),
    "smallint": ("integer", 16),
    "mediumint": ("integer", 24),
    "int": ("integer", 32),
    "bigint": ("integer", 64),
    "float": ("real", 0),
    "double": ("real", 0),
    "decimal": ("numeric", 0),
    "char": ("text", 0),
    "varchar": ("text", 0),
    "tinytext": ("text", 0),
    "text": ("text", 0),
    "mediumtext": ("text", 0),
    "longtext": ("text", 0),
    "binary": ("blob", 0),
    "varbinary": ("blob", 0),
    "tinyblob": ("blob", 0),
    "blob": ("blob", 0),
    "mediumblob": ("blob", 0),
    "longblob": ("blob", 0),
    "date": ("date", 0),
    "datetime": ("timestamp", 0),
    "timestamp": ("timestamptz", 0),
    "json": ("json", 0),
    "uuid": ("uuid", 0),
}
ALIASES = {
    "integer": "int",
    "int4": "int",
    "int2": "smallint",
    "int8": "bigint",
    "real": "double",
    "double precision": "double",
    "float8": "double",
    "float4": "float",
    "numeric": "decimal",
    "dec": "decimal",
    "character varying": "varchar",
    "character": "char",
    "bytea": "longblob",
}
# Names of column_types that are a type with parameters here: boolean is tinyint(1); MariaDB has
# no type keeping a zone, so timestamptz is a DATETIME(6) holding UTC.
SPECIAL = {
    "boolean": ("tinyint", (1,), "boolean"),
    "bool": ("tinyint", (1,), "boolean"),
    "timestamptz": ("datetime", (6,), "timestamptz"),
    "timestamp with time zone": ("datetime", (6,), "timestamptz"),
}
# The target type a logical type gets in a table the copy creates.
DEFAULT_TYPES = {
    "integer": ("bigint", ()),
    "real": ("double", ()),
    "numeric": ("decimal", (65, 30)),
    "text": ("longtext", ()),
    "blob": ("longblob", ()),
    "boolean": ("tinyint", (1,)),
    "date": ("date", ()),
    "timestamp": ("datetime", (6,)),
    "timestamptz": ("datetime", (6,)),
    "json": ("json", ()),
    "uuid": ("char", (36,)),
}
# A key column cannot be an unbounded TEXT or BLOB in an index: a created table's key gets these.
KEY_TYPES = {"longtext": ("varchar", (255,)), "longblob": ("varbinary", (255,))}
TYPE_TEXT = re.compile(r"^\s*([a-z][a-z0-9 ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?\s*$")
TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"


class TargetType:
    """A MariaDB column type the copy knows: its name, parameters, logical type."""

    def __init__(self, name: str, params: tuple = (), logical: str | None = None):
        self.name = name
        self.params = params
        self.logical, self.bits = TYPE_NAMES[name]
        if logical is not None:
            self.logical = logical
        if self.logical != "integer":
            self.bits = 0

    @property
    def length(self):
        """The most characters a char/varchar holds (a longer value is refused by name, before writing)."""
        return self.params[0] if self.name in ("char", "varchar") and self.params else None

    @property
    def scale(self):
        """A decimal's fixed scale (its values compare rounded to it, as the column stores them)."""
        return (self.params[1:] or (0,))[0] if self.name == "decimal" and self.params else None

    @property
    def real_digits(self) -> int:
        return 6 if self.name == "float" else 15

    def __str__(self):
        return self.name + (f"({','.join(map(str, self.params))})" if self.params else "")

    def ddl(self) -> str:
        """The type as DDL: a name from TYPE_NAMES and integers only."""
        return str(self)


def parse_type(text) -> TargetType | None:
    """'varchar(20)' -> varchar(20); 'tinyint(1)'/'boolean' -> boolean; 'bigint(20)' -> bigint (a display
    width is no parameter); None when unknown, unsigned or zerofill (a range the source's integers do not have)."""
    if not isinstance(text, str):
        return None
    lowered = " ".join(text.lower().split())
    if lowered in SPECIAL:
        name, params, logical = SPECIAL[lowered]
        return TargetType(name, params, logical)
    match = TYPE_TEXT.match(lowered)
    if not match:
        return None
    name = ALIASES.get(match.group(1), match.group(1))
    if name not in TYPE_NAMES:
        return None
    params = tuple(int(group) for group in match.group(2, 3) if group is not None)
    if name == "tinyint" and params == (1,):
        return TargetType(name, params, "boolean")
    if TYPE_NAMES[name][0] == "integer":
        params = ()  # the display width
    return TargetType(name, params)


def default_type(logical: str) -> TargetType:
    name, params = DEFAULT_TYPES[logical]
    return TargetType(name, params, logical)


class MariaDBTarget:
    """The copy's target adapter over one mariadb.client.Client (the tables of its database)."""

    kind = "MariaDB"
    bulk_write = "INSERT"

    def __init__(self, client):
        self.client = client

    @property
    def where(self) -> str:
        return self.client.where

    def qualified(self, table: str) -> str:
        return f"{self.client.database}.{table}"

    def check_name(self, name: str, what: str) -> None:
        try:
            quote_ident(name)
        except MariaDBError as exc:
            raise MariaDBError(f"{what}: {exc}") from None

    @staticmethod
    def parse_type(text: str) -> TargetType | None:
        return parse_type(text)

    @staticmethod
    def default_type(logical: str) -> TargetType:
        return default_type(logical)

    @staticmethod
    def type_names() -> list[str]:
        return sorted(set(TYPE_NAMES) | set(ALIASES) | set(SPECIAL))

    def record(self, line: str) -> None:
        self.client.queries.append(line)

    def render(self, statement: str) -> str:
        return self.client.render(statement)

    def columns(self, table: str) -> dict | None:
        """column -> COLUMN_TYPE of an existing table; None when missing."""
        # information_schema compares names without regard to case: the exact name is kept in Python
        found = [
            row
            for row in self.client.query(
                "SELECT t.table_name, t.table_type, c.column_name, c.column_type FROM information_schema.tables t "
                "LEFT JOIN information_schema.columns c ON c.table_schema = t.table_schema AND c.table_name = t.table_name "
                "WHERE t.table_schema = DATABASE() AND t.table_name = %s ORDER BY c.ordinal_position",
                (table,),
            )
            if row[0] == table
        ]
        if not found:
            return None
        if found[0][1] != "BASE TABLE":
            raise MariaDBError(f"{self.qualified(table)} on {self.where} is not a table ({found[0][1]}): copy into a table")
        return {row[2]: row[3] for row in found if row[2] is not None}

    def has_rows(self, table: str) -> bool:
        return bool(self.client.query(f"SELECT 1 FROM {quote_ident(table)} LIMIT 1"))  # noqa: S608 (quoted identifier)

    def create_statement(self, table: str, columns: list, key: list[str]) -> str:
        """columns: [(name, TargetType, not null)]."""
        parts = []
        for name, kind, notnull in columns:
            ddl = kind.ddl()
            if name in key and kind.name in KEY_TYPES:
                ddl = str(TargetType(*KEY_TYPES[kind.name]))
            parts.append(f"{quote_ident(name)} {ddl}{' NOT NULL' if notnull or name in key else ' NULL'}")
        parts.append(f"PRIMARY KEY ({', '.join(map(quote_ident, key))})")
        return f"CREATE TABLE {quote_ident(table)} ({', '.join(parts)}) {TABLE_OPTIONS}"

    def create(self, table: str, columns: list, key: list[str]) -> None:
        self.client.execute(self.create_statement(table, columns, key))

    def empty(self, table: str) -> None:
        # DELETE, not TRUNCATE: TRUNCATE commits implicitly, and the emptying belongs to the transaction of the first batch
        self.client.execute(f"DELETE FROM {quote_ident(table)}")  # noqa: S608 (quoted identifier)

    def transaction(self):
        return self.client.transaction()

    def write(self, table: str, columns: list[str], rows: list) -> None:
        """INSERT the (converted) rows; PyMySQL sends them as multi-row INSERTs."""
        statement = f"INSERT INTO {quote_ident(table)} ({', '.join(map(quote_ident, columns))}) VALUES ({', '.join(['%s'] * len(columns))})"  # noqa: S608
        try:
            self.client.executemany(statement, rows)
        except pymysql.Error as exc:
            error = statement_error(exc, f"writing a batch into {self.qualified(table)} on {self.where}")
            fix = (
                "a value the target column cannot hold: give the column a type that holds it"
                if error.errno in VALUE_ERRORS
                else "a constraint or type the source's values do not meet"
            )
            raise MariaDBError(f"{error}; nothing of this batch was kept - fix the target table ({fix}) and run again") from None

    def delete_keys(self, table: str, key: list[str], keys: list) -> None:
        if not keys:
            return
        condition = " AND ".join(f"{quote_ident(column)} = %s" for column in key)
        try:
            self.client.executemany(f"DELETE FROM {quote_ident(table)} WHERE {condition}", [tuple(values) for values in keys])  # noqa: S608
        except pymysql.Error as exc:
            raise statement_error(exc, f"deleting replayed keys from {self.qualified(table)} on {self.where}") from None

    # -- as a side of the comparison (compare/run.py) --------------------------------------------
    def prepare_compare(self) -> None:
        """Nothing: the session already runs in UTC."""

    def compare_side(self, role: str, table: str, columns: list[str], key: list[str], canonical):
        return MariaDBSide(self.client, role, table, columns, key, canonical)
