"""pg_switchover when the process running it dies: real signals to the module's process (and to
ansible-playbook's whole process group) while the write pause is held open, two PgBouncers in
front of blue and green, a client writing through each throughout.

The pause is held open after a chosen step by the module's test failpoint
(ZERODOWNTIME_SWITCHOVER_HOLD); the signal lands inside that hold. What must follow: writes
through every pooler succeed on the source within the timeout plus the guardian's margin, the
journal says who undid what, nothing acknowledged is lost, and the next run completes."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.rows import dict_row

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.failpoint import HOLD_VARIABLE, MARK_VARIABLE
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.switchover import HAPROXY_STEPS, POOLER_STEPS, STEPS
from tests.integration.test_pg_switchover import (  # pylint: disable=unused-import
    CLIENT,
    DB,
    FORWARD,
    MODULE,
    REVERSE,
    Writers,
    args,
    lab_pair,  # pylint: disable=unused-import # noqa: F401 - the fixture `pair` builds on
    readonly,
    rows_missing,
    subscriptions,
)
from tests.lab import (  # pylint: disable=unused-import
    HAPROXY_ADDRESS,
    HAPROXY_RUNTIME_API,
    HAPROXY_WRITES,
    LAB_PASSWORD,
    PG_SERVERS,
    ROOT,
    kill_tree,
    quick_worker_starts,  # pylint: disable=unused-import # noqa: F401 - the fixture `pair` builds on
    run_module,
    run_modules,
    ssh_session_of,
    start_held_module,
    throwaway_pgbouncer,
)
from tests.lab import wait_for as lab_wait_for

TIMEOUT = 4.0  # the write pause's bound in these tests
HOLD = 2.5  # how long the failpoint holds the pause after the chosen step
MARGIN = 1.0
SIDES = {"blue_to_green": ("blue", "green"), "green_to_blue": ("green", "blue")}  # (source, target)


@pytest.fixture()
def pair(quick_worker_starts, lab_pair):  # noqa: F811 # pylint: disable=redefined-outer-name,unused-argument
    """lab_pair (made after quick_worker_starts, undone before it ends) with a second PgBouncer on
    blue and a journal directory of the test's own."""
    with throwaway_pgbouncer({DB: lab_pair["blue"]}) as second, tempfile.TemporaryDirectory(prefix="zdm-journal-") as journal_dir:
        yield dict(lab_pair, bouncers=[lab_pair["bouncer"], second], journal_dir=journal_dir)


@pytest.fixture()
def haproxy_pair(quick_worker_starts, lab_pair):  # noqa: F811 # pylint: disable=redefined-outer-name,unused-argument
    """lab_pair with two PgBouncers whose pool points at the lab HAProxy's write frontend (lb-1:5000,
    blue its write server), a journal directory of the test's own, and the `haproxy` option: the
    switchover switches HAProxy instead of repointing the pools. Afterwards HAProxy sends writes to
    blue again, green in maintenance, as the lab's haproxy.cfg has them."""
    through = dict(lab_pair["blue"], login_host=HAPROXY_ADDRESS, login_port=HAPROXY_WRITES)
    assert write_backend() == {"blue": "up", "green": "maint"}, "the lab's HAProxy does not send writes to blue alone"
    try:
        with ExitStack() as stack:
            bouncers = [stack.enter_context(throwaway_pgbouncer({DB: through})), stack.enter_context(throwaway_pgbouncer({DB: through}))]
            journal_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="zdm-journal-"))
            yield dict(lab_pair, bouncers=bouncers, journal_dir=journal_dir, haproxy=[{"socket": HAPROXY_RUNTIME_API}])
    finally:
        for command in ("set server pg_write/blue state ready", "set server pg_write/green state maint"):
            runtime.command(HAPROXY_RUNTIME_API, command)


