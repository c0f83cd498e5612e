# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgbouncer.ini: [databases] entries read and rewritten in place, and the file written safely.

Only the one entry asked for is changed; comments, order and every other byte stay as they were.
Pure functions except `write_file_like` and `backup_file`."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError

# pgbouncer.ini [databases] entries -----------------------------------------------------------

# One key=value pair of a connection string as PgBouncer's loader reads it: pairs are separated
# by spaces (only spaces), a value is either '...' (with '' for a quote) or runs to the next space.
CONNSTR_PAIR = re.compile(r" *([^= ]+) *= *('(?:[^']|'')*'|[^ ]*)")
SECTION = re.compile(rb"\s*\[\s*([^\]]*?)\s*\]")
ENTRY = re.compile(rb'(\s*)("[^"]*"|[^=\s;#]+)(\s*=\s*)(.*?)(\s*)$', re.DOTALL)


def parse_connstr(connstr: str) -> list[tuple[str, str, tuple[int, int]]]:
    """[(key, value, (start, end) of the value as written)] of a [databases] connection string."""
    pairs, position = [], 0
    while position < len(connstr) and connstr[position:].strip(" "):
        match = CONNSTR_PAIR.match(connstr, position)
        if not match or match.end() == position:
            raise PgError(f"cannot read the connection string {redact(connstr)!r}: expected key=value pairs separated by spaces")
        value = match.group(2)
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        pairs.append((match.group(1), value, match.span(2)))
        position = match.end()
    return pairs


def redact(connstr: str) -> str:
    """A connection string with its password replaced, for messages."""
    return re.sub(r"(password *= *)('(?:[^']|'')*'|[^ ]*)", r"\1********", connstr)


def find_database_entry(content: bytes, database: str) -> dict | None:
    """Where [databases] defines `database` in pgbouncer.ini content: line index, the parts of
    the line, and the connection string's values (host, port, dbname, ...; password left out).

    Fails when the name is defined twice (PgBouncer would use the last one silently).
    """
    lines = content.splitlines(keepends=True)
    section, found = None, []
    for index, line in enumerate(lines):
        body = line.rstrip(b"\r\n")
        stripped = body.strip()
        if not stripped or stripped[:1] in (b";", b"#") or stripped.startswith(b"%"):
            continue
        header = SECTION.fullmatch(body)
        if header:
            section = header.group(1).decode("utf-8", "surrogateescape").lower()
            continue
        if section != "databases":
            continue
        match = ENTRY.match(body)
        if not match:
            continue
        name = match.group(2).decode("utf-8", "surrogateescape").strip('"')
        if name == database:
            found.append((index, match))
    if not found:
        return None
    if len(found) > 1:
        numbers = ", ".join(str(item[0] + 1) for item in found)
        raise PgError(f"[databases] defines '{database}' more than once (lines {numbers}): keep one entry")
    index, match = found[0]
    connstr = match.group(4).decode("utf-8", "surrogateescape")
    pairs = parse_connstr(connstr)
    values = {pair[0]: pair[1] for pair in pairs if pair[0] != "password"}
    return {"index": index, "match": match, "connstr": connstr, "pairs": pairs, "values": values}


def entry_target(values: dict, database: str) -> dict:
    """host/port/dbname an entry's values mean, with PgBouncer's defaults (port 5432, dbname =
    the entry's name, no host = the unix socket)."""
    return {"host": values.get("host"), "port": int(values.get("port", 5432)), "dbname": values.get("dbname", database)}


def rewrite_database_entry(content: bytes, database: str, changes: dict) -> bytes:
    """pgbouncer.ini content with the [databases] entry of `database` pointing elsewhere.

    `changes` maps host / port / dbname to new values. Only those values change, in place:
    every other byte of the file (other lines, comments, other keys of the entry such as
    user, password and pool_size, spacing, line endings) stays as it was. A key the entry
    does not have yet is appended to its connection string.
    """
    entry = find_database_entry(content, database)
    if entry is None:
        raise PgError(f"no [databases] entry for '{database}'")
    connstr = entry["connstr"]
    spans = {pair[0]: pair[2] for pair in entry["pairs"]}
    edits, appended = [], []
    for key in ("host", "port", "dbname"):
        if changes.get(key) is None:
            continue
        value = str(changes[key])
        if key in spans:
            edits.append((spans[key], value))
        else:
            appended.append(f"{key}={value}")
    for (start, end), value in sorted(edits, reverse=True):
        connstr = connstr[:start] + value + connstr[end:]
    if appended:
        connstr = " ".join(part for part in (connstr, *appended) if part)
    match = entry["match"]
    lines = content.splitlines(keepends=True)
    line = lines[entry["index"]]
    ending = line[len(line.rstrip(b"\r\n")) :]
    lines[entry["index"]] = b"".join(
        (match.group(1), match.group(2), match.group(3), connstr.encode("utf-8", "surrogateescape"), match.group(5), ending)
    )
    return b"".join(lines)


def write_file_like(path: str, content: bytes) -> None:
    """Replace `path` atomically with `content`, keeping its mode and owner."""
    info = os.stat(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".pgbouncer_pool-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fchmod(out.fileno(), info.st_mode & 0o7777)
            os.fchown(out.fileno(), info.st_uid, info.st_gid)
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def backup_file(path: str) -> str:
    """Copy `path` beside itself (PATH.PID.YYYY-MM-DD@HH:MM:SS~, as Ansible names backups),
    keeping mode and owner; return the copy's path."""
    destination = f"{path}.{os.getpid()}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"
    shutil.copy2(path, destination)
    info = os.stat(path)
    os.chown(destination, info.st_uid, info.st_gid)
    return destination
