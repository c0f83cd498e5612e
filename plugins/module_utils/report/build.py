# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The final report with pictures: the charts (charts.py) and an HTML page that shows them,
written into the report directory next to migration_report.json and .md.

Files, for the name N (default migration_report): N_timeline.png (the phases on a clock),
N_latency.png (the workload's commit latency per second through the cutover, the write pause
marked), N_lag.png (replication lag over time over the phases) and N.html. A chart without data
is not drawn: the page says why, and a file of that chart left by an earlier run is removed.

Everything is rendered in memory first and compared with the files there: only files whose bytes
differ are written (changed), so a second run with the same inputs changes nothing, and check
mode reports what it would write without writing.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import os
import tempfile

from ansible_collections.zerodowntime.migration.plugins.module_utils.report import charts
from ansible_collections.zerodowntime.migration.plugins.module_utils.report.inputs import (
    UTC,
    ReportError,
    lag_samples,
    latency_samples,
    pause_window,
    phase_rows,
)

FILE_MODE = 0o644
CHARTS = (
    ("timeline", "Phase timeline"),
    ("latency", "Commit latency per second through the cutover"),
    ("lag", "Replication lag over time, by phase"),
)
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1250px;color:#212121}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bdbdbd;padding:4px 10px;text-align:left}"
    "td.n{text-align:right}figure{margin:2em 0}img{max-width:100%;border:1px solid #e0e0e0}"
    "p.missing{color:#757575;font-style:italic}"
)


def clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return datetime.datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def draw(params: dict) -> tuple[list[dict], dict, dict]:
    """Each chart's entry (drawn or why not), the PNG bytes of those drawn (by chart), and the
    checked inputs (phases, pause, latency) for the page."""
    phases = phase_rows(params.get("phases"))
    latency = latency_samples(params.get("latency_samples"), params.get("latency_file"))
    lag, failed_reads = lag_samples(params.get("lag_samples"), params.get("lag_file"))
    pause = pause_window(params.get("pause"))
    entries, images = [], {}
    titles = dict(CHARTS)
    if not phases:
        entries.append({"chart": "timeline", "drawn": False, "reason": "no phases were given"})
    elif all(phase["start"] is None for phase in phases):
        entries.append({"chart": "timeline", "drawn": False, "reason": "no phase has started"})
    else:
        images["timeline"] = charts.timeline_chart(phases, pause, titles["timeline"])
        entries.append({"chart": "timeline", "drawn": True, "samples": len(phases)})
    if latency:
        images["latency"] = charts.latency_chart(latency, pause, titles["latency"])
        entries.append({"chart": "latency", "drawn": True, "samples": len(latency)})
    else:
        entries.append(
            {"chart": "latency", "drawn": False, "reason": "no commit latency samples were given (the workload's --latency-file)"}
        )
    if lag:
        images["lag"] = charts.lag_chart(lag, phases, pause, titles["lag"])
        entries.append({"chart": "lag", "drawn": True, "samples": len(lag), "failed_reads": failed_reads})
    elif failed_reads:
        entries.append(
            {"chart": "lag", "drawn": False, "reason": f"all {failed_reads} replication lag reads failed", "failed_reads": failed_reads}
        )
    else:
        entries.append({"chart": "lag", "drawn": False, "reason": "no replication lag samples were given (the workload's --lag-file)"})
    return entries, images, {"phases": phases, "pause": pause, "latency": latency}