def write_backend() -> dict:
    """How the lab HAProxy's write backend holds blue and green: "maint" (in maintenance), "up" (running
    and ready), or the operational and admin states HAProxy shows."""
    shown = {}
    for row in runtime.servers_state(HAPROXY_RUNTIME_API, "pg_write"):
        op, admin = row["srv_op_state"], row["srv_admin_state"]
        shown[row["srv_name"]] = "maint" if admin & 0x01 else ("up" if op == 2 and not admin & 0x08 else f"op {op} admin {admin}")
    return shown


def module_args(pair: dict, direction: str, **overrides) -> dict:
    arguments = args(pair, direction, timeout=TIMEOUT, journal_dir=pair["journal_dir"], guardian_margin=MARGIN)
    arguments.pop("pgbouncer")
    arguments["pgbouncers"] = [dict(bouncer["admin"], database=DB, config_file=bouncer["config_file"]) for bouncer in pair["bouncers"]]
    if pair.get("haproxy"):
        arguments["haproxy"] = pair["haproxy"]
    arguments.update(overrides)
    return arguments


def journal(pair: dict) -> dict:
    path = Path(pair["journal_dir"]) / f"{DB}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def guardian_log(pair: dict) -> str:
    path = Path(pair["journal_dir"]) / f"{DB}.guardian.log"
    return path.read_text()[-2000:] if path.exists() else ""


def reached(pair: dict, predicate):
    """A condition for wait_for: the journal, once predicate(journal) holds."""

    def condition():
        record = journal(pair)
        return record if record and predicate(record) else None

    return condition


def began(step: str, run_before: str | None = None):
    """Whether a (new) run began `step` (the last one: reached the commit point)."""

    def check(record: dict) -> bool:
        begun = record.get("done", []) + ([STEPS[-1]] if record.get("state") == "committing" else [])
        return record.get("run_id") != run_before and step in begun

    return check


def wait_for(condition, timeout: float, what: str):
    """tests.lab.wait_for, polling every 20 ms (the switchover's steps are short)."""
    return lab_wait_for(f"timed out waiting for {what}", condition, timeout, interval=0.02)


def write_through(bouncer: dict) -> str:
    """One write through a pooler (waits while it is paused); returns the lab server that took it
    ("blue", "green"), by its address (both listen on port 5432)."""
    with psycopg.connect(port=bouncer["port"], autocommit=True, connect_timeout=30, **CLIENT) as conn:
        row = conn.execute("INSERT INTO history (writer, seq) VALUES (-1, nextval('standalone_seq')) RETURNING host(inet_server_addr())")
        address = row.fetchone()[0]
        return PG_SERVERS.get(address, address)


def interrupt(pair: dict, direction: str, step: str, how: str, workdir: Path, host: str = "lab-db", inventory: str | None = None) -> dict:
    """Start a switchover on `host` held after `step`, kill it (`how`: a signal name for the
    module's process, "controller" for SIGKILL to ansible-playbook's process group and every
    process it started, "ssh" to cut the SSH connection the module runs under), and return what
    happened: the journal, how long after the kill writes flowed through every pooler, and
    ansible-playbook's exit status."""
    before = journal(pair).get("run_id")
    process = start_held_module(MODULE, module_args(pair, direction), f"{step}:{HOLD}", workdir, host=host, inventory=inventory)
    try:
        record = wait_for(reached(pair, began(step, before)), 60, f"the switchover to reach {step}")
        time.sleep(0.3)  # the step itself takes milliseconds: now inside the hold
        if how == "controller":
            kill_tree(process.pid, spare=record["guardian_pid"])
        elif how == "ssh":
            for pid in ssh_session_of(record["pid"]):
                os.kill(pid, signal.SIGKILL)
        else:
            os.kill(record["pid"], getattr(signal, how))
        signalled = time.monotonic()
        servers = [write_through(bouncer) for bouncer in pair["bouncers"]]
        flowing_after = time.monotonic() - signalled
        returncode = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    final = wait_for(
        reached(pair, lambda r: r.get("state") in ("undone", "committed")),
        30,
        f"the guardian to end the run after {how} at {step}: journal {journal(pair)}, log {guardian_log(pair)}",
    )
    return {"journal": final, "servers": servers, "flowing_after": flowing_after, "returncode": returncode}


