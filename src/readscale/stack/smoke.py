"""A short smoke test of a running stack: the README's first command ends with it.

It writes a row on the primary, takes the primary's WAL position after the commit, and
reads the row back from every replica once that replica has replayed the position: the
same read-your-writes rule the replica router applies, shown end to end.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from readscale.errors import StackError
from readscale.stack._stack import Stack


def run_smoke(stack: Stack, *, timeout: float = 10.0) -> dict[str, Any]:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on extras
        raise StackError("the smoke test needs psycopg: pip install 'readscale[postgres]'") from exc

    steps: list[dict[str, Any]] = []

    def step(name: str, node: str, result: object, began: float) -> None:
        steps.append(
            {
                "step": name,
                "node": node,
                "result": result,
                "ms": (time.perf_counter() - began) * 1000,
            }
        )

    marker = uuid.uuid4().hex
    began = time.perf_counter()
    with psycopg.connect(stack.primary.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS readscale_smoke (id text PRIMARY KEY, at timestamptz DEFAULT now())")
        cur = psycopg.ClientCursor(conn)
        cur.execute(
            "BEGIN; INSERT INTO readscale_smoke (id) VALUES (%s); COMMIT; SELECT pg_current_wal_lsn()::text",
            (marker,),
        )
        while cur.nextset():
            pass
        row = cur.fetchone()
        assert row is not None
        lsn = str(row[0])
    step("insert + commit, WAL position", "primary", lsn, began)

    for replica in stack.replicas:
        began = time.perf_counter()
        with psycopg.connect(replica.dsn, autocommit=True) as conn:
            deadline = time.monotonic() + timeout
            while True:
                caught_up = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
                if caught_up and caught_up[0]:
                    break
                if time.monotonic() > deadline:
                    raise StackError(f"replica {replica.name} did not replay {lsn} within {timeout:.0f}s")
                time.sleep(0.005)
            found = conn.execute("SELECT count(*) FROM readscale_smoke WHERE id = %s", (marker,)).fetchone()
        count = found[0] if found else 0
        if count != 1:
            raise StackError(f"replica {replica.name} replayed {lsn} but does not show the row")
        step("read the row back", replica.name, "found", began)

    if "redis" in stack.nodes:
        began = time.perf_counter()
        node = stack.redis
        node.cli("SET", f"readscale:smoke:{marker}", "1", "EX", "60")
        value = node.cli("GET", f"readscale:smoke:{marker}").strip()
        if value != "1":
            raise StackError(f"Redis returned {value!r} for a key just set")
        step("SET + GET", "redis", "ok", began)
    return {"marker": marker, "lsn": lsn, "steps": steps}
