"""The write pause clients feel at cutover: pg_switchover against the naive runbook, measured
in the same run, under pgbench through two PgBouncers; then how fast writes flow again when
pg_switchover's process is killed inside the pause.

    .venv/bin/python bench/cutover/run.py [--clients 16] [--seconds 20] [--results bench/RESULTS.md]

Every run gets a fresh pair of databases (blue -> green logical replication) and two PgBouncers
of its own in front of blue; one pgbench per PgBouncer (custom script: UPDATE an account, INSERT
a history row, in one transaction; per-transaction latency log), the --clients split between
them, runs for --seconds; the cutover starts after a third of it.

* zerodowntime: one task, zerodowntime.migration.pg_switchover with both PgBouncers
  (`pgbouncers`) and a journal_dir of its own.
* naive runbook: separate Ansible tasks - freeze blue read-only (pg_readonly), wait for green
  (pg_subscription wait_for_sync, lag 0), copy sequences (pg_sequence_sync), disable the
  forward subscription, point each PgBouncer at green (pgbouncer_pool) - then restart both
  PgBouncers.

Reported per way: the slowest transaction minus the median one (the pause clients felt, for
the transactions that completed), client errors (failed or aborted clients), and lost
transactions: every transaction pgbench counts as processed must have its history row on
green afterwards. The ratio compares the write unavailability: the naive way's (from the freeze
to both PgBouncers restarted) against pg_switchover's pause.

Recovery after SIGKILL, KILL_RUNS times (a fresh pair each): pg_switchover started by
ansible-playbook with the test failpoint holding the pause after KILL_STEP, its module process
killed (SIGKILL) inside the hold while the load runs. Its guardian must undo the run: measured is
the time from the kill until one write through each PgBouncer committed on blue (the goal: at
most the pause's timeout plus the guardian's margin). Lost transactions are counted on blue, where
an undone switchover leaves every write.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / ".ansible" / "collections")]

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.journal import FINAL_STATES, Journal  # noqa: E402
from bench.results import append_section  # noqa: E402
from tests.integration.test_pg_switchover_guardian import began, wait_for  # noqa: E402
from tests.lab import (  # noqa: E402
    BLUE,
    GREEN,
    LAB_PASSWORD,
    connect,
    drop_database,
    drop_replication,
    recreate_database,
    run_module,
    run_playbook,
    start_held_module,
    throwaway_pgbouncer,
    writable_again,
)

DB = "zdm_bench_cutover"
SCHEMA = [
    "CREATE TABLE bench_accounts (id integer PRIMARY KEY, balance bigint NOT NULL DEFAULT 0)",
    "CREATE TABLE bench_history (id bigserial PRIMARY KEY, account_id integer NOT NULL, at timestamptz NOT NULL DEFAULT now())",
]
SCRIPT = """\\set aid random(1, 1000)
BEGIN;
UPDATE bench_accounts SET balance = balance + 1 WHERE id = :aid;
INSERT INTO bench_history (account_id) VALUES (:aid);
END;
"""
SUBSCRIPTION = "zdm_bench_forward"
MODULE = "zerodowntime.migration.pg_switchover"
POOLERS = 2  # PgBouncers in front of blue, one pgbench each
PROBE_ACCOUNT = 0  # history rows of the recovery probe's writes (pgbench's accounts are 1..1000)
# the server that took the probe, by address: the lab's servers all listen on port 5432
PROBE = "INSERT INTO bench_history (account_id) VALUES (%s) RETURNING host(inet_server_addr())"
KILL_RUNS = 5
KILL_STEP, KILL_HOLD = "wait_for_catch_up", 3.0  # the failpoint holds the pause this long after the step
KILL_AFTER = 0.3  # seconds after the step began: the step takes milliseconds, so this is inside the hold
KILL_TIMEOUT, KILL_MARGIN = 4.0, 1.0  # the pause's bound and the guardian's margin in the SIGKILL runs
# ansible-runner (run_module, run_playbook) needs the checkout's ansible.cfg and the venv's ansible-playbook
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
PASSWORD = LAB_PASSWORD


def prepare_pair() -> tuple[dict, dict]:
    drop_pair()
    blue, green = recreate_database(BLUE, DB), recreate_database(GREEN, DB)
    for side in (blue, green):
        with connect(side) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO replicator")
    with connect(blue) as conn:
        conn.execute("INSERT INTO bench_accounts SELECT g FROM generate_series(1, 1000) g")
        conn.execute("CREATE PUBLICATION zdm_bench_pub FOR TABLE bench_accounts, bench_history")
    with connect(green) as conn:
        conn.execute(
            f"CREATE SUBSCRIPTION {SUBSCRIPTION} CONNECTION 'host={BLUE['login_host']} port={BLUE['login_port']} dbname={DB} "
            f"user=replicator password={LAB_PASSWORD}' PUBLICATION zdm_bench_pub"
        )
        deadline = time.monotonic() + 120
        while conn.execute("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'").fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark's subscription did not get ready")
            time.sleep(0.1)
    return blue, green


def drop_pair() -> None:
    """The benchmark's databases with their replication; both instances writable again."""
    writable_again(BLUE, GREEN)
    drop_replication(DB, BLUE, GREEN)
    for side in (BLUE, GREEN):
        drop_database(side, DB)


