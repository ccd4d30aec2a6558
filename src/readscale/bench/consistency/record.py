"""What a consistency run recorded: each operation as the client saw it, the run's
result (its report and JSON, with the history around each violation), and the history
as the checker's operations (``readscale._core.consistency.history``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from readscale._core.consistency.history import PROPERTIES, ReadOp, Verdict, WriteOp, check_history
from readscale.bench.consistency.scenario import CACHE_APIS, WB_API, Scenario, claims_for

__all__ = [
    "HISTORY_FILE",
    "Op",
    "RunResult",
    "check",
    "history_key",
    "history_of",
    "recheck",
    "replay_command",
    "save_history",
    "totals",
]

#: The history of a failing run, kept beside its logs so that it can be checked again
#: (:func:`recheck`) after the checker or its claims change: a finding is never left
#: explained by a replay that may not reproduce its timing.
HISTORY_FILE = "history.json"


@dataclass
class Op:
    """One operation as the client saw it."""

    id: int
    session: str
    kind: str  # read | write
    key: int
    api: str
    mode: str
    proc: int
    invoked: float
    completed: float | None = None
    ok: bool = False
    version: int | None = None
    loaded: bool = False
    nodes: tuple[str, ...] = ()
    pos: int | None = None
    invalidated: bool = False
    error: str | None = None
    #: The request carried the session's causal token (its cookie). A request without
    #: one is a new session as far as the service knows: what it sees is not carried on
    #: (the middlewares store a token after a write, or for a session that has one).
    token_sent: bool = False

    def describe(self, start: float) -> str:
        done = "?" if self.completed is None else f"{self.completed - start:.3f}"
        what = f"{self.kind} k={self.key} via {self.api}" + (f" [{self.mode}]" if self.mode != "session" else "")
        if not self.ok:
            result = f"failed: {(self.error or '')[:80]}"
        else:
            result = f"v{self.version}"
            if self.kind == "read":
                source = ",".join(self.nodes) or ("cache" if self.api in CACHE_APIS and not self.loaded else "?")
                result += f" from {source}"
                result += " (loaded)" if self.loaded else ""
            elif not self.invalidated:
                result += " (no app invalidation)"
        pos = "" if self.pos is None else f" pos={self.pos:X}"
        return f"  #{self.id} {self.session} p{self.proc} +{self.invoked - start:.3f}..{done} {what} -> {result}{pos}"


@dataclass
class RunResult:
    scenario: Scenario
    verdict: Verdict
    ops: list[Op]
    start: float
    cdc_applied: dict[tuple[int, int], float]
    faults_done: list[str]
    service_stats: list[dict[str, Any]]
    seconds: float
    logs: dict[str, str] = field(default_factory=dict)
    #: Where the services' and the coordinator's logs are kept (None once removed).
    workdir: Path | None = None

    @property
    def reads(self) -> int:
        return sum(1 for op in self.ops if op.kind == "read" and op.ok)

    @property
    def writes(self) -> int:
        return sum(1 for op in self.ops if op.kind == "write" and op.ok)

    @property
    def failed(self) -> int:
        return sum(1 for op in self.ops if not op.ok)

    def api_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            if op.ok:
                out[op.api] = out.get(op.api, 0) + 1
        return dict(sorted(out.items()))

    def excerpt(self, read_id: int, cause: int | None = None, *, before: float = 2.0, limit: int = 40) -> list[str]:
        """The operation that set the floor, the writes of the key since, and the violating
        read's session shortly before it."""
        by_id = {op.id: op for op in self.ops}
        read = by_id[read_id]
        end = read.completed or read.invoked
        origin = by_id.get(cause) if cause is not None else None
        since = min(read.invoked - before, origin.invoked if origin is not None else end)
        lines = []
        for op in sorted(self.ops, key=lambda o: o.invoked):
            if op.invoked > end:
                break
            mark = "   <== violation" if op.id == read_id else ("   <== floor set here" if op.id == cause else "")
            near = op.invoked >= read.invoked - before and op.session == read.session
            key_write = op.invoked >= since and op.kind == "write" and op.key == read.key
            if mark or near or key_write:
                lines.append(op.describe(self.start) + mark)
        return lines[-limit:]

    def report(self, *, violations: int = 5) -> str:
        s = self.scenario
        lines = [s.describe(), "faults: " + ("; ".join(self.faults_done) or "none")]
        lines.append(
            f"{len(self.ops)} operations ({self.reads} reads, {self.writes} writes, {self.failed} failed) "
            f"in {self.seconds:.1f}s; by API: {self.api_counts()}"
        )
        for name, count in self.verdict.counts.items():
            lines.append(
                f"  {name}: {count.checked} checked, {count.exercised} exercised, {count.violations} violations"
            )
        for v in self.verdict.violations[:violations]:
            lines.append(v.describe())
            if v.read is not None:
                lines += self.excerpt(v.read.id, v.cause)
        if self.verdict.violations:
            lines.append(f"replay: {replay_command(s)}")
        if self.workdir is not None:
            lines.append(f"logs and {HISTORY_FILE} (check again: bench consistency --recheck FILE): {self.workdir}")
        return "\n".join(lines)

    def to_json(self, *, violations: int = 20) -> dict[str, Any]:
        return {
            "seed": self.scenario.seed,
            "scenario": self.scenario.describe(),
            "faults": self.faults_done,
            "operations": len(self.ops),
            "reads": self.reads,
            "writes": self.writes,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "apis": self.api_counts(),
            "properties": self.verdict.summary(),
            "violations": [
                {
                    "property": v.property,
                    "detail": v.describe(),
                    "history": self.excerpt(v.read.id, v.cause) if v.read is not None else [],
                }
                for v in self.verdict.violations[:violations]
            ],
        }


