"""The audit trail on the real request path, on both store back ends.

* every RPC (answered, refused by a filter, invalid, unimplemented) and every platform
  transaction has an intent and exactly one outcome, and the chain verifies;
* after a run of every implemented RPC, neither the SQLite files nor the PostgreSQL tables (nor
  the spool) hold any synthetic person's ID number, name or platform person number in plaintext;
* when the intent cannot be written the RPC fails UNAVAILABLE / AUDIT_UNAVAILABLE and the
  platform simulator receives nothing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.audit.verify import verify_store
from sidecar.config import StoreConfig
from sidecar.simulator.population import Population
from sidecar.simulator.server import RunningSimulator
from sidecar.store import Store, open_store
from tests.audit_fixtures import AuditHsm
from tests.integration.conftest import (
    TENANT_METADATA,
    RunningSidecar,
    running_sidecar,
    settings_for,
)
from tests.integration.consent_support import ALL_PURPOSES, consent_to
from tests.integration.functions_support import (
    cancel,
    get_account,
    list_registrations,
    submission,
    submit,
)
from tests.integration.settlement_support import settle_request
from tests.integration.test_eligibility import question
from tests.integration.test_gateway import details, subject_of

CONTACT_PHONE = "13912345678"  # what functions_support.submission sends (no run of zeros
# that the simulator's serials, division + time + zero-padded counter, could contain)
ADDRESS = "上海市浦东新区世纪大道1号"
DIAGNOSIS = "急性上呼吸道感染"  # what settlement_support.settle_request sends
AUDIT_TABLES = ("audit_records", "audit_data_keys", "audit_checkpoints")


async def every_rpc(sidecar: RunningSidecar, simulator: RunningSimulator) -> int:
    """Every RPC of the contract for several people, plus refusals; the number of RPCs made."""
    population = simulator.app.population
    gateway_stub = gateway_grpc.InsuranceGatewayStub(sidecar.channel)
    examples = population.examples()
    consenting = [examples.employee, examples.resident, examples.suspended, examples.unknown]
    await consent_to(sidecar.channel, [subject_of(person) for person in consenting])
    made = len(consenting) * len(ALL_PURPOSES)  # GrantConsent calls

    async def attempt(call: Awaitable[object]) -> None:
        nonlocal made
        made += 1
        with contextlib.suppress(grpc.aio.AioRpcError):  # refusals are audited too
            await call

    for n, person in enumerate(consenting):
        await attempt(
            gateway_stub.GetEnrollment(
                gateway.GetEnrollmentRequest(subject=subject_of(person)), metadata=TENANT_METADATA
            )
        )
        await attempt(gateway_stub.CheckEligibility(question(person), metadata=TENANT_METADATA))
        await attempt(get_account(sidecar, person))
        made += 1
        try:
            registration = (await submit(sidecar, submission(person, f"reg-{n}"))).registration
        except grpc.aio.AioRpcError:
            registration = None
        await attempt(list_registrations(sidecar, person))
        if registration is not None:
            await attempt(cancel(sidecar, person, registration.registration_id, f"cancel-{n}"))
        settled = None
        if person.psn_no:  # the platform issues e-vouchers to people it knows
            token = simulator.app.issue_ec_token(person.certno)
            made += 1
            with contextlib.suppress(grpc.aio.AioRpcError):
                settled = await gateway_stub.SettleWithEVoucher(
                    settle_request(person, token, f"settle-{n}"), metadata=TENANT_METADATA
                )
        await attempt(
            gateway_stub.GetSettlement(
                gateway.GetSettlementRequest(
                    subject=subject_of(person), original_request_id=f"settle-{n}"
                ),
                metadata=TENANT_METADATA,
            )
        )
        if settled is not None:
            await attempt(
                gateway_stub.CancelSettlement(
                    gateway.CancelSettlementRequest(
                        request_id=f"cancel-s-{n}",
                        subject=subject_of(person),
                        settlement_id=settled.settlement.settlement_id,
                    ),
                    metadata=TENANT_METADATA,
                )
            )
    await attempt(
        gateway_stub.GetEnrollment(
            gateway.GetEnrollmentRequest(subject=subject_of(examples.employee))
        )
    )  # no caller metadata
    not_consenting = population.people[10]  # refused by the consent gate, recorded all the same
    await attempt(
        gateway_stub.GetEnrollment(
            gateway.GetEnrollmentRequest(subject=subject_of(not_consenting)),
            metadata=TENANT_METADATA,
        )
    )
    grants = consent_grpc.ConsentServiceStub(sidecar.channel)
    await attempt(
        grants.ListConsents(
            consent.ListConsentsRequest(subject=subject_of(examples.employee)),
            metadata=TENANT_METADATA,
        )
    )
    return made


def identifiers(population: Population) -> list[str]:
    """The synthetic population's ID numbers and names."""
    return [text for person in population.people for text in (person.certno, person.psn_name)]


def forms(texts: list[str]) -> list[bytes]:
    return [form for text in texts for form in (text.encode(), text.encode().hex().encode())]


async def leaks_by_table(store: Store, texts: list[str]) -> dict[str, list[str]]:
    """Which of ``texts`` each table of the store holds in plaintext (any column, any row)."""
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if store.dialect == "sqlite"
        else "SELECT table_name AS name FROM information_schema.tables"
        " WHERE table_schema = current_schema()"
    )
    found: dict[str, list[str]] = {}
    async with store.transaction() as tx:
        names = [str(row["name"]) for row in await tx.fetch_all(query)]
        assert set(AUDIT_TABLES) <= set(names)
        for table in names:
            rows = await tx.fetch_all(f"SELECT * FROM {table}")
            raw = b"\n".join(
                value if isinstance(value, bytes) else str(value).encode()
                for row in rows
                for value in row.values()
            )
            hits = [text for text in texts if text.encode() in raw]
            if hits:
                found[table] = hits
    return found


