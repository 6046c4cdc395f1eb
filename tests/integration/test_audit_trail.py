"""The audit trail on the real request path, on both store back ends.

* every RPC (answered, refused by a filter, invalid, unimplemented) and every platform
  transaction has an intent and exactly one outcome, and the chain verifies;
* after a run of every implemented RPC, neither the SQLite files (db, WAL), the PostgreSQL tables
  nor a ``pg_dump`` of the schema, the spool, nor any log line at DEBUG hold any synthetic
  person's ID number, name, phone, e-voucher token or platform person number in plaintext, nor
  an unkeyed SHA-256 / SM3 of any of them;
* the digests the store does hold (pseudonyms, idempotency keys) withstand a brute force over
  every ID number that fits the masked form the demo prints;
* when the intent cannot be written the RPC fails UNAVAILABLE / AUDIT_UNAVAILABLE and the
  platform simulator receives nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from cryptography.hazmat.primitives import hashes

from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.audit.verify import verify_store
from sidecar.config import StoreConfig
from sidecar.domain.validation import resident_id_check_char
from sidecar.observability import logs
from sidecar.observability.masking import mask_id
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
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

CONTACT_PHONE = "13912345678"  # what functions_support.submission sends (no run of zeros
# that the simulator's serials, division + time + zero-padded counter, could contain)
ADDRESS = "上海市浦东新区世纪大道1号"
DIAGNOSIS = "急性上呼吸道感染"  # what settlement_support.settle_request sends
AUDIT_TABLES = ("audit_records", "audit_data_keys", "audit_checkpoints")


async def every_rpc(
    sidecar: RunningSidecar, simulator: RunningSimulator, tokens: list[str] | None = None
) -> int:
    """Every RPC of the contract for several people, plus refusals; the number of RPCs made
    (the e-voucher tokens issued are appended to ``tokens``)."""
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
            if tokens is not None:
                tokens.append(token)
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


def sm3_hex(data: bytes) -> str:
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize().hex()


def subject_encodings(number: str) -> list[bytes]:
    """Every plausible way a digest of a resident ID number could have been made."""
    return [
        form.encode()
        for form in (number, f"01|{number}", f"01:{number}", f"1:{number}", f"1|{number}",
                     f"01\x1f{number}", f"1\x1f{number}")
    ]  # fmt: skip


def unkeyed_digests(texts: list[str]) -> list[str]:
    """SHA-256 and SM3 (hex, both cases) of each text, and of each subject encoding."""
    digests = []
    for text in texts:
        for data in {text.encode(), *subject_encodings(text)}:
            for hexed in (hashlib.sha256(data).hexdigest(), sm3_hex(data)):
                digests += [hexed, hexed.upper()]
    return digests


@contextlib.contextmanager
def debug_log_lines() -> Iterator[list[str]]:
    """The sidecar's JSON log lines at DEBUG while the block runs (the simulator's own lines,
    the platform's side, left out)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("DEBUG", stream)
    lines: list[str] = []
    try:
        yield lines
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for line in stream.getvalue().splitlines():
            logger = str(json.loads(line).get("logger", ""))
            if not logger.startswith(("yibao_devkit.simulator", "hypercorn")):
                lines.append(line)


