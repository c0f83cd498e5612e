# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compose doc fragments from one text per option set, so each option is written once.

A set of connection options (PostgreSQL, the PgBouncer console, Redis) is documented flat for
a module that has one connection and as the suboptions of `source` / `target` (or a list of
poolers) for a module that has several. `nest` indents the same YAML and points its O()
references at the nested names.
"""

from __future__ import annotations

import itertools
import re
import textwrap


def libpq_tls(peer: str) -> str:
    """The libpq TLS options (ssl_mode, ssl_rootcert, ssl_cert, ssl_key) of a connection to `peer`."""
    return f"""
ssl_mode:
  description:
    - libpq C(sslmode) for the connection.
  type: str
  default: prefer
  choices: [disable, allow, prefer, require, verify-ca, verify-full]
ssl_rootcert:
  description:
    - CA certificate file used to verify {peer} (with O(ssl_mode=verify-ca) or O(ssl_mode=verify-full)).
  type: path
ssl_cert:
  description:
    - Client certificate file.
  type: path
ssl_key:
  description:
    - Client private key file.
  type: path
"""


def flat(options: str, indent: int = 2) -> str:
    """`options` (YAML at column 0) indented under `options:`; blank lines (where texts were joined) dropped."""
    lines = [line for line in textwrap.dedent(options).splitlines() if line.strip()]
    return textwrap.indent("\n".join(lines), " " * indent) + "\n"


def split(options: str) -> list[tuple[str, str]]:
    """`options` (YAML at column 0) as (name, the option's whole text) in order."""
    text = textwrap.dedent(options).strip("\n") + "\n"
    starts = [match.start() for match in re.finditer(r"^[a-z_]+:", text, re.M)] + [len(text)]
    return [(text[start : text.index(":", start)], text[start:end]) for start, end in itertools.pairwise(starts)]


def nest(options: str, parent: str, indent: int = 6) -> str:
    """`options` as suboptions of `parent`: O(login_host) becomes O(parent.login_host)."""
    names = [name for name, _block in split(options)]
    text = ""
    for _name, block in split(options):
        for other in names:
            block = block.replace(f"O({other})", f"O({parent}.{other})").replace(f"O({other}=", f"O({parent}.{other}=")
        text += block
    return flat(text, indent)


def option(
    name: str, description: list[str], suboptions: str, required: bool = True, type_: str = "dict", elements: str | None = None
) -> str:
    """One option with `suboptions` (already nested), at the indentation of `options:` children."""
    lines = [f"  {name}:", "    description:"]
    for paragraph in description:  # YAML folds a list item's continuation lines into one string
        lines += textwrap.wrap(paragraph, width=110, initial_indent="      - ", subsequent_indent="        ")
    lines.append(f"    type: {type_}")
    if elements:
        lines.append(f"    elements: {elements}")
    if required:
        lines.append("    required: true")
    lines.append("    suboptions:")
    return "\n".join(lines) + "\n" + suboptions
