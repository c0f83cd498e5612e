"""haproxy_shift's pure parts: the stats CSV, windows of counters, the gates, where the weights stand."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.runtime import HAProxyError
from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.shift import (
    check_params,
    judge,
    parse_stat,
    plan,
    position,
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