def raw_files(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


async def audit_contents(store: Store) -> list[dict[str, object]]:
    async with store.transaction() as tx:
        rows = await tx.fetch_all("SELECT content FROM audit_records ORDER BY chain, seq")
    return [json.loads(bytes(row["content"])) for row in rows]


async def test_every_call_is_recorded_and_no_identifier_is_stored_in_plaintext(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
) -> None:
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    async with running_sidecar(settings) as running:
        made = await every_rpc(running, simulator)
    store = open_store(store_config)
    try:
        contents = await audit_contents(store)
        [report] = await verify_store(store, [audit_hsm.public_key])
        leaks = await leaks_by_table(store, identifiers(population))
    finally:
        await store.close()
    assert report.ok, report.first
    kinds = Counter(str(c["kind"]) for c in contents)
    assert kinds["rpc.intent"] == kinds["rpc.outcome"] == made
    platform_calls = simulator.app.calls.total
    assert kinds["tx.intent"] == kinds["tx.outcome"] == platform_calls > 0
    outcomes = Counter(str(c["ref"]) for c in contents if "ref" in c)
    intents = {str(c["id"]) for c in contents if str(c["kind"]).endswith(".intent")}
    assert set(outcomes) == intents and set(outcomes.values()) == {1}
    rpcs = {str(c["rpc"]) for c in contents if c["kind"] == "rpc.intent"}
    assert rpcs == {
        "GetEnrollment", "CheckEligibility", "GetAccount", "SubmitOffsiteRegistration",
        "ListOffsiteRegistrations", "CancelOffsiteRegistration", "SettleWithEVoucher",
        "GetSettlement", "CancelSettlement", "GrantConsent", "ListConsents",
    }  # fmt: skip
    ok = {str(c["rpc"]) for c in contents if c["kind"] == "rpc.outcome" and c["status"] == "OK"}
    assert {"SettleWithEVoucher", "CancelSettlement", "SubmitOffsiteRegistration"} <= ok
    refused = {str(c.get("reason")) for c in contents if c["kind"] == "rpc.outcome"}
    assert {"", "CALLER_UNAUTHENTICATED", "CONSENT_REQUIRED", "PERSON_NOT_FOUND"} <= refused
    assert leaks == {}  # every table, every column, both back ends
    raw = raw_files(short_dir / "audit-spool")
    if store_config.backend == "sqlite":
        raw += raw_files(store_config.sqlite_path.parent)  # the database file, WAL and all
        assert len(raw) > 10_000
    assert [form for form in forms(identifiers(population)) if form in raw] == []


async def test_no_contact_details_or_person_numbers_in_plaintext_anywhere(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
) -> None:
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    async with running_sidecar(settings) as running:
        await every_rpc(running, simulator)
    psn_nos = [person.psn_no for person in population.people if person.psn_no]
    store = open_store(store_config)
    try:
        leaks = await leaks_by_table(store, [CONTACT_PHONE, ADDRESS, DIAGNOSIS, *psn_nos])
    finally:
        await store.close()
    assert not any(table.startswith("audit_") for table in leaks)  # never the trail's tables
    assert leaks == {}, leaks


async def test_no_intent_no_platform_call(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
) -> None:
    """The trail's table is renamed away under the running sidecar (the rest of the store, the
    consent ledger included, still works): the RPC fails and the platform sees nothing."""
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    employee = subject_of(population.examples().employee)
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [employee])
        audit = running.sidecar.audit
        assert audit is not None
        await audit.writer.flush()
        with renamed(store_config, "audit_records", "audit_records_away"):
            stub = gateway_grpc.InsuranceGatewayStub(running.channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetEnrollment(
                    gateway.GetEnrollmentRequest(subject=employee), metadata=TENANT_METADATA
                )
            await audit.writer.flush()
            assert audit.writer.spool.pending >= 4  # RPC and sign-in intents, refusal, outcome
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert details(caught.value)[0].reason == "AUDIT_UNAVAILABLE"
        assert simulator.app.calls.total == 0  # not even the sign-in was sent
        await audit.writer.replay()
        assert audit.writer.spool.pending == 0
    store = open_store(store_config)
    try:
        contents = await audit_contents(store)
        [report] = await verify_store(store, [audit_hsm.public_key])
    finally:
        await store.close()
    assert report.ok, report.first
    refusals = [c for c in contents if c.get("error") == "AuditUnavailable"]
    assert [c["kind"] for c in refusals] == ["tx.outcome", "rpc.outcome"]
    assert refusals[0]["infno"] == "9001" and refusals[1]["reason"] == "AUDIT_UNAVAILABLE"


@contextlib.contextmanager
def renamed(store: StoreConfig, table: str, away: str) -> Iterator[None]:
    """``table`` renamed to ``away`` from outside the sidecar, and back."""

    def rename(old: str, new: str) -> None:
        if store.backend == "sqlite":
            with contextlib.closing(sqlite3.connect(store.sqlite_path, isolation_level=None)) as db:
                db.execute(f"ALTER TABLE {old} RENAME TO {new}")
        else:
            with psycopg.connect(store.postgresql_dsn or "", autocommit=True) as db:
                db.execute(f"ALTER TABLE {old} RENAME TO {new}")  # type: ignore[arg-type]

    rename(table, away)
    try:
        yield
    finally:
        rename(away, table)
