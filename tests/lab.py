"""The lab as the tests see it: endpoints, and running playbooks through ansible-runner with the
checkout's ansible.cfg (assertions look at events, not stdout text), and modules (the collection's
on this machine directly, see run_collection_module)."""

from __future__ import annotations

import base64
import contextlib
import datetime
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import ansible_runner
import psycopg
import pytest
import redis
import yaml
from ansible.release import __version__ as ANSIBLE_VERSION
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.failpoint import HOLD_VARIABLE, MARK_VARIABLE

ROOT = Path(__file__).resolve().parent.parent
LAB_PASSWORD = "zerodowntime-lab"  # inventories/lab/group_vars/all.yml
# Blue, green and green's replica each on its own host and address, all on port 5432 (inventories/lab
# hosts.yml: db-blue, db-green, db-green-r1): tests tell them apart by address (or system
# identifier), never by port.
PG_PORT = 5432
BLUE_ADDRESS, GREEN_ADDRESS, GREEN_R1_ADDRESS = "127.0.0.11", "127.0.0.12", "127.0.0.13"
BLUE = {"login_host": BLUE_ADDRESS, "login_port": PG_PORT, "login_user": "migrator", "login_password": LAB_PASSWORD, "login_db": "novacron"}
GREEN = dict(BLUE, login_host=GREEN_ADDRESS)
# A PostgreSQL of the suite's own (not an inventory host), shaped like GREEN, for the module tests
# that need a server but none of the lab's: they run in the side lane while main switches blue and
# green over, freezes and restarts them. conftest's session fixture `scratch_postgres` starts it.
SCRATCH_PG_ADDRESS = "127.0.0.90"
SCRATCH_PG = dict(GREEN, login_host=SCRATCH_PG_ADDRESS)
PG_SERVERS = {BLUE_ADDRESS: "blue", GREEN_ADDRESS: "green", GREEN_R1_ADDRESS: "green_r1"}
# MariaDB, the SQLite path's target, on a host of its own (inventories/lab hosts.yml: db-mariadb)
MARIADB_ADDRESS, MARIADB_PORT = "127.0.0.14", 3306
# the address of the server a session reached (through PgBouncer or HAProxy: the server behind them)
SERVER_ADDRESS = "SELECT host(inet_server_addr())"


# Redis blue and green, each on its own host and address, both on port 6379 (TLS 6479) (inventories/lab
# hosts.yml: cache-blue, cache-green): tests tell them apart by address, never by port.
REDIS_PORT, REDIS_TLS_PORT = 6379, 6479
REDIS_BLUE_ADDRESS, REDIS_GREEN_ADDRESS = "127.0.0.21", "127.0.0.22"


# Prometheus, Alertmanager and the exporters on a host of their own (inventories/lab hosts.yml:
# monitor-1), each daemon on its standard port of that one address
MONITOR_ADDRESS = "127.0.0.41"
PROMETHEUS_URL = f"http://{MONITOR_ADDRESS}:9090"
ALERTMANAGER_URL = f"http://{MONITOR_ADDRESS}:9093"


# RabbitMQ's three nodes, each on a host of its own (inventories/lab hosts.yml: mq-1..3) reached over
# SSH, every listener on its host's address: AMQP :5672, AMQPS :5671, management :15672, Prometheus
# :15692, the Erlang distribution :25672. Node names are long names with the address; mq-1 is
# Debian's node (the cluster's first), mq-2 and mq-3 instances (init scripts of their own).
RABBITMQ_HOSTS = {"mq-1": "127.0.0.51", "mq-2": "127.0.0.52", "mq-3": "127.0.0.53"}
# node name -> address; the alive parts are Debian's node's and the instances' (rabbit2, rabbit3)
RABBITMQ_NODES = {
    f"{alive}@{address}": address for alive, address in zip(("rabbit", "rabbit2", "rabbit3"), RABBITMQ_HOSTS.values(), strict=True)
}
RABBITMQ_FIRST_NODE, RABBITMQ_ADDRESS = next(iter(RABBITMQ_NODES.items()))
RABBITMQ_API = f"http://{RABBITMQ_ADDRESS}:15672"

# lab-db's own address: the sample app (:18081, :18082) and the tests' throwaway PgBouncers listen there
LAB_DB_ADDRESS = "127.0.0.1"

# The application's PgBouncers, each on a host of its own reached over SSH, both on :6432
# (inventories/lab: pgbouncer_servers, migration_pgbouncers); pool-2 is instance pgbouncer2.
POOLER_HOSTS = {"pool-1": "127.0.0.61", "pool-2": "127.0.0.62"}
POOLER_PORT = 6432
POOL_1, POOL_2 = POOLER_HOSTS.values()

# HAProxy on a host of its own (inventories/lab hosts.yml: lb-1) reached over SSH: its frontends listen
# on its address (writes, reads, HTTP, Redis, statistics); its admin socket is on this machine.
HAPROXY_HOST, HAPROXY_ADDRESS = "lb-1", "127.0.0.31"
HAPROXY_WRITES, HAPROXY_READS, HAPROXY_HTTP, HAPROXY_REDIS, HAPROXY_STATS = 5000, 5001, 8080, 6389, 8404
HAPROXY_SOCKET = "/run/haproxy/admin.sock"
HAPROXY_RUNTIME_API = f"{HAPROXY_ADDRESS}:9999"  # the same API over TCP (haproxy_runtime_api_address)


