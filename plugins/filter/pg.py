# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for PostgreSQL figures: LSN arithmetic and memory settings."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.lsn import lsn_diff, parse_lsn
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.tuning import memory_settings


def _wrapped(function):
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ValueError as exc:
            raise AnsibleFilterError(str(exc)) from exc

    call.__doc__ = function.__doc__
    return call


class FilterModule:
    """zerodowntime.migration filters."""

    def filters(self):
        return {
            "pg_lsn_to_int": _wrapped(parse_lsn),
            "pg_lsn_diff": _wrapped(lsn_diff),
            "pg_memory_settings": _wrapped(memory_settings),
        }
