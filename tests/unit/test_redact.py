"""Secrets in shown or kept text: common/redact.py's masking (and its SQL form for the DDL capture),
the command tags whose text the capture withholds, and the places text is redacted on its way out
(a subscription worker's error read from the log, a module's failure message)."""

from __future__ import annotations

import pytest

from ansible_collections.zerodowntime.migration.plugins.module_utils.common.errors import ModuleError
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.redact import MASK, RULES, redact, redact_sql, sql_text
from ansible_collections.zerodowntime.migration.plugins.module_utils.common.runner import run_module
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres import ddl_sql
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.apply_errors import last_failures
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.ddl import function_bodies

SECRET = "hunter2-secret"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password '{SECRET}')",
            f"CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'x', password '{MASK}')",
        ),
        (
            f"ALTER ROLE app WITH ENCRYPTED PASSWORD 'it''s {SECRET}' VALID UNTIL 'infinity'",
            f"ALTER ROLE app WITH ENCRYPTED PASSWORD '{MASK}' VALID UNTIL 'infinity'",
        ),
        (f"alter user app password E'{SECRET}'", f"alter user app password '{MASK}'"),
        (
            f"CREATE SUBSCRIPTION s CONNECTION 'host=blue password={SECRET} dbname=db' PUBLICATION p",
            f"CREATE SUBSCRIPTION s CONNECTION 'host=blue password={MASK} dbname=db' PUBLICATION p",
        ),
        (  # a quoted conninfo value inside a SQL literal: its quotes doubled
            f"CREATE SUBSCRIPTION s CONNECTION 'host=blue password=''{SECRET} x'' dbname=db' PUBLICATION p",
            f"CREATE SUBSCRIPTION s CONNECTION 'host=blue password={MASK} dbname=db' PUBLICATION p",
        ),
        (f"host=blue password='{SECRET} x' user=u", f"host=blue password={MASK} user=u"),
        (f"sslpassword = {SECRET} port=5432", f"sslpassword = {MASK} port=5432"),
        (f"ALTER SERVER s OPTIONS (SET passphrase '{SECRET[:6]}", f"ALTER SERVER s OPTIONS (SET passphrase '{MASK}'"),  # cut short
        (  # a second statement of the same query string
            f"CREATE TABLE t (id int); CREATE USER MAPPING FOR app SERVER s OPTIONS (password '{SECRET}')",
            f"CREATE TABLE t (id int); CREATE USER MAPPING FOR app SERVER s OPTIONS (password '{MASK}')",
        ),
    ],
)
def test_password_values_are_masked(text, expected):
    assert redact(text) == expected
    assert SECRET not in redact(text) and SECRET[:6] not in redact(text)


@pytest.mark.parametrize(
    "text",
    [
        "CREATE TABLE users (id bigint PRIMARY KEY, password text NOT NULL, password_hash bytea)",
        "ALTER TABLE users ADD COLUMN password_changed_at timestamptz",
        'password authentication failed for user "migrator"',
        "ALTER ROLE app PASSWORD NULL",
        "",
    ],
)
def test_other_text_is_left_alone(text):
    assert redact(text) == text


def test_redact_passes_non_text_through_and_is_idempotent():
    assert redact(None) is None
    assert redact(3) == 3
    once = redact(f"password '{SECRET}' and password={SECRET}")
    assert redact(once) == once


def test_the_sql_form_applies_the_same_rules_as_escape_strings():
    assert sql_text("a'b\\s") == "E'a\\'b\\\\s'"
    rendered = redact_sql("current_query()")
    assert rendered.count("regexp_replace(") == len(RULES)
    assert rendered.startswith("regexp_replace(regexp_replace(current_query(), ")
    for pattern, replacement in RULES:
        assert sql_text(pattern) in rendered and sql_text(replacement) in rendered
    assert rendered.count("'gi')") == len(RULES)


def test_the_withheld_tags_are_the_commands_that_carry_credentials():
    assert set(ddl_sql.SECRET_TAGS) == {
        f"{verb} {noun}"
        for verb in ("CREATE", "ALTER")
        for noun in ("ROLE", "USER", "GROUP", "USER MAPPING", "SERVER", "FOREIGN DATA WRAPPER", "SUBSCRIPTION")
    }
    assert not any(tag.startswith("DROP") for tag in ddl_sql.SECRET_TAGS)  # a drop names an object, never a credential
    for tag in ("CREATE TABLE", "ALTER TABLE", "CREATE INDEX", "CREATE SEQUENCE"):
        assert tag not in ddl_sql.SECRET_TAGS


def test_the_capture_functions_store_no_raw_query_text():
    for source in (ddl_sql.CAPTURE_FUNCTION, ddl_sql.CAPTURE_DROPS_FUNCTION, ddl_sql.UNSUPPORTED_FUNCTION, ddl_sql.APPLY_FUNCTION):
        assert "@" not in source.replace("%s", ""), "a placeholder was left in the SQL"
    capture = ddl_sql.CAPTURE_FUNCTION
    assert ddl_sql.SECRET_TAGS_SQL in capture and "withheld" in capture
    assert capture.count("current_query()") == 1 and redact_sql("current_query()") in capture
    assert ddl_sql.CAPTURE_DROPS_FUNCTION.count("current_query()") == 1 and redact_sql("current_query()") in ddl_sql.CAPTURE_DROPS_FUNCTION
    assert redact_sql("entry.statement") in ddl_sql.UNSUPPORTED_FUNCTION  # the DETAIL of the apply worker's error
    assert ddl_sql.SECRET_TAGS_SQL in ddl_sql.APPLY_FUNCTION and "withheld its text for secrecy" in ddl_sql.APPLY_FUNCTION
    for side in ("publisher", "subscriber"):  # the bodies a second run compares with pg_proc.prosrc
        assert all("@" not in body.replace("%s", "") for body in function_bodies(side).values())


def test_a_statement_in_a_workers_logged_error_is_masked_before_it_is_cut():
    detail = f"statement: CREATE SUBSCRIPTION x CONNECTION 'host=a password={SECRET}'" + " padding" * 100
    log = (
        "cut line\n"
        '2026-12-04 10:00:00.000 UTC [77] LOG:  logical replication apply worker for subscription "s" has started\n'
        "2026-12-04 10:00:01.000 UTC [77] ERROR:  DDL from the publisher not applied: ALTER SERVER on object s\n"
        f"2026-12-04 10:00:01.000 UTC [77] DETAIL:  {detail}\n"
    )
    failure = last_failures(log, "s")[0]
    assert SECRET not in failure["notes"][0] and MASK in failure["notes"][0]


class FakeModule:
    def __init__(self):
        self.failed = None

    def warn(self, text):
        pass

    def fail_json(self, **result):
        self.failed = result
        raise SystemExit(1)


def test_a_module_failure_message_is_masked():
    module = FakeModule()

    def work(_opened):
        raise ModuleError(f"statement failed: ALTER ROLE app PASSWORD '{SECRET}'")

    with pytest.raises(SystemExit):
        run_module(module, work)
    assert SECRET not in module.failed["msg"] and MASK in module.failed["msg"]
