# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test failpoint of the cutovers (PostgreSQL pg_switchover, Redis redis_switchover state=switched).

With HOLD_VARIABLE set to "step:seconds" in the module's environment, the cutover sleeps that long
after `step`, still inside its pause, so that a signal test lands in the pause ("before step" holds
a PostgreSQL step once journaled, before it runs: a module stalled there). With MARK_VARIABLE
also set (a file path), that file is created as the hold begins: a test signals as soon as it
exists instead of guessing when the step ended. Unset (always, in production) they do nothing.
"""

from __future__ import annotations

import os
import time

HOLD_VARIABLE = "ZERODOWNTIME_SWITCHOVER_HOLD"
MARK_VARIABLE = "ZERODOWNTIME_SWITCHOVER_HOLD_MARK"


def hold(step: str) -> None:
    """Sleep after `step` when HOLD_VARIABLE asks for it."""
    name, separator, seconds = os.environ.get(HOLD_VARIABLE, "").partition(":")
    if name == step and separator and seconds:
        mark = os.environ.get(MARK_VARIABLE)
        if mark:
            with open(mark, "w", encoding="utf-8") as marker:
                marker.write(f"{os.getpid()}\n")
        time.sleep(float(seconds))