def on_lab_db(port: int, **overrides) -> dict:
    """BLUE's login through a service of lab-db on `port` (a test's own PgBouncer)."""
    return dict(BLUE, login_host=LAB_DB_ADDRESS, login_port=port, **overrides)


def through_pooler(address: str = POOL_1, **overrides) -> dict:
    """BLUE's login through the lab PgBouncer at `address` (POOLER_HOSTS)."""
    return dict(BLUE, login_host=address, login_port=POOLER_PORT, **overrides)


def through_haproxy(port: int, **overrides) -> dict:
    """BLUE's login through an HAProxy frontend of lb-1 on `port` (HAPROXY_WRITES, HAPROXY_READS)."""
    return dict(BLUE, login_host=HAPROXY_ADDRESS, login_port=port, **overrides)


def where(endpoint: dict) -> str:
    """HOST:PORT of a BLUE/GREEN-shaped endpoint, as the modules name it in messages."""
    return f"{endpoint['login_host']}:{endpoint['login_port']}"


def server_reached(conn: psycopg.Connection) -> str:
    """Which lab server ("blue", "green", "green_r1") a session reached, by the server's address."""
    address = conn.execute(SERVER_ADDRESS).fetchone()[0]
    return PG_SERVERS.get(address, address)


SAMPLE_APP = ROOT / "playbooks" / "files" / "vminer_sample.py"


def provision_play(what: str, role: str, settings: Path, host: str = "lab-db") -> list[dict]:
    """One role converged on a lab host (lab-db, this machine, unless told) with an inventory's settings file."""
    return [
        {
            "name": f"Provision {what}",
            "hosts": host,
            "become": True,
            "vars_files": [str(settings)],
            "roles": [{"role": f"zerodowntime.migration.{role}"}],
        }
    ]


# monitoring on its host monitor-1 (over SSH), as site.yml's play converges it
MONITORING_HOST = "monitor-1"
MONITORING_PLAY = provision_play(
    "monitoring", "monitoring", ROOT / "inventories" / "lab" / "group_vars" / "monitoring_servers.yml", host=MONITORING_HOST
)


# roles/lab_ssh on this machine: sshd on every address of inventories/lab's hosts reached over SSH
# (the PostgreSQL servers, the etcd members; inventories/lab-ssh's hosts are the etcd members'
# addresses), the lab's key pair and known_hosts. It targets lab-db (local) with the lab's settings
# file, so it never drops an address the lab's hosts need.
LAB_SSH_INVENTORY = str(ROOT / "inventories" / "lab-ssh")
LAB_SSH_PLAY = provision_play("the lab's SSH", "lab_ssh", ROOT / "inventories" / "lab" / "group_vars" / "lab_ssh_servers.yml")

# phase1_infra.yml from cluster.yml's first task: its site.yml plays (every service's converge) left out
# (tests/integration/conftest.py's phase1 fixture says why)
PHASE1_FROM_CLUSTER = "--start-at-task 'zerodowntime.migration.cluster_node : Check the platform'"


# The two haproxy_shift tasks of roles/haproxy tasks_from shift_gated (playbooks/shift_reads.yml, shift_app.yml).
SHIFT_BACK = "Move traffic back toward the old side through the steps, watching the old side's gates (the new side may be down)"
SHIFT_FORWARD = "Move traffic toward the new side through the steps, watching the new side's gates"


class PlaybookRun:
    """One ansible-runner run: its status, per-host stats and task results."""

    def __init__(self, runner):
        self.status = runner.status
        self.rc = runner.rc
        self.stats = runner.stats or {}
        self.events = list(runner.events)
        self.stdout = runner.stdout.read()

    def changed(self, host: str | None = None) -> int:
        """Changed results on `host`, or on every host of the run (a play on SSH hosts counts too)."""
        by_host = self.changes_by_host()
        return by_host.get(host, 0) if host is not None else sum(by_host.values())

    def changes_by_host(self) -> dict[str, int]:
        """The hosts with a change and their numbers of changed results (from the run's stats: a no_log
        task's result does not say it changed)."""
        return {host: count for host, count in self.stats.get("changed", {}).items() if count}

    def task_results(self, task_name: str) -> list[dict]:
        """event_data.res of every result of the task with this name; `failed` is set from the
        event type (ansible-core 2.19 leaves it out of res)."""
        return [
            dict(event["event_data"]["res"], failed=event["event"] == "runner_on_failed")
            for event in self.events
            if event.get("event") in ("runner_on_ok", "runner_on_failed") and event.get("event_data", {}).get("task") == task_name
        ]

    def changed_tasks(self) -> list[str]:
        return [change["task"] for change in self.changes()]

    def changes(self) -> list[dict]:
        """Each changed result with what it says changed: an idempotence assertion's message."""
        return [
            {
                "host": e["event_data"].get("host"),
                "play": e["event_data"].get("play"),
                "task": e["event_data"]["task"],
                **{key: e["event_data"]["res"][key] for key in ("diff", "msg", "state", "queries") if key in e["event_data"]["res"]},
            }
            for e in self.events
            if e.get("event") == "runner_on_ok" and e["event_data"]["res"].get("changed")
        ]


