"""Pure parts of plugins/module_utils/pgbouncer/console.py and plugins/filter/pgbouncer.py: name checks,
the [databases] rewrite, the auth_file reader, and SCRAM verifiers (checked against PostgreSQL
itself on a throwaway instance, so nothing is created on blue or green)."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from ansible_collections.zerodowntime.migration.plugins.filter.pgbouncer import FilterModule, pgbouncer_repointed_pools
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.console import check_host, check_name, check_params
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.ini import (
    entry_target,
    find_database_entry,
    parse_connstr,
    redact,
    rewrite_database_entry,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.pgbouncer.scram import (
    parse_auth_file,
    saslprep,
    scram_verifier,
    scram_verifier_matches,
)
from ansible_collections.zerodowntime.migration.plugins.module_utils.postgres.client import PgError

# --- names that go into console commands ---------------------------------------------------


@pytest.mark.parametrize("name", ["novacron", "app_db-2", "a.b", "X" * 63])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ['a"; SHUTDOWN; --', "a b", "", "x" * 64, "db;RELOAD", "naïve", "a'b", None, 5])
def test_hostile_or_odd_names_are_refused_with_the_rule(name):
    with pytest.raises(PgError, match=r"is not allowed: .*letters, digits, '_', '\.' and '-'"):
        check_name(name)


def test_the_admin_console_is_not_a_pool():
    with pytest.raises(PgError, match="'pgbouncer' is PgBouncer's admin console"):
        check_name("pgbouncer")


def test_check_params_refuses_before_connecting():
    with pytest.raises(PgError, match="pool name 'a\"; SHUTDOWN; --' is not allowed"):
        check_params({"database": 'a"; SHUTDOWN; --'})
    with pytest.raises(PgError, match="host 'h x' is not allowed"):
        check_params({"database": "novacron", "host": "h x"})
    with pytest.raises(PgError, match="port 70000 is not a TCP port"):
        check_params({"database": "novacron", "port": 70000})
    with pytest.raises(PgError, match="dbname"):
        check_params({"database": "novacron", "dbname": "x'y"})
    with pytest.raises(PgError, match="timeout must be a positive"):
        check_params({"database": "novacron", "timeout": 0})


@pytest.mark.parametrize("host", ["127.0.0.1", "db-1.example.com", "::1", "/var/run/postgresql"])
def test_hosts(host):
    assert check_host(host) == host


# --- pgbouncer.ini [databases] rewriting -----------------------------------------------------

INI = (
    b"; managed\r\n"
    b"[databases]\r\n"
    b";novacron = host=10.0.0.1 port=1\r\n"
    b"other = host=10.0.0.9 port=5432\n"
    b"novacron  =  host=127.0.0.1  port=5433 dbname=novacron pool_size=20 password='it''s a secret'   \n"
    b"  last = dbname=x\n"
    b"\n"
    b"[pgbouncer]\n"
    b"novacron = not-a-database-line\n"
    b"%include /etc/pgbouncer/pgbouncer-startup.ini\n"
    b"listen_port = 6432"
)


def lines_except(content: bytes, index: int) -> list[bytes]:
    lines = content.splitlines(keepends=True)
    return lines[:index] + lines[index + 1 :]


def test_connstr_pairs_and_quoting():
    pairs = parse_connstr("host=h  port = 5 password='a b''c' dbname=d")
    assert [pair[:2] for pair in pairs] == [("host", "h"), ("port", "5"), ("password", "a b'c"), ("dbname", "d")]
    assert redact("host=h password='a b''c' port=5") == "host=h password=******** port=5"


def test_find_entry_reads_only_the_databases_section():
    entry = find_database_entry(INI, "novacron")
    assert entry["index"] == 4
    assert entry["values"] == {"host": "127.0.0.1", "port": "5433", "dbname": "novacron", "pool_size": "20"}
    assert "password" not in entry["values"]
    assert entry_target(entry["values"], "novacron") == {"host": "127.0.0.1", "port": 5433, "dbname": "novacron"}
    assert entry_target(find_database_entry(INI, "last")["values"], "last") == {"host": None, "port": 5432, "dbname": "x"}
    assert find_database_entry(INI, "listen_port") is None


def test_rewrite_changes_only_host_and_port_of_that_line():
    out = rewrite_database_entry(INI, "novacron", {"host": "10.1.2.3", "port": 5434})
    assert lines_except(out, 4) == lines_except(INI, 4)  # every other line byte-identical
    assert out.splitlines(keepends=True)[4] == (
        b"novacron  =  host=10.1.2.3  port=5434 dbname=novacron pool_size=20 password='it''s a secret'   \n"
    )
    back = rewrite_database_entry(out, "novacron", {"host": "127.0.0.1", "port": 5433})
    assert back == INI


def test_rewrite_appends_missing_keys_and_keeps_crlf():
    content = b"[databases]\r\nlast = dbname=x\r\n"
    out = rewrite_database_entry(content, "last", {"host": "127.0.0.1", "port": 5434, "dbname": "y"})
    assert out == b"[databases]\r\nlast = dbname=y host=127.0.0.1 port=5434\r\n"


def test_rewrite_refuses_a_missing_or_duplicate_entry():
    with pytest.raises(PgError, match="no \\[databases\\] entry for 'nope'"):
        rewrite_database_entry(INI, "nope", {"port": 1})
    twice = b"[databases]\nx = port=1\nx = port=2\n"
    with pytest.raises(PgError, match="defines 'x' more than once \\(lines 2, 3\\)"):
        find_database_entry(twice, "x")


# --- auth_file -----------------------------------------------------------------------------


def test_parse_auth_file():
    text = '; comment\n"novacron" "SCRAM-SHA-256$4096:abc$def:ghi"\n"we""ird" "pa""ss"\n;"gone" "x"\n'
    assert parse_auth_file(text) == {"novacron": "SCRAM-SHA-256$4096:abc$def:ghi", 'we"ird': 'pa"ss'}
    assert parse_auth_file("") == {}


# --- SCRAM-SHA-256 verifiers ---------------------------------------------------------------


def test_verifier_shape_and_match():
    verifier = scram_verifier("pencil", salt=b"\x01" * 16)
    iterations, salt = verifier.split("$")[1].split(":")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert (iterations, base64.b64decode(salt)) == ("4096", b"\x01" * 16)
    assert scram_verifier("pencil", salt=b"\x01" * 16) == verifier  # deterministic for a given salt
    assert scram_verifier("pencil") != scram_verifier("pencil")  # random salts otherwise
    assert scram_verifier_matches(verifier, "pencil")
    assert not scram_verifier_matches(verifier, "pencil2")
    assert not scram_verifier_matches("md5abc", "pencil")
    assert not scram_verifier_matches(None, "pencil")


def test_saslprep_maps_like_postgresql():
    assert saslprep("plain-ascii") == "plain-ascii"
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space -> space
    assert saslprep("a\u200bb") == "a b"  # U+200B is a non-ASCII space to PostgreSQL
    assert saslprep("a\u00adb") == "ab"  # soft hyphen -> nothing
    assert saslprep("\u2168") == "IX"  # NFKC
    assert saslprep("\ue000x") == "\ue000x"  # prohibited (private use): used as given


def test_filter_keeps_a_matching_verifier_and_replaces_a_stale_one():
    make = FilterModule().filters()["pgbouncer_scram_verifier"]
    current = scram_verifier("s3cret")
    assert make("s3cret", existing=current) == current
    replaced = make("n3w", existing=current)
    assert replaced != current and scram_verifier_matches(replaced, "n3w")
    assert scram_verifier_matches(make("s3cret"), "s3cret")
    secrets = FilterModule().filters()["pgbouncer_auth_file_secrets"]('"a" "b"\n')
    assert secrets == {"a": "b"}


BINDIR = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="module")
def scratch_postgres():
    """A throwaway PostgreSQL 15 (scram-sha-256 over TCP) on a free port, as superuser postgres."""
    if not (BINDIR / "initdb").exists():
        pytest.skip("PostgreSQL 15 binaries are not installed")
    datadir = Path(tempfile.mkdtemp(prefix="zdm-scram-"))
    shutil.chown(datadir, "postgres", "postgres")
    pwfile = datadir.parent / (datadir.name + ".pw")
    pwfile.write_text("scratch-superuser\n")
    shutil.chown(pwfile, "postgres", "postgres")

    def as_postgres(*argv):
        subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], check=True, capture_output=True)

    as_postgres(BINDIR / "initdb", "-D", datadir, "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    as_postgres(
        BINDIR / "pg_ctl",
        "-D",
        datadir,
        "-w",
        "-l",
        datadir / "log",
        "start",
        "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {datadir}",
    )
    try:
        yield {"host": "127.0.0.1", "port": port, "user": "postgres", "password": "scratch-superuser", "dbname": "postgres"}
    finally:
        as_postgres(BINDIR / "pg_ctl", "-D", datadir, "-m", "immediate", "stop")
        shutil.rmtree(datadir, ignore_errors=True)
        pwfile.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "password",
    ["zerodowntime-lab", "p\u00e4ssw\u00f6rd", "a\u00a0b\u200bc\u00add", "\ue000private", "quote'and\"dollar$"],
    ids=["ascii", "umlauts", "mapped-spaces", "prohibited", "quotes"],
)
def test_postgresql_accepts_the_verifier_as_a_password(scratch_postgres, password):
    verifier = scram_verifier(password)
    with psycopg.connect(**scratch_postgres, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS scram_probe")
        admin.execute(f"CREATE ROLE scram_probe LOGIN PASSWORD '{verifier}'")
        assert admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'").fetchone()[0] == verifier
    login = dict(scratch_postgres, user="scram_probe", password=password)
    with psycopg.connect(**login) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "scram_probe"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**dict(login, password=password + "x")).close()


def test_a_verifier_postgresql_made_is_reproduced_exactly(scratch_postgres):
    with psycopg.connect(**scratch_postgres, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS scram_made_by_pg")
        admin.execute("SET password_encryption = 'scram-sha-256'")
        admin.execute("CREATE ROLE scram_made_by_pg PASSWORD 'p\u00e4ss word'")
        theirs = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_made_by_pg'").fetchone()[0]
    salt = base64.b64decode(theirs.split("$")[1].split(":")[1])
    assert scram_verifier("p\u00e4ss word", salt=salt) == theirs
    assert scram_verifier_matches(theirs, "p\u00e4ss word")


def test_repointed_pools_names_the_pools_a_cutover_moved():
    ini = "[databases]\napp = host=10.0.0.2 port=5434 dbname=app pool_size=20\nother = host=10.0.0.1 port=5433\n[pgbouncer]\n"
    configured = [
        {"name": "app", "host": "10.0.0.1", "port": 5433, "dbname": "app"},
        {"name": "other", "host": "10.0.0.1", "port": "5433"},
        {"name": "new", "host": "10.0.0.1", "port": 5433},
    ]
    assert pgbouncer_repointed_pools(ini, configured) == [
        {"name": "app", "installed": "10.0.0.2:5434/app", "configured": "10.0.0.1:5433/app"}
    ]
    assert pgbouncer_repointed_pools("", configured) == []