@contextmanager
def cutover_lab(clients: int):
    """A fresh pair, POOLERS PgBouncers in front of blue and a work directory (pgbench's logs,
    the journal); yields (blue, green, bouncers, workdir) and removes them all afterwards."""
    blue, green = prepare_pair()
    workdir = Path(tempfile.mkdtemp(prefix="zdm-bench-cutover-"))
    try:
        with ExitStack() as stack:
            # a server connection per client, and one more for the recovery probe
            bouncers = [stack.enter_context(throwaway_pgbouncer({DB: blue}, pool_size=share + 1)) for share in split(clients)]
            yield blue, green, bouncers, workdir
    finally:
        drop_pair()
        shutil.rmtree(workdir, ignore_errors=True)


def split(clients: int) -> list[int]:
    """The clients of each PgBouncer."""
    return [clients // POOLERS + (number < clients % POOLERS) for number in range(POOLERS)]


def start_load(bouncers: list[dict], clients: int, seconds: int, workdir: Path) -> list[threading.Thread]:
    """One pgbench per PgBouncer, the clients split between them."""
    return [
        pgbench(bouncer["port"], share, seconds, workdir, f"tx{number}")
        for number, (bouncer, share) in enumerate(zip(bouncers, split(clients), strict=True))
    ]


def pgbench(port: int, clients: int, seconds: int, workdir: Path, log_prefix: str) -> threading.Thread:
    script = workdir / "cutover.sql"
    script.write_text(SCRIPT)
    env = dict(os.environ, PGPASSWORD=LAB_PASSWORD)
    argv = [
        "pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "migrator", "-c", str(clients), "-j", "1",
        "-T", str(seconds), "-f", str(script), "-l", f"--log-prefix={workdir / log_prefix}", DB,
    ]  # fmt: skip
    outcome: dict = {}

    def run() -> None:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        outcome.update(stdout=done.stdout, stderr=done.stderr, rc=done.returncode)

    thread = threading.Thread(target=run)
    thread.outcome = outcome  # type: ignore[attr-defined]
    thread.start()
    return thread


def latencies(workdir: Path) -> list[tuple[float, float]]:
    """(end time, latency) in seconds of every logged transaction."""
    found = []
    for path in glob.glob(str(workdir / "tx*")):
        for line in Path(path).read_text().splitlines():
            fields = line.split()
            if len(fields) >= 6:
                latency_us, epoch, micros = int(fields[2]), int(fields[4]), int(fields[5])
                found.append((epoch + micros / 1e6, latency_us / 1e6))
    return sorted(found)


def load_results(loads: list[threading.Thread], workdir: Path, side: dict) -> dict:
    """What the pgbench runs did, once they end: every processed transaction's history row must
    be on `side`."""
    for load in loads:
        load.join()
    outcomes = [load.outcome for load in loads]  # type: ignore[attr-defined]
    processed = sum(int(re.search(r"number of transactions actually processed: (\d+)", o["stdout"]).group(1)) for o in outcomes)
    failed = sum(int(found.group(1)) for o in outcomes if (found := re.search(r"number of failed transactions: (\d+)", o["stdout"])))
    aborted = sum(len(re.findall(r"client \d+ .*aborted", o["stderr"])) for o in outcomes)
    with connect(side) as conn:
        rows = conn.execute("SELECT count(*) FROM bench_history WHERE account_id <> %s", (PROBE_ACCOUNT,)).fetchone()[0]
    logged = latencies(workdir)
    typical = statistics.median(latency for _end, latency in logged)
    worst = max(latency for _end, latency in logged)
    return {
        "processed": processed,
        "errors": aborted + failed,
        "lost": processed - rows,
        "median_ms": round(typical * 1000, 1),
        "max_added_ms": round((worst - typical) * 1000, 1),
        "first_errors": [
            next((line.removeprefix("pgbench: error: ") for line in o["stderr"].splitlines() if "error" in line), "") for o in outcomes
        ],
    }


def publisher_on(side: dict, user: str) -> dict:
    """The `publisher` options of the benchmark's database on a lab server (BLUE or GREEN)."""
    return {"host": side["login_host"], "port": side["login_port"], "dbname": DB, "user": user, "password": PASSWORD}


def switchover_args(blue: dict, green: dict, bouncers: list[dict], journal_dir: Path, **overrides) -> dict:
    return {
        "source": blue,
        "target": green,
        "subscription": SUBSCRIPTION,
        "reverse_publication": "zdm_bench_reverse",
        "reverse_subscription": "zdm_bench_reverse",
        "reverse_publisher": publisher_on(GREEN, "replicator"),
        "pgbouncers": [dict(bouncer["admin"], database=DB, config_file=bouncer["config_file"]) for bouncer in bouncers],
        "journal_dir": str(journal_dir),
        "timeout": 2,
        **overrides,
    }


def naive_playbook(blue: dict, green: dict, bouncers: list[dict]) -> list:
    def pg(side: dict) -> dict:
        return {key: side[key] for key in ("login_host", "login_port", "login_user", "login_password", "login_db")}

    return [
        {
            "name": "naive runbook",
            "hosts": "lab-db",
            "gather_facts": False,
            "tasks": [
                {"name": "freeze blue", "zerodowntime.migration.pg_readonly": dict(pg(blue), readonly=True)},
                {
                    "name": "wait for green",
                    "zerodowntime.migration.pg_subscription": dict(
                        pg(green),
                        name=SUBSCRIPTION,
                        wait_for_sync=True,
                        max_lag_bytes=0,
                        timeout=60,
                        poll_interval=0.2,
                        publisher=publisher_on(BLUE, "migrator"),
                    ),
                },
                {"name": "copy sequences", "zerodowntime.migration.pg_sequence_sync": dict(pg(green), source=pg(blue))},
                {
                    "name": "stop the forward replication",
                    "zerodowntime.migration.pg_subscription": dict(pg(green), name=SUBSCRIPTION, enabled=False),
                },
                *(
                    {
                        "name": f"point PgBouncer {number} at green",
                        "zerodowntime.migration.pgbouncer_pool": dict(
                            bouncer["admin"],
                            database=DB,
                            config_file=bouncer["config_file"],
                            host=GREEN["login_host"],
                            port=GREEN["login_port"],
                        ),
                    }
                    for number, bouncer in enumerate(bouncers, 1)
                ),
            ],
        }
    ]


def measure(way: str, clients: int, seconds: int) -> dict:
    with cutover_lab(clients) as (blue, green, bouncers, workdir):
        loads = start_load(bouncers, clients, seconds, workdir)
        time.sleep(seconds / 3)
        started = time.time()
        if way == "zerodowntime":
            _run, result = run_module(MODULE, switchover_args(blue, green, bouncers, workdir / "journal"))
            if result["failed"]:
                raise RuntimeError(result["msg"])
            unavailable = result["write_pause_ms"] / 1000
        else:
            run = run_playbook(naive_playbook(blue, green, bouncers))
            if run.status != "successful":
                raise RuntimeError(run.stdout)
            for bouncer in bouncers:
                bouncer["restart"]()
            unavailable = time.time() - started
        return {"way": way, "unavailable_ms": round(unavailable * 1000, 1), **load_results(loads, workdir, green)}


def write_through(bouncer: dict, timeout: float = 30) -> tuple[str, int]:
    """One write through a PgBouncer (it waits while the pool is paused), retried until it
    commits; returns the address of the server that took it and the failed attempts."""
    deadline, failures = time.monotonic() + timeout, 0
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=bouncer["port"], user="migrator", password=PASSWORD, dbname=DB,
                autocommit=True, prepare_threshold=None, connect_timeout=int(timeout),
            ) as conn:  # fmt: skip
                row = conn.execute(PROBE, (PROBE_ACCOUNT,))
                return row.fetchone()[0], failures
        except psycopg.Error:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def journal_shows(journal: Journal, predicate):
    """A condition for wait_for: the journal's record, once predicate(record) holds."""

    def condition():
        record = journal.read()
        return record if record and predicate(record) else None

    return condition


