# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The final report's data, checked and put in one shape: times as UTC epoch seconds.

* phases: migration_state's rows (`phase` or `name`, `status`, `started_at`, `completed_at`).
* latency: per-second commit latency, as playbooks/files/workload.py --latency-file writes it
  ({"t", "count", "errors", "max_ms", "p99_ms", "p50_ms"}).
* lag: replication slot lag samples, as workload.py --lag-file writes them ({"t", "server", "slot",
  "lag_bytes"}; a line with "error" is a failed read and is counted, not drawn).
* pause: the cutover's write pause, {"started_at", and "ended_at" or "ms"} (pg_switchover's
  write_pause_started_at and write_pause_ms).

Every error names the input, the sample (and the file's line) and the field, as a ReportError.
Pure Python: nothing here needs matplotlib.
"""

from __future__ import annotations

import datetime
import json
import math

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError

UTC = datetime.timezone.utc  # noqa: UP017 (datetime.UTC is Python 3.11+; modules run on 3.9)


class ReportError(ModuleError):
    pass


def epoch(value, what: str) -> float:
    """A time as UTC epoch seconds: a number, a numeric string or an ISO 8601 string (without an
    offset it is UTC)."""
    if isinstance(value, bool) or value is None:
        raise ReportError(f"{what} is not a time: {value!r} (give UTC epoch seconds or an ISO 8601 time)")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, datetime.datetime):
        number = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            try:
                moment = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                raise ReportError(f"{what} is not a time: {value!r} (give UTC epoch seconds or an ISO 8601 time)") from None
            number = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    else:
        raise ReportError(f"{what} is not a time: {value!r} (give UTC epoch seconds or an ISO 8601 time)")
    if not math.isfinite(number):
        raise ReportError(f"{what} is not a time: {value!r}")
    return number


def number(value, what: str, optional: bool = False) -> float | None:
    """A non-negative finite number (a numeric string too); None only when `optional`."""
    if value is None and optional:
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        figure = float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{what} is not a number: {value!r}") from None
    if not math.isfinite(figure) or figure < 0:
        raise ReportError(f"{what} must be a finite number of 0 or more, not {value!r}")
    return figure


def read_lines(path: str, what: str) -> list[tuple[str, dict]]:
    """A JSON-lines file as (where, object) pairs; blank lines are skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ReportError(
            f"cannot read the {what} file {path}: {exc.strerror or exc}; give an existing file or leave the option out"
        ) from None
    found = []
    for number_, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number_} of {path}"
        try:
            found.append((where, json.loads(line)))
        except ValueError as exc:
            raise ReportError(f"{what} sample at {where} is not JSON ({exc}): {line[:80]!r}") from None
    return found


def samples_of(inline, path, what: str) -> list[tuple[str, dict]]:
    """Inline samples (a list of dicts) or a JSON-lines file's, each with where it came from."""
    if path:
        return read_lines(path, what)
    return [(f"item {index} of the {what} samples", sample) for index, sample in enumerate(inline or [])]


def field_of(sample, where: str, what: str, name: str):
    if not isinstance(sample, dict):
        raise ReportError(f"{what} sample ({where}) is not an object: {sample!r}")
    if name not in sample:
        raise ReportError(f"{what} sample ({where}) has no {name!r}: {json.dumps(sample, default=str)[:120]}")
    return sample[name]


def latency_samples(inline=None, path=None) -> list[dict]:
    """Per-second latency samples, oldest first: t, count, errors, max_ms, p99_ms, p50_ms."""
    samples = []
    for where, sample in samples_of(inline, path, "latency"):
        label = f"latency sample ({where})"
        figures = {"t": epoch(field_of(sample, where, "latency", "t"), f"{label} 't'")}
        figures["count"] = int(number(sample.get("count", 0), f"{label} 'count'"))
        figures["errors"] = int(number(sample.get("errors", 0), f"{label} 'errors'"))
        for name in ("max_ms", "p99_ms", "p50_ms"):
            figures[name] = number(sample.get(name), f"{label} {name!r}", optional=True)
        if figures["count"] and figures["max_ms"] is None:
            raise ReportError(f"{label} counts {figures['count']} commits but has no 'max_ms'")
        samples.append(figures)
    return sorted(samples, key=lambda sample: sample["t"])


def lag_samples(inline=None, path=None) -> tuple[list[dict], int]:
    """Lag samples, oldest first (t, series, lag_bytes), and how many were failed reads."""
    samples, failed = [], 0
    for where, sample in samples_of(inline, path, "lag"):
        label = f"lag sample ({where})"
        moment = epoch(field_of(sample, where, "lag", "t"), f"{label} 't'")
        if sample.get("error"):
            failed += 1
            continue
        slot = field_of(sample, where, "lag", "slot")
        server = sample.get("server")
        series = f"slot {slot} on {server}" if server else f"slot {slot}"
        lag = number(field_of(sample, where, "lag", "lag_bytes"), f"{label} 'lag_bytes'")
        samples.append({"t": moment, "series": series, "lag_bytes": lag})
    return sorted(samples, key=lambda sample: (sample["t"], sample["series"])), failed


def phase_rows(rows) -> list[dict]:
    """The phases in their order: name, status, start and end (None when not there)."""
    phases = []
    for index, row in enumerate(rows or []):
        where = f"phase {index}"
        if not isinstance(row, dict):
            raise ReportError(f"{where} is not an object: {row!r}")
        name = row.get("phase") or row.get("name")
        if not name:
            raise ReportError(f"{where} has no 'phase' (or 'name'): {json.dumps(row, default=str)[:120]}")
        where = f"phase {name!r}"
        started, completed = row.get("started_at"), row.get("completed_at")
        phase = {
            "phase": str(name),
            "status": str(row.get("status") or "pending"),
            "start": None if started in (None, "") else epoch(started, f"{where} 'started_at'"),
            "end": None if completed in (None, "") else epoch(completed, f"{where} 'completed_at'"),
            "attempts": row.get("attempts"),
        }
        if phase["start"] is not None and phase["end"] is not None and phase["end"] < phase["start"]:
            raise ReportError(f"{where} completed ({completed}) before it started ({started})")
        phases.append(phase)
    return phases


def pause_window(pause) -> dict | None:
    """The write pause as {"start", "end", "ms"}, or None when not given."""
    if not pause or pause.get("started_at") in (None, ""):
        return None
    start = epoch(pause["started_at"], "pause 'started_at'")
    if pause.get("ended_at") not in (None, ""):
        end = epoch(pause["ended_at"], "pause 'ended_at'")
        if end < start:
            raise ReportError(f"the pause ended ({pause['ended_at']}) before it started ({pause['started_at']})")
        return {"start": start, "end": end, "ms": round((end - start) * 1000, 1)}
    if pause.get("ms") in (None, ""):
        raise ReportError("the pause has 'started_at' but neither 'ended_at' nor 'ms': give one of them")
    ms = number(pause["ms"], "pause 'ms'")
    return {"start": start, "end": start + ms / 1000, "ms": ms}
