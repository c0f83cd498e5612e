# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection options: flat (one server) and as O(source) / O(target) (two)."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.plugin_utils.doc_text import flat, libpq_tls, nest, option

# Matches CONNECTION_ARGUMENT_SPEC in plugins/module_utils/postgres/client.py.
CONNECTION_OPTIONS = (
    r"""
login_host:
  description:
    - Host name or address of the PostgreSQL server.
  type: str
  default: localhost
  aliases: [host]
login_port:
  description:
    - Port of the PostgreSQL server.
  type: int
  default: 5432
  aliases: [port]
login_unix_socket:
  description:
    - Directory of the server's unix socket; when set it is used instead of O(login_host).
  type: str
  aliases: [unix_socket]
login_user:
  description:
    - Role to connect as.
  type: str
  default: postgres
  aliases: [user]
login_password:
  description:
    - Password of O(login_user). Never logged, returned or shown in diffs.
  type: str
  aliases: [password]
login_db:
  description:
    - Database to connect to.
  type: str
  default: postgres
  aliases: [db, database]
"""
    + libpq_tls("the server")
    + r"""
connect_timeout:
  description:
    - Seconds to wait for the server to answer before failing.
  type: int
  default: 10
application_name:
  description:
    - C(application_name) the session shows in C(pg_stat_activity).
  type: str
  default: zerodowntime.migration
"""
)

# A subscription's connection to its publisher, as libpq keywords: the suboptions of
# pg_subscription's O(publisher) and pg_switchover's O(reverse_publisher) (the module documents
# the option itself). Matches PUBLISHER_SPEC in plugins/module_utils/postgres/subscription.py.
PUBLISHER_OPTIONS = r"""
host:
  description: Host name or address of the publisher, as the subscriber reaches it.
  type: str
  required: true
port:
  description: Port of the publisher.
  type: int
  default: 5432
dbname:
  description: Database on the publisher.
  type: str
  required: true
user:
  description: Role with the REPLICATION attribute (or a superuser) on the publisher.
  type: str
  required: true
password:
  description: Password of O(user). Stored by PostgreSQL with the subscription; never returned, logged or shown.
  type: str
sslmode:
  description: libpq C(sslmode) of the subscription's connection.
  type: str
  choices: [disable, allow, prefer, require, verify-ca, verify-full]
sslrootcert:
  description: CA certificate file on the subscriber's host.
  type: str
sslcert:
  description: Client certificate file on the subscriber's host.
  type: str
sslkey:
  description: Client key file on the subscriber's host.
  type: str
connect_timeout:
  description: Seconds the subscriber waits for the publisher to answer.
  type: int
"""


def publisher(option_name: str) -> str:
    """The suboptions of `option_name`; ansible-doc merges them into the module's own `option_name`."""
    return f"options:\n  {option_name}:\n    suboptions:\n" + nest(PUBLISHER_OPTIONS, option_name)


REQUIREMENTS = """
requirements:
  - psycopg >= 3.1 (Python library, on the host that runs the module)
"""

# The modules with one connection are the action group postgres (meta/runtime.yml); their examples
# give only what differs from the play's module_defaults.
GROUP_NOTES = """
notes:
  - The module is in the action group C(zerodowntime.migration.postgres), so a play sets the connection of every
    PostgreSQL module once with C(module_defaults) and C(group/zerodowntime.migration.postgres); a task's own
    options win. The examples assume a play that sets O(login_user=migrator), O(login_password) and
    O(login_db=novacron), and give the server (O(login_host) V(127.0.0.11) blue, V(127.0.0.12) green, both on
    O(login_port=5432), as in the lab) and any other option that differs.
"""

SOURCE_DESCRIPTION = ["The server that has the data now (blue; green when going back). Connection errors name it, never its password."]


class ModuleDocFragment:
    # Composed when Ansible imports the fragment; annotated (not plain assignments) because
    # ansible-test's yamllint reads a fragment's plain assignments as string literals - the unit
    # tests (tests/unit/test_doc_fragments.py) lint the composed YAML with its rules instead.
    # One server: the options at the top level.
    DOCUMENTATION: str = "options:\n" + flat(CONNECTION_OPTIONS) + REQUIREMENTS + GROUP_NOTES

    # Two servers: the same options under source (the side that has the data now) and target.
    SOURCE: str = "options:\n" + option("source", SOURCE_DESCRIPTION, nest(CONNECTION_OPTIONS, "source"))
    PAIR: str = (
        "options:\n"
        + option("source", SOURCE_DESCRIPTION, nest(CONNECTION_OPTIONS, "source"))
        + option(
            "target",
            ["The server that gets the data (green; blue when going back). Connection errors name it, never its password."],
            nest(CONNECTION_OPTIONS, "target"),
        )
        + REQUIREMENTS
    )

    # A subscription's publisher: pg_subscription's publisher, pg_switchover's reverse_publisher.
    PUBLISHER: str = publisher("publisher")
    REVERSE_PUBLISHER: str = publisher("reverse_publisher")

    # pg_replication_lag's subscriber: the server whose subscriptions' workers are watched.
    SUBSCRIBER: str = "options:\n" + option(
        "subscriber",
        [
            "The subscriber of the logical slots on the server (green for blue's slots), connection options as at the "
            "top level, O(subscriber.login_db) the subscriptions' database. While the module waits it watches their "
            "workers and fails at once, naming the subscription, the table and the error from the subscriber's log, "
            "when one fails (apply or sync errors counted in C(pg_stat_subscription_stats), no apply worker).",
        ],
        nest(CONNECTION_OPTIONS, "subscriber"),
        required=False,
    )
