"""The doc fragments are rendered from hacking/doc_fragments/sources; they must be up to date and
nest each option set correctly (what ansible-doc and validate-modules read)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = load(ROOT / "hacking" / "doc_fragments" / "generate.py", "generate_doc_fragments")
doc_text = load(ROOT / "hacking" / "doc_fragments" / "doc_text.py", "doc_text")


def fragment(name: str):
    return load(ROOT / "plugins" / "doc_fragments" / f"{name}.py", f"fragment_{name}").ModuleDocFragment


def test_every_fragment_is_rendered_from_its_source():
    for name in generate.SOURCES:
        path = ROOT / "plugins" / "doc_fragments" / f"{name}.py"
        assert path.read_text() == generate.render(name), f"{path} is out of date: run make doc-fragments"


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


def test_alias_repeats_an_anchored_option_and_writes_out_one_that_names_another():
    options = """
login_host:
  description: Host.
  type: str
login_password:
  description: Password of O(login_user).
  type: str
login_user:
  description: Role.
  type: str
"""
    text = "parents:\n  source:\n" + doc_text.nest(options, "source", indent=4, anchor="x")
    text += "  target:\n" + doc_text.alias(options, "target", anchor="x", indent=4)
    assert "login_host: *x_login_host" in text and "*x_login_password" not in text
    parents = yaml.safe_load(text)["parents"]
    assert parents["target"]["login_host"] == parents["source"]["login_host"] == {"description": "Host.", "type": "str"}
    assert parents["target"]["login_password"]["description"] == "Password of O(target.login_user)."
    assert parents["source"]["login_password"]["description"] == "Password of O(source.login_user)."
