"""What a caller who writes arbitrary bytes and metadata gets from a real sidecar (both stores).

* bytes that do not parse as the request (bad wire data, bad UTF-8, unknown groups nested deeper
  than the parser allows) are INVALID_ARGUMENT / MALFORMED_REQUEST from our chain, not UNKNOWN
  from gRPC, and are access-logged and audited (size and SM3 of the bytes, never the bytes);
* a Timestamp outside 0001..9999 is INVALID_REQUEST on its field, and the call is audited;
* an operator or tenant that looks like personal data is refused and appears nowhere in plaintext;
* INVALID_ARGUMENT with very many bad fields still reaches a default client as INVALID_ARGUMENT.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.audit import payloads
from sidecar.audit.verify import verify_store
from sidecar.config import StoreConfig
from sidecar.observability.logs import JsonFormatter
from sidecar.store import Store, open_store
from tests.audit_fixtures import AuditHsm
from tests.integration.conftest import TENANT_METADATA, running_sidecar, settings_for
from tests.integration.consent_support import consent_to, grant_request
from tests.integration.settlement_support import settle_request
from tests.integration.test_audit_trail import raw_files
from tests.integration.test_gateway import details, subject_of
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

GATEWAY = gateway.DESCRIPTOR.services_by_name["InsuranceGateway"]
CONSENTS = consent.DESCRIPTOR.services_by_name["ConsentService"]
EVERY_METHOD = [f"/{s.full_name}/{m.name}" for s in (GATEWAY, CONSENTS) for m in s.methods]


def nested_groups(depth: int) -> bytes:
    """An unknown group (field 15) nested ``depth`` deep: start-group tags, then end-group tags."""
    return bytes([15 << 3 | 3]) * depth + bytes([15 << 3 | 4]) * depth


MALFORMED = {
    "truncated varint": b"\x08",
    "length past the end": b"\x0a\x05ab",
    "bad UTF-8 in a string": b"\x0a\x02\xff\xfe",
    "field number 0": b"\x00\x01",
    "deep unknown groups": nested_groups(200),
}


async def audit_records(
    store_config: StoreConfig, audit_hsm: AuditHsm
) -> list[tuple[dict[str, Any], bytes]]:
    """Every record's content and decrypted payload, in chain order; the chain verifies."""
    store = open_store(store_config)
    try:
        [report] = await verify_store(store, [audit_hsm.public_key])
        assert report.ok, report.first
        return await _decrypted(store, audit_hsm)
    finally:
        await store.close()


async def _decrypted(store: Store, audit_hsm: AuditHsm) -> list[tuple[dict[str, Any], bytes]]:
    async with store.transaction() as tx:
        rows = await tx.fetch_all(
            "SELECT record_id, data_key, content, payload FROM audit_records ORDER BY chain, seq"
        )
        keys = {
            str(row["key_id"]): bytes(row["wrapped"])
            for row in await tx.fetch_all("SELECT key_id, wrapped FROM audit_data_keys")
        }
    unwrapped = {k: await audit_hsm.keys.data_keys.unwrap(v) for k, v in keys.items()}
    found = []
    for row in rows:
        content = json.loads(bytes(row["content"]))
        payload = bytes(row["payload"] or b"")
        key = unwrapped.get(str(row["data_key"]))
        plain = payloads.decrypt(key, payload, str(row["record_id"]).encode()) if key else b""
        found.append((content, plain))
    return found


def rpc_records(records: list[tuple[dict[str, Any], bytes]]) -> list[tuple[dict[str, Any], bytes]]:
    return [(c, p) for c, p in records if str(c["kind"]).startswith("rpc.")]


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "sidecar.access" and r.getMessage() == "rpc"
    ]


async def raw_call(
    channel: grpc.aio.Channel, method: str, body: bytes, metadata: Any = TENANT_METADATA
) -> grpc.aio.AioRpcError | None:
    rpc = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    try:
        await rpc(body, metadata=metadata)
    except grpc.aio.AioRpcError as error:
        return error
    return None