def pipe(command: str) -> str:
    """A template running a shell command (a Jinja expression) on the controller: a pipe lookup."""
    return f"{{{{ lookup('ansible.builtin.pipe', {command}) }}}}"


class HeldSeries:
    """One ansible-playbook running, for each (direction, step) of `plan` in turn: the switchover
    held after `step` (the run the test kills; its failpoint creates a marker file as the hold
    begins), then - once the test opens the step's first gate - the next run of the module, with
    no hold, whose result it writes to a file, then it waits at the step's second gate. Each run
    is a module process of its own, as with one ansible-playbook per run; the playbook starts once
    per series instead of twice per step. The gates are FIFOs a `cat` reads."""

    def __init__(self, pair: dict, plan: list[tuple[str, str]], workdir: Path):
        self.workdir, self.files = workdir, []
        tasks = []
        for number, (direction, step) in enumerate(plan):
            files = {name: workdir / f"{name}-{number}" for name in ("held", "gate", "result", "after")}
            for fifo in (files["gate"], files["after"]):
                os.mkfifo(fifo)
            self.files.append(files)
            hold = {HOLD_VARIABLE: f"{step}:{HOLD}", MARK_VARIABLE: str(files["held"])}
            gate, result, after = (shlex.quote(str(files[name])) for name in ("gate", "result", "after"))
            # the gates run on the controller (a pipe lookup in the worker), not as modules: no module start
            written = "{'failed': next_run is failed, 'result': next_run} | to_json | quote"
            write_result = f"'printf %s ' ~ ({written}) ~ ' > {result}.part && mv {result}.part {result} && cat {after}'"
            tasks += [
                {"name": f"held {number}", MODULE: module_args(pair, direction), "environment": hold, "ignore_errors": True},
                {"name": f"gate {number}", "ansible.builtin.set_fact": {"gate": pipe(f"'cat {gate}'")}},
                {"name": f"next run {number}", MODULE: module_args(pair, direction), "ignore_errors": True, "register": "next_run"},
                {"name": f"result {number}", "ansible.builtin.set_fact": {"gate": pipe(write_result)}},
            ]
        playbook = workdir / "series.yml"
        playbook.write_text(yaml.safe_dump([{"name": "held series", "hosts": "lab-db", "gather_facts": False, "tasks": tasks}]))
        self.log = workdir / "series.log"
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        command = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(ROOT / "inventories/lab"), str(playbook)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)

    def output(self) -> str:
        return self.log.read_text()[-3000:]

    def running(self) -> bool:
        assert self.process.poll() is None, f"the series' ansible-playbook ended ({self.process.returncode}): {self.output()}"
        return True

    def held(self, number: int) -> None:
        """Wait until run `number` is inside its hold (its failpoint created the marker)."""
        wait_for(lambda: self.running() and self.files[number]["held"].exists(), 60, f"hold {number} to begin: {self.output()}")

    def open_gate(self, number: int, which: str) -> None:
        """Let the playbook past gate `which` ("gate" or "after") of step `number`."""

        def opened() -> list[int]:
            try:
                return [os.open(self.files[number][which], os.O_WRONLY | os.O_NONBLOCK)]
            except OSError as exc:  # ENXIO: its `cat` has not opened it yet
                if exc.errno != errno.ENXIO:
                    raise
                self.running()
                return []

        [fd] = wait_for(opened, 60, f"{which} {number} to be read: {self.output()}")
        os.close(fd)  # end of file: the `cat` ends, the playbook goes on

    def next_run(self, number: int) -> tuple[bool, dict]:
        """Open the first gate of step `number` and return the next run's (failed, result)."""
        self.open_gate(number, "gate")
        path = self.files[number]["result"]
        wait_for(lambda: self.running() and path.exists(), 120, f"next run {number}: {self.output()}")
        written = json.loads(path.read_text())
        return written["failed"], written["result"]

    def close(self) -> None:
        if self.process.poll() is None:
            kill_tree(self.process.pid)
            self.process.wait(timeout=30)


