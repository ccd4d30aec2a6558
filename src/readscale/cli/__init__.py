"""The ``readscale`` command line (Typer + Rich). Nothing in the library imports it."""

from __future__ import annotations

import sys


def main() -> None:
    # Answered before Typer is imported: the version of an install without the cli extra
    # is exactly what a bug report needs.
    if sys.argv[1:] in (["--version"], ["-V"]):
        from readscale import __version__, build_info

        sys.stdout.write(f"readscale {__version__} ({build_info()})\n")
        return
    try:
        from readscale.cli._app import app
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        missing = exc.name or "typer"
        sys.stderr.write(f"readscale's command line needs {missing}; install it with: pip install 'readscale[cli]'\n")
        raise SystemExit(2) from exc
    app()


__all__ = ["main"]
