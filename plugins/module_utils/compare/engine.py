# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The comparison engine: one table on two sides, counts and checksums by key range, bisection
down to the differing keys. Engine-neutral; everything that reads a side goes through its adapter.

A side adapter has:
- `role` ("source" or "target", for messages) and `readers`: handles passed as `client=` to
  `summary`, one thread per reader (an adapter that reads through one connection has [None]);
- `estimate_rows()`: about how many rows the table holds (to size chunks; the source's only);
- `keys(lower, upper, limit=None, offset=0, sample_percent=None)`: keys in [lower, upper), in key
  order, as tuples both sides spell the same way (a sample of about `sample_percent` of them);
- `summary(lower, upper, keyless=False, client=None)`: (rows, checksum) of the rows in the range;
  the checksum is order-free (XOR of 64-bit row digests; a sum for a keyless table);
- `digests(lower, upper)`: {key: row digest} of the rows in the range.
None as a bound is unbounded; lower is inclusive, upper exclusive. Both sides must order keys
the same way and digest equal rows alike: postgres/compare.py's SQL-native side does both in SQL
for PostgreSQL on both sides; across engines each side digests rows in Python over canonical
values (compare/canonical.py) - sqlite/compare.py, postgres/compare.py's CanonicalSide.

How it runs, per table:
- Chunk bounds are key values sampled from the source, so chunks hold about `chunk_rows` rows
  whatever the key's type; every chunk (or a random `sample_percent` of them) is summarised on
  both sides at once.
- A chunk that differs is split at its median key and both halves compared again, down to
  `leaf_rows` rows, whose keys and digests are diffed: missing (on the target), extra (only on
  the target), changed.
- Rechecks: every differing chunk is compared again up to `rechecks` times after
  `wait_for_target()` (a subclass waits for replication; here `recheck_delay` seconds), and its
  keys located again. Only what still differs is reported.
"""

from __future__ import annotations

import itertools
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# Options of every comparison module (pg_compare, table_compare), documented once in
# plugins/doc_fragments/compare.py; chunk_rows, rechecks and recheck_delay are each module's own.
ENGINE_OPTIONS = dict(
    leaf_rows=dict(type="int", default=1000),
    sample_percent=dict(type="float", default=100.0),
    seed=dict(type="int"),
    max_keys=dict(type="int", default=20, no_log=False),
    fail_on_difference=dict(type="bool", default=True),
)


def option_problem(params: dict) -> str | None:
    """What is wrong with the engine's options, or None."""
    for option in ("chunk_rows", "leaf_rows"):
        if params[option] < 1:
            return f"{option} must be at least 1"
    if not 0 < params["sample_percent"] <= 100:
        return "sample_percent must be more than 0 and at most 100"
    for option in ("max_keys", "rechecks", "recheck_delay"):
        if params[option] < 0:
            return f"{option} must be 0 or more"
    return None


class RangeComparison:
    """Compare one table through two side adapters; `compare()` returns the per-table result.

    `key` is the key's column names ([]: a keyless table, compared as one whole-table checksum)."""

    def __init__(self, source, target, table: str, key: list, params: dict, pool: ThreadPoolExecutor, log=None, reporter=None):
        self.table = table
        self.source = source
        self.target = target
        self.key = list(key)
        self.params = params
        self.pool = pool
        self.log = log or (lambda message: None)
        self.reporter = reporter  # a common.progress.Reporter: chunks compared of this table's item
        self.warnings: list[str] = []
        self.differences: dict[tuple, str] = {}  # key -> missing / extra / changed
        self.uncounted = {"missing": 0, "extra": 0, "changed": 0}  # counted, but keys not listed

    def both(self, method: str, *args):
        """Run side.method(*args) on source and target at the same time."""
        futures = [self.pool.submit(getattr(side, method), *args) for side in (self.source, self.target)]
        return [future.result() for future in futures]

    def wait_for_target(self) -> None:
        """Before a recheck: give the target time to catch up."""
        time.sleep(self.params["recheck_delay"])

    # Chunks -------------------------------------------------------------------------------
    def chunk_bounds(self) -> list[tuple]:
        """[(lower, upper)] covering every key, about chunk_rows rows each, bounds sampled on the source."""
        rows = self.source.estimate_rows()
        wanted = math.ceil(rows / self.params["chunk_rows"])
        if wanted <= 1 or not self.key:
            return [(None, None)]
        # About 20 sampled keys per chunk; SYSTEM samples whole pages, so small tables read them all.
        percent = min(100.0, 100.0 * max(wanted * 20, 5000) / rows)
        keys = self.source.keys(sample_percent=percent)
        if len(keys) < wanted * 2:
            keys = self.source.keys(sample_percent=100.0)
        cuts = []
        for index in range(1, wanted):
            candidate = keys[index * len(keys) // wanted] if keys else None
            if candidate is not None and (not cuts or candidate != cuts[-1]):
                cuts.append(candidate)
        return list(itertools.pairwise([None, *cuts, None]))

    def chosen(self, chunks: list[tuple]) -> list[tuple]:
        """Every chunk, or a random `sample_percent` of them (at least one)."""
        percent = self.params["sample_percent"]
        if percent >= 100 or len(chunks) <= 1:
            return chunks
        count = max(1, math.ceil(len(chunks) * percent / 100))
        sampler = random.Random(self.params.get("seed"))  # noqa: S311 - picks chunks, not secrets
        picked = set(sampler.sample(range(len(chunks)), count))
        return [chunk for index, chunk in enumerate(chunks) if index in picked]

    # Finding the keys ---------------------------------------------------------------------
    def locate(self, lower, upper, source_rows: int, target_rows: int) -> None:
        """Record the keys that differ in [lower, upper), bisecting at the median key."""
        if source_rows == 0 or target_rows == 0:
            # Everything here is missing or extra: no need to read each row's digest.
            side, kind, rows = (self.target, "extra", target_rows) if source_rows == 0 else (self.source, "missing", source_rows)
            shown = max(0, self.params["max_keys"] - len(self.differences))
            for key in side.keys(lower, upper, limit=shown):
                self.differences[key] = kind
            self.uncounted[kind] += rows - min(rows, shown)
            return
        larger = self.source if source_rows >= target_rows else self.target
        rows = max(source_rows, target_rows)
        middle = larger.keys(lower, upper, limit=1, offset=rows // 2) if rows > self.params["leaf_rows"] else []
        if not middle or middle[0] == lower:
            source_digests, target_digests = self.both("digests", lower, upper)
            self.record(source_digests, target_digests)
            return
        for half in ((lower, middle[0]), (middle[0], upper)):
            (source_half_rows, source_sum), (target_half_rows, target_sum) = self.both("summary", *half)
            if (source_half_rows, source_sum) != (target_half_rows, target_sum):
                self.locate(*half, source_half_rows, target_half_rows)

    def record(self, source_digests: dict, target_digests: dict) -> None:
        for key, digest in source_digests.items():
            if key not in target_digests:
                self.differences[key] = "missing"
            elif target_digests[key] != digest:
                self.differences[key] = "changed"
        for key in target_digests.keys() - source_digests.keys():
            self.differences[key] = "extra"

    def locate_all(self, differing: list[tuple]) -> None:
        """Record the differing keys of every differing chunk [((lower, upper), source_rows, target_rows)]."""
        self.differences = {}
        self.uncounted = {"missing": 0, "extra": 0, "changed": 0}
        for (lower, upper), source_rows, target_rows in differing:
            if self.key:
                self.locate(lower, upper, source_rows, target_rows)
            else:
                self.differences[("<whole table>",)] = "changed"

    def recheck(self, differing: list[tuple]) -> None:
        """Compare the differing chunks again once the target caught up, and locate what still differs.

        Rows in flight (replication not yet applied) stop differing; a real difference persists."""
        for attempt in range(self.params["rechecks"]):
            if not differing:
                return
            self.wait_for_target()
            self.log(f"{self.table}: re-reading {len(differing)} differing chunks, {len(self.differences)} keys (recheck {attempt + 1})")
            still = []
            for entry in differing:
                bounds = entry[0]
                (source_rows, source_sum), (target_rows, target_sum) = self.both("summary", *bounds, not self.key)
                if (source_rows, source_sum) != (target_rows, target_sum):
                    still.append((bounds, source_rows, target_rows))
            differing = still
            self.locate_all(differing)

    def first_pass(self, chunks: list[tuple]) -> tuple[list, list]:
        """(rows, checksum) of every chunk on each side; every reader of both sides at once."""
        keyless = not self.key

        sides_read = [0] * len(chunks)  # 2 once both sides summed a chunk
        compared = [0, 0]  # chunks, source rows
        lock = threading.Lock()

        def counted(index, summary, role):
            if self.reporter is None:
                return
            with lock:
                sides_read[index] += 1
                if role == "source":
                    compared[1] += summary[0]
                if sides_read[index] == 2:
                    compared[0] += 1
                    self.reporter.item(self.table, compared[0], len(chunks), unit="chunks")

        def read(side, reader, indexes):
            done = []
            for index in indexes:
                summary = side.summary(*chunks[index], keyless, client=reader)
                counted(index, summary, side.role)
                done.append((index, summary))
            return done

        jobs = [
            (side, self.pool.submit(read, side, reader, range(number, len(chunks), len(side.readers))))
            for side in (self.source, self.target)
            for number, reader in enumerate(side.readers)
        ]
        summaries = {self.source.role: [None] * len(chunks), self.target.role: [None] * len(chunks)}
        for side, job in jobs:
            for index, summary in job.result():
                summaries[side.role][index] = summary
        return summaries["source"], summaries["target"]

    # The whole table ----------------------------------------------------------------------
    def compare(self) -> dict:
        started = time.monotonic()
        chunks = self.chunk_bounds()
        checked = self.chosen(chunks)
        source_summaries, target_summaries = self.first_pass(checked)
        rows = {"source": sum(summary[0] for summary in source_summaries), "target": sum(summary[0] for summary in target_summaries)}
        differing = [
            (bounds, source_summary[0], target_summary[0])
            for bounds, source_summary, target_summary in zip(checked, source_summaries, target_summaries, strict=True)
            if source_summary != target_summary
        ]
        differing_chunks = len(differing)
        self.log(f"{self.table}: {len(checked)} chunks compared, {differing_chunks} differ")
        self.locate_all(differing)
        self.recheck(differing)
        kinds = {kind: list(self.differences.values()).count(kind) + self.uncounted[kind] for kind in self.uncounted}
        keys = sorted(self.differences)[: self.params["max_keys"]]
        return {
            "table": self.table,
            "key": self.key,
            "rows_source": rows["source"],
            "rows_target": rows["target"],
            "chunks": len(chunks),
            "chunks_checked": len(checked),
            "chunks_differing": differing_chunks,
            "differences": sum(kinds.values()),
            "missing": kinds["missing"],
            "extra": kinds["extra"],
            "changed": kinds["changed"],
            "differing_keys": [
                {"key": dict(zip(self.key, key, strict=True)) if self.key else {}, "kind": self.differences[key]} for key in keys
            ],
            "equal": not self.differences and not sum(self.uncounted.values()),
            "duration_seconds": round(time.monotonic() - started, 3),
            "warnings": self.warnings,
        }


def summarise(results: list[dict], started: float) -> dict:
    """The module result over every table's `RangeComparison.compare()` result."""
    differing = [result["table"] for result in results if not result["equal"]]
    summary = {
        "changed": False,
        "equal": not differing,
        "differing_tables": differing,
        "tables": results,
        "rows_compared": sum(result["rows_source"] for result in results),
        "duration_seconds": round(time.monotonic() - started, 3),
        "warnings": [warning for result in results for warning in result["warnings"]],
    }
    if differing:
        summary["msg"] = "tables differ between source and target: " + ", ".join(
            f"{result['table']} ({result['missing']} missing, {result['extra']} extra, {result['changed']} changed)"
            for result in results
            if not result["equal"]
        )
    else:
        summary["msg"] = f"{len(results)} tables equal ({summary['rows_compared']} rows)"
    return summary
