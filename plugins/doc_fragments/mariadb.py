# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The target engine and the MariaDB connection options of a module whose target may be MariaDB:
table_copy, table_compare."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.plugin_utils.doc_text import flat

# Matches TARGET_OPTIONS in plugins/module_utils/copy/run.py (CONNECTION_OPTIONS of plugins/module_utils/mariadb/client.py).
CONNECTION_OPTIONS = r"""
target_engine:
  description:
    - The target's database engine - PostgreSQL (the C(login_*) options) or MariaDB (the C(mariadb_*)
      options; the C(login_*) options are then not used).
  type: str
  choices: [postgresql, mariadb]
  default: postgresql
mariadb_host:
  description:
    - Host name or address of the MariaDB server (with O(target_engine=mariadb)).
  type: str
  default: localhost
mariadb_port:
  description:
    - TCP port of the MariaDB server.
  type: int
  default: 3306
mariadb_user:
  description:
    - User to connect as; required with O(target_engine=mariadb).
  type: str
mariadb_password:
  description:
    - Password of O(mariadb_user). Never logged, returned or shown in messages.
  type: str
mariadb_database:
  description:
    - The database holding the tables (and the checkpoint table); required with O(target_engine=mariadb).
  type: str
mariadb_ca_cert:
  description:
    - CA certificate file to verify the server's certificate with; given, the connection uses TLS
      and refuses a server whose certificate that CA did not sign. Left out - no TLS.
  type: path
mariadb_connect_timeout:
  description:
    - Seconds to wait for the server to answer before failing (1 to 300).
  type: int
  default: 10
"""

REQUIREMENTS = """
requirements:
  - PyMySQL (Python library, on the host that runs the module; with O(target_engine=mariadb))
"""


class ModuleDocFragment:
    # Composed when Ansible imports the fragment (see plugins/doc_fragments/redis.py).
    DOCUMENTATION: str = "options:\n" + flat(CONNECTION_OPTIONS) + REQUIREMENTS
