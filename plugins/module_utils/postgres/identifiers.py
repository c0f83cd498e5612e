# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL names as users write them in options: checked, split and written back.

Quoting for SQL is never done here: statements get identifiers through psycopg.sql only. This
is about reading `schema.table` from an option the way a DBA means it, and refusing a name
PostgreSQL would silently change.
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError

DEFAULT_SCHEMA = "public"
MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names, which then never match


def check_identifier(text, what: str) -> str:
    """`text` if PostgreSQL can store it unchanged as a name; PgError saying why not otherwise."""
    if not isinstance(text, str) or text == "":
        raise PgError(f"{what}: an empty name is not allowed")
    if "\x00" in text:
        raise PgError(f"{what} {text!r}: names cannot contain NUL characters")
    if len(text.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise PgError(
            f"{what} {text!r} is longer than {MAX_IDENTIFIER_BYTES} bytes: PostgreSQL would truncate it, so it "
            f"could never match: use the name as the catalog stores it"
        )
    return text


def parse_qualified_name(text, default_schema: str | None = DEFAULT_SCHEMA) -> tuple[str | None, str]:
    """'orders' -> (default_schema, 'orders'); 'sales.orders' -> ('sales', 'orders').

    Names are taken literally (no case folding). A part that contains a dot can be written in
    double quotes, with "" for a quote inside: '"my.schema"."t"' -> ('my.schema', 't'). A part
    that does not start with a double quote is literal up to the next dot.
    """
    if not isinstance(text, str) or not text:
        raise PgError(f"invalid table name {text!r}: give 'table' or 'schema.table'")
    parts = []
    position = 0
    while True:
        if text.startswith('"', position):
            chars = []
            position += 1
            while True:
                end = text.find('"', position)
                if end < 0:
                    raise PgError(f"invalid table name {text!r}: unterminated double quote")
                chars.append(text[position:end])
                if text.startswith('"', end + 1):  # "" is a quote inside the name
                    chars.append('"')
                    position = end + 2
                    continue
                position = end + 1
                break
            part = "".join(chars)
            if position < len(text) and text[position] != ".":
                raise PgError(f"invalid table name {text!r}: expected '.' after a quoted name")
        else:
            end = text.find(".", position)
            end = len(text) if end < 0 else end
            part = text[position:end]
            position = end
        if part == "":
            raise PgError(f"invalid table name {text!r}: empty name part: give 'table' or 'schema.table'")
        parts.append(part)
        if position >= len(text):
            break
        position += 1  # the dot
        if position >= len(text):
            raise PgError(f"invalid table name {text!r}: empty name part: give 'table' or 'schema.table'")
    if len(parts) > 2:
        raise PgError(f"invalid table name {text!r}: give 'table' or 'schema.table' (quote a part that contains a dot)")
    schema, table = (default_schema, parts[0]) if len(parts) == 1 else parts
    if schema is not None:
        check_identifier(schema, f"schema of table {text!r}")
    return schema, check_identifier(table, f"table {text!r}")


def split_qualified_name(text) -> tuple[str, str]:
    """parse_qualified_name with `public` for a name without a schema."""
    return parse_qualified_name(text)


def quote_part(part: str) -> str:
    if "." in part or part.startswith('"'):
        return '"' + part.replace('"', '""') + '"'
    return part


def format_qualified_name(schema: str, table: str) -> str:
    """('sales', 'orders') -> 'sales.orders'; split_qualified_name reads it back unchanged."""
    return f"{quote_part(schema)}.{quote_part(table)}"
