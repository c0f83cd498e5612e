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
  vminer_sample.py workload --config FILE --stop-file FILE [--hold-timeout 60] [--ack-log FILE] ...
      the same, as the application the SQLite cutover moves: FILE (JSON, playbooks/templates/
      sqlite_app_config.json.j2) names the database - {"engine": "sqlite", "path": ...} or
      {"engine": "postgresql", "host", "port", "user", "dbname", "schema", "password"?, "sslmode"?}.
      Before every write the file is checked (mtime, size, inode: the cutover renames a new one onto
      it) and the workload reconnects to what it names now. A write refused because the database is
      frozen (the SQLite read-only triggers' message, PostgreSQL's SQLSTATE 25006) is held - retried
      every 10 ms, the config checked again each time - up to --hold-timeout seconds, then an error.
      The summary adds the switches seen, the held writes, the longest hold and the longest gap
      between two acknowledged writes (the write window as the application sees it), and the
      acknowledged writes per engine. --ack-log (also with --path) appends every acknowledged write
      that changed a row as a JSON line {"table", "id", "op": I|U|D, "row": the values written
      (all columns for I, the set ones for U, null for D), "engine", "t"}.
  vminer_sample.py verify --ack-log FILE (--config FILE | --path FILE)
      whether every acknowledged write is in the database named: the last one of each row decides
      (D: no row; I, U: the row with the values written - text dates and timestamps compared as UTC
      instants to the second, REAL and double precision to 1e-9 relative); prints {"acknowledged",
      "checked", "lost", "lost_samples"} and exits 1 when a write was lost.

Text dates ('YYYY-MM-DD HH:MM:SS'), REAL sizes and NULLs (a powered-off VM has no IP address)
are there on purpose: they are what a type mapping from SQLite has to handle.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import decimal
import json
import math
import os
import random
import re
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
VM_COLUMNS = (
    "id",
    "vcenter_id",
    "host_id",
    "datastore_id",
    "name",
    "uuid",
    "power_state",
    "num_cpu",
    "memory_mb",
    "disk_gb",
    "guest_os",
    "ip_address",
    "created_at",
    "updated_at",
)
READONLY_TEXT = "read-only during the cutover"  # in the message of plugins/module_utils/sqlite/readonly.py's triggers
READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction: a PostgreSQL frozen for a switchover
HOLD_PAUSE = 0.01  # between two tries of a held write
ID_LOCK = 7_126_001  # pg_advisory_xact_lock key the workload's inserts take their max(id) + 1 under
STAMP = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}")
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


class ReadOnlyRefused(Exception):
    """A write the database refused because a cutover froze it: held and retried, not an error."""


def quote(name: str) -> str:
    """An SQLite identifier, quoted (verify takes table and column names from the acknowledgement log)."""
    return '"' + str(name).replace('"', '""') + '"'


