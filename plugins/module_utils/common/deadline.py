# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bounded waits: a Deadline and the one poll loop.

Every wait in the collection is bounded. `poll` calls `probe` until it returns something truthy
or the deadline passes, reporting progress every `report_every` seconds, so a long wait is never
silent and never endless.
"""

from __future__ import annotations

import time


class Deadline:
    """A point in time `seconds` from now (time.monotonic, immune to clock changes)."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.clock = clock
        self.seconds = seconds
        self.started = clock()
        self.at = self.started + seconds

    def remaining(self) -> float:
        """Seconds left, never below 0."""
        return max(0.0, self.at - self.clock())

    def elapsed(self) -> float:
        return self.clock() - self.started

    @property
    def passed(self) -> bool:
        return self.clock() >= self.at


def poll(
    probe, deadline: Deadline, on_timeout, ready=bool, interval: float = 0.05, report=None, report_every: float = 5.0, sleep=time.sleep
):
    """Call probe() until ready(its answer), and return that answer.

    When the deadline passes first, `on_timeout(last)` is called with probe's last answer and
    must raise the error that names what did not happen and what to do; with `on_timeout=None`
    the wait is a best effort and poll returns that last answer instead. `report(last,
    elapsed)` is called every `report_every` seconds while waiting, so a long wait is never
    silent. The last probe runs at or after the deadline: a condition met just in time is not
    reported as a timeout.
    """
    reported = 0.0
    while True:
        last = probe()
        if ready(last):
            return last
        if deadline.passed:
            if on_timeout is None:
                return last
            on_timeout(last)
            raise AssertionError("on_timeout must raise")  # a programming error, never a user's
        elapsed = deadline.elapsed()
        if report is not None and elapsed - reported >= report_every:
            reported = elapsed
            report(last, elapsed)
        sleep(min(interval, max(deadline.remaining(), 0.001)))
