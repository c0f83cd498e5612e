"""testinfra checks of roles/redis after molecule's converge."""

import os

AUTH = {"REDISCLI_AUTH": "molecule-secret"}  # redis-cli reads the password from the environment


def cli(host, port, *command):
    env = " ".join(f"{k}={v}" for k, v in AUTH.items())
    return host.check_output(f"env {env} redis-cli --no-auth-warning -h 127.0.0.1 -p {port} {' '.join(command)}")


def test_instances_listen_on_loopback(host):
    for port in (6390, 6391):
        assert host.socket(f"tcp://127.0.0.1:{port}").is_listening
        assert not host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_password_is_required(host):
    out = host.run("redis-cli -h 127.0.0.1 -p 6390 PING")
    assert "NOAUTH" in out.stdout + out.stderr
    assert cli(host, 6390, "PING") == "PONG"


def test_configuration_files(host):
    for name in ("molecule-primary", "molecule-replica"):
        conf = host.file(f"/etc/redis/redis-{name}.conf")
        assert conf.user == "redis" and conf.mode == 0o640
        assert host.file(f"/etc/init.d/redis-{name}").mode == 0o755
        assert host.run(f"/etc/init.d/redis-{name} status").rc == 0


def test_settings(host):
    assert cli(host, 6390, "CONFIG GET maxmemory-policy").split() == ["maxmemory-policy", "allkeys-lru"]
    assert cli(host, 6390, "CONFIG GET appendonly").split() == ["appendonly", "no"]
    assert cli(host, 6391, "CONFIG GET maxmemory-policy").split() == ["maxmemory-policy", "noeviction"]
    assert cli(host, 6391, "CONFIG GET appendonly").split() == ["appendonly", "yes"]
    assert cli(host, 6391, "CONFIG GET maxmemory").split() == ["maxmemory", str(64 * 1024 * 1024)]


def test_replica_follows_the_primary(host):
    info = cli(host, 6391, "INFO replication")
    assert "role:slave" in info and "master_port:6390" in info and "master_link_status:up" in info
    key = f"molecule:{os.getpid()}"
    cli(host, 6390, "SET", key, "1", "EX", "60")
    host.run("sleep 0.5")
    assert cli(host, 6391, "GET", key) == "1"
