"""The request path's metrics: names, units and bucket boundaries in one place.

docs/metrics.md is the table of every metric (with its Prometheus name); dashboards and alert
rules are written against it. Attribute values are identifiers of the call (method, status,
infno, infcode, gateway URL, operation), never personal data.

Durations are in milliseconds (the unit the dashboards were built on), with bucket boundaries
from 0.5 ms (an HSM signature) to 30 s (a platform timeout).
"""

from __future__ import annotations

from opentelemetry.metrics import Histogram, Meter

DURATION_BUCKETS_MS = (
    0.5, 1, 2.5, 5, 7.5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 10000, 30000,
)  # fmt: skip

# gRPC server (sidecar/interceptors/tracing.py); attributes rpc.method, rpc.grpc.status
RPC_CALLS = "yibao.rpc.calls"
RPC_DURATION = "yibao.rpc.duration"
# Platform transactions, one per attempt (sidecar/platform/client.py); attributes infno, infcode
PLATFORM_DURATION = "yibao.platform.duration"
# Resilience (sidecar/platform/resilience.py); attribute gateway (+ infno for retries)
PLATFORM_RETRIES = "yibao.platform.retries"
BREAKER_OPEN = "yibao.platform.breaker_open"  # 1 while open; the span says half-open too
# Message security: HSM signing (sidecar/keys/security_link.py), answer verification (client.py)
HSM_DURATION = "yibao.hsm.duration"  # attributes operation=sign, outcome
VERIFY_DURATION = "yibao.platform.verify.duration"  # attributes scheme, outcome


def duration(meter: Meter, name: str, description: str) -> Histogram:
    """A latency histogram in milliseconds with the sidecar's bucket boundaries."""
    return meter.create_histogram(
        name,
        unit="ms",
        description=description,
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS,
    )


def elapsed_ms(started: float, now: float) -> float:
    """``perf_counter`` readings to the milliseconds the histograms record."""
    return (now - started) * 1000
