"""The ``[telemetry]`` exporters: OTLP (HTTP/protobuf or gRPC) and a Prometheus scrape endpoint.

Turns the validated configuration into ``telemetry.Telemetry`` with the exporters attached:
spans in batches and metrics every ``metrics_interval_seconds`` to an OTLP collector, and/or a
``GET /metrics`` endpoint (prometheus_client's HTTP server on its own thread) served from a
registry of this sidecar's own. Credential headers are read from ``headers_file``; problems
become one-line ``ConfigError``s naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry, start_http_server

from sidecar.config import ConfigError, OtlpConfig, TelemetryConfig, read_secret
from sidecar.observability import telemetry


def build(config: TelemetryConfig) -> telemetry.Telemetry:
    """Providers with the configured exporters; the scrape endpoint is listening on return."""
    readers: list[MetricReader] = []
    spans: SpanExporter | None = None
    otlp = config.otlp
    if otlp.endpoint is not None:
        headers = {**otlp.headers, **_headers_file(otlp.headers_file)}
        grpc_protocol = otlp.protocol == "grpc"
        if otlp.traces:
            span_exporter = GrpcSpanExporter if grpc_protocol else HttpSpanExporter
            spans = span_exporter(**_exporter_options(otlp, otlp.endpoint, headers, "traces"))
        if otlp.metrics:
            metric_exporter = GrpcMetricExporter if grpc_protocol else HttpMetricExporter
            options = _exporter_options(otlp, otlp.endpoint, headers, "metrics")
            readers.append(
                PeriodicExportingMetricReader(
                    metric_exporter(**options),
                    export_interval_millis=otlp.metrics_interval_seconds * 1000,
                    export_timeout_millis=otlp.timeout_seconds * 1000,
                )
            )
    registry: CollectorRegistry | None = None
    if config.prometheus.listen is not None:
        registry = CollectorRegistry(auto_describe=True)
        readers.append(PrometheusMetricReader(registry=registry))
    built = telemetry.build(spans, readers=tuple(readers), sample_ratio=config.trace_sample_ratio)
    if registry is not None and config.prometheus.listen is not None:
        _serve_scrapes(built, registry, config.prometheus.listen)
    return built


def _serve_scrapes(built: telemetry.Telemetry, registry: CollectorRegistry, listen: str) -> None:
    host, _, port = listen.rpartition(":")
    try:
        server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as exc:
        built.shutdown()
        raise ConfigError(
            f"config: telemetry.prometheus.listen: cannot listen on {listen}: {exc.strerror}"
        ) from None

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    built.scrape_address = (str(server.server_address[0]), int(server.server_address[1]))
    built.closers.append(close)


def _headers_file(path: Path | None) -> dict[str, str]:
    """``name=value`` lines (blank lines and ``#`` comments skipped)."""
    if path is None:
        return {}
    key = "telemetry.otlp.headers_file"
    headers: dict[str, str] = {}
    for number, line in enumerate(read_secret(path, key).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"config: {key}: {path} line {number} is not name=value")
        headers[name.strip().lower()] = value.strip()
    return headers


def _exporter_options(
    config: OtlpConfig, endpoint: str, headers: dict[str, str], signal: str
) -> dict[str, Any]:
    """Keyword arguments of the OTLP span or metric exporter (``signal``: traces, metrics)."""
    base = endpoint.rstrip("/")
    if config.protocol == "grpc":
        return {
            "endpoint": base,
            "insecure": base.startswith("http://"),
            "credentials": _grpc_credentials(config),
            "headers": headers,
            "timeout": config.timeout_seconds,
        }
    return {
        "endpoint": f"{base}/v1/{signal}",
        "certificate_file": str(config.ca_file) if config.ca_file else None,
        "headers": headers,
        "timeout": config.timeout_seconds,
    }


def _grpc_credentials(config: OtlpConfig) -> grpc.ChannelCredentials | None:
    if config.ca_file is None:
        return None
    try:
        roots = config.ca_file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"config: telemetry.otlp.ca_file: cannot read {config.ca_file}: {exc.strerror}"
        ) from None
    return grpc.ssl_channel_credentials(root_certificates=roots)