def run_playbook(
    playbook, extravars: dict | None = None, inventory: str | None = None, cmdline: str | None = None, answers: dict | None = None
) -> PlaybookRun:
    """Run a playbook (a path under playbooks/, or a list of plays) with the checkout's ansible.cfg.

    ansible-runner gives the playbook a terminal: `answers` maps a prompt (a regular expression)
    to what is typed at it. A run that prints nothing for 10 minutes is stopped (a prompt nobody
    answers must not hang the suite)."""
    private_dir = tempfile.mkdtemp(prefix="zdm-runner-")
    try:
        runner = ansible_runner.run(
            private_data_dir=private_dir,
            playbook=str(ROOT / "playbooks" / playbook) if isinstance(playbook, str) else playbook,
            inventory=inventory or str(ROOT / "inventories" / "lab"),
            extravars=extravars or {},
            cmdline=cmdline,
            envvars={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
            quiet=True,
            passwords=answers or {},
            settings={"suppress_env_files": True, "idle_timeout": 600},
        )
        return PlaybookRun(runner)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)


def converged_again(fixture_run: PlaybookRun | None, playbook, **kwargs) -> PlaybookRun:
    """The run a "second converge changes nothing" test asserts on. When the fixture's converge of the
    same play changed nothing, the hosts had been converged already (the lab's converge ran before;
    run_integration.sh runs it first), so that run was the second converge, and a third would prove
    no more; otherwise (or when the fixture converged nothing: None) the play runs again now. A task
    that changes on every run still fails the test: the fixture's run then changed, so the play runs
    again and changes again."""
    if fixture_run is not None and fixture_run.status == "successful" and fixture_run.changed() == 0:
        return fixture_run
    return run_playbook(playbook, **kwargs)


def run_playbook_ok(playbook: str, **kwargs) -> PlaybookRun:
    """run_playbook(), failing the test (with the playbook's output) unless the run succeeded."""
    run = run_playbook(playbook, **kwargs)
    assert run.status == "successful", run.stdout
    return run


COLLECTION = "zerodowntime.migration."


class ModuleRun:
    """One run of a collection module on this machine by run_module's direct path: its output, with
    the names of PlaybookRun's that callers read of a module's run."""

    def __init__(self, done: subprocess.CompletedProcess):
        self.rc = done.returncode
        self.stdout = done.stdout + done.stderr
        # as a play whose task has ignore_errors: the module's failure is in its result, not the run's
        self.status = "successful"


def run_collection_module(module: str, args: dict, check: bool = False, diff: bool = False) -> tuple[ModuleRun, dict]:
    """Run one of the collection's modules on this machine as Ansible runs it on lab-db (a local
    connection, the controller's Python): the module's own process, its arguments on stdin with the
    internal ones Ansible passes (check mode, diff, the module's name, a temporary directory), its
    result the JSON it prints. ansible-playbook's part (its start, the play, packing the module) is
    about 1 s of CPU a run, most of a module test's time; test_collection runs every module through
    ansible-playbook from the installed collection as far as its argument check, so the packing is
    tested there."""
    name = module.removeprefix(COLLECTION)
    with tempfile.TemporaryDirectory(prefix="zdm-module-") as tmpdir:
        internal = {"_ansible_check_mode": check, "_ansible_diff": diff, "_ansible_module_name": module}
        internal |= {"_ansible_remote_tmp": tmpdir, "_ansible_tmpdir": tmpdir, "_ansible_version": ANSIBLE_VERSION}
        done = subprocess.run(
            [sys.executable, "-m", f"ansible_collections.zerodowntime.migration.plugins.modules.{name}"],
            input=json.dumps({"ANSIBLE_MODULE_ARGS": {**args, **internal}}),
            capture_output=True,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT / ".ansible" / "collections")),
            cwd=tmpdir,
            timeout=900,
            check=False,
        )
    run = ModuleRun(done)
    try:
        result = json.loads(done.stdout)
    except ValueError:  # a module that printed no JSON (a crash): a failure that shows its output
        result = {
            "failed": True,
            "msg": "MODULE FAILURE",
            "module_stdout": done.stdout,
            "module_stderr": done.stderr,
            "rc": done.returncode,
        }
    result["failed"] = bool(result.get("failed"))
    result.setdefault("changed", False)
    # warnings as the playbook's results give them: their messages (the module prints them as summaries)
    result["warnings"] = [warning["event"]["msg"] if isinstance(warning, dict) else warning for warning in result.get("warnings", [])]
    if not result["warnings"]:
        del result["warnings"]
    return run, result


def run_module(
    module: str,
    args: dict,
    check: bool = False,
    diff: bool = False,
    host: str = "lab-db",
    inventory: str | None = None,
    through_ansible: bool = False,
) -> tuple[PlaybookRun | ModuleRun, dict]:
    """Run one module on a lab host (lab-db of inventories/lab unless told); returns the run and
    the module's result. The collection's modules on this machine (lab-db, localhost: a local
    connection) run directly (run_collection_module), unless `through_ansible` (a test of what
    Ansible's events show); every other through ansible-playbook."""
    if module.startswith(COLLECTION) and host in ("lab-db", "localhost") and inventory is None and not through_ansible:
        return run_collection_module(module, args, check=check, diff=diff)
    play = [
        {
            "name": "module under test",
            "hosts": host,
            "gather_facts": False,
            "tasks": [{"name": "under test", module: args, "ignore_errors": True}],
        }
    ]
    flags = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    run = run_playbook(play, cmdline=flags or None, inventory=inventory)
    results = run.task_results("under test")
    assert len(results) == 1, run.stdout
    return run, results[0]


