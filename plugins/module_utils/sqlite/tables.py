# Copyright: zerodowntime.migration contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The application's tables of an SQLite file, as every module that puts triggers on them or reads
them sees them (sqlite_capture, sqlite_readonly, the copy's source): real tables only - not views,
virtual tables or their shadow tables, not SQLite's own sqlite_* tables, not the capture's change
table; and the triggers those modules keep on them, replaced by their SQL."""

from __future__ import annotations

from ansible_collections.zerodowntime.migration.plugins.module_utils.sqlite.client import Client, SqliteError, quote_ident

KINDS = {"view": "a view", "virtual": "a virtual table", "shadow": "a virtual table's shadow table"}


def user_tables(client: Client, change_table: str) -> list[str]:
    # pragma_table_list (SQLite 3.37+) says which tables are an application's: not views, not
    # virtual tables, not their shadow tables (an FTS index's _data, _idx ...), not sqlite_*.
    rows = client.query(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    )
    return [name for (name,) in rows if name != change_table]


def virtual_tables(client: Client) -> list[str]:
    """Virtual tables (an FTS index ...): SQLite cannot put a trigger on one."""
    return [name for (name,) in client.query("SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'virtual' ORDER BY name")]


def require_table(client: Client, table: str, who: str, instead: str) -> None:
    """`table` exists and is a real table `who` can put triggers on; else an error naming what it is."""
    found = client.query("SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = ?", (table,))
    if not found:
        raise SqliteError(
            f"table {table!r} does not exist in {client.path}: check the names in tables (or leave tables out for every table)"
        )
    kind = found[0][0]
    if kind != "table":
        raise SqliteError(f"{table!r} is {KINDS.get(kind, f'a {kind}')}, which {who} cannot put triggers on: {instead}")


def replace_triggers(client: Client, current: dict, wanted: dict) -> None:
    """Drop the triggers of `current` (name -> SQL) that `wanted` lacks or words differently, create
    the wanted ones not there as they are: a trigger whose SQL did not change is left alone."""
    for name, text in current.items():
        if wanted.get(name) != text:
            client.execute(f"DROP TRIGGER {quote_ident(name)}")
    for name, text in wanted.items():
        if current.get(name) != text:
            client.execute(text)


def triggers_named(client: Client, prefix: str) -> dict:
    """The triggers whose name starts with `prefix`, name -> SQL (substr, not LIKE: '_' and '%' in a name are no wildcards)."""
    rows = client.query(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, length(?)) = ? ORDER BY name",
        (prefix, prefix),
    )
    return dict(rows)
