"""roles/redis, zerodowntime.migration.redis_write_pause / redis_switchover and
roles/migration (tasks_from redis_switchover) against real Redis servers on this machine.

The role converges the lab's Redis over SSH: blue on cache-blue 127.0.0.21:6379 and green on
cache-green 127.0.0.22:6379 replicating blue (inventories/lab hosts.yml and
group_vars/redis_servers.yml); the tests tell them apart by address. The modules and the switchover run against
throwaway redis-server processes of the test's own (free loopback ports), so pausing and promoting
never disturbs the lab.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import yaml
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from tests.lab import (
    LAB_PASSWORD,
    REDIS_BLUE_ADDRESS,
    REDIS_GREEN_ADDRESS,
    REDIS_PORT,
    RedisWriter,
    converged_again,
    free_port,
    kill_tree,
    module_pid,
    run_module,
    run_playbook,
    start_held_module,
    wait_for,
)

WRITE_PAUSE = "zerodowntime.migration.redis_write_pause"
SWITCHOVER = "zerodowntime.migration.redis_switchover"
SWITCHOVER_ROLE = {"name": "zerodowntime.migration.migration", "tasks_from": "redis_switchover"}
PASSWORD = "redis-test-Secret"
# the lab's Redis instances (inventories/lab hosts.yml: cache-blue, cache-green) by their hosts' addresses
LAB_REDIS = {"blue": REDIS_BLUE_ADDRESS, "green": REDIS_GREEN_ADDRESS}
REDIS_HOSTS = ("cache-blue", "cache-green")


def role_play(**extra_vars) -> list[dict]:
    """The role on the lab's Redis hosts with the inventory's variables (role params win over them)."""
    return [
        {
            "name": "Provision Redis",
            "hosts": "redis_servers",
            "roles": [{"role": "zerodowntime.migration.redis", **extra_vars}],
        }
    ]


def client(port: int, password: str | None = LAB_PASSWORD, **kwargs) -> redis.Redis:
    options = dict(host="127.0.0.1", port=port, password=password, socket_timeout=10, decode_responses=True)
    return redis.Redis(**dict(options, **kwargs))


def lab(side: str) -> redis.Redis:
    """The lab's Redis blue or green, at its host's address."""
    return client(REDIS_PORT, host=LAB_REDIS[side])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Throwaway servers ---------------------------------------------------------------------------


@contextmanager
def throwaway_redis(password: str | None = PASSWORD, replicaof: int | None = None):
    """A redis-server of the test's own on a free loopback port (no persistence); yields its port."""
    workdir = Path(tempfile.mkdtemp(prefix="zdm-redis-"))
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no"]
    argv += ["--logfile", str(workdir / "redis.log"), "--daemonize", "no"]
    config = workdir / "redis.conf"  # a config file (CONFIG REWRITE needs one); the password stays off the command line
    config.write_text(f'requirepass "{password}"\nmasterauth "{password}"\n' if password else "")
    config.chmod(0o600)
    if replicaof:
        argv += ["--replicaof", "127.0.0.1", str(replicaof)]
    with serving([argv[0], str(config), *argv[1:]], workdir, port, password, workdir / "redis.log"):
        yield port


@contextmanager
def serving(argv: list[str], workdir: Path, port: int, password: str | None, log: Path):
    """Run a Redis process (a server or a Sentinel) until it answers PING on `port`; afterwards
    stop it and remove its `workdir`. Its log is shown when it does not start."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client(port, password).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"{argv[0]} did not start: {log.read_text() if log.exists() else 'no log'}") from None
                time.sleep(0.02)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_replicating(replica_port: int, password: str = PASSWORD, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + 15
    while client(replica_port, password, host=host).info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "replica did not connect"
        time.sleep(0.05)


def pause_args(port: int, **args) -> dict:
    return dict({"host": "127.0.0.1", "port": port, "password": PASSWORD}, **args)


def is_paused(port: int, password: str = PASSWORD) -> bool:
    probe = client(port, password, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    probe.ping()
    try:
        probe.delete("zdm-test:absent")
    except redis.TimeoutError:
        return True
    except redis.ResponseError:
        return False  # answered (READONLY on a replica)
    finally:
        probe.close()
    return False


@pytest.fixture()
def server():
    with throwaway_redis() as port:
        yield port


# roles/redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_lab():
    """The lab's Redis converged by the role (a fresh machine gets it here)."""
    run = run_playbook(role_play())
    assert run.status == "successful", run.stdout
    return run


def test_second_converge_changes_nothing(redis_lab):
    again = converged_again(redis_lab, role_play())
    assert again.status == "successful", again.stdout
    assert set(again.stats["ok"]) == set(REDIS_HOSTS), again.stats  # the role ran on both Redis hosts
    assert again.changes_by_host() == {}, again.changes()


def run_ids() -> dict:
    """Each lab instance's run_id: a new one after every restart."""
    return {side: lab(side).info("server")["run_id"] for side in LAB_REDIS}


def test_a_file_redis_rewrote_is_written_back_without_a_restart(redis_lab):
    """A switchover persists the new roles with CONFIG REWRITE, which reformats the files (quoted
    paths, `save` over lines, a `user default` line): the role writes its own back, restarting
    nothing, since the settings are the same."""
    before = run_ids()
    for side in LAB_REDIS:
        lab(side).config_rewrite()
    assert "# Generated by CONFIG REWRITE" in Path("/etc/redis/redis-blue.conf").read_text()
    run = run_playbook(role_play())
    assert run.status == "successful", run.stdout
    assert run.changes_by_host() == dict.fromkeys(REDIS_HOSTS, 1), run.changes()  # each host's file, no start or restart
    assert run_ids() == before
    assert "# Generated by CONFIG REWRITE" not in Path("/etc/redis/redis-blue.conf").read_text()
    again = run_playbook(role_play())
    assert again.changes_by_host() == {}, again.changes()


def test_a_changed_setting_restarts_the_instances(redis_lab):
    before = run_ids()
    try:
        run = run_playbook(role_play(redis_maxmemory="96mb"))
        assert run.status == "successful", run.stdout
        assert lab("green").config_get("maxmemory")["maxmemory"] == str(96 * 1024 * 1024)
        after = run_ids()
        assert all(after[side] != before[side] for side in before), (before, after)
    finally:
        restored = run_playbook(role_play())
        assert restored.status == "successful", restored.stdout
        wait_replicating(REDIS_PORT, LAB_PASSWORD, host=REDIS_GREEN_ADDRESS)
    assert lab("green").config_get("maxmemory")["maxmemory"] == str(128 * 1024 * 1024)


