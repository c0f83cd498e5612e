"""Benchmark: 100 hash partitions with ONE pg_partition task vs 100 postgresql_query tasks.

Runs against green (tests/lab.py GREEN: 127.0.0.12:5432) in a scratch database of its own, created here and dropped
at the end. Each round drops and recreates the parent table, then times a whole
`ansible-playbook` run (process start to exit, as a person would run it); the two ways
alternate so drift on the machine hits both. Prints medians and the ratio and writes them, with
the command line, into bench/RESULTS.md (section "Partitions: 100 hash partitions").

    .venv/bin/python bench/partition/run.py [--rounds 5] [--partitions 100]

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.lab import BLUE, GREEN, where  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Partitions: 100 hash partitions"
DATABASE = "zdm_partition_bench"
TABLE = "bench_vms"
HEADER = f"""# Benchmarks

Measured on the lab machine (PostgreSQL 15 blue {where(BLUE)} / green {where(GREEN)}). Each section says
which command produced it; re-run that command to refresh the section. Benchmarks are not part of
the test suite.
"""


def connect(dbname: str) -> psycopg.Connection:
    return psycopg.connect(
        host=GREEN["login_host"],
        port=GREEN["login_port"],
        user=GREEN["login_user"],
        password=GREEN["login_password"],
        dbname=dbname,
        autocommit=True,
    )


def play(tasks: list) -> list:
    return [{"name": "Benchmark", "hosts": "lab-db", "gather_facts": False, "tasks": tasks}]


def module_playbook(partitions: int) -> list:
    args = dict(GREEN, login_db=DATABASE, table=TABLE, strategy="hash", modulus=partitions)
    return play([{"name": "Create the hash partitions", "zerodowntime.migration.pg_partition": args}])


def naive_playbook(partitions: int) -> list:
    tasks = []
    for remainder in range(partitions):
        query = f"CREATE TABLE {TABLE}_p{remainder} PARTITION OF {TABLE} FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
        tasks.append(
            {"name": f"Create partition {remainder}", "community.postgresql.postgresql_query": dict(GREEN, login_db=DATABASE, query=query)}
        )
    return play(tasks)


def reset_table(conn: psycopg.Connection) -> None:
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(TABLE)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (id bigint, tenant_id bigint NOT NULL, name text) PARTITION BY HASH (tenant_id)").format(
            sql.Identifier(TABLE)
        )
    )


def partition_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", (TABLE,)).fetchone()
    return row[0]


def run_playbook(path: Path) -> float:
    """Seconds for one ansible-playbook run; fails loudly if the run fails."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.perf_counter()
    done = subprocess.run(
        ["ansible-playbook", "-i", str(ROOT / "inventories" / "lab"), str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{path.name} failed (rc {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return elapsed


def write_results(text: str) -> None:
    """Replace (or add) this benchmark's section in bench/RESULTS.md, leaving other sections alone."""
    current = RESULTS.read_text() if RESULTS.exists() else HEADER
    start = current.find(SECTION)
    if start < 0:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + len(SECTION))
        updated = current[:start] + text + ("" if end < 0 else current[end:])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(updated.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each way (default 5)")
    parser.add_argument("--partitions", type=int, default=100, help="hash partitions per run (default 100)")
    args = parser.parse_args()
    command = ".venv/bin/python bench/partition/run.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])

    with connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    times: dict[str, list[float]] = {"module": [], "naive": [], "rerun": []}
    try:
        with tempfile.TemporaryDirectory(prefix="zdm-bench-partition-") as tmp, connect(DATABASE) as conn:
            playbooks = {"module": Path(tmp) / "module.yml", "naive": Path(tmp) / "naive.yml"}
            playbooks["module"].write_text(yaml.safe_dump(module_playbook(args.partitions), sort_keys=False))
            playbooks["naive"].write_text(yaml.safe_dump(naive_playbook(args.partitions), sort_keys=False))
            for round_number in range(args.rounds):
                order = ("module", "naive") if round_number % 2 == 0 else ("naive", "module")
                for way in order:
                    reset_table(conn)
                    times[way].append(run_playbook(playbooks[way]))
                    created = partition_count(conn)
                    if created != args.partitions:
                        raise SystemExit(f"{way}: {created} partitions, expected {args.partitions}")
                    if way == "module":
                        times["rerun"].append(run_playbook(playbooks["module"]))  # idempotent: nothing to create
                print(
                    f"round {round_number + 1}/{args.rounds}: "
                    + ", ".join(f"{way} {times[way][-1]:.2f} s" for way in ("module", "naive", "rerun"))
                )
            reset_table(conn)
    finally:
        with connect("postgres") as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE)))

    module, naive, rerun = (statistics.median(times[way]) for way in ("module", "naive", "rerun"))
    ratio = naive / module
    print(
        f"median of {args.rounds}: pg_partition (1 task) {module:.2f} s, "
        f"postgresql_query ({args.partitions} tasks) {naive:.2f} s, ratio {ratio:.1f}x"
    )
    print(f"pg_partition re-run with nothing to do: {rerun:.2f} s")

    def cells(way):
        return " ".join(f"{value:.2f}" for value in times[way])

    with connect("postgres") as admin:
        server = admin.execute("SHOW server_version").fetchone()[0]
    write_results(
        f"""{SECTION}

Creating {args.partitions} hash partitions (`FOR VALUES WITH (MODULUS {args.partitions}, REMAINDER r)`) of an empty table
on green, timed as whole `ansible-playbook` runs (process start to exit, one lab host, local
connection). The parent table is dropped and recreated before every run; the two ways alternate.

| way | median (s) | runs (s) |
|---|---:|---|
| `zerodowntime.migration.pg_partition`, 1 task (one transaction) | {module:.2f} | {cells("module")} |
| `community.postgresql.postgresql_query`, {args.partitions} tasks (a `CREATE TABLE ... PARTITION OF` each) \
| {naive:.2f} | {cells("naive")} |
| `pg_partition` again, nothing to create (changed: false) | {rerun:.2f} | {cells("rerun")} |

**pg_partition is {ratio:.1f}x faster** ({naive:.2f} s / {module:.2f} s). Most of the naive playbook's time is
Ansible's per-task cost (a module process and a new connection per task); the one task also makes
the {args.partitions} partitions appear atomically, where the naive playbook leaves a partial set if
it fails half-way.

- Command: `{command}` (from the repository root)
- Date: {datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}; PostgreSQL {server}; Python {platform.python_version()};
  {os.cpu_count()} CPUs; other sessions may have been using the machine at the same time.
"""
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