def run_modules(module: str, arguments: list[dict], host: str = "lab-db", inventory: str | None = None) -> tuple[PlaybookRun, list[dict]]:
    """Run one module several times in a row on a lab host, one task per entry of `arguments`, in
    one ansible-playbook (each task is a run of the module of its own; the playbook starts once).
    Returns the run and the module's results, in order."""
    play = [
        {
            "name": "module under test",
            "hosts": host,
            "gather_facts": False,
            "tasks": [{"name": f"under test {number}", module: args, "ignore_errors": True} for number, args in enumerate(arguments)],
        }
    ]
    run = run_playbook(play, inventory=inventory)
    results = [run.task_results(f"under test {number}") for number in range(len(arguments))]
    assert all(len(result) == 1 for result in results), run.stdout
    return run, [result for [result] in results]


def vminer_sample():
    """playbooks/files/vminer_sample.py (the vMiner-like SQLite file and its workload) imported as a module."""
    spec = importlib.util.spec_from_file_location("vminer_sample", ROOT / "playbooks" / "files" / "vminer_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SqliteApplication:
    """The lab's SQLite application (playbooks/files/vminer_sample.py workload --config) writing in a
    process of its own: it follows its configuration file through a cutover and logs every write it
    was told committed (`acks`); `stop()` returns its summary, `verify()` its own check that every
    acknowledged write is in the database the configuration names now."""

    def __init__(self, config: Path, workdir: Path, rate: float = 100, password: str | None = None):
        self.config = config
        self.acks = workdir / "acks.jsonl"
        self.stop_file = workdir / "app.stop"
        # a password stays out of the configuration file and off the command line
        self.env = dict(os.environ, **({"PGPASSWORD": password} if password else {}))
        command = [sys.executable, str(SAMPLE_APP), "workload", "--config", str(config), "--stop-file", str(self.stop_file)]
        command += ["--rate", str(rate), "--ack-log", str(self.acks)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=self.env)

    def stop(self) -> dict:
        self.stop_file.touch()
        out, _err = self.process.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])

    def verify(self) -> dict:
        command = [sys.executable, str(SAMPLE_APP), "verify", "--ack-log", str(self.acks), "--config", str(self.config)]
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=120, check=False)
        return json.loads(done.stdout.strip().splitlines()[-1])


def start_held_module(
    module: str,
    arguments: dict,
    hold: str,
    workdir: Path,
    json_output: bool = False,
    host: str = "lab-db",
    inventory: str | None = None,
    mark: Path | None = None,
) -> subprocess.Popen:
    """ansible-playbook running one cutover module on a lab host (lab-db of inventories/lab unless
    told) in a process group of its own, its test failpoint holding the run after `hold`
    ("step:seconds") so a test can signal it; the failpoint creates `mark` (a path on this machine)
    as the hold begins. With `json_output`, the module's result is the json callback's output on stdout."""
    environment = {HOLD_VARIABLE: hold, **({MARK_VARIABLE: str(mark)} if mark else {})}
    play = [
        {
            "name": "module under test",
            "hosts": host,
            "gather_facts": False,
            "tasks": [{"name": "under test", module: arguments, "environment": environment}],
        }
    ]
    playbook = workdir / "held.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    if json_output:
        env["ANSIBLE_STDOUT_CALLBACK"] = "json"
    command = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", inventory or str(ROOT / "inventories/lab"), str(playbook)]
    output = subprocess.PIPE if json_output else subprocess.DEVNULL
    return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)


def module_pid(playbook_pid: int) -> int:
    """The process running the module: the python descendant of ansible-playbook whose environment
    has the failpoint (pipelining sends the module on stdin, so its command line does not name it)."""
    rows = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout.splitlines()
    children: dict[int, list[int]] = {}
    for row in rows:
        pid, ppid = (int(field) for field in row.split())
        children.setdefault(ppid, []).append(pid)
    pending, found = [playbook_pid], []
    while pending:
        for pid in children.get(pending.pop(), []):
            pending.append(pid)
            with contextlib.suppress(OSError):
                proc = Path(f"/proc/{pid}")
                python = proc.joinpath("comm").read_text().startswith("python")
                if python and b"ZERODOWNTIME_SWITCHOVER_HOLD=" in proc.joinpath("environ").read_bytes():
                    found.append(pid)
    assert len(found) == 1, f"module processes under {playbook_pid}: {found}"
    return found[0]


def kill_tree(pid: int, spare: int | None = None, sig: int = signal.SIGKILL) -> None:
    """SIGKILL (or `sig`) ansible-playbook's process group and every process descended from it: its
    workers run modules in sessions of their own (os.setsid), which the group's kill misses.
    `spare` (pg_switchover's guardian) lives on the PgBouncer host in production, not the controller's."""
    children: dict[int, list[int]] = {}
    for line in subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout.splitlines():
        child, parent = (int(field) for field in line.split())
        children.setdefault(parent, []).append(child)
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        if current == spare:
            continue
        tree.append(current)
        pending.extend(children.get(current, []))
    os.killpg(pid, sig)
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)


def ssh_session_of(pid: int) -> list[int]:
    """The server side of the SSH connection a process runs under: its `sshd: USER@notty`
    ancestor (and a privileged `sshd: USER [priv]` one where sshd keeps one per connection),
    never the listener."""
    session, start = [], pid
    while pid > 1:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        if "[listener]" in command:
            break
        if command.startswith("sshd: "):
            session.append(pid)
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert session and "[listener]" in command, f"process {start} does not run under an SSH connection"
    return session


def connect(endpoint: dict, **overrides) -> psycopg.Connection:
    params = dict(endpoint, **overrides)
    return psycopg.connect(
        host=params["login_host"],
        port=params["login_port"],
        user=params["login_user"],
        password=params["login_password"],
        dbname=params["login_db"],
        connect_timeout=params.get("connect_timeout"),
        autocommit=True,
    )


