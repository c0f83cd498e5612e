"""No playbook, role or molecule scenario carries SQL or runs psql: they call modules (issue 13).

SQL lives in .sql files that a module applies (pg_schema_apply, postgresql_script), and in the
PostgreSQL exporter's query file, which configures the exporter and is not run by Ansible."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

EXPORTER_QUERIES = ROOT / "roles" / "monitoring" / "files" / "postgres-exporter-queries.yaml"
SQL_TEXT_MODULES = {"community.postgresql.postgresql_query", "postgresql_query"}
PSQL = re.compile(r"\bpsql\b")


def yaml_files():
    for folder in ("playbooks", "roles", "molecule"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".yml", ".yaml") and path != EXPORTER_QUERIES:
                yield path


def walk(node, where=()):
    """(key path, mapping) for every mapping of a parsed YAML document."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, (*where, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*where, str(index)))


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)


@pytest.mark.parametrize("path", list(yaml_files()), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_sql_text_and_no_psql(path):
    document = yaml.safe_load(path.read_text())
    for where, mapping in walk(document):
        used = SQL_TEXT_MODULES & set(mapping)
        assert not used, f"{path.relative_to(ROOT)} {'/'.join(where)}: {used.pop()} runs SQL text: call a module instead"
    for text in strings(document):
        assert not PSQL.search(text), f"{path.relative_to(ROOT)} runs psql ({text[:80]!r}): call a module instead"


def test_the_scan_sees_the_playbooks_and_roles():
    scanned = {str(path.relative_to(ROOT)) for path in yaml_files()}
    assert {"playbooks/sample_data.yml", "roles/postgresql/handlers/main.yml", "roles/postgresql/tasks/replicas.yml"} <= scanned


# The migration's connections (inventory dicts such as migration_blue) may carry ssl_mode and
# ssl_rootcert (the lab's do: verify-full against its CA). A task that takes a connection from
# such a dict key by key must take those too, or it silently connects without verifying.
KEY_BY_KEY = re.compile(r"\{\{\s*([\w.]+)\.(login_db|database)\s*\}\}")


def test_connections_taken_key_by_key_keep_their_tls_options():
    missing = []
    for path in (p for p in yaml_files() if p.is_relative_to(ROOT / "playbooks") or p.is_relative_to(ROOT / "roles" / "migration")):
        for where, mapping in walk(yaml.safe_load(path.read_text())):
            login_db = mapping.get("login_db")
            if isinstance(login_db, str) and KEY_BY_KEY.search(login_db):
                source = KEY_BY_KEY.search(login_db).group(1)
                if not {"ssl_mode", "ssl_rootcert"} <= mapping.keys():
                    missing.append(f"{path.relative_to(ROOT)} {'/'.join(where)} (from {source})")
            dbname = mapping.get("dbname")
            publisher = isinstance(dbname, str) and "user" in mapping and KEY_BY_KEY.search(dbname)
            if publisher and not {"sslmode", "sslrootcert"} <= mapping.keys():
                missing.append(f"{path.relative_to(ROOT)} {'/'.join(where)} (publisher)")
    assert not missing, "connections without ssl_mode/ssl_rootcert (sslmode/sslrootcert): " + "; ".join(missing)
