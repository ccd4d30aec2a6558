"""OpenTelemetry tracing of readscale's operations (the ``otel`` extra installs
``opentelemetry-api``; readscale never depends on the SDK).

Off by default. Turn it on once at start-up, after configuring your SDK::

    from opentelemetry.sdk.trace import TracerProvider
    import readscale.tracing

    provider = TracerProvider()  # with your span processors and exporter
    readscale.tracing.enable(provider)  # or enable() to use the global provider

While tracing is off, readscale does not import OpenTelemetry and each traced operation
costs one attribute check. The spans, their attributes and how they nest are in
docs/observability.md ("Tracing").
"""

from __future__ import annotations

from readscale._shared.tracing import disable, enable

__all__ = ["disable", "enable"]
