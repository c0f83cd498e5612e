"""Benchmark: the SQLite -> PostgreSQL copy (table_copy) against pgloader, on the same vMiner-like file.

    .venv/bin/python bench/sqlite_copy/run.py [--rows 2000000] [--writer-rate 200] [--results bench/RESULTS.md]

Run it under the lab lock (2 CPUs, other sessions time things too):
    flock -o /tmp/zdm-lab.lock .venv/bin/python bench/sqlite_copy/run.py --results bench/RESULTS.md

In one run, on a PostgreSQL 15 of its own (initdb on a free loopback port, removed afterwards; the
lab's blue and green are not touched):
  1. the vMiner-like file of playbooks/files/vminer_sample.py with --rows rows over its four
     tables, built once and kept in --cache-dir (every run works on a copy of it);
  2. pgloader (Debian's package; installed with apt-get when missing) copies it into an empty
     database, with its defaults (it also builds the secondary indexes and foreign keys) - timed;
  3. sqlite_capture installs the capture, then table_copy copies the file into another empty
     database - timed - with nobody writing;
  4. again into a third database while vminer_sample.py's workload writes to the file at
     --writer-rate writes/s (inserts, updates, deletes): table_copy's bulk copy and its replay
     down to --replay-until changes are timed; then the writer stops and one more table_copy run
     replays what is left;
each database is then checked against the file with table_compare (equal, or the run fails);
  5. the cutover, on the third database: the lab's SQLite application (vminer_sample.py workload
     --config, which follows its configuration file) writes at --writer-rate, table_copy replays
     right before, sqlite_cutover moves it to PostgreSQL; its write window (freeze -> switch), the
     application's longest held write and longest gap between acknowledged writes, and the
     application's own check that every acknowledged write is there (verify: lost 0, or the run fails).
Every module runs as a one-task playbook (ansible-runner: run_module through_ansible), as users run them; its time is
the playbook's wall time (Ansible's start included), as pgloader's is its process's.
Prints rows, seconds, rows/s and the table_copy/pgloader throughput ratio. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / ".ansible" / "collections")]

from bench.results import append_section  # noqa: E402
from tests.lab import SqliteApplication, connect, run_module, throwaway_postgres, vminer_sample  # noqa: E402

# ansible-runner (run_module) needs the checkout's ansible.cfg and the venv's ansible-playbook
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

sample = vminer_sample()
SAMPLE_SCRIPT = ROOT / "playbooks" / "files" / "vminer_sample.py"
TABLES = list(sample.TABLES)
VCENTERS = 1000  # vminer_sample's default: 10 hosts and 5 datastores each, the rest are VMs
SMALL_TABLE_ROWS = VCENTERS * (1 + 10 + 5)
# A bigger WAL than the default 1 GB, for both tools alike, so neither is timed through forced checkpoints.
SERVER_SETTINGS = {"max_wal_size": "4GB"}
CACHE_DIR = Path(tempfile.gettempdir()) / "zdm-bench-sqlite-copy"  # the built file, shared by runs (and checkouts)
# A line of pgloader's summary: name, errors, rows, [bytes], total time ("0.560s", "1m2.345s")
PGLOADER_LINE = re.compile(r"^ *(?P<name>\S.*?) +\d+ +\d+ +(?:[\d.]+ [kMG]?B +)?(?:(?P<minutes>\d+)m)?(?P<seconds>[\d.]+)s *$", re.M)
DATABASES = {"pgloader": "zdm_bench_pgloader", "table_copy": "zdm_bench_table_copy", "writes": "zdm_bench_table_copy_writes"}


def cached_file(cache_dir: Path, rows: int) -> Path:
    """The vMiner-like file of `rows` rows in all, built on the first run and reused after."""
    vms = rows - SMALL_TABLE_ROWS
    if vms < 0:
        raise SystemExit(f"--rows must be at least {SMALL_TABLE_ROWS} (the vCenters, hosts and datastores)")
    path = cache_dir / f"vminer-{rows}.db"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"building {path} ({vms:,} VMs) ...", flush=True)
        print(json.dumps(sample.build(str(path), vms=vms, vcenters=VCENTERS)), flush=True)
    return path


def ensure_pgloader() -> str:
    if shutil.which("pgloader") is None:
        print("installing pgloader (apt-get) ...", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "pgloader"], check=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return subprocess.run(["pgloader", "--version"], check=True, capture_output=True, text=True).stdout.splitlines()[0]


def module(name: str, args: dict) -> tuple[float, dict]:
    """Seconds for one module run (a one-task playbook) and its result; fails loudly if it failed."""
    started = time.perf_counter()
    _run, result = run_module(f"zerodowntime.migration.{name}", args, through_ansible=True)
    elapsed = time.perf_counter() - started
    if result.get("failed"):
        raise SystemExit(f"{name} failed: {result.get('msg')}")
    return elapsed, result


def compare(path: Path, target: dict) -> dict:
    """table_compare of the file against `target`; only a difference makes it fail (fail_on_difference)."""
    seconds, result = module("table_compare", {"path": str(path), "tables": TABLES, **target, "fail_on_difference": False})
    print(f"  table_compare: {verdict(result)} in {seconds:.1f} s", flush=True)
    return result


def pgloader_phases(log: str) -> dict[str, float]:
    """Seconds per line of pgloader's summary table ("COPY Threads Completion", "Index Build Completion", ...)."""
    phases = {}
    for match in PGLOADER_LINE.finditer(log):
        phases[match["name"]] = int(match["minutes"] or 0) * 60 + float(match["seconds"])
    return phases


