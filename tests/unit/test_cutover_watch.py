"""pg_cutover_watch's gates and its loop (postgres/watch.py), on figures from an in-memory stand-in;
the integration tests (tests/integration/test_pg_cutover_watch.py) read real servers."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.watch import (
    Signals,
    WatchBreach,
    judge,
    latency,
    statement_deltas,
    statement_key,
    take_baseline,
    watch,
)
from tests.unit.test_common import Clock

INSERT = "INSERT INTO audit_log (tenant_id) VALUES ($1)"
SELECT = "SELECT id FROM tenants WHERE id = $1"
PARAMS = dict(
    watch_seconds=10.0,
    interval=1.0,
    max_rollback_rate=0.05,
    min_transactions=20,
    max_errors=None,
    max_latency_ratio=3.0,
    latency_floor_ms=5.0,
    min_calls=20,
    max_client_wait_ms=1000.0,
    max_reverse_lag_bytes=1048576,
    max_reverse_inactive_seconds=3.0,
)


class Client:
    endpoint = "127.0.0.12:5432"  # the lab's green


class FakeSignals:
    """A server whose figures move by `per_second` (a dict of changes) each second of the clock."""

    def __init__(self, clock, insert_ms=0.2, rollbacks_per_second=0, wait_ms=0.0, slot_active=True, lag_bytes=0):
        self.clock = clock
        self.client = Client()
        self.insert_ms = insert_ms
        self.rollbacks_per_second = rollbacks_per_second
        self.wait_ms = wait_ms
        self.slot_active = slot_active
        self.lag_bytes = lag_bytes
        self.calls = 0
        self.total = 0.0
        self.commits = 0
        self.rollbacks = 0
        self.last = clock()
        self.walsenders = [101]

    def advance(self):
        seconds = self.clock() - self.last
        self.last = self.clock()
        self.calls += int(100 * seconds)
        self.total += 100 * seconds * self.insert_ms
        self.commits += int(100 * seconds)
        self.rollbacks += int(self.rollbacks_per_second * seconds)

    def sample(self):
        self.advance()
        return {
            "walsenders": set(self.walsenders),
            "statements": {statement_key("app", INSERT): (self.calls, self.total, "app", INSERT)},
            "transactions": {"xact_commit": self.commits, "xact_rollback": self.rollbacks, "deadlocks": 0, "sessions_fatal": 0},
            "slot": {"active": self.slot_active, "lag_bytes": self.lag_bytes},
            "client_wait_ms": self.wait_ms,
        }


def changing_after(signals, clock, seconds, change):
    """`signals` whose sample() passes through change(figures) from `seconds` on (None: unchanged)."""
    real_sample = signals.sample
    at = clock() + seconds

    def sample():
        return change(real_sample) if clock() >= at else real_sample()

    signals.sample = sample
    return signals


def baseline_of(clock, **figures):
    return take_baseline(FakeSignals(clock, **figures), 5, sleep=clock.sleep, clock=clock)


def test_a_baseline_is_blues_mean_per_statement_over_its_window():
    clock = Clock()
    baseline = baseline_of(clock, insert_ms=0.4)
    assert baseline["seconds"] == 5 and baseline["calls"] == 500
    [entry] = baseline["statements"]
    assert entry["query"] == INSERT and entry["mean_ms"] == pytest.approx(0.4) and entry["calls"] == 500
    assert baseline["rollback_rate"] == 0


def test_a_healthy_green_passes_every_interval():
    clock = Clock()
    baseline = baseline_of(clock)
    result = watch(FakeSignals(clock, insert_ms=0.3), PARAMS, baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and len(result["samples"]) == 10
    assert result["samples"][-1]["latency"]["ratio"] == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("figures", "signal", "value"),
    [
        ({"insert_ms": 50.0}, "latency_ratio", 250.0),
        ({"rollbacks_per_second": 25}, "rollback_rate", 0.2),
        ({"wait_ms": 1500.0}, "client_wait_ms", 1500.0),
        ({"lag_bytes": 2 << 20}, "reverse_lag_bytes", 2 << 20),
    ],
)
def test_a_breach_ends_the_watch_in_the_first_interval_naming_signal_value_and_gate(figures, signal, value):
    clock = Clock()
    baseline = baseline_of(clock)
    with pytest.raises(WatchBreach) as caught:
        watch(FakeSignals(clock, **figures), PARAMS, baseline, sleep=clock.sleep, clock=clock)
    breach = caught.value.details["breach"]
    assert breach["signal"] == signal and breach["value"] == pytest.approx(value) and breach["at_s"] == 1.0
    assert signal in str(caught.value) and str(breach["gate"]) in str(caught.value)


def test_a_slot_without_walsender_breaches_only_past_its_grace():
    clock = Clock()
    baseline = baseline_of(clock)
    with pytest.raises(WatchBreach) as caught:
        watch(FakeSignals(clock, slot_active=False), PARAMS, baseline, sleep=clock.sleep, clock=clock)
    breach = caught.value.details["breach"]
    # inactive from the first sample: judged 1, 2, 3 s gone (not past 3), breached at 4 s
    assert breach["signal"] == "reverse_inactive_seconds" and breach["at_s"] == 4.0


def test_sub_millisecond_statements_never_breach_the_latency_ratio():
    clock = Clock()
    baseline = baseline_of(clock, insert_ms=0.01)
    result = watch(FakeSignals(clock, insert_ms=0.5), PARAMS, baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and result["samples"][0]["latency"]["ratio"] == 50


@pytest.mark.parametrize("off", [None, 0])
def test_a_gate_set_to_none_or_zero_is_off(off):
    clock = Clock()
    baseline = baseline_of(clock)
    params = dict(PARAMS, max_client_wait_ms=off, max_latency_ratio=off)
    assert watch(FakeSignals(clock, wait_ms=5000.0, insert_ms=50.0), params, baseline, sleep=clock.sleep, clock=clock)["healthy"]


def test_a_rollback_rate_of_zero_allows_no_rollback():
    clock = Clock()
    baseline = baseline_of(clock)
    with pytest.raises(WatchBreach):
        watch(FakeSignals(clock, rollbacks_per_second=1), dict(PARAMS, max_rollback_rate=0), baseline, sleep=clock.sleep, clock=clock)


def test_max_errors_counts_over_the_whole_watch():
    clock = Clock()
    baseline = baseline_of(clock)
    params = dict(PARAMS, max_rollback_rate=None, max_errors=10)
    with pytest.raises(WatchBreach) as caught:
        watch(FakeSignals(clock, rollbacks_per_second=3), params, baseline, sleep=clock.sleep, clock=clock)
    assert caught.value.details["breach"]["signal"] == "errors" and caught.value.details["breach"]["at_s"] == 4.0


def test_latency_needs_enough_calls_of_statements_the_baseline_knows():
    baseline = {"statements": [{"key": "a", "query": SELECT, "mean_ms": 1.0}, {"key": "c", "query": INSERT, "mean_ms": 1.0}]}
    assert latency({"a": (5, 500.0)}, baseline, min_calls=20) is None
    assert latency({"b": (500, 5000.0)}, baseline, min_calls=20) is None  # unknown to the baseline
    measured = latency({"a": (40, 80.0), "b": (500, 5000.0)}, baseline, min_calls=20)
    assert (measured["calls"], measured["mean_ms"], measured["baseline_ms"], measured["ratio"]) == (40, 2.0, 1.0, 2.0)


def test_one_hot_statement_slowed_is_caught_although_the_mean_of_all_is_not():
    """Nine fast statements and one 40 times slower: the mean of all stays under the floor."""
    clock = Clock()
    baseline = {"statements": [{"key": "a", "query": SELECT, "mean_ms": 0.2}, {"key": "c", "query": INSERT, "mean_ms": 0.2}]}
    measured = latency({"a": (900, 180.0), "c": (100, 800.0)}, baseline, min_calls=20)
    assert measured["mean_ms"] == pytest.approx(0.98) and measured["worst"]["query"] == INSERT and measured["worst"]["ratio"] == 40
    interval = {"transactions": {"total": 0, "rolled_back": 0, "rollback_rate": 0}, "latency": measured}
    params = dict(PARAMS, latency_floor_ms=5.0)
    [(signal, value, gate, meaning)] = judge(interval, params, {"errors": 0}, None, clock())
    assert (signal, value, gate) == ("latency_ratio", 40, 3.0) and INSERT in meaning


def test_a_reset_of_the_statistics_counts_from_zero_not_negative():
    before = {"a": (100, 50.0, "u", SELECT)}
    after = {"a": (7, 3.5, "u", SELECT)}
    assert statement_deltas(before, after) == {"a": (7, 3.5)}


def test_rollbacks_a_walsender_reports_as_it_ends_are_not_judged():
    """Logical decoding aborts each decoded transaction; an ending walsender reports them at once."""
    clock = Clock()
    baseline = baseline_of(clock)
    signals = FakeSignals(clock)

    def walsender_ended(real_sample):  # it reported 300 aborts; another walsender took its place
        signals.walsenders = [102]
        figures = real_sample()
        figures["transactions"]["xact_rollback"] += 300
        return figures

    changing_after(signals, clock, 2.5, walsender_ended)
    result = watch(signals, dict(PARAMS, max_errors=10), baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and result["errors"] == 0
    assert [sample["transactions"]["judged"] for sample in result["samples"]] == [True, True, False] + [True] * 7


def test_the_slowest_statement_is_chosen_among_those_above_the_floor():
    """A fast statement ten times slower (still under the floor) must not hide a slow one four times slower."""
    baseline = {"statements": [{"key": "a", "query": SELECT, "mean_ms": 0.1}, {"key": "b", "query": INSERT, "mean_ms": 10.0}]}
    measured = latency({"a": (10000, 10000.0), "b": (50, 2000.0)}, baseline, min_calls=20, floor_ms=5.0)
    assert measured["worst"]["query"] == INSERT and measured["worst"]["ratio"] == 4
    interval = {"transactions": {"total": 0, "rolled_back": 0, "rollback_rate": 0}, "latency": measured}
    [(signal, value, _gate, meaning)] = judge(interval, dict(PARAMS, latency_floor_ms=5.0), {"errors": 0}, None, 0)
    assert (signal, value) == ("latency_ratio", 4) and INSERT in meaning


def test_blues_own_rollbacks_raise_the_rollback_gate():
    """An application whose pool rolls back on every return rolls back half its transactions on blue too."""
    clock = Clock()
    baseline = baseline_of(clock, rollbacks_per_second=100)
    assert baseline["rollback_rate"] == 0.5
    assert watch(FakeSignals(clock, rollbacks_per_second=100), PARAMS, baseline, sleep=clock.sleep, clock=clock)["healthy"]
    with pytest.raises(WatchBreach) as caught:
        watch(FakeSignals(clock, rollbacks_per_second=150), PARAMS, baseline, sleep=clock.sleep, clock=clock)
    assert caught.value.details["breach"]["gate"] == 0.55


def test_a_slot_dropped_during_the_watch_is_a_breach():
    clock = Clock()
    baseline = baseline_of(clock)
    signals = changing_after(FakeSignals(clock), clock, 2.5, lambda real_sample: dict(real_sample(), slot=None))
    with pytest.raises(WatchBreach) as caught:
        watch(signals, PARAMS, baseline, sleep=clock.sleep, clock=clock)
    assert caught.value.details["breach"]["signal"] == "reverse_slot_missing"


def test_a_sample_that_fails_is_a_breach_naming_the_error():
    clock = Clock()
    baseline = baseline_of(clock)

    def timing_out(_real_sample):
        raise PgError("canceling statement due to statement timeout")

    signals = changing_after(FakeSignals(clock), clock, 2.5, timing_out)
    with pytest.raises(WatchBreach) as caught:
        watch(signals, PARAMS, baseline, sleep=clock.sleep, clock=clock)
    breach = caught.value.details["breach"]
    assert breach["signal"] == "unreadable" and "statement timeout" in breach["value"]


@pytest.mark.parametrize(("slow_seconds", "breached"), [(1, False), (2, True)])
def test_breach_samples_lets_one_loaded_interval_pass_and_catches_two_in_a_row(slow_seconds, breached):
    clock = Clock()
    baseline = baseline_of(clock)
    signals = FakeSignals(clock)
    real_advance = signals.advance
    start = clock()

    def advance():
        # inserts take 50 ms during the watch's 3rd second (and its 4th when slow_seconds is 2), 0.2 ms otherwise
        signals.insert_ms = 50.0 if 2 <= clock() - start - 1 < 2 + slow_seconds else 0.2
        real_advance()

    signals.advance = advance
    params = dict(PARAMS, breach_samples=2)
    if not breached:
        result = watch(signals, params, baseline, sleep=clock.sleep, clock=clock)
        assert result["healthy"] and max(sample["latency"]["ratio"] for sample in result["samples"]) == 250
        return
    with pytest.raises(WatchBreach) as caught:
        watch(signals, params, baseline, sleep=clock.sleep, clock=clock)
    breach = caught.value.details["breach"]
    assert breach["signal"] == "latency_ratio" and breach["samples_in_a_row"] == 2 and breach["at_s"] == 4.0
    assert "2 samples in a row" in str(caught.value)


def test_breach_samples_does_not_delay_the_reverse_slot_or_the_error_count():
    clock = Clock()
    baseline = baseline_of(clock)
    with pytest.raises(WatchBreach) as caught:
        watch(FakeSignals(clock, lag_bytes=2 << 20), dict(PARAMS, breach_samples=5), baseline, sleep=clock.sleep, clock=clock)
    assert caught.value.details["breach"]["signal"] == "reverse_lag_bytes" and caught.value.details["breach"]["at_s"] == 1.0
    with pytest.raises(WatchBreach) as caught:
        params = dict(PARAMS, breach_samples=5, max_errors=10, max_rollback_rate=1)
        watch(FakeSignals(clock, rollbacks_per_second=25), params, baseline, sleep=clock.sleep, clock=clock)
    assert caught.value.details["breach"]["signal"] == "errors" and caught.value.details["breach"]["at_s"] == 1.0


def slow_in_seconds(signals, clock, slow: set, unjudged: set = frozenset()):
    """`signals` whose inserts take 50 ms in the watch's seconds `slow` (counted from 1) and that serve
    no call at all in the seconds `unjudged` (too few calls to judge latency)."""
    real_advance = signals.advance
    start = clock()

    def advance():
        second = int(clock() - start + 0.5)
        signals.insert_ms = 50.0 if second in slow else 0.2
        if second in unjudged:
            signals.last = clock()  # nothing served in this second
            return
        real_advance()

    signals.advance = advance
    return signals


def test_a_clear_sample_between_two_crossings_ends_the_streak():
    clock = Clock()
    baseline = baseline_of(clock)
    signals = slow_in_seconds(FakeSignals(clock), clock, slow={3, 5})
    result = watch(signals, dict(PARAMS, breach_samples=2), baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and [sample["latency"]["ratio"] > 3 for sample in result["samples"]][1:6] == [False, True, False, True, False]


def test_a_sample_too_thin_to_judge_neither_extends_nor_ends_the_streak():
    clock = Clock()
    baseline = baseline_of(clock)
    signals = slow_in_seconds(FakeSignals(clock), clock, slow={3, 5}, unjudged={4})
    with pytest.raises(WatchBreach) as caught:
        watch(signals, dict(PARAMS, breach_samples=2), baseline, sleep=clock.sleep, clock=clock)
    breach = caught.value.details["breach"]
    assert breach["signal"] == "latency_ratio" and breach["at_s"] == 5.0 and breach["samples_in_a_row"] == 2


def test_a_streak_unfinished_when_the_watch_ends_is_said_not_judged():
    clock = Clock()
    baseline = baseline_of(clock)
    signals = slow_in_seconds(FakeSignals(clock), clock, slow={10})
    result = watch(signals, dict(PARAMS, breach_samples=2), baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and result["unfinished_streaks"] == {"latency_ratio": 1}
    assert "latency_ratio was crossed in the last 1 sample(s)" in result["warnings"][0]


def with_backlog(signals, per_second: int):
    """`signals` whose reverse capture gains `per_second` rows a second that no replay takes (the SQLite path's way back)."""
    real_sample = signals.sample
    started = signals.clock()

    def sample():
        return dict(real_sample(), reverse_backlog=int((signals.clock() - started) * per_second))

    signals.sample = sample
    return signals


def test_a_reverse_backlog_past_its_gate_breaches_at_once_naming_it():
    clock = Clock()
    baseline = baseline_of(clock)
    params = dict(PARAMS, breach_samples=5, max_reverse_backlog=250)
    with pytest.raises(WatchBreach) as caught:
        watch(with_backlog(FakeSignals(clock), 100), params, baseline, sleep=clock.sleep, clock=clock)
    breach = caught.value.details["breach"]
    assert breach["signal"] == "reverse_backlog" and breach["value"] == 300 and breach["gate"] == 250 and breach["at_s"] == 3.0
    assert "reverse_backlog: 300 over the gate 250" in str(caught.value)
    assert [sample["reverse_backlog"] for sample in caught.value.details["samples"]] == [100, 200, 300]


@pytest.mark.parametrize("gate", [None, 0, 5000])
def test_a_reverse_backlog_within_its_gate_or_without_one_passes_and_is_reported(gate):
    clock = Clock()
    baseline = baseline_of(clock)
    result = watch(with_backlog(FakeSignals(clock), 100), dict(PARAMS, max_reverse_backlog=gate), baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and result["samples"][-1]["reverse_backlog"] == 1000


def test_without_a_backlog_table_no_sample_reports_one():
    clock = Clock()
    baseline = baseline_of(clock)
    result = watch(FakeSignals(clock), dict(PARAMS, max_reverse_backlog=1), baseline, sleep=clock.sleep, clock=clock)
    assert result["healthy"] and "reverse_backlog" not in result["samples"][0]


class CountingClient:
    """A server whose change table has the rows `seqs`: answers the backlog's count for the position asked."""

    endpoint = "127.0.0.12:5432"  # the lab's green

    def __init__(self, seqs):
        self.seqs = seqs
        self.asked = []

    def query_one(self, statement, params=()):
        self.asked.append((statement, params))
        return {"n": sum(1 for seq in self.seqs if seq > params[0])}


def test_the_backlog_counts_the_change_rows_past_the_position_replayed():
    client = CountingClient(range(1, 41))
    assert Signals(client, client, "vminer", backlog=("public", "zdm_reverse_changes", 25)).reverse_backlog() == 15
    assert Signals(client, client, "vminer", backlog=("public", "zdm_reverse_changes", 0)).reverse_backlog() == 40
    statement, params = client.asked[0]
    assert "zdm_reverse_changes" in repr(statement) and params == (25,)
