# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The final report's charts, drawn with matplotlib into PNG bytes.

Figures are made with matplotlib's object API and its Agg canvas (no pyplot, no display, no
global state), and saved without the Software tag, so the same data gives the same bytes: the
module compares them with the files on disk to say changed or not. Times are drawn in UTC.
The inputs are the shapes inputs.py returns.
"""

from __future__ import annotations

import datetime
import io
import math

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import Library
from ansible_collections.zerodowntime.migration.plugins.module_utils.report.inputs import UTC

try:
    from matplotlib import dates as mdates
    from matplotlib import ticker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
except ImportError as exc:  # reported by the module with missing_required_lib
    HAS_MATPLOTLIB = False
    MATPLOTLIB_IMPORT_ERROR = exc
else:
    HAS_MATPLOTLIB = True
    MATPLOTLIB_IMPORT_ERROR = None

MATPLOTLIB = Library(
    HAS_MATPLOTLIB,
    "matplotlib",
    MATPLOTLIB_IMPORT_ERROR,
    reason="to draw the report's charts: python -m pip install matplotlib with that Python (from a checkout: pip install '.[test]')",
)

DPI = 100
WIDTH = 12.0  # inches: 1200 pixels at DPI
PAUSE_COLOR = "#c62828"
STATUS_COLORS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "running": "#ef6c00",
    "started": "#ef6c00",
    "rolled_back": "#6a1b9a",
}
OTHER_STATUS_COLOR = "#757575"
BAND_COLORS = ("#e3f2fd", "#fff8e1")


def when(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, UTC)


def png(figure) -> bytes:
    """The figure as PNG bytes, the same bytes for the same figure (no Software tag, no date)."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def time_axis(axes, start: float, end: float, ticks: int = 10) -> None:
    """UTC clock times along x (at most `ticks` of them), padded so that a short span still reads."""
    pad = max((end - start) * 0.02, 1.0)
    axes.set_xlim(when(start - pad), when(end + pad))
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=ticks)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))


def mark_pause(axes, pause: dict | None, start: float, end: float, label: bool, height: float = 1.0) -> None:
    """The write pause as a red band (at least 0.4 % of the axis wide, so a 80 ms pause on a
    10-minute axis is still seen) with a line at its start; `label` writes its length at `height`
    (a fraction of the axes), on the side of the line with room for it."""
    if not pause:
        return
    span = max(end - start, 1.0)
    half = max((pause["end"] - pause["start"]) / 2, span * 0.002)
    middle = (pause["start"] + pause["end"]) / 2
    axes.axvspan(when(middle - half), when(middle + half), color=PAUSE_COLOR, alpha=0.25, linewidth=0, zorder=0)
    axes.axvline(when(pause["start"]), color=PAUSE_COLOR, linewidth=1.2, linestyle="--", zorder=1)
    if label:
        annotate_at(
            axes, pause["start"], height, f"write pause {pause['ms']:g} ms", start, end, color=PAUSE_COLOR, fontweight="bold", fraction=True
        )


def annotate_at(axes, moment: float, height, text: str, start: float, end: float, fraction: bool = False, **style) -> None:
    """Text just beside a point in time, left of it past 40 % of the axis (a pause in the middle
    of a close-up too: the right of it is the narrower side once the label is there)."""
    left = (moment - start) / max(end - start, 1.0) > 0.4
    axes.annotate(
        text,
        xy=(when(moment), height),
        xycoords=("data", "axes fraction") if fraction else "data",
        xytext=(-5 if left else 5, -4),
        textcoords="offset points",
        ha="right" if left else "left",
        va="top",
        fontsize=style.pop("fontsize", 10),
        **style,
    )


def gap(value):
    """A missing figure (a second without commits) as a gap in the line."""
    return math.nan if value is None else value


def span_of(*groups) -> tuple[float, float]:
    times = [moment for group in groups for moment in group if moment is not None]
    return min(times), max(times)


ZOOM_SECONDS = 20.0  # the latency chart's close-up: this long either side of the pause
ZOOM_WHEN_LONGER = 90.0  # ... when the whole run is longer than this


