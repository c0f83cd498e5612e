# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQL text taken from an option (an index expression, a predicate): one piece of one statement.

Such text is trusted SQL written by the playbook author and is inserted into a statement the
module builds; still, one field must be one expression, never a way to run further statements.
The one reading of where a statement ends (`separators`, also how pg_schema_apply splits a file
into statements). Two checks, both before anything runs:

- `check_fragment` (no server): a `;` outside quotes and comments - as PostgreSQL's lexer reads
  them: '...' with '' (and, in E'...', backslash escapes), "...", $tag$...$tag$, -- and nested
  /* */ comments - or a NUL is refused, naming the field, where the separator is and the fix.
- `parse_only` (the server): the statement built from it is sent as a protocol-level Parse
  (psycopg's PGconn.prepare of the unnamed statement) and never executed. The extended protocol
  refuses several commands in one Parse ("cannot insert multiple commands into a prepared
  statement"), so whatever the lexer above might read otherwise, the server never gets a second
  statement from a field; a syntax error is reported the same way.
"""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, last_line

try:
    from psycopg import pq
except ImportError:  # the module reports the missing library before anything here runs
    pq = None

IDENT_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
IDENT_CHARS = IDENT_START + "0123456789$"


def is_ident_char(char: str, start: bool = False) -> bool:
    return char in (IDENT_START if start else IDENT_CHARS) or ord(char) >= 0x80


def _string_end(text: str, start: int, backslashes: bool) -> int:
    """Index after the '...' literal opening at `start` ('' and, with `backslashes`, \\x escapes)."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if backslashes and char == "\\":
            i += 2
            continue
        if char == "'":
            if text[i + 1 : i + 2] == "'":
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def _dollar_tag(text: str, start: int) -> str | None:
    """The $tag$ opening a dollar-quoted string at `start`, or None ($1 is a parameter)."""
    end = start + 1
    if end < len(text) and text[end] != "$":
        if not is_ident_char(text[end], start=True):
            return None
        while end < len(text) and text[end] != "$" and is_ident_char(text[end]):
            end += 1
    if end < len(text) and text[end] == "$":
        return text[start : end + 1]
    return None


def separators(text: str, strict: bool = False) -> list[int]:
    """Indexes of every `;` outside quotes and comments. With `strict`, an unterminated
    dollar-quoted body is a ValueError (schema files); otherwise it runs to the end of the text."""
    found, i, length = [], 0, len(text)
    while i < length:
        char, pair = text[i], text[i : i + 2]
        previous = text[i - 1] if i else ""
        if char == ";":
            found.append(i)
            i += 1
        elif pair == "--":
            newline = text.find("\n", i)
            i = length if newline < 0 else newline + 1
        elif pair == "/*":
            depth, i = 1, i + 2
            while i < length and depth:
                if text[i : i + 2] == "/*":
                    depth, i = depth + 1, i + 2
                elif text[i : i + 2] == "*/":
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif char == "'":
            escaped = previous in ("e", "E") and (i < 2 or not is_ident_char(text[i - 2]))
            i = _string_end(text, i, backslashes=escaped)
        elif char == '"':
            close = text.find('"', i + 1)
            while close >= 0 and text[close + 1 : close + 2] == '"':
                close = text.find('"', close + 2)
            i = length if close < 0 else close + 1
        elif char == "$" and not (previous and is_ident_char(previous)) and (tag := _dollar_tag(text, i)):
            close = text.find(tag, i + len(tag))
            if close < 0 and strict:
                raise ValueError(f"unterminated dollar-quoted string {tag}")
            i = length if close < 0 else close + len(tag)
        else:
            i += 1
    return found


def find_separator(text: str) -> int | None:
    """Index of the first `;` outside quotes and comments, or None."""
    found = separators(text)
    return found[0] if found else None


def check_fragment(text: str, field: str, kind: str = "expression", statement: str = "the statement") -> str:
    """`text` if it holds no statement separator (nor NUL); else PgError naming `field`."""
    if "\x00" in text:
        raise PgError(f"{field} {text!r} contains a NUL character, which SQL text cannot hold: remove it. Nothing was changed")
    position = find_separator(text)
    if position is not None:
        raise PgError(
            f"{field} {text!r} holds a statement separator ';' (character {position + 1}) outside quotes and comments: "
            f"{field} is one SQL {kind}, inserted into {statement}, and a ';' would end that statement and run what "
            f"follows as further statements. Give one {kind} only, without ';' (a ';' inside a quoted string is fine). "
            f"Nothing was changed"
        )
    return text


def parse_only(client, statement, fields: str) -> None:
    """Have the server parse `statement` as one command without running it; PgError otherwise.

    `fields` names the options whose SQL text the statement carries, for the message."""
    text = client.render(statement)
    result = client.conn.pgconn.prepare(b"", text.encode(client.conn.info.encoding))
    if result.status == pq.ExecStatus.COMMAND_OK:
        return
    primary = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY) or result.error_message
    message = last_line(primary.decode("utf-8", "replace"))
    if "multiple commands" in message:
        raise PgError(
            f"{fields} would make several statements of one ({message}, on {client.endpoint}, parsing without running: "
            f"{text}): give one expression per field, without ';'. Nothing was changed"
        )
    raise PgError(
        f"{fields} cannot be parsed by the server as part of one statement: {message} (on {client.endpoint}, parsing "
        f"without running: {text}). Fix the SQL text of {fields}. Nothing was changed"
    )
