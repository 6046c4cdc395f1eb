"""The request path's metrics: names, units and bucket boundaries in one place.

docs/metrics.md is the table of every metric (with its Prometheus name); dashboards and alert
rules are written against it. Attribute values are identifiers of the call (method, status,
infno, infcode, gateway URL, operation), never personal data.

Names and units follow the OpenTelemetry semantic conventions 1.44.0 (the version of the pinned
``opentelemetry-semantic-conventions``): durations in seconds, the gRPC server's calls as
``rpc.server.call.duration`` (its ``_count`` is the number of calls). The RPC attributes are the
ones the server span carries (``rpc.system``, ``rpc.service``, ``rpc.method`` and the numeric
``rpc.grpc.status_code``; 1.44.0 marks them deprecated, docs/metrics.md says why they stay), so
a metric and its span are joined on the same values.
Bucket boundaries run from 0.5 ms (an HSM signature) to 30 s (a platform timeout).
"""

from __future__ import annotations

from opentelemetry.metrics import Histogram, Meter

DURATION_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5,
    5, 10, 30,
)  # fmt: skip

# gRPC server (sidecar/interceptors/tracing.py); attributes RPC_ATTRIBUTES
RPC_SERVER_DURATION = "rpc.server.call.duration"
RPC_SYSTEM = "rpc.system"
RPC_SERVICE = "rpc.service"
RPC_METHOD = "rpc.method"
RPC_GRPC_STATUS_CODE = "rpc.grpc.status_code"  # the status's number: 0 OK, 5 NOT_FOUND, 14 ...
# Platform transactions, one per attempt (sidecar/platform/client.py); attributes infno, infcode
PLATFORM_DURATION = "yibao.platform.duration"
# Resilience (sidecar/platform/resilience.py); attribute gateway (+ infno for retries)
PLATFORM_RETRIES = "yibao.platform.retries"
BREAKER_OPEN = "yibao.platform.breaker_open"  # 1 while open; the span says half-open too
# Message security: HSM signing (sidecar/keys/security_link.py), answer verification (client.py)
HSM_DURATION = "yibao.hsm.duration"  # attributes operation=sign, outcome
VERIFY_DURATION = "yibao.platform.verify.duration"  # attributes scheme, outcome


def duration(meter: Meter, name: str, description: str) -> Histogram:
    """A latency histogram in seconds with the sidecar's bucket boundaries."""
    return meter.create_histogram(
        name,
        unit="s",
        description=description,
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
    )


def elapsed_seconds(started: float, now: float) -> float:
    """``perf_counter`` readings to the seconds the histograms record."""
    return now - started
