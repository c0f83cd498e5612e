# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SIGTERM (AWX cancelling a job) and SIGHUP (the SSH connection dropped) as an exception inside a
cutover's freeze or pause, so its undo runs as for any failure. SIGKILL cannot be caught: each
cutover says what ends its freeze then (a guardian, a freeze that lapses by itself)."""

from __future__ import annotations

import signal
from contextlib import contextmanager


class Interrupted(Exception):
    """SIGTERM or SIGHUP during a freeze or pause: treated as a failure, so the undo runs."""


@contextmanager
def signals_interrupt():
    def interrupt(signum, _frame):
        raise Interrupted(f"the module received {signal.Signals(signum).name}")

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
