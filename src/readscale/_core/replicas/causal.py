"""The causal token: the WAL position a session has written or seen, signed to travel.

A causal token is ``(system_identifier, timeline, lsn)``: an LSN means something only
within one cluster (``pg_control_system().system_identifier``) and one timeline (it
changes when a replica is promoted). Rules:

- **Merge is max.** A session's token only moves forward: after a write commits, the
  primary's WAL position after the commit is merged in (read-your-writes); after a
  replica read, that replica's replay position is merged in (monotonic reads).
- **Another history resets, never compares.** A token from another cluster or another
  timeline is replaced by the position observed on the live cluster
  (:func:`advance`), or dropped before routing (:func:`reconcile`). Comparing LSNs
  across histories would be meaningless, and after a failover the new primary's
  timeline decides what exists.
- **Signed, bounded, never trusted.** :class:`TokenSigner` writes
  ``rs1.<system>.<timeline>.<lsn>.<written_ms>.<issued_s>.<mac>`` with an HMAC-SHA256
  over everything before the MAC (key rotation: the first key signs, every key
  verifies). :meth:`TokenSigner.loads` returns ``None`` for anything it cannot vouch
  for: malformed, too long, forged, tampered, issued in the future or older than
  ``max_age``. A bad token makes a new session; it never raises.
- ``written_at`` (wall-clock seconds of the session's last write) travels with the
  token only for the time-window rule (read from the primary for 2 s after a write),
  kept as the fallback and the benchmark baseline.

No clock is read here: ``now`` is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

from readscale._core.postgres.lsn import MAX_LSN
from readscale.errors import ConfigurationError

__all__ = [
    "CarriedToken",
    "CausalToken",
    "ClusterIdentity",
    "TokenSigner",
    "advance",
    "merge",
    "read_before_own_write",
    "reconcile",
]

TOKEN_VERSION = "rs1"  # noqa: S105 - a format tag, not a secret
MAX_TOKEN_LENGTH = 200
MIN_SECRET_BYTES = 16
MAC_BYTES = 16
# Clocks of the processes that sign and verify differ a little; tolerate that much.
CLOCK_SKEW = 60.0
_MAX_U64 = (1 << 64) - 1
_TOKEN = re.compile(
    r"rs1\.(?P<system>[0-9]{1,20})\.(?P<timeline>[0-9]{1,10})\.(?P<lsn>[0-9a-f]{1,16})"
    r"\.(?P<written>[0-9]{1,15}|-)\.(?P<issued>[0-9]{1,12})\.(?P<mac>[A-Za-z0-9_-]{22})"
)


@dataclass(frozen=True, slots=True)
class ClusterIdentity:
    """Which history LSNs belong to: the cluster's system identifier and its timeline."""

    system_identifier: int
    timeline: int

    def __post_init__(self) -> None:
        if not 0 <= self.system_identifier <= _MAX_U64:
            raise ConfigurationError(f"system identifier out of range: {self.system_identifier}")
        if not 1 <= self.timeline < 1 << 32:
            raise ConfigurationError(f"timeline out of range: {self.timeline}")

    def at(self, lsn: int) -> CausalToken:
        """The token for position ``lsn`` in this history."""
        return CausalToken(self.system_identifier, self.timeline, lsn)


@dataclass(frozen=True, slots=True)
class CausalToken:
    """A WAL position in one cluster history: what a session must see next."""

    system_identifier: int
    timeline: int
    lsn: int

    def __post_init__(self) -> None:
        if not 0 <= self.system_identifier <= _MAX_U64:
            raise ConfigurationError(f"system identifier out of range: {self.system_identifier}")
        if not 1 <= self.timeline < 1 << 32:
            raise ConfigurationError(f"timeline out of range: {self.timeline}")
        if not 0 <= self.lsn <= MAX_LSN:
            raise ConfigurationError(f"LSN out of range: {self.lsn}")

    @property
    def identity(self) -> ClusterIdentity:
        return ClusterIdentity(self.system_identifier, self.timeline)

    def same_history(self, other: CausalToken) -> bool:
        return self.system_identifier == other.system_identifier and self.timeline == other.timeline


def advance(current: CausalToken | None, observed: CausalToken) -> CausalToken:
    """Merge a position just observed on the live cluster into a session's token.

    Same history: the larger LSN. Another history: the observed one (a reset).
    """
    if current is None or not current.same_history(observed):
        return observed
    return current if current.lsn >= observed.lsn else observed