async def test_malformed_bytes_are_refused_logged_and_audited_on_every_rpc(
    simulator: RunningSimulator,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sidecar.access")
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    sent: list[tuple[str, bytes]] = []
    async with running_sidecar(settings) as running:
        for method in EVERY_METHOD:
            for body in MALFORMED.values():
                error = await raw_call(running.channel, method, body)
                assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
                info, _ = details(error)
                assert (info.reason, info.domain) == ("MALFORMED_REQUEST", "yibao-sidecar.gateway")
                assert method.rsplit("/", 1)[1] in (error.details() or "")
                sent.append((method.rsplit("/", 1)[1], body))
        health = await running.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=None,
            response_deserializer=None,
        )(b"")
        assert health == b"\x08\x01"  # SERVING: the sidecar is still up
    assert simulator.app.calls.total == 0
    lines = access_lines(caplog)
    assert [(line["method"], line["reason"]) for line in lines] == [
        (rpc, "MALFORMED_REQUEST") for rpc, _ in sent
    ]
    assert all(line["tenant"] == "acme-corp" for line in lines)
    records = rpc_records(await audit_records(store_config, audit_hsm))
    intents = [(c, p) for c, p in records if c["kind"] == "rpc.intent"]
    outcomes = {str(c["ref"]): c for c, _ in records if c["kind"] == "rpc.outcome"}
    assert len(intents) == len(outcomes) == len(sent)
    for (content, payload), (rpc, body) in zip(intents, sent, strict=True):
        assert (content["rpc"], content["operator"], content["subject"]) == (rpc, "im-bot-01", "")
        assert json.loads(payload) == {
            "undecoded": {"bytes": len(body), "sm3": sm3_hex_bytes(body)}
        }
        outcome = outcomes[str(content["id"])]
        assert (outcome["status"], outcome["reason"]) == ("INVALID_ARGUMENT", "MALFORMED_REQUEST")


def sm3_hex_bytes(data: bytes) -> str:
    from cryptography.hazmat.primitives import hashes

    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


async def test_a_timestamp_out_of_range_is_invalid_and_audited(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
) -> None:
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    employee = subject_of(population.examples().employee)
    stamps = [(2**40, 0), (-(2**40), 0), (253_402_300_800, 0), (1, 1_000_000_000)]
    async with running_sidecar(settings) as running:
        stub = running.channel.unary_unary(
            f"/{CONSENTS.full_name}/GrantConsent",
            request_serializer=consent.GrantConsentRequest.SerializeToString,
            response_deserializer=consent.GrantConsentResponse.FromString,
        )
        for seconds, nanos in stamps:
            request = grant_request(employee, common.PURPOSE_SETTLEMENT)
            request.expire_time.seconds, request.expire_time.nanos = seconds, nanos
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub(request, metadata=TENANT_METADATA)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info, violations = details(caught.value)
            assert info.reason == "INVALID_REQUEST"
            assert violations == [("expire_time", "must be a valid timestamp")]
        listed = await running.channel.unary_unary(
            f"/{CONSENTS.full_name}/ListConsents",
            request_serializer=consent.ListConsentsRequest.SerializeToString,
            response_deserializer=consent.ListConsentsResponse.FromString,
        )(consent.ListConsentsRequest(subject=employee), metadata=TENANT_METADATA)
        assert list(listed.consents) == []  # nothing recorded
    records = rpc_records(await audit_records(store_config, audit_hsm))
    grants = [(c, p) for c, p in records if c["rpc"] == "GrantConsent"]
    assert [c["kind"] for c, _ in grants] == ["rpc.intent", "rpc.outcome"] * len(stamps)
    for content, payload in grants[::2]:
        assert len(str(content["subject"])) == 64  # the subject's pseudonym: it did decode
        assert f"seconds: {stamps[0][0]}".encode() in payload or b"text_format" in payload
    assert {c["reason"] for c, _ in grants[1::2]} == {"INVALID_REQUEST"}


