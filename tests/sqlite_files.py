"""Real SQLite files in the states the SQLite modules' tests need: corrupt, or locked by another
connection's write transaction (the application's long write)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path


def corrupt_copy(source: Path, path: Path) -> bytes:
    """Write `source` to `path` with the header magic kept and the rest of page 1 (page size, schema)
    destroyed; returns the bytes written."""
    data = bytearray(source.read_bytes())
    data[16:4096] = b"\xff" * (4096 - 16)
    path.write_bytes(bytes(data))
    return bytes(data)


@contextmanager
def write_lock(path: Path, statement: str | None = None, release_after: float | None = None, end: str = "ROLLBACK"):
    """Another connection holds `path`'s write lock (BEGIN IMMEDIATE, then `statement` if given) and
    ends it with `end` - after `release_after` seconds (a timer) or when the block exits."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    if statement:
        holder.execute(statement)
    releaser = threading.Timer(release_after, lambda: holder.execute(end)) if release_after is not None else None
    if releaser is not None:
        releaser.start()
    try:
        yield holder
    finally:
        if releaser is not None:
            releaser.join()
        else:
            holder.execute(end)
        holder.close()
