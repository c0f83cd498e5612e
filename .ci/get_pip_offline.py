"""Stands in for the get-pip.py that `ansible-test --venv` downloads from a host this
machine cannot reach: bootstraps pip from the interpreter's bundled wheel (ensurepip), then
lets pip install what ansible-test asked for, from the package index.

The Makefile copies it to ~/.ansible/test/cache/get_pip_<version>.py, where ansible-test
looks before downloading. Arguments are get-pip's: pip install options and requirements,
plus --no-setuptools / --no-wheel.
"""

import subprocess
import sys

arguments = sys.argv[1:]
wanted = [arg for arg in arguments if arg not in ("--no-setuptools", "--no-wheel")]
if "--no-setuptools" not in arguments:
    wanted.append("setuptools")
if "--no-wheel" not in arguments:
    wanted.append("wheel")

# In a child process: ensurepip sets PIP_CONFIG_FILE=/dev/null in its own environment, which
# would hide the machine's pip configuration (index, certificates) from the install below.
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *wanted]))
