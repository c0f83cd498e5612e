"""roles/haproxy and the read shift (tasks_from: shift_reads, playbooks/shift_reads.yml) against
the lab's real HAProxy 2.6 on lb-1 (127.0.0.31, over SSH): writes :5000, reads :5001, HTTP :8080,
stats :8404, admin socket.
Routing is checked by connecting through HAProxy and asking PostgreSQL for its address (blue and
green both listen on port 5432: tests.lab.server_reached)."""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import socket
import ssl
import subprocess
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime as haproxy_runtime
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import parse_servers_state
from tests.lab import (
    BLUE,
    GREEN,
    HAPROXY_ADDRESS,
    HAPROXY_HOST,
    HAPROXY_HTTP,
    HAPROXY_READS,
    HAPROXY_RUNTIME_API,
    HAPROXY_SOCKET,
    HAPROXY_STATS,
    HAPROXY_WRITES,
    ROOT,
    SHIFT_BACK,
    SHIFT_FORWARD,
    connect,
    converged_again,
    free_port,
    kill_outright,
    run_module,
    run_playbook,
    server_reached,
    through_haproxy,
    where,
)

SOCKET = HAPROXY_SOCKET
STATE_FILE = Path("/var/lib/haproxy/server-state")
CONFIG = Path("/etc/haproxy/haproxy.cfg")
SAMPLE_APP_FAULTS = Path("/var/lib/zerodowntime-sample-app")  # roles/sample_app: <instance>.json
PIDFILE = Path("/var/run/haproxy.pid")
# HAProxy's frontends listen on lb-1's address, not on blue's
WRITES = through_haproxy(HAPROXY_WRITES)
READS = through_haproxy(HAPROXY_READS)
# the throwaway HAProxies (side_haproxy) listen on lab-db's address, on free ports
SIDE_ADDRESS = "127.0.0.1"
HAPROXY_PLAY = [
    {"name": "Provision HAProxy", "hosts": "haproxy_servers", "become": True, "roles": [{"role": "zerodowntime.migration.haproxy"}]}
]
RELOAD_PLAY = [
    {
        "name": "Reload HAProxy, keeping its runtime state",
        "hosts": "haproxy_servers",
        "gather_facts": False,
        "tasks": [{"name": "reload", "ansible.builtin.include_role": {"name": "zerodowntime.migration.haproxy", "tasks_from": "reload"}}],
    }
]


def admin(command: str, sock_path: str = SOCKET) -> str:
    """One command on HAProxy's admin socket (it closes the connection after the answer)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(sock_path)
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def servers_state(backend: str = "pg_read", sock_path: str = SOCKET) -> dict[str, dict[str, str]]:
    """`show servers state BACKEND` by server name: srv_uweight, srv_admin_state, ..."""
    lines = admin(f"show servers state {backend}", sock_path).splitlines()
    assert lines[0] == "1", lines
    header = lines[1].lstrip("# ").split()
    rows = (dict(zip(header, line.split(), strict=False)) for line in lines[2:] if line.strip())
    return {row["srv_name"]: row for row in rows}


def weights(backend: str = "pg_read", sock_path: str = SOCKET) -> dict[str, int]:
    return {name: int(row["srv_uweight"]) for name, row in servers_state(backend, sock_path).items()}


def status(backend: str, server: str, sock_path: str = SOCKET) -> str:
    """The server's status in `show stat` (UP, DOWN, DRAIN, MAINT, ...)."""
    rows = csv.DictReader(admin("show stat", sock_path).lstrip("# ").splitlines())
    return next(row["status"] for row in rows if row["pxname"] == backend and row["svname"] == server)


def wait_up(backend: str, *servers: str, timeout: float = 30) -> None:
    """Others' tests may restart green: wait until HAProxy's checks see the servers up."""
    deadline = time.monotonic() + timeout
    while any(not status(backend, server).startswith("UP") for server in servers):
        assert time.monotonic() < deadline, {server: status(backend, server) for server in servers}
        time.sleep(0.5)


def servers_reached(endpoint: dict, connections: int) -> Counter:
    """Open `connections` new connections through HAProxy; count the lab servers ("blue", "green") they reach."""
    seen: Counter = Counter()
    for _attempt in range(connections):
        with connect(endpoint) as conn:
            seen[server_reached(conn)] += 1
    return seen