def replay_command(scenario: Scenario) -> str:
    extra = "".join(f" --sabotage {name}" for name in scenario.sabotage)
    return f"readscale bench consistency --seed {scenario.seed} --duration {scenario.duration:g}{extra}"


# -- the history ---------------------------------------------------------------------------------


def history_key(op: Op) -> str:
    """The checker's name of an operation's key: write-behind keys are rows of their own."""
    return f"wb:{op.key}" if op.api in ("write_behind", WB_API) else str(op.key)


def history_of(
    ops: Sequence[Op], applied: dict[tuple[int, int], float], bound: float
) -> tuple[list[WriteOp], list[ReadOp]]:
    """The client's record as the checker's operations, with each read's claims."""
    writes: list[WriteOp] = []
    reads: list[ReadOp] = []
    for op in ops:
        key = history_key(op)
        if op.kind == "write":
            version = op.version if op.ok else None
            invalidated = op.completed if (op.ok and op.invalidated) else None
            if version is not None and (op.key, version) in applied:
                cdc = applied[(op.key, version)]
                invalidated = cdc if invalidated is None else min(invalidated, cdc)
            # A write-behind write only enqueues: the session's token does not move.
            writes.append(WriteOp(op.id, op.session, key, op.invoked, op.completed if op.ok else None,
                                  version, invalidated, moves_position=op.api != "write_behind"))  # fmt: skip
        elif op.ok and op.completed is not None and op.version is not None:
            claims, observes = claims_for(op.api, op.mode, op.loaded, bound)
            # What a request without the session's token saw is not carried to the next one.
            observes = observes and op.token_sent
            reads.append(ReadOp(op.id, op.session, key, op.invoked, op.completed, op.version, claims, observes,
                                op.api))  # fmt: skip
    # A write whose answer was lost but whose version the CDC worker saw: learn it.
    seen = {(w.key, w.version) for w in writes if w.version is not None}
    extra = {(str(k), v): t for (k, v), t in applied.items() if (str(k), v) not in seen}
    if extra:
        # Versions are per key; an unknown write of that key gets the CDC's version
        # only when exactly one unknown write could have made it.
        for i, w in enumerate(writes):
            if w.version is None:
                candidates = [(k, v) for (k, v) in extra if k == w.key]
                if len(candidates) == 1:
                    k, v = candidates[0]
                    writes[i] = replace(w, version=v, invalidated=extra.pop((k, v)))
    return writes, reads


def check(ops: Sequence[Op], applied: dict[tuple[int, int], float], scenario: Scenario) -> Verdict:
    writes, reads = history_of(ops, applied, scenario.bound)
    return check_history(writes, reads)


def save_history(result: RunResult, path: Path) -> None:
    """Write what every operation saw and wrote (and what the CDC worker applied) to ``path``."""
    data = {
        "seed": result.scenario.seed,
        "scenario": result.scenario.describe(),
        "bound": result.scenario.bound,
        "start": result.start,
        "ops": [dataclasses.asdict(op) for op in result.ops],
        "cdc_applied": [[key, version, at] for (key, version), at in result.cdc_applied.items()],
    }
    path.write_text(json.dumps(data))


def recheck(path: Path) -> Verdict:
    """Check a history saved by :func:`save_history` again, with today's checker."""
    data = json.loads(path.read_text())
    ops = [Op(**{**op, "nodes": tuple(op["nodes"])}) for op in data["ops"]]
    applied = {(int(key), int(version)): float(at) for key, version, at in data["cdc_applied"]}
    return check_history(*history_of(ops, applied, float(data["bound"])))


def totals(results: Sequence[RunResult]) -> dict[str, Any]:
    """Operations checked and violations per property over several runs."""
    per: dict[str, dict[str, int]] = {name: {"checked": 0, "exercised": 0, "violations": 0} for name in PROPERTIES}
    for result in results:
        for name, count in result.verdict.counts.items():
            per[name]["checked"] += count.checked
            per[name]["exercised"] += count.exercised
            per[name]["violations"] += count.violations
    return {
        "runs": len(results),
        "operations": sum(len(r.ops) for r in results),
        "reads": sum(r.reads for r in results),
        "writes": sum(r.writes for r in results),
        "failed": sum(r.failed for r in results),
        "violations": sum(len(r.verdict.violations) for r in results),
        "properties": per,
        "failing_seeds": [r.scenario.seed for r in results if not r.verdict.ok],
    }