def test_check_mode_changes_nothing(redis_lab):
    conf = Path("/etc/redis/redis-green.conf")
    before = digest(conf)
    run = run_playbook(role_play(redis_maxmemory="64mb"), cmdline="--check --diff")
    assert run.status == "successful", run.stdout
    assert set(run.changes_by_host()) == set(REDIS_HOSTS)  # both configuration files would change (no_log: they hold the password)
    assert digest(conf) == before
    assert lab("green").config_get("maxmemory")["maxmemory"] == str(128 * 1024 * 1024)


def test_instances_answer_with_the_password_only(redis_lab):
    for address in LAB_REDIS.values():
        assert client(REDIS_PORT, host=address).ping()
        with pytest.raises(redis.AuthenticationError):
            client(REDIS_PORT, password=None, host=address).ping()
        with pytest.raises(redis.AuthenticationError):
            client(REDIS_PORT, password="wrong", host=address).ping()


def test_instances_have_their_own_files_and_settings(redis_lab):
    for name, address in LAB_REDIS.items():
        conf = Path(f"/etc/redis/redis-{name}.conf")
        assert conf.stat().st_mode & 0o777 == 0o640
        assert conf.owner() == "redis"
        config = lab(name).config_get("*")
        assert config["dir"] == f"/var/lib/redis/{name}"
        assert config["pidfile"] == f"/run/redis-{name}/redis-server.pid"
        assert config["logfile"] == f"/var/log/redis/redis-{name}.log"
        assert config["bind"] == address and config["port"] == str(REDIS_PORT)  # its host's address, the standard port
        assert config["maxmemory-policy"] == "allkeys-lru"
        assert config["maxmemory"] == str(128 * 1024 * 1024)
        assert config["appendonly"] == "no" and config["save"]
        status = subprocess.run([f"/etc/init.d/redis-{name}", "status"], capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stdout


def test_green_replicates_blue(redis_lab):
    info = lab("green").info("replication")
    assert info["role"] == "slave" and (info["master_host"], info["master_port"]) == (REDIS_BLUE_ADDRESS, REDIS_PORT)
    assert info["master_link_status"] == "up"
    key = f"zdm-test:replication:{os.getpid()}"
    lab("blue").set(key, "from blue", ex=60)
    deadline = time.monotonic() + 10
    while lab("green").get(key) != "from blue":
        assert time.monotonic() < deadline, "green did not get blue's write"
        time.sleep(0.02)
    lab("blue").delete(key)


def test_bad_instance_is_refused_naming_the_fix(redis_lab):
    confs = {path: digest(path) for path in Path("/etc/redis").glob("redis-*.conf")}
    run = run_playbook(role_play(redis_instances=[{"name": "Blue Server", "port": 6379}, {"name": "x", "port": 6379}]))
    assert run.status == "failed"
    assert "redis_instances" in run.stdout and "Fix the entry" in run.stdout
    assert {path: digest(path) for path in Path("/etc/redis").glob("redis-*.conf")} == confs
    assert not Path("/etc/redis/redis-x.conf").exists()


def test_role_refuses_to_demote_a_promoted_instance(redis_lab):
    """A switchover promoted green: converging the inventory's role (replica) would drop its writes."""
    green = lab("green")
    green.execute_command("REPLICAOF", "NO", "ONE")
    try:
        conf = Path("/etc/redis/redis-green.conf")
        before = digest(conf)
        run = run_playbook(role_play())  # blue is unchanged; green runs as a primary
        assert run.status == "failed"
        assert "runs as a primary" in run.stdout and "redis_allow_replicaof_change" in run.stdout
        assert digest(conf) == before
    finally:
        green.execute_command("REPLICAOF", REDIS_BLUE_ADDRESS, str(REDIS_PORT))
        wait_replicating(REDIS_PORT, LAB_PASSWORD, host=REDIS_GREEN_ADDRESS)


# redis_write_pause ---------------------------------------------------------------------------


def timed_set(port: int, key: str, out: dict) -> threading.Thread:
    def write():
        started = time.monotonic()
        out["ok"] = client(port, PASSWORD, socket_timeout=30).set(key, "1")
        out["done"] = time.monotonic()
        out["took"] = out["done"] - started

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_pause_holds_writes_until_unpause(server):
    _run, result = run_module(WRITE_PAUSE, pause_args(server, state="paused", duration_ms=20000))
    assert not result["failed"], result
    assert result["changed"] and result["paused"] and result["commands"] == ["CLIENT PAUSE 20000 WRITE"]
    assert client(server, PASSWORD).get("absent") is None  # reads go on
    out = {}
    writer = timed_set(server, "held", out)
    time.sleep(0.5)
    assert "done" not in out  # the SET waits
    released_at = time.monotonic()
    _run, result = run_module(WRITE_PAUSE, pause_args(server, state="unpaused"))
    assert not result["failed"] and result["changed"] and result["was_paused"]
    writer.join(10)
    assert out["ok"] is True and out["done"] >= released_at
    assert client(server, PASSWORD).get("held") == "1"
    # nothing held any more: a second unpause changes nothing
    _run, result = run_module(WRITE_PAUSE, pause_args(server, state="unpaused"))
    assert not result["failed"] and not result["changed"] and not result["was_paused"]


def test_pause_ends_by_itself(server):
    _run, result = run_module(WRITE_PAUSE, pause_args(server, state="paused", duration_ms=1500))
    assert not result["failed"], result
    out = {}
    timed_set(server, "late", out).join(20)
    assert out["ok"] is True
    assert not is_paused(server)


def test_check_mode_pauses_nothing(server):
    _run, result = run_module(WRITE_PAUSE, pause_args(server, state="paused", duration_ms=20000), check=True, diff=True)
    assert not result["failed"] and result["changed"]
    assert result["diff"] == {
        "before": {"endpoint": f"127.0.0.1:{server}", "paused": False},
        "after": {"endpoint": f"127.0.0.1:{server}", "paused": True, "duration_ms": 20000, "mode": "write"},
    }
    assert not is_paused(server)
    client(server, PASSWORD).execute_command("CLIENT", "PAUSE", 20000, "WRITE")
    try:
        _run, result = run_module(WRITE_PAUSE, pause_args(server, state="unpaused"), check=True, diff=True)
        assert not result["failed"] and result["changed"] and result["commands"] == ["CLIENT UNPAUSE"]
        assert result["diff"]["before"]["paused"] and not result["diff"]["after"]["paused"]
        assert is_paused(server)
    finally:
        client(server, PASSWORD).execute_command("CLIENT", "UNPAUSE")


def test_bad_duration_is_refused(server):
    for args, words in (({"duration_ms": 0}, "1 to 600000"), ({"duration_ms": 900000}, "1 to 600000"), ({}, "duration_ms is required")):
        _run, result = run_module(WRITE_PAUSE, pause_args(server, state="paused", **args))
        assert result["failed"] and words in result["msg"], result
        assert not result.get("changed")
    assert not is_paused(server)


def test_wrong_password_unreachable_and_missing_password(server):
    run, result = run_module(WRITE_PAUSE, pause_args(server, password="not-it", state="unpaused"))
    assert result["failed"] and f"127.0.0.1:{server} refused the password" in result["msg"]
    assert "not-it" not in run.stdout
    run, result = run_module(WRITE_PAUSE, pause_args(server, password=None, state="unpaused"))
    assert result["failed"] and "requires a password" in result["msg"]
    closed = free_port()
    run, result = run_module(WRITE_PAUSE, pause_args(closed, state="unpaused", connect_timeout=2))
    assert result["failed"] and f"cannot connect to Redis at 127.0.0.1:{closed}" in result["msg"]
    assert PASSWORD not in run.stdout


# redis_switchover and roles/migration tasks_from redis_switchover --------------------------------


@pytest.fixture()
def pair():
    """A throwaway blue and a green replicating it; yields (blue port, green port)."""
    with throwaway_redis() as blue, throwaway_redis(replicaof=blue) as green:
        wait_replicating(green)
        yield blue, green


def sides(blue: int, green: int) -> dict:
    return {
        "source": {"host": "127.0.0.1", "port": blue, "password": PASSWORD},
        "target": {"host": "127.0.0.1", "port": green, "password": PASSWORD},
    }


def test_promotion_needs_blue_paused_and_is_idempotent(pair):
    blue, green = pair
    run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="promoted"))
    assert result["failed"] and "does not hold writes" in result["msg"] and "redis_write_pause" in result["msg"]
    assert client(green, PASSWORD).info("replication")["role"] == "slave"
    client(blue, PASSWORD).execute_command("CLIENT", "PAUSE", 20000, "WRITE")
    try:
        run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="promoted"), check=True, diff=True)
        assert not result["failed"] and result["changed"] and result["diff"]["after"]["target"] == "primary"
        assert client(green, PASSWORD).info("replication")["role"] == "slave"
        run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="promoted"))
        assert not result["failed"] and result["changed"] and result["target_offset"] >= result["source_offset"]
        assert client(green, PASSWORD).info("replication")["role"] == "master"
        run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="promoted"))
        assert not result["failed"] and not result["changed"]
    finally:
        client(blue, PASSWORD).execute_command("CLIENT", "UNPAUSE")
    # undo: green follows blue again, twice = once
    run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="replica"))
    assert not result["failed"] and result["changed"]
    wait_replicating(green)
    run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="replica"))
    assert not result["failed"] and not result["changed"]
    assert PASSWORD not in run.stdout


