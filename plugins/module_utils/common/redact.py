# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one redaction of secrets in text that is shown or kept: statement text in an error message,
a DETAIL, a server log line, `queries`, the DDL log.

It masks the value after a password-like word (password, passwd, passphrase, sslpassword ...):
- SQL's form, a string literal after the word: `PASSWORD 'x'`, `OPTIONS (password 'x')`,
  `password E'x'`;
- a connection string's form, `password=x`, `password = 'x y'`, also inside a SQL literal
  (`CONNECTION 'host=h password=x'`, where its quotes are doubled: `password=''x y''`).
A value cut short (a truncated log line) is masked to its end. Other text is left as it is.

The same rules run in PostgreSQL (`redact_sql`, for the DDL capture's triggers): they are written
in the syntax Python's re and PostgreSQL's regexp_replace read alike.
"""

from __future__ import annotations

import re

MASK = "********"
MASKED_KEY = r"[a-z_]*pass(?:word|wd|phrase)"
# (pattern, replacement): key=value first (its value may be unquoted), then the word and a literal
RULES = (
    (r"(" + MASKED_KEY + r")(\s*=\s*)(''(?:[^']|'''')*(?:''|$)|'(?:[^']|'')*'?|[^\s']+)", r"\1\2" + MASK),
    (r"(" + MASKED_KEY + r")(\s+)(E?'(?:[^']|'')*'?)", r"\1\2'" + MASK + "'"),
)
COMPILED = tuple((re.compile(pattern, re.IGNORECASE), replacement) for pattern, replacement in RULES)


def redact(text):
    """`text` with every password-like value masked (None and non-text as they are)."""
    if not isinstance(text, str) or not text:
        return text
    for pattern, replacement in COMPILED:
        text = pattern.sub(replacement, text)
    return text


def sql_text(text: str) -> str:
    """`text` as a PostgreSQL escape string literal, whatever standard_conforming_strings says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def redact_sql(expression: str) -> str:
    """A PostgreSQL expression: the text `expression` with the same values masked as redact() does."""
    for pattern, replacement in RULES:
        expression = f"regexp_replace({expression}, {sql_text(pattern)}, {sql_text(replacement)}, 'gi')"
    return expression
