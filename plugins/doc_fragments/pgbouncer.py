# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PgBouncer's admin console: flat (one pooler) and as the poolers of a switchover."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.plugin_utils.doc_text import flat, libpq_tls, nest, option

# Matches ADMIN_CONNECTION_ARGUMENT_SPEC in plugins/module_utils/pgbouncer/console.py.
CONSOLE_OPTIONS = (
    r"""
login_host:
  description:
    - Host name or address of PgBouncer.
  type: str
  default: localhost
login_port:
  description:
    - Port PgBouncer listens on.
  type: int
  default: 6432
login_unix_socket:
  description:
    - Directory of PgBouncer's unix socket; when set it is used instead of O(login_host).
  type: str
login_user:
  description:
    - Admin console user (listed in PgBouncer's C(admin_users)).
  type: str
  default: pgbouncer
login_password:
  description:
    - Password of O(login_user). Never logged, returned or shown in messages.
  type: str
login_db:
  description:
    - The admin console's database.
  type: str
  default: pgbouncer
"""
    + libpq_tls("PgBouncer")
    + r"""
connect_timeout:
  description:
    - Seconds to wait for PgBouncer to answer before failing.
  type: int
  default: 10
application_name:
  description:
    - C(application_name) the admin connection shows in C(SHOW CLIENTS).
  type: str
  default: zerodowntime.migration
"""
)

# The pool the clients use, besides the console to reach it.
DATABASE_OPTION = r"""
database:
  description: The pool (the C([databases]) entry) the clients use.
  type: str
  required: true
"""

# The pool a switchover moves (PGBOUNCER_SPEC in pg_switchover).
POOL_OPTIONS = (
    DATABASE_OPTION
    + r"""
config_file:
  description: The pgbouncer.ini PgBouncer runs with.
  type: path
  default: /etc/pgbouncer/pgbouncer.ini
target_host:
  description: Host the pool points at afterwards. Default O(target.login_host).
  type: str
target_port:
  description: Port the pool points at afterwards. Default O(target.login_port).
  type: int
target_dbname:
  description: Database the pool uses afterwards. Default O(target.login_db).
  type: str
"""
)

POOLERS_DESCRIPTION = [
    "Every PgBouncer in front of the databases - its admin console, the pool the clients use, and (without O(haproxy)) "
    "the pgbouncer.ini the module rewrites (run the module on the PgBouncer host; each C(config_file) is read there).",
    "Without O(haproxy) every PgBouncer of one run must therefore run on the host the module runs on - one whose "
    "C(config_file) is elsewhere still points at the source after its C(RELOAD), which fails the run inside the pause "
    "and undoes it (every pool resumes on the source). PgBouncers on hosts of their own point at HAProxy's write "
    "frontend, and the run switches HAProxy (O(haproxy)) instead of repointing them.",
    "All are paused, repointed and resumed concurrently; when one fails or cannot be reached, every pool resumes on "
    "the source. One that cannot be reached before the pause stops the module before anything changes.",
    "The journal and the run lock are named after the first pooler's C(database).",
]


class ModuleDocFragment:
    # Composed when Ansible imports the fragment; annotated (not plain assignments) because
    # ansible-test's yamllint reads a fragment's plain assignments as string literals - the unit
    # tests (tests/unit/test_doc_fragments.py) lint the composed YAML with its rules instead.
    # One PgBouncer: its console options at the top level.
    DOCUMENTATION: str = "options:\n" + flat(CONSOLE_OPTIONS)

    # The poolers pg_switchover moves: a list, or one (the older option), with the same suboptions.
    POOLERS: str = (
        "options:\n"
        + option(
            "pgbouncers",
            POOLERS_DESCRIPTION,
            nest(CONSOLE_OPTIONS + POOL_OPTIONS, "pgbouncers"),
            required=False,
            type_="list",
            elements="dict",
        )
        + option(
            "pgbouncer",
            ["One PgBouncer, the same as a one-element O(pgbouncers) (kept for existing playbooks)."],
            nest(CONSOLE_OPTIONS + POOL_OPTIONS, "pgbouncer"),
            required=False,
        )
    )

    # The pools a watch reads (pg_cutover_watch): each console and the pool the clients use.
    WATCHED_POOLS: str = "options:\n" + option(
        "pgbouncers",
        [
            "Every PgBouncer in front of the server watched - its admin console and the pool the clients use. The longest "
            "wait of a client for a server connection (C(SHOW POOLS) C(maxwait)) over all of them is gated by "
            "O(max_client_wait_ms).",
        ],
        nest(CONSOLE_OPTIONS + DATABASE_OPTION, "pgbouncers"),
        required=False,
        type_="list",
        elements="dict",
    )
