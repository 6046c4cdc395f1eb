"""What the consent gate costs per call: one ledger read per RPC, no cache (prints figures).

Run: ``.venv/bin/python benchmarks/bench_consent.py [--calls N] [--concurrency C]``
(``make bench-consent``). PostgreSQL is the server in ``YIBAO_TEST_POSTGRES`` or
``host=127.0.0.1 port=5432 dbname=test user=postgres``, in a throw-away schema.

For each back end (SQLite in a temporary directory, PostgreSQL): migrate, record consents for
2,000 subjects (5,000 rows, some revoked), then time ``ConsentGate`` itself, the filter as the
chain runs it (pseudonym + ``ConsentLedger.is_active``), N times one after another (p50/p99),
and with C concurrent callers (calls/s, p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2
from sidecar.compliance.consent_gate import ConsentGate
from sidecar.compliance.consent_ledger import MIGRATIONS, ConsentLedger, NewConsent
from sidecar.compliance.pseudonyms import HostPseudonymizer
from sidecar.config import StoreConfig
from sidecar.errors import GatewayError
from sidecar.interceptors.caller import Caller
from sidecar.interceptors.chain import Call
from sidecar.store import Store, open_store
from yibao_devkit.simulator.population import Population

POSTGRES = os.environ.get(
    "YIBAO_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)
SUBJECTS = 2000
METHOD = "/yibao.gateway.v1.InsuranceGateway/GetEnrollment"


async def fill(store: Store, pseudonyms: HostPseudonymizer, people: list[Any]) -> None:
    await store.migrate(MIGRATIONS)
    ledger = ConsentLedger(store)
    purposes = ("PURPOSE_ENROLLMENT_QUERY", "PURPOSE_ELIGIBILITY_CHECK", "PURPOSE_SETTLEMENT")
    async with store.transaction() as tx:
        for index, person in enumerate(people):
            subject = await pseudonyms.of("01", person.certno)
            for purpose in purposes[: 1 + index % 3]:
                await ledger.grant(
                    tx,
                    NewConsent("acme-corp", subject, "CERTIFICATE_TYPE_RESIDENT_ID_CARD",
                               purpose, "scope", "v1", "0" * 64, "im", "op", None),
                )  # fmt: skip
            if index % 10 == 0:
                await ledger.revoke_all(tx, "acme-corp", subject, purposes[0], "op")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(name: str, store: Store, calls: int, concurrency: int) -> None:
    pseudonyms = HostPseudonymizer(b"k" * 32)
    people = list(Population.generate(7, SUBJECTS).people)
    await fill(store, pseudonyms, people)
    gate = ConsentGate(ConsentLedger(store), pseudonyms)
    requests = [
        gateway_pb2.GetEnrollmentRequest(
            subject=common.DataSubject(
                certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
                certificate_number=p.certno,
                name=p.psn_name,
            )
        )
        for p in people
    ]

    async def passed(request: Any) -> Any:
        return request

    async def one(index: int) -> float:
        call = Call(METHOD, {}, context=None)  # type: ignore[arg-type]
        call.attributes["caller"] = Caller("acme-corp", "op")
        started = time.perf_counter()
        with contextlib.suppress(GatewayError):  # CONSENT_REQUIRED for the revoked tenth
            await gate(call, requests[index % len(requests)], passed)
        return (time.perf_counter() - started) * 1000

    for index in range(200):  # warm-up
        await one(index)
    serial = [await one(index) for index in range(calls)]
    started = time.perf_counter()
    queue = iter(range(calls))
    concurrent: list[float] = []

    async def worker() -> None:
        for index in queue:
            concurrent.append(await one(index))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(
        f"{name:<11} gate, one at a time: p50 {statistics.median(serial):.3f} ms, "
        f"p99 {percentile(serial, 0.99):.3f} ms  |  {concurrency} concurrent: "
        f"{calls / elapsed:,.0f} calls/s, p50 {statistics.median(concurrent):.3f} ms, "
        f"p99 {percentile(concurrent, 0.99):.3f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-consent-") as scratch:
        sqlite = open_store(StoreConfig(sqlite_path=Path(scratch) / "store" / "sidecar.db"))
        try:
            await measure("SQLite", sqlite, args.calls, args.concurrency)
        finally:
            await sqlite.close()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            pg = open_store(
                StoreConfig(
                    backend="postgresql",
                    postgresql_dsn=f"{POSTGRES} options=-csearch_path={schema}",
                    pool_size=args.concurrency,
                )
            )
            try:
                await measure("PostgreSQL", pg, args.calls, args.concurrency)
            finally:
                await pg.close()
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    asyncio.run(main())