def page(params: dict, entries: list[dict], images: dict, context: dict, names: dict) -> str:
    """The HTML page: the phases, the pause, the summary, and each chart or why it is missing."""
    escape = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(params['title'])}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(params['title'])}</h1>",
        "<p>Times are UTC.</p>",
    ]
    pause = context["pause"]
    if pause:
        out.append(f"<p><strong>Write pause at the cutover: {pause['ms']:g} ms</strong>, from {clock(pause['start'])} UTC.</p>")
    if context["latency"]:
        worst = max(context["latency"], key=lambda s: s["max_ms"] or 0)
        commits = sum(s["count"] for s in context["latency"])
        errors = sum(s["errors"] for s in context["latency"])
        out.append(
            f"<p>The workload committed {commits} transactions in {len(context['latency'])} seconds "
            f"({errors} failed); its slowest commit took {worst['max_ms'] or 0:g} ms, at {clock(worst['t'])} UTC.</p>"
        )
    if context["phases"]:
        headings = ("phase", "status", "attempts", "started", "completed", "duration (s)")
        out.append("<h2>Phases</h2><table><tr>" + "".join(f"<th>{heading}</th>" for heading in headings) + "</tr>")
        for phase in context["phases"]:
            duration = f"{phase['end'] - phase['start']:.1f}" if phase["start"] is not None and phase["end"] is not None else ""
            cells = (
                phase["phase"],
                phase["status"],
                "" if phase["attempts"] is None else str(phase["attempts"]),
                clock(phase["start"]),
                clock(phase["end"]),
            )
            out.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in cells) + f'<td class="n">{duration}</td></tr>')
        out.append("</table>")
    if params.get("summary"):
        out.append("<h2>Summary</h2><table>")
        for key, value in params["summary"].items():
            shown = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            out.append(f"<tr><th>{escape(str(key))}</th><td>{escape(shown)}</td></tr>")
        out.append("</table>")
    titles = dict(CHARTS)
    for entry in entries:
        out.append(f"<h2>{escape(titles[entry['chart']])}</h2>")
        if not entry["drawn"]:
            out.append(f'<p class="missing">Not drawn: {escape(entry["reason"])}.</p>')
            continue
        source = (
            "data:image/png;base64," + base64.b64encode(images[entry["chart"]]).decode("ascii")
            if params.get("embed_images")
            else names[entry["chart"]]
        )
        out.append(f'<figure><img src="{escape(source)}" alt="{escape(titles[entry["chart"]])}"></figure>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def current(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}; check its permissions or choose another dest") from None


def write(path: str, content: bytes) -> None:
    """Write through a temporary file in the same directory, renamed over the old one."""
    directory = os.path.dirname(path)
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".report-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(content)
            os.chmod(temporary, FILE_MODE)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror or exc}; make {directory} writable or choose another dest") from None


def report_dir(dest: str, check_mode: bool) -> bool:
    """Make sure dest is a directory (created unless check mode); True when it must be created."""
    if os.path.isdir(dest):
        return False
    if os.path.lexists(dest):
        raise ReportError(f"dest {dest} exists and is not a directory: choose a directory for the report")
    if check_mode:
        return True
    try:
        os.makedirs(dest, mode=0o755)
    except OSError as exc:
        raise ReportError(f"cannot create the report directory {dest}: {exc.strerror or exc}; create it or choose another dest") from None
    return True


def build_report(params: dict, check_mode: bool) -> dict:
    dest = os.path.abspath(params["dest"])
    if not params["name"] or params["name"] in (".", "..") or "/" in params["name"]:
        raise ReportError(f"name {params['name']!r} is not a file name: give a base name such as migration_report (dest is the directory)")
    entries, images, context = draw(params)  # every input error before anything is touched
    name = params["name"]
    names = {chart: f"{name}_{chart}.png" for chart, _title in CHARTS}
    text = page(params, entries, images, context, names)
    created = report_dir(dest, check_mode)
    files = {os.path.join(dest, names[entry["chart"]]): images[entry["chart"]] for entry in entries if entry["drawn"]}
    html_path = os.path.join(dest, f"{name}.html")
    files[html_path] = text.encode("utf-8")
    before = {path: None if created else current(path) for path in files}
    written = [path for path, content in files.items() if before[path] != content]
    stale = [os.path.join(dest, names[entry["chart"]]) for entry in entries if not entry["drawn"]]
    removed = [path for path in stale if not created and os.path.lexists(path)]
    if not check_mode:
        for path in written:
            write(path, files[path])
        for path in removed:
            try:
                os.unlink(path)
            except OSError as exc:
                raise ReportError(f"cannot remove the stale chart {path}: {exc.strerror or exc}") from None
    for entry in entries:
        entry["path"] = os.path.join(dest, names[entry["chart"]]) if entry["drawn"] else None
    changed = bool(written or removed or created)
    verb = "would write" if check_mode else "wrote"
    result = {
        "changed": changed,
        "html": html_path,
        "charts": entries,
        "written": written,
        "removed": removed,
        "msg": f"{verb} {len(written)} file(s) in {dest}" + (f", removed {len(removed)} stale chart(s)" if removed else "")
        if changed
        else f"the report in {dest} is up to date",
    }
    old_page = before[html_path]
    result["diff"] = {
        "before_header": html_path,
        "after_header": html_path,
        "before": "" if old_page is None else old_page.decode("utf-8", "replace"),
        "after": text,
    }
    return result
