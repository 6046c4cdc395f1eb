"""Telemetry of whole calls: the span tree down to the HSM, the metrics, and both exporters.

Everything real: the simulator over mTLS with scheme A message security, the sidecar signing in a
SoftHSM token, the SDK's in-memory span exporter and metric reader, a Prometheus scrape over
HTTP, and OTLP exports received by small collectors running in the test (HTTP/protobuf and gRPC).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sidecar._proto.yibao.gateway.v1 import gateway_pb2
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import Settings
from sidecar.observability import telemetry
from tests.conftest import write_secret
from tests.integration import recording_sidecar
from tests.integration.conftest import TENANT_METADATA, Token, running_sidecar, settings_for
from tests.integration.consent_support import consent_to
from tests.integration.test_eligibility import question
from tests.integration.test_gateway import call_enrollment, subject_of
from tests.integration.test_hsm_startup import hsm_section
from tests.integration.test_message_security import sidecar_public_key
from tests.integration.test_server import wait_serving, write_config
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.crypto import PrivateKey
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.security import SchemeAPlatform
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = ("traceparent", f"00-{TRACE_ID}-{CALLER_SPAN}-01")
SM4_KEY = "0123456789abcdeffedcba9876543210"
ENROLLMENT = "yibao.gateway.v1.InsuranceGateway/GetEnrollment"
ELIGIBILITY = "yibao.gateway.v1.InsuranceGateway/CheckEligibility"


def with_changes(settings: Settings, **sections: dict[str, Any]) -> Settings:
    data = settings.model_dump(mode="json", exclude_none=True)
    data.update(sections)
    return Settings.model_validate(data)


# ------------------------------------------------------------------ reading what was recorded


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


def find(points: list[Any], **attributes: Any) -> Any:
    matching = [p for p in points if all(p.attributes.get(k) == v for k, v in attributes.items())]
    assert len(matching) == 1, (attributes, [p.attributes for p in points])
    return matching[0]


def personal_data(person: Person) -> list[str]:
    return [value for value in (person.certno, person.psn_name, person.psn_no) if value]


def assert_no_personal_data(spans: Sequence[ReadableSpan], person: Person) -> None:
    """Every name, attribute, event and status of every span, scanned for the person."""
    everything: list[str] = []
    for span in spans:
        everything.append(span.name)
        everything.append(span.status.description or "")
        for key, value in (span.attributes or {}).items():
            everything.append(f"{key}={value}")
        for event in span.events:
            everything.append(event.name)
            everything.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    assert len(everything) > 3 * len(spans)
    text = "\n".join(everything)
    for value in personal_data(person):
        assert value not in text


# ------------------------------------------------------------------ the span tree


def kids(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent_id"] == parent["span_id"]]


def only(points: list[dict[str, Any]], **attributes: Any) -> dict[str, Any]:
    found = [p for p in points if all(p["attributes"].get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, (attributes, [p["attributes"] for p in points])
    return found[0]


@pytest.mark.slow
async def test_span_tree_from_the_rpc_down_to_hsm_signing_and_answer_verification(
    token: Token, short_dir: Path, tmp_path: Path
) -> None:
    """The sidecar process signs in SoftHSM (scheme A) and records its spans in memory."""
    platform_key = PrivateKey.for_seed(7)
    client_key = sidecar_public_key(token, tmp_path)
    security = SchemeAPlatform(bytes.fromhex(SM4_KEY), client_key, platform_key)
    app = PlatformSimulator(Population.generate(11, 20), security=security)
    person = app.population.examples().employee
    platform_pem = tmp_path / "platform.pem"
    platform_pem.write_text(platform_key.public_key.pem())
    async with running_simulator(app) as simulator:
        config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
        sm4_key = write_secret(tmp_path / "sm4.key", SM4_KEY)
        config.write_text(
            config.read_text()
            + '\n[platform.security]\nscheme = "envelope-signature"\n'
            + f'platform_public_key_file = "{platform_pem}"\nsm4_key_file = "{sm4_key}"\n'
            + hsm_section(token)
        )
        process = recording_sidecar.start(config, token.env)
        try:
            async with grpc.aio.insecure_channel(f"unix:{short_dir / 'sidecar.sock'}") as channel:
                await wait_serving(channel, process)
                await consent_to(channel, [subject_of(person)])
                stub = gateway_grpc.InsuranceGatewayStub(channel)
                request = gateway_pb2.GetEnrollmentRequest(subject=subject_of(person))
                metadata = (*TENANT_METADATA, TRACEPARENT)
                answer = await stub.GetEnrollment(request, metadata=metadata, timeout=10)
                assert answer.person.name == person.psn_name
                verdict = await stub.CheckEligibility(
                    question(person), metadata=TENANT_METADATA, timeout=10
                )
                assert verdict.eligible
            # stdin closed: the sidecar stops (signing out through the simulator) and reports
            out, err = await asyncio.to_thread(process.communicate, "", 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    recorded = json.loads(out.splitlines()[-1])
    spans: list[dict[str, Any]] = recorded["spans"]
    points: dict[str, list[dict[str, Any]]] = recorded["metrics"]

    # GetEnrollment continues the caller's trace: sign-in (9001) then 1101, each signed in the
    # HSM and its answer verified before use.
    enrollment = next(s for s in spans if s["name"] == ENROLLMENT)
    assert enrollment["kind"] == "SERVER"
    assert enrollment["trace_id"] == TRACE_ID
    assert enrollment["parent_id"] == CALLER_SPAN and enrollment["parent_remote"]
    transactions = kids(spans, enrollment)
    assert [s["name"] for s in transactions] == ["platform 9001", "platform 1101"]
    for span in transactions:
        attributes = span["attributes"]
        assert span["kind"] == "CLIENT" and span["ok"]
        assert attributes["yibao.platform.infno"] == span["name"].split()[1]
        assert attributes["yibao.platform.infcode"] == "0"
        assert attributes["yibao.platform.attempt"] == 1
        assert attributes["yibao.platform.breaker"] == "closed"
        assert str(attributes["yibao.platform.msgid"]).startswith(app.institution_code)
        sign, verify = kids(spans, span)
        assert (sign["name"], verify["name"]) == ("hsm sign", "answer verify")
        assert sign["attributes"]["yibao.hsm.operation"] == "sign" and sign["ok"]
        assert verify["attributes"]["yibao.security.scheme"] == "EnvelopeSignature"
        assert verify["attributes"]["yibao.security.outcome"] == "ok" and verify["ok"]
    platform_spans = [s for s in spans if s["kind"] == "CLIENT"]
    # 9001, 1101; 1101, 2001 of CheckEligibility below; 9002 when the sidecar closed (a root)
    assert sorted(s["name"] for s in platform_spans) == [
        "platform 1101", "platform 1101", "platform 2001", "platform 9001", "platform 9002",
    ]  # fmt: skip
    assert len({s["attributes"]["yibao.platform.msgid"] for s in platform_spans}) == 5

    # CheckEligibility without a traceparent starts a trace of its own: 1101 then 2001 (the
    # operator is signed in already).
    eligibility = next(s for s in spans if s["name"] == ELIGIBILITY)
    assert eligibility["parent_id"] is None and eligibility["trace_id"] != TRACE_ID
    steps = kids(spans, eligibility)
    assert [s["name"] for s in steps] == ["platform 1101", "platform 2001"]
    for step in steps:
        assert [c["name"] for c in kids(spans, step)] == ["hsm sign", "answer verify"]

    # No personal data anywhere: names, attributes, events and statuses of every span (the
    # consent grants' too).
    text = json.dumps(spans, ensure_ascii=False)
    assert len([s for s in spans if s["name"] in ("hsm sign", "answer verify")]) == 2 * 5
    for value in personal_data(person):
        assert value not in text

    # The metrics of the same calls.
    for method in ("GetEnrollment", "CheckEligibility"):
        labels = {"rpc.method": method, "rpc.grpc.status_code": 0}
        call = only(points["rpc.server.call.duration"], **labels)
        assert call["count"] == 1
        assert call["attributes"]["rpc.system"] == "grpc"
        assert call["attributes"]["rpc.service"] == "yibao.gateway.v1.InsuranceGateway"
    assert only(points["yibao.platform.duration"], infno="1101", infcode="0")["count"] == 2
    assert only(points["yibao.platform.duration"], infno="2001", infcode="0")["count"] == 1
    assert only(points["yibao.hsm.duration"], operation="sign", outcome="ok")["count"] == 4
    verified = only(points["yibao.platform.verify.duration"], scheme="EnvelopeSignature")
    assert verified["count"] == 4 and verified["attributes"]["outcome"] == "ok"
    gateway_url = simulator.url.split("/fsi/")[0]
    assert only(points["yibao.platform.breaker_open"], gateway=gateway_url)["value"] == 0


async def test_a_retried_query_is_one_span_per_attempt_and_counts_its_retries(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    simulator.app.faults.set("1101", Fault(FaultKind.HTTP_5XX, times=2))
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    observability = telemetry.build(exporter, readers=(reader,), synchronous=True)
    person = population.examples().employee
    async with running_sidecar(settings_for(simulator, short_dir), observability) as running:
        await consent_to(running.channel, [subject_of(person)])
        await call_enrollment(running, subject_of(person))
        points = metric_points(reader)
    spans = exporter.get_finished_spans()
    rpc = next(s for s in spans if s.name == ENROLLMENT)
    attempts = [s for s in children(spans, rpc) if s.name == "platform 1101"]
    assert [dict(s.attributes or {})["yibao.platform.attempt"] for s in attempts] == [1, 2, 3]
    assert [dict(s.attributes or {})["yibao.platform.infcode"] for s in attempts] == [
        "none",
        "none",
        "0",
    ]
    assert [s.status.is_ok for s in attempts] == [False, False, True]
    assert all(dict(s.attributes or {})["yibao.platform.sent"] for s in attempts[:2])
    assert len({dict(s.attributes or {})["yibao.platform.msgid"] for s in attempts}) == 3
    gateway = running.settings.platform.url
    assert find(points["yibao.platform.retries"], gateway=gateway, infno="1101").value == 2
    assert find(points["yibao.platform.duration"], infno="1101", infcode="none").count == 2
    assert_no_personal_data(spans, person)


# ------------------------------------------------------------------ the exporters


def telemetry_settings(simulator: RunningSimulator, socket_dir: Path, **section: Any) -> Settings:
    return with_changes(settings_for(simulator, socket_dir), telemetry=section)


async def test_the_prometheus_endpoint_serves_the_metrics_of_real_calls(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    settings = telemetry_settings(simulator, short_dir, prometheus={"listen": "127.0.0.1:0"})
    person = population.examples().employee
    async with running_sidecar(settings) as running:  # the exporters of [telemetry], as `serve`
        assert running.sidecar.telemetry.scrape_address is not None
        host, port = running.sidecar.telemetry.scrape_address
        await consent_to(running.channel, [subject_of(person)])
        await call_enrollment(running, subject_of(person))
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://{host}:{port}/metrics")
    assert response.status_code == 200
    lines = response.text.splitlines()

    def sample(name: str, *labels: str) -> float:
        found = [
            line for line in lines if line.startswith(name + "{") and all(x in line for x in labels)
        ]
        assert len(found) == 1, (name, labels, [x for x in lines if x.startswith(name)])
        return float(found[0].rsplit(" ", 1)[1])

    ok = ('rpc_method="GetEnrollment"', 'rpc_grpc_status_code="0"', 'rpc_system="grpc"')
    assert sample("rpc_server_call_duration_seconds_count", *ok) == 1
    assert sample("rpc_server_call_duration_seconds_bucket", *ok, 'le="+Inf"') == 1
    assert sample("yibao_platform_duration_seconds_count", 'infno="1101"', 'infcode="0"') == 1
    assert sample("yibao_platform_breaker_open", f'gateway="{settings.platform.url}"') == 0
    assert "# TYPE rpc_server_call_duration_seconds histogram" in lines
    assert person.certno not in response.text and person.psn_name not in response.text
    # closed with the sidecar: the port no longer answers
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://{host}:{port}/metrics")


@dataclass
class Received:
    spans: list[str] = field(default_factory=list)
    metrics: set[str] = field(default_factory=set)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: set[str] = field(default_factory=set)

    def add_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(span.name for span in scope.spans)

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                self.metrics.update(metric.name for metric in scope.metrics)


@pytest.fixture
def http_collector() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP receiver: decodes the protobuf bodies posted to /v1/traces and /v1/metrics."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            received.paths.add(self.path)
            received.headers.append({k.lower(): v for k, v in self.headers.items()})
            if self.path == "/v1/traces":
                received.add_spans(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            else:
                request = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                received.add_metrics(request)
                reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


async def test_otlp_over_http_reaches_a_collector_with_the_secret_header(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    tmp_path: Path,
    http_collector: tuple[str, Received],
) -> None:
    endpoint, received = http_collector
    token = secrets.token_hex(12)
    headers_file = write_secret(
        tmp_path / "otlp.headers", f"# collector\nAuthorization=Bearer {token}"
    )
    otlp = {
        "endpoint": endpoint,
        "headers": {"x-scope-orgid": "yibao"},
        "headers_file": str(headers_file),
    }
    settings = telemetry_settings(simulator, short_dir, otlp=otlp)
    person = population.examples().employee
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [subject_of(person)])
        await call_enrollment(running, subject_of(person))
    # closing the sidecar flushed the batch of spans and made a last metrics export
    assert received.paths == {"/v1/traces", "/v1/metrics"}
    assert {ENROLLMENT, "platform 9001", "platform 1101", "platform 9002"} <= set(received.spans)
    assert {"rpc.server.call.duration", "yibao.platform.duration"} <= received.metrics
    assert all(h["authorization"] == f"Bearer {token}" for h in received.headers)
    assert all(h["x-scope-orgid"] == "yibao" for h in received.headers)


async def test_otlp_over_grpc_reaches_a_collector(
    simulator: RunningSimulator, population: Population, short_dir: Path
) -> None:
    received = Received()

    class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(
            self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
        ) -> trace_service_pb2.ExportTraceServiceResponse:
            received.add_spans(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), collector)  # type: ignore[no-untyped-call]
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    otlp = {"endpoint": f"http://127.0.0.1:{port}", "protocol": "grpc", "metrics": False}
    settings = telemetry_settings(simulator, short_dir, otlp=otlp)
    try:
        async with running_sidecar(settings) as running:
            subject = subject_of(population.examples().employee)
            await consent_to(running.channel, [subject])
            await call_enrollment(running, subject)
    finally:
        collector.stop(grace=None)
    assert {ENROLLMENT, "platform 9001", "platform 1101"} <= set(received.spans)
