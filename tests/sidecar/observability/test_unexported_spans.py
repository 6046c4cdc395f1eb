"""Spans nobody exports are not recorded, and the caller's trace still continues through them."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sidecar.interceptors.context import TRACEPARENT_KEY
from sidecar.observability import telemetry

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_an_exporter_spans_are_not_recorded_but_continue_the_callers_trace() -> None:
    observability = telemetry.build()
    parent = telemetry.extract_parent({TRACEPARENT_KEY: CALLER})
    with observability.tracer.start_as_current_span(
        "rpc", context=parent, kind=SpanKind.SERVER
    ) as span:
        assert not span.is_recording()
        assert f"{span.get_span_context().trace_id:032x}" == CALLER.split("-")[1]
    with observability.tracer.start_as_current_span("root") as root:  # no caller: a new trace
        assert not root.is_recording() and root.get_span_context().trace_id != 0
    observability.shutdown()


def test_with_an_exporter_the_callers_sampled_trace_is_recorded_and_exported() -> None:
    exporter = InMemorySpanExporter()
    observability = telemetry.build(exporter, synchronous=True)
    parent = telemetry.extract_parent({TRACEPARENT_KEY: CALLER})
    with observability.tracer.start_as_current_span("rpc", context=parent) as span:
        assert span.is_recording()
    (finished,) = exporter.get_finished_spans()
    assert f"{finished.context.trace_id:032x}" == CALLER.split("-")[1]
    observability.shutdown()
