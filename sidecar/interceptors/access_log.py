"""Logs one line per RPC: method, status, latency, tenant and trace ID, and no content."""

from __future__ import annotations

import logging
import re
import time

import grpc
from google.protobuf.message import Message

from sidecar import errors
from sidecar.interceptors.chain import Call, Continue

log = logging.getLogger("sidecar.access")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


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
            match = _TRACEPARENT.fullmatch(call.metadata.get("traceparent", ""))
            log.info(
                "rpc",
                extra={
                    "method": call.rpc,
                    "status": status.name,
                    "reason": reason,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "tenant": getattr(call.attributes.get("caller"), "tenant", ""),
                    # access control's policy name of the calling workload (never personal data)
                    "caller": getattr(call.attributes.get("access"), "caller", ""),
                    "trace_id": match.group(1) if match else "",
                },
            )
