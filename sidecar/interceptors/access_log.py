"""Logs one line per RPC: method, status, latency, tenant and trace ID, and no content.

The trace ID is the RPC's server span's (``Tracing`` sets it on the call), so a log line leads to
its trace whether or not the caller sent a ``traceparent``.
"""

from __future__ import annotations

import logging
import time

import grpc
from google.protobuf.message import Message

from sidecar import errors
from sidecar.interceptors.chain import Call, Continue

log = logging.getLogger("sidecar.access")


class AccessLog:
    """Guard: the outermost one, so it sees the final status of every call (malformed ones too)."""

    async def __call__(self, call: Call, proceed: Continue) -> Message:
        started = time.perf_counter()
        status = grpc.StatusCode.OK
        reason = ""
        try:
            return await proceed()
        except errors.GatewayError as error:
            status, reason = error.code, error.reason
            raise
        except Exception:
            status, reason = grpc.StatusCode.INTERNAL, "INTERNAL"
            raise
        finally:
            log.info(
                "rpc",
                extra={
                    "method": call.rpc,
                    "status": status.name,
                    "reason": reason,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "tenant": call.caller.tenant if call.caller else "",
                    # access control's policy name of the calling workload (never personal data)
                    "caller": call.access.caller if call.access else "",
                    "trace_id": call.trace_id,
                },
            )
