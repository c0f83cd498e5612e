# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every PostgreSQL module does the same way: argument spec, connect, fail clearly."""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.zerodowntime.migration.plugins.module_utils.pg_client import (
    CONNECTION_ARGUMENT_SPEC,
    HAS_PSYCOPG,
    PSYCOPG_IMPORT_ERROR,
    Client,
    PgError,
)


def pg_argument_spec(**module_options) -> dict:
    """The shared connection options plus the module's own."""
    spec = dict(CONNECTION_ARGUMENT_SPEC)
    spec.update(module_options)
    return spec


def run(module, work) -> None:
    """Connect, call work(client) -> result dict, exit; a PgError fails with its message.

    `queries` is returned on failure too, so the audit trail shows what ran before the error.
    """
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg >= 3.1"), exception=str(PSYCOPG_IMPORT_ERROR))
    client = None
    try:
        client = Client(module.params, check_mode=module.check_mode)
        with client:
            result = work(client)
    except PgError as exc:
        module.fail_json(msg=str(exc), changed=False, queries=client.queries if client else [], **exc.details)
    module.exit_json(**result)