def latency_panels(top, bottom, samples: list[dict], pause: dict | None, start: float, end: float, ticks: int = 10) -> None:
    """Max and p99 commit latency per second above the commits per second, from start to end."""
    shown = [s for s in samples if start - 1 <= s["t"] <= end]
    times = [when(s["t"] + 0.5) for s in shown]  # each second drawn at its middle
    top.plot(times, [gap(s["max_ms"]) for s in shown], color="#1565c0", linewidth=1.3, label="slowest commit (max)")
    top.plot(times, [gap(s["p99_ms"]) for s in shown], color="#64b5f6", linewidth=1.0, label="99th percentile")
    top.set_ylim(bottom=0, top=max([s["max_ms"] or 0 for s in shown] + [1.0]) * 1.2)
    top.grid(True, alpha=0.3)
    worst = max(shown, key=lambda s: s["max_ms"] or 0, default=None)
    if worst and worst["max_ms"]:
        annotate_at(top, worst["t"] + 0.5, worst["max_ms"], f"slowest {worst['max_ms']:g} ms", start, end, color="#1565c0", fontsize=9)
    counts = [s["count"] for s in shown]
    bottom.bar(times, counts, width=0.9 / 86400, color="#90a4ae", label="commits")
    errors = [s["errors"] for s in shown]
    if any(errors):
        bottom.bar(times, errors, bottom=counts, width=0.9 / 86400, color=PAUSE_COLOR, label="failed transactions")
    bottom.grid(True, alpha=0.3)
    bottom.set_xlabel("time (UTC)")
    for axes in (top, bottom):
        mark_pause(axes, pause, start, end, label=axes is top)
    time_axis(bottom, start, end, ticks=ticks)


def latency_chart(samples: list[dict], pause: dict | None, title: str) -> bytes:
    """Commit latency per second (max and p99) above commits per second, the pause marked; with
    a pause in a long run, a close-up of the seconds around it on the right."""
    start, end = span_of([s["t"] for s in samples], [pause["start"], pause["end"]] if pause else [])
    zoom = pause is not None and end - start > ZOOM_WHEN_LONGER
    figure = Figure(figsize=(WIDTH, 6.5))
    grid = {"height_ratios": [3, 1.3], "hspace": 0.1}
    if zoom:
        grid.update(width_ratios=[2.2, 1], wspace=0.12)
    panels = figure.subplots(2, 2 if zoom else 1, sharex="col", gridspec_kw=grid, squeeze=False)
    latency_panels(panels[0][0], panels[1][0], samples, pause, start, end)
    panels[0][0].set_ylabel("commit latency (ms)")
    panels[1][0].set_ylabel("transactions\nper second")
    if zoom:
        near = (max(start, pause["start"] - ZOOM_SECONDS), min(end, pause["end"] + ZOOM_SECONDS))
        latency_panels(panels[0][1], panels[1][1], samples, pause, *near, ticks=4)
        panels[0][1].set_title("close-up: the seconds around the pause", fontsize=10, loc="left")
        panels[0][0].set_title("the whole run", fontsize=10, loc="left")
    figure.suptitle(title, fontsize=13, x=0.07, ha="left")
    handles, labels = panels[0][0].get_legend_handles_labels()
    more_handles, more_labels = panels[1][0].get_legend_handles_labels()
    figure.legend(handles + more_handles, labels + more_labels, loc="upper right", ncol=4, fontsize=9, frameon=False)
    figure.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.09)
    return png(figure)


