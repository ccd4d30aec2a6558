"""The data behind the example apps: a primary and one replica that never catches up.

A write records the primary's position in the session's causal context, as the replica
router does after COMMIT; a read is served by the lagging replica unless the session's
token is past it (then, as the router would, by the primary), and merges the position
it read at into the context (monotonic reads). Enough to see, at the HTTP layer,
whether the token travelled: a session that wrote reads its write only if it did.
"""

from __future__ import annotations

import os
import threading

from readscale import TokenSigner
from readscale._core.replicas.causal import CausalToken
from readscale.replicas import current_context

SECRET = os.environ.get("READSCALE_TOKEN_SECRET", "example apps' token secret: tests only")
signer = TokenSigner(SECRET.encode())
GREETING = {"fr": "bonjour", "de": "hallo", "en": "hello"}
REPLICA_LSN = 1_000


class Repo:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.primary_lsn = REPLICA_LSN
        self.value = "initial"
        self.version = 1
        self.renders = 0

    def write(self, value: str) -> None:
        with self._lock:
            self.primary_lsn += 100
            self.value = value
            self.version += 1
            position = self.primary_lsn
        context = current_context()
        if context is not None:
            context.record_write(CausalToken(7, 1, position), at=float(position))

    def read(self) -> str:
        context = current_context()
        token = context.token.lsn if context is not None and context.token is not None else 0
        if context is not None:
            context.observe(CausalToken(7, 1, max(REPLICA_LSN, token)))
        return self.value if token >= self.primary_lsn else "initial"

    def greeting(self, accept_language: str | None) -> tuple[str, str]:
        lang = (accept_language or "en")[:2].lower()
        lang = lang if lang in GREETING else "en"
        return lang, GREETING[lang]


repo = Repo()
