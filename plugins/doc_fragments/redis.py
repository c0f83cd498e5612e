# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis connection options: flat (one server) and as O(source) / O(target) (a switchover)."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.plugin_utils.doc_text import flat, nest, option

# Matches CONNECTION_OPTIONS in plugins/module_utils/redis/client.py.
CONNECTION_OPTIONS = r"""
host:
  description:
    - Host name or address of the Redis server.
  type: str
  default: 127.0.0.1
port:
  description:
    - TCP port of the Redis server.
  type: int
  default: 6379
username:
  description:
    - ACL user to authenticate as (Redis 6+); without it the password is the C(default) user's (requirepass).
  type: str
password:
  description:
    - Password (requirepass, or the ACL user's). Never logged, returned or shown in messages.
  type: str
tls:
  description:
    - Connect with TLS.
  type: bool
  default: false
tls_ca_cert:
  description:
    - CA certificate file to verify the server's certificate with (with O(tls=true)).
  type: path
connect_timeout:
  description:
    - Seconds to wait for the connection (more than 0, at most 300).
  type: float
  default: 5.0
"""

REQUIREMENTS = """
requirements:
  - redis (Python library, on the host that runs the module)
"""


class ModuleDocFragment:
    # Composed when Ansible imports the fragment; annotated (not plain assignments) because
    # ansible-test's yamllint reads a fragment's plain assignments as string literals - the unit
    # tests (tests/unit/test_doc_fragments.py) lint the composed YAML with its rules instead.
    DOCUMENTATION: str = "options:\n" + flat(CONNECTION_OPTIONS) + REQUIREMENTS

    PAIR: str = (
        "options:\n"
        + option("source", ["The old primary (blue)."], nest(CONNECTION_OPTIONS, "source"))
        + option("target", ["The replica of O(source) that becomes the primary (green)."], nest(CONNECTION_OPTIONS, "target"))
        + REQUIREMENTS
    )
