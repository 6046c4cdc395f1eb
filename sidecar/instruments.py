"""Every metric the sidecar reports: names, units and bucket boundaries in one place.

docs/metrics.md is the table of these (with their Prometheus names); dashboards and alert rules
are written against it. Attribute values are identifiers of the call (method, status, infno,
infcode, gateway URL, operation), never personal data.

Durations are in seconds (``unit="s"``), as OpenTelemetry's semantic conventions and Prometheus
ask, with bucket boundaries from 0.5 ms (an HSM signature) to 30 s (a platform timeout).
"""

from __future__ import annotations

from typing import Literal

from opentelemetry.metrics import Counter, Histogram, Meter

DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

# gRPC server (sidecar/interceptors/tracing.py); attributes rpc.method, rpc.grpc.status
RPC_CALLS = "yibao.rpc.calls"
RPC_DURATION = "yibao.rpc.duration"
# Platform transactions, one per attempt (sidecar/platform/client.py); attributes infno, infcode
PLATFORM_DURATION = "yibao.platform.duration"
# Resilience (sidecar/platform/resilience.py); attribute gateway (+ infno for retries)
PLATFORM_RETRIES = "yibao.platform.retries"
BREAKER_STATE = "yibao.platform.breaker.state"  # 0 closed, 1 half-open, 2 open
# Message security: HSM signing (sidecar/security_link.py), answer verification (client.py)
HSM_DURATION = "yibao.hsm.duration"  # attribute operation=sign
VERIFY_DURATION = "yibao.platform.verify.duration"  # attributes scheme, outcome
# The read cache of the gateway's query functions; attributes function, result=hit|miss
CACHE_REQUESTS = "yibao.cache.requests"

BREAKER_STATES = {"closed": 0, "half-opened": 1, "opened": 2}


def duration(meter: Meter, name: str, description: str) -> Histogram:
    """A latency histogram in seconds with the sidecar's bucket boundaries."""
    return meter.create_histogram(
        name,
        unit="s",
        description=description,
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )


class CacheMetrics:
    """The cache hit ratio: ``hit``/``miss`` per cached function (enrollment, account, ...).

    Ratio in PromQL: ``sum(rate(yibao_cache_requests_total{result="hit"}[5m]))
    / sum(rate(yibao_cache_requests_total[5m]))``.
    """

    def __init__(self, meter: Meter) -> None:
        self._requests: Counter = meter.create_counter(
            CACHE_REQUESTS, unit="{request}", description="read-cache lookups by result"
        )

    def record(self, function: str, result: Literal["hit", "miss"]) -> None:
        self._requests.add(1, {"function": function, "result": result})
