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


def connect_option(params: dict, option: str, check_mode: bool = False, opener=Client):
    """A connection from the options under `option` (source, target, ...); an error names the option."""
    try:
        return opener(params, check_mode=check_mode)
    except PgError as exc:
        raise PgError(f"cannot connect to the {option} (options under {option}): {exc}") from None


def run(module, work) -> None:
    """Connect with the module's own connection options, call work(client) -> result dict, exit."""
    run_with(module, {"client": lambda: Client(module.params, check_mode=module.check_mode)}, lambda opened: work(opened["client"]))


def run_with(module, openers: dict, work) -> None:
    """Open every connection of `openers` ({name: () -> Client or AdminConsole}, in order), call
    work(opened) -> result dict, close them, exit. A PgError fails with its message and details.

    `queries` is returned on failure too (every connection's, in order), so the audit trail shows
    what ran before the error.
    """
    if not HAS_PSYCOPG:
        module.fail_json(msg=missing_required_lib("psycopg >= 3.1"), exception=str(PSYCOPG_IMPORT_ERROR))
    opened = {}
    try:
        for name, opener in openers.items():
            opened[name] = opener()
        result = work(opened)
    except PgError as exc:
        queries = [query for connection in opened.values() for query in connection.queries]
        module.fail_json(msg=str(exc), changed=False, queries=queries, **exc.details)
    finally:
        for connection in opened.values():
            connection.close()
    module.exit_json(**result)
