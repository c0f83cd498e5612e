"""inventories/example mirrors inventories/lab (issue 14): the same groups, the same variable names
per group and per kind of host, the same number of hosts per service. Values differ (addresses,
credentials, sizes); what differs in kind is listed below, each with its reason.

Both inventories are read with `ansible-inventory --list --export` (no service, no vault: the
example names vault_* variables without resolving them)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Groups of the lab alone.
LAB_ONLY_GROUPS = {
    "lab_ssh_servers": "sshd on the lab's loopback addresses (roles/lab_ssh); production hosts run their own sshd",
    "lab_over_ssh": "the lab's SSH settings; production sets ansible_user in hosts.yml all.vars",
    "sample_app_servers": "the lab's stand-in application; production's application is deployed on its own",
}

# Group variables of the lab alone.
LAB_ONLY_VARS = {
    "lab_password": "the lab's one clear-text password; production uses vault_* variables",
    "lab_ssh_dir": "the lab's SSH key pair and known_hosts",
    "lab_ca_certificate": "the lab CA's certificate; production names its internal CA's file directly",
    "sample_data_owner": "owner of the sample data loaded into the lab's blue",
    "sample_data_owner_password": "owner of the sample data loaded into the lab's blue",
    "postgresql_host_memory_mb": "three PostgreSQL hosts share the lab machine; production's take the host's memory",
    "postgresql_socket_dir_per_instance": "instances sharing one machine and port need their own socket directories",
    "postgresql_ssl_per_instance": "instances sharing one machine need a certificate file each",
    "postgresql_ssl_extra_names": "names of the certificates the lab CA issues; production's carry them already",
    "redis_tls_subject_alt_names": "names of the certificates the lab CA issues; production's carry them already",
    "pgbouncer_tls_subject_alt_names": "names of the certificates the lab CA issues; production's carry them already",
    "rabbitmq_epmd_addresses": "three RabbitMQ hosts share the lab machine's one epmd; a production host's serves its own node",
    "sqlite_app_db_sslmode": "the lab's application cannot verify the lab CA; production verifies (verify-full)",
}

# Group variables of production alone.
PRODUCTION_ONLY_VARS = {
    "rabbitmq_tls_ca_dir": "the lab uses the role's default, the lab CA; production names its internal CA",
    "mariadb_innodb_buffer_pool_size": "a size the lab leaves at the role's default",
}

# Host variables of the lab alone: services sharing the lab machine told apart by instance and port.
LAB_ONLY_HOST_VARS = {
    "pgbouncer_instance": "two PgBouncer hosts on the lab machine: files, init script and unix socket of their own",
    "rabbitmq_instance": "three RabbitMQ hosts on the lab machine: files of their own and alive parts apart in the one epmd",
    "rabbitmq_dist_port": "three RabbitMQ hosts on the lab machine: RabbitMQ checks its distribution port on every address",
}

# Service groups whose number of hosts differs (a size, not a kind).
HOST_COUNT_DIFFERS = {
    "haproxy_servers": "production runs two load balancers behind one address, the lab one",
}


def connection_variable(name):
    """ansible_* say how Ansible reaches a host: local or SSH to loopback in the lab, DNS names there."""
    return name.startswith("ansible_")


def load(name):
    executable = Path(sys.executable).with_name("ansible-inventory")
    command = str(executable) if executable.exists() else shutil.which("ansible-inventory")
    if command is None:
        pytest.skip("ansible-inventory not installed")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    result = subprocess.run(
        [command, "-i", str(ROOT / "inventories" / name), "--list", "--export"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def lab():
    return load("lab")


@pytest.fixture(scope="module")
def example():
    return load("example")


def groups(inventory):
    return {name for name in inventory if name not in ("_meta", "ungrouped")}


def hosts_of(inventory, group):
    """Every host of group and its children."""
    entry = inventory.get(group, {})
    found = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        found |= hosts_of(inventory, child)
    return found


def group_variables(inventory, group):
    names = set(inventory.get(group, {}).get("vars", {}))
    return {name for name in names if not connection_variable(name)}


def host_variables(inventory, group):
    hostvars = inventory.get("_meta", {}).get("hostvars", {})
    names = set()
    for host in hosts_of(inventory, group):
        names |= set(hostvars.get(host, {}))
    return {name for name in names if not connection_variable(name)}


def compared_groups(lab, example):
    return sorted(groups(lab) - set(LAB_ONLY_GROUPS) - {"all"})


def test_lab_only_entries_are_in_the_lab(lab, example):
    # A stale entry would hide a difference: each exception names something that exists.
    lab_vars = set()
    example_vars = set()
    for group in groups(lab):
        lab_vars |= group_variables(lab, group)
    for group in groups(example):
        example_vars |= group_variables(example, group)
    assert set(LAB_ONLY_GROUPS) <= groups(lab)
    assert set(LAB_ONLY_VARS) <= lab_vars - example_vars
    assert set(PRODUCTION_ONLY_VARS) <= example_vars - lab_vars
    lab_host_vars = set().union(*(host_variables(lab, group) for group in groups(lab)))
    assert set(LAB_ONLY_HOST_VARS) <= lab_host_vars


def test_same_groups(lab, example):
    assert groups(example) == groups(lab) - set(LAB_ONLY_GROUPS)


def test_same_group_variables(lab, example):
    differences = {}
    for group in ["all", *compared_groups(lab, example)]:
        lab_names = group_variables(lab, group) - set(LAB_ONLY_VARS)
        example_names = group_variables(example, group) - set(PRODUCTION_ONLY_VARS)
        if example_names != lab_names:
            differences[group] = {"lab": sorted(lab_names - example_names), "example": sorted(example_names - lab_names)}
    assert differences == {}


def test_same_host_variables_per_group(lab, example):
    differences = {}
    for group in compared_groups(lab, example):
        lab_names = host_variables(lab, group) - set(LAB_ONLY_HOST_VARS)
        example_names = host_variables(example, group)
        if example_names != lab_names:
            differences[group] = {"lab": sorted(lab_names - example_names), "example": sorted(example_names - lab_names)}
    assert differences == {}


def test_every_postgresql_host_names_its_instance_or_replica(lab, example):
    for inventory in (lab, example):
        hostvars = inventory["_meta"]["hostvars"]
        for host in hosts_of(inventory, "postgresql_servers"):
            assert {"postgresql_instances", "postgresql_replicas"} & set(hostvars.get(host, {})), host


def test_same_host_count_per_service(lab, example):
    counts = {
        group: (len(hosts_of(lab, group)), len(hosts_of(example, group)))
        for group in compared_groups(lab, example)
        if group not in HOST_COUNT_DIFFERS
    }
    assert {group: count for group, count in counts.items() if count[0] != count[1]} == {}


def test_example_secrets_come_from_the_vault():
    # Every vault_* the example uses is in the list all.yml's comment gives the operator, and no
    # password is written out.
    example = ROOT / "inventories" / "example"
    text = "".join(path.read_text() for path in sorted(example.rglob("*.yml")))
    comments = "\n".join(line for line in (example / "group_vars" / "all.yml").read_text().splitlines() if line.startswith("#"))
    used = set(re.findall(r"\bvault_\w+", text))
    assert used
    assert used - set(re.findall(r"\bvault_\w+", comments)) == set()
    assert "lab_password" not in text
