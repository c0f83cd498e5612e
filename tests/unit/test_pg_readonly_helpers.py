"""Pure parts of plugins/module_utils/postgres/readonly.py: reading GUC booleans and settings arrays,
option validation, and what the result says."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.readonly import (
    applies_to,
    diff_view,
    parse_bool,
    setting_from_config,
    validate,
)


@pytest.mark.parametrize("text", ["on", "ON", "true", "t", "tr", "yes", "y", "1", " on ", "True"])
def test_true_spellings(text):
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["off", "of", "OFF", "false", "f", "no", "n", "0", "False"])
def test_false_spellings(text):
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", [None, "", "o", "2", "onn", "yess", "enabled", "-1"])
def test_not_booleans(text):
    assert parse_bool(text) is None


def test_setting_is_found_in_a_setconfig_array():
    assert setting_from_config(["work_mem=4MB", "default_transaction_read_only=on"]) == "on"
    assert setting_from_config(["default_transaction_read_only=off"]) == "off"
    assert setting_from_config(["search_path=a, b"]) is None
    assert setting_from_config(None) is None
    assert setting_from_config(["default_transaction_read_only_x=on"]) is None


def test_validate_refuses_unknown_scope_missing_database_and_unbounded_wait():
    validate("instance", None, 0)
    validate("database", "app", 3600)
    with pytest.raises(PgError, match="scope must be one of instance, database"):
        validate("cluster", None)
    with pytest.raises(PgError, match="scope 'database' needs the database"):
        validate("database", "")
    with pytest.raises(PgError, match="between 0 and 3600 seconds"):
        validate("instance", None, 3601)
    with pytest.raises(PgError, match="between 0 and 3600 seconds"):
        validate("instance", None, -1)


def test_database_scope_says_new_sessions_only():
    assert applies_to("database", True).startswith("new sessions only")
    assert "read-only" in applies_to("database", True)
    assert "read-write" in applies_to("database", False)
    assert "existing sessions from their next transaction" in applies_to("instance", True)


def test_diff_view_names_the_database_only_for_database_scope():
    assert diff_view(True, "instance", None) == {"readonly": True, "scope": "instance"}
    assert diff_view(False, "database", "app") == {"readonly": False, "scope": "database", "database": "app"}
