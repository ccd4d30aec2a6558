"""Fetch Django's own cache test suite (``tests/cache`` of Django's source distribution)
for the Django version installed, from the package index, and print the folder that
holds it (its ``cache/`` package). Django's code is never committed to readscale.

    python scripts/fetch_django_tests.py [--dest DIR]

The source distribution is downloaded once per version (``pip download --no-binary
:all: --no-deps django==X``) into ``<venv>/share/readscale-django-tests/<X>/`` and only
``tests/cache`` is extracted; later runs print the folder at once. Used by
tests/django/test_cache_suite.py.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

SUITE = "cache"


def fetch(dest_root: Path) -> Path:
    """The folder holding ``cache/`` (Django's ``tests/cache``) for the installed Django."""
    django_version = version("django")
    dest = dest_root / django_version
    if (dest / SUITE / "tests.py").exists():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", "-d", tmp]
        subprocess.run([*pip, f"django=={django_version}"], check=True)
        (sdist,) = Path(tmp).glob("*.tar.gz")
        staging = Path(tmp) / "out"
        with tarfile.open(sdist) as archive:
            wanted = f"/tests/{SUITE}/"
            members = [m for m in archive.getmembers() if m.isfile() and wanted in m.name and m.name.count("/") == 3]
            if not members:
                raise SystemExit(f"{sdist.name} has no tests/{SUITE}/")
            for member in members:
                member.name = f"{SUITE}/{Path(member.name).name}"
                archive.extract(member, staging, filter="data")
        dest.mkdir(parents=True, exist_ok=True)
        (staging / SUITE).replace(dest / SUITE)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=Path(sys.prefix) / "share" / "readscale-django-tests")
    args = parser.parse_args()
    print(fetch(args.dest))


if __name__ == "__main__":
    main()
