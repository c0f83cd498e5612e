"""Pure parts of plugins/module_utils/postgres/sequences.py: where a sequence stands, what the plan
does with each one, and how `sequences` selects."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.sequences import (
    create_statement,
    missing_on_target,
    plan,
    position,
    qualified,
    selected,
)

BIG = 9223372036854775807


def seq(name="s", schema="public", last_value=None, next_value=None, increment=1, start=1, min_value=1, max_value=BIG):
    return {
        "schema": schema,
        "name": name,
        "increment": increment,
        "min_value": min_value,
        "max_value": max_value,
        "start_value": start,
        "last_value": last_value,
        "next_value": next_value if last_value is None else None,
    }


def test_position_of_called_not_called_and_never_used_sequences():
    assert position(seq(last_value=42), source=True) == 42
    assert position(seq(next_value=1), source=True) is None  # never used: still at START
    assert position(seq(next_value=1), source=False) == 0  # the target's "before the first value"
    assert position(seq(next_value=300), source=True) == 299  # setval(s, 300, false)
    assert position(seq(next_value=-1, increment=-1, start=-1, min_value=-BIG, max_value=-1), source=False) == 0


def test_plan_adds_the_margin_and_moves_only_targets_behind():
    entries = plan(
        [seq("a", last_value=50), seq("b", last_value=7), seq("c", next_value=1)],
        [seq("a", next_value=1), seq("b", last_value=5000), seq("c", last_value=3)],
        1000,
    )
    assert entries == [
        {"name": "public.a", "source_value": 50, "old_target_value": None, "new_target_value": 1050, "changed": True},
        {"name": "public.b", "source_value": 7, "old_target_value": 5000, "new_target_value": 5000, "changed": False},
        {"name": "public.c", "source_value": None, "old_target_value": 3, "new_target_value": 3, "changed": False},
    ]


def test_plan_is_idempotent_once_the_target_is_at_source_plus_margin():
    assert plan([seq(last_value=50)], [seq(last_value=1050)], 1000)[0]["changed"] is False
    assert plan([seq(last_value=51)], [seq(last_value=1050)], 1000)[0]["changed"] is True


def test_descending_sequences_move_down():
    down = {"increment": -1, "start": -1, "min_value": -BIG, "max_value": -1}
    entry = plan([seq(last_value=-5, **down)], [seq(next_value=-1, **down)], 1000)[0]
    assert (entry["new_target_value"], entry["changed"]) == (-1005, True)
    assert plan([seq(last_value=-5, **down)], [seq(last_value=-2000, **down)], 1000)[0]["changed"] is False


def test_missing_on_target_names_every_one():
    with pytest.raises(PgError, match=r"2 sequence\(s\) of the source are missing on the target: public.b, x.c"):
        plan([seq("a", last_value=1), seq("b", last_value=1), seq("c", schema="x", last_value=1)], [seq("a", last_value=1)], 10)


def test_beyond_max_or_min_value_is_an_error_naming_the_bound():
    with pytest.raises(PgError, match=r"public.s: 900 \+ margin 1000 = 1900 is beyond its MAXVALUE 1000"):
        plan([seq(last_value=900)], [seq(next_value=1, max_value=1000)], 1000)
    down = {"increment": -1, "start": -1, "max_value": -1}
    with pytest.raises(PgError, match=r"public.s: -5 - margin 10 = -15 is beyond its MINVALUE -10"):
        plan([seq(last_value=-5, min_value=-BIG, **down)], [seq(next_value=-1, min_value=-10, **down)], 10)


def test_direction_mismatch_and_negative_margin_are_errors():
    with pytest.raises(PgError, match="ascends on one side and descends on the other"):
        plan([seq(last_value=5)], [seq(next_value=-1, increment=-1, start=-1, min_value=-BIG, max_value=-1)], 10)
    with pytest.raises(PgError, match="margin must be 0 or more"):
        plan([seq(last_value=5)], [seq(last_value=5)], -1)


def test_margin_zero_copies_the_value_exactly():
    assert plan([seq(last_value=5)], [seq(last_value=4)], 0)[0]["new_target_value"] == 5


def test_selected_matches_qualified_or_bare_names_and_refuses_unknown_ones():
    rows = [seq("a"), seq("a", schema="billing"), seq('s"; DROP TABLE x; --')]
    assert selected(rows, None) == rows
    assert selected(rows, ["billing.a"]) == [rows[1]]
    assert selected(rows, ["a"]) == rows[:2]
    assert selected(rows, ['public.s"; DROP TABLE x; --']) == [rows[2]]
    with pytest.raises(PgError, match=r"not found on the source: public\.b"):
        selected(rows, ["public.a", "public.b"])


def test_qualified_is_plain_schema_dot_name():
    assert qualified("public", 's"; x') == 'public.s"; x'


def test_missing_on_target_and_the_statement_that_creates_one():
    source = [seq("a"), seq("b", schema="billing"), seq("c")]
    assert [row["name"] for row in missing_on_target(source, [seq("a"), seq("b")])] == ["b", "c"]
    row = dict(seq('order"s', schema="we ird", increment=-2, start=-1, min_value=-100, max_value=-1), type="integer", cycle=True)
    assert create_statement(row).as_string() == (
        'CREATE SEQUENCE "we ird"."order""s" AS integer INCREMENT BY -2 MINVALUE -100 MAXVALUE -1 START WITH -1 CYCLE'
    )