def pgloader(path: Path, target: dict, log: Path) -> tuple[float, dict[str, float]]:
    """Seconds for pgloader's whole run into `target` (its own defaults) and its summary's phases; its output goes to `log`."""
    env = dict(os.environ, PGPASSWORD=target["login_password"])  # kept out of the command line
    url = f"pgsql://{target['login_user']}@{target['login_host']}:{target['login_port']}/{target['login_db']}"
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(["pgloader", f"sqlite://{path}", url], env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"pgloader failed (rc {done.returncode}), see {log}:\n{log.read_text()[-3000:]}")
    return elapsed, pgloader_phases(log.read_text())


def create_database(admin: dict, name: str) -> dict:
    with connect(admin) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # one of DATABASES: fixed names
    return dict(admin, login_db=name)


def copy_while_writing(path: Path, target: dict, args: argparse.Namespace, workdir: Path) -> dict:
    """table_copy while vminer_sample.py's workload writes to the file; then the writer stops and one
    more run replays the rest. Returns the timings, both runs' results and the writer's summary."""
    stop = workdir / "writer.stop"
    writer = subprocess.Popen(
        [sys.executable, str(SAMPLE_SCRIPT), "workload", "--path", str(path), "--stop-file", str(stop), "--rate", str(args.writer_rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # the writer is under way before the copy's snapshot
        seconds, result = module(
            "table_copy", {"path": str(path), "tables": TABLES, **target, "batch_size": args.batch_size, "replay_until": args.replay_until}
        )
    finally:
        stop.touch()
        out, _err = writer.communicate(timeout=120)
    summary = json.loads(out.strip().splitlines()[-1])
    if summary["errors"]:
        raise SystemExit(f"the writer failed: {summary['error_messages']}")
    catch_up_seconds, catch_up = module("table_copy", {"path": str(path), "tables": TABLES, **target, "batch_size": args.batch_size})
    return {"seconds": seconds, "result": result, "catch_up_seconds": catch_up_seconds, "catch_up": catch_up, "writer": summary}


def cutover_while_writing(path: Path, target: dict, args: argparse.Namespace, workdir: Path) -> dict:
    """sqlite_cutover while the application (following its configuration file) writes; its own verify after."""
    config = workdir / "database.json"
    config.write_text(json.dumps({"engine": "sqlite", "path": str(path)}))
    endpoint = {"host": target["login_host"], "port": target["login_port"], "user": target["login_user"], "dbname": target["login_db"]}
    (workdir / "database.json.next").write_text(json.dumps({"engine": "postgresql", **endpoint}))
    app = SqliteApplication(config, workdir, rate=args.writer_rate, password=target["login_password"])
    try:
        time.sleep(2.0)
        module("table_copy", {"path": str(path), "tables": TABLES, **target, "replay_until": 100})
        seconds, result = module(
            "sqlite_cutover",
            {"path": str(path), "tables": TABLES, **target, "migration": "bench", "app_config": str(config), "window_timeout": 30},
        )
        time.sleep(2.0)  # the application writes on PostgreSQL now
    finally:
        summary = app.stop()
    verified = app.verify()
    if verified["lost"] or summary["errors"]:
        raise SystemExit(f"the cutover lost writes or failed some: {verified}, {summary.get('error_messages')}")
    return {"seconds": seconds, "result": result, "app": summary, "verified": verified}


def verdict(compared: dict) -> str:
    if compared["equal"]:
        return f"equal ({len(compared['tables'])} tables, {compared['rows_compared']:,} rows)"
    return f"DIFFERS: {', '.join(compared['differing_tables'])}"


def report(args, rows: int, version: str, server: str, timings: dict, compared: dict, writes: dict, cut: dict) -> str:
    pgl, ours, busy = timings["pgloader"], timings["table_copy"], writes["seconds"]
    writer = writes["writer"]
    phases = timings["pgloader_phases"]
    quiet = ours["result"]["rows_copied"] / ours["seconds"] / (rows / pgl)
    busy_ratio = writes["result"]["rows_copied"] / busy / (rows / pgl)
    goal = "met" if min(quiet, busy_ratio) >= 1 else "NOT met"
    copy_phase = phases.get("COPY Threads Completion") or pgl
    data_ratio = ours["result"]["rows_copied"] / ours["result"]["seconds"] / (rows / copy_phase)

    def line(way: str, copied: int, seconds: float, module_seconds: str, outcome: dict) -> str:
        ratio = copied / seconds / (rows / pgl)
        return f"| {way} | {copied:,} | {seconds:.1f} | {module_seconds} | {copied / seconds:,.0f} | {ratio:.2f} | {verdict(outcome)} |"

    lines = [
        f"vMiner-like SQLite file ({', '.join(TABLES)}): {rows:,} rows, "
        f"{Path(args.file).stat().st_size / 1e6:,.0f} MB; a PostgreSQL 15 of the bench's own ({server}); {version}.",
        "",
        "| way | rows | seconds | module's own seconds | rows/s | x pgloader | table_compare |",
        "|---|---:|---:|---:|---:|---:|---|",
        line("pgloader, defaults (application stopped)", rows, pgl, "-", compared["pgloader"]),
        line(
            f"table_copy, nobody writing (batch_size {args.batch_size})",
            ours["result"]["rows_copied"],
            ours["seconds"],
            f"{ours['result']['seconds']:.1f}",
            compared["table_copy"],
        ),
        line(
            f"table_copy while the application writes ({writer['rate']:.0f} writes/s)",
            writes["result"]["rows_copied"],
            busy,
            f"{writes['result']['seconds']:.1f}",
            compared["writes"],
        ),
        "",
        f"**Goal (at least pgloader's speed, while the application keeps writing): {goal}.** table_copy's throughput is "
        f"{quiet:.2f}x pgloader's with nobody writing and {busy_ratio:.2f}x while the application writes (rows/s of each whole "
        "run, process and Ansible start included).",
        "",
        f"- pgloader's own summary: data copied in {phases.get('COPY Threads Completion', 0):.1f} s (its COPY phase, 4 workers), "
        f"then indexes {phases.get('Index Build Completion', 0):.1f} s, primary keys {phases.get('Primary Keys', 0):.1f} s, "
        f"foreign keys {phases.get('Create Foreign Keys', 0):.1f} s. pgloader builds the file's 5 secondary indexes and 5 foreign "
        "keys too; table_copy creates each table with its primary key only (its table is filled with the key in place). "
        f"Against pgloader's COPY phase alone, table_copy's module time is {data_ratio:.2f}x its throughput.",
        "- table_compare (a Python digest of every row on both sides, chunk by chunk) took "
        + ", ".join(f"{compared[way]['duration_seconds']:.1f} s" for way in ("pgloader", "table_copy", "writes"))
        + " for the three databases.",
        f"- While writing: the writer acknowledged {writer['acknowledged']:,} writes ({writer['inserts']:,} inserts, "
        f"{writer['updates']:,} updates, {writer['deletes']:,} deletes, {writer['syncs']:,} vCenter syncs) in "
        f"{writer['seconds']:.1f} s, 0 errors, slowest write {writer['max_latency_ms']:.0f} ms. table_copy copied "
        f"{writes['result']['rows_copied']:,} rows of its snapshot and replayed {writes['result']['replayed_changes']:,} "
        f"changes down to a backlog of {writes['result']['backlog']} (replay_until {args.replay_until}); once the writer "
        f"stopped, one more run replayed {writes['catch_up']['replayed_changes']:,} changes in {writes['catch_up_seconds']:.1f} s "
        f"(backlog {writes['catch_up']['backlog']}). The tables were compared after that run.",
        f"- The cutover, while the application writes ({args.writer_rate:g} writes/s): sqlite_cutover's write window "
        f"(freeze -> switch) {cut['result']['write_window_ms']:.0f} ms ("
        + ", ".join(f"{step['step']} {step['ms']:.0f}" for step in cut["result"]["steps"])
        + f" ms; {cut['result']['replayed_changes']} changes replayed, {cut['result']['validated_keys']} keys validated); the "
        f"application's longest held write {cut['app']['max_hold_ms']:.0f} ms, longest gap between two acknowledged writes "
        f"{cut['app']['max_write_gap_ms']:.0f} ms; {cut['app']['acknowledged']:,} writes acknowledged ("
        + ", ".join(f"{count:,} on {engine}" for engine, count in cut["app"]["acknowledged_per_engine"].items())
        + f"), verified by the application afterwards: {cut['verified']['lost']} lost of {cut['verified']['checked']:,} checked.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows in the file over its four tables (default 2,000,000)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="where the built file is kept")
    parser.add_argument("--batch-size", type=int, default=10000, help="table_copy's batch_size (its default: 10000)")
    parser.add_argument("--writer-rate", type=float, default=200.0, help="writes/s of the application during the busy copy")
    parser.add_argument("--replay-until", type=int, default=1000, help="table_copy's replay_until while the writer runs")
    parser.add_argument("--results", type=Path, help="append a Markdown section to this file")
    args = parser.parse_args()
    # run under the lab lock, as the docstring says
    command = "flock -o /tmp/zdm-lab.lock .venv/bin/python bench/sqlite_copy/run.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])

    version = ensure_pgloader()
    cached = cached_file(args.cache_dir, args.rows)
    with (
        tempfile.TemporaryDirectory(prefix="zdm-bench-sqlite-copy-", dir=args.cache_dir) as tmp,
        throwaway_postgres("zdm-bench-sqlite-copy-pg-", **SERVER_SETTINGS) as admin,
    ):
        workdir = Path(tmp)
        path = workdir / "vminer.db"
        shutil.copyfile(cached, path)  # the writer and the capture change the file: the cached one stays as built
        args.file = path
        with connect(admin) as conn:
            server = conn.execute("SHOW server_version").fetchone()[0]
        targets = {way: create_database(admin, name) for way, name in DATABASES.items()}
        timings: dict = {}
        compared: dict = {}

        print("pgloader ...", flush=True)
        timings["pgloader"], timings["pgloader_phases"] = pgloader(path, targets["pgloader"], workdir / "pgloader.log")
        print(f"  {timings['pgloader']:.1f} s; comparing ...", flush=True)
        compared["pgloader"] = compare(path, targets["pgloader"])

        module("sqlite_capture", {"path": str(path), "tables": TABLES})
        print("table_copy, nobody writing ...", flush=True)
        copy_args = {"path": str(path), "tables": TABLES, **targets["table_copy"], "batch_size": args.batch_size}
        seconds, result = module("table_copy", copy_args)
        timings["table_copy"] = {"seconds": seconds, "result": result}
        print(f"  {seconds:.1f} s (module: {result['seconds']:.1f} s, {result['rows_copied']:,} rows); comparing ...", flush=True)
        compared["table_copy"] = compare(path, targets["table_copy"])

        print(f"table_copy while the application writes ({args.writer_rate:g} writes/s) ...", flush=True)
        writes = copy_while_writing(path, targets["writes"], args, workdir)
        print(f"  {writes['seconds']:.1f} s, catch-up {writes['catch_up_seconds']:.1f} s; comparing ...", flush=True)
        compared["writes"] = compare(path, targets["writes"])

        print("sqlite_cutover while the application writes ...", flush=True)
        cut = cutover_while_writing(path, targets["writes"], args, workdir)
        print(f"  write window {cut['result']['write_window_ms']:.0f} ms; lost {cut['verified']['lost']}", flush=True)

        rows = sum(table["rows_source"] for table in compared["table_copy"]["tables"])
        text = report(args, rows, version, server, timings, compared, writes, cut)
    print(text)
    if args.results:
        append_section(args.results, f"SQLite -> PostgreSQL copy: table_copy vs pgloader, {rows:,} rows", text, command, "2 CPUs")
    return 0 if all(result["equal"] for result in compared.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
