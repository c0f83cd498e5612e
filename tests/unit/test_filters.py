"""The filters, through the FQCN plugin and through the checkout's filter_plugins/ shim."""

import importlib.util

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.zerodowntime.migration.plugins.filter.pg import FilterModule


def load_shim(root):
    spec = importlib.util.spec_from_file_location("checkout_filter_pg", root / "filter_plugins" / "pg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shim_serves_the_same_code(root):
    assert load_shim(root).FilterModule is FilterModule


def test_filters():
    filters = FilterModule().filters()
    assert filters["pg_lsn_to_int"]("1/0") == 1 << 32
    assert filters["pg_lsn_diff"]("0/3000148", "0/3000000") == 0x148
    assert filters["pg_memory_settings"](8192)["shared_buffers"] == "2048MB"


def test_bad_input_is_a_filter_error():
    with pytest.raises(AnsibleFilterError, match="not a PostgreSQL LSN"):
        FilterModule().filters()["pg_lsn_to_int"]("nope")
