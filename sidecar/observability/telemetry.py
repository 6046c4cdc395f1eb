"""OpenTelemetry wiring: one tracer and one meter for the whole sidecar.

Spans and metrics never carry personal data: identifiers of the call (method, infno, msgid,
status, tenant) only. The exporters configured in ``[telemetry]`` are attached by
``sidecar/observability/telemetry_export.py``; tests pass an in-memory exporter and read the
finished spans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from opentelemetry import context, metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBasedTraceIdRatio
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
    scrape_address: tuple[str, int] | None = None  # the Prometheus endpoint, once listening
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def meter(self) -> metrics.Meter:
        return self.meter_provider.get_meter(INSTRUMENTATION, __version__)

    def shutdown(self) -> None:
        """Flush and stop the exporters (a last OTLP export), then close the scrape endpoint."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        for close in self.closers:
            close()


def build(
    exporter: SpanExporter | None = None,
    *,
    readers: tuple[MetricReader, ...] = (),
    synchronous: bool = False,
    sample_ratio: float = 1.0,
) -> Telemetry:
    """Providers with this service's resource; spans go to ``exporter`` if one is given.

    ``sample_ratio`` applies to traces the sidecar starts; a caller's sampling decision (the
    ``traceparent`` flags) is followed.
    """
    resource = Resource.create({"service.name": "yibao-sidecar", "service.version": __version__})
    # Without an exporter no span is ever read, so none is recorded (a recorded span costs the
    # request path tens of microseconds); the span contexts still continue the caller's trace,
    # so logs and the audit trail keep its trace ID.
    sampler = ParentBasedTraceIdRatio(sample_ratio) if exporter is not None else ALWAYS_OFF
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
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
