"""Fuzzing a real sidecar: whatever a local process writes, the answer is documented and audited.

One sidecar (audit trail on, SQLite; access control on, so every byte passes the peer-credential
front and the workload guard, as in production) in front of the simulator, started once for this
module in an
event loop of its own thread, so that hypothesis drives it from plain synchronous tests with
grpc's default synchronous client, as an IM service in another language would. Three kinds of
input:

* valid requests of every RPC, mutated at the byte level (flips, insertions, deletions,
  truncation, splices of random bytes) and sent with a raw generic client;
* random ``x-yibao-tenant`` / ``x-yibao-operator`` values and extra metadata on a valid request;
* raw bytes written to the Unix socket: garbage, truncated HTTP/2 prefaces, a preface followed by
  garbage frames.

For every call: the status is OK or one of the (code, reason) pairs of docs/api.md's error table
(parsed from the document itself), with an ``ErrorInfo`` of our domain; never UNKNOWN, never
INTERNAL (documented, but a bug).
After each run: the sidecar still answers health checks, and every call that reached the chain has
exactly one intent and one outcome in the audit trail, linked, and the chain verifies.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.audit.verify import verify_store
from sidecar.config import AccessConfig
from sidecar.interceptors.caller import OPERATOR_KEY, TENANT_KEY, problem
from tests.audit_fixtures import AuditHsm
from tests.integration.conftest import (
    TENANT_METADATA,
    RunningSidecar,
    running_sidecar,
    settings_for,
)
from tests.integration.consent_support import consent_to, grant_request, subject_of
from tests.integration.functions_support import submission
from tests.integration.settlement_support import settle_request
from tests.integration.test_eligibility import question
from yibao_devkit.simulator.population import Person
from yibao_devkit.simulator.server import RunningSimulator, running_simulator

T = TypeVar("T")
API_MD = Path(__file__).resolve().parents[2] / "docs" / "api.md"
DOMAIN = "yibao-sidecar.gateway"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type 4, stream 0


def documented_statuses() -> set[tuple[str, str]]:
    """(status code, reason) of every row of the error table in docs/api.md."""
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([A-Z_]+)` \|", API_MD.read_text(), re.MULTILINE)
    assert len(rows) > 15, "the error table of docs/api.md was not found"
    return set(rows)


DOCUMENTED = documented_statuses()


def seeds(person: Person) -> dict[str, Message]:
    """A valid request of every RPC of both services, about a person who consented to all."""
    subject = subject_of(person)
    rid = uuid.uuid4().hex[:16]
    g, c = "/yibao.gateway.v1.InsuranceGateway/", "/yibao.gateway.v1.ConsentService/"
    return {
        g + "GetEnrollment": gateway.GetEnrollmentRequest(subject=subject),
        g + "GetAccount": gateway.GetAccountRequest(
            subject=subject, insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC
        ),
        g + "SubmitOffsiteRegistration": submission(person, f"reg-{rid}"),
        g + "ListOffsiteRegistrations": gateway.ListOffsiteRegistrationsRequest(subject=subject),
        g + "CancelOffsiteRegistration": gateway.CancelOffsiteRegistrationRequest(
            request_id=f"c-{rid}", subject=subject, registration_id="R0001", reason="moved"
        ),
        g + "SettleWithEVoucher": settle_request(person, "ec-" + rid, f"s-{rid}"),
        g + "GetSettlement": gateway.GetSettlementRequest(
            subject=subject, original_request_id=f"s-{rid}"
        ),
        g + "CancelSettlement": gateway.CancelSettlementRequest(
            request_id=f"cs-{rid}", subject=subject, original_request_id=f"s-{rid}"
        ),
        g + "CheckEligibility": question(person),
        c + "GrantConsent": grant_request(subject, common.PURPOSE_ENROLLMENT_QUERY),
        c + "RevokeConsent": consent.RevokeConsentRequest(request_id=f"r-{rid}", consent_id="x"),
        c + "ListConsents": consent.ListConsentsRequest(subject=subject),
    }


@dataclass
class Fuzzed:
    """The sidecar under fuzz, served from its own thread's event loop."""

    loop: asyncio.AbstractEventLoop
    running: RunningSidecar
    simulator: RunningSimulator
    socket_path: Path
    channel: grpc.Channel
    person: Person
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=60)

    def call(
        self, method: str, body: bytes, metadata: tuple[tuple[str, str], ...] = TENANT_METADATA
    ) -> None:
        """One raw call; its outcome must be OK or documented, with our ErrorInfo."""
        rpc = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            rpc(body, metadata=metadata, timeout=30)
            self.outcomes["OK", ""] += 1
            return
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()  # type: ignore[attr-defined]
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
        assert status is not None, f"{method}: {code.name} without google.rpc.Status"
        info = error_details_pb2.ErrorInfo()
        assert status.details and status.details[0].Unpack(info), f"{code.name}: no ErrorInfo"
        assert info.domain == DOMAIN
        assert (code.name, info.reason) in DOCUMENTED, (method, code.name, info.reason)
        assert info.reason != "INTERNAL", f"{method}: a bug in the sidecar (see its log)"
        self.outcomes[code.name, info.reason] += 1

    def healthy(self) -> bool:
        answer = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def trail(self) -> tuple[int, int]:
        """(intents, outcomes) of RPCs in the trail, after checking every outcome has its intent."""
        return self.run(_trail(self.running))