def read_config(path: str) -> dict:
    """The application's config file: where its database is now."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    engine = config.get("engine") if isinstance(config, dict) else None
    if engine == "sqlite":
        if not config.get("path"):
            raise ValueError(f"{path}: an sqlite config needs a path")
    elif engine == "postgresql":
        missing = [key for key in ("host", "port", "user", "dbname") if config.get(key) in (None, "")]
        if missing:
            raise ValueError(f"{path}: a postgresql config needs {', '.join(missing)}")
    else:
        raise ValueError(f"{path}: engine must be sqlite or postgresql, not {engine!r}")
    return config


def describe(config: dict) -> str:
    """Where a config points, without its password (summaries and messages show it)."""
    if config["engine"] == "sqlite":
        return f"sqlite:{config['path']}"
    schema = config.get("schema") or "public"
    return f"postgresql://{config['user']}@{config['host']}:{config['port']}/{config['dbname']} schema {schema}"


class SqliteTarget:
    """The SQLite file: statements in autocommit, each a transaction of its own."""

    engine = "sqlite"

    def __init__(self, config: dict, busy_timeout: float = 5.0):
        self.conn = sqlite3.connect(config["path"], timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")

    def close(self) -> None:
        self.conn.close()

    def broken(self) -> bool:
        return False  # a file has no connection to lose

    def run(self, query: str, params: tuple = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(query, params)
        except sqlite3.IntegrityError as exc:
            if READONLY_TEXT in str(exc):
                raise ReadOnlyRefused(str(exc)) from exc
            raise

    def shape(self) -> tuple[int, int]:
        return self.run("SELECT (SELECT coalesce(max(id), 0) FROM virtual_machines), (SELECT count(*) FROM vcenters)").fetchone()

    def pick(self, at: int) -> int | None:
        found = self.run("SELECT id FROM virtual_machines WHERE id >= ? ORDER BY id LIMIT 1", (at,)).fetchone()
        return found[0] if found else None

    def insert_vm(self, row: dict) -> int:
        """Inserts with a NULL id: SQLite gives the rowid (max + 1, as vMiner's own inserts get)."""
        columns = [name for name in row if name != "id"]
        query = f"INSERT INTO virtual_machines ({', '.join(map(quote, columns))}) VALUES ({', '.join('?' * len(columns))})"  # noqa: S608 (quoted names)
        return self.run(query, tuple(row[name] for name in columns)).lastrowid

    def update(self, table: str, key: int, values: dict) -> int:
        assignments = ", ".join(f"{quote(name)} = ?" for name in values)
        return self.run(f"UPDATE {quote(table)} SET {assignments} WHERE id = ?", (*values.values(), key)).rowcount  # noqa: S608 (quoted names)

    def delete(self, table: str, key: int) -> int:
        return self.run(f"DELETE FROM {quote(table)} WHERE id = ?", (key,)).rowcount  # noqa: S608 (quoted name)

    def fetch(self, table: str, key: int, columns: list[str]) -> dict | None:
        names = ", ".join(map(quote, columns))
        found = self.conn.execute(f"SELECT {names} FROM {quote(table)} WHERE id = ?", (key,)).fetchone()  # noqa: S608 (quoted names)
        return dict(zip(columns, found, strict=True)) if found is not None else None


class PostgresTarget:
    """The PostgreSQL database the data moved to: psycopg 3 in autocommit, one transaction per write,
    no server-side prepared statements (PgBouncer in transaction mode may sit in front)."""

    engine = "postgresql"

    def __init__(self, config: dict, busy_timeout: float = 5.0):
        import psycopg  # only a PostgreSQL config needs it: the SQLite side runs without it
        from psycopg import errors, sql

        self.psycopg, self.errors, self.sql = psycopg, errors, sql
        self.schema = config.get("schema") or "public"
        settings = {
            key: config[key] for key in ("host", "port", "user", "dbname", "password", "sslmode") if config.get(key) not in (None, "")
        }
        self.conn = psycopg.connect(**settings, autocommit=True, prepare_threshold=None, connect_timeout=max(1, round(busy_timeout)))
        try:
            # the column types decide how a text date is sent: table_copy may have mapped it to a timestamp
            rows = self.conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = ANY(%s)",
                (self.schema, list(TABLES)),
            ).fetchall()
        except psycopg.Error:
            self.conn.close()
            raise
        self.types = {(table, column): kind for table, column, kind in rows}

    def close(self) -> None:
        self.conn.close()

    def broken(self) -> bool:
        return self.conn.closed or self.conn.broken

    def table(self, name: str):
        return self.sql.Identifier(self.schema, name)

    def run(self, query, params: tuple = ()):
        try:
            return self.conn.execute(query, params)
        except self.psycopg.Error as exc:
            if exc.sqlstate == READ_ONLY_SQLSTATE:
                raise ReadOnlyRefused(str(exc)) from exc
            raise

    def value(self, table: str, column: str, value):
        """A text date as the column takes it: an instant for timestamptz (the SQLite text is UTC),
        whatever the session's TimeZone; unchanged for a text column."""
        kind = self.types.get((table, column), "")
        if isinstance(value, str) and kind.startswith("timestamp") and STAMP.match(value):
            moment = datetime.datetime.fromisoformat(value)
            if kind == "timestamp with time zone" and moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017 (as the rest of the file)
            return moment
        return value

    def shape(self) -> tuple[int, int]:
        query = self.sql.SQL("SELECT (SELECT coalesce(max(id), 0) FROM {}), (SELECT count(*) FROM {})").format(
            self.table("virtual_machines"), self.table("vcenters")
        )
        return self.run(query).fetchone()

    def pick(self, at: int) -> int | None:
        query = self.sql.SQL("SELECT id FROM {} WHERE id >= %s ORDER BY id LIMIT 1").format(self.table("virtual_machines"))
        found = self.run(query, (at,)).fetchone()
        return found[0] if found else None

    def insert_vm(self, row: dict) -> int:
        """table_copy's keys are plain bigints (no sequence): max(id) + 1 taken in the insert's own
        transaction, under an advisory lock (a hash-partitioned key is (id, vcenter_id), which two
        writers' equal ids in different vCenters would not violate); a unique violation (a writer
        without the lock) takes the next id."""
        columns = [name for name in row if name != "id"]
        insert = self.sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            self.table("virtual_machines"),
            self.sql.SQL(", ").join(map(self.sql.Identifier, ["id", *columns])),
            self.sql.SQL(", ").join(self.sql.Placeholder() * (len(columns) + 1)),
        )
        highest = self.sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(self.table("virtual_machines"))
        for _attempt in range(50):
            try:
                with self.conn.transaction():
                    self.run("SELECT pg_advisory_xact_lock(%s)", (ID_LOCK,))
                    key = self.run(highest).fetchone()[0] + 1
                    self.run(insert, (key, *(self.value("virtual_machines", name, row[name]) for name in columns)))
                return key
            except self.errors.UniqueViolation:
                continue
        raise RuntimeError("no free id for a virtual_machines insert after 50 tries")

    def update(self, table: str, key: int, values: dict) -> int:
        query = self.sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
            self.table(table),
            self.sql.SQL(", ").join(self.sql.SQL("{} = %s").format(self.sql.Identifier(name)) for name in values),
        )
        return self.run(query, (*(self.value(table, name, value) for name, value in values.items()), key)).rowcount

    def delete(self, table: str, key: int) -> int:
        return self.run(self.sql.SQL("DELETE FROM {} WHERE id = %s").format(self.table(table)), (key,)).rowcount

    def fetch(self, table: str, key: int, columns: list[str]) -> dict | None:
        query = self.sql.SQL("SELECT {} FROM {} WHERE id = %s").format(
            self.sql.SQL(", ").join(map(self.sql.Identifier, columns)), self.table(table)
        )
        found = self.conn.execute(query, (key,)).fetchone()
        return dict(zip(columns, found, strict=True)) if found is not None else None


