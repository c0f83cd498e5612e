"""The Redis write hold clients feel at cutover: the one-run switchover (redis_switchover
state=switched) against the task-by-task playbook, in the same run, on the lab.

    .venv/bin/python bench/redis_cutover/run.py [--clients 8] [--switchovers 10] [--results bench/RESULTS.md]

Both ways run playbooks/redis_switchover.yml on the lab (blue 127.0.0.21:6379, green 127.0.0.22:6379,
clients through HAProxy's Redis frontend lb-1 127.0.0.31:6389): `redis_switchover_one_run: true` (the default) and `false` (the
earlier path: pause, promote, HAProxy hook, retire, release as separate tasks). Each way moves the
primary blue -> green and back `--switchovers` times in each direction while `--clients` threads
write through HAProxy (INCR of the client's counter and a SET of a new key per operation,
reconnecting through HAProxy on an error; a bounded keyspace, as the lab's Redis evicts at
maxmemory). Reported per way: the hold (hold_ms, returned by the one run only), the slowest client
operation, client errors, and acknowledged writes lost (each key must hold at least its last
acknowledged number, each counter every acknowledged INCR, on the final primary).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / ".ansible" / "collections")]

from bench.results import append_section  # noqa: E402
from tests.lab import HAPROXY_ADDRESS, HAPROXY_REDIS, LAB_PASSWORD, REDIS_BLUE_ADDRESS, REDIS_GREEN_ADDRESS, REDIS_PORT, run_playbook  # noqa: E402

REDIS_BLUE, REDIS_GREEN = REDIS_BLUE_ADDRESS, REDIS_GREEN_ADDRESS  # both on REDIS_PORT: told apart by address


class Writer(threading.Thread):
    """Writes through HAProxy as fast as it can: INCR of its counter, then SET of one of SLOTS keys
    to a rising number. Only this writer writes its keys, so each key must end holding at least
    the last number acknowledged for it (a bounded keyspace: the lab's Redis evicts at maxmemory)."""

    SLOTS = 1000

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix, self.last_acked, self.incrs, self.operations, self.slowest_ms = prefix, {}, 0, 0, 0.0
        self.errors: list[tuple[float, str, str]] = []  # (wall time, type, message) of each failed operation
        self.stop = threading.Event()

    def connect(self):
        return redis.Redis(host=HAPROXY_ADDRESS, port=HAPROXY_REDIS, password=LAB_PASSWORD, socket_timeout=30)

    def run(self):
        conn, number = self.connect(), 0
        while not self.stop.is_set():
            key = f"{self.prefix}:{number % self.SLOTS}"
            started = time.monotonic()
            try:
                conn.incr(f"{self.prefix}:counter")
                self.incrs += 1
                conn.set(key, number)
            except redis.RedisError as exc:
                self.errors.append((time.time(), type(exc).__name__, str(exc)[:120]))
                time.sleep(0.005)
                conn = self.connect()
                number += 1  # a write that failed may still have been applied: never reuse its number
                continue
            self.slowest_ms = max(self.slowest_ms, (time.monotonic() - started) * 1000)
            self.last_acked[key] = number
            self.operations += 1
            number += 1

    def lost_on(self, primary) -> int:
        """Acknowledged writes the primary does not have: keys holding less than their last
        acknowledged number, and INCRs missing from the counter."""
        keys = list(self.last_acked)
        values = primary.mget(keys) if keys else []
        lost = sum(value is None or int(value) < self.last_acked[key] for key, value in zip(keys, values, strict=True))
        lost += max(0, self.incrs - int(primary.get(f"{self.prefix}:counter") or 0))
        primary.delete(*keys, f"{self.prefix}:counter")
        return lost


def primary_address() -> str:
    info = redis.Redis(host=REDIS_BLUE, port=REDIS_PORT, password=LAB_PASSWORD).info("replication")
    return REDIS_BLUE if info["role"] == "master" else REDIS_GREEN


def measure(way: str, one_run: bool, clients: int, switchovers: int) -> dict:
    writers = [Writer(f"bench:{way}:{time.time_ns()}:{index}") for index in range(clients)]
    holds, switches = [], []  # switches: (number, side, playbook start, playbook end, hold start or None)
    for writer in writers:
        writer.start()
    time.sleep(1)
    try:
        for _round in range(switchovers):
            for side in ("green", "blue"):
                started = time.time()
                run = run_playbook("redis_switchover.yml", extravars={"redis_switchover_to": side, "redis_switchover_one_run": one_run})
                if run.status != "successful":
                    raise SystemExit(f"{way}: the switchover to {side} failed:\n{run.stdout[-3000:]}")
                hold_started = None
                for result in run.task_results("Redis switchover | hold, catch up, promote, repoint, retire, release"):
                    if "hold_ms" in result:
                        holds.append(result["hold_ms"])
                        hold_started = result.get("hold_started")
                switches.append((len(switches) + 1, side, started, time.time(), hold_started))
                time.sleep(0.5)
    finally:
        time.sleep(0.5)
        for writer in writers:
            writer.stop.set()
        for writer in writers:
            writer.join(60)
    primary = redis.Redis(host=primary_address(), port=REDIS_PORT, password=LAB_PASSWORD)
    lost = sum(writer.lost_on(primary) for writer in writers)
    return dict(
        way=way,
        switchovers=2 * switchovers,
        operations=sum(writer.operations for writer in writers),
        hold_median=statistics.median(holds) if holds else None,
        hold_worst=max(holds) if holds else None,
        slowest_ms=max(writer.slowest_ms for writer in writers),
        errors=sum(len(writer.errors) for writer in writers),
        lost=lost,
        error_log=error_log([error for writer in writers for error in writer.errors], switches),
    )


def error_log(errors: list[tuple[float, str, str]], switches: list[tuple]) -> list[str]:
    """What the client errors were: a count per type and message, then each error and when, relative
    to the switch it fell in (to the module's CLIENT PAUSE when the one run reported it, else to the
    playbook's start)."""
    if not errors:
        return []
    kinds: dict[str, int] = {}
    for _at, kind, message in errors:
        kinds[f"{kind}: {message}"] = kinds.get(f"{kind}: {message}", 0) + 1
    lines = [f"{count} x {kind}" for kind, count in sorted(kinds.items(), key=lambda item: -item[1])]
    for at, kind, message in sorted(errors)[:40]:
        during = [switch for switch in switches if switch[2] - 1 <= at <= switch[3] + 1]
        if not during:
            lines.append(f"{kind} ({message}) outside any switchover")
            continue
        number, side, started, ended, hold_started = during[0]
        origin, what = (hold_started, "the hold's start (CLIENT PAUSE)") if hold_started else (started, "the playbook's start")
        lines.append(
            f"{kind} ({message}) in switchover {number} (to {side}): {(at - origin) * 1000:+.1f} ms from {what}, "
            f"playbook {(ended - started) * 1000:.0f} ms"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--switchovers", type=int, default=10, help="switchovers in each direction, per way")
    parser.add_argument("--one-run-only", action="store_true", help="measure the one run only, print it, record nothing")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    if primary_address() != REDIS_BLUE:
        raise SystemExit("Redis blue must be the primary to start: run playbooks/redis_switchover.yml -e redis_switchover_to=blue")
    rows = [measure("one run (state=switched)", True, args.clients, args.switchovers)]
    if args.one_run_only:  # a quick look at the one run; not a result to record
        print(rows[0])
        return
    rows.append(measure("task by task (redis_switchover_one_run: false)", False, args.clients, args.switchovers))

    def ms(value):
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"{args.clients} clients (INCR + SET each operation) through HAProxy's Redis frontend while "
        f"playbooks/redis_switchover.yml moved the primary blue -> green -> blue, {args.switchovers} times each way, per way.",
        "",
        "| way | switchovers | acknowledged operations | hold median (ms) | hold worst (ms) | slowest client op (ms) "
        "| client errors | writes lost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['way']} | {row['switchovers']} | {row['operations']} | {ms(row['hold_median'])} | {ms(row['hold_worst'])} "
            f"| {ms(row['slowest_ms'])} | {row['errors']} | {row['lost']} |"
        )
    lines += [
        "",
        "The hold is what the module measures from CLIENT PAUSE to CLIENT UNPAUSE; the task-by-task path does not "
        "measure its own, and its slowest client operation shows it. The clients are redis-py "
        f"{redis.__version__} with its default retry, the same in both ways (a connection closed or timed out is "
        "retried on a new connection, up to 10 times with backoff, as an application's client does); a client error "
        "is an operation that failed for the application after that (READONLY from a demoted primary, retries "
        "exhausted), each listed below with its time from the module's CLIENT PAUSE. None of them was acknowledged.",
    ]
    for row in rows:
        if row["error_log"]:
            lines += ["", f"Client errors, {row['way']}:", "", *(f"- {line}" for line in row["error_log"])]
    report = "\n".join(lines)
    print(report)
    command = ".venv/bin/python bench/redis_cutover/run.py" + (f" --clients {args.clients}" if args.clients != 8 else "")
    command += f" --switchovers {args.switchovers}" if args.switchovers != 10 else ""
    title = f"Redis cutover: one run vs task by task, {args.clients} clients through HAProxy"
    append_section(args.results, title, report, command, machine())


def machine() -> str:
    import os
    import platform

    version = redis.Redis(host=REDIS_BLUE, port=REDIS_PORT, password=LAB_PASSWORD).info("server")["redis_version"]
    return f"Redis {version}; Python {platform.python_version()}; {os.cpu_count()} CPUs"


if __name__ == "__main__":
    main()