def switchover_play(blue: int, green: int, hook: Path, **extra) -> list[dict]:
    return [
        {
            "name": "Redis switchover",
            "hosts": "lab-db",
            "gather_facts": False,
            "vars": dict(
                redis_switchover_source={"host": "127.0.0.1", "port": blue},
                redis_switchover_target={"host": "127.0.0.1", "port": green},
                redis_switchover_password=PASSWORD,
                redis_switchover_pause_ms=extra.pop("redis_switchover_pause_ms", 5000),
                redis_switchover_catchup_timeout=2,
                redis_switchover_repoint_tasks=str(hook),
                **extra,
            ),
            "tasks": [{"name": "Switch over", "ansible.builtin.include_role": SWITCHOVER_ROLE}],
        }
    ]


def write_hook(workdir: Path, green: int, fail: bool = False, slow: float = 0) -> tuple[Path, Path]:
    primary_file = workdir / "primary"
    hook = workdir / "repoint.yml"
    tasks = [{"name": "Repointing takes a while", "ansible.builtin.wait_for": {"timeout": slow}}] if slow else []
    tasks += [
        {"name": "Point the clients at green", "ansible.builtin.copy": {"dest": str(primary_file), "content": str(green), "mode": "0644"}}
    ]
    if fail:
        tasks.append({"name": "Repointing fails", "ansible.builtin.fail": {"msg": "the proxy said no"}})
    hook.write_text(yaml.safe_dump(tasks))
    return hook, primary_file


@pytest.mark.parametrize("slow_hook", [0, 4], ids=["fast-repoint", "pause-ends-before-repoint"])
def test_switchover_loses_no_write(pair, tmp_path, slow_hook):
    """With a slow hook blue's 3 s pause ends before the clients move: blue, already green's
    replica, refuses the held writes (READONLY) instead of acknowledging them."""
    blue, green = pair
    hook, primary_file = write_hook(tmp_path, green, slow=slow_hook)
    with RedisWriter(blue, PASSWORD, primary_file) as writer:
        run = run_playbook(switchover_play(blue, green, hook, redis_switchover_pause_ms=3000))
    assert run.status == "successful", run.stdout
    assert PASSWORD not in run.stdout
    green_info = client(green, PASSWORD).info("replication")
    assert green_info["role"] == "master"
    assert client(blue, PASSWORD).info("replication")["master_port"] == green
    assert writer.acked and writer.errors  # the writer was moved over
    on_green = client(green, PASSWORD)
    missing = [key for key in writer.acked if on_green.get(key) is None]
    on_blue = client(blue, PASSWORD)
    assert missing == [], (
        f"{len(missing)} of {len(writer.acked)} acknowledged writes are not on green: {missing[:3]}..{missing[-3:]}; "
        f"errors {writer.errors}; green has {on_green.dbsize()}, blue {on_blue.dbsize()}, "
        f"first missing on blue: {on_blue.get(missing[0])}"
    )
    assert on_green.dbsize() == len(writer.acked)
    assert not is_paused(blue)
    # a second run changes nothing
    again = run_playbook(switchover_play(blue, green, hook))
    assert again.status == "successful", again.stdout
    assert again.changed() == 0, again.changed_tasks()
    assert not is_paused(blue)


