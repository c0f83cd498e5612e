# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for PostgreSQL figures: LSN arithmetic, memory settings, and where roles/postgresql puts
each instance of a host (plugins/plugin_utils/pg_layout.py)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.lsn import lsn_diff, parse_lsn
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.tuning import memory_settings
from ansible_collections.zerodowntime.migration.plugins.plugin_utils.pg_layout import (
    pg_instance_certificates,
    pg_instance_conflicts,
    pg_instance_layout,
)


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
            "pg_instance_layout": _wrapped(pg_instance_layout),
            "pg_instance_conflicts": _wrapped(pg_instance_conflicts),
            "pg_instance_certificates": _wrapped(pg_instance_certificates),
        }
