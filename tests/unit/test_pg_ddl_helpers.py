"""Pure parts of plugins/module_utils/postgres/ddl.py and ddl_sql.py: the function bodies compared with
pg_proc.prosrc, the options each side takes, the pending items as the module reports them. The SQL
itself runs in tests/integration/test_pg_ddl_capture.py."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import ddl_sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl import DdlCapture, describe, function_bodies


@pytest.mark.parametrize("side", ["publisher", "subscriber"])
def test_function_bodies_are_what_pg_proc_keeps(side):
    bodies = function_bodies(side)
    assert list(bodies) == list(ddl_sql.FUNCTION_NAMES[side])
    for name, body in bodies.items():
        # prosrc is the text between the dollar quotes, its first newline included
        assert body.startswith("\n") and "$fn$" not in body, name
        assert body.rstrip().endswith(("END", "END)", "END;")) or "SELECT" in body, name


def test_every_function_keeps_a_fixed_search_path():
    """The apply worker runs with search_path ''; the capture prints qualified names only with pg_catalog alone."""
    for source in (*ddl_sql.PUBLISHER_FUNCTIONS, *ddl_sql.SUBSCRIBER_FUNCTIONS):
        assert "SET search_path = pg_catalog, pg_temp" in source


def test_capture_skips_the_apply_workers_own_ddl_and_replication_plumbing():
    for source in (ddl_sql.CAPTURE_FUNCTION, ddl_sql.CAPTURE_DROPS_FUNCTION):
        assert "session_replication_role') = 'replica'" in source
        assert "zerodowntime.ddl_capture_skip" in source
    assert "(PUBLICATION|SUBSCRIPTION)" in ddl_sql.CAPTURE_FUNCTION


@pytest.mark.parametrize(
    ("side", "options", "fix"),
    [
        ("subscriber", {"publication": "pub"}, "side: publisher"),
        ("subscriber", {"replication_user": "replicator"}, "side: publisher"),
        ("publisher", {"subscription": "sub"}, "side: subscriber"),
        ("both", {}, "publisher or subscriber"),
        ("publisher", {"publication": 'a"b' * 30}, "publication"),
    ],
)
def test_options_of_the_other_side_are_named(side, options, fix):
    with pytest.raises(PgError) as error:
        DdlCapture(None, side, **options)
    assert fix in str(error.value)


def test_pending_items_as_reported():
    assert describe({"id": 4, "kind": "index", "object_identity": "public.i"}) == {
        "id": 4,
        "kind": "index",
        "object": "public.i",
        "action": "build the index concurrently",
    }
    assert describe({"id": 6, "kind": "publish", "object_identity": "public.t"})["action"] == "publish the table and copy it"