PERSONAL_OPERATORS = {
    "resident ID": "11010519491231002X",
    "old resident ID": "110105491231002",
    "mobile": "13912345678",
    "mobile with dashes": "139-1234-5678",
    "mobile inside a handle": "op.13912345678",
    "e-mail": "zhang.san@corp.example",
    "name with a space": "Zhang San",
}  # names in Chinese characters cannot even be sent: gRPC metadata values are ASCII


async def test_an_operator_that_looks_personal_is_refused_and_stored_nowhere(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    request = gateway.GetEnrollmentRequest(subject=subject_of(population.examples().employee))
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [request.subject])
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        for key in ("x-yibao-operator", "x-yibao-tenant"):
            for value in PERSONAL_OPERATORS.values():
                metadata = {**dict(TENANT_METADATA), key: value}
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetEnrollment(request, metadata=tuple(metadata.items()))
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                info, _ = details(caught.value)
                assert (info.reason, dict(info.metadata)) == (
                    "CALLER_UNAUTHENTICATED",
                    {"header": key},
                )
                assert value not in (caught.value.details() or "")
                assert value not in str(rpc_status.from_call(caught.value))  # type: ignore[arg-type]
    assert simulator.app.calls.total == 0
    records = await audit_records(store_config, audit_hsm)
    refused = [c for c, _ in records if c["kind"] == "rpc.outcome"]
    assert sum(c["reason"] == "CALLER_UNAUTHENTICATED" for c in refused) == 2 * len(
        PERSONAL_OPERATORS
    )
    texts = [v for v in PERSONAL_OPERATORS.values()]
    everything = b"\n".join(json.dumps(c, ensure_ascii=False).encode() + p for c, p in records)
    assert [t for t in texts if t.encode() in everything] == []  # not even in the payloads
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert [t for t in texts if t in logged] == []
    raw = raw_files(short_dir / "audit-spool")
    if store_config.backend == "sqlite":
        raw += raw_files(store_config.sqlite_path.parent)
    assert [t for t in texts if t.encode() in raw] == []


def bad_bill(person: Any, items: int) -> gateway.SettleWithEVoucherRequest:
    """A settlement bill of ``items`` fee items, every field of every one bad."""
    fee = gateway.FeeItem(item_code="", item_name="", quantity="x", unit_price_fen=-1, total_fen=-1)
    return settle_request(person, "t" * 32, "bill-1", fee_items=[fee] * items, total_fen=items)


@pytest.mark.parametrize("items", [45, 500])  # 500: the most a bill may have
async def test_very_many_bad_fields_still_reach_a_default_client(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    items: int,
) -> None:
    person = population.examples().employee
    async with running_sidecar(settings_for(simulator, short_dir, audit_hsm)) as running:
        await consent_to(running.channel, [subject_of(person)])
        socket = running.settings.server.socket_path
        async with grpc.aio.insecure_channel(f"unix:{socket}") as plain:  # default options
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gateway_grpc.InsuranceGatewayStub(plain).SettleWithEVoucher(
                    bad_bill(person, items), metadata=TENANT_METADATA
                )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)  # type: ignore[arg-type]
    assert status is not None
    info, violations = details(caught.value)
    assert info.reason == "INVALID_REQUEST"
    total = int(info.metadata["violations"])
    assert total >= 3 * items  # code, name, quantity, price, total: each item at least thrice
    assert len(violations) == 21 and violations[-1][0] == ""
    assert f"and {total - 20} more" in violations[-1][1]
    assert all(field.startswith("fee_items[") for field, _ in violations[:20])
    assert violations[0][0].startswith("fee_items[0].")
    assert len(caught.value.details() or "") <= 1024
