"""haproxy_shift's pure parts: the stats CSV, windows of counters, the gates, where the weights stand."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy import runtime
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import HAProxyError
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.shift import (
    Shift,
    check_params,
    judge,
    parse_stat,
    plan,
    position,
    takes_connections,
    weights_for,
    window,
)

STAT = (
    "# pxname,svname,qcur,stot,econ,eresp,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,req_tot,qtime,rtime,ttime,\n"
    "app,blue,0,100,0,0,0,100,0,0,0,0,100,0,3,4,\n"
    "app,green,0,10,1,0,0,8,0,0,2,0,10,,12,15,\n"
)


def test_parse_stat_keys_servers_and_numbers():
    rows = parse_stat(STAT)
    assert set(rows) == {"blue", "green"}
    assert rows["green"]["hrsp_5xx"] == 2 and rows["green"]["rtime"] == 12 and "qtime" not in rows["green"]
    with pytest.raises(HAProxyError, match="not a 'show stat' answer"):
        parse_stat("Unknown command")


def test_window_takes_deltas_not_lifetime_totals():
    before = {"stot": 10, "req_tot": 10, "hrsp_2xx": 8, "hrsp_5xx": 2, "econ": 1}
    after = {"stot": 60, "req_tot": 60, "hrsp_2xx": 48, "hrsp_5xx": 12, "econ": 1, "rtime": 7}
    metrics = window(before, after)
    assert metrics["requests"] == 50 and metrics["responses"] == 50 and metrics["hrsp_5xx"] == 10
    assert metrics["hrsp_5xx_share"] == 0.2 and metrics["error_rate"] == 0.0 and metrics["rtime_ms"] == 7
    # a counter that went back (HAProxy restarted) counts from 0
    assert window({"req_tot": 500}, {"req_tot": 5})["requests"] == 5
    assert window({}, {})["hrsp_5xx_share"] is None
    # a refused connection is in econ once the request gives up, in wretr at every retried attempt
    refused = window({"stot": 0}, {"stot": 8, "econ": 2, "wretr": 6})
    assert refused["requests"] == 8 and refused["error_rate"] == 1.0


def metrics(**values):
    return dict({"requests": 100, "error_rate": 0.0, "hrsp_5xx_share": 0.0, "rtime_ms": 5, "qtime_ms": 0}, **values)


def test_judge_absolute_and_relative_gates():
    assert judge(metrics(hrsp_5xx_share=0.2), None, {"max_5xx_share": 0.05}, 20)["metric"] == "hrsp_5xx_share"
    assert judge(metrics(hrsp_5xx_share=0.2, requests=5), None, {"max_5xx_share": 0.05}, 20) is None  # too few to judge
    assert judge(metrics(error_rate=0.1), None, {"max_error_rate": 0.02}, 20)["gate"] == "max_error_rate"
    assert judge(metrics(qtime_ms=40), None, {"max_queue_ms": 30}, 20)["metric"] == "qtime_ms"
    slow = judge(metrics(rtime_ms=50), metrics(rtime_ms=10), {"max_response_ratio": 2}, 20)
    assert slow["gate"] == "max_response_ratio" and slow["bound"] == 20 and slow["old_value"] == 10
    assert judge(metrics(rtime_ms=15), metrics(rtime_ms=10), {"max_response_ratio": 2}, 20) is None
    # a relative gate without an old side to compare with is not judged; an old share of 0 counts as 1 %
    assert judge(metrics(rtime_ms=50), None, {"max_response_ratio": 2}, 20) is None
    assert judge(metrics(hrsp_5xx_share=0.015), metrics(), {"max_5xx_ratio": 2}, 20) is None
    assert judge(metrics(hrsp_5xx_share=0.03), metrics(), {"max_5xx_ratio": 2}, 20)["gate"] == "max_5xx_ratio"
    # a new side its checks mark down is a breach whatever the traffic
    assert judge(metrics(requests=0, status="DOWN 1/2"), None, {}, 20)["metric"] == "status"
    assert judge(metrics(status="UP"), None, {"max_5xx_share": 0.05}, 20) is None


def test_position_and_plan_read_where_the_weights_stand():
    assert position({"srv_uweight": 25, "srv_admin_state": 0}, {"srv_uweight": 75, "srv_admin_state": 0}) == 25
    assert position({"srv_uweight": 1, "srv_admin_state": 8}, {"srv_uweight": 1, "srv_admin_state": 0}) == 0  # drained
    assert position({"srv_uweight": 0, "srv_admin_state": 0}, {"srv_uweight": 0, "srv_admin_state": 0}) == 0
    assert position({"srv_uweight": 1, "srv_admin_state": 0}, {"srv_uweight": 0, "srv_admin_state": 0}) == 100
    assert plan(0, [10, 25, 50, 75, 100]) == [10, 25, 50, 75, 100]
    assert plan(25, [10, 25, 50, 75, 100]) == [50, 75, 100]
    assert plan(33, [10, 25, 50, 75, 100]) == [50, 75, 100]
    assert plan(100, [10, 25, 50, 75, 100]) == []
    assert weights_for(25) == (25, 75)


PARAMS = {"steps": [10, 50, 100], "from_server": "blue", "to_server": "green", "hold": 1, "interval": 1, "timeout": 2, "min_requests": 20}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": [50, 10]}, "rising order"),
        ({"steps": [0, 10]}, "rising order"),
        ({"steps": [10, 10]}, "rising order"),
        ({"to_server": "blue"}, "both 'blue'"),
        ({"hold": -1}, "hold"),
        ({"interval": 0}, "interval"),
        ({"gates": {"max_5xx_share": -0.1}}, "max_5xx_share"),
    ],
)
def test_check_params_names_the_problem(change, message):
    check_params(PARAMS)
    with pytest.raises(HAProxyError, match=message):
        check_params(dict(PARAMS, **change))


class FakeRuntime:
    """An in-memory stand-in for the runtime API of one backend `app` with servers blue and green:
    `set weight` changes a weight; `show stat` fails once `stat_failures_from` calls were answered,
    `set weight` is refused once `sets_allowed` were applied."""

    HEADER = "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight"

    def __init__(self, stat_failures_from=None, sets_allowed=None, weights=None, states=None):
        self.weights = dict(weights or {"green": 0, "blue": 100})
        # (srv_op_state, srv_admin_state) per server: 2 0 is up and ready
        self.states = dict({"green": (2, 0), "blue": (2, 0)}, **(states or {}))
        self.commands = []
        self.stat_calls = 0
        self.stat_failures_from = stat_failures_from
        self.sets_allowed = sets_allowed

    def command(self, _address, text, _timeout=2.0):
        if text.startswith("show servers state"):
            rows = [
                f"1 app {n} {name} 127.0.0.1 {self.states[name][0]} {self.states[name][1]} {weight} 100"
                for n, (name, weight) in enumerate(self.weights.items(), 1)
            ]
            return "\n".join(["1", self.HEADER, *rows])
        if text.startswith("show stat"):
            self.stat_calls += 1
            if self.stat_failures_from is not None and self.stat_calls > self.stat_failures_from:
                raise HAProxyError("timed out reading the runtime API")
            return STAT
        self.commands.append(text)
        if text.startswith("set server app/") and text.endswith(" state ready"):
            server = text.split("/", 1)[1].split()[0]
            self.states[server] = (2, 0)
            return ""
        if text.startswith("set weight app/"):
            server, weight = text.split("/", 1)[1].split()
            if self.sets_allowed is not None:
                if self.sets_allowed == 0:
                    return "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
                self.sets_allowed -= 1
            self.weights[server] = int(weight)
            return ""
        raise AssertionError(f"unexpected command {text!r}")


def shift_params(**overrides):
    params = dict(socket="/fake", backend="app", from_server="blue", to_server="green", steps=[10, 25, 50], hold=0.0, interval=0.01)
    params.update(min_requests=20, gates={"max_5xx_share": 0.5}, timeout=1.0)
    params.update(overrides)
    return params


def test_a_step_that_cannot_be_judged_goes_back_to_the_last_good_one(monkeypatch):
    """`show stat` fails inside the 25 % step: the weights go back to 10 % (not left at an unjudged
    step the next run would start above), and the error says so."""
    fake = FakeRuntime(stat_failures_from=2)  # step 10 reads twice (start, one sample), then the reads fail
    monkeypatch.setattr(runtime, "command", fake.command)
    with pytest.raises(HAProxyError) as raised:
        Shift(shift_params(), check_mode=False, sleep=lambda _seconds: None).run()
    assert fake.weights == {"green": 10, "blue": 90}
    assert raised.value.details["rolled_back_to"] == 10 and "step 25 %" in str(raised.value) and "back to 10 %" in str(raised.value)


def test_a_failed_way_back_is_not_reported_as_a_rollback(monkeypatch):
    """HAProxy takes the new side's weight, then refuses every other (the old side's at 10 %, the new
    side's on the way back to 0 %): the error has no rolled_back_to and says to set them by hand."""
    fake = FakeRuntime(sets_allowed=1)
    monkeypatch.setattr(runtime, "command", fake.command)
    with pytest.raises(HAProxyError) as raised:
        Shift(shift_params(), check_mode=False, sleep=lambda _seconds: None).run()
    assert raised.value.details["rolled_back_to"] is None and fake.weights == {"green": 10, "blue": 100}
    assert "going back to 0 % failed too" in str(raised.value) and "by hand" in str(raised.value)


