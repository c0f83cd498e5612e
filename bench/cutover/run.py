"""The write pause clients feel at cutover: pg_switchover against the naive runbook, measured
in the same run, under pgbench through PgBouncer.

    .venv/bin/python bench/cutover/run.py [--clients 16] [--seconds 20] [--results bench/RESULTS.md]

For each way, a fresh pair of databases (blue -> green logical replication, a PgBouncer of its
own on blue) and pgbench (custom script: UPDATE an account, INSERT a history row, in one
transaction; per-transaction latency log) runs for --seconds; the cutover starts after a third
of it.

* zerodowntime: one task, zerodowntime.migration.pg_switchover.
* naive runbook: separate Ansible tasks - freeze blue read-only (pg_readonly), wait for green
  (pg_subscription wait_for_sync, lag 0), copy sequences (pg_sequence_sync), disable the
  forward subscription, unfreeze, point PgBouncer at green (pgbouncer_pool) - then restart
  PgBouncer.

Reported per way: the slowest transaction minus the median one (the pause clients felt, for
the transactions that completed), client errors (failed or aborted clients), and lost
transactions: every transaction pgbench counts as processed must have its history row on
green afterwards. The ratio compares the write unavailability: the naive way's (from the freeze
to the restarted PgBouncer) against pg_switchover's pause.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / ".ansible" / "collections")]

from bench.results import append_section  # noqa: E402
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
            f"CREATE SUBSCRIPTION {SUBSCRIPTION} CONNECTION 'host=127.0.0.1 port={BLUE['login_port']} dbname={DB} "
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
    for side in (BLUE, GREEN):
        drop_replication(side, DB)
        drop_database(side, DB)


def pgbench(port: int, clients: int, seconds: int, workdir: Path) -> threading.Thread:
    script = workdir / "cutover.sql"
    script.write_text(SCRIPT)
    env = dict(os.environ, PGPASSWORD=LAB_PASSWORD)
    argv = [
        "pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "migrator", "-c", str(clients), "-j", "2",
        "-T", str(seconds), "-f", str(script), "-l", f"--log-prefix={workdir / 'tx'}", DB,
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


def switchover_args(blue: dict, green: dict, bouncer: dict) -> dict:
    return {
        "source": blue,
        "target": green,
        "subscription": SUBSCRIPTION,
        "reverse_publication": "zdm_bench_reverse",
        "reverse_subscription": "zdm_bench_reverse",
        "reverse_publisher": {"host": "127.0.0.1", "port": GREEN["login_port"], "dbname": DB, "user": "replicator", "password": PASSWORD},
        "pgbouncer": dict(bouncer["admin"], database=DB, config_file=bouncer["config_file"]),
        "timeout": 2,
    }


def naive_playbook(blue: dict, green: dict, bouncer: dict) -> list:
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
                        publisher={"host": "127.0.0.1", "port": BLUE["login_port"], "dbname": DB, "user": "migrator", "password": PASSWORD},
                    ),
                },
                {"name": "copy sequences", "zerodowntime.migration.pg_sequence_sync": dict(pg(green), source=pg(blue))},
                {
                    "name": "stop the forward replication",
                    "zerodowntime.migration.pg_subscription": dict(pg(green), name=SUBSCRIPTION, enabled=False),
                },
                {
                    "name": "point PgBouncer at green",
                    "zerodowntime.migration.pgbouncer_pool": dict(
                        bouncer["admin"], database=DB, config_file=bouncer["config_file"], host="127.0.0.1", port=GREEN["login_port"]
                    ),
                },
            ],
        }
    ]


def measure(way: str, clients: int, seconds: int) -> dict:
    blue, green = prepare_pair()
    workdir = Path(tempfile.mkdtemp(prefix="zdm-bench-cutover-"))
    try:
        with throwaway_pgbouncer({DB: blue}, pool_size=clients) as bouncer:
            load = pgbench(bouncer["port"], clients, seconds, workdir)
            time.sleep(seconds / 3)
            started = time.time()
            if way == "zerodowntime":
                _run, result = run_module("zerodowntime.migration.pg_switchover", switchover_args(blue, green, bouncer))
                if result["failed"]:
                    raise RuntimeError(result["msg"])
                unavailable = result["write_pause_ms"] / 1000
            else:
                run = run_playbook(naive_playbook(blue, green, bouncer))
                if run.status != "successful":
                    raise RuntimeError(run.stdout)
                bouncer["restart"]()
                unavailable = time.time() - started
            load.join()
        outcome = load.outcome  # type: ignore[attr-defined]
        processed = int(re.search(r"number of transactions actually processed: (\d+)", outcome["stdout"]).group(1))
        failed = re.search(r"number of failed transactions: (\d+)", outcome["stdout"])
        aborted = len(re.findall(r"client \d+ .*aborted", outcome["stderr"]))
        with connect(green) as conn:
            on_green = conn.execute("SELECT count(*) FROM bench_history").fetchone()[0]
        logged = latencies(workdir)
        typical = statistics.median(latency for _end, latency in logged)
        worst = max(latency for _end, latency in logged)
        return {
            "way": way,
            "processed": processed,
            "errors": aborted + (int(failed.group(1)) if failed else 0),
            "lost": processed - on_green,
            "median_ms": round(typical * 1000, 1),
            "max_added_ms": round((worst - typical) * 1000, 1),
            "unavailable_ms": round(unavailable * 1000, 1),
            "stderr": outcome["stderr"].strip().splitlines()[-3:],
        }
    finally:
        drop_pair()
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--results", type=Path, help="append a Markdown section to this file")
    args = parser.parse_args()
    rows = [measure(way, args.clients, args.seconds) for way in ("zerodowntime", "naive")]
    ours, naive = rows
    ratio = naive["unavailable_ms"] / ours["unavailable_ms"]
    lines = [
        f"pgbench, {args.clients} clients through PgBouncer, {args.seconds} s, cutover after {args.seconds // 3} s",
        "",
        "| way | transactions | median latency (ms) | max added latency (ms) | writes unavailable (ms) | client errors | lost |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['way']} | {row['processed']} | {row['median_ms']} | {row['max_added_ms']} | {row['unavailable_ms']} | "
            f"{row['errors']} | {row['lost']} |"
        )
    lines += ["", f"**pg_switchover's write pause is {ratio:.1f}x shorter than the naive runbook's write outage.**"]
    for row in rows:
        if row["errors"]:
            lines.append(f"- {row['way']}: pgbench's last errors: {' / '.join(row['stderr'])}")
    report = "\n".join(lines)
    print(report)
    if args.results:
        append_section(
            args.results,
            "Cutover: pg_switchover vs the naive runbook",
            report,
            f".venv/bin/python bench/cutover/run.py --clients {args.clients} --seconds {args.seconds} --results bench/RESULTS.md",
            "2 CPUs, PostgreSQL 15, PgBouncer 1.18",
        )
    return 0 if ours["errors"] == 0 and ours["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
