"""Every event the library logs carries ``extra={"event": ..., fields}``, and the events
an operator may see are exactly those docs/observability.md lists (and vice versa)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "readscale"
PAGE = ROOT / "docs" / "observability.md"
# Tools, not the library: their output is for a terminal (and _sync is generated from _async).
NOT_LIBRARY = {"demo", "cli", "bench", "stack", "testing", "report", "_sync"}
LEVELS = {"info", "warning", "error", "critical", "exception", "log"}


def logged_events() -> tuple[dict[str, list[str]], list[str]]:
    """(event -> where it is logged, calls without an event)."""
    events: dict[str, list[str]] = {}
    bare: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in NOT_LIBRARY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("log", "logger")
            ):
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            event = None
            for kw in node.keywords:
                if kw.arg == "extra" and isinstance(kw.value, ast.Dict):
                    for key, value in zip(kw.value.keys, kw.value.values, strict=True):
                        if isinstance(key, ast.Constant) and key.value == "event" and isinstance(value, ast.Constant):
                            event = str(value.value)
                    fields = {k.value for k in kw.value.keys if isinstance(k, ast.Constant)}
                    if event is not None and len(fields) < 2 and event not in _NO_FIELDS:
                        bare.append(f"{where}: {event} carries no field besides its name")
            if event is None:
                bare.append(where)
            else:
                events.setdefault(event, []).append(where)
    return events, bare


# Events whose whole meaning is their name (nothing varies between two of them).
_NO_FIELDS: set[str] = set()


def documented_events() -> set[str]:
    text = PAGE.read_text()
    section = text[text.index("## Logged events") :]
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE))


def test_every_log_call_names_its_event_and_carries_fields() -> None:
    _, bare = logged_events()
    assert not bare, "log calls without extra={'event': ..., fields}:\n" + "\n".join(bare)


def test_the_operators_page_lists_exactly_the_logged_events() -> None:
    events, _ = logged_events()
    documented = documented_events()
    assert sorted(set(events) - documented) == [], "logged but not on docs/observability.md"
    assert sorted(documented - set(events)) == [], "on docs/observability.md but never logged"
