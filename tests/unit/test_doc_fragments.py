"""The doc fragments compose each option set once (plugins/plugin_utils/doc_text.py) when Ansible
imports them; the composed YAML must parse, pass ansible-test's yamllint rules (its sanity test
reads only a fragment's plain string assignments) and nest each option set correctly (what
ansible-doc and validate-modules read)."""

from __future__ import annotations

import importlib
from pathlib import Path

import ansible_test
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from ansible_collections.zerodowntime.migration.plugins.plugin_utils import doc_text

ROOT = Path(__file__).resolve().parents[2]
FRAGMENTS = sorted(path.stem for path in (ROOT / "plugins" / "doc_fragments").glob("*.py") if path.stem != "__init__")
# The rules ansible-test's yamllint sanity test applies to a plugin's documentation.
PLUGIN_RULES = Path(ansible_test.__file__).parent / "_util" / "controller" / "sanity" / "yamllint" / "config" / "plugins.yml"


def fragment(name: str):
    return importlib.import_module(f"ansible_collections.zerodowntime.migration.plugins.doc_fragments.{name}").ModuleDocFragment


def texts():
    for name in FRAGMENTS:
        for key, value in vars(fragment(name)).items():
            if key.isupper():
                yield pytest.param(value, id=f"{name}.{key}")


@pytest.mark.parametrize("text", list(texts()))
def test_every_fragment_is_one_yaml_document_that_passes_ansible_tests_yamllint(text):
    assert isinstance(text, str)
    assert isinstance(yaml.safe_load(text)["options"], dict)
    problems = [
        f"{problem.line}: {problem.desc} ({problem.rule})"
        for problem in linter.run(text.lstrip("\n"), YamlLintConfig(file=str(PLUGIN_RULES)))
    ]
    assert problems == []


def test_a_pair_nests_the_same_options_under_source_and_target_and_points_references_there():
    flat = yaml.safe_load(fragment("postgres").DOCUMENTATION)["options"]
    pair = yaml.safe_load(fragment("postgres").PAIR)["options"]
    assert set(pair) == {"source", "target"}
    for side in ("source", "target"):
        nested = pair[side]["suboptions"]
        assert set(nested) == set(flat)
        assert nested["login_port"] == flat["login_port"]
        assert f"O({side}.login_host)" in nested["login_unix_socket"]["description"][0]
    assert "O(login_host)" in flat["login_unix_socket"]["description"][0]


def test_the_poolers_carry_the_console_and_the_pool_options():
    console = yaml.safe_load(fragment("pgbouncer").DOCUMENTATION)["options"]
    poolers = yaml.safe_load(fragment("pgbouncer").POOLERS)["options"]
    assert poolers["pgbouncers"]["type"] == "list" and poolers["pgbouncers"]["elements"] == "dict"
    for option in ("pgbouncers", "pgbouncer"):
        assert set(console) < set(poolers[option]["suboptions"])
        assert poolers[option]["suboptions"]["database"]["required"] is True
        assert f"O({option}.login_user)" in poolers[option]["suboptions"]["login_password"]["description"][0]


def test_nest_points_references_at_the_parent_option():
    options = """
login_host:
  description: Host; a socket in O(login_unix_socket) wins, see O(ssl_mode=verify-full).
  type: str
login_unix_socket:
  description: Socket directory.
  type: str
ssl_mode:
  description: sslmode.
  type: str
"""
    nested = yaml.safe_load(doc_text.nest(options, "source", indent=0))
    assert nested["login_host"]["description"] == "Host; a socket in O(source.login_unix_socket) wins, see O(source.ssl_mode=verify-full)."
    assert nested["ssl_mode"] == {"description": "sslmode.", "type": "str"}
