"""testinfra checks of roles/postgresql after molecule's converge."""


def psql(host, sql):
    # as root over the socket: the role maps root to the postgres superuser (peer auth)
    return host.check_output(f'psql -h /var/run/postgresql -p 5440 -U postgres -d postgres -Atc "{sql}"')


def test_instance_is_listening(host):
    assert host.socket("tcp://127.0.0.1:5440").is_listening


def test_configuration_files_are_the_roles(host):
    conf = host.file("/etc/postgresql/15/molecule/postgresql.conf")
    assert conf.user == "postgres"
    assert "wal_level = 'logical'" in conf.content_string
    hba = host.file("/etc/postgresql/15/molecule/pg_hba.conf")
    assert hba.mode == 0o640


def test_logical_replication_and_memory_settings(host):
    assert psql(host, "SHOW wal_level") == "logical"
    assert psql(host, "SHOW shared_buffers") == "128MB"  # 1024MB for the instance: a small host
    assert psql(host, "SHOW effective_cache_size") == "768MB"
    assert psql(host, "SHOW log_min_duration_statement") == "500ms"


def test_roles_and_database(host):
    assert psql(host, "SELECT rolreplication FROM pg_roles WHERE rolname = 'molecule_replicator'") == "t"
    assert psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'molecule_db'") == "molecule_app"
