# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL log sequence numbers ("16/B374D848") as integers, and distances between them."""

from __future__ import annotations

import re

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def parse_lsn(text: str) -> int:
    """'16/B374D848' -> byte position in the WAL stream. Raises ValueError on anything else."""
    match = _LSN.match(str(text).strip())
    if not match:
        raise ValueError(f"not a PostgreSQL LSN: {text!r} (expected hex 'XXXXXXXX/XXXXXXXX')")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(position: int) -> str:
    """Byte position -> '16/B374D848' (PostgreSQL's own spelling: upper case, no padding)."""
    if position < 0 or position >= 1 << 64:
        raise ValueError(f"LSN out of range: {position}")
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def lsn_diff(newer: str, older: str) -> int:
    """Bytes from `older` to `newer` (negative when `newer` is behind), like pg_wal_lsn_diff."""
    return parse_lsn(newer) - parse_lsn(older)
