"""The request-path metrics carry the names and units of the pinned semantic conventions.

docs/metrics.md cites OpenTelemetry semantic conventions 1.44.0, the version of the pinned
``opentelemetry-semantic-conventions``; a bump of that package that renames or re-units the RPC
metric or its attributes fails here, so the docs, the dashboard and the rules move with it.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.semconv._incubating.attributes import rpc_attributes
from opentelemetry.semconv._incubating.metrics import rpc_metrics
from opentelemetry.semconv.schemas import Schemas

from sidecar.observability import instruments


def test_the_cited_semantic_conventions_are_the_pinned_ones() -> None:
    assert Schemas.V1_44_0.value == "https://opentelemetry.io/schemas/1.44.0"


def test_the_rpc_server_metric_has_the_semantic_conventions_name_and_unit() -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    standard = rpc_metrics.create_rpc_server_call_duration(meter)
    ours = instruments.duration(meter, instruments.RPC_SERVER_DURATION, "gRPC server call latency")
    assert instruments.RPC_SERVER_DURATION == rpc_metrics.RPC_SERVER_CALL_DURATION
    assert ours.unit == standard.unit == "s"
    assert (
        instruments.RPC_SYSTEM,
        instruments.RPC_SERVICE,
        instruments.RPC_METHOD,
        instruments.RPC_GRPC_STATUS_CODE,
    ) == (
        rpc_attributes.RPC_SYSTEM,
        rpc_attributes.RPC_SERVICE,
        rpc_attributes.RPC_METHOD,
        rpc_attributes.RPC_GRPC_STATUS_CODE,
    )


@pytest.mark.parametrize(
    "name",
    [
        instruments.PLATFORM_DURATION,
        instruments.HSM_DURATION,
        instruments.VERIFY_DURATION,
        instruments.RPC_SERVER_DURATION,
    ],
)
def test_every_duration_is_recorded_in_seconds_into_second_buckets(name: str) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    histogram = instruments.duration(meter, name, "a duration")
    histogram.record(instruments.elapsed_seconds(10.0, 10.25))  # 250 ms
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics]
    assert metric.unit == "s"
    (point,) = metric.data.data_points
    assert point.sum == pytest.approx(0.25)
    assert point.explicit_bounds[0] == 0.0005 and point.explicit_bounds[-1] == 30
    # 0.25 s falls in the bucket (0.1, 0.25]
    index = list(point.explicit_bounds).index(0.25)
    assert point.bucket_counts[index] == 1
