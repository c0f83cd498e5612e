# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Progress of a long wait that someone can watch: done of total, rate, ETA.

* `Progress` counts one quantity (rows, bytes, blocks, chunks, tables): done of total, the rate
  over a sliding window of recent samples, and the ETA that rate gives. Pure; the clock is
  injectable (tests pass a fake one).
* `Reporter` is what a module's work talks to: `update(done, total, ...)` for the step as a
  whole, `item(name, done, total)` (or `on_progress(table, rows_done, rows_total, rate, eta)`,
  the callable a copy module is handed) for the parts of it (tables, partitions). It emits a
  snapshot to its sinks at most every `every` seconds (and always at `finish`). A sink is an
  object with `write(snapshot)`; a sink that raises never fails the work: the error becomes a
  warning (`warnings`), reported once per distinct message.
* `Sampler` runs `sample()` every `interval` seconds in a background thread while the work
  blocks in one statement (CREATE INDEX CONCURRENTLY), feeding what it returns to a Reporter.

Nothing here knows PostgreSQL: postgres/progress.py has the sink that writes snapshots into the
migration_state table.
"""

from __future__ import annotations

import collections
import threading
import time

DEFAULT_EVERY = 5.0  # seconds between two emissions
DEFAULT_WINDOW = 30.0  # seconds of samples the rate is computed over
MIN_SPAN = 1.0  # seconds the samples must span before a rate is given (not 250 rows in 30 µs)


class Progress:
    """`done` of `total` (None when unknown) `unit`s, with the rate over the last `window` seconds."""

    def __init__(self, total=None, unit: str = "items", clock=time.monotonic, window: float = DEFAULT_WINDOW):
        self.total = total
        self.unit = unit
        self.clock = clock
        self.window = window
        self.started = clock()
        self.done = 0
        self.samples: collections.deque = collections.deque([(self.started, 0)])

    def update(self, done, total=None) -> None:
        """The count now (absolute); a `total` given replaces the known one. A count that goes
        down (a restarted copy) restarts the rate window rather than giving a negative rate."""
        now = self.clock()
        if total is not None:
            self.total = total
        if done < self.done:
            self.samples.clear()
        self.done = done
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()

    def advance(self, amount=1) -> None:
        self.update(self.done + amount)

    def rate(self) -> float | None:
        """Units per second over the window; None until the samples span MIN_SPAN seconds."""
        if len(self.samples) < 2:
            return None
        (first_time, first_done), (last_time, last_done) = self.samples[0], self.samples[-1]
        if last_time - first_time < MIN_SPAN:
            return None
        return (last_done - first_done) / (last_time - first_time)

    def eta(self) -> float | None:
        """Seconds until done reaches total at the current rate; 0 when done; None when unknown."""
        if self.total is None:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.rate()
        if not rate or rate <= 0:
            return None
        return left / rate

    def percent(self) -> float | None:
        if not self.total:
            return None
        return round(min(100.0, 100.0 * self.done / self.total), 1)

    def snapshot(self) -> dict:
        rate, eta = self.rate(), self.eta()
        return {
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "percent": self.percent(),
            "rate": round(rate, 3) if rate is not None else None,
            "eta_seconds": round(eta, 1) if eta is not None else None,
            "elapsed_seconds": round(self.clock() - self.started, 1),
        }


class CallableSink:
    """A sink that hands each snapshot to a function (a log line, a list in a test)."""

    def __init__(self, function):
        self.function = function

    def write(self, snapshot: dict) -> None:
        self.function(snapshot)


class Reporter:
    """One step's progress, emitted to `sinks` at most every `every` seconds.

    Thread-safe: a Sampler thread or a pool of readers may report at the same time.
    """

    def __init__(self, step: str, sinks=(), unit: str = "items", total=None, every: float = DEFAULT_EVERY, clock=time.monotonic):
        self.step = step
        self.sinks = list(sinks)
        self.every = every
        self.clock = clock
        self.progress = Progress(total, unit, clock=clock)
        self.items: dict[str, Progress] = {}
        self.item_figures: dict[str, dict] = {}  # figures an item's owner computed itself (rate, eta)
        self.detail: dict = {}
        self.state = "running"
        self.last_emitted: float | None = None
        self.emitted = 0
        self.warnings: list[str] = []
        self.lock = threading.RLock()

    @property
    def enabled(self) -> bool:
        return bool(self.sinks)

    # what the work reports -----------------------------------------------------------------
    def update(self, done, total=None, unit: str | None = None, detail: dict | None = None, force: bool = False) -> bool:
        """The step's count now; returns whether a snapshot was emitted."""
        with self.lock:
            if unit and unit != self.progress.unit:  # counting something else now: a rate of its own
                started = self.progress.started
                self.progress = Progress(None, unit, clock=self.clock, window=self.progress.window)
                self.progress.started = started
                self.progress.samples.clear()  # its first count is where the rate starts, not 0
            self.progress.update(done, total)
            if detail is not None:
                self.detail = dict(detail)
            return self.maybe_emit(force)

    def item(self, name: str, done, total=None, unit: str | None = None, rate=None, eta=None, emit: bool = True) -> bool:
        """One part's count now (a table being copied); `rate`/`eta` when its owner knows better."""
        with self.lock:
            part = self.items.get(name)
            if part is None:
                part = self.items[name] = Progress(total, unit or self.progress.unit, clock=self.clock)
            elif unit:
                part.unit = unit
            part.update(done, total)
            self.item_figures[name] = {key: value for key, value in (("rate", rate), ("eta_seconds", eta)) if value is not None}
            return self.maybe_emit() if emit else False

    def drop_item(self, name: str) -> None:
        """A part that finished (and is counted in the step's done) leaves the snapshot."""
        with self.lock:
            self.items.pop(name, None)
            self.item_figures.pop(name, None)

    def on_progress(self, table: str, rows_done, rows_total, rate=None, eta=None) -> None:
        """The callable a copy module is given: one table's rows; the step counts the rows of
        every table reported so far (done and total summed)."""
        with self.lock:
            self.item(table, rows_done, rows_total, unit="rows", rate=rate, eta=eta, emit=False)
            done = sum(part.done for part in self.items.values())
            known = [part.total for part in self.items.values()]
            total = sum(known) if all(value is not None for value in known) else None
            self.update(done, total, unit="rows")

    def finish(self, state: str = "done", detail: dict | None = None) -> None:
        """The last snapshot (state done or failed), always emitted."""
        with self.lock:
            self.state = state
            if detail is not None:
                self.detail.update(detail)
            self.emit()

    # emission ------------------------------------------------------------------------------
    def due(self) -> bool:
        return self.last_emitted is None or self.clock() - self.last_emitted >= self.every

    def maybe_emit(self, force: bool = False) -> bool:
        if not self.sinks or not (force or self.due()):
            return False
        self.emit()
        return True

    def snapshot(self) -> dict:
        with self.lock:
            shown = dict(self.progress.snapshot(), step=self.step, state=self.state, every=self.every)
            if self.detail:
                shown["detail"] = dict(self.detail)
            if self.items:
                shown["items"] = {name: dict(part.snapshot(), **self.item_figures.get(name, {})) for name, part in self.items.items()}
            return shown

    def emit(self) -> None:
        if not self.sinks:
            return
        with self.lock:
            self.last_emitted = self.clock()
            self.emitted += 1
            shown = self.snapshot()
            for sink in self.sinks:
                try:
                    sink.write(shown)
                except Exception as exc:
                    self.warn(f"progress of step '{self.step}' was not recorded: {exc}")

    def warn(self, message: str) -> None:
        with self.lock:
            if message not in self.warnings:
                self.warnings.append(message)

    def close(self) -> None:
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self.warn(f"closing the progress sink of step '{self.step}' failed: {exc}")


class Sampler:
    """Call `sample()` every `interval` seconds in a background thread until the block ends.

    `sample()` returns None (nothing to report yet) or a dict of Reporter.update keywords
    (done, total, unit, detail). An exception in `sample` becomes a warning of the reporter;
    the thread never outlives the `with` block."""

    def __init__(self, reporter: Reporter, sample, interval: float = 1.0):
        self.reporter = reporter
        self.sample = sample
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"progress-{reporter.step}", daemon=True)

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                figures = self.sample()
            except Exception as exc:
                self.reporter.warn(f"progress of step '{self.reporter.step}' could not be read: {exc}")
                continue
            if figures:
                self.reporter.update(**figures)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join(timeout=max(5.0, 2 * self.interval))
        return False
