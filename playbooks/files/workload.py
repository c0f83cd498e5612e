# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lab's write workload, and the check that blue and green hold the same rows.

  workload.py run --through 127.0.0.61:6432 [--through 127.0.0.62:6432] [--clients 2] --stop-file FILE
                  [--max-seconds 600]
      inserts, updates and deletes (through PgBouncer, or on a server directly) until the stop
      file appears; prints a JSON summary: counts, errors, the slowest transaction, and how many
      committed transactions are missing on blue (--blue) and green (--green).
      --through may be given several times (every PgBouncer): the clients (--clients, default one
      per endpoint), each a connection of its own in a thread of its own, are spread over the
      endpoints in turn, and the summary counts the transactions committed through each ("through",
      by HOST:PORT).
      --latency-file FILE: also writes, one JSON line a second while it runs, the commit latency of
      that second: {"t": <UTC epoch second>, "count": commits, "errors": failed transactions,
      "max_ms", "p99_ms", "p50_ms" (null in a second without commits)}.
      --lag-file FILE: also reads, every --lag-interval seconds (default 1), the lag of every
      logical replication slot on blue (--blue) and green (--green) and writes one JSON line per
      slot: {"t": <UTC epoch>, "server": "blue"|"green", "endpoint", "slot", "lag_bytes", "active"}
      (a failed read: {"t", "server", "endpoint", "error"}). Both feed the final report's
      charts (zerodowntime.migration.migration_report); neither changes the printed summary.
  workload.py verify [--blue 127.0.0.11:5432] [--green 127.0.0.12:5432] --tables vms,vm_metrics [--timeout 120]
      waits (bounded) until every table has the same row count and row checksum on both
      sides; prints them as JSON; exits 1 naming the tables that still differ.

Endpoints are HOST:PORT (blue and green may share a port, each on its own host); --user and
--dbname apply to all; the password comes from PGPASSWORD.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import threading
import time

import psycopg
from psycopg import sql


def endpoint(text: str) -> str:
    """argparse type of an endpoint: HOST:PORT, kept as given."""
    host, port = text.rpartition(":")[::2]
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def connect(args, where: str, application_name: str = "zdm-workload") -> psycopg.Connection:
    # prepare_threshold=None: no server-side prepared statements, so it also runs through
    # PgBouncer in transaction pooling
    host, port = where.rpartition(":")[::2]
    return psycopg.connect(
        host=host,
        port=int(port),
        user=args.user,
        dbname=args.dbname,
        autocommit=True,
        application_name=application_name,
        prepare_threshold=None,
    )


def nearest_rank(ordered: list, share: float):
    """The nearest-rank percentile of an ordered list (None when empty)."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else None


class LatencyLog:
    """Commit latency per second (by the UTC second a transaction ended in), one JSON line a
    second in `path`, written as each second ends (a workload killed midway leaves its seconds)."""

    def __init__(self, path: str):
        self.lock = threading.Lock()
        self.seconds: dict = {}  # epoch second -> {"ms": [latencies], "errors": n}
        self.next = int(time.time())  # the first second not written yet
        self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def record(self, latency_ms: float | None) -> None:
        """A committed transaction's latency, or None for a failed one."""
        second = int(time.time())
        with self.lock:
            bucket = self.seconds.setdefault(max(second, self.next), {"ms": [], "errors": 0})
            if latency_ms is None:
                bucket["errors"] += 1
            else:
                bucket["ms"].append(latency_ms)

    def flush(self, final: bool = False) -> None:
        """Write every second that has ended (with `final`, the current one too)."""
        last = int(time.time()) - (0 if final else 1)
        lines = []
        with self.lock:
            while self.next <= last:
                bucket = self.seconds.pop(self.next, {"ms": [], "errors": 0})
                ordered = sorted(bucket["ms"])
                line = {"t": self.next, "count": len(ordered), "errors": bucket["errors"]}
                line.update(max_ms=ordered[-1] if ordered else None, p99_ms=nearest_rank(ordered, 0.99), p50_ms=nearest_rank(ordered, 0.5))
                lines.append(json.dumps(line) + "\n")
                self.next += 1
        if lines:
            self.file.writelines(lines)
            self.file.flush()

    def keep_flushing(self, stop: threading.Event) -> None:
        while not stop.wait(1):
            self.flush()

    def close(self) -> None:
        self.flush(final=True)
        self.file.close()


