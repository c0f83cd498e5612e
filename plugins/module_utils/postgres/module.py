# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every PostgreSQL module does the same way: argument spec, connect, fail clearly."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import Library, run_connection
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import (
    CONNECTION_ARGUMENT_SPEC,
    HAS_PSYCOPG,
    PSYCOPG_IMPORT_ERROR,
    Client,
    PgError,
)

PSYCOPG = Library(HAS_PSYCOPG, "psycopg >= 3.1", PSYCOPG_IMPORT_ERROR)


def pg_argument_spec(**module_options) -> dict:
    """The shared connection options plus the module's own."""
    spec = dict(CONNECTION_ARGUMENT_SPEC)
    spec.update(module_options)
    return spec


def connection_option(**settings) -> dict:
    """An option holding a whole connection (source, target, ...): a dict of the shared connection
    options; `settings` add to or replace its spec (required=True, type="list", elements="dict")."""
    spec = dict(type="dict", options=dict(CONNECTION_ARGUMENT_SPEC))
    spec.update(settings)
    return spec


def pair_argument_spec(**module_options) -> dict:
    """O(source) and O(target), each a required connection, plus the module's own options."""
    return dict(source=connection_option(required=True), target=connection_option(required=True), **module_options)


def pair_openers(params: dict) -> dict:
    """common.runner.run_module's openers for O(source) and O(target); a connection error names the side."""
    return {side: (lambda side=side: connect_option(params[side], side)) for side in ("source", "target")}


def connect_option(params: dict, option: str, check_mode: bool = False, opener=Client):
    """A connection from the options under `option` (source, target, ...); an error names the option."""
    try:
        return opener(params, check_mode=check_mode)
    except PgError as exc:
        raise PgError(f"cannot connect to the {option} (options under {option}): {exc}") from None


def run(module, work) -> None:
    """Connect with the module's own connection options, call work(client) -> result dict, exit.
    A module with several connections calls common.runner.run_module with its openers and
    libraries=[PSYCOPG]."""
    run_connection(module, lambda: Client(module.params, check_mode=module.check_mode), work, libraries=[PSYCOPG])
