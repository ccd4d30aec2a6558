"""OpenTelemetry spans, through ``opentelemetry-api`` only, behind one switch.

Tracing is off until :func:`enable` is called (``readscale.tracing.enable``): then
readscale asks the given ``TracerProvider`` (or the global one) for its tracer. While it
is off the library does not import OpenTelemetry at all, and every traced place costs one
attribute check (``TRACING.tracer is None``): no span object, no dict of attributes.
Drivers therefore test the switch themselves and only then call :func:`span` (which
assumes tracing is on) or :func:`note` / :func:`event` (which check it again: they are
called from counters that run whether or not a span is open).

Names follow OpenTelemetry's semantic conventions where they exist (database client
spans: ``db.system.name``, ``db.operation.name``, ``db.namespace``, ``server.address``,
``server.port``, ``error.type``); what they do not cover (what the cache found, what the
replica guard said) goes under ``readscale.*``. The span names and attributes are listed
in docs/observability.md and pinned by tests/test_tracing.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = [
    "TRACING",
    "Attributes",
    "db_system",
    "disable",
    "enable",
    "event",
    "maybe_span",
    "note",
    "outcome",
    "server_attributes",
    "span",
]

Attributes = Mapping[str, str | bool | int | float]

INSTRUMENTATION = "readscale"
# Span kinds by name, so that callers need not import OpenTelemetry.
INTERNAL = "INTERNAL"
CLIENT = "CLIENT"
PRODUCER = "PRODUCER"
CONSUMER = "CONSUMER"


class _Switch:
    """The process's one switch: the tracer while tracing is on, else None; and the few
    OpenTelemetry functions spans need, bound once by :func:`enable` (no import per call)."""

    __slots__ = ("Status", "attach", "current_span", "detach", "error", "kinds", "set_span_in_context", "tracer")

    def __init__(self) -> None:
        self.tracer: Tracer | None = None
        self.kinds: dict[str, Any] = {}
        self.attach: Any = None
        self.detach: Any = None
        self.set_span_in_context: Any = None
        self.current_span: Any = None
        self.Status: Any = None
        self.error: Any = None


TRACING = _Switch()


def enable(tracer_provider: TracerProvider | None = None) -> None:
    """Trace readscale's operations with ``tracer_provider`` (None: OpenTelemetry's global
    provider, as set by ``opentelemetry.trace.set_tracer_provider`` now or later).

    Raises ImportError naming the extra when ``opentelemetry-api`` is not installed."""
    try:
        from opentelemetry import context, trace
    except ImportError as exc:
        raise ImportError(
            "readscale tracing needs opentelemetry-api: pip install 'readscale[otel]'", name=exc.name
        ) from exc
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("readscale")
    except PackageNotFoundError:  # a source tree that is not installed
        own = None
    TRACING.kinds = {kind.name: kind for kind in trace.SpanKind}
    TRACING.attach, TRACING.detach = context.attach, context.detach
    TRACING.set_span_in_context, TRACING.current_span = trace.set_span_in_context, trace.get_current_span
    TRACING.Status, TRACING.error = trace.Status, trace.StatusCode.ERROR
    TRACING.tracer = trace.get_tracer(INSTRUMENTATION, own, tracer_provider=tracer_provider)


def disable() -> None:
    """Stop tracing: every traced place goes back to one attribute check."""
    TRACING.tracer = None


class span:  # lower case: used as a function, ``with span(...)``
    """A span named ``name``, current for the block (its children are the spans started
    inside it, in this task or thread). Only call it while tracing is on. An exception
    leaving the block is recorded, sets the span's status to error and ``error.type`` to
    the exception's class name (semantic conventions: recording errors).

    A class rather than a generator or ``start_as_current_span``: the span is started
    with all its attributes at once and made current with one context attach, which is
    what costs least per call with the SDK and with the API's no-op tracer alike."""

    __slots__ = ("_span", "_token")

    def __init__(self, name: str, attributes: Attributes | None = None, kind: str = INTERNAL) -> None:
        tracer = TRACING.tracer
        assert tracer is not None, "span() called while tracing is off: check TRACING.tracer first"
        self._span = tracer.start_span(name, kind=TRACING.kinds[kind], attributes=attributes)
        self._token: object = None

    def __enter__(self) -> Span:
        self._token = TRACING.attach(TRACING.set_span_in_context(self._span))
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        current = self._span
        try:
            if exc is not None and current.is_recording():
                current.set_attribute("error.type", type(exc).__qualname__)
                current.record_exception(exc)
                current.set_status(TRACING.Status(TRACING.error, f"{type(exc).__name__}: {exc}"))
        finally:
            TRACING.detach(self._token)
            current.end()


_OFF: AbstractContextManager[None] = nullcontext()


def maybe_span(
    name: str, attributes: Attributes | None = None, kind: str = INTERNAL
) -> AbstractContextManager[Span | None]:
    """:func:`span` while tracing is on, else a shared context manager that does nothing
    (for paths off the hot one, where building ``attributes`` costs nothing that matters)."""
    if TRACING.tracer is None:
        return _OFF
    return span(name, attributes, kind)


def note(key: str, value: str | bool | int | float) -> None:
    """Set an attribute on the current span, if tracing is on (else nothing)."""
    if TRACING.tracer is None:
        return
    current = TRACING.current_span()
    if current.is_recording():  # not a span that ended (a background refresh's parent)
        current.set_attribute(key, value)


def event(name: str, attributes: Attributes | None = None) -> None:
    """Add an event to the current span, if tracing is on (else nothing)."""
    if TRACING.tracer is None:
        return
    current = TRACING.current_span()
    if current.is_recording():
        current.add_event(name, attributes or {})


def outcome(result: str, tier: str | None = None) -> None:
    """What the cache operation of the current span found (``readscale.cache.result``:
    hit, miss, stale, ...; ``readscale.cache.tier``: l1 or l2). Only call it while tracing
    is on; a later outcome of the same operation replaces an earlier one (an L1 miss,
    then an L2 hit)."""
    current = TRACING.current_span()
    if current.is_recording():
        if tier is None:
            current.set_attribute("readscale.cache.result", result)
        else:
            current.set_attributes({"readscale.cache.result": result, "readscale.cache.tier": tier})


#: ``db.system.name`` of each backend's ``name`` (semantic conventions' well-known values).
_SYSTEMS = {"redis": "redis", "redis-cluster": "redis", "memcached": "memcached", "postgresql": "postgresql"}


def db_system(backend_name: str | None) -> str | None:
    """The ``db.system.name`` of a backend (None: not a database, e.g. the memory backend)."""
    return _SYSTEMS.get(backend_name or "")


def server_attributes(host: str | None, port: int | None) -> dict[str, str | int]:
    """``server.address`` and ``server.port``, for what is known of them."""
    out: dict[str, str | int] = {}
    if host:
        out["server.address"] = host
    if port is not None:
        out["server.port"] = port
    return out
