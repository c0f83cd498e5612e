"""zerodowntime.migration.migration_report on the controller (localhost of inventories/lab) with real
inputs: the phases migration_state recorded, and the per-second commit latency and slot lag that
playbooks/files/workload.py wrote while it ran against blue - in scratch databases of the test's
own on blue and green, with a logical slot on blue - through a real write pause: a lock the test
holds on the table every transaction updates."""

from __future__ import annotations

import itertools
import json
import os
import struct
import subprocess
import sys
import time

import pytest

from tests.lab import BLUE, GREEN, LAB_PASSWORD, ROOT, connect, run_module, scratch_database, where

MODULE = "zerodowntime.migration.migration_report"
STATE = "zerodowntime.migration.migration_state"
DB = "zdm_report_test"
SLOT = "zdm_report_test_slot"
PHASES = ["phase2_writes", "phase5_cutover", "phase6_verify"]
HOLD_SECONDS = 1.5
SCHEMA = (
    "CREATE TABLE vms (id bigserial PRIMARY KEY, tenant_id int NOT NULL, vcpus int NOT NULL DEFAULT 1, "
    "state text NOT NULL DEFAULT 'running', updated_at timestamptz NOT NULL DEFAULT now())",
    "CREATE TABLE vm_metrics (id bigserial PRIMARY KEY, vm_id bigint NOT NULL, collected_at timestamptz NOT NULL, "
    "cpu_pct numeric, memory_pct numeric, disk_read_bytes bigint, disk_write_bytes bigint, net_rx_bytes bigint, net_tx_bytes bigint)",
    "CREATE TABLE audit_log (id bigserial PRIMARY KEY, tenant_id int NOT NULL, user_id int, action text NOT NULL, "
    "object_type text NOT NULL, object_id bigint, details jsonb, created_at timestamptz NOT NULL DEFAULT now())",
    "INSERT INTO vms (tenant_id) SELECT g % 5 + 1 FROM generate_series(1, 50) g",
    "INSERT INTO vm_metrics (vm_id, collected_at, cpu_pct, memory_pct, disk_read_bytes, disk_write_bytes, net_rx_bytes, net_tx_bytes) "
    "SELECT g % 50 + 1, now(), 1, 1, 1, 1, 1, 1 FROM generate_series(1, 200) g",
)


def ok(result: dict) -> dict:
    assert result["failed"] is False, result.get("msg")
    return result


def record(phase: str, state: str) -> dict:
    return ok(run_module(STATE, dict(BLUE, login_db=DB, phase=phase, state=state, phases=PHASES))[1])


def png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as handle:
        head = handle.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def drop_slot() -> None:
    """The test's slot gone (a slot left by an interrupted run would keep its database from being dropped)."""
    with connect(BLUE, login_db="postgres") as conn:
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))


@pytest.fixture(scope="module")
def scratch(lab):
    """The workload's three tables in a database of the test's own on blue and on green (where the
    workload looks its writes up at the end), and a logical slot on blue for the lag sampler."""
    drop_slot()
    with scratch_database(BLUE, DB), scratch_database(GREEN, DB):
        for endpoint in (BLUE, GREEN):
            with connect(endpoint, login_db=DB) as conn:
                for statement in SCHEMA:
                    conn.execute(statement)
        with connect(BLUE, login_db=DB) as conn:
            conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
        try:
            yield
        finally:
            drop_slot()


@pytest.fixture(scope="module")
def measured(scratch, tmp_path_factory):
    """The workload's latency and lag files through a write pause of HOLD_SECONDS, the pause's
    window on the clock, and the phases recorded around it."""
    work = tmp_path_factory.mktemp("report")
    files = {"latency": work / "latency.jsonl", "lag": work / "lag.jsonl", "stop": work / "stop"}
    argv = [sys.executable, str(ROOT / "playbooks" / "files" / "workload.py"), "run", "--through", where(BLUE)]
    argv += ["--blue", where(BLUE), "--green", where(GREEN), "--dbname", DB]
    argv += [
        "--stop-file",
        str(files["stop"]),
        "--max-seconds",
        "120",
        "--latency-file",
        str(files["latency"]),
        "--lag-file",
        str(files["lag"]),
    ]
    record("phase2_writes", "started")
    workload = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, PGPASSWORD=LAB_PASSWORD)
    )
    try:
        time.sleep(4)
        record("phase2_writes", "succeeded")
        record("phase5_cutover", "started")
        with connect(BLUE, login_db=DB) as conn, conn.transaction():
            conn.execute("LOCK TABLE vms IN EXCLUSIVE MODE")  # every workload transaction updates vms: writes wait
            pause_started = time.time()
            time.sleep(HOLD_SECONDS)
            pause_ended = time.time()
        time.sleep(3)
        record("phase5_cutover", "succeeded")
    finally:
        files["stop"].touch()
        out, err = workload.communicate(timeout=60)
    assert workload.returncode == 0, err
    summary = json.loads(out)
    assert summary["errors"] == 0 and summary["committed"] > 0, summary
    phases = ok(run_module(STATE, dict(BLUE, login_db=DB, phases=PHASES))[1])["phases"]
    return {
        "dir": work / "reports",
        "phases": phases,
        "latency_file": str(files["latency"]),
        "lag_file": str(files["lag"]),
        "pause": {"started_at": pause_started, "ended_at": pause_ended},
        "summary": summary,
    }


