"""The collection as users get it: built, installed, documented, and its filters usable from
a checkout both by FQCN and through filter_plugins/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.lab import ROOT, run_playbook

BIN = Path(sys.executable).parent
MODULES = sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py"))


def test_build_install_and_document_every_module(tmp_path):
    build = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", tmp_path, ROOT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert build.returncode == 0, build.stderr
    tarball = next(tmp_path.glob("zerodowntime-migration-*.tar.gz"))
    listing = subprocess.run(["tar", "-tzf", tarball], capture_output=True, text=True, check=True).stdout.split()
    assert "plugins/module_utils/postgres/client.py" in listing
    assert not [name for name in listing if name.startswith(("tests/", ".venv/", "bench/", ".ansible/"))]

    # Away from the checkout: its ansible.cfg would show ansible-galaxy the checkout as installed.
    installed = tmp_path / "collections"
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    env = {"ANSIBLE_COLLECTIONS_PATH": str(installed), "PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")}
    install = subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "--no-deps", "-p", installed, tarball],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    assert (installed / "ansible_collections" / "zerodowntime" / "migration" / "MANIFEST.json").is_file(), install.stdout
    assert MODULES, "no modules found"
    for module in MODULES:
        doc = subprocess.run(
            [BIN / "ansible-doc", f"zerodowntime.migration.{module}"], capture_output=True, text=True, env=env, cwd=tmp_path, check=False
        )
        assert doc.returncode == 0, doc.stderr
        assert str(installed) in doc.stdout  # documented from the installed copy, not the checkout
        assert "EXAMPLES" in doc.stdout and "RETURN VALUES" in doc.stdout

    # Every module run by ansible-playbook from the installed collection: packed with its module_utils,
    # imported on the host, its arguments checked against its spec (run_module runs them directly).
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [unknown_option_task(module) for module in MODULES]}]
    (tmp_path / "every_module.yml").write_text(json.dumps(play))
    inventory = f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    (tmp_path / "hosts").write_text(inventory)
    played = subprocess.run(
        [BIN / "ansible-playbook", "-i", "hosts", "every_module.yml"],
        capture_output=True,
        text=True,
        env=dict(env, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json"),
        cwd=tmp_path,
        check=False,
    )
    results = {task["task"]["name"]: task["hosts"]["localhost"] for task in json.loads(played.stdout)["plays"][0]["tasks"]}
    for module in MODULES:
        # the module's own argument check answered (a module missing a file or an import would not get there)
        unsupported = f"Unsupported parameters for (zerodowntime.migration.{module}) module: zdm_not_an_option."
        assert results[module]["msg"].startswith((unsupported, "missing required arguments: ")), results[module]


def unknown_option_task(module: str) -> dict:
    return {"name": module, f"zerodowntime.migration.{module}": {"zdm_not_an_option": 1}, "ignore_errors": True}


def test_filters_by_fqcn_and_from_the_checkout(lab):
    play = [
        {
            "name": "filters",
            "hosts": "lab-db",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "compute",
                    "ansible.builtin.set_fact": {
                        "by_fqcn": "{{ '1/0' | zerodowntime.migration.pg_lsn_diff('0/FFFFFF00') }}",
                        "short_name": "{{ '1/0' | pg_lsn_diff('0/FFFFFF00') }}",
                        "memory": "{{ 8192 | zerodowntime.migration.pg_memory_settings }}",
                    },
                }
            ],
        }
    ]
    run = run_playbook(play)
    assert run.status == "successful", run.stdout
    facts = run.task_results("compute")[0]["ansible_facts"]
    assert int(facts["by_fqcn"]) == int(facts["short_name"]) == 256
    assert facts["memory"]["shared_buffers"] == "2048MB"
