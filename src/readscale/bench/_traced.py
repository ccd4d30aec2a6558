"""The tracing modes the cache bench times the hit path in (``readscale bench cache``):
readscale's tracing switch is process-wide, so each traced round turns it on for itself
and off again, and the untraced rounds in between run as a user without tracing does."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any


class Tracing:
    """The tracing modes of the hit path's rows, switched around each round (readscale's
    switch is process-wide): ``noop`` the API's no-op provider, ``sdk`` the SDK with a
    ``BatchSpanProcessor`` over an exporter that drops the spans."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.trace import NoOpTracerProvider

        class Dropped(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        self.noop = NoOpTracerProvider()
        self.sdk = TracerProvider()
        self.sdk.add_span_processor(BatchSpanProcessor(Dropped()))

    def on(self, mode: str) -> None:
        from readscale import tracing

        tracing.enable(self.noop if mode == "noop" else self.sdk)

    def close(self) -> None:
        from readscale import tracing

        tracing.disable()
        self.sdk.shutdown()


def tracing_modes(progress: Callable[[str], None]) -> Tracing | None:
    try:
        return Tracing()
    except ImportError:
        progress("opentelemetry-sdk not installed: the traced hit path is skipped")
        return None


def traced_async(fn: Callable[[], Awaitable[float]], tracing: Tracing, mode: str) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        tracing.on(mode)
        try:
            return await fn()
        finally:
            from readscale import tracing as switch

            switch.disable()

    return run


def traced(fn: Callable[[], float], tracing: Tracing, mode: str) -> Callable[[], float]:
    def run() -> float:
        tracing.on(mode)
        try:
            return fn()
        finally:
            from readscale import tracing as switch

            switch.disable()

    return run


__all__ = ["Tracing", "traced", "traced_async", "tracing_modes"]
