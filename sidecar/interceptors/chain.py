"""Runs an ordered list of filters around every unary RPC of the sidecar's own services.

grpc.aio offers interceptors that only see the method name; this one wraps the method handler so
that each filter sees the request, the metadata and the outcome, like an Envoy HTTP filter chain.
A ``GatewayError`` raised anywhere becomes the rich gRPC status of the error model; any other
exception becomes ``INTERNAL`` with no detail (the log records its type, never its text, which
could quote personal data).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from sidecar import errors

log = logging.getLogger(__name__)

Proceed = Callable[[Message], Awaitable[Message]]


@dataclass
class Call:
    """What the filters know about one RPC; filters may add to ``attributes``."""

    method: str  # "/yibao.gateway.v1.InsuranceGateway/GetEnrollment"
    metadata: dict[str, str]
    context: grpc.aio.ServicerContext[Any, Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def service(self) -> str:
        return self.method.rsplit("/", 2)[-2]

    @property
    def rpc(self) -> str:
        return self.method.rsplit("/", 1)[-1]


_current: contextvars.ContextVar[Call] = contextvars.ContextVar("yibao_call")


def current_call() -> Call:
    """The call being served (for services that need the caller the filters established)."""
    return _current.get()


class Filter(Protocol):
    async def __call__(self, call: Call, request: Message, proceed: Proceed) -> Message: ...


class FilterChain(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Applies ``filters`` (outermost first) to unary RPCs of the services in ``services``."""

    def __init__(self, filters: Sequence[Filter], services: Sequence[str]) -> None:
        self._filters = tuple(filters)
        self._services = frozenset(services)

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
        filters = self._filters

        async def run(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            call = Call(method=method, metadata=_metadata(context), context=context)
            _current.set(call)

            async def step(index: int, message: Message) -> Message:
                if index == len(filters):
                    result: Message = await inner(message, context)  # type: ignore[arg-type]
                    return result
                return await filters[index](call, message, lambda m: step(index + 1, m))

            try:
                return await step(0, request)
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
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: errors.GatewayError) -> None:
    """End the call with the error's rich status (code, message, google.rpc details)."""
    status = error.to_status()
    await context.abort(status.code, status.details, status.trailing_metadata)


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    pairs = context.invocation_metadata() or ()
    return {key: value for key, value in pairs if isinstance(value, str)}
