"""Pure helpers of plugins/module_utils/postgres/replication.py: rows to replicas and the lag gate's
verdict. The polling loop runs against real replicas in tests/integration/test_pg_replicas.py."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.replication import (
    gate_message,
    lag_problems,
    standby_from_row,
    standby_label,
    validate_expected,
)


def row(name="r1", state="streaming", replay="0/3000000", current="0/3000000", lag_ms=None, slot=None, **extra):
    return dict(
        pid=100,
        application_name=name,
        client_addr="127.0.0.1",
        state=state,
        sync_state="async",
        sent_lsn=current,
        write_lsn=replay,
        flush_lsn=replay,
        replay_lsn=replay,
        write_lag_ms=None,
        flush_lag_ms=None,
        replay_lag_ms=lag_ms,
        slot_name=slot if slot is not None else name,
        current_lsn=current,
        **extra,
    )


def standby(**kwargs):
    return standby_from_row(row(**kwargs))


def test_lag_bytes_come_from_the_lsn_distance():
    assert standby(replay="0/3000000", current="0/3000100")["replay_lag_bytes"] == 0x100
    assert standby(replay="1/0", current="2/10")["replay_lag_bytes"] == (1 << 32) + 16


def test_a_caught_up_idle_standby_has_zero_lag_time():
    # PostgreSQL shows replay_lag NULL once the standby caught up on an idle server.
    assert standby(lag_ms=None)["replay_lag_ms"] == 0.0


def test_an_unmeasured_lag_time_behind_the_primary_stays_unknown():
    assert standby(replay="0/3000000", current="0/3000100", lag_ms=None)["replay_lag_ms"] is None


def test_lag_time_is_rounded_ms():
    assert standby(lag_ms=15.45512)["replay_lag_ms"] == 15.455


def test_a_standby_without_replay_position_has_unknown_lag():
    replica = standby_from_row(dict(row(), replay_lsn=None))
    assert replica["replay_lag_bytes"] is None


def test_a_replay_position_ahead_of_the_reading_counts_as_zero():
    assert standby(replay="0/3000100", current="0/3000000")["replay_lag_bytes"] == 0


def test_label_names_application_slot_and_address():
    assert standby_label(standby(name="r1", slot="r1_slot")) == "r1 (slot r1_slot, from 127.0.0.1)"
    assert standby_label({"application_name": "", "slot_name": None, "client_addr": None}) == "(no application_name)"


@pytest.mark.parametrize(("given", "expected"), [(None, None), ("", None), (0, 0), (2, 2), ("3", 3), (["a", "b"], ["a", "b"])])
def test_expected_replicas_is_a_count_or_names(given, expected):
    assert validate_expected(given) == expected


@pytest.mark.parametrize("given", [True, -1, "two", ["a", ""]])
def test_expected_replicas_refuses_the_rest(given):
    with pytest.raises(PgError, match="expected_replicas"):
        validate_expected(given)


def test_no_bound_no_problem():
    assert lag_problems([standby(state="catchup", replay="0/0", current="9/0")]) == []


def test_each_replica_over_a_bound_is_named():
    replicas = [
        standby(name="r1", lag_ms=5),
        standby(name="r2", lag_ms=250.5),
        standby(name="r3", replay="0/0", current="0/1000", lag_ms=1),
    ]
    problems = lag_problems(replicas, max_lag_bytes=100, max_lag_ms=100)
    assert len(problems) == 2
    assert "replica r2 (slot r2, from 127.0.0.1) replay lag 250.5 ms is over max_lag_ms 100" in problems
    assert "replica r3 (slot r3, from 127.0.0.1) replay lag 4096 bytes is over max_lag_bytes 100" in problems


def test_unknown_lag_does_not_pass_a_time_bound():
    problems = lag_problems([standby(replay="0/0", current="0/10", lag_ms=None)], max_lag_ms=100)
    assert problems == ["replica r1 (slot r1, from 127.0.0.1) replay lag unknown (no replay_lag measured yet) is over max_lag_ms 100"]


def test_a_replica_not_streaming_fails_a_gate():
    problems = lag_problems([standby(name="r1", state="catchup")], max_lag_ms=100)
    assert problems == ["replica r1 (slot r1, from 127.0.0.1) is in state 'catchup', not streaming"]


def test_a_missing_count_names_those_found():
    problems = lag_problems([standby(name="r1"), standby(name="r2")], expected=3)
    assert problems == ["3 streaming replicas expected, 2 found (r1 (slot r1, from 127.0.0.1), r2 (slot r2, from 127.0.0.1))"]
    assert lag_problems([], expected=1) == ["1 streaming replicas expected, 0 found (none)"]
    assert lag_problems([standby()], expected=1) == []


def test_missing_names_are_named_and_slots_match_too():
    replicas = [standby(name="15/r1", slot="r1")]
    assert lag_problems(replicas, expected=["r1"]) == []
    assert lag_problems(replicas, expected=["r1", "r2"]) == [
        "replica r2 is not connected (no walsender with that application_name or slot)"
    ]


def test_message_without_standbys_names_the_fix_and_a_standby_endpoint():
    message = gate_message("127.0.0.1:5441", ["1 streaming replicas expected, 0 found (none)"], 2.0, True, [])
    assert "after 2.0 s" in message
    assert "pg_stat_replication is empty" in message
    assert "pg_hba.conf" in message
    assert "is itself a standby: connect to the primary" in message