def test_switchover_failure_is_undone(pair, tmp_path):
    blue, green = pair
    hook, _primary_file = write_hook(tmp_path, green, fail=True)
    with RedisWriter(blue, PASSWORD, tmp_path / "never") as writer:
        # the pause must outlast the failing hook and the undo (seconds of Ansible on a busy machine):
        # past it blue, then green's replica, would refuse writes; the undo releases it early
        run = run_playbook(switchover_play(blue, green, hook, redis_switchover_pause_ms=30000))
    assert run.status == "failed"
    assert "Repointing fails: the proxy said no" in run.stdout and "blue is the primary again" in run.stdout
    assert client(blue, PASSWORD).info("replication")["role"] == "master"
    wait_replicating(green)
    assert not is_paused(blue)
    on_blue = client(blue, PASSWORD)
    assert [key for key in writer.acked if on_blue.get(key) is None] == []
    assert writer.errors == []  # clients only waited


# The cutover in one run (state=switched) behind a throwaway HAProxy -----------------------------

HAPROXY_CONFIG = """\
global
    stats socket {socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend redis_in
    bind 127.0.0.1:{port}
    default_backend redis_write
backend redis_write
    option tcp-check
    tcp-check connect
    tcp-check send-binary {auth}
    tcp-check expect string +OK
    tcp-check send PING\\r\\n
    tcp-check expect string +PONG
    tcp-check send info\\ replication\\r\\n
    tcp-check expect string role:master
    tcp-check send QUIT\\r\\n
    tcp-check expect string +OK
    default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions
    server blue 127.0.0.1:{blue} check
    server green 127.0.0.1:{green} check
"""


def haproxy_command(socket_path: Path, text: str) -> str:
    import socket as sockets

    with sockets.socket(sockets.AF_UNIX) as conn:
        conn.connect(str(socket_path))
        conn.sendall(text.encode() + b"\n")
        return b"".join(iter(lambda: conn.recv(65536), b"")).decode()


def haproxy_drained(socket_path: Path) -> set[str]:
    """The servers of redis_write drained from the runtime API (srv_admin_state bit 0x08)."""
    rows = [line.split() for line in haproxy_command(socket_path, "show servers state redis_write").splitlines()[2:] if line]
    return {row[3] for row in rows if int(row[6]) & 0x08}


def haproxy_up(socket_path: Path) -> set[str]:
    """The servers of redis_write HAProxy sends connections to (srv_op_state 2)."""
    rows = [line.split() for line in haproxy_command(socket_path, "show servers state redis_write").splitlines()[2:] if line]
    return {row[3] for row in rows if row[5] == "2"}


@contextmanager
def throwaway_haproxy(workdir: Path, blue: int, green: int):
    """A throwaway HAProxy that, like roles/haproxy's, sends Redis clients to the server answering
    role:master; yields (its port, its admin socket)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, socket_path = free_port(), workdir / "admin.sock"
    config = workdir / "haproxy.cfg"
    auth = f"AUTH {PASSWORD}\r\n".encode().hex()
    config.write_text(HAPROXY_CONFIG.format(socket=socket_path, port=port, auth=auth, blue=blue, green=green))
    config.chmod(0o600)
    process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (socket_path.exists() and haproxy_up(socket_path) == {"blue"}):
            assert time.monotonic() < deadline and process.poll() is None, "the throwaway HAProxy did not start"
            time.sleep(0.05)
        yield port, socket_path
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture()
def behind_haproxy(pair, tmp_path):
    """The pair behind a throwaway HAProxy; yields (blue, green, HAProxy's port, its admin socket)."""
    blue, green = pair
    with throwaway_haproxy(tmp_path / "haproxy", blue, green) as (port, socket_path):
        yield blue, green, port, socket_path


def one_run_args(blue: int, green: int, socket_path: Path, **extra) -> dict:
    defaults = dict(state="switched", pause_ms=3000, timeout=1, haproxy=[{"socket": str(socket_path), "timeout": 1}])
    return dict(sides(blue, green), **dict(defaults, **extra))


def assert_acked_on(port: int, writer: RedisWriter, side: str) -> None:
    """Every write the writer saw acknowledged is on the server at `port` (`side` names it)."""
    missing = [key for key, value in zip(writer.acked, client(port, PASSWORD).mget(writer.acked), strict=True) if value is None]
    assert writer.acked and missing == [], f"{len(missing)} of {len(writer.acked)} acknowledged writes not on {side}"


def test_one_run_cutover_through_haproxy_loses_no_write(behind_haproxy):
    blue, green, port, socket_path = behind_haproxy
    # check mode: the plan, nothing paused, promoted or told
    run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path), check=True, diff=True)
    assert not result["failed"] and result["changed"] and result["would_switch"] and not result["switched"]
    assert result["steps"][0]["step"] == "hold_writes" and "set server redis_write/green health up" in str(result["commands"])
    assert result["diff"]["after"]["target"] == "primary"
    assert client(green, PASSWORD).info("replication")["role"] == "slave" and haproxy_up(socket_path) == {"blue"} and not is_paused(blue)

    with RedisWriter(port, PASSWORD) as writer:  # through HAProxy, reconnecting there on an error
        run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path))
    assert not result["failed"] and result["changed"] and result["switched"], result.get("msg")
    assert PASSWORD not in run.stdout
    steps = ["hold_writes", "wait_for_catch_up", "repoint_haproxy", "confirm_haproxy", "promote", "demote_source", "retire_source"]
    assert [step["step"] for step in result["steps"]] == [*steps, "release_writes"]
    assert 0 < result["hold_ms"] < 3000 and result["target_offset"] >= result["source_offset"]
    assert client(green, PASSWORD).info("replication")["role"] == "master"
    assert client(blue, PASSWORD).info("replication")["master_port"] == green
    assert haproxy_up(socket_path) == {"green"} and haproxy_drained(socket_path) == set() and not is_paused(blue)
    assert writer.errors == [], writer.errors[:5]  # killed while held: reconnected (redis-py's retry), no READONLY
    assert_acked_on(green, writer, "green")
    assert client(port, PASSWORD).info("server")["tcp_port"] == green  # a new connection reaches green
    # a second run changes nothing
    run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path))
    assert not result["failed"] and not result["changed"] and not result["switched"]