LAG_QUERY = (
    "SELECT slot_name, active, pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), confirmed_flush_lsn)::bigint AS lag_bytes "
    "FROM pg_catalog.pg_replication_slots WHERE slot_type = 'logical' AND database = current_database() "
    "AND confirmed_flush_lsn IS NOT NULL AND slot_name NOT LIKE 'pg\\_%\\_sync\\_%' ORDER BY slot_name"
)  # every logical slot of the database but the initial copy's table sync slots


def sample_lag(args, path: str, stop: threading.Event) -> None:
    """Every --lag-interval seconds until `stop`: each logical slot's lag on blue and green."""
    sides = (("blue", args.blue), ("green", args.green))
    conns: dict = {}
    with open(path, "w", encoding="utf-8") as out:
        while True:
            for name, where in sides:
                line = {"t": round(time.time(), 3), "server": name, "endpoint": where}
                try:
                    if conns.get(name) is None or conns[name].broken:
                        conns[name] = connect(args, where, "zdm-workload-lag")
                        conns[name].execute("SET statement_timeout = '2s'")
                    rows = conns[name].execute(LAG_QUERY).fetchall()
                    out.writelines(json.dumps(dict(line, slot=slot, active=active, lag_bytes=lag)) + "\n" for slot, active, lag in rows)
                except psycopg.Error as exc:
                    out.write(json.dumps(dict(line, error=str(exc).strip())) + "\n")
            out.flush()
            if stop.wait(args.lag_interval):
                break
    for conn in conns.values():
        if conn is not None:
            conn.close()


def run_client(args, through: str, seed: int, totals: dict, committed: list, lock: threading.Lock, latency: LatencyLog | None) -> None:
    """One client: transactions on its own connection through `through` until the stop file appears."""
    counts = {"inserts": 0, "updates": 0, "deletes": 0, "errors": 0, "max_latency_ms": 0.0}
    audit_ids = []
    started = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 (a repeatable workload, not a secret)
    conn = None
    try:
        conn = connect(args, through)
        max_vm = conn.execute("SELECT max(id) FROM vms").fetchone()[0]
        max_metric = conn.execute("SELECT max(id) FROM vm_metrics").fetchone()[0]
        while not os.path.exists(args.stop_file) and time.monotonic() - started < args.max_seconds:
            begun = time.monotonic()
            try:
                if conn.broken:  # the pooler or the server closed it: a new one, like an application's pool
                    conn.close()
                    conn = connect(args, through)
                with conn.transaction():
                    vm_id = rng.randint(1, max_vm)
                    audit_id = conn.execute(
                        "INSERT INTO audit_log (tenant_id, user_id, action, object_type, object_id, details) "
                        "SELECT tenant_id, NULL, 'vm.resize', 'vm', id, '{\"source\": \"workload\"}' FROM vms WHERE id = %s RETURNING id",
                        (vm_id,),
                    ).fetchone()[0]
                    conn.execute("UPDATE vms SET vcpus = vcpus + 1, updated_at = now(), state = 'resized' WHERE id = %s", (vm_id,))
                    conn.execute(
                        "INSERT INTO vm_metrics (vm_id, collected_at, cpu_pct, memory_pct, disk_read_bytes, disk_write_bytes, "
                        "net_rx_bytes, net_tx_bytes) VALUES (%s, now(), 50, 50, 1, 1, 1, 1)",
                        (vm_id,),
                    )
                    deleted = conn.execute("DELETE FROM vm_metrics WHERE id = %s", (rng.randint(1, max_metric),)).rowcount
                audit_ids.append(audit_id)
                took_ms = round((time.monotonic() - begun) * 1000, 1)
                counts["max_latency_ms"] = max(counts["max_latency_ms"], took_ms)
                if latency is not None:
                    latency.record(took_ms)
                counts["inserts"] += 2
                counts["updates"] += 1
                counts["deletes"] += deleted
            except psycopg.Error as exc:
                counts["errors"] += 1
                counts["last_error"] = str(exc).strip()
                if latency is not None:
                    latency.record(None)
            time.sleep(args.pause)
    except psycopg.Error as exc:  # no connection to begin with
        counts["errors"] += 1
        counts["last_error"] = str(exc).strip()
    finally:
        if conn is not None:
            conn.close()
        with lock:
            for name in ("inserts", "updates", "deletes", "errors"):
                totals[name] += counts[name]
            totals["max_latency_ms"] = max(totals["max_latency_ms"], counts["max_latency_ms"])
            if "last_error" in counts:
                totals["last_error"] = counts["last_error"]
            totals["through"][through] += len(audit_ids)
            committed.extend(audit_ids)