def test_takes_connections_and_plan_with_the_old_side_out():
    assert takes_connections({"srv_op_state": 2, "srv_admin_state": 0})
    assert not takes_connections({"srv_op_state": 0, "srv_admin_state": 0})  # down by its checks
    assert not takes_connections({"srv_op_state": 0, "srv_admin_state": 1})  # maintenance
    assert not takes_connections({"srv_op_state": 2, "srv_admin_state": 8})  # drained
    # the old side out: the new side takes everything from the first step, so only the last is taken
    assert plan(0, [10, 25, 50, 75, 100], old_out=True) == [100]
    assert plan(50, [10, 25, 50, 75], old_out=True) == [75]
    assert plan(100, [10, 25, 50, 75, 100], old_out=True) == []


BACK = {"from_server": "green", "to_server": "blue", "steps": [10, 25, 50, 75, 100]}


@pytest.mark.parametrize("green", [(0, 1), (0, 0)], ids=["maintenance", "down-by-checks"])
def test_reads_go_back_to_blue_while_green_is_out(monkeypatch, green):
    """Green takes every read by its weights and is in maintenance or down: going back (green the
    old side) is gated on blue alone, takes blue to 100 % in one step, and leaves green's state."""
    fake = FakeRuntime(weights={"green": 100, "blue": 0}, states={"green": green})
    monkeypatch.setattr(runtime, "command", fake.command)
    result = Shift(shift_params(**BACK), check_mode=False, sleep=lambda _seconds: None).run()
    assert result["changed"] and result["plan"] == [100] and result["percent"] == 100
    assert fake.weights == {"green": 0, "blue": 100} and result["weights"] == {"blue": 100, "green": 0}
    assert fake.states["green"] == green and not any("state ready" in command for command in fake.commands)
    assert any("takes no new connections" in warning for warning in result["warnings"])
    # a second run changes nothing
    again = Shift(shift_params(**BACK), check_mode=False, sleep=lambda _seconds: None).run()
    assert not again["changed"] and again["plan"] == [] and again["commands"] == []