def measure_kill(clients: int, seconds: int) -> dict:
    """pg_switchover held inside the pause by the failpoint and SIGKILLed there, under the load:
    how long until a write through every PgBouncer commits on blue."""
    with cutover_lab(clients) as (blue, green, bouncers, workdir):
        journal = Journal(str(workdir / "journal"), DB)
        loads = start_load(bouncers, clients, seconds, workdir)
        time.sleep(seconds / 3)
        arguments = switchover_args(blue, green, bouncers, journal.directory, timeout=KILL_TIMEOUT, guardian_margin=KILL_MARGIN)
        playbook = start_held_module(MODULE, arguments, f"{KILL_STEP}:{KILL_HOLD}", workdir)
        try:
            record = wait_for(journal_shows(journal, began(KILL_STEP)), 60, f"the switchover to begin {KILL_STEP}")
            time.sleep(KILL_AFTER)
            os.kill(record["pid"], signal.SIGKILL)
            killed = time.monotonic()
            probes = [write_through(bouncer) for bouncer in bouncers]
            recovery = time.monotonic() - killed
            playbook.wait(timeout=60)
        finally:
            if playbook.poll() is None:
                os.killpg(playbook.pid, signal.SIGKILL)
        if not all(load.is_alive() for load in loads):
            raise RuntimeError("pgbench ended before writes flowed again: give it more --seconds")
        final = wait_for(journal_shows(journal, lambda record: record.get("state") in FINAL_STATES), 30, "the guardian to end the run")
        if [address for address, _failures in probes] != [BLUE["login_host"]] * len(bouncers):
            raise RuntimeError(f"after the kill the writes went to {probes}, not blue: journal {final}")
        outcome = f"{final['state']} by {final.get('undo_by') or final.get('finished_by')}"
        return {
            "recovery_ms": round(recovery * 1000, 1),
            "outcome": outcome,
            "probe_failures": sum(failures for _address, failures in probes),
            **load_results(loads, workdir, blue),
        }