def haproxy_module(**args):
    """community.general.haproxy on the lab's admin socket, backend pg_read unless told."""
    return run_module("community.general.haproxy", {"socket": SOCKET, "backend": "pg_read", **args}, host=HAPROXY_HOST)


def shift_reads(percent: int, check: bool = False, **extravars):
    """The one-jump path (shift_reads_steps: []) unless the extravars give steps."""
    extravars = {"shift_reads_steps": [], **extravars, "green_read_percent": percent}
    return run_playbook("shift_reads.yml", extravars=extravars, cmdline="--check" if check else None)


def haproxy_pid() -> int:
    return int(PIDFILE.read_text().split()[0])


def wait_for_new_process(old_pid: int, timeout: float = 15) -> None:
    """After a reload: wait until the admin socket answers from the new process."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = dict(line.split(": ", 1) for line in admin("show info").splitlines() if ": " in line)
            if int(info["Pid"]) != old_pid:
                return
        except OSError:
            pass
        assert time.monotonic() < deadline, "HAProxy did not reload"
        time.sleep(0.2)


def saved_weights(backend: str = "pg_read") -> dict[str, int]:
    """srv_uweight by server in the server-state file."""
    rows = [line.split() for line in STATE_FILE.read_text().splitlines()[2:] if line.strip()]
    return {row[3]: int(row[7]) for row in rows if row[1] == backend}


def http_get(port: int, path: str, address: str = HAPROXY_ADDRESS) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(address, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_for_port(port: int, address: str = SIDE_ADDRESS, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {address}:{port}"
            time.sleep(0.2)


def baseline() -> None:
    """What haproxy.cfg says: reads all on blue, writes on blue, green in maintenance for writes."""
    for command in (
        "set server pg_read/blue state ready",
        "set server pg_read/green state ready",
        "set weight pg_read/blue 256",
        "set weight pg_read/green 0",
        "set server pg_write/blue state ready",
        "set server pg_write/green state maint",
    ):
        assert admin(command).strip() == "", command


@pytest.fixture(scope="module")
def haproxy(lab):
    """The role converged on the lab; at the end the runtime state goes back to the configured
    one and is saved (a reload), so later reloads do not bring back a test's weights."""
    run = run_playbook(HAPROXY_PLAY)
    assert run.status == "successful", run.stdout
    baseline()
    yield run
    baseline()
    assert run_playbook(RELOAD_PLAY).status == "successful"


def test_second_converge_changes_nothing(haproxy):
    again = converged_again(haproxy, HAPROXY_PLAY)
    assert again.status == "successful", again.stdout
    assert again.changed(HAPROXY_HOST) == 0, again.changed_tasks()


def test_converge_starts_haproxy_after_an_unclean_stop(haproxy):
    """A killed HAProxy leaves its pid file and socket behind; Debian's init script then reports
    "haproxy dead, but /var/run/haproxy.pid exists.", which must not pass for running."""
    # the lab's HAProxy alone, by its pid file: a throwaway HAProxy of another test may run beside it
    # (test_haproxy_shift, in lane own)
    kill_outright("the lab's HAProxy", [int(pid) for pid in PIDFILE.read_text().split()])
    assert PIDFILE.exists() and Path(SOCKET).exists()
    run = run_playbook(HAPROXY_PLAY)
    assert run.status == "successful", run.stdout
    assert [task for task in run.changed_tasks() if task == "Start HAProxy"]
    assert "Uptime" in admin("show info")