def open_target(config: dict, busy_timeout: float = 5.0):
    return (SqliteTarget if config["engine"] == "sqlite" else PostgresTarget)(config, busy_timeout)


def canonical(value):
    """A value in the form both engines' copies of it compare equal in: a text date and a timestamp
    as the UTC instant to the second (SQLite's text dates are UTC, without fractions), numbers as
    numbers; anything else as it is."""
    moment = None
    if isinstance(value, datetime.datetime):
        moment = value
    elif isinstance(value, str) and STAMP.match(value):
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            return value
    if moment is not None:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017
        return ("instant", moment.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat())  # noqa: UP017
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def same_value(written, found) -> bool:
    """Whether `found` (read back from either engine) is what was written: REAL vs double precision
    within 1e-9 relative, since a float need not survive a text round trip bit for bit."""
    written, found = canonical(written), canonical(found)
    numbers = (int, float)
    if isinstance(written, numbers) and isinstance(found, numbers) and not isinstance(written, bool) and not isinstance(found, bool):
        if isinstance(written, float) or isinstance(found, float):
            return math.isclose(written, found, rel_tol=1e-9)
        return written == found
    return written == found


def plain(value):
    """A value read back, as JSON shows it (a lost sample)."""
    return value.isoformat() if isinstance(value, (datetime.datetime, datetime.date)) else value


