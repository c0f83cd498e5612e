"""zerodowntime.migration.haproxy_servers_state: `show servers state` read into dicts, with what
srv_admin_state means (values as HAProxy 2.6 on the lab prints them)."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.filter.haproxy import FilterModule

HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight "
    "srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state "
    "bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)


def state(*rows: str) -> str:
    return "\n".join(["1", HEADER, *rows, ""])


def servers(text: str) -> dict:
    return {server["srv_name"]: server for server in FilterModule().filters()["haproxy_servers_state"](text)}


def test_configured_primary_and_disabled_standby():
    parsed = servers(
        state(
            "3 pg_write 1 blue 127.0.0.1 2 0 1 1 215 6 3 4 6 0 0 0 - 5433 - 0 0 - - 0",
            "3 pg_write 2 green 127.0.0.1 0 5 1 1 215 1 0 0 14 0 0 0 - 5434 - 0 0 - - 0",
        )
    )
    blue, green = parsed["blue"], parsed["green"]
    assert (blue["be_name"], blue["srv_port"], blue["srv_admin_state"]) == ("pg_write", 5433, 0)
    assert blue["ready"] and blue["up"] and not blue["maint"] and not blue["drain"]
    assert green["maint"] and not green["ready"] and not green["up"]  # `disabled`: 0x04 | 0x01
    assert green["srv_fqdn"] == "-"


def test_set_ready_leaves_the_configuration_bit_and_counts_as_ready():
    """`set server pg_write/green state ready` on a `disabled` server leaves 0x04 set."""
    parsed = servers(
        state(
            "3 pg_write 1 blue 127.0.0.1 0 1 1 1 0 6 3 0 14 0 0 0 - 5433 - 0 0 - - 0",
            "3 pg_write 2 green 127.0.0.1 2 4 1 1 0 1 0 2 6 0 0 0 - 5434 - 0 0 - - 0",
        )
    )
    assert parsed["green"]["ready"] and parsed["green"]["up"]
    assert parsed["blue"]["maint"] and not parsed["blue"]["ready"]


@pytest.mark.parametrize(
    ("admin", "maint", "drain"), [(0x08, False, True), (0x10, False, True), (0x09, True, False), (0x20, True, False), (0x02, True, False)]
)
def test_drain_and_maintenance_bits(admin, maint, drain):
    [server] = FilterModule().filters()["haproxy_servers_state"](
        state(f"3 pg_write 1 blue 127.0.0.1 2 {admin} 1 1 0 6 3 4 6 0 0 0 - 5433 - 0 0 - - 0")
    )
    assert (server["maint"], server["drain"], server["ready"]) == (maint, drain, not maint and not drain)


def test_an_empty_backend_has_no_servers():
    assert FilterModule().filters()["haproxy_servers_state"](state()) == []


@pytest.mark.parametrize("text", ["Can't find backend.\n", "", None, "1\n3 pg_write 1 blue\n"])
def test_anything_else_is_a_filter_error(text):
    with pytest.raises(AnsibleFilterError):
        FilterModule().filters()["haproxy_servers_state"](text)


CONFIG = """
global
    server-state-file /var/lib/haproxy/server-state
backend pg_read
    balance roundrobin
    server blue 127.0.0.11:5432 check weight 256
    server green 127.0.0.12:5432 check weight 0
backend pg_write
    server blue 127.0.0.11:5432 check
"""


def test_state_for_config_keeps_the_servers_at_their_configured_address_only():
    """The lab moved blue and green from 127.0.0.1:5433/:5434 to addresses of their own: a state saved
    before must not bring the old ports back; a server still where it was keeps its runtime state."""
    saved = state(
        "4 pg_read 1 blue 127.0.0.1 2 0 256 256 215 6 3 4 6 0 0 0 - 5433 - 0 0 - - 0",
        "4 pg_read 2 green 127.0.0.12 2 8 0 0 215 6 3 4 6 0 0 0 - 5432 - 0 0 - - 0",
        "3 pg_write 1 blue 127.0.0.11 2 0 1 1 215 6 3 4 6 0 0 0 - 5432 - 0 0 - - 0",
        "3 pg_write 3 gone 127.0.0.13 2 0 1 1 215 6 3 4 6 0 0 0 - 5432 - 0 0 - - 0",
    )
    kept = FilterModule().filters()["haproxy_state_for_config"](saved, CONFIG)
    assert kept.splitlines() == [
        "1",
        HEADER,
        "4 pg_read 2 green 127.0.0.12 2 8 0 0 215 6 3 4 6 0 0 0 - 5432 - 0 0 - - 0",
        "3 pg_write 1 blue 127.0.0.11 2 0 1 1 215 6 3 4 6 0 0 0 - 5432 - 0 0 - - 0",
    ]
    assert {server["srv_name"] for server in servers(kept).values()} == {"green", "blue"}


def test_state_for_config_refuses_what_is_not_a_state():
    with pytest.raises(AnsibleFilterError, match="not a 'show servers state' answer"):
        FilterModule().filters()["haproxy_state_for_config"]("Unknown command", CONFIG)