def hash_partitioned_virtual_machines(target: dict, partitions: int) -> None:
    """The vMiner sample's virtual_machines as pg_partition leaves it on a target, before a copy fills
    it: hash-partitioned by vcenter_id into `partitions`, key (id, vcenter_id)."""
    with connect(target) as conn:
        conn.execute(
            "CREATE TABLE virtual_machines (id bigint NOT NULL, vcenter_id bigint NOT NULL, host_id bigint, datastore_id bigint, "
            "name text NOT NULL, uuid text NOT NULL, power_state text NOT NULL, num_cpu integer NOT NULL, memory_mb integer NOT NULL, "
            "disk_gb double precision NOT NULL, guest_os text, ip_address text, created_at timestamptz NOT NULL, "
            "updated_at timestamptz NOT NULL, PRIMARY KEY (id, vcenter_id)) PARTITION BY HASH (vcenter_id)"
        )
        for index in range(partitions):
            conn.execute(
                sql.SQL("CREATE TABLE {} PARTITION OF virtual_machines FOR VALUES WITH (MODULUS {}, REMAINDER {})").format(
                    sql.Identifier(f"virtual_machines_p{index}"), sql.Literal(partitions), sql.Literal(index)
                )
            )


def recreate_database(endpoint: dict, name: str) -> dict:
    """An empty database `name` on the endpoint's server (an old one is dropped with its
    sessions); returns the connection options for it."""
    drop_database(endpoint, name)
    with connect(endpoint, login_db="postgres") as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return dict(endpoint, login_db=name)


def writable_again(*endpoints: dict) -> None:
    """Undo an instance-wide write freeze (a switchover leaves its source read-only)."""
    for endpoint in endpoints:
        with connect(endpoint, login_db="postgres") as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")


def drop_replication(name: str, *endpoints: dict) -> None:
    """Every subscription of database `name` on these servers (slots detached, so the publisher
    need not answer), then every slot of that database on them (walsenders terminated first).
    Subscriptions go first on every server: a subscriber left on one (the other server of a pair)
    would reconnect to its slot within moments of its walsender being terminated."""
    present = []
    for endpoint in endpoints:
        with connect(endpoint, login_db="postgres") as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                present.append(endpoint)
    for endpoint in present:
        with connect(endpoint, login_db=name) as conn:
            conn.execute("SET default_transaction_read_only = off")
            rows = conn.execute("SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE datname = %s", (name,))
            for (subscription,) in rows.fetchall():
                for statement in ("ALTER SUBSCRIPTION {} DISABLE", "ALTER SUBSCRIPTION {} SET (slot_name = NONE)", "DROP SUBSCRIPTION {}"):
                    conn.execute(sql.SQL(statement).format(sql.Identifier(subscription)))
    for endpoint in present:
        with connect(endpoint, login_db="postgres") as conn:
            wait_for(f"the slots of {name} dropped", lambda conn=conn: drop_inactive_slots(conn, name), timeout=10, interval=0.1)


def drop_inactive_slots(conn, name: str) -> bool:
    """One pass over the slots of database `name`: a slot in use has its walsender terminated (dropped
    on a later pass), one not in use is dropped. True when none was left."""
    slots = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", (name,)).fetchall()
    for slot, pid in slots:
        if pid:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            continue
        with contextlib.suppress(psycopg.errors.ObjectInUse):  # taken again since it was read
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    return not slots


