"""migration_report renders real charts from synthetic data: PNG files of the expected size, an HTML
page that refers to each, no change on a second run, nothing written in check mode, clear errors;
and workload.py's per-second latency file is what the module reads."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import Library
from ansible_collections.zerodowntime.migration.plugins.modules import migration_report

pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[2]

T0 = 1764860000  # 2025-12-04 14:53:20 UTC
PAUSE = {"started_at": T0 + 170.25, "ms": 92.4}
PHASES = [
    {
        "phase": "phase1_infra",
        "status": "succeeded",
        "started_at": "2025-12-04T14:53:20+00:00",
        "completed_at": "2025-12-04T14:53:50+00:00",
        "attempts": 1,
    },
    {"phase": "phase2_schema", "status": "succeeded", "started_at": T0 + 35, "completed_at": T0 + 110, "attempts": 1},
    {"phase": "phase5_cutover", "status": "succeeded", "started_at": T0 + 160, "completed_at": T0 + 175, "attempts": 1},
    {"phase": "phase6_verify", "status": "succeeded", "started_at": T0 + 176, "completed_at": T0 + 190, "attempts": 1},
    {"phase": "phase7_cleanup", "status": "pending", "started_at": None, "completed_at": None, "attempts": 0},
]


def latency_lines(seconds: int = 180) -> list[dict]:
    lines = []
    for second in range(seconds):
        t = T0 + 20 + second
        slow = 92.4 if t == int(PAUSE["started_at"]) else 4.0 + (second % 7) / 2
        lines.append({"t": t, "count": 150 + second % 40, "errors": 0, "max_ms": slow, "p99_ms": 3.5 + (second % 5) / 2, "p50_ms": 1.5})
    lines[50].update(count=0, max_ms=None, p99_ms=None, p50_ms=None)  # a second without commits: a gap, not a failure
    return lines


def lag_lines() -> list[dict]:
    lines = [{"t": T0 + 20 + s, "server": "blue", "slot": "zdm_blue_to_green", "lag_bytes": 40_000 + (s % 9) * 3000} for s in range(150)]
    lines += [{"t": T0 + 171 + s, "server": "green", "slot": "zdm_green_to_blue", "lag_bytes": 8000 + s * 100} for s in range(19)]
    lines.append({"t": T0 + 100, "server": "green", "error": "connection refused"})
    return lines


def write_lines(path, lines) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def run(args: dict, check: bool = False, capsys=None) -> dict:
    with patch_module_args(dict(args, _ansible_check_mode=check)), pytest.raises(SystemExit):
        migration_report.main()
    return json.loads(capsys.readouterr().out)


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def inputs(tmp_path):
    return {
        "dest": str(tmp_path / "reports"),
        "phases": PHASES,
        "latency_file": write_lines(tmp_path / "latency.jsonl", latency_lines()),
        "lag_file": write_lines(tmp_path / "lag.jsonl", lag_lines()),
        "pause": PAUSE,
        "summary": {"rows_compared": 12345, "compared": "6 tables equal"},
    }


def test_draws_three_charts_and_a_page_that_shows_each(inputs, tmp_path, capsys):
    result = run(inputs, capsys=capsys)
    assert result["changed"] is True and not result.get("failed"), result
    reports = tmp_path / "reports"
    charts = {entry["chart"]: entry for entry in result["charts"]}
    assert all(entry["drawn"] for entry in charts.values()), charts
    assert charts["latency"]["samples"] == 180 and charts["lag"]["samples"] == 169 and charts["lag"]["failed_reads"] == 1
    assert png_size(reports / "migration_report_latency.png") == (1200, 650)
    assert png_size(reports / "migration_report_lag.png") == (1200, 550)
    assert png_size(reports / "migration_report_timeline.png") == (1200, round((1.6 + 0.45 * len(PHASES)) * 100))
    for name in ("latency", "lag", "timeline"):
        image = (reports / f"migration_report_{name}.png").read_bytes()
        assert len(image) > 15_000, f"{name}: {len(image)} bytes - nothing drawn?"
        assert b"Software" not in image and b"matplotlib" not in image  # nothing that changes between versions or runs
    page = (reports / "migration_report.html").read_text()
    for name in ("latency", "lag", "timeline"):
        assert f'<img src="migration_report_{name}.png"' in page
    assert "Write pause at the cutover: 92.4 ms" in page and "phase7_cleanup" in page and "12345" in page
    assert sorted(result["written"]) == sorted(str(path) for path in reports.iterdir())
    assert result["html"] == str(reports / "migration_report.html")


def test_a_second_run_with_the_same_inputs_changes_nothing(inputs, tmp_path, capsys):
    run(inputs, capsys=capsys)
    files = sorted((tmp_path / "reports").iterdir())
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in files}
    again = run(inputs, capsys=capsys)
    assert again["changed"] is False and again["written"] == [] and again["removed"] == [], again
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in files} == before
    moved = run(dict(inputs, pause={"started_at": PAUSE["started_at"] + 3, "ms": 80}), capsys=capsys)
    assert moved["changed"] is True
    assert {p.rsplit("/", 1)[1] for p in moved["written"]} == {
        "migration_report.html",
        "migration_report_latency.png",
        "migration_report_lag.png",
        "migration_report_timeline.png",
    }


def test_check_mode_writes_nothing_and_says_what_it_would_write(inputs, tmp_path, capsys):
    result = run(inputs, check=True, capsys=capsys)
    assert result["changed"] is True and len(result["written"]) == 4
    assert not (tmp_path / "reports").exists()
    run(inputs, capsys=capsys)
    page = (tmp_path / "reports" / "migration_report.html").read_bytes()
    checked = run(dict(inputs, title="Another title"), check=True, capsys=capsys)
    assert checked["changed"] is True and checked["written"] == [str(tmp_path / "reports" / "migration_report.html")]
    assert (tmp_path / "reports" / "migration_report.html").read_bytes() == page


def test_a_chart_without_data_is_not_drawn_and_the_page_says_why(inputs, tmp_path, capsys):
    run(inputs, capsys=capsys)
    result = run({"dest": inputs["dest"], "phases": PHASES}, capsys=capsys)
    charts = {entry["chart"]: entry for entry in result["charts"]}
    assert charts["timeline"]["drawn"] and not charts["latency"]["drawn"] and not charts["lag"]["drawn"]
    assert sorted(result["removed"]) == sorted(str(tmp_path / "reports" / f"migration_report_{n}.png") for n in ("latency", "lag"))
    assert sorted(path.name for path in (tmp_path / "reports").iterdir()) == ["migration_report.html", "migration_report_timeline.png"]
    page = (tmp_path / "reports" / "migration_report.html").read_text()
    assert "Not drawn: no commit latency samples were given" in page and "Not drawn: no replication lag samples were given" in page
    assert "migration_report_latency.png" not in page
    failed_reads = run(
        {"dest": inputs["dest"], "lag_samples": [{"t": T0, "server": "blue", "error": "timeout"}]},
        capsys=capsys,
    )
    charts = {entry["chart"]: entry for entry in failed_reads["charts"]}
    assert charts["lag"]["reason"] == "all 1 replication lag reads failed" and charts["timeline"]["reason"] == "no phases were given"


def test_embedded_images_make_one_self_contained_page(inputs, tmp_path, capsys):
    run(dict(inputs, embed_images=True, name="ticket"), capsys=capsys)
    page = (tmp_path / "reports" / "ticket.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 3 and 'src="ticket_' not in page


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latency_samples": [{"t": T0, "count": 3, "max_ms": 2}, {"count": 1, "max_ms": 2}]}, "item 1 of the latency samples) has no 't'"),
        ({"latency_samples": [{"t": "yesterday", "count": 1, "max_ms": 2}]}, "'t' is not a time: 'yesterday'"),
        ({"latency_samples": [{"t": T0, "count": 3}]}, "counts 3 commits but has no 'max_ms'"),
        ({"lag_samples": [{"t": T0, "slot": "s", "lag_bytes": -5}]}, "'lag_bytes' must be a finite number of 0 or more"),
        ({"pause": {"started_at": T0}}, "neither 'ended_at' nor 'ms'"),
        ({"phases": [{"status": "succeeded"}]}, "phase 0 has no 'phase'"),
        ({"phases": [{"phase": "p", "started_at": T0 + 5, "completed_at": T0}]}, "completed"),
        ({"name": "../elsewhere"}, "is not a file name"),
        ({"latency_file": "/nonexistent/latency.jsonl"}, "cannot read the latency file /nonexistent/latency.jsonl"),
    ],
)
def test_bad_input_fails_naming_the_problem_and_writes_nothing(tmp_path, capsys, change, message):
    result = run(dict({"dest": str(tmp_path / "reports")}, **change), capsys=capsys)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert not (tmp_path / "reports").exists()


def test_a_malformed_line_is_named_by_its_file_and_line(tmp_path, capsys):
    path = tmp_path / "latency.jsonl"
    path.write_text('{"t": 1764860000, "count": 1, "max_ms": 2}\n{"t": 17648\n')
    result = run({"dest": str(tmp_path / "reports"), "latency_file": str(path)}, capsys=capsys)
    assert result["failed"] is True and f"line 2 of {path} is not JSON" in result["msg"]


def test_an_unusable_directory_is_named(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    result = run({"dest": str(tmp_path / "a-file")}, capsys=capsys)
    assert result["failed"] and "exists and is not a directory" in result["msg"]
    result = run({"dest": str(tmp_path / "a-file" / "reports")}, capsys=capsys)
    assert result["failed"] and f"cannot create the report directory {tmp_path / 'a-file' / 'reports'}" in result["msg"]


def test_both_a_file_and_inline_samples_is_refused(tmp_path, capsys):
    result = run({"dest": str(tmp_path), "lag_file": "/x", "lag_samples": []}, capsys=capsys)
    assert result["failed"] and "mutually exclusive" in result["msg"]


def test_without_matplotlib_the_failure_names_the_package_and_the_fix(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        migration_report, "MATPLOTLIB", Library(False, "matplotlib", "No module named 'matplotlib'", migration_report.MATPLOTLIB.reason)
    )
    result = run({"dest": str(tmp_path / "reports")}, capsys=capsys)
    assert result["failed"] and "(matplotlib)" in result["msg"] and "pip install matplotlib" in result["msg"]
    assert not (tmp_path / "reports").exists()


def load_workload():
    spec = importlib.util.spec_from_file_location("zdm_workload", ROOT / "playbooks" / "files" / "workload.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("zdm_workload", module)
    spec.loader.exec_module(module)
    return module


def test_the_workloads_latency_file_is_one_line_a_second_that_the_report_reads(tmp_path, capsys, monkeypatch):
    workload = load_workload()
    clock = [T0 + 0.1]
    monkeypatch.setattr(workload.time, "time", lambda: clock[0])
    log = workload.LatencyLog(str(tmp_path / "latency.jsonl"))
    for latency in [2.0] * 98 + [3.0, 90.0]:
        log.record(latency)
    log.record(None)
    clock[0] = T0 + 2.5  # a second without a commit, then one more
    log.record(5.0)
    log.flush()  # the seconds that ended: T0 and T0 + 1
    clock[0] = T0 + 3.2
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "latency.jsonl").read_text().splitlines()]
    assert [line["t"] for line in lines] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert lines[0] == {"t": T0, "count": 100, "errors": 1, "max_ms": 90.0, "p99_ms": 3.0, "p50_ms": 2.0}
    assert lines[1] == {"t": T0 + 1, "count": 0, "errors": 0, "max_ms": None, "p99_ms": None, "p50_ms": None}
    assert lines[2]["count"] == 1 and lines[3]["count"] == 0
    result = run({"dest": str(tmp_path / "reports"), "latency_file": str(tmp_path / "latency.jsonl")}, capsys=capsys)
    assert [entry["samples"] for entry in result["charts"] if entry["chart"] == "latency"] == [4]
