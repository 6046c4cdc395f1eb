"""OpenTelemetry wiring: one tracer and one meter for the whole sidecar.

Spans and metrics never carry personal data: identifiers of the call (method, infno, msgid,
status, tenant) only. Exporters are chosen in the composition root; tests pass an in-memory
exporter and read the finished spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from sidecar import __version__

INSTRUMENTATION = "yibao-sidecar"
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass
class Telemetry:
    """The tracer and meter handed to every component that reports."""

    tracer: trace.Tracer
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def build(
    exporter: SpanExporter | None = None,
    *,
    readers: tuple[MetricReader, ...] = (),
    synchronous: bool = False,
) -> Telemetry:
    """Providers with this service's resource; spans go to ``exporter`` if one is given."""
    resource = Resource.create({"service.name": "yibao-sidecar", "service.version": __version__})
    tracer_provider = TracerProvider(resource=resource)
    if exporter is not None:
        processor = SimpleSpanProcessor(exporter) if synchronous else BatchSpanProcessor(exporter)
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=list(readers))
    return Telemetry(
        tracer=tracer_provider.get_tracer(INSTRUMENTATION, __version__),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


def extract_parent(metadata: Mapping[str, str]) -> context.Context:
    """The caller's W3C trace context (``traceparent``/``tracestate``), if it sent one."""
    return _PROPAGATOR.extract(carrier=dict(metadata))
