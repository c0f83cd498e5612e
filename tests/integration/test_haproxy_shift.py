"""haproxy_shift against a throwaway HAProxy (HTTP mode, its own admin socket in tmp_path, free
ports) in front of two throwaway HTTP servers the test runs in threads, under a request load.
The lab's HAProxy is not touched."""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
from tests.lab import SHIFT_BACK, Clients, free_port, run_module, run_playbook

SHIFT = "zerodowntime.migration.haproxy_shift"

HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend web
    bind 127.0.0.1:{port}
    default_backend app
backend app
    balance roundrobin
    http-reuse never
    server blue 127.0.0.1:{blue} weight 100
    server green 127.0.0.1:{green} weight 0{green_check}
"""


class Side:
    """A throwaway HTTP server; `fail_every` > 0 answers 500 to every n-th request, `refuse_every`
    > 0 resets every n-th connection before reading it (SO_LINGER 0), `delay` sleeps first."""

    def __init__(self):
        self.fail_every = 0
        self.refuse_every = 0
        self.delay = 0.0
        self.count = 0
        self.connections = 0
        self.lock = threading.Lock()
        side = self

        class Handler(BaseHTTPRequestHandler):
            def handle(self):
                with side.lock:
                    side.connections += 1
                    refusing = side.refuse_every and side.connections % side.refuse_every == 0
                if refusing:  # closed with a reset, unanswered: what HAProxy sees of a server refusing it
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                super().handle()

            def do_GET(self):
                with side.lock:
                    side.count += 1
                    failing = side.fail_every and side.count % side.fail_every == 0
                if side.delay:
                    time.sleep(side.delay)
                body = b"no\n" if failing else b"ok\n"
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(timeout=10)


class Load(Clients):
    """Clients sending GETs through HAProxy until stopped; counts the answers by status."""

    def __init__(self, port: int, clients: int = 4):
        self.url = f"http://127.0.0.1:{port}/"
        self.statuses: dict[int, int] = {}
        super().__init__(clients, "load")

    def run(self):
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:  # noqa: S310 - http://127.0.0.1 built here
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            with self.lock:
                self.statuses[status] = self.statuses.get(status, 0) + 1
            time.sleep(0.005)


def weights(socket_path: Path) -> dict[str, int]:
    return {row["srv_name"]: row["srv_uweight"] for row in runtime.servers_state(str(socket_path), "app")}


@contextlib.contextmanager
def throwaway_stack(tmp_path, green_check: str = ""):
    """(blue, green, HAProxy's port, its admin socket): a throwaway HAProxy in front of two sides;
    `green_check` (e.g. " check inter 200ms") health-checks green."""
    blue, green = Side(), Side()
    port, socket_path = free_port(), tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(socket=socket_path, port=port, blue=blue.port, green=green.port, green_check=green_check))
    process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the throwaway HAProxy did not start"
            time.sleep(0.05)
        yield blue, green, port, socket_path
    finally:
        process.terminate()
        process.wait(timeout=10)
        blue.close()
        green.close()


@pytest.fixture()
def stack(tmp_path):
    with throwaway_stack(tmp_path) as sides:
        yield sides


def args(socket_path: Path, **extra) -> dict:
    defaults = dict(socket=str(socket_path), backend="app", from_server="blue", to_server="green", hold=2, interval=0.25, min_requests=10)
    return dict(defaults, **extra)


def shift(socket_path: Path, check: bool = False, diff: bool = False, **extra) -> dict:
    """haproxy_shift's result, run through a one-task play."""
    return run_module(SHIFT, args(socket_path, **extra), check=check, diff=diff)[1]


def test_healthy_shift_reaches_100_without_alarm_then_changes_nothing(stack):
    _blue, _green, port, socket_path = stack
    # check mode: the plan from where the weights stand, nothing changed
    result = shift(socket_path, check=True, diff=True)
    assert not result["failed"] and result["changed"], result.get("msg")
    assert result["plan"] == [10, 25, 50, 75, 100] and result["start_percent"] == 0
    assert "set weight app/green 10" in result["commands"] and result["diff"]["after"]["percent"] == 100
    assert weights(socket_path) == {"blue": 100, "green": 0}

    with Load(port) as load:
        result = shift(socket_path, hold=1.5, gates={"max_response_ms": 200, "max_response_ratio": 10})
    assert not result["failed"] and result["changed"], result.get("msg")
    assert [step["percent"] for step in result["steps"]] == [10, 25, 50, 75, 100]
    assert all(step["breached"] is None for step in result["steps"])
    assert all(step["new"]["requests"] >= 10 for step in result["steps"]), result["steps"]
    assert result["percent"] == 100 and weights(socket_path) == {"blue": 0, "green": 100}
    assert set(load.statuses) == {200}, load.statuses
    # shares follow the weights: at 75 % green took most of the step's requests
    step75 = result["steps"][3]
    assert step75["new"]["requests"] > step75["old"]["requests"]

    # a second run at 100 % changes nothing
    result = shift(socket_path)
    assert not result["failed"] and not result["changed"] and result["plan"] == [] and result["commands"] == []


def test_5xx_on_the_new_side_is_caught_and_rolled_back_to_the_last_good_step(stack):
    _blue, green, port, socket_path = stack
    with Load(port):
        result = shift(socket_path, steps=[10])
        assert not result["failed"] and result["changed"], result.get("msg")
        assert weights(socket_path) == {"blue": 90, "green": 10}
        green.fail_every = 5  # 20 % of green's answers are 500 from now on
        started = time.monotonic()
        result = shift(socket_path, steps=[10, 25, 50, 100], hold=20, gates={"max_5xx_share": 0.05})
        took = time.monotonic() - started
    assert result["failed"] and result["changed"]
    assert result["plan"] == [25, 50, 100] and result["start_percent"] == 10
    breached = result["breached"]
    assert breached["metric"] == "hrsp_5xx_share" and breached["gate"] == "max_5xx_share" and breached["step"] == 25
    assert 0.1 <= breached["value"] <= 0.3, breached
    assert "hrsp_5xx_share" in result["msg"] and "max_5xx_share 0.05" in result["msg"] and str(breached["value"]) in result["msg"]
    assert result["rolled_back_to"] == 10 and weights(socket_path) == {"blue": 90, "green": 10}
    assert took < 20, f"the breach was not caught before the hold ended ({took:.1f} s)"


def test_a_slow_new_side_breaches_the_response_time_gate(stack):
    _blue, green, port, socket_path = stack
    green.delay = 0.3
    with Load(port, clients=8):
        result = shift(socket_path, steps=[10, 50, 100], hold=6, min_requests=5, gates={"max_response_ms": 150})
    assert result["failed"] and result["changed"], result.get("msg")
    breached = result["breached"]
    assert breached["metric"] == "rtime_ms" and breached["gate"] == "max_response_ms" and breached["step"] == 10
    assert breached["value"] >= 250, breached
    assert "rtime_ms" in result["msg"] and "max_response_ms 150" in result["msg"]
    assert result["rolled_back_to"] == 0 and weights(socket_path) == {"blue": 100, "green": 0}


def test_a_new_side_refusing_connections_breaches_the_error_rate_gate(stack):
    _blue, green, port, socket_path = stack
    green.close()  # nothing listens on green's port: HAProxy's connections to it are refused (econ)
    with Load(port):
        result = shift(socket_path, steps=[10, 50, 100], hold=6)
    assert result["failed"] and result["changed"], result.get("msg")
    breached = result["breached"]
    assert breached["metric"] == "error_rate" and breached["gate"] == "max_error_rate" and breached["step"] == 10, breached
    new = result["steps"][-1]["new"]
    assert breached["value"] > 0.5 and new["econ"] + new["wretr"] > 0, new
    assert "error_rate" in result["msg"] and "max_error_rate 0.02" in result["msg"]
    assert result["rolled_back_to"] == 0 and weights(socket_path) == {"blue": 100, "green": 0}


def test_a_new_side_refusing_a_fifth_of_its_connections_breaches_the_error_rate_gate(stack):
    _blue, green, port, socket_path = stack
    green.refuse_every = 5  # 20 % of the connections HAProxy opens to green are reset unanswered
    with Load(port):
        result = shift(socket_path, steps=[10, 50, 100], hold=6)
    assert result["failed"] and result["changed"], result.get("msg")
    breached = result["breached"]
    assert breached["metric"] == "error_rate" and breached["gate"] == "max_error_rate" and breached["step"] == 10, breached
    assert 0.05 <= breached["value"] <= 0.5, breached  # about a fifth: not every connection, as above
    new = result["steps"][-1]["new"]
    assert new["eresp"] + new["econ"] + new["wretr"] > 0, new
    assert result["rolled_back_to"] == 0 and weights(socket_path) == {"blue": 100, "green": 0}


def test_bad_input_names_the_problem_and_the_fix(stack, tmp_path):
    _blue, _green, _port, socket_path = stack
    result = shift(socket_path, backend="nope")
    assert result["failed"] and "no backend 'nope'" in result["msg"] and "app" in result["msg"], result["msg"]
    result = shift(socket_path, to_server="red")
    assert result["failed"] and "no server 'red'" in result["msg"] and "blue, green" in result["msg"], result["msg"]
    result = shift(tmp_path / "missing.sock")
    assert result["failed"] and "cannot reach HAProxy" in result["msg"] and "stats socket" in result["msg"], result["msg"]
    result = shift(socket_path, steps=[50, 10])
    assert result["failed"] and "rising order" in result["msg"], result["msg"]
    assert weights(socket_path) == {"blue": 100, "green": 0}


def server_state(socket_path: Path, name: str) -> dict:
    return next(row for row in runtime.servers_state(str(socket_path), "app") if row["srv_name"] == name)


def wait_running(socket_path: Path, name: str, running: bool) -> None:
    """Until `name` is up (running) or down by its checks, at most 10 s."""
    deadline = time.monotonic() + 10
    while (server_state(socket_path, name)["srv_op_state"] == runtime.RUNNING) != running:
        assert time.monotonic() < deadline, f"{name} did not go {'up' if running else 'down'}"
        time.sleep(0.1)


def shift_reads_playbook(socket_path: Path, tmp_path: Path, percent: int) -> object:
    """playbooks/shift_reads.yml against the throwaway HAProxy (a local inventory, backend app)."""
    host = {"ansible_connection": "local", "ansible_become": False, "ansible_python_interpreter": sys.executable}
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"haproxy_servers": {"hosts": {"localhost": host}}}}}))
    extravars = dict(haproxy_stats_socket=str(socket_path), haproxy_pg_read_backend="app", green_read_percent=percent)
    extravars.update(shift_reads_hold=1, shift_reads_interval=0.25, shift_reads_min_requests=5)
    return run_playbook("shift_reads.yml", inventory=str(inventory), extravars=extravars)


