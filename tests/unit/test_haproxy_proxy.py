"""The cutovers' view of one HAProxy (module_utils/haproxy/proxy.py) and pg_switchover's reading of
it, on `show servers state` answers as HAProxy 2.6 prints them; no HAProxy (the runtime API itself
is tested against the lab's, tests/integration/test_pg_switchover_haproxy.py)."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.haproxy.proxy import Proxy
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import switchover as sw
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state "
    "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)
# srv_op_state 2 running, 0 stopped; srv_admin_state 0 ready, 5 `disabled` in haproxy.cfg (0x04 | 0x01),
# 1 maintenance from the runtime API, 4 `disabled` then `state ready`, 8 drained from the runtime API
RUNNING, STOPPED = 2, 0


def rows(blue: tuple[int, int], green: tuple[int, int]) -> list[dict]:
    """(srv_op_state, srv_admin_state) of blue and green in pg_write."""
    return [
        {"be_name": "pg_write", "srv_name": name, "srv_addr": address, "srv_port": 5432, "srv_op_state": op, "srv_admin_state": admin}
        for name, address, (op, admin) in (("blue", "127.0.0.11", blue), ("green", "127.0.0.12", green))
    ]


class StaticProxy(Proxy):
    """A Proxy whose HAProxy answers `show servers state` with fixed rows."""

    answer: list[dict]  # set by proxy()

    def rows(self) -> list[dict]:
        return self.answer


def proxy(blue, green, target_in_maintenance=True) -> StaticProxy:
    made = StaticProxy("127.0.0.31:9999", "pg_write", "blue", "green", 2.0, target_in_maintenance)
    made.answer = rows(blue, green)
    return made


@pytest.mark.parametrize(
    ("blue", "green", "serving"),
    [
        ((RUNNING, 0), (STOPPED, 5), "blue"),  # the configured primary, green `disabled`
        ((RUNNING, 0), (RUNNING, 0), "blue"),  # balance first: the source while it takes them
        ((STOPPED, 1), (RUNNING, 4), "green"),  # after a switch: blue in maintenance, green made ready
        ((RUNNING, 8), (RUNNING, 0), "green"),  # blue drained
        ((STOPPED, 1), (STOPPED, 5), None),  # both in maintenance: nowhere
        ((STOPPED, 0), (STOPPED, 5), None),  # blue down, green in maintenance
    ],
)
def test_the_write_server_is_the_first_that_takes_new_connections(blue, green, serving):
    assert proxy(blue, green).write_server() == serving


def test_the_plan_to_the_target_makes_it_ready_and_up_before_the_source_goes_out():
    plan = proxy((RUNNING, 0), (STOPPED, 5)).primary_plan(to_target=True)
    assert plan == [("green", "state ready"), ("green", "health up"), ("blue", "state maint"), ("blue", "shutdown")]


@pytest.mark.parametrize(("was_in_maintenance", "green_back"), [(True, [("green", "state maint")]), (False, [])])
def test_the_way_back_puts_the_target_back_as_it_was(was_in_maintenance, green_back):
    """A standby kept as a `backup` server (haproxy_pg_standby_mode) was never in maintenance."""
    plan = proxy((STOPPED, 1), (RUNNING, 4), was_in_maintenance).primary_plan(to_target=False)
    assert plan == [("blue", "state ready"), ("blue", "health up"), *green_back, ("green", "shutdown")]


class FakeConsole:
    """PgBouncer's SHOW DATABASES row of the pool, fixed."""

    def __init__(self, host: str, port: int):
        self.row = {"host": host, "port": port, "database": "app", "paused": 0}
        self.endpoint = "127.0.0.61:6432"

    def require_database(self, pool):
        return self.row


class FakeClient:
    check_mode = False

    def __init__(self, host: str):
        self.params = {"login_host": host, "login_port": 5432, "login_db": "app"}
        self.endpoint = f"{host}:5432/app"


def switchover(pool_host: str, *proxies: StaticProxy) -> sw.Switchover:
    params = {"subscription": "blue_to_green", "reverse_subscription": "green_to_blue", "source": {}, "target": {}}
    pooler = sw.Pooler(
        0,
        {"database": "app", "config_file": "/etc/pgbouncer/pgbouncer.ini"},
        FakeConsole(pool_host, 5432 if pool_host != "127.0.0.31" else 5000),
    )
    run = sw.Switchover(FakeClient("127.0.0.11"), FakeClient("127.0.0.12"), [pooler], params)
    run.proxies = list(proxies)
    return run


def test_haproxy_on_target_reads_every_haproxy_and_leaves_the_pools_where_they_are():
    run = switchover("127.0.0.31", proxy((STOPPED, 1), (RUNNING, 4)), proxy((STOPPED, 1), (RUNNING, 4)))
    assert run.haproxy_on_target() == [True, True]
    assert run.poolers[0].before == run.poolers[0].after == {"host": "127.0.0.31", "port": 5000, "dbname": "app"}
    assert run.haproxy_before == {"127.0.0.31:9999 pg_write": "green"}


def test_haproxies_that_disagree_are_refused():
    first, second = proxy((RUNNING, 0), (STOPPED, 5)), proxy((STOPPED, 1), (RUNNING, 4))
    second.address = "127.0.0.32:9999"
    with pytest.raises(
        PgError,
        match=r"the HAProxies disagree: 127.0.0.31:9999 pg_write sends writes to blue; 127.0.0.32:9999 pg_write sends writes to green",
    ):
        switchover("127.0.0.31", first, second).haproxy_on_target()


def test_an_haproxy_that_sends_writes_nowhere_is_refused():
    with pytest.raises(PgError, match=r"neither to the source's server nor to the target's.*set_primary"):
        switchover("127.0.0.31", proxy((STOPPED, 1), (STOPPED, 5))).haproxy_on_target()


@pytest.mark.parametrize("side", ["127.0.0.11", "127.0.0.12"])
def test_a_pool_that_bypasses_haproxy_is_refused(side):
    with pytest.raises(
        PgError, match=f"sends pool 'app' to {side}:5432/app, {side}:5432/app itself, not through HAProxy.*haproxy_pg_write_bind"
    ):
        switchover(side, proxy((RUNNING, 0), (STOPPED, 5))).haproxy_on_target()


def test_the_journal_keeps_each_haproxy_and_a_replay_undoes_that_one():
    run = switchover("127.0.0.31", proxy((RUNNING, 0), (STOPPED, 5), target_in_maintenance=False))
    saved = run.saved_facts()["haproxy"]
    assert saved == [
        {
            "address": "127.0.0.31:9999",
            "backend": "pg_write",
            "source_server": "blue",
            "target_server": "green",
            "target_in_maintenance": False,
            "timeout": 2.0,
        }
    ]
    later = switchover("127.0.0.31")  # a repair whose own options name no HAProxy
    later.load({"facts": {"haproxy": saved}})
    assert [proxy.journaled() for proxy in later.proxies] == [{key: value for key, value in saved[0].items() if key != "timeout"}]
    assert later.proxies[0].primary_plan(to_target=False)[-1] == ("green", "shutdown")