def first_errors(row: dict) -> str:
    return "; ".join(f"pgbench {number}'s first error: {line}" for number, line in enumerate(row["first_errors"], 1) if line)


def cutover_report(rows: list[dict], clients: int, seconds: int) -> list[str]:
    ours, naive = rows
    shares = " + ".join(str(share) for share in split(clients))
    lines = [
        f"pgbench, {clients} clients through {POOLERS} PgBouncers ({shares}), {seconds} s, cutover after {seconds // 3} s",
        "",
        "| way | transactions | median latency (ms) | max added latency (ms) | writes unavailable (ms) | client errors | lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['way']} | {row['processed']} | {row['median_ms']} | {row['max_added_ms']} | {row['unavailable_ms']} | "
            f"{row['errors']} | {row['lost']} |"
        )
    ratio = naive["unavailable_ms"] / ours["unavailable_ms"]
    lines += ["", f"**pg_switchover's write pause is {ratio:.1f}x shorter than the naive runbook's write outage.**"]
    for row in rows:
        if row["errors"]:
            lines.append(f"- {row['way']}: {first_errors(row)}")
    return lines


def kill_report(runs: list[dict]) -> list[str]:
    goal_ms = (KILL_TIMEOUT + KILL_MARGIN) * 1000
    recoveries = [run["recovery_ms"] for run in runs]
    median, worst = statistics.median(recoveries), max(recoveries)
    lines = [
        f"**Recovery after SIGKILL**, {len(runs)} runs (a fresh pair each, the same load): pg_switchover with timeout "
        f"{KILL_TIMEOUT:g} s and guardian_margin {KILL_MARGIN:g} s, the pause held {KILL_HOLD:g} s after `{KILL_STEP}` by the "
        f"test failpoint, the module's process SIGKILLed {KILL_AFTER:g} s into that hold. *Recovery* runs from the kill until one "
        f"write through each PgBouncer has committed on blue; *max added latency* includes the {KILL_AFTER:g} s before the kill; "
        "*lost* is counted on blue, where the guardian's undo leaves every write.",
        "",
        "| run | recovery (ms) | max added latency (ms) | transactions | client errors | lost | journal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for number, run in enumerate(runs, 1):
        lines.append(
            f"| {number} | {run['recovery_ms']} | {run['max_added_ms']} | {run['processed']} | {run['errors']} | {run['lost']} | "
            f"{run['outcome']} |"
        )
    verdict = "met" if worst <= goal_ms else "NOT met"
    lines += [
        "",
        f"**Writes flow through every PgBouncer {median:.0f} ms (median) after the SIGKILL, {worst:.0f} ms at worst; "
        f"the goal, at most timeout + margin = {goal_ms:.0f} ms, is {verdict}.**",
    ]
    for number, run in enumerate(runs, 1):
        if run["probe_failures"]:
            lines.append(f"- run {number}: {run['probe_failures']} probe writes failed before one committed")
        if run["errors"]:
            lines.append(f"- run {number}: {first_errors(run)}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--results", type=Path, help="append a Markdown section to this file")
    args = parser.parse_args()
    rows = [measure(way, args.clients, args.seconds) for way in ("zerodowntime", "naive")]
    runs = [measure_kill(args.clients, args.seconds) for _run in range(KILL_RUNS)]
    report = "\n".join([*cutover_report(rows, args.clients, args.seconds), "", *kill_report(runs)])
    print(report)
    if args.results:
        append_section(
            args.results,
            f"Cutover: pg_switchover vs the naive runbook, {args.clients} clients, {POOLERS} PgBouncers, recovery after SIGKILL",
            report,
            f".venv/bin/python bench/cutover/run.py --clients {args.clients} --seconds {args.seconds} --results bench/RESULTS.md",
            "2 CPUs, PostgreSQL 15, PgBouncer 1.18",
        )
    clean = [rows[0], *runs]
    within = max(run["recovery_ms"] for run in runs) <= (KILL_TIMEOUT + KILL_MARGIN) * 1000
    return 0 if within and all(row["errors"] == 0 and row["lost"] == 0 for row in clean) else 1


if __name__ == "__main__":
    sys.exit(main())