def test_installed_config_is_valid_and_keeps_runtime_state(haproxy):
    check = subprocess.run(["haproxy", "-c", "-f", str(CONFIG)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    assert "Configuration file is valid" in check.stdout
    config = CONFIG.read_text()
    assert "stats socket /run/haproxy/admin.sock mode 660 level admin" in config
    for port in (HAPROXY_WRITES, HAPROXY_READS, HAPROXY_HTTP, HAPROXY_STATS):
        assert f"bind {HAPROXY_ADDRESS}:{port}\n" in config, port  # lb-1's address, not lab-db's
    assert f"server-state-file {STATE_FILE}" in config
    assert "load-server-state-from-file global" in config
    assert "option httpchk GET /health" in config


def test_invalid_config_is_refused_and_the_running_one_stays(haproxy):
    before, pid = CONFIG.read_bytes(), haproxy_pid()
    run = run_playbook(HAPROXY_PLAY, extravars={"haproxy_pg_server_options": "inter 2s no-such-keyword"})
    assert run.status == "failed"
    [result] = run.task_results("Write haproxy.cfg")
    assert result["failed"] is True
    assert "no-such-keyword" in result.get("stderr", "") + result["msg"]
    assert CONFIG.read_bytes() == before
    assert haproxy_pid() == pid


def test_a_bad_runtime_api_address_is_refused_before_anything_changes(haproxy):
    before, pid = CONFIG.read_bytes(), haproxy_pid()
    run = run_playbook(HAPROXY_PLAY, extravars={"haproxy_runtime_api_address": "127.0.0.31:9999 level admin\nstats socket /tmp/x"})
    assert run.status == "failed"
    [checked] = run.task_results("Check the platform and the variables")
    assert "haproxy_runtime_api_address is empty or an IPv4 address or host name with :port" in checked["msg"]
    assert CONFIG.read_bytes() == before
    assert haproxy_pid() == pid


def test_the_runtime_api_answers_over_tcp_on_lb_1(haproxy):
    """haproxy_runtime_api_address: the admin-level API on lb-1's address, for a cutover run elsewhere."""
    assert f"stats socket ipv4@{HAPROXY_RUNTIME_API} level admin\n" in CONFIG.read_text()
    rows = haproxy_runtime.servers_state(HAPROXY_RUNTIME_API, "pg_write")
    assert {row["srv_name"] for row in rows} == {"blue", "green"}


def test_writes_reach_blue_and_green_waits_in_maintenance(haproxy):
    wait_up("pg_write", "blue")
    assert status("pg_write", "green") == "MAINT"
    assert servers_reached(WRITES, 10) == Counter({"blue": 10})


def set_primary(server: str, **extravars):
    """tasks_from set_primary on the lab's HAProxy."""
    play = [
        {
            "name": "Set the write primary",
            "hosts": "haproxy_servers",
            "become": True,
            "gather_facts": False,
            "tasks": [
                {
                    "name": "set_primary",
                    "ansible.builtin.include_role": {"name": "zerodowntime.migration.haproxy", "tasks_from": "set_primary"},
                    "vars": {"haproxy_set_primary": server},
                }
            ],
        }
    ]
    return run_playbook(play, extravars=extravars)


@pytest.fixture()
def writes_on_blue(haproxy):
    """Writes go to blue again after the test (runtime and haproxy.cfg)."""
    yield
    run = set_primary("blue")
    assert run.status == "successful", run.stdout
    assert f"    server blue {where(BLUE)} check\n" in CONFIG.read_text()


def test_set_primary_moves_writes_keeps_them_and_refuses_a_converge(writes_on_blue):
    wait_up("pg_write", "blue")
    held = connect(WRITES)
    assert server_reached(held) == "blue"
    moved = set_primary("green")
    assert moved.status == "successful", moved.stdout
    assert moved.changed(HAPROXY_HOST) == 2, moved.changed_tasks()  # the runtime switch and haproxy.cfg
    with pytest.raises(psycopg.OperationalError):  # the old primary's sessions were shut down
        held.execute("SELECT 1")
    held.close()
    assert servers_reached(WRITES, 5) == Counter({"green": 5})
    config = CONFIG.read_text()
    assert f"    server green {where(GREEN)} check\n" in config and f"    server blue {where(BLUE)} check disabled\n" in config
    assert set_primary("green").changed(HAPROXY_HOST) == 0

    pid = haproxy_pid()
    assert run_playbook(RELOAD_PLAY).status == "successful"
    wait_for_new_process(pid)
    assert servers_reached(WRITES, 5) == Counter({"green": 5})  # kept across a reload

    refused = run_playbook(HAPROXY_PLAY)
    assert refused.status == "failed"
    [reason] = refused.task_results("Refuse to undo a change of the write primary made since the last converge")
    assert "sends writes to green" in reason["msg"] and "haproxy_pg_allow_primary_change" in reason["msg"]
    assert CONFIG.read_text() == config
    assert servers_reached(WRITES, 3) == Counter({"green": 3})

    allowed = run_playbook(HAPROXY_PLAY, extravars={"haproxy_pg_allow_primary_change": True})
    assert allowed.status == "successful", allowed.stdout
    assert servers_reached(WRITES, 5) == Counter({"blue": 5})
    assert status("pg_write", "green") == "MAINT"


def test_set_primary_refuses_an_unknown_server(writes_on_blue):
    before = CONFIG.read_bytes()
    unknown = set_primary("purple")
    assert unknown.status == "failed"
    [checked] = unknown.task_results("Check the new write primary")
    assert "purple" in checked["msg"]
    assert CONFIG.read_bytes() == before
    assert servers_reached(WRITES, 3) == Counter({"blue": 3})


def test_reads_follow_the_weights(haproxy):
    wait_up("pg_read", "blue", "green")
    admin("set weight pg_read/green 256")
    admin("set weight pg_read/blue 0")
    assert servers_reached(READS, 20) == Counter({"green": 20})

    admin("set weight pg_read/blue 128")
    admin("set weight pg_read/green 128")
    seen = servers_reached(READS, 40)
    assert set(seen) == {"blue", "green"}
    assert 14 <= seen["green"] <= 26, seen  # round robin: 20 each, nobody else reads through :5001


def test_shift_reads_sets_weights_once(haproxy):
    baseline()
    wait_up("pg_read", "blue", "green")
    run = shift_reads(25)
    assert run.status == "successful", run.stdout
    assert weights() == {"blue": 192, "green": 64}
    assert run.changed(HAPROXY_HOST) == 2, run.changed_tasks()  # one task per server

    again = shift_reads(25)
    assert again.status == "successful", again.stdout
    assert again.changed(HAPROXY_HOST) == 0, again.changed_tasks()
    assert weights() == {"blue": 192, "green": 64}

    seen = servers_reached(READS, 40)
    assert 6 <= seen["green"] <= 14, seen  # a quarter of 40


def test_shift_reads_check_mode_predicts_and_changes_nothing(haproxy):
    assert shift_reads(25).status == "successful"
    planned = shift_reads(100, check=True)
    assert planned.status == "successful", planned.stdout
    assert planned.changed(HAPROXY_HOST) == 1
    predictions = planned.task_results("Predict the change (check mode, where community.general.haproxy does not run)")
    assert [item["msg"] for item in predictions[0]["results"]] == ["green: weight 64 -> 256", "blue: weight 192 -> 0"]
    assert weights() == {"blue": 192, "green": 64}

    unchanged = shift_reads(25, check=True)
    assert unchanged.changed(HAPROXY_HOST) == 0, unchanged.changed_tasks()


STEPS = [(10, {"blue": 230, "green": 26}), (50, {"blue": 128, "green": 128}), (100, {"blue": 0, "green": 256})]


@pytest.mark.parametrize(("percent", "expected"), STEPS)
def test_shift_reads_steps(haproxy, percent, expected):
    run = shift_reads(percent)
    assert run.status == "successful", run.stdout
    assert weights() == expected


GATED = {"shift_reads_steps": [10, 25, 50, 75, 100], "shift_reads_hold": 0.5, "shift_reads_interval": 0.2, "shift_reads_min_requests": 1}


def test_shift_reads_in_gated_steps_by_default_and_back(haproxy):
    """The default path (the inventory's shift_reads_steps): haproxy_shift holds each step up to
    the percent asked, a second run changes nothing, check mode plans without changing, and a
    lower percent walks blue back up the same steps."""
    baseline()
    wait_up("pg_read", "blue", "green")
    hold = {key: value for key, value in GATED.items() if key != "shift_reads_steps"}  # the steps from the inventory
    planned = run_playbook("shift_reads.yml", extravars=dict(hold, green_read_percent=50), cmdline="--check")
    assert planned.status == "successful", planned.stdout
    [moved] = planned.task_results(SHIFT_FORWARD)
    assert moved["plan"] == [10, 25, 50]
    assert weights() == {"blue": 256, "green": 0}

    run = run_playbook("shift_reads.yml", extravars=dict(hold, green_read_percent=50))
    assert run.status == "successful", run.stdout
    [moved] = run.task_results(SHIFT_FORWARD)
    assert [step["percent"] for step in moved["steps"]] == [10, 25, 50]
    assert all(step["held_s"] >= 0.5 for step in moved["steps"]), moved["steps"]
    assert weights() == {"blue": 50, "green": 50}
    assert 12 <= servers_reached(READS, 40)["green"] <= 28

    again = run_playbook("shift_reads.yml", extravars=dict(hold, green_read_percent=50))
    assert again.status == "successful", again.stdout
    assert again.changed(HAPROXY_HOST) == 0, again.changed_tasks()

    back = run_playbook("shift_reads.yml", extravars=dict(GATED, green_read_percent=10))
    assert back.status == "successful", back.stdout
    [moved] = back.task_results(SHIFT_BACK)
    assert [step["percent"] for step in moved["steps"]] == [75, 90]  # blue's share: 50 -> 75 -> 90
    assert weights() == {"blue": 90, "green": 10}


def test_shift_reads_takes_servers_out_of_drain_and_maintenance(haproxy):
    admin("set server pg_read/green state maint")
    admin("set server pg_read/blue state drain")
    run = shift_reads(50)
    assert run.status == "successful", run.stdout
    state = servers_state()
    assert (state["blue"]["srv_admin_state"], state["green"]["srv_admin_state"]) == ("0", "0")
    assert weights() == {"blue": 128, "green": 128}


def test_weights_survive_a_reload(haproxy):
    assert shift_reads(10).status == "successful"
    pid = haproxy_pid()
    run = run_playbook(RELOAD_PLAY)
    assert run.status == "successful", run.stdout
    wait_for_new_process(pid)
    assert saved_weights() == {"blue": 230, "green": 26}
    assert weights() == {"blue": 230, "green": 26}

    # Control: a reload without saving first loads the file's (older) state, not the runtime one.
    admin("set weight pg_read/green 77")
    pid = haproxy_pid()
    reload = subprocess.run(["/etc/init.d/haproxy", "reload"], capture_output=True, text=True, check=False)
    assert reload.returncode == 0, reload.stdout + reload.stderr
    wait_for_new_process(pid)
    assert weights() == {"blue": 230, "green": 26}
    assert servers_reached(READS, 1)  # the new process serves


def test_a_server_moved_in_the_config_is_not_held_at_its_old_address(haproxy):
    """The saved state carries each server's address and port, and the new process loads them over
    haproxy.cfg's: a server the configuration moved (as the lab's blue and green moved from
    127.0.0.1:5433/:5434 to addresses of their own) starts where the configuration says."""
    admin("set server pg_read/green addr 127.0.0.12 port 5439")  # where an older haproxy.cfg had it
    pid = haproxy_pid()
    run = run_playbook(RELOAD_PLAY)
    assert run.status == "successful", run.stdout
    wait_for_new_process(pid)
    [green] = [server for server in parse_servers_state(admin("show servers state pg_read")) if server["srv_name"] == "green"]
    assert (green["srv_addr"], green["srv_port"]) == (GREEN["login_host"], GREEN["login_port"])


def test_drain_and_maintenance_with_community_general_haproxy(haproxy):
    wait_up("pg_read", "blue", "green")
    admin("set weight pg_read/blue 128")
    admin("set weight pg_read/green 128")
    args = {"host": "green", "fail_on_not_found": True}

    run, result = haproxy_module(**args, state="drain")
    assert result["failed"] is False, run.stdout
    assert result["changed"] is True
    assert result["state_after"][0]["status"] == "DRAIN"
    assert status("pg_read", "green") == "DRAIN"
    assert servers_reached(READS, 10) == Counter({"blue": 10})  # no new connections for green

    result = haproxy_module(**args, state="disabled")[1]
    assert result["changed"] is True
    assert status("pg_read", "green") == "MAINT"
    assert servers_state()["green"]["srv_admin_state"] == "1"  # forced maintenance

    result = haproxy_module(**args, state="enabled", wait=True, wait_interval=1, wait_retries=20)[1]
    assert result["failed"] is False
    assert status("pg_read", "green").startswith("UP")
    assert weights()["green"] == 128


def test_missing_backend_or_server_fails_clearly(haproxy):
    run = shift_reads(25, haproxy_shift_to="purple")
    assert run.status == "failed"
    [result] = run.task_results("Fail when the backend or a server is missing")
    assert result["msg"] == "No server purple in backend pg_read (servers: blue, green)"

    run = shift_reads(25, haproxy_pg_read_backend="pg_nosuch")
    assert run.status == "failed"
    [result] = run.task_results("Fail when the backend or a server is missing")
    assert result["msg"] == "Backend pg_nosuch: Can't find backend."

    result = haproxy_module(host="purple", state="drain", fail_on_not_found=True)[1]
    assert result["failed"] is True
    assert result["msg"] == "The specified backend 'pg_read/purple' was not found!"


def test_community_general_haproxy_gaps_that_shift_reads_covers(haproxy):
    """Why shift_reads passes fail_on_not_found and asserts what HAProxy applied: by default the
    module succeeds on a missing server, and it reports success when HAProxy refuses a weight."""
    result = haproxy_module(host="purple", state="enabled")[1]
    assert (result["failed"], result["changed"], result["state_after"]) == (False, False, None)

    before = weights()["green"]
    result = haproxy_module(host="green", state="enabled", weight="300")[1]
    assert result["failed"] is False
    assert "Absolute weight can only be between 0 and 256 inclusive." in result["output"][0]
    assert weights()["green"] == before

    play = [
        {
            "name": "check mode",
            "hosts": HAPROXY_HOST,
            "gather_facts": False,
            "tasks": [
                {"name": "drain", "community.general.haproxy": {"socket": SOCKET, "backend": "pg_read", "host": "green", "state": "drain"}}
            ],
        }
    ]
    run = run_playbook(play, cmdline="--check")
    assert run.status == "successful", run.stdout
    skipped = [e["event_data"]["task"] for e in run.events if e["event"] == "runner_on_skipped"]
    assert skipped == ["drain"], run.stdout  # no check mode support: skipped, no prediction either
    assert status("pg_read", "green") != "DRAIN"


def test_shift_reads_refuses_the_write_backend(haproxy):
    run = shift_reads(50, haproxy_pg_read_backend="pg_write")
    assert run.status == "failed"
    assert status("pg_write", "green") == "MAINT"
    assert weights("pg_write") == {"blue": 1, "green": 1}


def test_http_frontend_monitor_uri_and_app_health_checks(haproxy):
    """The lab's sample application (roles/sample_app) behind the HTTP frontend: app1 (blue) takes every
    request, app2 (green, weight 0) none; app1 failing its /health check goes DOWN and the frontend
    answers 503 (no other server takes requests) until it passes again."""
    assert http_get(HAPROXY_HTTP, "/haproxy-health")[0] == 200
    wait_up("app", "app1", "app2")  # GET /health answered 200 twice (rise 2)
    assert weights("app") == {"app1": 100, "app2": 0}
    answers = [http_get(HAPROXY_HTTP, "/") for _request in range(10)]
    assert {code for code, _body in answers} == {200}, answers
    assert {json.loads(body)["instance"] for _code, body in answers} == {"blue"}

    blue_faults = SAMPLE_APP_FAULTS / "blue.json"
    blue_faults.write_text(json.dumps({"health_status": 503}))
    try:
        deadline = time.monotonic() + 20
        while not status("app", "app1").startswith("DOWN"):  # fall 3, inter 2s
            assert time.monotonic() < deadline, status("app", "app1")
            time.sleep(0.5)
        assert http_get(HAPROXY_HTTP, "/")[0] == 503
    finally:
        blue_faults.unlink(missing_ok=True)
    wait_up("app", "app1")
    code, body = http_get(HAPROXY_HTTP, "/")
    assert (code, json.loads(body)["instance"]) == (200, "blue")


def test_stats_page_on_loopback(haproxy):
    code, body = http_get(HAPROXY_STATS, "/stats;csv")
    assert code == 200
    assert b"pg_read,green," in body


@contextlib.contextmanager
def side_haproxy(directory: Path, tls: bool = False, **overrides):
    """A throwaway HAProxy from the role's template (and TLS tasks), with its own ports, socket and
    state file, so tests that need another configuration leave the lab's HAProxy alone (others
    converge it concurrently). Yields the role's runs (two: idempotence), the ports and the socket."""
    ports = {name: free_port() for name in ("write", "read", "http", "tls", "stats")}
    sock_path = str(directory / "admin.sock")
    extravars = {
        "haproxy_reload_on_change": False,  # a notified handler must not reload the lab's HAProxy
        "haproxy_stats_socket": sock_path,
        "haproxy_server_state_file": str(directory / "server-state"),
        "haproxy_pg_servers": [{"name": "blue", "address": BLUE["login_host"], "port": BLUE["login_port"], "read_weight": 256}],
        "haproxy_pg_primary": "blue",
        "haproxy_pg_write_bind": f"{SIDE_ADDRESS}:{ports['write']}",
        "haproxy_pg_read_bind": f"{SIDE_ADDRESS}:{ports['read']}",
        "haproxy_http_bind": f"{SIDE_ADDRESS}:{ports['http']}",
        "haproxy_tls_bind": f"{SIDE_ADDRESS}:{ports['tls']}",
        "haproxy_stats_bind": f"{SIDE_ADDRESS}:{ports['stats']}",
        "haproxy_tls_enabled": tls,
        "haproxy_tls_certificate": str(directory / "haproxy.pem"),
        "haproxy_tls_common_name": "localhost",
        "haproxy_tls_subject_alt_names": ["DNS:localhost", "IP:127.0.0.1"],
        **overrides,
    }
    role = ROOT / "roles" / "haproxy"
    tasks = [{"name": "certificate", "ansible.builtin.include_role": {"name": "zerodowntime.migration.haproxy", "tasks_from": "tls"}}]
    config = {"src": str(role / "templates" / "haproxy.cfg.j2"), "dest": str(directory / "haproxy.cfg"), "mode": "0640"}
    tasks = [*(tasks if tls else []), {"name": "config", "ansible.builtin.template": dict(config, validate="haproxy -c -f %s")}]
    play = [
        {
            "name": "HAProxy on the side",
            "hosts": "lab-db",
            "gather_facts": False,
            "vars_files": [str(role / "defaults" / "main.yml")],
            "tasks": tasks,
        }
    ]
    pid = haproxy_pid()
    runs = [run_playbook(play, extravars=extravars) for _attempt in range(2)]
    for run in runs:
        assert run.status == "successful", run.stdout
    assert haproxy_pid() == pid  # the lab's HAProxy was not reloaded
    proxy = subprocess.Popen(["haproxy", "-f", str(directory / "haproxy.cfg"), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(ports["read"])
        yield runs, ports, sock_path
    finally:
        proxy.terminate()
        proxy.wait(timeout=10)


def test_shift_to_a_down_server_fails_before_the_other_loses_weight(lab, tmp_path):
    down_port = free_port()  # nothing listens there
    servers = [
        {"name": "blue", "address": BLUE["login_host"], "port": BLUE["login_port"], "read_weight": 256},
        {"name": "green", "address": "127.0.0.1", "port": down_port, "read_weight": 0},
    ]
    with side_haproxy(tmp_path, haproxy_pg_servers=servers, haproxy_pg_server_options="inter 500ms fall 1 rise 1") as (_runs, ports, sock):
        deadline = time.monotonic() + 15
        while not status("pg_read", "green", sock).startswith("DOWN"):
            assert time.monotonic() < deadline, status("pg_read", "green", sock)
            time.sleep(0.2)

        run = shift_reads(100, haproxy_stats_socket=sock, haproxy_shift_wait_seconds=3)
        assert run.status == "failed"
        [result] = run.task_results("Set the weight of the server that gains and make it ready")
        assert "server pg_read/green not status 'UP' after 3 retries" in str(result), result
        assert weights(sock_path=sock) == {"blue": 256, "green": 256}  # blue kept its weight
        assert run.task_results("Set the weight of the other server and make it ready") == []
        assert servers_reached(dict(READS, login_host=SIDE_ADDRESS, login_port=ports["read"]), 5) == Counter({"blue": 5})


def test_tls_termination_with_the_role_made_certificate(lab, tmp_path):
    with side_haproxy(tmp_path, tls=True) as (runs, ports, _sock):
        assert runs[0].changed() > 0
        assert runs[1].changed() == 0, runs[1].changed_tasks()
        check_tls(ports, tmp_path)


def check_tls(ports: dict, tmp_path: Path) -> None:
    assert "ssl crt " + str(tmp_path / "haproxy.pem") in (tmp_path / "haproxy.cfg").read_text()
    assert oct(os.stat(tmp_path / "haproxy.pem.key").st_mode & 0o777) == "0o640"

    context = ssl.create_default_context(cafile=str(tmp_path / "haproxy.pem"))  # verifies chain and host name
    conn = http.client.HTTPSConnection("localhost", ports["tls"], context=context, timeout=5)
    try:
        conn.request("GET", "/haproxy-health")
        assert conn.getresponse().status == 200
        assert conn.sock.getpeercert()["subjectAltName"] == (("DNS", "localhost"), ("IP Address", "127.0.0.1"))
    finally:
        conn.close()
    assert http_get(ports["http"], "/haproxy-health", SIDE_ADDRESS)[0] == 200  # plain HTTP still answers