def lock_free(pair: dict) -> bool:
    """Whether the pool's run lock is free (the guardian, which holds it while it lives, exited)."""
    fd = os.open(Path(pair["journal_dir"]) / f"{DB}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing releases the lock taken
    return True


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGKILL"])
def test_the_module_killed_at_each_step_is_undone_by_its_guardian(pair, how, tmp_path):
    directions = ["blue_to_green", "green_to_blue"]
    # the module handles none of the three: each ends it, and its guardian sees its stdin close.
    # SIGTERM and SIGKILL land after every step, SIGHUP after a freeze, a repoint and the point of no return
    steps = ("freeze_source", "repoint_pgbouncer", "resume_pgbouncer") if how == "SIGHUP" else POOLER_STEPS
    plan = [(directions[number % 2], step) for number, step in enumerate(steps)]
    with ExitStack() as stack:
        writers = [stack.enter_context(Writers(bouncer["port"], count=2, first=10 * n)) for n, bouncer in enumerate(pair["bouncers"])]
        series = HeldSeries(pair, plan, tmp_path)
        stack.callback(series.close)
        before = journal(pair).get("run_id")
        for number, (direction, step) in enumerate(plan):
            series.held(number)  # inside the hold: the signal lands in the pause
            held = journal(pair)
            assert began(step, before)(held), held
            os.kill(held["pid"], getattr(signal, how))
            signalled = time.monotonic()
            servers = [write_through(bouncer) for bouncer in pair["bouncers"]]
            flowing_after = time.monotonic() - signalled
            record = wait_for(
                reached(pair, lambda r: r.get("state") in ("undone", "committed")),
                30,
                f"the guardian to end the run after {how} at {step}: journal {journal(pair)}, log {guardian_log(pair)}",
            )
            wait_for(lambda: lock_free(pair), 30, f"the guardian of the run killed after {step} to exit: log {guardian_log(pair)}")
            outcome = {"journal": record, "servers": servers, "flowing_after": flowing_after}
            record, (source_side, target_side) = outcome["journal"], SIDES[direction]
            context = f"{how} after {step} ({direction}): {record.get('reason')}"
            assert outcome["flowing_after"] < TIMEOUT + MARGIN, context
            if step == STEPS[-1]:  # clients already wrote to the target: the guardian finishes the switchover
                assert record["state"] == "committed" and record["finished_by"] == "guardian", context
                assert outcome["servers"] == [target_side, target_side], context
            else:
                assert record["state"] == "undone" and record["undo_by"] == "guardian", context
                assert "process ended" in record["reason"], context
                assert step in record["done"], context
                assert all(entry["ok"] for entry in record["undone"]), record["undone"]
                assert outcome["servers"] == [source_side, source_side], context
                source = pair["blue"] if direction == "blue_to_green" else pair["green"]
                assert readonly(source) == "off", context
            # the next run says what happened and completes the switchover
            failed, result = series.next_run(number)
            assert not failed, (context, result.get("msg"))
            assert result["switched"] is True and result["repaired"] is None, context
            assert result["previous_run"]["run_id"] == record["run_id"], context
            assert write_through(pair["bouncers"][0]) == target_side == write_through(pair["bouncers"][1]), context
            before = journal(pair)["run_id"]  # the next run's: the following step's held run is a new one
            series.open_gate(number, "after")
        assert series.process.wait(timeout=60) == 0, series.output()
    for writer in writers:
        assert writer.errors == [], writer.errors[:3]
        assert len(writer.committed) > 50
        assert rows_missing(pair["blue"], writer.committed) == set()
        assert rows_missing(pair["green"], writer.committed) == set()


def test_sigkill_to_the_whole_controller_is_undone(pair, tmp_path):
    with Writers(pair["bouncers"][1]["port"], count=2, first=20) as writers:
        outcome = interrupt(pair, "blue_to_green", "wait_for_catch_up", "controller", tmp_path)
    assert outcome["journal"].get("undo_by") == "guardian" and outcome["journal"]["state"] == "undone", outcome["journal"]
    assert outcome["servers"] == ["blue", "blue"]
    assert outcome["flowing_after"] < TIMEOUT + MARGIN
    assert writers.errors == [] and rows_missing(pair["blue"], writers.committed) == set()
    assert subscriptions(pair["green"]) == {FORWARD: True} and subscriptions(pair["blue"]) == {}


def test_a_hung_module_is_undone_at_the_deadline_plus_the_margin(pair, tmp_path):
    """SIGSTOP: the module lives but does nothing; the guardian acts at the deadline + margin.
    Continued afterwards, the module finds the run taken over and says so."""
    held = tmp_path / "held"  # created as the hold after the freeze begins: the stop lands there
    process = start_held_module(MODULE, module_args(pair, "blue_to_green"), f"freeze_source:{HOLD}", tmp_path, mark=held)
    wait_for(held.exists, 60, "the freeze")
    record = journal(pair)
    os.kill(record["pid"], signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        servers = [write_through(bouncer) for bouncer in pair["bouncers"]]
        waited = time.monotonic() - stopped
    finally:
        os.kill(record["pid"], signal.SIGCONT)
    process.wait(timeout=60)
    final = journal(pair)
    assert servers == ["blue", "blue"]
    assert TIMEOUT - 1 < waited < TIMEOUT + MARGIN + 1.5, waited
    assert final["undo_by"] == "guardian" and "deadline" in final["reason"] and final["state"] == "undone"
    assert readonly(pair["blue"]) == "off" and subscriptions(pair["green"]) == {FORWARD: True}


def test_a_step_run_late_by_a_stalled_module_is_undone_by_the_module(pair, tmp_path):
    """The module stalls after its deadline check, before freezing the source; the guardian undoes
    the run at the deadline + margin; the module wakes and freezes the source. It must see the run
    taken over and undo its late step, or the source stays read-only for good."""
    process = start_held_module(
        MODULE, module_args(pair, "blue_to_green"), f"before freeze_source:{TIMEOUT + MARGIN + 4}", tmp_path, json_output=True
    )
    wait_for(reached(pair, began("freeze_source")), 60, "the freeze")
    servers = [write_through(bouncer) for bouncer in pair["bouncers"]]  # wait for the guardian's undo
    assert readonly(pair["blue"]) == "off"  # the module still sleeps: the freeze is yet to come
    result = next(iter(json.loads(process.communicate(timeout=60)[0])["plays"][0]["tasks"][0]["hosts"].values()))
    final = journal(pair)
    assert result["failed_step"] == "freeze_source" and "guardian took over" in " ".join(result.get("warnings", [])), result
    assert [step["step"] for step in result["steps"]][-1] == "freeze_source"  # it ran, late
    assert servers == ["blue", "blue"]
    assert readonly(pair["blue"]) == "off" and subscriptions(pair["green"]) == {FORWARD: True}
    assert [write_through(bouncer) for bouncer in pair["bouncers"]] == ["blue", "blue"]
    assert final["undo_by"] == "guardian" and final["state"] == "undone"
    late = {entry["step"]: entry["ok"] for entry in final.get("undone_late_by_module", [])}
    assert late.get("unfreeze_source") is True and late.get("resume_pgbouncer") is True, final


def test_killing_the_guardian_alone_does_not_disturb_the_switchover(pair, tmp_path):
    with Writers(pair["bouncers"][0]["port"], count=2, first=30) as writers:
        process = start_held_module(MODULE, module_args(pair, "blue_to_green"), "freeze_source:1", tmp_path)
        record = wait_for(reached(pair, lambda r: r.get("guardian_pid") and began("freeze_source")(r)), 60, "the guardian")
        os.kill(record["guardian_pid"], signal.SIGKILL)
        assert process.wait(timeout=60) == 0
    final = journal(pair)
    assert final["state"] == "committed"
    assert write_through(pair["bouncers"][0]) == "green" == write_through(pair["bouncers"][1])
    assert writers.errors == [] and rows_missing(pair["green"], writers.committed) == set()


def test_leftovers_of_a_run_whose_guardian_died_too_are_repaired_by_the_next_run(pair, tmp_path):
    """The host 'rebooted': guardian and module killed inside the pause. Pools stay paused, blue
    stays frozen, until the next run repairs them and switches."""
    held = tmp_path / "held"  # created as the hold after the step begins: the kill lands there
    process = start_held_module(MODULE, module_args(pair, "blue_to_green"), f"disable_forward_subscription:{HOLD}", tmp_path, mark=held)
    wait_for(held.exists, 60, "the forward subscription disabled")
    record = journal(pair)
    os.kill(record["guardian_pid"], signal.SIGKILL)
    kill_tree(process.pid, spare=record["guardian_pid"])
    process.wait(timeout=30)
    time.sleep(TIMEOUT + MARGIN)
    assert journal(pair)["state"] == "pausing"
    assert readonly(pair["blue"]) == "on" and subscriptions(pair["green"]) == {FORWARD: False}
    admin = pair["bouncers"][0]["admin"]
    with psycopg.connect(
        host=admin["login_host"],
        port=admin["login_port"],
        user=admin["login_user"],
        password=admin["login_password"],
        dbname="pgbouncer",
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
        row_factory=dict_row,
    ) as console:
        paused = {row["name"]: row["paused"] for row in console.execute("SHOW DATABASES").fetchall()}
    assert paused[DB] == 1

    check = run_module(MODULE, module_args(pair, "blue_to_green"), check=True)[1]
    assert not check["failed"], check["msg"]
    assert check["repaired"]["action"] == "would undo"
    assert readonly(pair["blue"]) == "on"  # check mode repaired nothing

    with Writers(pair["bouncers"][1]["port"], count=2, first=40) as writers:  # they wait on the paused pool first
        result = run_module(MODULE, module_args(pair, "blue_to_green"))[1]
        assert not result["failed"], result["msg"]
        time.sleep(0.5)
    assert result["repaired"]["action"] == "undone" and result["repaired"]["by"] == "next run"
    assert result["switched"] is True and result["previous_run"]["state"] == "pausing"
    assert write_through(pair["bouncers"][0]) == "green"
    assert writers.errors == [] and rows_missing(pair["green"], writers.committed) == set()
    assert subscriptions(pair["blue"]) == {REVERSE: True}


def test_two_poolers_one_stopped_is_refused_before_pausing(pair):
    arguments = module_args(pair, "blue_to_green")
    arguments["pgbouncers"][1]["login_port"] = 1  # nothing listens there
    result = run_module(MODULE, arguments)[1]
    assert result["failed"] is True
    assert "pgbouncers[1]" in result["msg"], result["msg"]
    assert not any(query.startswith("PAUSE") for query in result["queries"])
    assert write_through(pair["bouncers"][0]) == "blue" and readonly(pair["blue"]) == "off"


def test_one_pooler_killed_inside_the_pause_resumes_every_pooler_on_blue(pair, tmp_path):
    second = pair["bouncers"][1]
    with Writers(pair["bouncers"][0]["port"], count=2, first=50) as writers:
        process = start_held_module(MODULE, module_args(pair, "blue_to_green"), f"wait_for_catch_up:{HOLD}", tmp_path)
        wait_for(reached(pair, began("wait_for_catch_up")), 60, "the catch-up")
        second["stop"]()
        process.wait(timeout=60)
        record = journal(pair)
        assert record["state"] == "undone" and record["undo_by"] == "module", record
        assert write_through(pair["bouncers"][0]) == "blue"
        second["start"]()
        assert write_through(second) == "blue"  # its pgbouncer.ini was never repointed
    assert "repointing the pool failed" in record["reason"] and "pgbouncers[1]" in record["reason"], record["reason"]
    assert writers.errors == [] and rows_missing(pair["blue"], writers.committed) == set()
    assert readonly(pair["blue"]) == "off" and subscriptions(pair["green"]) == {FORWARD: True}


def test_twenty_switchovers_under_load_through_two_poolers_lose_nothing(pair):
    with ExitStack() as stack:
        writers = [stack.enter_context(Writers(bouncer["port"], count=2, first=60 + 10 * n)) for n, bouncer in enumerate(pair["bouncers"])]
        directions = ["blue_to_green", "green_to_blue"]
        # one ansible-playbook, twenty tasks: each is a run of the module of its own, in turn
        results = run_modules(MODULE, [module_args(pair, directions[number % 2]) for number in range(20)])[1]
        pauses = []
        for number, result in enumerate(results):
            assert not result["failed"], (number, result["msg"])
            pauses.append(result["write_pause_ms"])
    assert max(pauses) < 1000, pauses
    for writer in writers:
        assert writer.errors == []
        assert rows_missing(pair["blue"], writer.committed) == set()
        assert rows_missing(pair["green"], writer.committed) == set()


# --- behind HAProxy: the pools stay on its write frontend, the switchover switches its write backend ---------------
def pool_endpoints(pair: dict) -> list[tuple[str, int]]:
    """(host, port) each PgBouncer of the pair sends the pool to."""
    endpoints = []
    for bouncer in pair["bouncers"]:
        admin = bouncer["admin"]
        options = {
            "host": admin["login_host"],
            "port": admin["login_port"],
            "user": admin["login_user"],
            "password": admin["login_password"],
        }
        with psycopg.connect(dbname="pgbouncer", autocommit=True, cursor_factory=psycopg.ClientCursor, **options) as console:
            endpoints += [(row[1], int(row[2])) for row in console.execute("SHOW DATABASES").fetchall() if row[0] == DB]
    return endpoints


def test_behind_haproxy_writes_move_to_green_and_back_losing_nothing(haproxy_pair):
    pair = haproxy_pair
    on_haproxy = [(HAPROXY_ADDRESS, HAPROXY_WRITES)] * 2
    with ExitStack() as stack:
        writers = [stack.enter_context(Writers(bouncer["port"], count=2, first=70 + 10 * n)) for n, bouncer in enumerate(pair["bouncers"])]
        run, result = run_module(MODULE, module_args(pair, "blue_to_green"), diff=True)
        assert not result["failed"], result["msg"]
        assert [step["step"] for step in result["steps"]] == [name for name in HAPROXY_STEPS if name != "unfreeze_target"]
        assert result["switched"] is True and result["write_pause_ms"] < 1000, result["steps"]
        assert write_backend() == {"blue": "maint", "green": "up"}
        assert [write_through(bouncer) for bouncer in pair["bouncers"]] == ["green", "green"]
        assert pool_endpoints(pair) == on_haproxy  # the pools were not repointed
        told = [query for query in result["queries"] if query.startswith(("set server", "shutdown sessions"))]
        assert told == [
            f"set server pg_write/green state ready (on {HAPROXY_RUNTIME_API})",
            f"set server pg_write/green health up (on {HAPROXY_RUNTIME_API})",
            f"set server pg_write/blue state maint (on {HAPROXY_RUNTIME_API})",
            f"shutdown sessions server pg_write/blue (on {HAPROXY_RUNTIME_API})",
        ]
        shown = {when: result["diff"][when]["haproxy_write_server"] for when in ("before", "after")}
        assert shown == {"before": {f"{HAPROXY_RUNTIME_API} pg_write": "blue"}, "after": {f"{HAPROXY_RUNTIME_API} pg_write": "green"}}
        assert result["serving"]["host"] == pair["green"]["login_host"]
        assert LAB_PASSWORD not in run.stdout
        # again: nothing to do; then the way back, through HAProxy too
        again, back = run_modules(MODULE, [module_args(pair, "blue_to_green"), module_args(pair, "green_to_blue")])[1]
        assert not again["failed"] and again["changed"] is False and again["switched"] is True, again.get("msg")
        assert not back["failed"], back["msg"]
        assert back["switched"] is True and "unfreeze_target" in [step["step"] for step in back["steps"]]
        time.sleep(0.5)  # writes on blue after the way back
    assert write_backend() == {"blue": "up", "green": "maint"}  # green was in maintenance before it took writes
    assert [write_through(bouncer) for bouncer in pair["bouncers"]] == ["blue", "blue"]
    assert pool_endpoints(pair) == on_haproxy
    for writer in writers:
        assert writer.errors == [], writer.errors[:3]
        assert len(writer.committed) > 50
        assert rows_missing(pair["blue"], writer.committed) == set()
        assert rows_missing(pair["green"], writer.committed) == set()


@pytest.mark.parametrize(("step", "finished"), [("switch_haproxy", False), ("resume_pgbouncer", True)])
def test_behind_haproxy_the_module_killed_after_switching_is_undone_or_finished_by_its_guardian(haproxy_pair, tmp_path, step, finished):
    """SIGKILL once HAProxy sends writes to green: inside the pause the guardian makes blue the write
    server again; once the pools resumed on green (committing) it finishes the switch instead."""
    outcome = interrupt(haproxy_pair, "blue_to_green", step, "SIGKILL", tmp_path)
    record, side = outcome["journal"], "green" if finished else "blue"
    assert outcome["flowing_after"] < TIMEOUT + MARGIN, record
    assert outcome["servers"] == [side, side], record
    assert write_backend() == ({"blue": "maint", "green": "up"} if finished else {"blue": "up", "green": "maint"})
    if finished:
        assert record["state"] == "committed" and record["finished_by"] == "guardian", record
    else:
        assert record["state"] == "undone" and record["undo_by"] == "guardian", record
        assert {"step": "switch_haproxy_to_source", "ok": True} in [
            {key: entry[key] for key in ("step", "ok")} for entry in record["undone"]
        ]
        assert readonly(haproxy_pair["blue"]) == "off"
    assert record["facts"]["haproxy"][0]["target_server"] == "green"
    # the next run completes the switch (or finds it done)
    result = run_module(MODULE, module_args(haproxy_pair, "blue_to_green"))[1]
    assert not result["failed"], result["msg"]
    assert result["switched"] is True and write_backend() == {"blue": "maint", "green": "up"}
    assert [write_through(bouncer) for bouncer in haproxy_pair["bouncers"]] == ["green", "green"]


def test_behind_haproxy_bad_input_is_refused_before_anything_changes(haproxy_pair):
    pair = haproxy_pair
    direct = [dict(pair["bouncer"]["admin"], database=DB)]  # lab_pair's PgBouncer: its pool points at blue itself
    cases = [
        module_args(pair, "blue_to_green", pgbouncers=direct),
        module_args(pair, "blue_to_green", haproxy=[{"socket": f"{HAPROXY_ADDRESS}:1", "timeout": 1}]),
        module_args(pair, "blue_to_green", haproxy=[{"socket": HAPROXY_RUNTIME_API, "backend": "no_such_backend"}]),
    ]
    refused = run_modules(MODULE, cases)[1]
    assert all(result["failed"] for result in refused), refused
    pool, unreachable, backend = (result["msg"] for result in refused)
    assert f"sends pool '{DB}' to {pair['blue']['login_host']}:5432/{DB}" in pool and "haproxy_pg_write_bind" in pool, pool
    assert f"cannot reach HAProxy's runtime API at {HAPROXY_ADDRESS}:1" in unreachable and "nothing was changed" in unreachable, unreachable
    assert "no_such_backend" in backend and "nothing was changed" in backend, backend
    assert not any(query.startswith("PAUSE") for result in refused for query in result.get("queries") or [])
    # check mode: the steps a run would take, and what HAProxy would be told to do; nothing changes
    check = run_module(MODULE, module_args(pair, "blue_to_green"), check=True, diff=True)[1]
    assert not check["failed"], check["msg"]
    assert [step["step"] for step in check["steps"]] == [name for name in HAPROXY_STEPS if name != "unfreeze_target"]
    assert check["diff"]["after"]["haproxy_write_server"] == {f"{HAPROXY_RUNTIME_API} pg_write": "green"}
    assert write_backend() == {"blue": "up", "green": "maint"}
    assert [write_through(bouncer) for bouncer in pair["bouncers"]] == ["blue", "blue"]
    assert readonly(pair["blue"]) == "off" and subscriptions(pair["green"]) == {FORWARD: True}
