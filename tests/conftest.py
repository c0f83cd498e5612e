"""Session-wide test settings."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.lab import ROOT


@pytest.fixture(scope="session")
def root():
    return ROOT


def pytest_configure(config):
    os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
    # ansible-runner finds ansible-playbook on PATH: use the one installed beside this Python.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
