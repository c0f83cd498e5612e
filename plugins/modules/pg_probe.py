#!/usr/bin/python
# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: pg_probe
short_description: See what a client sees through a PostgreSQL endpoint (PgBouncer, HAProxy, a server), optionally with a marker row
description:
  - Connects through an endpoint the way a client does (the connection options - a PgBouncer pool, an
    HAProxy frontend or a server) and reports the server the session reached - its address and
    port (C(inet_server_addr()), C(inet_server_port())), whether it is in recovery or read-only, the
    database, the user and the version.
  - With O(expect) it fails unless that server has the facts given (for example the port of green
    after a cutover), naming what it found.
  - With O(write) it writes a marker row - O(write.values) into O(write.table) - through the endpoint,
    in one transaction with the facts (through PgBouncer in transaction pooling both run on the same
    server connection), and returns the row's O(write.key). With O(expect) the row is written only when
    the facts hold. With O(visible_on) it then waits, at most O(visible_timeout) seconds, until the row
    is on each of those servers (replication) and fails naming those where it is not.
  - A row equal to O(write.values) on every column that is already visible through the endpoint is not
    written again (C(changed=false)); put a unique marker (a timestamp) in O(write.values) to write a
    new row on every run.
  - Names are checked (the table and every column must exist, on the endpoint and for O(write.key) on
    each server of O(visible_on)) before anything is written, and reach statements only quoted by
    psycopg; values are parameters. No SQL text is taken from options.
version_added: 0.1.0
author:
  - zerodowntime.migration maintainers (@zerodowntime)
options:
  expect:
    description:
      - Facts the server reached through the endpoint must have; the module fails (and writes
        nothing) when one differs. Facts left out are not checked.
    type: dict
    suboptions:
      port:
        description: The port the server listens on (C(inet_server_port())).
        type: int
      address:
        description: The server's address as C(inet_server_addr()) shows it (null over a unix socket).
        type: str
      system_identifier:
        description:
          - The server's C(system_identifier) (C(pg_control_system())), as a string. Unlike the port it
            tells blue from green wherever they run; a physical replica has its primary's.
        type: str
      in_recovery:
        description: Whether the server is a standby (C(pg_is_in_recovery())).
        type: bool
      read_only:
        description:
          - Whether a new transaction is read-only there (C(transaction_read_only)), for example on a
            server frozen by pg_readonly or on a standby.
        type: bool
  write:
    description:
      - A marker row to write through the endpoint. Not set, the probe only reads.
    type: dict
    suboptions:
      table:
        description:
          - The table, as C(table) (schema C(public)) or C(schema.table); names are taken as the catalog
            stores them (double-quote a part that contains a dot).
        type: str
        required: true
      values:
        description:
          - The row - column name to value. A dict or a list is written as C(jsonb). The columns left
            out take their defaults.
        type: dict
        required: true
      key:
        description:
          - The column that identifies the row (a primary key, filled by its default), returned in
            RV(row) and looked up on the servers of O(visible_on).
        type: str
        default: id
  visible_on:
    description:
      - Servers (connection options, as at the top level) on which the row of O(write) must appear,
        found by O(write.key). Needs O(write). All are connected to before anything is written.
    type: list
    elements: dict
    suboptions:
      login_host:
        description: Host name or address of the server.
        type: str
        default: localhost
        aliases: [host]
      login_port:
        description: Port of the server.
        type: int
        default: 5432
        aliases: [port]
      login_unix_socket:
        description: Directory of the server's unix socket; when set it is used instead of O(visible_on[].login_host).
        type: str
        aliases: [unix_socket]
      login_user:
        description: Role to connect as.
        type: str
        default: postgres
        aliases: [user]
      login_password:
        description: Password of O(visible_on[].login_user). Never logged, returned or shown.
        type: str
        aliases: [password]
      login_db:
        description: Database to connect to.
        type: str
        default: postgres
        aliases: [db, database]
      ssl_mode:
        description: libpq C(sslmode).
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      ssl_rootcert:
        description: CA certificate file used to verify the server.
        type: path
      ssl_cert:
        description: Client certificate file.
        type: path
      ssl_key:
        description: Client private key file.
        type: path
      connect_timeout:
        description: Seconds to wait for the server to answer before failing.
        type: int
        default: 10
      application_name:
        description: C(application_name) the session shows in C(pg_stat_activity).
        type: str
        default: zerodowntime.migration
  visible_timeout:
    description:
      - Seconds to wait (polling every 0.2 s) for the row to appear on the servers of O(visible_on),
        all together; C(0) looks once.
    type: float
    default: 10
extends_documentation_fragment:
  - zerodowntime.migration.postgres
