# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SCRAM-SHA-256 verifiers as PostgreSQL stores them and PgBouncer's auth_file accepts them.

Pure functions (no PgBouncer needed): `saslprep`, `scram_verifier`, `scram_verifier_matches`,
`parse_auth_file`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stringprep
import unicodedata

# SCRAM-SHA-256 verifiers, as PostgreSQL stores them and PgBouncer's auth_file accepts them ----

SCRAM_ITERATIONS = 4096  # PostgreSQL's default (scram_iterations)
SCRAM_PATTERN = re.compile(r"SCRAM-SHA-256\$(\d+):([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+):([A-Za-z0-9+/=]+)")


# RFC 3454 table C.1.2 as PostgreSQL's saslprep.c has it (it includes U+200B, which Python's
# stringprep.in_table_c12 leaves out); PostgreSQL maps these to a space before anything else.
NON_ASCII_SPACES = frozenset([0x00A0, 0x1680, *range(0x2000, 0x200C), 0x202F, 0x205F, 0x3000])


def _non_ascii_space(ch: str) -> bool:
    return ord(ch) in NON_ASCII_SPACES


def saslprep(password: str) -> str:
    """The password as PostgreSQL's pg_saslprep() prepares it before hashing (RFC 4013).

    Like PostgreSQL, a password that SASLprep prohibits is used as it is rather than refused.
    """
    if password.isascii():
        return password  # PostgreSQL takes an ASCII password as it is
    mapped = "".join(" " if _non_ascii_space(ch) else ch for ch in password if _non_ascii_space(ch) or not stringprep.in_table_b1(ch))
    prepared = unicodedata.normalize("NFKC", mapped)
    if not prepared:
        return password
    prohibited = (
        stringprep.in_table_a1,  # unassigned code points
        _non_ascii_space,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    if any(check(ch) for ch in prepared for check in prohibited):
        return password
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            return password
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            return password
    return prepared


def _scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hashlib.sha256(client_key).digest(), server_key


def scram_verifier(password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> for `password`.

    A random 16-byte salt unless one is given (tests pass one to get a known answer).
    """
    if not isinstance(password, str) or password == "":
        raise ValueError("a SCRAM verifier needs a non-empty password")
    if int(iterations) < 1:
        raise ValueError("SCRAM iterations must be positive")
    salt = os.urandom(16) if salt is None else salt
    stored_key, server_key = _scram_keys(password, salt, int(iterations))
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${int(iterations)}:{b64(salt).decode()}${b64(stored_key).decode()}:{b64(server_key).decode()}"


def scram_verifier_matches(verifier, password: str) -> bool:
    """True when `verifier` is a SCRAM-SHA-256 verifier of `password` (any salt, iterations)."""
    match = SCRAM_PATTERN.fullmatch(verifier or "") if isinstance(verifier, str) else None
    if not match or not password:
        return False
    try:
        salt = base64.b64decode(match.group(2), validate=True)
        stored_key = base64.b64decode(match.group(3), validate=True)
        server_key = base64.b64decode(match.group(4), validate=True)
    except ValueError:
        return False
    expected_stored, expected_server = _scram_keys(password, salt, int(match.group(1)))
    return hmac.compare_digest(stored_key, expected_stored) and hmac.compare_digest(server_key, expected_server)


def parse_auth_file(text: str) -> dict:
    """{user: secret} from a PgBouncer auth_file ("user" "secret" lines, ';' comments, "" escapes).

    Lines PgBouncer would not accept are skipped (the role rewrites the whole file anyway).
    """
    entries = {}
    quoted = r'"((?:[^"]|"")*)"'
    for line in (text or "").splitlines():
        match = re.match(rf"\s*{quoted}\s*{quoted}", line)
        if match and not line.lstrip().startswith(";"):
            entries[match.group(1).replace('""', '"')] = match.group(2).replace('""', '"')
    return entries