def report_args(measured: dict, **extra) -> dict:
    args = {key: measured[key] for key in ("phases", "latency_file", "lag_file", "pause")}
    return dict(args, dest=str(measured["dir"]), summary={"committed": measured["summary"]["committed"]}, **extra)


def test_the_workloads_samples_show_the_pause(measured):
    with open(measured["latency_file"]) as handle:
        seconds = [json.loads(line) for line in handle]
    assert len(seconds) >= 8 and all(later["t"] == earlier["t"] + 1 for earlier, later in itertools.pairwise(seconds))
    assert sum(second["count"] for second in seconds) == measured["summary"]["committed"]
    slowest = max(seconds, key=lambda second: second["max_ms"] or 0)
    assert slowest["max_ms"] >= HOLD_SECONDS * 1000 * 0.8, slowest  # the transactions that waited for the lock
    assert measured["pause"]["started_at"] - 1 <= slowest["t"] <= measured["pause"]["ended_at"] + 1
    with open(measured["lag_file"]) as handle:
        lags = [json.loads(line) for line in handle]
    assert {lag["slot"] for lag in lags if lag["server"] == "blue" and "slot" in lag} == {SLOT}
    # each line names the endpoint it was read on (green has no slot in the test's database: no line of its own)
    assert {(lag["server"], lag["endpoint"]) for lag in lags} == {("blue", where(BLUE))}, lags[:4]
    assert all(lag["lag_bytes"] >= 0 for lag in lags if "lag_bytes" in lag)


def test_the_report_draws_every_chart_and_a_second_run_changes_nothing(measured):
    result = ok(run_module(MODULE, report_args(measured), host="localhost")[1])
    assert result["changed"] is True
    charts = {entry["chart"]: entry for entry in result["charts"]}
    assert all(entry["drawn"] for entry in charts.values()), charts
    assert png_size(charts["latency"]["path"]) == (1200, 650)
    assert png_size(charts["lag"]["path"]) == (1200, 550)
    assert png_size(charts["timeline"]["path"])[0] == 1200
    with open(result["html"]) as handle:
        page = handle.read()
    for entry in charts.values():
        assert f'<img src="{os.path.basename(entry["path"])}"' in page
    assert "phase6_verify" in page and "Write pause at the cutover" in page
    again = ok(run_module(MODULE, report_args(measured), host="localhost")[1])
    assert again["changed"] is False and again["written"] == []


def test_check_mode_writes_nothing(measured):
    ok(run_module(MODULE, report_args(measured), host="localhost")[1])
    html = measured["dir"] / "migration_report.html"
    before = html.read_bytes()
    checked = ok(run_module(MODULE, report_args(measured, title="Another title"), check=True, host="localhost")[1])
    assert checked["changed"] is True and checked["written"] == [str(html)]
    assert html.read_bytes() == before


def test_without_samples_the_page_says_so_and_bad_samples_fail(measured, tmp_path):
    result = ok(run_module(MODULE, {"dest": str(tmp_path / "bare"), "phases": measured["phases"]}, host="localhost")[1])
    assert [entry["chart"] for entry in result["charts"] if entry["drawn"]] == ["timeline"]
    assert "Not drawn: no commit latency samples were given" in (tmp_path / "bare" / "migration_report.html").read_text()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"t": 1, "count": 1, "max_ms": 1}\nnot json\n')
    failed = run_module(MODULE, {"dest": str(tmp_path / "broken"), "latency_file": str(broken)}, host="localhost")[1]
    assert failed["failed"] is True and f"line 2 of {broken} is not JSON" in failed["msg"]
    assert not (tmp_path / "broken").exists()
