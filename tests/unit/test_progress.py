"""The progress core (common/progress.py) and its migration_state sink, with a fake clock."""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.progress import (
    CallableSink,
    Progress,
    Reporter,
    Sampler,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import migration_state
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.progress import StateTableSink, open_reporter


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


def test_rate_and_eta_follow_the_counts_over_time():
    clock = Clock()
    progress = Progress(total=1000, unit="rows", clock=clock)
    assert progress.rate() is None or progress.rate() == 0
    assert progress.eta() is None
    clock.tick(10)
    progress.update(100)
    assert progress.rate() == pytest.approx(10.0)
    assert progress.eta() == pytest.approx(90.0)
    assert progress.percent() == 10.0
    clock.tick(10)
    progress.update(300)
    assert progress.rate() == pytest.approx(15.0)  # 300 rows in 20 s
    assert progress.eta() == pytest.approx(700 / 15.0)
    progress.update(1000)
    assert progress.eta() == 0.0
    assert progress.snapshot()["percent"] == 100.0


def test_the_rate_is_over_a_sliding_window_so_a_slowdown_shows():
    clock = Clock()
    progress = Progress(total=20_000, clock=clock, window=30.0)
    for _step in range(10):  # 100 per second for 100 s
        clock.tick(10)
        progress.advance(1000)
    assert progress.rate() == pytest.approx(100.0)
    for _step in range(6):  # then 10 per second
        clock.tick(10)
        progress.advance(100)
    assert progress.rate() == pytest.approx(10.0, rel=0.05)
    assert progress.eta() == pytest.approx((20_000 - 10_600) / 10.0, rel=0.05)


def test_a_count_that_goes_down_restarts_the_rate_instead_of_going_negative():
    clock = Clock()
    progress = Progress(total=100, clock=clock)
    clock.tick(5)
    progress.update(50)
    clock.tick(5)
    progress.update(10)  # the copy started over
    assert progress.rate() is None
    clock.tick(5)
    progress.update(20)
    assert progress.rate() == pytest.approx(2.0)


def test_no_rate_while_no_time_passed_and_no_eta_without_total_or_rate():
    clock = Clock()
    progress = Progress(clock=clock)
    progress.update(5)
    assert progress.rate() is None
    assert progress.eta() is None
    clock.tick(1)
    progress.update(5)
    assert progress.rate() == pytest.approx(5.0)  # 5 since the start
    assert progress.eta() is None  # no total


def test_the_reporter_emits_the_first_update_then_at_most_every_n_seconds_and_always_the_last():
    clock = Clock()
    seen = []
    reporter = Reporter("copy", [CallableSink(seen.append)], unit="rows", total=100, every=5.0, clock=clock)
    assert reporter.update(1) is True
    for _step in range(4):
        clock.tick(1)
        assert reporter.update(reporter.progress.done + 1) is False
    clock.tick(1)
    assert reporter.update(10) is True
    assert reporter.update(11, force=True) is True
    reporter.finish()
    assert [snapshot["done"] for snapshot in seen] == [1, 10, 11, 11]
    assert seen[-1]["state"] == "done"
    assert seen[1]["total"] == 100
    assert seen[1]["rate"] == pytest.approx(10 / 5.0)  # 0 at the start -> 10 after 5 s


def test_a_failing_sink_never_raises_and_warns_once_per_problem():
    clock = Clock()

    class Broken:
        def write(self, snapshot):
            raise PgError("the table is gone")

    seen = []
    reporter = Reporter("copy", [Broken(), CallableSink(seen.append)], every=1.0, clock=clock)
    for done in range(5):
        clock.tick(2)
        reporter.update(done)
    reporter.finish("failed")
    assert reporter.warnings == ["progress of step 'copy' was not recorded: the table is gone"]
    assert len(seen) == 6  # the other sink still got every snapshot
    assert seen[-1]["state"] == "failed"


def test_on_progress_is_the_callable_a_copy_module_is_given():
    clock = Clock()
    seen = []
    reporter = Reporter("sqlite_copy", [CallableSink(seen.append)], every=0.0, clock=clock)
    reporter.on_progress("users", 50, 100, 25.0, 2.0)
    clock.tick(1)
    reporter.on_progress("orders", 10, 1000, 10.0, 99.0)
    last = seen[-1]
    assert (last["done"], last["total"], last["unit"]) == (60, 1100, "rows")
    assert last["items"]["users"]["rate"] == 25.0
    assert last["items"]["orders"]["eta_seconds"] == 99.0
    assert last["items"]["orders"]["total"] == 1000


def test_a_reporter_without_sinks_counts_and_emits_nothing():
    reporter = open_reporter(None, "build")
    assert not reporter.enabled
    assert reporter.update(5, 10) is False
    reporter.finish()
    assert reporter.warnings == []


def test_check_mode_opens_no_sink():
    opened = []
    reporter = open_reporter({"phase": "p", "step": "s", "every": 1.0}, "build", check_mode=True, opener=opened.append)
    reporter.update(1, 2, force=True)
    reporter.finish()
    assert not reporter.enabled
    assert opened == []


def test_a_sink_that_cannot_connect_warns_once_and_does_not_retry_every_time():
    attempts = []

    def opener(options, check_mode=False):
        attempts.append(options)
        raise PgError("connection refused by 127.0.0.1:1")

    reporter = open_reporter({"phase": "p", "step": None, "every": 0.0}, "build", opener=opener)
    assert reporter.step == "build"
    for done in range(3):
        reporter.update(done)
    reporter.finish()
    assert len(attempts) == 1
    assert reporter.warnings == [
        "progress of step 'build' was not recorded: cannot connect to the migration_state database (options under progress): "
        "connection refused by 127.0.0.1:1"
    ]
    assert isinstance(reporter.sinks[0], StateTableSink)


def test_the_sampler_feeds_the_reporter_while_the_work_blocks_and_stops_with_it():
    seen = []
    reporter = Reporter("build", [CallableSink(seen.append)], every=0.0)
    counter = iter(range(1, 1000))
    failed = threading.Event()

    def sample():
        value = next(counter)
        if value == 2:
            failed.set()
            raise RuntimeError("the view is not readable")
        return {"done": value, "total": 1000, "unit": "blocks"}

    with Sampler(reporter, sample, interval=0.01) as sampler:
        time.sleep(0.2)
    assert not sampler.thread.is_alive()
    count = len(seen)
    time.sleep(0.05)
    assert len(seen) == count  # nothing after the block
    assert count >= 3
    assert [snapshot["done"] for snapshot in seen] == sorted(snapshot["done"] for snapshot in seen)
    assert failed.is_set()
    assert reporter.warnings == ["progress of step 'build' could not be read: the view is not readable"]


def test_the_status_view_says_how_old_each_steps_progress_is_and_whether_it_is_stale():
    progress = {
        "copy": {"state": "running", "updated_epoch": 1000.0, "every": 5.0, "done": 1},
        "index": {"state": "running", "updated_epoch": 990.0, "every": 20.0, "done": 1},
        "old": {"state": "done", "updated_epoch": 100.0, "every": 5.0, "done": 1},
    }
    shown = migration_state.progress_view(progress, now_epoch=1040.0)
    assert shown["copy"]["age_seconds"] == 40.0
    assert shown["copy"]["stale"] is True  # more than 30 s
    assert shown["index"]["stale"] is False  # 50 s, but 3 reports of 20 s are 60 s
    assert shown["old"]["stale"] is False  # finished steps are not stale
    assert migration_state.row_view({"phase": "p", "status": "running", "progress": progress})["progress"]["copy"]["done"] == 1


def test_counting_another_unit_starts_a_rate_of_its_own():
    clock = Clock()
    seen = []
    reporter = Reporter("index", [CallableSink(seen.append)], every=0.0, clock=clock)
    clock.tick(10)
    reporter.update(2, 2, unit="lockers")
    clock.tick(10)
    reporter.update(500, 1000, unit="blocks")
    clock.tick(10)
    reporter.update(900, unit="blocks")
    assert (seen[-1]["unit"], seen[-1]["done"], seen[-1]["total"]) == ("blocks", 900, 1000)
    assert seen[-1]["rate"] == pytest.approx(40.0)  # 500 -> 900 in 10 s, not counted from the lockers
    assert seen[-1]["elapsed_seconds"] == 30.0


def test_no_rate_from_samples_a_moment_apart():
    clock = Clock()
    progress = Progress(total=1000, clock=clock)
    clock.tick(0.001)
    progress.update(250)
    assert progress.rate() is None
    assert progress.eta() is None
    clock.tick(1)
    progress.update(260)
    assert progress.rate() == pytest.approx(260 / 1.001)
