# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters for Redis configuration files.

redis_config_settings(content)
    The settings a redis.conf's text gives, as Redis reads them: {directive: [arguments, ...]},
    directives lower-cased, arguments unquoted, repeated directives in order (`save`'s arguments
    joined into one list, as Redis takes them). What CONFIG REWRITE changes without changing a
    setting is left out: quoting, order, comments, `save` split over lines, the `user default`
    line it writes for requirepass (ACLs are not the role's) and latency-tracking-info-percentiles
    at its default. roles/redis compares a file before and after templating with it: a file
    Redis rewrote (a switchover persists the new roles) is written back without a restart when it
    says the same.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a", '"': '"', "\\": "\\"}
REWRITE_DEFAULTS = {"latency-tracking-info-percentiles": [["50", "99", "99.9"]]}


def split_arguments(line: str) -> list[str]:
    """One configuration line's arguments, unquoted as Redis does (sdssplitargs): "..." with
    backslash escapes (\\xHH too), '...' with \\' only, anything else up to whitespace."""
    arguments, position = [], 0
    while True:
        while position < len(line) and line[position].isspace():
            position += 1
        if position >= len(line):
            return arguments
        quote = line[position] if line[position] in "\"'" else None
        position += 1 if quote else 0
        current = []
        while True:
            if position >= len(line):
                if quote:
                    raise AnsibleFilterError(f"unbalanced quotes in Redis configuration line: {line!r}")
                break
            char = line[position]
            if quote == '"' and char == "\\" and position + 1 < len(line):
                following = line[position + 1]
                if following == "x" and position + 3 < len(line):
                    current.append(chr(int(line[position + 2 : position + 4], 16)))
                    position += 4
                    continue
                current.append(ESCAPES.get(following, following))
                position += 2
                continue
            if quote == "'" and char == "\\" and line[position + 1 : position + 2] == "'":
                current.append("'")
                position += 2
                continue
            if char == quote:
                position += 1
                if position < len(line) and not line[position].isspace():
                    raise AnsibleFilterError(f"closing quote must be followed by a space in Redis configuration line: {line!r}")
                break
            if not quote and char.isspace():
                break
            current.append(char)
            position += 1
        arguments.append("".join(current))


def redis_config_settings(content):
    """{directive: [arguments, ...]} of a redis.conf's text, what CONFIG REWRITE alone changes left out."""
    if not isinstance(content, str):
        raise AnsibleFilterError(f"redis_config_settings needs the file's text, got {type(content).__name__}")
    settings: dict[str, list] = {}
    for raw in content.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        directive, *arguments = split_arguments(line)
        directive = directive.lower()
        if directive == "user" and arguments[:1] == ["default"]:
            continue
        if directive == "save":
            settings.setdefault("save", [[]])[0].extend(arguments)
        else:
            settings.setdefault(directive, []).append(arguments)
    return {key: value for key, value in settings.items() if REWRITE_DEFAULTS.get(key) != value}


class FilterModule:
    """zerodowntime.migration Redis filters."""

    def filters(self):
        return {"redis_config_settings": redis_config_settings}
