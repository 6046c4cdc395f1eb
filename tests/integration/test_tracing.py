"""Tracing: the RPC's span continues the caller's trace; platform calls are its children."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from sidecar.observability import telemetry
from tests.integration.conftest import TENANT_METADATA, running_sidecar, settings_for
from tests.integration.consent_support import consent_to
from tests.integration.test_gateway import call_enrollment, subject_of
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


async def test_span_tree_of_get_enrollment(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    exporter = InMemorySpanExporter()
    observability = telemetry.build(exporter, synchronous=True)
    person = population.examples().employee
    metadata = (*TENANT_METADATA, ("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"))
    async with running_sidecar(settings_for(simulator, short_dir), observability) as running:
        await consent_to(running.channel, [subject_of(person)])
        await call_enrollment(running, subject_of(person), metadata)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["yibao.gateway.v1.InsuranceGateway/GetEnrollment"]
    assert server.kind == SpanKind.SERVER
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == PARENT_SPAN
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == 0
    assert server.attributes["yibao.tenant"] == "acme-corp"
    for infno in ("9001", "1101"):
        child = spans[f"platform {infno}"]
        assert child.kind == SpanKind.CLIENT
        assert child.parent is not None and child.parent.span_id == server.context.span_id
        assert child.attributes is not None
        assert child.attributes["yibao.platform.infcode"] == "0"
        assert str(child.attributes["yibao.platform.msgid"]).startswith(
            simulator.app.institution_code
        )
    everything = repr([(s.name, dict(s.attributes or {})) for s in exporter.get_finished_spans()])
    assert person.certno not in everything
    assert person.psn_name not in everything


async def test_refusals_mark_spans_as_errors_without_personal_data(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    import grpc
    import pytest

    exporter = InMemorySpanExporter()
    observability = telemetry.build(exporter, synchronous=True)
    unknown = population.examples().unknown
    async with running_sidecar(settings_for(simulator, short_dir), observability) as running:
        await consent_to(running.channel, [subject_of(unknown)])
        with pytest.raises(grpc.aio.AioRpcError):
            await call_enrollment(running, subject_of(unknown))
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["yibao.gateway.v1.InsuranceGateway/GetEnrollment"]
    assert not server.status.is_ok
    assert server.attributes is not None
    assert server.attributes["yibao.error.reason"] == "PERSON_NOT_FOUND"
    assert spans["platform 1101"].attributes["yibao.platform.infcode"] == "-1"  # type: ignore[index]
    everything = repr(
        [(s.name, dict(s.attributes or {}), s.events) for s in exporter.get_finished_spans()]
    )
    assert unknown.certno not in everything and unknown.psn_name not in everything
