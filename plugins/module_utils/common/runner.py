# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module runner: every module's main() ends in run_module.

It reports a missing Python library the Ansible way, opens the module's connections in order,
calls the work, closes the connections, passes warnings on, and turns a ModuleError into a
failure that keeps the audit trail (`queries` of every connection, in order, up to the error)
and the error's details; the message passes through common/redact.py (a password quoted from a
statement or a server's error is masked). `diff` is returned whenever the work returns one: Ansible shows it
only with --diff.
"""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.redact import redact


class Library:
    """A Python library a module needs: whether it imported, its requirement, the import error,
    and optionally what it is needed for and how to get it (`reason`, shown in the failure)."""

    def __init__(self, available: bool, requirement: str, import_error=None, reason: str | None = None):
        self.available = available
        self.requirement = requirement
        self.import_error = import_error
        self.reason = reason


def run_module(module, work, openers: dict | None = None, libraries=(), on_failure=None) -> None:
    """Open every connection of `openers` ({name: () -> connection}), call work(opened) -> result
    dict, close them, exit. A connection may keep `queries` (its audit list) and `close()`.

    A ModuleError fails the module with its message and details; `changed` is false unless the
    details say otherwise (a step that cannot be undone already ran). `on_failure(opened, error)`
    may add details of its own (what was already done).
    """
    for library in libraries:
        if not library.available:
            module.fail_json(msg=missing_required_lib(library.requirement, reason=library.reason), exception=str(library.import_error))
    opened: dict = {}
    try:
        for name, opener in (openers or {}).items():
            opened[name] = opener()
        result = work(opened)
    except ModuleError as exc:
        details = dict(exc.details)
        if on_failure is not None:
            for key, value in on_failure(opened, exc).items():
                details.setdefault(key, value)
        for warning in details.pop("warnings", None) or []:  # e.g. progress not recorded: told, not failed on
            module.warn(warning)
        details.setdefault("changed", False)
        details.setdefault("queries", [query for connection in opened.values() for query in getattr(connection, "queries", [])])
        module.fail_json(msg=redact(str(exc)), **details)  # a message may quote a statement or a server's error text
    finally:
        for connection in opened.values():
            close = getattr(connection, "close", None)
            if close is not None:
                close()
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    module.exit_json(**result)


def run_connection(module, opener, work, libraries=()) -> None:
    """run_module for a module with one connection: open it with opener() -> connection, call
    work(connection) -> result dict, close it, exit."""
    run_module(module, lambda opened: work(opened["connection"]), {"connection": opener}, libraries=libraries)