def drop_database(endpoint: dict, name: str) -> None:
    with connect(endpoint, login_db="postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(endpoint: dict, name: str):
    """A database of a test's own for the duration of a with-block: tests share the lab."""
    try:
        yield recreate_database(endpoint, name)
    finally:
        drop_database(endpoint, name)


# Lab only, for the tests that use it: PostgreSQL 15's logical replication launcher starts at most
# one apply worker per wal_retrieve_retry_interval (5 s by default) on an instance, so tests that
# create, re-enable or switch subscriptions back to back mostly waited for the launcher, not for
# the code under test. The modules do the same; only the instances start their workers sooner.
# Not for tests that prove what a failed worker's 5 s restart looks like (test_pg_apply_errors,
# the post-cutover watch's stopped reverse replication).
WORKER_START_INTERVAL = "100ms"


@pytest.fixture(scope="module")
def quick_worker_starts(lab):  # pylint: disable=redefined-outer-name,unused-argument
    """wal_retrieve_retry_interval = WORKER_START_INTERVAL on blue and green for a test module;
    reset on each afterwards whatever failed (ALTER SYSTEM RESET: the server's default again)."""
    try:
        for side in (BLUE, GREEN):
            with connect(side, login_db="postgres") as conn:
                conn.execute(f"ALTER SYSTEM SET wal_retrieve_retry_interval = '{WORKER_START_INTERVAL}'")
                conn.execute("SELECT pg_reload_conf()")
        yield
    finally:
        for side in (BLUE, GREEN):
            with connect(side, login_db="postgres") as conn:
                conn.execute("ALTER SYSTEM RESET wal_retrieve_retry_interval")
                conn.execute("SELECT pg_reload_conf()")


def wait_for(what: str, probe, timeout: float = 60, interval: float = 1):
    """Poll probe() until it returns something truthy and return that; fail after `timeout`
    seconds, naming `what` was waited for."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(interval)


def running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not: it is dead, its parent has yet to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def kill_outright(what: str, pids: list[int], timeout: float = 10) -> None:
    """SIGKILL `pids` and wait until none runs: an unclean stop, whose pid files stay behind."""
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(f"{what} to die", lambda: not any(running(pid) for pid in pids), timeout=timeout, interval=0.1)


def answers(url: str) -> bool:
    """Whether an HTTP GET of url (a loopback address of the lab) answers 200 within 5 s."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (the lab's loopback URLs)
            return response.status == 200
    except OSError:  # refused, timed out, or an HTTP error status (HTTPError is an OSError)
        return False


def free_port(address: str = "127.0.0.1") -> int:
    """A port nothing listens on at `address` (a lab host's own address, lab-db's by default)."""
    with socket.socket() as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


PG_BINDIR = Path("/usr/lib/postgresql/15/bin")


def remove_postgres(datadir: Path) -> None:
    """Stop a throwaway PostgreSQL at once (if it runs) and remove its data directory."""
    subprocess.run(
        ["runuser", "-u", "postgres", "--", PG_BINDIR / "pg_ctl", "-D", datadir, "-m", "immediate", "stop"],
        check=False,
        capture_output=True,
    )
    shutil.rmtree(datadir, ignore_errors=True)


@contextmanager
def throwaway_postgres(prefix: str, address: str = "127.0.0.1", port: int | None = None, **settings):
    """A PostgreSQL 15 of a test's own (initdb, pg_ctl as postgres) on `address` (a free port unless
    told), with `settings` on its command line (e.g. wal_level="replica"); stopped and removed
    afterwards. Yields connection options for its superuser."""
    datadir = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(datadir, "postgres", "postgres")
    pwfile = datadir.parent / (datadir.name + ".pw")
    pwfile.write_text(LAB_PASSWORD + "\n")
    shutil.chown(pwfile, "postgres", "postgres")

    def as_postgres(*argv):
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], check=True, capture_output=True)

    try:
        as_postgres(PG_BINDIR / "initdb", "-D", datadir, "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}")
        port = port or free_port(address)
        options = " ".join([f"-p {port} -c listen_addresses={address} -k {datadir}", *(f"-c {k}={v}" for k, v in settings.items())])
        as_postgres(PG_BINDIR / "pg_ctl", "-D", datadir, "-w", "-l", datadir / "log", "start", "-o", options)
        yield {
            "login_host": address,
            "login_port": port,
            "login_user": "postgres",
            "login_password": LAB_PASSWORD,
            "login_db": "postgres",
        }
    finally:
        remove_postgres(datadir)
        pwfile.unlink(missing_ok=True)


@contextmanager
def scratch_postgres_server():
    """SCRATCH_PG's server for a test session: a throwaway PostgreSQL on SCRATCH_PG_ADDRESS:PG_PORT with
    the lab's `migrator` (a superuser, the lab's password). One a killed session left is stopped first."""
    for left in Path(tempfile.gettempdir()).glob("zdm-scratch-pg-*"):
        if left.is_dir():
            remove_postgres(left)
        else:  # its password file
            left.unlink(missing_ok=True)
    with throwaway_postgres("zdm-scratch-pg-", address=SCRATCH_PG_ADDRESS, port=PG_PORT) as admin:
        with connect(admin) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(sql.Identifier(SCRATCH_PG["login_user"]), LAB_PASSWORD)
            )
        yield SCRATCH_PG


