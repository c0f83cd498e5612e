"""Initial copy throughput: a logical replication subscription (what phase 2 does) against
`pg_dump | pg_restore` of the same data, blue -> green, measured in the same run.

    .venv/bin/python bench/sync/run.py [--rows 2000000] [--repeat 3] [--results bench/RESULTS.md]

Both copy one table into an identical empty table (primary key only) on green. The subscription
is timed from CREATE SUBSCRIPTION until every table is ready (pg_subscription_rel 'r'), with the
collection's own wait (Subscription.wait_for_sync); pg_dump -Fc --data-only is piped into
pg_restore --data-only. Prints median seconds, MB/s of heap copied, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / ".ansible" / "collections")]

from psycopg import sql  # noqa: E402

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client, ident  # noqa: E402
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.subscription import Subscription  # noqa: E402
from tests.lab import BLUE, GREEN, LAB_PASSWORD, connect, drop_database, recreate_database  # noqa: E402

DB = "zdm_bench_sync"
TABLE_DDL = (
    "CREATE TABLE bench_rows (id bigint PRIMARY KEY, tenant_id int NOT NULL, name text NOT NULL, payload jsonb, created_at timestamptz)"
)


# Only this benchmark's subscriptions, in its own database (the lab's stay untouched).
OWN_SUBSCRIPTIONS = "SELECT subname FROM pg_subscription WHERE subname LIKE 'zdm_bench%' AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())"  # noqa: E501


def recreate(endpoint: dict) -> None:
    """An empty scratch database with the benchmark table (WITH (FORCE) also drops subscriptions)."""
    with connect(recreate_database(endpoint, DB)) as conn:
        conn.execute(TABLE_DDL)


def load_blue(rows: int) -> int:
    recreate(BLUE)
    with connect(BLUE, login_db=DB) as blue:
        blue.execute(
            "INSERT INTO bench_rows SELECT g, g %% 1000, 'vm-' || g, jsonb_build_object('cpu', g %% 64, 'note', repeat('x', 40)), "
            "now() - g * interval '1 second' FROM generate_series(1, %s) g",
            (rows,),
        )
        blue.execute("VACUUM ANALYZE bench_rows")
        blue.execute("GRANT SELECT ON bench_rows TO replicator")
        blue.execute("CREATE PUBLICATION zdm_bench_pub FOR TABLE bench_rows")
        return blue.execute("SELECT pg_relation_size('bench_rows')").fetchone()[0]


def empty_green() -> None:
    with connect(GREEN, login_db=DB) as green:
        for (name,) in green.execute(OWN_SUBSCRIPTIONS).fetchall():
            green.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident(name)))
        green.execute("TRUNCATE bench_rows")
        green.execute("CHECKPOINT")


def time_subscription(run_number: int) -> float:
    empty_green()
    name = f"zdm_bench_sub_{run_number}"
    publisher = {"host": BLUE["login_host"], "port": BLUE["login_port"], "dbname": DB, "user": "replicator", "password": LAB_PASSWORD}
    conninfo = f"host={publisher['host']} port={publisher['port']} dbname={DB} user=replicator password={LAB_PASSWORD}"
    with Client(dict(GREEN, login_db=DB)) as client:
        started = time.monotonic()
        client.execute(sql.SQL("CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION zdm_bench_pub").format(ident(name), sql.Literal(conninfo)))
        Subscription(client, name, publisher).wait_for_sync(timeout=1800, max_lag_bytes=None, interval=0.1)
        elapsed = time.monotonic() - started
        client.execute(sql.SQL("DROP SUBSCRIPTION {}").format(ident(name)))
    return elapsed


def time_dump_restore() -> float:
    empty_green()
    env = dict(os.environ, PGPASSWORD=LAB_PASSWORD)
    blue, green = (["-h", side["login_host"], "-p", str(side["login_port"]), "-U", "migrator", "-d", DB] for side in (BLUE, GREEN))
    started = time.monotonic()
    dump = subprocess.Popen(["pg_dump", *blue, "-Fc", "--data-only", "-t", "bench_rows"], stdout=subprocess.PIPE, env=env)
    restore = subprocess.run(["pg_restore", *green, "--data-only"], stdin=dump.stdout, env=env, check=True)
    dump.stdout.close()
    if dump.wait() != 0 or restore.returncode != 0:
        raise SystemExit("pg_dump | pg_restore failed")
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path)
    args = parser.parse_args()

    heap_bytes = load_blue(args.rows)
    recreate(GREEN)
    mb = heap_bytes / 1024 / 1024
    subscription, dump_restore = [], []
    for run_number in range(args.repeat):  # interleaved, so drift in the machine hits both
        dump_restore.append(time_dump_restore())
        subscription.append(time_subscription(run_number))
    sub_s, dump_s = statistics.median(subscription), statistics.median(dump_restore)
    lines = [
        f"rows: {args.rows:,}, heap: {mb:.0f} MB, runs: {args.repeat} (median)",
        f"subscription initial copy: {sub_s:.2f} s = {mb / sub_s:.1f} MB/s  (runs: {', '.join(f'{s:.2f}' for s in subscription)})",
        f"pg_dump | pg_restore:      {dump_s:.2f} s = {mb / dump_s:.1f} MB/s  (runs: {', '.join(f'{s:.2f}' for s in dump_restore)})",
        f"ratio (subscription throughput / dump-restore throughput): {dump_s / sub_s:.2f}",
    ]
    print("\n".join(lines))
    if args.results:
        section = "\n".join(["## Initial sync: subscription vs pg_dump | pg_restore", "", "```", *lines, "```", ""])
        text = args.results.read_text() if args.results.exists() else "# Benchmark results\n\n"
        args.results.write_text(text + "\n" + section)
    empty_green()  # its subscriptions first: a database with one cannot be dropped
    for endpoint in (BLUE, GREEN):
        drop_database(endpoint, DB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
