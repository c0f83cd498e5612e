# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Render doc fragments from one text per option set, so each option is written once.

A set of connection options (PostgreSQL, the PgBouncer console, Redis) is documented flat for
a module that has one connection and as the suboptions of `source` / `target` (or a list of
poolers) for a module that has several. `nest` indents the same YAML and points its O()
references at the nested names.
"""

from __future__ import annotations

import re
import textwrap


def flat(options: str, indent: int = 2) -> str:
    """`options` (YAML at column 0) indented under `options:`."""
    return textwrap.indent(textwrap.dedent(options).strip("\n"), " " * indent) + "\n"


def nest(options: str, parent: str, indent: int = 6) -> str:
    """`options` as suboptions of `parent`: O(login_host) becomes O(parent.login_host)."""
    names = re.findall(r"^([a-z_]+):", textwrap.dedent(options), re.M)
    text = textwrap.dedent(options)
    for name in names:
        text = text.replace(f"O({name})", f"O({parent}.{name})").replace(f"O({name}=", f"O({parent}.{name}=")
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
