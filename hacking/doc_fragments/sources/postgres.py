# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection options: flat (one server) and as O(source) / O(target) (two)."""

# Rendered into plugins/doc_fragments/postgres.py by hacking/doc_fragments/generate.py (make doc-fragments).

from __future__ import annotations

from doc_text import alias, flat, nest, option

# Matches CONNECTION_ARGUMENT_SPEC in plugins/module_utils/postgres/client.py.
CONNECTION_OPTIONS = r"""
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
ssl_mode:
  description:
    - libpq C(sslmode) for the connection.
  type: str
  default: prefer
  choices: [disable, allow, prefer, require, verify-ca, verify-full]
ssl_rootcert:
  description:
    - CA certificate file used to verify the server (with O(ssl_mode=verify-ca) or O(ssl_mode=verify-full)).
  type: path
ssl_cert:
  description:
    - Client certificate file.
  type: path
ssl_key:
  description:
    - Client private key file.
  type: path
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

REQUIREMENTS = """
requirements:
  - psycopg >= 3.1 (Python library, on the host that runs the module)
"""

SOURCE_DESCRIPTION = ["The server that has the data now (blue; green when going back). Connection errors name it, never its password."]


class Fragments:
    # One server: the options at the top level.
    DOCUMENTATION = "options:\n" + flat(CONNECTION_OPTIONS) + REQUIREMENTS

    # Two servers: the same options under source (the side that has the data now) and target.
    SOURCE = "options:\n" + option("source", SOURCE_DESCRIPTION, nest(CONNECTION_OPTIONS, "source"))
    # In one fragment, target's options are YAML aliases of source's (those that name no other option).
    PAIR = (
        "options:\n"
        + option("source", SOURCE_DESCRIPTION, nest(CONNECTION_OPTIONS, "source", anchor="postgres"))
        + option(
            "target",
            ["The server that gets the data (green; blue when going back). Connection errors name it, never its password."],
            alias(CONNECTION_OPTIONS, "target", anchor="postgres"),
        )
        + REQUIREMENTS
    )
