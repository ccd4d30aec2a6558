"""CPU time of process groups, read from /proc: how much of the machine each layer used.

A group is named by its root processes (the service's uvicorn master, a PostgreSQL
postmaster, varnishd's manager); its CPU time is the user + system time of every live
descendant plus the time of the children its members have already reaped (``cutime`` +
``cstime``: a PostgreSQL backend that exited counts in its postmaster's). Two snapshots
around a load step give the CPU seconds each group spent on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks of the process and its reaped children), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command may hold spaces and parentheses: fields start after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return ppid, utime + stime + cutime + cstime


def _table() -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                out[int(entry)] = stat
    return out


def cpu_seconds(groups: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """CPU seconds used so far by each group of process trees (name → root pids)."""
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, float] = {}
    for name, roots in groups.items():
        seen: set[int] = set()
        todo = [pid for pid in roots if pid in table]
        while todo:
            pid = todo.pop()
            if pid not in seen:
                seen.add(pid)
                todo.extend(children.get(pid, ()))
        out[name] = sum(table[pid][1] for pid in seen) / TICKS
    return out
