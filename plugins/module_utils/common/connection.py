# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every connection class shares: close() and use in a `with` block."""

from __future__ import annotations


class Connection:
    """A mixin for a class holding its driver connection in `self.conn`: `close()` closes it, and
    `with Client(...) as client:` closes it at the end of the block (common.runner.run_module
    calls close() on every connection it opened)."""

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