def run(args) -> dict:
    # "through": transactions committed through each endpoint
    counts = {"inserts": 0, "updates": 0, "deletes": 0, "errors": 0, "max_latency_ms": 0.0, "through": dict.fromkeys(args.through, 0)}
    committed_audit_ids = []
    lock = threading.Lock()
    started = time.monotonic()
    latency = LatencyLog(args.latency_file) if args.latency_file else None
    stop = threading.Event()
    helpers = []  # the latency file's writer and the lag sampler, until the clients are done
    if latency is not None:
        helpers.append(threading.Thread(target=latency.keep_flushing, args=(stop,), name="latency"))
    if args.lag_file:
        helpers.append(threading.Thread(target=sample_lag, args=(args, args.lag_file, stop), name="lag"))
    clients = [
        threading.Thread(
            target=run_client,
            args=(args, args.through[number % len(args.through)], args.seed + number, counts, committed_audit_ids, lock, latency),
            name=f"client-{number}",
        )
        for number in range(args.clients or len(args.through))
    ]
    for thread in helpers + clients:
        thread.start()
    for client in clients:
        client.join()
    stop.set()
    for helper in helpers:
        helper.join()
    if latency is not None:
        latency.close()
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts["committed"] = len(committed_audit_ids)
    for name, where in (("blue", args.blue), ("green", args.green)):
        # "lost": a transaction the workload saw commit whose audit_log row is missing there
        with connect(args, where) as conn:
            found = conn.execute("SELECT count(*) FROM audit_log WHERE id = ANY(%s)", (committed_audit_ids,)).fetchone()[0]
        counts[f"lost_on_{name}"] = len(committed_audit_ids) - found
    return counts


def table_figures(conn, table: str) -> list:
    query = sql.SQL("SELECT count(*), coalesce(sum(hashtext(t::text)), 0) FROM {} AS t").format(sql.Identifier(table))
    return list(conn.execute(query).fetchone())


def verify(args) -> tuple[bool, dict]:
    tables = [name for name in args.tables.split(",") if name]
    deadline = time.monotonic() + args.timeout
    with connect(args, args.blue) as blue, connect(args, args.green) as green:
        while True:
            figures = {table: {"blue": table_figures(blue, table), "green": table_figures(green, table)} for table in tables}
            differing = [table for table, pair in figures.items() if pair["blue"] != pair["green"]]
            if not differing or time.monotonic() > deadline:
                return not differing, {"equal": not differing, "differing": differing, "tables": figures}
            time.sleep(1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["run", "verify"])
    parser.add_argument("--through", type=endpoint, action="append", help="run: HOST:PORT, once per pooler (default the lab's pool-1)")
    parser.add_argument("--clients", type=int, help="run: concurrent clients, spread over the endpoints (default one per endpoint)")
    parser.add_argument("--blue", type=endpoint, default="127.0.0.11:5432", help="blue's HOST:PORT (run: committed writes looked up)")
    parser.add_argument("--green", type=endpoint, default="127.0.0.12:5432", help="green's HOST:PORT")
    parser.add_argument("--user", default="migrator")
    parser.add_argument("--dbname", default="novacron")
    parser.add_argument("--stop-file", help="run: stop when this file exists (required)")
    parser.add_argument("--max-seconds", type=float, default=600)
    parser.add_argument("--pause", type=float, default=0.005)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--latency-file", help="run: write the commit latency of every second to this file (JSON lines)")
    parser.add_argument("--lag-file", help="run: write the lag of blue's and green's logical slots to this file (JSON lines)")
    parser.add_argument("--lag-interval", type=float, default=1.0, help="run: seconds between two lag samples")
    parser.add_argument("--tables", default="tenants,users,compute_nodes,vms,vm_metrics,audit_log")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    args.through = args.through or ["127.0.0.61:6432"]
    if args.command == "run" and not args.stop_file:
        parser.error("run needs --stop-file")
    if args.command == "run":
        print(json.dumps(run(args)))
        return 0
    equal, report = verify(args)
    print(json.dumps(report))
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
