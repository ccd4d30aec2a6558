from __future__ import annotations

import typer

from readscale.cli import bench, cdc, consistency, demo, sim, stack, writebehind

app = typer.Typer(
    name="readscale",
    help="readscale: the whole layered read path for Python services.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from readscale import __version__, build_info

        typer.echo(f"readscale {__version__} ({build_info()})")
        raise typer.Exit


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", "-V", help="Print readscale's version and exit.", is_eager=True, callback=_version
    ),
) -> None:
    """readscale: the whole layered read path for Python services."""


app.add_typer(stack.app, name="stack")
app.add_typer(cdc.app, name="cdc")
app.add_typer(consistency.app, name="consistency")
app.add_typer(writebehind.app, name="writebehind")
app.command("bench")(bench.bench)
app.command("demo")(demo.demo)
app.command("sim")(sim.sim)