def test_reads_go_back_to_blue_while_green_is_in_maintenance(stack, tmp_path):
    """Green takes every read, then is disabled and stops answering: shift_reads.yml with
    green_read_percent=0 moves every read back to blue (gated on blue alone, in one step - green
    takes nothing anyway), leaves green in maintenance, and a second run changes nothing."""
    _blue, green, port, socket_path = stack
    result = shift(socket_path, steps=[100], hold=0)
    assert not result["failed"] and weights(socket_path) == {"blue": 0, "green": 100}, result.get("msg")
    assert runtime.command(str(socket_path), "set server app/green state maint", 2) == ""
    green.close()

    run = shift_reads_playbook(socket_path, tmp_path, 0)
    assert run.status == "successful", run.stdout
    [back] = run.task_results(SHIFT_BACK)
    assert back["changed"] and back["plan"] == [100] and back["weights"] == {"blue": 100, "green": 0}, back
    assert weights(socket_path) == {"blue": 100, "green": 0}
    assert int(server_state(socket_path, "green")["srv_admin_state"]) & 0x01, "green was taken out of maintenance"
    with Load(port) as load:
        time.sleep(1)
    assert set(load.statuses) == {200}, load.statuses

    again = shift_reads_playbook(socket_path, tmp_path, 0)
    assert again.status == "successful", again.stdout
    assert again.changed("localhost") == 0, again.changed_tasks()


