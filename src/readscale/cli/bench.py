"""``readscale bench <name>``: run one benchmark, print a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from readscale.bench.harness import BENCHES, load_bench
from readscale.cli._output import (
    console,
    errors_to_exit,
    fail,
    print_json,
    progress_line,
    terminate_as_interrupt,
    usage_error,
)


def bench(
    name: Annotated[str, typer.Argument(help=f"Which bench: {', '.join(sorted(BENCHES))}.")],
    rounds: Annotated[int, typer.Option(min=1, help="Repeated rounds; the median is reported.")] = 5,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Fewer, shorter rounds (a smoke run, not a measurement)."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table (progress stays on stderr).")
    ] = False,
    soak: Annotated[
        float | None,
        typer.Option(help="consistency only: run the consistency harness for this many seconds (many seeds)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="consistency only: the harness's (first) seed; alone, replays that run.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(help="consistency only: seconds of load per run (default: 10, or drawn per seed)")
    ] = None,
    sabotage: Annotated[
        list[str] | None,
        typer.Option(
            help="consistency only: switch a guarantee off to see the checker fail "
            "(guard, merge, staleness, tombstone, bus)."
        ),
    ] = None,
    bound: Annotated[
        float | None, typer.Option(help="consistency only: the invalidation bound B in seconds (default 1).")
    ] = None,
    recheck: Annotated[
        Path | None,
        typer.Option(
            help="consistency only: check again the history.json a failing run kept beside its logs "
            "(no servers; exits 1 if it still violates a guarantee)."
        ),
    ] = None,
) -> None:
    """Run a benchmark against real servers and report medians of repeated rounds.

    ``readscale bench consistency --soak SECONDS`` runs the consistency harness instead:
    randomized reads, writes and faults, every history checked; it prints operations
    checked and violations per property and exits 1 if any guarantee was violated.
    """
    harness = soak is not None or seed is not None or duration is not None or sabotage or bound is not None
    if recheck is not None:
        if name != "consistency" or harness:
            usage_error("--recheck applies to `bench consistency` alone (no --soak, --seed, --duration, ...)")
        _recheck_history(recheck, as_json)
        return
    if harness:
        if name != "consistency":
            usage_error("--soak, --seed, --duration, --sabotage and --bound apply to `bench consistency` only")
        _consistency_harness(soak, seed, duration, tuple(sabotage or ()), bound, as_json)
        return
    try:
        fn = load_bench(name)
    except KeyError as exc:
        fail(str(exc.args[0]))
    except ImportError as exc:
        fail(f"bench {name!r} needs {exc.name}; install the peers with: pip install 'readscale[bench]'")
    with (
        errors_to_exit(),
        terminate_as_interrupt(),
        progress_line(True, f"bench {name}") as progress,  # on stderr: --json keeps stdout clean
    ):
        report = fn(rounds=rounds, quick=quick, progress=progress)
    if as_json:
        print_json(report.to_json())
        return
    table = Table(title=f"readscale bench {name} ({report.machine.get('build', 'build unknown')})")
    for column in ("metric", "value", "unit", "note"):
        table.add_column(column)
    for metric in report.results:
        table.add_row(metric.name, f"{metric.value:.4g}", metric.unit, metric.note)
    console.print(table)
    machine = report.machine
    console.print(
        f"{machine['cpu']} x{machine['cores']}, Python {machine['python']}, load {machine['load_avg_1m']}, "
        f"readscale {machine['build']}"
    )


def _recheck_history(path: Path, as_json: bool) -> None:
    from readscale.bench.consistency.record import recheck

    if not path.is_file():
        fail(f"--recheck: no such file: {path} (a failing run keeps history.json beside its logs)")
    try:
        verdict = recheck(path)
    except (ValueError, KeyError, TypeError) as exc:
        fail(f"--recheck: {path} is not a history saved by the harness: {exc!r}")
    if as_json:
        print_json({"violations": [v.describe() for v in verdict.violations], "ok": verdict.ok})
    else:
        for name, count in verdict.counts.items():
            console.print(f"{name}: {count.checked} checked, {count.exercised} could fail, {count.violations} violated")
        for violation in verdict.violations:
            console.print(violation.describe(), highlight=False, markup=False)
    if not verdict.ok:
        raise typer.Exit(1)


def _consistency_harness(
    soak: float | None,
    seed: int | None,
    duration: float | None,
    sabotage: tuple[str, ...],
    bound: float | None,
    as_json: bool,
) -> None:
    from readscale import build_info
    from readscale.bench.consistency import soak as run_soak

    with (
        errors_to_exit(),
        terminate_as_interrupt(),
        progress_line(True, "bench consistency") as progress,
    ):
        out = run_soak(seconds=soak, seed=seed, duration=duration, sabotage=sabotage, bound=bound, progress=progress)
    if as_json:
        print_json({**{k: v for k, v in out.items() if k != "reports"}, "build": build_info()})
    else:
        table = Table(
            title=f"readscale bench consistency: {out['runs']} runs, {out['operations']:,} operations ({build_info()})"
        )
        for column in ("property", "reads checked", "could fail", "violations"):
            table.add_column(column, justify="left" if column == "property" else "right")
        for prop, count in out["properties"].items():
            table.add_row(prop, f"{count['checked']:,}", f"{count['exercised']:,}", str(count["violations"]))
        console.print(table)
        console.print(
            f"{out['reads']:,} reads and {out['writes']:,} writes checked ({out['failed']:,} failed operations "
            f"are not checked) in {out['seconds']:g}s, seeds {out['first_seed']}..{out['first_seed'] + out['runs'] - 1}"
        )
        for report in out["reports"]:
            console.print(report, highlight=False, markup=False)
    if out["violations"]:
        raise typer.Exit(1)