def test_one_run_cutover_that_cannot_catch_up_is_undone(behind_haproxy):
    """Green holds its replication stream (its own CLIENT PAUSE WRITE): the catch-up runs out, the
    hold is released, nothing was promoted, HAProxy still sends clients to blue."""
    blue, green, port, socket_path = behind_haproxy
    with RedisWriter(port, PASSWORD) as writer:
        # long enough to outlast the module's start on a busy machine; unpaused below
        client(green, PASSWORD).execute_command("CLIENT", "PAUSE", 30000, "WRITE")
        time.sleep(0.1)  # blue's offset moves past green's
        _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path, timeout=0.3))
    assert result["failed"] and result.get("failed_step") == "wait_for_catch_up", result
    assert "did not catch up" in result["msg"] and "is the primary and serves writes again" in result["msg"]
    assert result["undone"] == ["hold_writes"] and not result["target_kept_as_primary"]
    client(green, PASSWORD).execute_command("CLIENT", "UNPAUSE")
    assert client(blue, PASSWORD).info("replication")["role"] == "master" and not is_paused(blue)
    assert haproxy_up(socket_path) == {"blue"}
    assert_acked_on(blue, writer, "blue")


def test_one_run_cutover_that_haproxy_does_not_follow_is_undone(behind_haproxy):
    """Green in maintenance on HAProxy: the view is never confirmed, so green is never promoted; blue
    is no longer drained, HAProxy sends clients to blue again."""
    blue, green, port, socket_path = behind_haproxy
    haproxy_command(socket_path, "set server redis_write/green state maint")
    with RedisWriter(port, PASSWORD) as writer:
        _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path))
    assert result["failed"] and result["failed_step"] == "confirm_haproxy", result["msg"]
    assert "does not show the target up" in result["msg"] and "maintenance" in result["msg"]
    assert result["undone"] == ["repoint_haproxy", "hold_writes"]  # never promoted: HAProxy did not follow
    assert client(blue, PASSWORD).info("replication")["role"] == "master" and not is_paused(blue)
    wait_replicating(green)
    haproxy_command(socket_path, "set server redis_write/green state ready")
    deadline = time.monotonic() + 5
    while haproxy_up(socket_path) != {"blue"}:  # blue forced up again; green's checks fail (a replica)
        assert time.monotonic() < deadline, haproxy_up(socket_path)
        time.sleep(0.05)
    assert_acked_on(blue, writer, "blue")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"haproxy": [{"socket": "BACKEND", "backend": "nosuch", "timeout": 1}]},
            "refused `show servers state nosuch`: Can't find backend",
        ),
        ({"haproxy": [{"socket": "/nonexistent/admin.sock"}]}, "cannot reach HAProxy's runtime API at /nonexistent/admin.sock"),
        ({"pause_ms": 1000, "timeout": 1}, "leaves no time after the catch-up"),
    ],
    ids=["unknown-backend", "no-socket", "pause-shorter-than-catch-up"],
)
def test_one_run_cutover_bad_input_changes_nothing(behind_haproxy, change, expected):
    blue, green, _port, socket_path = behind_haproxy
    if "haproxy" in change and change["haproxy"][0]["socket"] == "BACKEND":
        change = {"haproxy": [dict(change["haproxy"][0], socket=str(socket_path))]}
    _run, result = run_module(SWITCHOVER, dict(one_run_args(blue, green, socket_path), **change))
    assert result["failed"] and expected in result["msg"], result["msg"]
    assert client(green, PASSWORD).info("replication")["role"] == "slave" and not is_paused(blue)
    assert haproxy_up(socket_path) == {"blue"}


def test_a_replica_whose_link_stays_down_is_not_promoted(behind_haproxy):
    """Green follows blue but cannot authenticate (its link stays down): the run waits its timeout
    for the link, then refuses naming it - nothing paused, promoted or told. Fixed, it goes ahead."""
    blue, green, _port, socket_path = behind_haproxy
    client(green, PASSWORD).config_set("masterauth", "not-the-password")
    client(green, PASSWORD).execute_command("CLIENT", "KILL", "TYPE", "master")
    wait_for("green's link to go down", lambda: client(green, PASSWORD).info("replication")["master_link_status"] != "up", 10)
    started = time.monotonic()
    _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path, timeout=2))
    assert result["failed"] and f"replication link to 127.0.0.1:{blue} is down (waited 2 s" in result["msg"], result["msg"]
    assert time.monotonic() - started >= 2
    assert client(green, PASSWORD).info("replication")["role"] == "slave" and not is_paused(blue)
    assert haproxy_up(socket_path) == {"blue"}
    client(green, PASSWORD).config_set("masterauth", PASSWORD)
    _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path, timeout=2.5))
    assert not result["failed"] and result["changed"], result
    assert client(green, PASSWORD).info("replication")["role"] == "master" and haproxy_up(socket_path) == {"green"}


def test_one_run_cutover_tells_every_haproxy(pair, tmp_path):
    """Two HAProxies in front of Redis, a writer through each: both are told inside the one hold."""
    blue, green = pair
    with (
        throwaway_haproxy(tmp_path / "a", blue, green) as (port_a, socket_a),
        throwaway_haproxy(tmp_path / "b", blue, green) as (
            port_b,
            socket_b,
        ),
    ):
        args = one_run_args(blue, green, socket_a, haproxy=[{"socket": str(socket_a)}, {"socket": str(socket_b)}])
        with RedisWriter(port_a, PASSWORD, prefix="a:") as writer_a, RedisWriter(port_b, PASSWORD, prefix="b:") as writer_b:
            _run, result = run_module(SWITCHOVER, args)
        assert not result["failed"] and result["switched"], result.get("msg")
        assert haproxy_up(socket_a) == {"green"} and haproxy_up(socket_b) == {"green"}
        assert sum("health up" in command for command in result["commands"]) == 2
    for writer in (writer_a, writer_b):
        assert_acked_on(green, writer, "green")


