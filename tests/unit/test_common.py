"""The shared core every engine uses: Deadline and poll, the module runner."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.connection import Connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.deadline import Deadline, poll
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import Library, run_module


class Clock:
    """A clock that only moves when sleep() is called."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_deadline_counts_down_and_never_below_zero():
    clock = Clock()
    deadline = Deadline(2.0, clock=clock)
    clock.sleep(0.5)
    assert deadline.remaining() == pytest.approx(1.5) and not deadline.passed
    clock.sleep(2)
    assert deadline.remaining() == 0.0 and deadline.passed and deadline.elapsed() == pytest.approx(2.5)


def test_poll_returns_the_first_ready_answer():
    clock = Clock()
    answers = iter([0, 0, 7, 9])
    assert poll(lambda: next(answers), Deadline(10, clock=clock), on_timeout=pytest.fail, sleep=clock.sleep) == 7


def test_poll_raises_what_on_timeout_raises_with_the_last_answer_and_reports_progress():
    clock = Clock()
    reports = []

    def on_timeout(last):
        raise ModuleError(f"still {last}")

    with pytest.raises(ModuleError, match="still 3"):
        poll(
            lambda: 3,
            Deadline(12, clock=clock),
            on_timeout,
            ready=lambda lag: lag == 0,
            interval=1,
            report=lambda last, elapsed: reports.append(round(elapsed)),
            sleep=clock.sleep,
        )
    assert reports == [5, 10]


def test_poll_checks_once_more_at_the_deadline():
    clock = Clock()
    probed_at = []

    def probe():
        probed_at.append(clock.now - 100)
        return len(probed_at) == 4

    assert poll(probe, Deadline(3, clock=clock), on_timeout=pytest.fail, interval=1, sleep=clock.sleep) is True
    assert probed_at == [0, 1, 2, 3]


def test_poll_refuses_an_on_timeout_that_does_not_raise():
    clock = Clock()
    with pytest.raises(AssertionError):
        poll(lambda: False, Deadline(0, clock=clock), on_timeout=lambda last: None, sleep=clock.sleep)


def test_poll_without_on_timeout_returns_the_last_answer_at_the_deadline():
    clock = Clock()
    answers = iter(range(100))
    assert poll(lambda: next(answers), Deadline(3, clock=clock), None, ready=lambda n: n > 50, interval=1, sleep=clock.sleep) == 3
    assert poll(lambda: "x", Deadline(0, clock=clock), None, ready=lambda last: False, sleep=clock.sleep) == "x"


class DriverConnection:
    closed = 0

    def close(self):
        self.closed += 1


class Held(Connection):
    def __init__(self):
        self.conn = DriverConnection()


def test_a_connection_closes_its_driver_connection_at_the_end_of_a_with_block_even_on_error():
    with pytest.raises(ModuleError), Held() as held:
        raise ModuleError("boom")
    assert held.conn.closed == 1
    held.close()
    assert held.conn.closed == 2


class Exited(Exception):
    pass


class FakeModule:
    """What run_module uses of AnsibleModule."""

    def __init__(self):
        self.warnings = []
        self.result = None

    def warn(self, text):
        self.warnings.append(text)

    def exit_json(self, **result):
        self.result = dict(result, failed=False)
        raise Exited

    def fail_json(self, **result):
        self.result = dict(result, failed=True)
        raise Exited


class Connection:
    def __init__(self, name, log):
        self.name, self.log = name, log
        self.queries = [f"{name}: a statement"]

    def close(self):
        self.log.append(f"closed {self.name}")


def run(work, **kwargs):
    module = FakeModule()
    with pytest.raises(Exited):
        run_module(module, work, **kwargs)
    return module


def test_a_missing_library_fails_before_anything_is_opened():
    opened = []
    module = run(lambda opened: {}, openers={"a": lambda: opened.append("a")}, libraries=[Library(False, "psycopg >= 3.1", "No module")])
    assert module.result["failed"] and "psycopg >= 3.1" in module.result["msg"] and opened == []


def test_success_closes_every_connection_and_passes_warnings_on():
    log = []
    module = run(
        lambda opened: {"changed": True, "warnings": ["careful"]},
        openers={"a": lambda: Connection("a", log), "b": lambda: Connection("b", log)},
    )
    assert module.result == {"changed": True, "failed": False} and module.warnings == ["careful"]
    assert log == ["closed a", "closed b"]


def test_a_module_error_fails_with_its_details_and_every_connections_queries():
    log = []

    def work(opened):
        raise ModuleError("the slot is gone: create it", slot="green_sub")

    module = run(work, openers={"a": lambda: Connection("a", log), "b": lambda: Connection("b", log)})
    assert module.result["failed"] and module.result["msg"] == "the slot is gone: create it"
    assert module.result["slot"] == "green_sub" and module.result["changed"] is False
    assert module.result["queries"] == ["a: a statement", "b: a statement"] and log == ["closed a", "closed b"]


def test_details_and_on_failure_may_say_something_changed():
    def work(opened):
        raise ModuleError("promoted without the last writes", changed=True)

    module = run(work, on_failure=lambda opened, error: {"changed": False, "actions": ["promote"]})
    assert module.result["changed"] is True and module.result["actions"] == ["promote"]  # the error's own details win


def test_a_connection_that_fails_to_open_closes_those_already_open():
    log = []

    def refuse():
        raise ModuleError("connection refused by green:5432")

    module = run(lambda opened: {}, openers={"a": lambda: Connection("a", log), "b": refuse})
    assert module.result["msg"] == "connection refused by green:5432" and log == ["closed a"]