def byte_unit(largest: float) -> tuple[str, int]:
    """The unit the lag is drawn in: the largest that keeps the largest value at 1 or more."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if largest >= size:
            return unit, size
    return "bytes", 1


def phase_bands(axes, phases: list[dict], start: float, end: float) -> None:
    """Each phase with a start as a shaded band (alternating colours) named at the top."""
    span = max(end - start, 1.0)
    for index, phase in enumerate(p for p in phases if p["start"] is not None):
        left, right = phase["start"], phase["end"] if phase["end"] is not None else end
        if right < start or left > end:
            continue
        left, right = max(left, start), min(right, end)
        axes.axvspan(when(left), when(right), color=BAND_COLORS[index % 2], linewidth=0, zorder=0)
        axes.axvline(when(left), color="#9e9e9e", linewidth=0.6, zorder=0)
        narrow = (right - left) / span < 0.12
        axes.text(
            when((left + right) / 2),
            0.98,
            phase["phase"],
            transform=axes.get_xaxis_transform(),
            ha="center",
            va="top",
            rotation=90 if narrow else 0,
            fontsize=8,
            color="#424242",
            clip_on=True,
        )


def lag_chart(samples: list[dict], phases: list[dict], pause: dict | None, title: str) -> bytes:
    """Replication lag over time, one line per slot, over the phases' bands, the pause marked."""
    start, end = span_of([s["t"] for s in samples])
    figure = Figure(figsize=(WIDTH, 5.5))
    axes = figure.subplots()
    phase_bands(axes, phases, start, end)
    series = sorted({s["series"] for s in samples})
    unit, size = byte_unit(max(s["lag_bytes"] for s in samples))
    for name in series:
        points = [s for s in samples if s["series"] == name]
        axes.plot([when(s["t"]) for s in points], [s["lag_bytes"] / size for s in points], linewidth=1.3, label=name, zorder=2)
    if pause and start <= pause["start"] <= end:
        mark_pause(axes, pause, start, end, label=True, height=0.86)  # below the phases' names
    axes.set_ylim(bottom=0, top=max(max(s["lag_bytes"] for s in samples) / size * 1.3, 1.0))
    axes.yaxis.set_major_locator(ticker.MaxNLocator(nbins=6))
    axes.set_ylabel(f"replication lag ({unit} of WAL\nnot yet confirmed by the subscriber)")
    axes.set_xlabel("time (UTC)")
    axes.set_title(title, fontsize=13, loc="left")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(0, -0.12), ncol=max(1, len(series)), fontsize=9, frameon=False)
    time_axis(axes, start, end)
    figure.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.19)
    return png(figure)


def timeline_chart(phases: list[dict], pause: dict | None, title: str, now: float | None = None) -> bytes:
    """The phases as bars from start to end on a clock, coloured by status, with durations."""
    timed = [p for p in phases if p["start"] is not None]
    start, end = span_of([p["start"] for p in timed], [p["end"] for p in timed], [now])
    height = 1.6 + 0.45 * len(phases)
    figure = Figure(figsize=(WIDTH, height))
    axes = figure.subplots()
    labels = []
    for row, phase in enumerate(phases):
        labels.append(f"{phase['phase']}\n{phase['status']}")
        color = STATUS_COLORS.get(phase["status"], OTHER_STATUS_COLOR)
        if phase["start"] is None:
            axes.text(when(start), row, "  not started", va="center", ha="left", fontsize=9, color=OTHER_STATUS_COLOR)
            continue
        finish = phase["end"] if phase["end"] is not None else end
        width = max(finish - phase["start"], (end - start) * 0.002)
        axes.barh(row, width / 86400, left=when(phase["start"]), height=0.6, color=color, hatch=None if phase["end"] else "//")
        shown = f"{finish - phase['start']:.1f} s" if phase["end"] is not None else phase["status"]
        axes.text(when(finish), row, f"  {shown}", va="center", ha="left", fontsize=9)
    axes.set_yticks(range(len(phases)), labels, fontsize=9)
    axes.set_ylim(len(phases) - 0.4, -0.6)  # the first phase on top
    if pause:
        mark_pause(axes, pause, start, end, label=True)
    axes.set_xlabel("time (UTC)")
    axes.set_title(title, fontsize=13, loc="left")
    axes.grid(True, axis="x", alpha=0.3)
    time_axis(axes, start, end + (end - start) * 0.08)  # room for the last duration
    figure.subplots_adjust(left=0.16, right=0.98, top=1 - 0.5 / height, bottom=0.75 / height)
    return png(figure)