# Signals inside the hold (the cutovers' test failpoint, ZERODOWNTIME_SWITCHOVER_HOLD) -----------

SIGNAL_HOLD = 2.5  # seconds the failpoint keeps the hold open after the chosen step
# The hold of a run a test interrupts: far longer than any run cut short takes, so a run that
# ended well before it was cut short (a short hold could end by itself on a busy machine).
INTERRUPTED_HOLD = 30
SIGNAL_PAUSE_MS = 5000


def cutover_result(process: subprocess.Popen) -> dict:
    import json

    out = process.communicate(timeout=60)[0]
    plays = json.loads(out)["plays"]
    return next(iter(plays[0]["tasks"][0]["hosts"].values()))


def role(port: int) -> str:
    return client(port, PASSWORD).info("replication")["role"]


def interrupted_cutover(behind_haproxy, tmp_path, step: str, how: str) -> tuple[subprocess.Popen, float]:
    """Start the cutover held after `step`, send `how` to the module's process once inside that hold
    (`how` "controller": SIGKILL to ansible-playbook and every process it started, the module too)."""
    blue, green, _port, socket_path = behind_haproxy
    reached = {
        "hold_writes": lambda: is_paused(blue),
        "wait_for_catch_up": lambda: is_paused(blue),
        "repoint_haproxy": lambda: "blue" in haproxy_drained(socket_path),
        "confirm_haproxy": lambda: "blue" in haproxy_drained(socket_path) and role(green) == "slave",
        "promote": lambda: role(green) == "master" and role(blue) == "master",
        "demote_source": lambda: role(blue) == "slave",
        "retire_source": lambda: role(blue) == "slave",
        "release_writes": lambda: role(blue) == "slave",
    }[step]
    arguments = one_run_args(blue, green, socket_path, pause_ms=SIGNAL_PAUSE_MS)
    process = start_held_module(SWITCHOVER, arguments, f"{step}:{INTERRUPTED_HOLD}", tmp_path, json_output=True)
    try:
        wait_for(f"the cutover to reach {step}", lambda: reached() or process.poll() is not None, 60, interval=0.01)
        # a run that ended before the hold (a step failed) is named with its result, not waited for
        assert process.poll() is None, f"the cutover ended before {step}: {process.communicate(timeout=10)[0]}"
        time.sleep(0.2)  # the step itself takes a millisecond: now inside the failpoint's hold
        assert role(blue) == "slave" or is_paused(blue), "the hold is not on"  # a replica answers READONLY, paused or not
        if how == "controller":
            kill_tree(process.pid)
        else:
            os.kill(module_pid(process.pid), getattr(signal, how))
        return process, time.monotonic()
    except BaseException:
        if process.poll() is None:  # a run that ended was reaped above: its group is gone
            kill_tree(process.pid)
        raise


# What a run stopped after each step has done, newest last (its undo runs them backwards).
DONE_AFTER = {
    "hold_writes": ["hold_writes"],
    "wait_for_catch_up": ["hold_writes"],
    "repoint_haproxy": ["hold_writes", "repoint_haproxy"],
    "confirm_haproxy": ["hold_writes", "repoint_haproxy"],
    "promote": ["hold_writes", "repoint_haproxy", "promote"],
}
# From the demotion on, clients write to green: undoing would discard those writes, green stays.
KEPT_AFTER = ["demote_source", "retire_source", "release_writes"]


# SIGTERM and SIGHUP reach one handler in the module (common/signals.py): SIGTERM lands after every
# step, SIGHUP after the last step undone and the first kept.
@pytest.mark.parametrize(
    ("step", "how"), [*((step, "SIGTERM") for step in [*DONE_AFTER, *KEPT_AFTER]), ("promote", "SIGHUP"), ("demote_source", "SIGHUP")]
)
def test_signal_inside_the_hold_is_undone(behind_haproxy, tmp_path, step, how):
    """SIGTERM / SIGHUP after each step, a writer going through HAProxy. Up to the promotion
    everything is undone and the hold released - blue the primary, green its replica, HAProxy
    sending clients to blue, nothing drained. From the demotion on green keeps the writes it took
    and stays the primary. Either way no client error, and no acknowledged write is lost."""
    blue, green, port, socket_path = behind_haproxy
    with RedisWriter(port, PASSWORD) as writer:
        process, signalled = interrupted_cutover(behind_haproxy, tmp_path, step, how)
        result = cutover_result(process)
        ended = time.monotonic() - signalled
    assert result.get("failed") and f"received {how}" in result["msg"], result
    assert result["failed_step"] == step, result["msg"]
    assert ended < INTERRUPTED_HOLD / 3, ended  # the signal cut the failpoint's sleep short
    primary = blue if step in DONE_AFTER else green
    if step in DONE_AFTER:
        assert not result["target_kept_as_primary"] and result["undone"] == DONE_AFTER[step][::-1], result["msg"]
        assert role(blue) == "master" and not is_paused(blue)
        wait_replicating(green)
        assert client(green, PASSWORD).info("replication")["master_port"] == blue
        wait_for("HAProxy to send clients to blue alone", lambda: haproxy_up(socket_path) == {"blue"}, 5, interval=0.05)
        assert haproxy_drained(socket_path) == set()
    else:
        assert result["target_kept_as_primary"] and result["undone"] == [], result["msg"]
        assert role(green) == "master" and client(blue, PASSWORD).info("replication")["master_port"] == green
        wait_for("HAProxy to send clients to green alone", lambda: haproxy_up(socket_path) == {"green"}, 5, interval=0.05)
    assert client(port, PASSWORD).info("server")["tcp_port"] == primary
    assert writer.errors == [], writer.errors[:5]
    assert_acked_on(primary, writer, "the primary")