def pg_dump(store: StoreConfig) -> bytes:
    """``pg_dump`` of the test's schema (its conninfo selects it), schema and data."""
    dsn = store.postgresql_dsn or ""
    match = re.search(r"search_path=(\w+)", dsn)
    assert match is not None
    result = subprocess.run(
        ["pg_dump", "--schema", match.group(1), "--dbname", dsn],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return result.stdout


def at_rest(store_config: StoreConfig, short_dir: Path, *, wal: bool = False) -> bytes:
    """Every byte the run left on disk or in the database: the spool, and the SQLite files
    (database, WAL, shared memory) or a ``pg_dump`` of the schema."""
    raw = raw_files(short_dir / "audit-spool")
    if store_config.backend == "sqlite":
        files = sorted(p.name for p in store_config.sqlite_path.parent.iterdir())
        assert not wal or f"{store_config.sqlite_path.name}-wal" in files
        raw += raw_files(store_config.sqlite_path.parent)
        assert len(raw) > 10_000
    else:
        dump = pg_dump(store_config)
        assert b"settlement_records" in dump and b"COPY" in dump
        raw += dump
    return raw


@pytest.mark.slow
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
    tokens: list[str] = []
    with debug_log_lines() as lines:
        async with running_sidecar(settings) as running:
            made = await every_rpc(running, simulator, tokens)
            assert running.sidecar.audit is not None
            await running.sidecar.audit.writer.flush()
            live = at_rest(store_config, short_dir, wal=True)  # while the WAL still exists
    raw = live + at_rest(store_config, short_dir)  # after the last checkpoint and close
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
    assert len(tokens) >= 2 and len(lines) > 50
    secrets_ = [*identifiers(population), CONTACT_PHONE, *tokens]
    needles = [*forms(secrets_), *(d.encode() for d in unkeyed_digests(secrets_))]
    assert [needle for needle in needles if needle in raw] == []
    logged = "\n".join(lines).encode()
    assert [needle for needle in needles if needle in logged] == []


def candidates(masked: str) -> list[str]:
    """Every resident ID number that fits ``110105********1234`` (what ``mask_id`` prints): the
    hidden birth date any calendar day of 1900-2030, the check character the one shown."""
    prefix, suffix = masked[:6], masked[-4:]
    found = []
    day, last = dt.date(1900, 1, 1), dt.date(2030, 12, 31)
    while day <= last:
        body = f"{prefix}{day:%Y%m%d}{suffix[:3]}"
        if resident_id_check_char(body) == suffix[3]:
            found.append(body + suffix[3])
        day += dt.timedelta(days=1)
    return found


def brute_force(stored: set[str], masked: str) -> list[str]:
    """The numbers fitting ``masked`` whose unkeyed SHA-256 or SM3 (of any plausible encoding)
    is one of the ``stored`` digests: what an attacker with a copy of the store would find."""
    return [
        number
        for number in candidates(masked)
        if any(
            hashlib.sha256(data).hexdigest() in stored or sm3_hex(data) in stored
            for data in subject_encodings(number)
        )
    ]


def unkeyed_payload_digests(request: Any) -> set[str]:
    """SHA-256 and SM3 of a request without its request_id (how payloads used to be digested)."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.request_id = ""
    data = copy.SerializeToString(deterministic=True)
    plain = hashlib.sha256(data).hexdigest()
    return {plain, sm3_hex(data), hashlib.sha256(plain.encode()).hexdigest()}


async def stored_digests(store: Store) -> dict[str, set[str]]:
    """Every 32- or 64-digit hex string in any column of any table, and the digest columns."""
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if store.dialect == "sqlite"
        else "SELECT table_name AS name FROM information_schema.tables"
        " WHERE table_schema = current_schema()"
    )
    hexes = re.compile(rb"[0-9a-fA-F]{64}|[0-9a-fA-F]{32}")
    found: dict[str, set[str]] = {"any": set()}
    columns = {
        "settlement": "SELECT subject_sha256 AS d FROM settlement_records"
        " UNION SELECT payload_sha256 FROM settlement_records"
        " UNION SELECT payload_sha256 FROM settlement_cancel_keys",
        "offsite": "SELECT payload_sha256 AS d FROM offsite_requests",
        "consent": "SELECT subject AS d FROM consent_grants"
        " UNION SELECT payload_digest FROM consent_requests",
    }
    async with store.transaction() as tx:
        for table in [str(row["name"]) for row in await tx.fetch_all(query)]:
            for row in await tx.fetch_all(f"SELECT * FROM {table}"):
                for value in row.values():
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    found["any"].update(m.decode() for m in hexes.findall(raw))
        for name, sql in columns.items():
            found[name] = {str(row["d"]) for row in await tx.fetch_all(sql)}
    return found


@pytest.mark.slow
async def test_no_stored_digest_gives_an_id_number_back_by_brute_force(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
) -> None:
    """After real traffic, the settlement, offsite and consent digests (and every other hex
    string in the store) are tried against every ID number that fits the masked form the demo
    prints, with unkeyed SHA-256 and SM3 of every plausible encoding: nothing is found. The
    payload digests are also tried against the exact requests sent (which only the true number
    could match)."""
    settings = settings_for(simulator, short_dir, audit_hsm).model_copy(
        update={"store": store_config}
    )
    tokens: list[str] = []
    async with running_sidecar(settings) as running:
        await every_rpc(running, simulator, tokens)
    store = open_store(store_config)
    try:
        stored = await stored_digests(store)
    finally:
        await store.close()
    for name in ("settlement", "offsite", "consent"):
        assert len(stored[name]) >= 2, name  # real traffic left digests of each kind
        assert stored[name] <= stored["any"] | {""}
    examples = population.examples()
    people = [examples.employee, examples.resident, examples.suspended, examples.unknown]
    # the attack works: a digest made the old way gives the number back
    planted = {hashlib.sha256(f"01|{people[0].certno}".encode()).hexdigest()}
    assert brute_force(planted, mask_id(people[0].certno)) == [people[0].certno]
    assert 3000 < len(candidates(mask_id(people[0].certno))) < 6000
    for person in people:
        assert brute_force(stored["any"], mask_id(person.certno)) == []
    sent = [submission(person, f"reg-{n}") for n, person in enumerate(people)]
    settled = [(n, person) for n, person in enumerate(people) if person.psn_no]
    sent += [
        settle_request(person, token, f"settle-{n}")
        for (n, person), token in zip(settled, tokens, strict=True)
    ]
    for request in sent:
        assert unkeyed_payload_digests(request).isdisjoint(stored["any"])


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


async def test_no_journal_no_platform_call(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
) -> None:
    """``durability = "journal"``: the journal's volume stops taking writes under the running
    sidecar (its file handle becomes read-only, as after an ext4 error remount): the RPC fails
    UNAVAILABLE / AUDIT_UNAVAILABLE, every later one too, and the platform sees nothing."""
    settings = settings_for(simulator, short_dir, audit_hsm)
    assert settings.audit is not None
    settings = settings.model_copy(
        update={
            "store": store_config,
            "audit": settings.audit.model_copy(update={"durability": "journal"}),
        }
    )
    employee = subject_of(population.examples().employee)
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [employee])
        audit = running.sidecar.audit
        assert audit is not None
        journal = audit.writer.journal
        assert journal is not None
        [segment] = journal.segments()
        read_only = os.open(segment, os.O_RDONLY)
        os.dup2(read_only, journal._fd)  # the volume refuses every write from now on
        os.close(read_only)
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetEnrollment(
                    gateway.GetEnrollmentRequest(subject=employee), metadata=TENANT_METADATA
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert details(caught.value)[0].reason == "AUDIT_UNAVAILABLE"
        assert simulator.app.calls.total == 0  # not even the sign-in was sent
    store = open_store(store_config)
    try:
        contents = await audit_contents(store)
        [report] = await verify_store(store, [audit_hsm.public_key])
    finally:
        await store.close()
    assert report.ok, report.first  # what was journaled before is in the store, chain closed
    assert not [c for c in contents if c.get("rpc") == "GetEnrollment"]