def verify(ack_log: str, config: dict, busy_timeout: float = 5.0) -> dict:
    """Whether every acknowledged write is still there: the last acknowledged write of each row
    decides - a delete leaves no row, an insert or an update leaves the row with its written columns."""
    last: dict[tuple[str, int], dict] = {}
    acknowledged = 0
    with open(ack_log, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                acknowledged += 1
                last[(record["table"], record["id"])] = record
    lost, samples = 0, []
    target = open_target(config, busy_timeout)
    try:
        for (table, key), record in last.items():
            written = record["row"] or {}
            columns = [name for name in written if name != "id"] or ["id"]
            found = target.fetch(table, key, columns)
            if record["op"] == "D":
                missing = found is not None
            else:
                missing = found is None or not all(same_value(written[name], found[name]) for name in columns if name in written)
            if missing:
                lost += 1
                if len(samples) < 10:
                    shown = None if found is None else {name: plain(value) for name, value in found.items()}
                    samples.append({"table": table, "id": key, "op": record["op"], "written": record["row"], "found": shown})
    finally:
        target.close()
    return {"acknowledged": acknowledged, "checked": len(last), "lost": lost, "lost_samples": samples, "target": describe(config)}


class Workload:
    """Writes in a thread of its own until stop(); `counts` are acknowledged writes (the COMMIT
    returned) per operation, `rows` the rows they changed, `errors` the failures (each with its
    message in `error_messages`, the first 20). With log=True, `log` lists every acknowledged write
    that changed a row, in commit order: (table, id, I|U|D); `ack_log` appends the same, with the
    values written, to a file as JSON lines (what `verify` checks).

    The database is the file at `path`, or the one the JSON file `config` names: checked before
    every attempt (a cutover renames a new config onto it), followed when it changes. A write the
    database refuses because a cutover froze it is held - retried every 10 ms - until it passes or
    `hold_timeout` seconds went by (then it is an error)."""

    def __init__(
        self,
        path: str | None = None,
        rate: float = 50.0,
        busy_timeout: float = 5.0,
        seed: int = 1,
        log: bool = False,
        config: str | None = None,
        hold_timeout: float = 60.0,
        ack_log: str | None = None,
    ):
        if (path is None) == (config is None):
            raise ValueError("give the database file (path) or the config file naming the database (config)")
        self.path = path
        self.config_path = config
        self.config: dict | None = {"engine": "sqlite", "path": path} if path is not None else None
        self.config_signature: tuple | None = None
        self.target = None
        self.log: list[tuple[str, int, str]] | None = [] if log else None
        self.ack_log_path = ack_log
        self.ack_file = None
        self.rate = rate
        self.busy_timeout = busy_timeout
        self.hold_timeout = hold_timeout
        self.rng = random.Random(seed)  # noqa: S311 (a repeatable workload, not a secret)
        self.counts = {"inserts": 0, "updates": 0, "deletes": 0, "syncs": 0}
        self.rows = {"virtual_machines": 0, "vcenters": 0}
        self.per_engine = {"sqlite": 0, "postgresql": 0}
        self.switches: list[dict] = []
        self.held = 0
        self.max_hold_ms = 0.0
        self.max_write_gap_ms = 0.0
        self.last_ack: float | None = None
        self.errors = 0
        self.max_latency_ms = 0.0
        self.error_messages: list[str] = []
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.seconds = 0.0

    @property
    def acknowledged(self) -> int:
        return sum(self.counts.values())

    @property
    def engine(self) -> str | None:
        return self.config["engine"] if self.config else None

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_messages) < 20:
            self.error_messages.append(text)

    def follow_config(self) -> None:
        """Reconnect when the config file was replaced or rewritten (its mtime, size or inode moved)
        and now names another database."""
        if self.config_path is None:
            return
        try:
            status = os.stat(self.config_path)
        except OSError:
            return  # os.replace never leaves the name missing; a removed file keeps the database the workload has
        signature = (status.st_mtime_ns, status.st_size, status.st_ino)
        if signature == self.config_signature:
            return
        self.config_signature = signature
        try:
            config = read_config(self.config_path)
        except (OSError, ValueError) as exc:
            self.error(f"config {self.config_path}: {exc}")  # the database it had stays; a rewrite is seen next time
            return
        if config == self.config:
            return
        if self.config is not None:
            self.switches.append({"t": round(time.time(), 3), "engine": config["engine"], "target": describe(config)})
        self.config = config
        self.disconnect()

    def disconnect(self) -> None:
        if self.target is not None:
            with contextlib.suppress(Exception):  # a connection already lost closes with an error: nothing to keep
                self.target.close()
            self.target = None

    def draw(self) -> tuple:
        """What one write does, drawn once: its retries after a hold repeat the same write."""
        return self.rng.random(), self.rng.random(), self.rng.getrandbits(32), self.rng.choice(POWER_STATES)

    def attempt(self, draw: tuple) -> tuple | None:
        """One try of the drawn write, in a transaction of its own: (operation, table, id, written
        values or None, rows changed), None when there was nothing to write."""
        if self.target is None:
            self.target = open_target(self.config, self.busy_timeout)
        target = self.target
        roll, spot, bits, power = draw
        max_id, vcenters = target.shape()
        now = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        if roll < 0.3:
            row = dict(zip(VM_COLUMNS, vm_row(max_id + 1, max(vcenters, 1), 1, 1), strict=True))
            row["host_id"] = row["datastore_id"] = None  # no host or datastore yet: a VM being deployed
            row["uuid"] = f"w{row['uuid'][1:]}-{bits:08x}"
            row["id"] = target.insert_vm(row)
            return "inserts", "virtual_machines", row["id"], row, 1
        if roll < 0.9:
            key = target.pick(1 + int(spot * max(max_id, 1)))
            if key is None:
                return None
            if roll < 0.8:
                values = {"power_state": power, "updated_at": now}
                return "updates", "virtual_machines", key, values, target.update("virtual_machines", key, values)
            return "deletes", "virtual_machines", key, None, target.delete("virtual_machines", key)
        key = 1 + int(spot * max(vcenters, 1))
        values = {"last_sync_at": now}
        return "syncs", "vcenters", key, values, target.update("vcenters", key, values)

    def write(self) -> None:
        """One write, held while the database is frozen."""
        draw = self.draw()
        held_since = None
        while True:
            self.follow_config()
            begun = time.monotonic()
            try:
                result = self.attempt(draw)
                break
            except ReadOnlyRefused as exc:
                now = time.monotonic()
                if held_since is None:
                    held_since = now
                    self.held += 1
                if now - held_since >= self.hold_timeout:
                    self.error(f"held longer than {self.hold_timeout:g} s: {exc}")
                    return
                if self.stopping.wait(HOLD_PAUSE):
                    return  # stopped while held: never acknowledged, so nothing to account for
            except Exception as exc:  # any failed write is counted and the workload goes on
                self.error(f"{self.engine}: {exc}")
                if self.target is not None and self.target.broken():
                    self.disconnect()  # the next write connects again
                return
        acknowledged = time.monotonic()
        self.max_latency_ms = max(self.max_latency_ms, (acknowledged - begun) * 1000)
        if held_since is not None:
            self.max_hold_ms = max(self.max_hold_ms, (acknowledged - held_since) * 1000)
        if result is None:
            return
        operation, table, key, values, changed = result
        if self.last_ack is not None:
            self.max_write_gap_ms = max(self.max_write_gap_ms, (acknowledged - self.last_ack) * 1000)
        self.last_ack = acknowledged
        self.counts[operation] += 1
        self.per_engine[self.engine] += 1
        self.rows[table] += changed
        if changed == 1:
            if self.log is not None:
                self.log.append((table, key, OPERATION_LETTERS[operation]))
            if self.ack_file is not None:
                record = {"table": table, "id": key, "op": OPERATION_LETTERS[operation], "row": values, "engine": self.engine}
                self.ack_file.write(json.dumps(dict(record, t=round(time.time(), 6))) + "\n")
                self.ack_file.flush()  # a check after a crash still sees every acknowledged write

    def run(self) -> None:
        started = time.monotonic()
        try:
            if self.ack_log_path is not None:
                self.ack_file = open(self.ack_log_path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)
            done = 0
            while not self.stopping.is_set():
                self.write()
                done += 1
                if self.rate > 0:
                    delay = started + done / self.rate - time.monotonic()
                    if delay > 0:
                        self.stopping.wait(delay)
        finally:
            self.disconnect()
            if self.ack_file is not None:
                self.ack_file.close()
            self.seconds = time.monotonic() - started

    def start(self) -> Workload:
        self.follow_config()
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
            "engine": self.engine,
            "acknowledged_per_engine": dict(self.per_engine),
            "switches": list(self.switches),
            "held": self.held,
            "max_hold_ms": round(self.max_hold_ms, 1),
            "max_write_gap_ms": round(self.max_write_gap_ms, 1),
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
    where = load.add_mutually_exclusive_group(required=True)
    where.add_argument("--path")
    where.add_argument("--config")
    load.add_argument("--stop-file", required=True)
    load.add_argument("--rate", type=float, default=50.0)
    load.add_argument("--busy-timeout", type=float, default=5.0)
    load.add_argument("--max-seconds", type=float, default=600.0)
    load.add_argument("--hold-timeout", type=float, default=60.0)
    load.add_argument("--ack-log")
    check = commands.add_parser("verify")
    check.add_argument("--ack-log", required=True)
    where = check.add_mutually_exclusive_group(required=True)
    where.add_argument("--path")
    where.add_argument("--config")
    check.add_argument("--busy-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            summary = build(args.path, args.vms, args.vcenters, args.hosts_per_vcenter, args.datastores_per_vcenter, args.force)
        except (ValueError, FileExistsError) as exc:
            print(f"vminer_sample.py build: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(summary))
        return 0
    try:
        config = read_config(args.config) if args.config else {"engine": "sqlite", "path": args.path}
    except (OSError, ValueError) as exc:
        print(f"vminer_sample.py {args.command}: {exc}", file=sys.stderr)
        return 2
    if config["engine"] == "sqlite" and not os.path.exists(config["path"]):
        print(f"vminer_sample.py {args.command}: {config['path']} does not exist: build it first", file=sys.stderr)
        return 2
    if args.command == "verify":
        summary = verify(args.ack_log, config, args.busy_timeout)
        print(json.dumps(summary, default=str))
        return 1 if summary["lost"] else 0
    workload = Workload(args.path, args.rate, args.busy_timeout, config=args.config, hold_timeout=args.hold_timeout, ack_log=args.ack_log)
    workload.start()
    deadline = time.monotonic() + args.max_seconds
    while not os.path.exists(args.stop_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    summary = workload.stop()
    print(json.dumps(summary))
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
