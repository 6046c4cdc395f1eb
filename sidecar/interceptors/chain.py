"""Runs the filters around every unary RPC of the sidecar's own services, and decodes the request.

grpc.aio offers interceptors that only see the method name; this one wraps the method handler so
that each filter sees the call, the request and the outcome, like an Envoy HTTP filter chain.

gRPC hands the chain the request's bytes as they arrived (the handler's deserializer is replaced by
the identity), and the chain decodes them itself at one defined point: after the *guards* (the
filters that log, trace and audit the call and identify and authorize the caller) and before the
*filters* that look at the request. So an unknown peer is refused before a byte of its request is
parsed, and bytes that do not parse as the request message are refused by the chain with
``INVALID_ARGUMENT`` / ``MALFORMED_REQUEST`` — access-logged and audited like any other refusal —
instead of gRPC's own ``UNKNOWN``. Guards cannot see the decoded request: their ``proceed`` takes
no message.

The servicer is called with the request and the call's ``CallContext`` (caller, deadline, trace
ID, access decision, subject pseudonym; ``context.py``) in place of gRPC's servicer context, so
it gets what the chain established explicitly, typed.

A ``GatewayError`` raised anywhere becomes the rich gRPC status of the error model; any other
exception becomes ``INTERNAL`` with no detail (the log records its type, never its text, which
could quote personal data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Error as ProtobufError
from google.protobuf.message import Message

from sidecar import errors
from sidecar.deadlines import NO_DEADLINE, Clock, Deadline
from sidecar.domain.subjects import Subject
from sidecar.interceptors.context import AccessDecision, CallContext, Caller, traceparent_trace_id

log = logging.getLogger(__name__)

Proceed = Callable[[Message], Awaitable[Message]]
Continue = Callable[[], Awaitable[Message]]
Decode = Callable[[bytes], Message]


@dataclass(eq=False)  # identity: filters key their own per-call state by the call
class Call:
    """What the filters know about one RPC while it passes them; each typed field is set by the
    filter whose job it is (``sidecar/interceptors/context.py``), and the servicer gets them as
    one frozen ``CallContext`` (:meth:`established`)."""

    method: str  # "/yibao.gateway.v1.InsuranceGateway/GetEnrollment"
    metadata: dict[str, str]
    context: grpc.aio.ServicerContext[Any, Any]
    body: bytes = b""  # the request as it arrived; guards may measure it, never parse it
    deadline: Deadline = NO_DEADLINE  # the caller's gRPC deadline (the chain)
    trace_id: str = ""  # the caller's traceparent (the chain), then the server span's (tracing)
    caller: Caller | None = None  # CallerIdentity
    access: AccessDecision | None = None  # AccessControl, allowed or refused
    subject_pseudonym: str | None = None  # ConsentGate
    subject: Subject | None = None  # ConsentGate: the request's data subject, validated once

    @property
    def service(self) -> str:
        return self.method.rsplit("/", 2)[-2]

    @property
    def rpc(self) -> str:
        return self.method.rsplit("/", 1)[-1]

    def established(self) -> CallContext:
        """What the servicer is handed: the call as the filters left it, frozen."""
        return CallContext(
            method=self.method,
            deadline=self.deadline,
            trace_id=self.trace_id,
            caller=self.caller,
            access=self.access,
            subject_pseudonym=self.subject_pseudonym,
            subject=self.subject,
        )


class Guard(Protocol):
    """A filter that runs before the request is decoded: it sees the call, not the request."""

    async def __call__(self, call: Call, proceed: Continue) -> Message: ...


class Filter(Protocol):
    """A filter that runs after the request is decoded."""

    async def __call__(self, call: Call, request: Message, proceed: Proceed) -> Message: ...


def decode(call: Call, deserialize: Decode) -> Message:
    """The request message of ``call.body``, or ``MALFORMED_REQUEST``.

    The one place the parser's exceptions are caught: upb raises ``DecodeError`` (a
    ``google.protobuf.message.Error``) for bad wire data, bad UTF-8 in a string field and nesting
    deeper than its limit (unknown groups included).
    """
    try:
        return deserialize(call.body)
    except ProtobufError:
        raise errors.malformed_request(call.rpc) from None


class FilterChain(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Applies ``guards``, decodes, then applies ``filters`` (each outermost first) to the unary
    RPCs of the services in ``services``."""

    def __init__(
        self,
        guards: Sequence[Guard],
        filters: Sequence[Filter] = (),
        *,
        services: Sequence[str],
        clock: Clock = time.monotonic,
    ) -> None:
        self._guards = tuple(guards)
        self._filters = tuple(filters)
        self._services = frozenset(services)
        self._clock = clock  # the calls' deadlines are on it

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        service = method.rsplit("/", 2)[-2] if method.count("/") >= 2 else ""
        if handler is None or handler.unary_unary is None or service not in self._services:
            return handler
        inner = handler.unary_unary
        deserialize: Decode | None = handler.request_deserializer
        if deserialize is None:  # our services always have generated message classes
            raise ValueError(f"{method}: no request deserializer to decode with")
        guards, filters, clock = self._guards, self._filters, self._clock

        async def run(body: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            metadata = _metadata(context)
            call = Call(
                method=method,
                metadata=metadata,
                context=context,
                body=body,
                deadline=Deadline.of_budget(context.time_remaining(), clock),
                trace_id=traceparent_trace_id(metadata),
            )

            async def step(index: int, message: Message) -> Message:
                if index == len(filters):
                    # Our servicers take the CallContext where gRPC's servicers take its context.
                    result: Message = await inner(message, call.established())  # type: ignore[arg-type]
                    return result
                return await filters[index](call, message, lambda m: step(index + 1, m))

            async def guard(index: int) -> Message:
                if index == len(guards):
                    return await step(0, decode(call, deserialize))
                return await guards[index](call, lambda: guard(index + 1))

            try:
                return await guard(0)
            except errors.GatewayError as error:
                await _abort(context, error)
            except grpc.aio.AbortError:
                raise
            except NotImplementedError:
                # The generated base servicer's answer for an RPC that is not built yet.
                await _abort(context, errors.not_implemented(method))
            except Exception as exc:
                log.error(
                    "rpc.unexpected_error", extra={"method": method, "error": type(exc).__name__}
                )
                await _abort(context, errors.internal())
            raise AssertionError("unreachable: abort raises")

        return grpc.unary_unary_rpc_method_handler(
            run,
            request_deserializer=None,  # the bytes as they arrived: decode() above
            response_serializer=handler.response_serializer,
        )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: errors.GatewayError) -> None:
    """End the call with the error's rich status (code, message, google.rpc details)."""
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    pairs = context.invocation_metadata() or ()
    return {key: value for key, value in pairs if isinstance(value, str)}