def test_the_side_gaining_is_asked_its_health_only_when_it_gains(monkeypatch):
    """Green down: a shift to green with steps to take is refused (nothing changed); one with
    nothing to take (the weights stand at the last step) is not, and warns."""
    fake = FakeRuntime(states={"green": (0, 1)})
    monkeypatch.setattr(runtime, "command", fake.command)
    with pytest.raises(HAProxyError, match="green is in maintenance"):
        Shift(shift_params(), check_mode=False, sleep=lambda _seconds: None).run()
    assert fake.weights == {"green": 0, "blue": 100} and fake.commands == []
    fake = FakeRuntime(weights={"green": 50, "blue": 50}, states={"green": (0, 0)})
    monkeypatch.setattr(runtime, "command", fake.command)
    result = Shift(shift_params(steps=[10, 25, 50]), check_mode=True).run()
    assert not result["changed"] and result["plan"] == [] and any("is not up" in warning for warning in result["warnings"])


def test_no_rollback_onto_an_old_side_that_is_out(monkeypatch):
    fake = FakeRuntime(weights={"green": 100, "blue": 0}, states={"green": (0, 1)})
    monkeypatch.setattr(runtime, "command", fake.command)
    shift = Shift(shift_params(**BACK), check_mode=False, sleep=lambda _seconds: None)
    shift.old_out = True
    rolled_back, message = shift.go_back(0)
    assert not rolled_back and "weights left where they are" in message and fake.commands == []


def test_the_new_side_is_made_ready_but_never_the_old_one(monkeypatch):
    """Green drained from the runtime API gains weight: made ready; blue drained loses weight: left drained."""
    fake = FakeRuntime(states={"green": (2, 8)})
    monkeypatch.setattr(runtime, "command", fake.command)
    Shift(shift_params(steps=[100]), check_mode=False, sleep=lambda _seconds: None).run()
    assert "set server app/green state ready" in fake.commands and fake.weights == {"green": 100, "blue": 0}
    fake = FakeRuntime(weights={"green": 100, "blue": 0}, states={"green": (2, 8)})
    monkeypatch.setattr(runtime, "command", fake.command)
    Shift(shift_params(**BACK), check_mode=False, sleep=lambda _seconds: None).run()
    assert fake.states["green"] == (2, 8) and not any("green state ready" in command for command in fake.commands)