async def _trail(running: RunningSidecar) -> tuple[int, int]:
    audit = running.sidecar.audit
    assert audit is not None
    await audit.writer.flush()
    async with running.sidecar.store.transaction() as tx:
        rows = await tx.fetch_all(
            "SELECT kind, record_id, content FROM audit_records"
            " WHERE kind IN ('rpc.intent', 'rpc.outcome') ORDER BY chain, seq"
        )
    intents = {str(r["record_id"]) for r in rows if r["kind"] == "rpc.intent"}
    refs = Counter(
        re.search(rb'"ref":"([0-9a-f]+)"', bytes(r["content"])).group(1).decode()  # type: ignore[union-attr]
        for r in rows
        if r["kind"] == "rpc.outcome"
    )
    assert set(refs) == intents and set(refs.values()) <= {1}
    return len(intents), sum(refs.values())


@pytest.fixture(scope="module")
def fuzzed(audit_hsm: AuditHsm) -> Iterator[Fuzzed]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-sidecar", daemon=True)
    thread.start()
    directory = Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp"))
    stack = contextlib.AsyncExitStack()

    async def start() -> tuple[RunningSimulator, RunningSidecar]:
        simulator = await stack.enter_async_context(running_simulator(seed=42, population_size=20))
        policy = directory / "policy.toml"
        policy.write_text(  # this process may call everything: the front and the guards run
            f'[[caller]]\nname = "im"\nunix_uids = [{os.getuid()}]\ntenants = ["*"]\nrpcs = ["*"]\n'
        )
        access = AccessConfig(policy_file=policy, private_socket_parent=directory)
        settings = settings_for(simulator, directory, audit_hsm).model_copy(
            update={"access": access}
        )
        running = await stack.enter_async_context(running_sidecar(settings))
        return simulator, running

    try:
        simulator, running = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=120)
        person = simulator.app.population.examples().employee
        asyncio.run_coroutine_threadsafe(
            consent_to(running.channel, [subject_of(person)]), loop
        ).result(timeout=60)
        socket_path = running.settings.server.socket_path
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:  # default options
            yield Fuzzed(loop, running, simulator, socket_path, channel, person)
        [report] = asyncio.run_coroutine_threadsafe(_verified(running, audit_hsm), loop).result(
            timeout=60
        )
        assert report.ok, report.first
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        shutil.rmtree(directory, ignore_errors=True)


async def _verified(running: RunningSidecar, audit_hsm: AuditHsm) -> list[Any]:
    audit = running.sidecar.audit
    assert audit is not None
    await audit.writer.flush()
    # The sidecar is still serving: its own chain is the one open chain, named as an operator would.
    return await verify_store(
        running.sidecar.store, [audit_hsm.public_key], open_chains={audit.writer.chain}
    )


def mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (kind, position, bytes) edits: 0 flip, 1 insert, 2 delete, 3 truncate, 4 splice."""
    data = bytearray(seed)
    for kind, position, chunk in edits:
        at = position % (len(data) + 1)
        if kind == 0 and data:
            data[at % len(data)] ^= chunk[0] if chunk else 0xFF
        elif kind == 1:
            data[at:at] = chunk
        elif kind == 2:
            del data[at : at + max(1, len(chunk))]
        elif kind == 3:
            del data[at:]
        else:
            data[at : at + len(chunk)] = chunk
    return bytes(data)


EDITS = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.binary(min_size=0, max_size=12)),
    min_size=1,
    max_size=4,
)


@pytest.mark.slow
def test_mutated_requests_of_every_rpc_get_documented_answers_and_are_audited(
    fuzzed: Fuzzed,
) -> None:
    requests = {method: m.SerializeToString() for method, m in seeds(fuzzed.person).items()}
    before = fuzzed.trail()
    sent = 0

    @settings(
        max_examples=500,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(method=st.sampled_from(sorted(requests)), edits=EDITS)
    def one(method: str, edits: list[tuple[int, int, bytes]]) -> None:
        nonlocal sent
        sent += 1
        fuzzed.call(method, mutate(requests[method], edits))

    one()
    assert fuzzed.healthy()
    after = fuzzed.trail()
    assert after[0] - before[0] == after[1] - before[1] == sent
    reasons = {reason for _, reason in fuzzed.outcomes}
    assert "MALFORMED_REQUEST" in reasons and "INVALID_REQUEST" in reasons  # both kinds reached


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_ENUM: (-(2**31), 2**31 - 1),  # proto3 enums are open
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}


def scalar_fields(message: Message, depth: int = 0) -> list[tuple[Message, FieldDescriptor]]:
    """Every scalar field of ``message`` and of its sub-messages (set or not), a few levels deep."""
    found: list[tuple[Message, FieldDescriptor]] = []
    for f in message.DESCRIPTOR.fields:
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            found.append((message, f))
        elif depth < 3 and f.is_repeated:
            for item in list(getattr(message, f.name))[:2]:
                found += scalar_fields(item, depth + 1)
        elif depth < 3 and not f.message_type.GetOptions().map_entry:
            found += scalar_fields(getattr(message, f.name), depth + 1)
    return found


def value_for(f: FieldDescriptor) -> st.SearchStrategy[Any]:
    if f.type == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=80), st.from_regex(r"[0-9X]{0,20}", fullmatch=True))
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=80)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    low, high = _INT_RANGES[f.type]
    return st.one_of(st.integers(low, high), st.integers(-2, 3).filter(lambda v: low <= v))


@pytest.mark.slow
def test_well_formed_requests_with_random_field_values_get_documented_answers(
    fuzzed: Fuzzed,
) -> None:
    """Field-level mutations keep the wire format valid, so they reach the validators, the consent
    gate and the platform: every answer is still documented, every call audited."""
    requests = seeds(fuzzed.person)
    before = fuzzed.trail()
    sent = 0

    @settings(max_examples=400, deadline=None, derandomize=True, database=None)
    @given(method=st.sampled_from(sorted(requests)), data=st.data())
    def one(method: str, data: st.DataObject) -> None:
        nonlocal sent
        request = type(requests[method])()
        request.CopyFrom(requests[method])
        for _ in range(data.draw(st.integers(1, 3))):
            targets = scalar_fields(request)
            owner, f = targets[data.draw(st.integers(0, len(targets) - 1))]
            value = data.draw(value_for(f))
            if f.is_repeated:
                getattr(owner, f.name).append(value)
            else:
                setattr(owner, f.name, value)
        sent += 1
        fuzzed.call(method, request.SerializeToString())

    one()
    assert fuzzed.healthy()
    after = fuzzed.trail()
    assert after[0] - before[0] == after[1] - before[1] == sent


HANDLE = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789._-@ +:/", max_size=40)
PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=70)


def test_random_caller_metadata_is_accepted_exactly_when_the_rules_say_so(
    fuzzed: Fuzzed,
) -> None:
    body = consent.ListConsentsRequest(subject=subject_of(fuzzed.person)).SerializeToString()
    method = "/yibao.gateway.v1.ConsentService/ListConsents"
    before = fuzzed.trail()
    sent = 0

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(
        tenant=st.one_of(HANDLE, PRINTABLE, st.sampled_from(["acme-corp", "13912345678"])),
        operator=st.one_of(HANDLE, PRINTABLE, st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True)),
        extra=st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(["traceparent", "tracestate"]),
                    st.from_regex(r"x-[a-z0-9]{1,8}", fullmatch=True),
                ),
                PRINTABLE,
            ),
            max_size=3,
        ),
    )
    def one(tenant: str, operator: str, extra: list[tuple[str, str]]) -> None:
        nonlocal sent
        sent += 1
        calls = dict(fuzzed.outcomes)
        fuzzed.call(method, body, ((TENANT_KEY, tenant), (OPERATOR_KEY, operator), *extra))
        (outcome,) = [k for k, v in fuzzed.outcomes.items() if v != calls.get(k, 0)]
        acceptable = problem(TENANT_KEY, tenant) is None and problem(OPERATOR_KEY, operator) is None
        assert outcome == (
            ("OK", "") if acceptable else ("UNAUTHENTICATED", "CALLER_UNAUTHENTICATED")
        )

    one()
    assert fuzzed.healthy()
    after = fuzzed.trail()
    assert after[0] - before[0] == after[1] - before[1] == sent


RAW = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n: PREFACE[:n], st.integers(0, len(PREFACE))),
    st.builds(lambda tail: PREFACE + tail, st.binary(max_size=300)),
    st.builds(  # a preface, an empty SETTINGS frame, then any frame header and payload
        lambda header, payload: PREFACE + EMPTY_SETTINGS + header + payload,
        st.binary(min_size=9, max_size=9),
        st.binary(max_size=200),
    ),
)


def test_raw_bytes_on_the_socket_never_take_the_sidecar_down(fuzzed: Fuzzed) -> None:
    before = fuzzed.trail()

    @settings(max_examples=200, deadline=None, derandomize=True, database=None)
    @given(chunks=st.lists(RAW, min_size=1, max_size=3), half_close=st.booleans())
    def one(chunks: list[bytes], half_close: bool) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(fuzzed.socket_path))
            with contextlib.suppress(OSError):  # the server may hang up at the first bad byte
                for chunk in chunks:
                    raw.sendall(chunk)
                if half_close:
                    raw.shutdown(socket.SHUT_WR)

    one()
    assert fuzzed.healthy()
    fuzzed.call(
        "/yibao.gateway.v1.ConsentService/ListConsents",
        consent.ListConsentsRequest(subject=subject_of(fuzzed.person)).SerializeToString(),
    )
    assert fuzzed.outcomes["OK", ""] >= 1
    after = fuzzed.trail()
    assert after[0] - before[0] == after[1] - before[1] == 1  # garbage never reached the chain