def test_reads_go_back_to_blue_while_green_is_down_by_its_checks(tmp_path):
    """Green health-checked, taking every read, then down (nothing listens): haproxy_shift from
    green to blue is not gated on green, takes blue to 100 % in one held step judged on blue."""
    with throwaway_stack(tmp_path, green_check=" check inter 200ms fall 1 rise 1") as (_blue, green, port, socket_path):
        wait_running(socket_path, "green", True)
        result = shift(socket_path, steps=[100], hold=0)
        assert not result["failed"] and weights(socket_path) == {"blue": 0, "green": 100}, result.get("msg")
        green.close()
        wait_running(socket_path, "green", False)

        result = shift(socket_path, from_server="green", to_server="blue", steps=[10, 25, 50, 75, 100], hold=1)
        assert not result["failed"] and result["changed"], result.get("msg")
        assert result["plan"] == [100] and result["percent"] == 100 and weights(socket_path) == {"blue": 100, "green": 0}
        assert not any("state ready" in command for command in result["commands"]), result["commands"]
        with Load(port) as load:
            time.sleep(1)
        assert set(load.statuses) == {200}, load.statuses

        # going back forward to green while it is down is refused, nothing changed
        result = shift(socket_path, steps=[50])
        assert result["failed"] and "green is not up" in result["msg"], result["msg"]
        assert weights(socket_path) == {"blue": 100, "green": 0}
