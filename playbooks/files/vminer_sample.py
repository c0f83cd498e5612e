# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A vMiner-like SQLite file (the SQLite source of the SQLite -> PostgreSQL path) and a workload
that writes to it, like playbooks/files/workload.py does for PostgreSQL.

  vminer_sample.py build --path FILE [--vms 100000] [--vcenters 1000] [--hosts-per-vcenter 10]
                         [--datastores-per-vcenter 5] [--force]
      writes a new file: vcenters, hosts, datastores and virtual_machines (every VM in a host and
      a datastore of its own vCenter, so every foreign key holds), in WAL mode; prints a JSON
      summary with the row counts and the seconds it took. Refuses to overwrite a file without
      --force. The rows are a function of their id (no randomness): two builds are identical.
  vminer_sample.py workload --path FILE --stop-file FILE [--rate 50] [--max-seconds 600]
      inserts, updates and deletes virtual_machines rows (and updates vcenters.last_sync_at, as
      vMiner's sync does) at about --rate writes per second (0: as fast as it can), each in a
      transaction of its own with a busy timeout, until the stop file appears; prints a JSON
      summary: acknowledged writes (committed) per operation, the slowest write and errors.

Text dates ('YYYY-MM-DD HH:MM:SS'), REAL sizes and NULLs (a powered-off VM has no IP address)
are there on purpose: they are what a type mapping from SQLite has to handle.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import threading
import time

SCHEMA = """
CREATE TABLE vcenters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    version TEXT NOT NULL,
    datacenter TEXT NOT NULL,
    last_sync_at TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE hosts (
    id INTEGER PRIMARY KEY,
    vcenter_id INTEGER NOT NULL REFERENCES vcenters (id),
    name TEXT NOT NULL,
    cpu_cores INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    esxi_version TEXT NOT NULL,
    connection_state TEXT NOT NULL
);
CREATE TABLE datastores (
    id INTEGER PRIMARY KEY,
    vcenter_id INTEGER NOT NULL REFERENCES vcenters (id),
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    capacity_gb REAL NOT NULL,
    free_gb REAL NOT NULL
);
CREATE TABLE virtual_machines (
    id INTEGER PRIMARY KEY,
    vcenter_id INTEGER NOT NULL REFERENCES vcenters (id),
    host_id INTEGER REFERENCES hosts (id),
    datastore_id INTEGER REFERENCES datastores (id),
    name TEXT NOT NULL,
    uuid TEXT NOT NULL,
    power_state TEXT NOT NULL,
    num_cpu INTEGER NOT NULL,
    memory_mb INTEGER NOT NULL,
    disk_gb REAL NOT NULL,
    guest_os TEXT,
    ip_address TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
# Created after the load: building an index once is faster than keeping it up row by row.
INDEXES = """
CREATE UNIQUE INDEX virtual_machines_uuid ON virtual_machines (uuid);
CREATE INDEX virtual_machines_vcenter_id ON virtual_machines (vcenter_id);
CREATE INDEX hosts_vcenter_id ON hosts (vcenter_id);
CREATE INDEX datastores_vcenter_id ON datastores (vcenter_id);
"""
TABLES = ("vcenters", "hosts", "datastores", "virtual_machines")
POWER_STATES = ("poweredOn", "poweredOn", "poweredOn", "poweredOff", "suspended")
GUESTS = ("ubuntu64Guest", "rhel9_64Guest", "windows2019srv_64Guest", "debian12_64Guest", None)
OPERATION_LETTERS = {"inserts": "I", "updates": "U", "deletes": "D", "syncs": "U"}
BATCH = 50000
EPOCH = 1_600_000_000  # 2020-09-13: created_at values count up from here


def stamp(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH + seconds))


def vm_row(vm_id: int, vcenters: int, hosts_per_vcenter: int, datastores_per_vcenter: int) -> tuple:
    """Row `vm_id` (1-based): its vCenter by round robin, a host and a datastore of that vCenter."""
    index = vm_id - 1
    vcenter = 1 + index % vcenters
    turn = index // vcenters
    host = (vcenter - 1) * hosts_per_vcenter + 1 + turn % hosts_per_vcenter
    datastore = (vcenter - 1) * datastores_per_vcenter + 1 + turn % datastores_per_vcenter
    power = POWER_STATES[vm_id % len(POWER_STATES)]
    ip = None if power != "poweredOn" else f"10.{vcenter >> 8 & 255}.{vcenter & 255}.{turn % 250 + 1}"
    created = stamp(vm_id * 7)
    return (
        vm_id,
        vcenter,
        host,
        datastore,
        f"vm-{vcenter:04d}-{turn:06d}",
        f"{vm_id:08x}-4{vcenter:03x}-8000-{vm_id * 2654435761 % (1 << 48):012x}",
        power,
        1 << (vm_id % 4),
        1024 * (1 << (vm_id % 5)),
        round(20 + (vm_id % 480) * 1.25, 2),
        GUESTS[vm_id % len(GUESTS)],
        ip,
        created,
        created,
    )


def build(
    path: str, vms: int, vcenters: int = 1000, hosts_per_vcenter: int = 10, datastores_per_vcenter: int = 5, force: bool = False
) -> dict:
    """Write the file at `path` (built beside it and renamed, so a half-built file never has its name)."""
    if vms < 0 or vcenters < 1 or hosts_per_vcenter < 1 or datastores_per_vcenter < 1:
        raise ValueError("give vms >= 0 and at least one vCenter, host and datastore per vCenter")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{path} exists: remove it or build with force")
    started = time.monotonic()
    building = f"{path}.building"
    for leftover in (building, f"{building}-journal"):
        if os.path.exists(leftover):
            os.remove(leftover)
    conn = sqlite3.connect(building, isolation_level=None)
    try:
        # A file nobody else has open yet: no journal and no fsync until the end is safe (a crash
        # leaves only the .building file, rebuilt next time).
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB
        conn.executescript(SCHEMA)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO vcenters VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    v,
                    f"vc{v:04d}.example.net",
                    f"https://vc{v:04d}.example.net/sdk",
                    f"8.0.{v % 3}",
                    f"dc-{(v - 1) // 50 + 1:02d}",
                    None,
                    stamp(v),
                )
                for v in range(1, vcenters + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO hosts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (h, (h - 1) // hosts_per_vcenter + 1, f"esx{h:06d}.example.net", 16 << (h % 3), 131072 << (h % 3), "8.0.2", "connected")
                for h in range(1, vcenters * hosts_per_vcenter + 1)
            ),
        )
        conn.executemany(
            "INSERT INTO datastores VALUES (?, ?, ?, ?, ?, ?)",
            (
                (
                    d,
                    (d - 1) // datastores_per_vcenter + 1,
                    f"ds-{d:06d}",
                    ("VMFS", "NFS", "vSAN")[d % 3],
                    4096.0 * (1 + d % 4),
                    1024.5 + d % 1000,
                )
                for d in range(1, vcenters * datastores_per_vcenter + 1)
            ),
        )
        conn.execute("COMMIT")
        for first in range(1, vms + 1, BATCH):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO virtual_machines VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (vm_row(i, vcenters, hosts_per_vcenter, datastores_per_vcenter) for i in range(first, min(first + BATCH, vms + 1))),
            )
            conn.execute("COMMIT")
        conn.executescript(INDEXES)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        counts = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES}  # noqa: S608 (fixed names)
    finally:
        conn.close()
    os.replace(building, path)
    return {"path": path, "rows": counts, "seconds": round(time.monotonic() - started, 2)}


class Workload:
    """Writes to the file in a thread of its own until stop(); `counts` are acknowledged writes
    (the COMMIT returned) per operation, `rows` the rows they changed, `errors` the failures
    (each with its message in `error_messages`, the first 20). With log=True, `log` lists every
    acknowledged write that changed a row, in commit order: (table, id, I|U|D)."""

    def __init__(self, path: str, rate: float = 50.0, busy_timeout: float = 5.0, seed: int = 1, log: bool = False):
        self.path = path
        self.log: list[tuple[str, int, str]] | None = [] if log else None
        self.rate = rate
        self.busy_timeout = busy_timeout
        self.rng = random.Random(seed)  # noqa: S311 (a repeatable workload, not a secret)
        self.counts = {"inserts": 0, "updates": 0, "deletes": 0, "syncs": 0}
        self.rows = {"virtual_machines": 0, "vcenters": 0}
        self.errors = 0
        self.max_latency_ms = 0.0
        self.error_messages: list[str] = []
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.seconds = 0.0

    @property
    def acknowledged(self) -> int:
        return sum(self.counts.values())

    def write(self, conn: sqlite3.Connection) -> None:
        """One write in a transaction of its own (autocommit)."""
        roll = self.rng.random()
        (max_id,) = conn.execute("SELECT coalesce(max(id), 0) FROM virtual_machines").fetchone()
        (vcenters,) = conn.execute("SELECT count(*) FROM vcenters").fetchone()
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        table = "virtual_machines"
        if roll < 0.3:
            row = list(vm_row(max_id + 1, max(vcenters, 1), 1, 1))
            row[2] = row[3] = None  # no host or datastore yet: a VM being deployed
            row[5] = f"w{row[5][1:]}-{self.rng.getrandbits(32):08x}"
            cursor = conn.execute("INSERT INTO virtual_machines VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row[1:])
            operation, key = "inserts", cursor.lastrowid
        elif roll < 0.9:
            found = conn.execute(
                "SELECT id FROM virtual_machines WHERE id >= ? ORDER BY id LIMIT 1", (self.rng.randint(1, max(max_id, 1)),)
            ).fetchone()
            if found is None:
                return
            key = found[0]
            if roll < 0.8:
                cursor = conn.execute(
                    "UPDATE virtual_machines SET power_state = ?, updated_at = ? WHERE id = ?", (self.rng.choice(POWER_STATES), now, key)
                )
                operation = "updates"
            else:
                cursor = conn.execute("DELETE FROM virtual_machines WHERE id = ?", (key,))
                operation = "deletes"
        else:
            key = self.rng.randint(1, max(vcenters, 1))
            cursor = conn.execute("UPDATE vcenters SET last_sync_at = ? WHERE id = ?", (now, key))
            operation, table = "syncs", "vcenters"
        self.counts[operation] += 1
        self.rows[table] += cursor.rowcount
        if self.log is not None and cursor.rowcount == 1:
            self.log.append((table, key, OPERATION_LETTERS[operation]))

    def run(self) -> None:
        started = time.monotonic()
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            done = 0
            while not self.stopping.is_set():
                begun = time.monotonic()
                try:
                    self.write(conn)
                    self.max_latency_ms = max(self.max_latency_ms, (time.monotonic() - begun) * 1000)
                except sqlite3.Error as exc:
                    self.errors += 1
                    if len(self.error_messages) < 20:
                        self.error_messages.append(str(exc))
                done += 1
                if self.rate > 0:
                    delay = started + done / self.rate - time.monotonic()
                    if delay > 0:
                        self.stopping.wait(delay)
        finally:
            conn.close()
            self.seconds = time.monotonic() - started

    def start(self) -> Workload:
        self.thread = threading.Thread(target=self.run, name="vminer-workload", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> dict:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
        return self.summary()

    def summary(self) -> dict:
        return {
            "acknowledged": self.acknowledged,
            **self.counts,
            "rows": dict(self.rows),
            "errors": self.errors,
            "max_latency_ms": round(self.max_latency_ms, 1),
            "error_messages": list(self.error_messages),
            "seconds": round(self.seconds, 2),
            "rate": round(self.acknowledged / self.seconds, 1) if self.seconds else 0.0,
        }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    built = commands.add_parser("build")
    built.add_argument("--path", required=True)
    built.add_argument("--vms", type=int, default=100000)
    built.add_argument("--vcenters", type=int, default=1000)
    built.add_argument("--hosts-per-vcenter", type=int, default=10)
    built.add_argument("--datastores-per-vcenter", type=int, default=5)
    built.add_argument("--force", action="store_true")
    load = commands.add_parser("workload")
    load.add_argument("--path", required=True)
    load.add_argument("--stop-file", required=True)
    load.add_argument("--rate", type=float, default=50.0)
    load.add_argument("--busy-timeout", type=float, default=5.0)
    load.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            summary = build(args.path, args.vms, args.vcenters, args.hosts_per_vcenter, args.datastores_per_vcenter, args.force)
        except (ValueError, FileExistsError) as exc:
            print(f"vminer_sample.py build: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(summary))
        return 0
    if not os.path.exists(args.path):
        print(f"vminer_sample.py workload: {args.path} does not exist: build it first", file=sys.stderr)
        return 2
    workload = Workload(args.path, args.rate, args.busy_timeout).start()
    deadline = time.monotonic() + args.max_seconds
    while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    summary = workload.stop()
    print(json.dumps(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
