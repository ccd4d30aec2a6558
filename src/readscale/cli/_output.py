"""Shared console helpers: one way to print errors, JSON and progress."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from readscale.errors import ConfigurationError, ReadscaleError

#: Exit codes: 1 when something failed at run time (a server, a fault), 2 when the
#: command line or the configuration is wrong (as click does for a bad option).
EXIT_FAILURE = 1
EXIT_USAGE = 2

console = Console()
err_console = Console(stderr=True, log_path=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    # The message may quote user input (a DSN, a file's text): never read it as markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def usage_error(message: str) -> NoReturn:
    """A bad argument, option or setting: one line on stderr and exit code 2."""
    fail(message, EXIT_USAGE)


@contextmanager
def errors_to_exit() -> Iterator[None]:
    """Turn readscale's errors into one clear line and a non-zero exit, never a traceback:
    2 for a configuration error (a bad argument, setting or file), 1 for the rest."""
    try:
        yield
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    except ReadscaleError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP behave like Ctrl-C, so cleanup runs whatever stopped us."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def progress_line(enabled: bool, title: str) -> Iterator[Callable[[str], None]]:
    """A live status line on stderr (quiet when ``enabled`` is false, e.g. with --json)."""
    if not enabled:
        yield lambda message: None
        return
    with err_console.status(title) as status:

        def update(message: str) -> None:
            status.update(f"{title}: {message}")
            err_console.log(message, highlight=False)

        yield update
