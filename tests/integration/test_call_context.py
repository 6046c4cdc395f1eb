"""The servicer gets one typed CallContext per call from the chain, never another call's.

A servicer registered under ``ConsentService`` records what it is handed, through a real server
and the real chain (caller identification, tracing, a filter that sets the subject pseudonym).
Calls race each other with different tenants, operators, traceparents and deadlines: each
servicer invocation must see exactly its own, and a call the guards refuse never reaches it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar.config import ServerConfig
from sidecar.domain.subjects import Subject
from sidecar.interceptors.caller import CallerIdentity
from sidecar.interceptors.chain import Call, FilterChain, Proceed
from sidecar.interceptors.context import CallContext, Caller
from sidecar.interceptors.tracing import Tracing
from sidecar.serving.server import Registration, Server

SERVICE = consent.DESCRIPTOR.services_by_name["ConsentService"].full_name
_Servicer: Any = consent_grpc.ConsentServiceServicer


class Recording(_Servicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: dict[str, CallContext] = {}

    async def GrantConsent(
        self, request: consent.GrantConsentRequest, call: CallContext
    ) -> consent.GrantConsentResponse:
        await asyncio.sleep(0.01)  # let the racing calls interleave
        self.seen[request.request_id] = call
        return consent.GrantConsentResponse()


async def pseudonym_of_request(call: Call, request: Message, proceed: Proceed) -> Message:
    """Stands in for the consent gate: the subject's pseudonym and subject, set on the call."""
    call.subject_pseudonym = "p-" + getattr(request, "request_id")  # noqa: B009
    call.subject = Subject("01", getattr(request, "request_id"), "")  # noqa: B009
    return await proceed(request)


@pytest.fixture
async def served() -> AsyncIterator[tuple[grpc.aio.Channel, Recording]]:
    servicer = Recording()
    directory = Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp"))
    socket = directory / "s.sock"
    tracing = Tracing(TracerProvider().get_tracer("t"), MeterProvider().get_meter("m"))
    server = Server(
        [
            Registration(
                SERVICE, lambda s: consent_grpc.add_ConsentServiceServicer_to_server(servicer, s)
            )
        ],
        ServerConfig(
            socket_path=socket, socket_mode=0o600, max_concurrent_rpcs=64, grace_period_seconds=0.5
        ),
        interceptors=[
            FilterChain([tracing, CallerIdentity()], [pseudonym_of_request], services=[SERVICE])
        ],
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            yield channel, servicer
    finally:
        await server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def budget(index: int) -> float:
    """5 s to 100 s, each 8 % above the one before."""
    return 5.0 * 1.08**index


def traceparent(index: int) -> str:
    return f"00-{index + 1:032x}-{index + 1:016x}-01"


async def test_each_call_gets_its_own_context_however_calls_interleave(
    served: tuple[grpc.aio.Channel, Recording],
) -> None:
    channel, servicer = served
    stub = consent_grpc.ConsentServiceStub(channel)

    sent: dict[int, float] = {}

    async def one(index: int) -> None:
        metadata = (
            ("x-yibao-tenant", f"tenant-{index}"),
            ("x-yibao-operator", f"op-{index}"),
            ("traceparent", traceparent(index)),
        )
        timeout = None if index % 3 == 0 else budget(index)
        sent[index] = time.monotonic()  # the chain's deadlines are on this clock, too
        await stub.GrantConsent(
            consent.GrantConsentRequest(request_id=f"r{index}"), metadata=metadata, timeout=timeout
        )

    await asyncio.gather(*(one(i) for i in range(40)))
    assert len(servicer.seen) == 40
    for index in range(40):
        call = servicer.seen[f"r{index}"]
        assert call.caller == Caller(tenant=f"tenant-{index}", operator=f"op-{index}")
        assert call.identified is call.caller
        assert call.method == f"/{SERVICE}/GrantConsent" and call.rpc == "GrantConsent"
        assert call.trace_id == f"{index + 1:032x}"  # the server span continues the caller's
        assert call.subject_pseudonym == f"p-r{index}"
        assert call.subject == Subject("01", f"r{index}", "")
        assert call.access is None  # no access control in this chain
        at = call.deadline.at
        if index % 3 == 0:
            assert at is None and call.deadline.left() is None  # no gRPC deadline: unbounded
        else:
            # grpc-timeout travels rounded up to a few significant digits, so the server's
            # deadline may be a little later than the client's (3 % at most seen); budgets 8 %
            # apart still tell each call's own deadline from its neighbours'
            expected = sent[index] + budget(index)
            assert at is not None and expected - 0.05 < at < expected + 0.04 * budget(index)
        with pytest.raises(AttributeError):
            call.caller = None  # type: ignore[misc]  # frozen: set once by the chain


async def test_a_call_refused_by_a_guard_never_reaches_the_servicer(
    served: tuple[grpc.aio.Channel, Recording],
) -> None:
    channel, servicer = served
    stub = consent_grpc.ConsentServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GrantConsent(
            consent.GrantConsentRequest(request_id="anonymous"),
            metadata=(("x-yibao-tenant", "acme"), ("x-yibao-operator", "13800138000")),
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "13800138000" not in (refused.value.details() or "")
    assert servicer.seen == {}


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-" + "0" * 32 + "-" + "0" * 16 + "-01",  # all-zero IDs are invalid in W3C
        "00-ABCDEF" + "0" * 26 + "-" + "1" * 16 + "-01",  # upper case
        "00-" + "1" * 32 + "-" + "1" * 16 + "-01-extra",
        "zz-13800138000138001380013800138-" + "1" * 16 + "-01",
        "x" * 8000,
    ],
)
async def test_a_malformed_traceparent_never_becomes_the_calls_trace_id(
    served: tuple[grpc.aio.Channel, Recording], traceparent: str
) -> None:
    channel, servicer = served
    metadata = (("x-yibao-tenant", "t"), ("x-yibao-operator", "o"), ("traceparent", traceparent))
    await consent_grpc.ConsentServiceStub(channel).GrantConsent(
        consent.GrantConsentRequest(request_id="r"), metadata=metadata
    )
    trace_id = servicer.seen["r"].trace_id
    assert len(trace_id) == 32 and int(trace_id, 16) != 0  # the server span's own root trace
    assert trace_id not in traceparent.lower()