@pytest.mark.parametrize("killed", ["SIGKILL", "controller"])
@pytest.mark.parametrize("step", ["confirm_haproxy", "demote_source"])
def test_sigkill_inside_the_hold_expires_and_the_next_run_repairs(behind_haproxy, tmp_path, step, killed):
    """SIGKILL to the module, or to the whole controller (ansible-playbook and everything it
    started): nothing is undone, the CLIENT PAUSE ends by itself (within pause_ms writes flow again).

    - killed after confirm_haproxy (before the promotion): blue is still the primary and takes its
      held writes when the pause ends; HAProxy has blue drained (its sessions stay) and green, a
      replica, forced up until its checks take it down. The next run finds blue the primary and
      green its replica, and runs the whole cutover; it ends with HAProxy sending clients to green
      and nothing drained.
    - killed after demote_source: green is the primary, blue its replica (its clients were closed
      and reconnected through HAProxy to green at once); HAProxy still has blue drained. The next
      run finds the switch made and HAProxy left drained (`repaired`), and settles it: green up, blue
      down and ready. The run after changes nothing."""
    blue, green, port, socket_path = behind_haproxy
    with RedisWriter(port, PASSWORD) as writer:
        process, killed_at = interrupted_cutover(behind_haproxy, tmp_path, step, killed)
        process.communicate(timeout=60)
        acked = len(writer.acked)
        wait_for("writes to flow again", lambda: len(writer.acked) > acked + 10, SIGNAL_PAUSE_MS / 1000, interval=0.01)
        flowing_after = time.monotonic() - killed_at
    assert flowing_after < SIGNAL_PAUSE_MS / 1000, flowing_after
    if role(blue) == "master":
        assert not is_paused(blue)
    assert "blue" in haproxy_drained(socket_path)  # what the killed run left
    if step == "confirm_haproxy":
        assert role(blue) == "master" and role(green) == "slave"
    else:
        assert role(green) == "master" and client(blue, PASSWORD).info("replication")["master_port"] == green
    _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path))
    assert not result["failed"] and result["changed"], result.get("msg")
    if step == "confirm_haproxy":
        assert result["switched"] and "repaired" not in result
    else:
        assert not result["switched"] and result["repaired"] == [f"{socket_path} redis_write"], result
        assert "set server redis_write/blue state ready (on " + str(socket_path) + ")" in result["commands"]
    assert role(green) == "master" and haproxy_up(socket_path) == {"green"} and haproxy_drained(socket_path) == set()
    assert client(port, PASSWORD).info("server")["tcp_port"] == green
    _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path))
    assert not result["failed"] and not result["changed"], result
    assert_acked_on(green, writer, "green")


def test_ansible_playbook_killed_alone_the_module_ends_the_run(behind_haproxy, tmp_path):
    """SIGKILL to ansible-playbook's process group only (its terminal closed): Ansible's workers run
    modules in sessions of their own (os.setsid), so the module is not in that group. It ends the
    run within its bounds, never half-way: it completes (green the primary, HAProxy on green alone)
    or, a bound passed (a slow machine), undoes it (blue the primary, HAProxy on blue alone) -
    nothing drained either way, no acknowledged write lost; the next run leaves green the primary."""
    blue, green, port, socket_path = behind_haproxy
    with RedisWriter(port, PASSWORD) as writer:
        process = start_held_module(
            SWITCHOVER, one_run_args(blue, green, socket_path, pause_ms=SIGNAL_PAUSE_MS), f"confirm_haproxy:{SIGNAL_HOLD}", tmp_path
        )
        wait_for("the cutover to reach confirm_haproxy", lambda: "blue" in haproxy_drained(socket_path), 60, interval=0.01)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        seen = {}

        def ended() -> bool:
            with contextlib.suppress(redis.ConnectionError):  # the demotion closes blue's clients, a probe too
                return settled()
            return False

        def settled() -> bool:
            seen.update(green=role(green), blue=role(blue), drained=haproxy_drained(socket_path), up=haproxy_up(socket_path))
            completed = seen["green"] == "master" and seen["blue"] == "slave" and seen["up"] == {"green"}
            undone = seen["blue"] == "master" and seen["green"] == "slave" and seen["up"] == {"blue"} and not is_paused(blue)
            return (completed or undone) and seen["drained"] == set()

        try:
            wait_for("the module to end the run on its own", ended, SIGNAL_HOLD + 30, interval=0.05)
        except AssertionError:
            ps = subprocess.run(["ps", "-eo", "pid,ppid,sid,etime,args"], capture_output=True, text=True, check=False).stdout
            survivors = [line for line in ps.splitlines() if "ansible" in line or "python" in line]
            raise AssertionError(f"{seen}\n" + "\n".join(survivors)) from None
        primary = green if seen["green"] == "master" else blue
        print(f"the run ended with {'green' if primary == green else 'blue'} the primary")
        acked = len(writer.acked)
        wait_for("writes to flow through HAProxy", lambda: len(writer.acked) > acked + 10, 5, interval=0.01)
        assert client(port, PASSWORD).info("server")["tcp_port"] == primary
        # after an undo green may still be re-syncing with blue (seen over 2.5 s on a loaded machine):
        # the run waits up to its timeout for the link, so give it 9.5 s (the pause must outlast it)
        _run, result = run_module(SWITCHOVER, one_run_args(blue, green, socket_path, timeout=9.5, pause_ms=10000))
        assert not result["failed"] and result["changed"] == (primary == blue), result
    assert role(green) == "master" and haproxy_up(socket_path) == {"green"} and haproxy_drained(socket_path) == set()
    assert_acked_on(green, writer, "green")


# Redis Sentinel: its own failover, and redis_switchover refusing to fight it ------------------

SENTINEL_NAME = "zdm-sentinel-test"


@contextmanager
def throwaway_sentinel(primary: int, quorum: int = 2, password: str = PASSWORD):
    """A Redis Sentinel of the test's own (`redis-server <conf> --sentinel`, no redis-sentinel
    package needed) monitoring 127.0.0.1:primary; yields its port. Its config file is its own to rewrite."""
    workdir = Path(tempfile.mkdtemp(prefix="zdm-sentinel-"))
    port = free_port()
    config = workdir / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir / 'sentinel.log'}\n"
        f"sentinel monitor {SENTINEL_NAME} 127.0.0.1 {primary} {quorum}\n"
        f'sentinel auth-pass {SENTINEL_NAME} "{password}"\n'
        f"sentinel down-after-milliseconds {SENTINEL_NAME} 1000\n"
        f"sentinel failover-timeout {SENTINEL_NAME} 10000\n"
    )
    config.chmod(0o600)
    with serving(["redis-server", str(config), "--sentinel"], workdir, port, None, workdir / "sentinel.log"):
        yield port


