"""Filter: a server span per RPC, continuing the caller's ``traceparent``, and RPC metrics."""

from __future__ import annotations

import time

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.trace import SpanKind, Status, StatusCode

from sidecar import errors
from sidecar.interceptors.chain import Call, Continue
from sidecar.observability import instruments
from sidecar.observability.telemetry import extract_parent


class Tracing:
    """Opens the RPC's span; inner filters and the platform client add child spans."""

    def __init__(self, tracer: trace.Tracer, meter: Meter) -> None:
        self._tracer = tracer
        self._duration = instruments.duration(
            meter, instruments.RPC_SERVER_DURATION, "gRPC server call latency (count: calls)"
        )

    async def __call__(self, call: Call, proceed: Continue) -> Message:
        started = time.perf_counter()
        status = grpc.StatusCode.OK
        with self._tracer.start_as_current_span(
            f"{call.service}/{call.rpc}",
            context=extract_parent(call.metadata),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": call.service, "rpc.method": call.rpc},
            record_exception=False,  # exception text could quote personal data
            set_status_on_exception=False,
        ) as span:
            context = span.get_span_context()
            if context.is_valid:
                call.trace_id = f"{context.trace_id:032x}"
            try:
                return await proceed()
            except errors.GatewayError as error:
                status = error.code
                span.set_attribute("yibao.error.reason", error.reason)
                raise
            except Exception:
                status = grpc.StatusCode.INTERNAL
                raise
            finally:
                span.set_attribute("rpc.grpc.status_code", status.value[0])
                if status != grpc.StatusCode.OK:
                    span.set_status(Status(StatusCode.ERROR, status.name))
                if call.caller is not None:
                    span.set_attribute("yibao.tenant", call.caller.tenant)
                labels = {
                    instruments.RPC_SYSTEM: "grpc",
                    instruments.RPC_SERVICE: call.service,
                    instruments.RPC_METHOD: call.rpc,
                    instruments.RPC_GRPC_STATUS_CODE: status.value[0],
                }
                elapsed = instruments.elapsed_seconds(started, time.perf_counter())
                self._duration.record(elapsed, labels)