attributes:
  check_mode:
    support: full
    description:
      - Reads the facts, checks O(expect) and the names, and looks for the row; writes nothing and
        reports C(changed=true) when the row would be written (then RV(row) is null and O(visible_on)
        is not looked at).
  diff_mode:
    support: none
    description: Only a row is added; RV(row) says which.
notes:
  - Connect as a role that may insert into O(write.table) (and that row level security lets see the
    row, or the probe cannot find it again).
  - Statements are never prepared (PgBouncer in transaction pooling may run the next one on another
    server connection).
"""

EXAMPLES = r"""
- name: A query through HAProxy's read frontend is answered by a server that is not frozen
  zerodowntime.migration.pg_probe:
    login_port: 5001
    expect:
      read_only: false

- name: A write through PgBouncer lands on green and replicates back to blue
  zerodowntime.migration.pg_probe:
    login_host: 127.0.0.61  # the lab's pool-1
    login_port: 6432
    expect:
      address: 127.0.0.12
      port: 5432
    write:
      table: audit_log
      values:
        tenant_id: 0
        action: migration.cutover
        object_type: database
        details: {source: phase5_cutover, marker: "cutover-{{ now(utc=true).strftime('%Y%m%dT%H%M%S%f') }}"}
    visible_on:
      - login_host: 127.0.0.11
        login_port: 5432
        login_user: migrator
        login_password: "{{ migration_password }}"
        login_db: novacron
    visible_timeout: 30
  register: probe

- name: Show where it landed
  ansible.builtin.debug:
    msg: "audit_log id {{ probe.row.id }} on {{ probe.server.address }}:{{ probe.server.port }}"
"""

RETURN = r"""
endpoint:
  description: The endpoint connected through (host:port or the socket).
  returned: success
  type: str
  sample: 127.0.0.61:6432
server:
  description: The server the session reached through the endpoint.
  returned: success, and on a failed O(expect)
  type: dict
  contains:
    address:
      description: C(inet_server_addr()); null over a unix socket.
      type: str
      sample: 127.0.0.12
    port:
      description: C(inet_server_port()).
      type: int
      sample: 5432
    in_recovery:
      description: C(pg_is_in_recovery()).
      type: bool
      sample: false
    read_only:
      description: Whether a transaction is read-only there (C(transaction_read_only)).
      type: bool
      sample: false
    database:
      description: The database.
      type: str
      sample: novacron
    user:
      description: The role of the session.
      type: str
      sample: migrator
    version:
      description: C(server_version).
      type: str
      sample: 15.18 (Debian 15.18-0+deb12u1)
    system_identifier:
      description: C(system_identifier) of C(pg_control_system()), as a string.
      type: str
      sample: "7715469327822356847"
row:
  description:
    - The row of O(write) - O(write.key) and its value - written by this run or found already.
    - Null without O(write), and in check mode when the row would be written.
  returned: success
  type: dict
  sample: {"id": 102766}
visible_on:
  description: For each server of O(visible_on), whether the row was found and after how long.
  returned: success, and when the row is missing somewhere
  type: list
  elements: dict
  sample: [{"server": "127.0.0.11:5432", "found": true, "waited_s": 0.412}]
queries:
  description: Statements that changed something (the C(INSERT), with its values as placeholders); empty when nothing was written.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import Client
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.module import (
    PSYCOPG,
    connect_option,
    connection_option,
    pg_argument_spec,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.probe import probe


def main():
    module = AnsibleModule(
        argument_spec=pg_argument_spec(
            expect=dict(
                type="dict",
                options=dict(
                    port=dict(type="int"),
                    address=dict(type="str"),
                    system_identifier=dict(type="str"),
                    in_recovery=dict(type="bool"),
                    read_only=dict(type="bool"),
                ),
            ),
            write=dict(
                type="dict",
                options=dict(
                    table=dict(type="str", required=True),
                    values=dict(type="dict", required=True),
                    key=dict(type="str", default="id", no_log=False),
                ),
            ),
            visible_on=connection_option(type="list", elements="dict"),
            visible_timeout=dict(type="float", default=10.0),
        ),
        required_by={"visible_on": ["write"]},
        supports_check_mode=True,
    )
    servers = module.params["visible_on"] or []
    openers = {"client": lambda: Client(module.params, check_mode=module.check_mode)}
    for index, options in enumerate(servers):
        name = f"visible_on[{index}]"
        openers[name] = lambda options=options, name=name: connect_option(options, name, module.check_mode)
    run_module(
        module,
        lambda opened: probe(opened["client"], [opened[f"visible_on[{index}]"] for index in range(len(servers))], module.params),
        openers,
        libraries=[PSYCOPG],
    )


if __name__ == "__main__":
    main()
