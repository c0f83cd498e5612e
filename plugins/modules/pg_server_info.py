#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_server_info
short_description: Read a PostgreSQL server's version, role, WAL position, settings and row counts
description:
  - Connects to one PostgreSQL server and reports what the migration phases check before they
    act on it; its version, whether it is a primary or a standby, its WAL position, any
    settings asked for, and the rows of any tables asked for.
  - With O(require_logical=true) it fails, naming the fix, unless the server has C(wal_level=logical).
  - Reads only; never changes anything.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  settings:
    description:
      - Names of settings to return, as C(current_setting()) shows them (with units).
      - An unknown name is an error.
    type: list
    elements: str
    default: []
  require_logical:
    description:
      - Fail unless the server's C(wal_level) is C(logical), as a logical replication source needs.
    type: bool
    default: false
  count_rows:
    description:
      - Tables of O(login_db) whose rows to count, C(table) (schema C(public)) or C(schema.table);
        names are taken as the catalog stores them (double-quote a part that contains a dot).
      - Each is counted exactly, by a full scan, in RV(table_rows); a table that does not
        exist is reported as C(null), so a playbook can tell "not created yet" from "empty".
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description: Reads only, so check mode behaves the same.
  diff_mode:
    support: none
    description: Nothing is changed, so there is no diff.
"""

EXAMPLES = r"""
- name: Check that blue can publish logical changes
  zerodowntime.migration.pg_server_info:
    login_host: 127.0.0.11
    login_port: 5432
    require_logical: true
    settings: [max_replication_slots, max_wal_senders]
  register: blue_info

- name: Count the rows of blue's sample tables
  zerodowntime.migration.pg_server_info:
    login_host: 127.0.0.11
    login_port: 5432
    login_user: novacron
    login_password: "{{ sample_data_owner_password }}"
    count_rows: [tenants, users, vms]
  register: blue_rows
"""

RETURN = r"""
version:
  description: Server version as major.minor.
  returned: success
  type: str
  sample: "15.18"
server_version_num:
  description: Server version as PostgreSQL's integer.
  returned: success
  type: int
  sample: 150018
in_recovery:
  description: True on a standby.
  returned: success
  type: bool
wal_level:
  description: The server's wal_level.
  returned: success
  type: str
  sample: logical
wal_lsn:
  description: The current WAL write position (primary) or last replayed position (standby).
  returned: success
  type: str
  sample: 0/3000148
settings:
  description: The settings asked for, by name.
  returned: success
  type: dict
  sample: {"max_wal_senders": "10"}
table_rows:
  description: The rows of each table of O(count_rows), by the name given; C(null) for a table that does not exist.
  returned: success
  type: dict
  sample: {"tenants": 100, "vms": 50000, "not_created_yet": null}
queries:
  description: Statements that changed something (always empty, the module only reads).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError, ident
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.identifiers import parse_qualified_name
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import pg_argument_spec, run

try:
    from psycopg import sql
except ImportError:  # reported by the module through missing_required_lib
    sql = None

TABLE_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f')) AS exists"
)


def table_rows(client, tables):
    """{name as given: exact row count, or None when the table does not exist}."""
    names = {text: parse_qualified_name(text) for text in tables}  # every name checked before any scan
    counts = {}
    for text, (schema, table) in names.items():
        if not client.query_one(TABLE_EXISTS, (schema, table))["exists"]:
            counts[text] = None
            continue
        counts[text] = client.query_one(sql.SQL("SELECT count(*) AS rows FROM {}").format(ident(schema, table)))["rows"]
    return counts


def server_info(client, settings, require_logical, count_rows=()):
    if require_logical:
        client.require_logical_wal()
    known = {row["name"] for row in client.query("SELECT name FROM pg_catalog.pg_settings WHERE name = ANY(%s)", (list(settings),))}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise PgError(f"unknown setting(s) on {client.endpoint}: {', '.join(unknown)}: check the names in 'settings'")
    row = client.query_one(
        "SELECT pg_catalog.pg_is_in_recovery() AS in_recovery, "
        "CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn() "
        "ELSE pg_catalog.pg_current_wal_lsn() END::text AS wal_lsn"
    )
    major, minor = client.server_version
    return {
        "changed": False,
        "version": f"{major}.{minor}",
        "server_version_num": client.conn.info.server_version,
        "in_recovery": row["in_recovery"],
        "wal_level": client.setting("wal_level"),
        "wal_lsn": row["wal_lsn"],
        "settings": {name: client.query_one("SELECT pg_catalog.current_setting(%s) AS value", (name,))["value"] for name in settings},
        "table_rows": table_rows(client, count_rows),
        "queries": client.queries,
    }


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            settings=dict(type="list", elements="str", default=[]),
            require_logical=dict(type="bool", default=False),
            count_rows=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run(module, lambda client: server_info(client, params["settings"], params["require_logical"], params["count_rows"]))


if __name__ == "__main__":
    main()
