# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for PgBouncer's auth_file: SCRAM-SHA-256 verifiers computed from plain passwords.

pgbouncer_scram_verifier(password, existing=None, iterations=4096)
    The SCRAM-SHA-256 verifier of `password`, as PostgreSQL stores it and PgBouncer's auth_file
    takes it. When `existing` is already a verifier of that password it is returned unchanged
    (so a template that uses it stays idempotent); otherwise a new one with a random salt.

pgbouncer_auth_file_secrets(content)
    {user: secret} read from an auth_file's text ("user" "secret" lines).

pgbouncer_repointed_pools(content, databases)
    The pools of `databases` (the role's pgbouncer_databases) that pgbouncer.ini's text points
    somewhere else than they say - as a cutover leaves them: [{name, installed, configured}],
    each target as "host:port/dbname". Pools the text does not define are left out.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.ini import entry_target, find_database_entry
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.scram import (
    SCRAM_ITERATIONS,
    parse_auth_file,
    scram_verifier,
    scram_verifier_matches,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError


def pgbouncer_scram_verifier(password, existing=None, iterations=SCRAM_ITERATIONS):
    """The SCRAM-SHA-256 verifier of `password`; `existing` is kept when it already matches."""
    if password is None or str(password) == "":
        raise AnsibleFilterError("pgbouncer_scram_verifier needs a non-empty password")
    password = str(password)
    if existing and scram_verifier_matches(existing, password):
        return existing
    try:
        return scram_verifier(password, iterations=int(iterations))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def pgbouncer_auth_file_secrets(content):
    """{user: secret} of an auth_file's text."""
    return parse_auth_file(content if isinstance(content, str) else "")


def pgbouncer_repointed_pools(content, databases):
    """The pools whose target in pgbouncer.ini's text differs from `databases`."""
    raw = (content if isinstance(content, str) else "").encode("utf-8", "surrogateescape")
    moved = []
    for database in databases or []:
        name = database["name"]
        try:
            entry = find_database_entry(raw, name)
        except PgError as exc:
            raise AnsibleFilterError(str(exc)) from exc
        if entry is None:
            continue
        installed = entry_target(entry["values"], name)
        configured = {"host": database.get("host"), "port": int(database.get("port", 5432)), "dbname": database.get("dbname", name)}
        if installed != configured:
            moved.append({"name": name, "installed": describe_target(installed), "configured": describe_target(configured)})
    return moved


def describe_target(target: dict) -> str:
    return f"{target['host']}:{target['port']}/{target['dbname']}"


class FilterModule:
    """zerodowntime.migration PgBouncer filters."""

    def filters(self):
        return {
            "pgbouncer_scram_verifier": pgbouncer_scram_verifier,
            "pgbouncer_auth_file_secrets": pgbouncer_auth_file_secrets,
            "pgbouncer_repointed_pools": pgbouncer_repointed_pools,
        }
