"""The suite starts from whatever state the lab is in: tests/lab.bring_lab_to_start (run by the
session's `lab` fixture) finds what a manual switchover left and runs the operator's playbook that
resets it, or stops saying what it found and which command resets it."""

from __future__ import annotations

import pytest

import tests.lab
from tests.lab import (
    BLUE,
    HAPROXY_ADDRESS,
    HAPROXY_WRITES,
    POOL_2,
    POOLER_PORT,
    REDIS_BLUE_ADDRESS,
    REDIS_PORT,
    bring_lab_to_start,
    connect,
    lab_findings,
    pooler_console,
    run_playbook_ok,
    server_reached,
    through_pooler,
    where,
)


def texts(findings) -> str:
    return " | ".join(text for _kind, text in findings)


def test_a_manual_cutover_is_found_and_rolled_back(validated):
    assert lab_findings() == []
    run_playbook_ok("phase5_cutover.yml", extravars={"cutover_approved": True})
    left_on_green = lab_findings()
    assert "PgBouncer" not in texts(left_on_green)  # the pools stayed on HAProxy: the cutover switched HAProxy
    frontend = f"{HAPROXY_ADDRESS}:{HAPROXY_WRITES}"  # lb-1's
    assert f"HAProxy's write frontend {frontend} sends writes to green, not blue {where(BLUE)}" in texts(left_on_green)

    assert bring_lab_to_start() == left_on_green
    assert lab_findings() == []


def test_a_pool_left_paused_without_a_journal_is_resumed(lab):
    """A pool paused by hand (or by a run whose journal is gone): the reset cannot read which side
    takes writes through it, so it reads HAProxy's write frontend, and resumes the pool."""
    with pooler_console(POOL_2) as admin:
        admin.execute("PAUSE novacron")
    found = lab_findings()
    assert found == [("postgresql", f"PgBouncer {POOL_2}:{POOLER_PORT} holds novacron paused")]

    assert bring_lab_to_start() == found
    assert lab_findings() == []
    with connect(through_pooler(POOL_2, connect_timeout=5)) as conn:
        assert server_reached(conn) == "blue"


def test_redis_left_on_green_is_switched_back(lab):
    run_playbook_ok("redis_switchover.yml", extravars={"redis_switchover_to": "green"})
    assert [kind for kind, _text in lab_findings()] == ["redis"]

    repaired = bring_lab_to_start()
    assert f"Redis blue {REDIS_BLUE_ADDRESS}:{REDIS_PORT} is a slave, not the master" in texts(repaired)
    assert lab_findings() == []


def test_what_no_reset_repairs_is_named_with_the_command(lab, monkeypatch):
    run_playbook_ok("redis_switchover.yml", extravars={"redis_switchover_to": "green"})
    try:
        # a reset that changes nothing (the read-only status playbook) stands for one that failed
        monkeypatch.setitem(tests.lab.LAB_RESETS, "redis", ("status.yml", {}))
        with pytest.raises(RuntimeError) as raised:
            bring_lab_to_start()
        assert f"Redis blue {REDIS_BLUE_ADDRESS}:{REDIS_PORT} is a slave, not the master" in str(raised.value)
        assert "Reset it with: ansible-playbook -i inventories/lab playbooks/status.yml" in str(raised.value)
    finally:
        monkeypatch.undo()
        run_playbook_ok("redis_switchover.yml", extravars={"redis_switchover_to": "blue"})
    assert lab_findings() == []
