# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every connection a module opens has: close() and a with-block that closes it."""

from __future__ import annotations


class Connection:
    """A module's connection to a service; `conn` is the driver's connection object.

    common.runner.run_module closes the connections it opened; `with` closes one opened by hand.
    """

    conn = None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
