"""``readscale --version`` and ``python -m readscale``: what a bug report asks for first,
and the command line where the script is not on PATH."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_the_package_s_everywhere() -> None:
    import readscale

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert readscale.__version__ == declared == version("readscale")
    for flag in ("--version", "-V"):
        assert cli(flag).stdout == f"readscale {declared} (pure)\n"  # and which build: tests run the sources


def test_python_dash_m_readscale_is_the_command_line() -> None:
    done = subprocess.run([sys.executable, "-m", "readscale", "--version"], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    assert done.stdout.startswith("readscale ")
    helped = subprocess.run([sys.executable, "-m", "readscale", "--help"], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    assert "--version" in helped.stdout and "stack" in helped.stdout
    bad = subprocess.run([sys.executable, "-m", "readscale", "nosuch"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_the_license_file_is_the_one_pyproject_names() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
