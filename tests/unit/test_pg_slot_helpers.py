"""Pure helpers of plugins/module_utils/postgres/slot.py: slot name validation and the wanted identity."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.slot import slot_desired, validate_slot_name


@pytest.mark.parametrize("name", ["green_sub", "a", "slot_1", "0", "_", "x" * 63])
def test_valid_slot_names_pass_unchanged(name):
    assert validate_slot_name(name) == name


@pytest.mark.parametrize(
    "name",
    ['a"; DROP TABLE x; --', "", "Green", "green-sub", "green sub", "x" * 64, "slot\n", "é", "a.b", None, 5],
)
def test_invalid_slot_names_are_refused_with_the_rule(name):
    with pytest.raises(PgError, match=r"invalid replication slot name .*\(\[a-z0-9_\]\), 1 to 63 characters"):
        validate_slot_name(name)


def test_logical_identity_defaults_to_pgoutput_in_the_login_database():
    assert slot_desired({"slot_type": "logical", "plugin": None, "login_db": "novacron"}) == {
        "slot_type": "logical",
        "plugin": "pgoutput",
        "database": "novacron",
    }
    assert slot_desired({"slot_type": "logical", "plugin": "test_decoding", "login_db": "x"})["plugin"] == "test_decoding"


def test_physical_identity_has_no_plugin_or_database():
    assert slot_desired({"slot_type": "physical", "login_db": "novacron", "immediately_reserve": True}) == {
        "slot_type": "physical",
        "plugin": None,
        "database": None,
    }


def test_options_for_the_other_slot_type_are_errors():
    with pytest.raises(PgError, match="plugin applies to logical slots only"):
        slot_desired({"slot_type": "physical", "plugin": "pgoutput"})
    with pytest.raises(PgError, match="immediately_reserve applies to physical slots only"):
        slot_desired({"slot_type": "logical", "immediately_reserve": True})