def merge(a: CausalToken | None, b: CausalToken | None) -> CausalToken | None:
    """Merge two carried tokens (a cookie and a header, say) when neither is known live.

    Same history: the larger LSN. Same cluster on two timelines: the later timeline.
    Two clusters: ``b``; :func:`reconcile` drops it later if it is not the live one.
    """
    if a is None:
        return b
    if b is None:
        return a
    if a.same_history(b):
        return a if a.lsn >= b.lsn else b
    if a.system_identifier == b.system_identifier:
        return a if a.timeline > b.timeline else b
    return b


def reconcile(token: CausalToken | None, identity: ClusterIdentity | None) -> CausalToken | None:
    """The token if it belongs to the live history; ``None`` (a new session) if not.

    With the live history unknown (no node answered yet) the token is kept as is.
    """
    if token is None or identity is None:
        return token
    if token.system_identifier == identity.system_identifier and token.timeline == identity.timeline:
        return token
    return None


@dataclass(frozen=True, slots=True)
class CarriedToken:
    """What a signed token string carries across a request, a job or a service."""

    token: CausalToken
    written_at: float | None  # wall-clock seconds of the session's last write
    issued_at: float


class TokenSigner:
    """Sign causal tokens for cookies, headers and job messages; verify them on return.

    ``secrets``: one key, or several for rotation (the first signs, all verify). Each
    must hold at least 16 bytes. ``max_age``: seconds a signed token stays valid.
    """

    __slots__ = ("_keys", "max_age")

    def __init__(self, secrets: str | bytes | Sequence[str | bytes], *, max_age: float = 86400.0) -> None:
        raw = [secrets] if isinstance(secrets, str | bytes) else list(secrets)
        if not raw:
            raise ConfigurationError("TokenSigner needs at least one secret")
        keys = tuple(k.encode() if isinstance(k, str) else bytes(k) for k in raw)
        for key in keys:
            if len(key) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"a token secret must hold at least {MIN_SECRET_BYTES} bytes, got {len(key)}: "
                    "use a long random value, e.g. secrets.token_urlsafe(32)"
                )
        if not max_age > 0:
            raise ConfigurationError(f"max_age must be > 0 seconds, got {max_age}")
        self._keys = keys
        self.max_age = float(max_age)

    def _mac(self, key: bytes, payload: str) -> str:
        digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def dumps(self, token: CausalToken, *, now: float, written_at: float | None = None) -> str:
        """The signed string for ``token``, issued at ``now`` (wall-clock seconds)."""
        written = "-" if written_at is None else str(max(0, round(written_at * 1000)))
        payload = (
            f"{TOKEN_VERSION}.{token.system_identifier}.{token.timeline}.{token.lsn:x}.{written}.{max(0, int(now))}"
        )
        return f"{payload}.{self._mac(self._keys[0], payload)}"

    def loads(self, text: str | None, *, now: float) -> CarriedToken | None:
        """The token in ``text`` if it is genuine and current; ``None`` otherwise. Never raises."""
        if not text or len(text) > MAX_TOKEN_LENGTH:
            return None
        match = _TOKEN.fullmatch(text)
        if match is None:
            return None
        payload, _, mac = text.rpartition(".")
        if not any(hmac.compare_digest(self._mac(key, payload), mac) for key in self._keys):
            return None
        issued = int(match["issued"])
        if issued > now + CLOCK_SKEW or now - issued > self.max_age:
            return None
        system, timeline, lsn = int(match["system"]), int(match["timeline"]), int(match["lsn"], 16)
        if system > _MAX_U64 or not 1 <= timeline < 1 << 32:
            return None
        written = None if match["written"] == "-" else int(match["written"]) / 1000
        return CarriedToken(CausalToken(system, timeline, lsn), written, float(issued))


def read_before_own_write(entry_lsn: int | None, floor: int | None) -> bool:
    """True when a cache entry may have been read from the database before the session's
    own last write (``floor``): serving it could hide that write from its author.

    An entry with no read position (read on the primary without the primary's position
    before the read, or filled outside the replica router) cannot be shown to be newer than
    the write, so for a session that wrote it counts as older and is loaded again: an old
    copy in another process's L1 that the bus has not reached yet is never served to the
    session that changed it (found by the consistency harness, docs/consistency-testing.md)."""
    return floor is not None and (entry_lsn is None or entry_lsn < floor)