@pytest.fixture()
def watched_pair():
    """A throwaway blue, green replicating it, and three Sentinels monitoring blue with quorum 2,
    each of which knows the other two and green; yields (blue, green, [sentinel ports])."""
    with throwaway_redis() as blue, throwaway_redis(replicaof=blue) as green, contextlib.ExitStack() as stack:
        wait_replicating(green)
        sentinels = [stack.enter_context(throwaway_sentinel(blue)) for _number in range(3)]

        def settled() -> bool:
            views = [client(port, None).sentinel_master(SENTINEL_NAME) for port in sentinels]
            return all(view["num-other-sentinels"] == 2 and view["num-slaves"] == 1 for view in views)

        wait_for("three sentinels that know each other and green", settled, 30, interval=0.2)
        yield blue, green, sentinels


class WaitWriter:
    """Writes distinct keys through Sentinel (redis-py's Sentinel.master_for: a new connection asks
    the Sentinels for the primary, READONLY or a lost connection drops it), each SET followed by
    `WAIT 1 500`. A write counts as acknowledged only when WAIT answered >= 1 replica."""

    def __init__(self, sentinels: list[int]):
        self.sentinel = Sentinel([("127.0.0.1", port) for port in sentinels], socket_timeout=2)
        self.acked: list[str] = []
        self.unacked: list[str] = []  # written, but WAIT saw no replica: may be lost, the writer knew it
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self):
        primary = self.sentinel.master_for(SENTINEL_NAME, password=PASSWORD, socket_timeout=2, decode_responses=True)
        number = 0
        while not self.stop.is_set():
            number += 1
            key = f"sentinel-wait:{number}"
            try:
                primary.set(key, number)
                replicas = primary.execute_command("WAIT", 1, 500)
            except redis.RedisError as exc:
                self.errors.append(repr(exc)[:80])
                time.sleep(0.02)
                continue
            (self.acked if int(replicas) >= 1 else self.unacked).append(key)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


@pytest.mark.parametrize("how", ["sentinel-failover", "primary-killed"])
def test_sentinel_failover_loses_no_write_acknowledged_with_wait(watched_pair, how):
    """Three Sentinels (quorum 2) fail over from blue to green while a writer writes through them.
    Every write WAIT 1 acknowledged is on green afterwards. (With one replica: the promoted green
    is the replica WAIT counted; with several, WAIT 1 may count one that is not promoted.)"""
    blue, green, sentinels = watched_pair
    ask = Sentinel([("127.0.0.1", port) for port in sentinels], socket_timeout=2)
    assert ask.discover_master(SENTINEL_NAME) == ("127.0.0.1", blue)
    with WaitWriter(sentinels) as writer:
        wait_for("acknowledged writes on blue", lambda: len(writer.acked) > 50, 10, interval=0.01)
        acked_on_blue = len(writer.acked)
        if how == "sentinel-failover":
            assert client(sentinels[0], None).execute_command("SENTINEL", "FAILOVER", SENTINEL_NAME)
        else:  # a crash: the Sentinels agree it is down (quorum 2) and elect a leader that fails over
            os.kill(int(client(blue, PASSWORD).info("server")["process_id"]), signal.SIGKILL)

        def green_named() -> bool:
            try:
                return ask.discover_master(SENTINEL_NAME) == ("127.0.0.1", green)
            except MasterNotFoundError:  # blue is down and no replica promoted yet
                return False

        wait_for("Sentinel to name green the primary", green_named, 30, interval=0.05)
        # the writer follows; after a crash green has no replica left: WAIT answers 0 after its 500 ms
        moved = len(writer.acked) + len(writer.unacked)
        wait_for("writes on green", lambda: len(writer.acked) + len(writer.unacked) > moved + 5, 20, interval=0.01)
    assert role(green) == "master"
    if how == "sentinel-failover":
        wait_for("blue to follow green", lambda: client(blue, PASSWORD).info("replication").get("master_port") == green, 20, interval=0.05)
    on_green = client(green, PASSWORD)
    missing = [key for key, value in zip(writer.acked, on_green.mget(writer.acked), strict=True) if value is None]
    assert acked_on_blue > 50 and missing == [], f"{len(missing)} of {len(writer.acked)} acknowledged writes not on green: {missing[:5]}"


def replication_view(port: int) -> tuple:
    info = client(port, PASSWORD).info("replication")
    return info["role"], info.get("master_port"), info.get("master_link_status")


def test_switchover_refuses_a_pair_sentinel_watches(watched_pair):
    """redis_switchover refuses (check mode too) while Sentinels watch the pair, naming them and the
    fix, and changes nothing; once the monitor is removed from every Sentinel it switches."""
    blue, green, sentinels = watched_pair
    before = (replication_view(blue), replication_view(green))
    addresses = [f"127.0.0.1:{port}" for port in sentinels]
    for state, check in (("promoted", True), ("promoted", False), ("switched", True), ("switched", False), ("replica", False)):
        run, result = run_module(SWITCHOVER, dict(sides(blue, green), state=state, timeout=1, require_source_paused=False), check=check)
        assert result["failed"], (state, check, result)
        message = result["msg"]
        assert "3 Redis Sentinel(s) watch" in message and "Nothing was changed" in message, message
        assert all(address in message for address in addresses), message
        assert f"SENTINEL FAILOVER {SENTINEL_NAME}" in message and f"SENTINEL REMOVE {SENTINEL_NAME}" in message, message
        assert sorted(result["sentinels"]) == sorted(addresses) and result["sentinel_masters"] == [SENTINEL_NAME]
        assert PASSWORD not in run.stdout
        assert (replication_view(blue), replication_view(green)) == before and not is_paused(blue)
    assert Sentinel([("127.0.0.1", sentinels[0])]).discover_master(SENTINEL_NAME) == ("127.0.0.1", blue)

    for port in sentinels:
        assert client(port, None).execute_command("SENTINEL", "REMOVE", SENTINEL_NAME)

    def sentinel_clients() -> list[str]:
        rows = [row for port in (blue, green) for row in client(port, PASSWORD).client_list()]
        return [row["name"] for row in rows if row["name"].startswith("sentinel-")]

    wait_for("the Sentinels to disconnect", lambda: not sentinel_clients(), 10, interval=0.05)
    run, result = run_module(SWITCHOVER, dict(sides(blue, green), state="promoted", require_source_paused=False))
    assert not result["failed"] and result["changed"], result.get("msg")
    assert role(green) == "master" and client(blue, PASSWORD).info("replication")["master_port"] == green
