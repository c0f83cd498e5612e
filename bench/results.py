"""Appending a benchmark's section to bench/RESULTS.md, with the command that produced it."""

from __future__ import annotations

import datetime
from pathlib import Path


def append_section(results: Path, title: str, report: str, command: str, machine: str) -> None:
    """Add `## title`, the report, the command line and when/where it ran to `results`."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with results.open("a") as handle:
        handle.write(f"\n## {title}\n\n{report}\n\n- Command: `{command}`\n- Date: {stamp}; {machine}.\n")