@contextmanager
def throwaway_pgbouncer(databases: dict[str, dict], pool_size: int = 20):
    """A PgBouncer of a test's own (as postgres) on a free loopback port, transaction pooling,
    `migrator` as admin and client user. `databases` maps pool names to connection options.
    Yields {"port", "config_file", "admin": admin console options, "restart": a callable};
    stopped afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix="zdm-pgbouncer-"))
    port = free_port()
    lines = ["[databases]"]
    lines += [f"{name} = host={o['login_host']} port={o['login_port']} dbname={o['login_db']}" for name, o in databases.items()]
    lines += [
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = scram-sha-256",
        f"auth_file = {workdir / 'userlist.txt'}",
        "admin_users = migrator",
        "pool_mode = transaction",
        f"default_pool_size = {pool_size}",
        "max_client_conn = 500",
        f"logfile = {workdir / 'pgbouncer.log'}",
        "server_login_retry = 1",
    ]
    config_file = workdir / "pgbouncer.ini"
    config_file.write_text("\n".join(lines) + "\n")
    (workdir / "userlist.txt").write_text(f'"migrator" "{LAB_PASSWORD}"\n')
    for path in (workdir, config_file, workdir / "userlist.txt"):
        shutil.chown(path, "postgres", "postgres")
    admin = on_lab_db(port, login_db="pgbouncer")  # listen_addr above

    def start() -> subprocess.Popen:
        process = subprocess.Popen(["runuser", "-u", "postgres", "--", "/usr/sbin/pgbouncer", str(config_file)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                connect(admin).close()
                return process
            except psycopg.OperationalError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"PgBouncer did not start: {(workdir / 'pgbouncer.log').read_text()}") from None
                time.sleep(0.01)

    def stop(process: subprocess.Popen) -> None:
        subprocess.run(["pkill", "-INT", "-P", str(process.pid)], check=False)  # PgBouncer, the child of runuser
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(timeout=10)

    running = [start()]

    def restart() -> None:
        """Stop PgBouncer (its clients lose their connections) and start it again."""
        stop(running.pop())
        running.append(start())

    def stop_now() -> None:
        stop(running.pop())

    def start_again() -> None:
        running.append(start())

    try:
        yield {
            "port": port,
            "config_file": str(config_file),
            "admin": admin,
            "log": workdir / "pgbouncer.log",
            "restart": restart,
            "stop": stop_now,
            "start": start_again,
        }
    finally:
        if running:
            stop(running.pop())
        shutil.rmtree(workdir, ignore_errors=True)


WEBHOOK_TOKEN = "T0KEN-" + uuid.uuid4().hex  # stands for the secret in a Slack webhook's URL


@contextmanager
def webhook_receiver(statuses=()):
    """A webhook receiver on a free loopback port, its URL's path ending in WEBHOOK_TOKEN. It answers
    the given statuses in turn (then 200) and keeps every request it took: {path, headers, body (JSON)}."""
    taken: list[dict] = []
    answers = list(statuses)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            taken.append({"path": self.path, "headers": dict(self.headers), "body": body})
            status = answers.pop(0) if answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/services/{WEBHOOK_TOKEN}", taken
    finally:
        server.shutdown()
        server.server_close()


def gate_breached_told(taken: list[dict], migration: str, phase: str) -> tuple[dict, dict]:
    """The one gate_breached event a webhook_receiver took, checked as Slack's incoming-webhook
    shape (text, one attachment titled after the phase): (its event, its attachment's fields)."""
    assert len(taken) == 1, taken
    body = taken[0]["body"]
    event = body["event"]
    told = {key: event[key] for key in ("migration", "phase", "event", "severity")}
    assert told == {"migration": migration, "phase": phase, "event": "gate_breached", "severity": "critical"}, event
    assert body["text"] == f"[{migration}] {event['summary']}"
    [attachment] = body["attachments"]
    assert attachment["title"] == f"{phase}: gate breached" and attachment["color"] == "#a30200", attachment
    return event, {field["title"]: field["value"] for field in attachment["fields"]}


@contextmanager
def inventory_of_own(host: str, host_vars: dict, prefix: str):
    """A JSON inventory of one host in a directory of its own, removed at the end: its path."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    path = workdir / "inventory.json"
    path.write_text(json.dumps({"all": {"hosts": {host: host_vars}}}))
    try:
        yield str(path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def converge_of_own(play, inventory: str, host: str, first: bool) -> PlaybookRun:
    """A converge of a test's own inventory (instances beside the lab's): successful, and changing
    `host` when it is the first, nothing when it is a second."""
    run = run_playbook(play, inventory=inventory)
    assert run.status == "successful", run.stdout
    if first:
        assert run.changed(host) > 0
    else:
        assert run.changed(host) == 0, run.changes()
    return run


class Clients:
    """`count` threads each running `run()` until the with-block ends (`stop` set), with a `lock`
    for the counters a subclass keeps: the load a test puts on a service while it acts on it."""

    def __init__(self, count: int, name: str = "client"):
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True, name=f"{name}-{number}") for number in range(count)]

    def run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


class RedisWriter:
    """Writes distinct keys (`prefix` + a number) to Redis from a thread, one about every
    millisecond (without the pause test_redis's write-loop tests used 138 s of CPU, with it 80),
    while a with-block runs. On an error (READONLY from a demoted primary, a connection closed) it retries
    the same key, reconnecting to the port `primary_file` holds when that file exists (what a test's
    repoint hook wrote), else to the same port, all on `host` (lab-db's address unless told). `acked`
    keeps the keys Redis acknowledged."""

    def __init__(
        self, port: int, password: str = LAB_PASSWORD, primary_file: Path | None = None, prefix: str = "w:", host: str = LAB_DB_ADDRESS
    ):
        self.port, self.password, self.primary_file, self.prefix, self.host = port, password, primary_file, prefix, host
        self.acked: list[str] = []
        self.errors: list[tuple[str, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def connect(self) -> redis.Redis:
        port = int(self.primary_file.read_text()) if self.primary_file and self.primary_file.exists() else self.port
        return redis.Redis(host=self.host, port=port, password=self.password, socket_timeout=30)

    def run(self):
        conn = self.connect()
        number = 0
        while not self.stop.is_set():
            key = f"{self.prefix}{number}"
            try:
                conn.set(key, number)
            except redis.RedisError as exc:
                self.errors.append((key, repr(exc)[:80]))
                time.sleep(0.005)
                conn = self.connect()
                continue
            self.acked.append(key)
            number += 1
            time.sleep(0.001)

    def __enter__(self):
        self.thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self.stop.set()
        self.thread.join(30)


# The state every integration test starts from, and what brings the lab back to it.
LAB_RESETS = {  # in the order they run: a service that is down is started before any rollback
    "down": ("site.yml", {}),
    "postgresql": ("rollback.yml", {}),
    "redis": ("redis_switchover.yml", {"redis_switchover_to": "blue"}),
}


def lab_findings() -> list[tuple[str, str]]:
    """What keeps the lab from the state the suite starts from - blue serving the application
    (writable, HAProxy's write frontend on blue, every PgBouncer's pool on that frontend and not
    paused) and Redis blue
    the master - as (what resets it: a LAB_RESETS key, what was found). A machine without the
    novacron database yet (fresh, or before the sample data) has no PostgreSQL findings."""
    found = []
    try:
        with connect(dict(BLUE, login_db="postgres"), connect_timeout=5) as conn:
            has_novacron = conn.execute("SELECT true FROM pg_catalog.pg_database WHERE datname = 'novacron'").fetchone()
        if has_novacron:
            with connect(BLUE, connect_timeout=5) as conn:
                if conn.execute("SHOW default_transaction_read_only").fetchone()[0] == "on":
                    found.append(("postgresql", "blue's novacron is read-only (a cutover left it frozen or switched to green)"))
            found += pooler_findings()
            with psycopg.connect(
                host=HAPROXY_ADDRESS,
                port=HAPROXY_WRITES,
                user="migrator",
                password=LAB_PASSWORD,
                dbname="novacron",
                connect_timeout=5,
                autocommit=True,
            ) as conn:
                server = server_reached(conn)
            if server != "blue":
                frontend = f"{HAPROXY_ADDRESS}:{HAPROXY_WRITES}"
                found.append(("postgresql", f"HAProxy's write frontend {frontend} sends writes to {server}, not blue {where(BLUE)}"))
    except psycopg.Error as exc:
        down = "Connection refused" in str(exc)  # not running (a machine's reset): a converge starts it
        found.append(("down" if down else "postgresql", f"cannot read PostgreSQL's side of the lab: {str(exc).strip()}"))
    try:
        role = redis.Redis(host=REDIS_BLUE_ADDRESS, port=REDIS_PORT, password=LAB_PASSWORD, socket_timeout=5).info("replication")["role"]
        if role != "master":
            found.append(("redis", f"Redis blue {REDIS_BLUE_ADDRESS}:{REDIS_PORT} is a {role}, not the master"))
    except redis.RedisError as exc:
        found.append(("redis", f"cannot read Redis blue {REDIS_BLUE_ADDRESS}:{REDIS_PORT}: {exc}"))
    return found


def pooler_console(address: str) -> psycopg.Connection:
    """The admin console of the lab PgBouncer at `address` (it answers while a pool is paused)."""
    params = {"host": address, "port": POOLER_PORT, "user": "pgbouncer_admin", "password": LAB_PASSWORD, "dbname": "pgbouncer"}
    return psycopg.connect(**params, connect_timeout=5, autocommit=True, cursor_factory=psycopg.ClientCursor)


def pooler_findings() -> list[tuple[str, str]]:
    """Every lab PgBouncer whose novacron pool does not point at HAProxy's write frontend (its home:
    a cutover switches HAProxy, not the pools) or is paused (read from its console, which answers
    while a pool is paused)."""
    found = []
    for console in POOLER_HOSTS.values():
        with pooler_console(console) as conn:
            cursor = conn.execute("SHOW DATABASES")
            columns = [column.name for column in cursor.description]
            for row in cursor.fetchall():
                pool = dict(zip(columns, row, strict=True))
                if pool["name"] != "novacron":
                    continue
                if (pool["host"], int(pool["port"])) != (HAPROXY_ADDRESS, HAPROXY_WRITES):
                    pooled, frontend = f"{pool['host']}:{pool['port']}", f"{HAPROXY_ADDRESS}:{HAPROXY_WRITES}"
                    told = f"PgBouncer {console}:{POOLER_PORT} sends novacron to {pooled}, not HAProxy's write frontend {frontend}"
                    found.append(("postgresql", told))
                if int(pool.get("paused") or 0):
                    found.append(("postgresql", f"PgBouncer {console}:{POOLER_PORT} holds novacron paused"))
    return found


def bring_lab_to_start() -> list[tuple[str, str]]:
    """Bring the lab from whatever state a demo, a manual switchover or a failed run left to the
    suite's starting state, running the playbook an operator would (LAB_RESETS). Returns what was
    found and repaired; raises naming what is still wrong and the command that resets it."""
    found = lab_findings()
    left = found
    for kind, (playbook, extravars) in LAB_RESETS.items():
        if kind in {kind for kind, _text in left}:
            run_playbook(playbook, extravars=extravars)
            left = lab_findings()  # a service started again may show what it hid (a pool paused)
            found = found + [finding for finding in left if finding not in found]
    if left:
        commands = {
            f"ansible-playbook -i inventories/lab playbooks/{LAB_RESETS[kind][0]}"
            + "".join(f" -e {name}={value}" for name, value in LAB_RESETS[kind][1].items())
            for kind, _text in left
        }
        raise RuntimeError(
            "The lab is not in the tests' starting state: "
            + "; ".join(text for _kind, text in left)
            + ". Reset it with: "
            + " and ".join(sorted(commands))
            + " (add -e rollback_force=true to rollback.yml when it refuses; see its header)."
        )
    return found


def write_wrong_ca(directory: Path) -> Path:
    """A self-signed CA of the test's own, written to directory/ca.crt: it signed none of the
    lab's certificates (a client trusting it alone must be refused)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not the lab CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / "ca.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


# etcd's v3 JSON gateway (keys and values base64), for the Raft tests ----------------------------


def etcd_api(base_url: str, path: str, body: dict) -> dict:
    """POST body to an etcd member's v3 gateway at base_url (http://address:port)."""
    request = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})  # noqa: S310 - loopback http only
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback http only
        return json.loads(response.read())


def etcd_put(base_url: str, key: str, value: str) -> None:
    etcd_api(base_url, "/v3/kv/put", {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(value.encode()).decode()})


def etcd_get(base_url: str, key: str) -> str | None:
    kvs = etcd_api(base_url, "/v3/kv/range", {"key": base64.b64encode(key.encode()).decode()}).get("kvs")
    return base64.b64decode(kvs[0]["value"]).decode() if kvs else None
