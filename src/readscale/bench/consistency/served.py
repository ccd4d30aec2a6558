"""What served a consistency service's request (the nodes the router read, whether this
request's loader ran), and the sabotages that switch one guarantee off on purpose."""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Any

__all__ = ["SERVED", "note_loaded", "note_node", "read_context"]

# What served the current request: nodes read by the router, whether our loader ran.
SERVED: ContextVar[dict[str, Any] | None] = ContextVar("consistency_served", default=None)


def note_node(name: str) -> None:
    served = SERVED.get()
    if served is not None:
        served.setdefault("nodes", []).append(name)


def note_loaded() -> None:
    served = SERVED.get()
    if served is not None:
        served["loaded"] = True


# -- sabotage: one guarantee switched off, to prove the checker catches it --------------------
#
# Each is done by the application, through public APIs only, so it means the same whatever
# the library's internals become:
# - guard: reads run without the session's causal token (a fresh context per read);
# - merge: reads use the token but what they see is not merged back into the session;
# - staleness: a bounded-staleness read asks the router for no bound at all;
# - tombstone: writes delete the keys (the textbook cache-aside delete) instead of invalidating;
# - bus: no invalidation bus.


@contextlib.contextmanager
def read_context(sabotage: tuple[str, ...]) -> Any:
    from readscale._shared.replicas.causal_context import CausalContext, causal_context, current_context

    if "guard" in sabotage:
        with causal_context():
            yield
    elif "merge" in sabotage:
        session = current_context()
        token = session.token if session is not None else None
        written = session.written_at if session is not None else None
        with causal_context(CausalContext(token, written_at=written)):
            yield
    else:
        yield
