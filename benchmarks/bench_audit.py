"""What the audit trail costs (prints figures).

Run: ``.venv/bin/python benchmarks/bench_audit.py [--pairs N] [--calls N]``
(``make bench-audit`` builds the venv and SoftHSM first). PostgreSQL: 127.0.0.1:5432 database
``test`` (or the conninfo in ``YIBAO_BENCH_POSTGRES``), in a throw-away schema.

Makes a throw-away SoftHSM token (sign, kek, audit and pseudonym keys), then, in one run:

1. audit records per second on SQLite and on PostgreSQL: N transaction intent + outcome pairs
   (SM4-GCM payloads under an HSM-wrapped data key, SM3 chain), one writer as in the sidecar,
   1 and 8 concurrent callers, with each intent durable in the store before the call returns
   (``durability = "store"``) and on the local journal (``"journal"``, group fdatasync, shipped
   in batches); p50/p99 of the wait for the durable intent (what the request path waits for);
2. the latency the trail adds to an RPC: GetEnrollment through a real sidecar (gRPC over a Unix
   socket) against the simulator over mTLS, in the same process, without the trail and with it
   on SQLite and on PostgreSQL in both durabilities, in interleaved blocks, one call at a time and
   ``--rate`` calls/s on schedule (open loop: many calls in flight at once); p50/p95/p99 and the
   p50/p99 difference against the run without the trail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import psycopg  # noqa: E402
from softhsm_token import fresh_token  # noqa: E402

from hsm.keys import KeyStore  # noqa: E402
from hsm.token import HsmToken, TokenConfig  # noqa: E402
from sidecar import app  # noqa: E402
from sidecar._proto.yibao.gateway.v1 import common_pb2 as common  # noqa: E402
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway  # noqa: E402
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc  # noqa: E402
from sidecar.audit.hsm_keys import open_audit_keys  # noqa: E402
from sidecar.audit.link import build_trail  # noqa: E402
from sidecar.audit.schema import MIGRATIONS  # noqa: E402
from sidecar.config import AuditConfig, Settings, StoreConfig  # noqa: E402
from sidecar.store import open_store  # noqa: E402
from yibao_devkit import demo_consent  # noqa: E402
from yibao_devkit.simulator.server import RunningSimulator, running_simulator  # noqa: E402

POSTGRES = os.environ.get(
    "YIBAO_BENCH_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)
LABEL = "yibao-bench-audit"
METADATA = (("x-yibao-tenant", "bench"), ("x-yibao-operator", "bench-bot"))


def setup_token(work: Path) -> tuple[str, Path]:
    lib, pin = fresh_token(work, LABEL)
    pin_file = work / "user.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pin.reveal().encode())
    os.close(fd)
    with HsmToken.open(
        TokenConfig(module=lib, token_label=LABEL, user_pin_file=str(pin_file))
    ) as t:
        for purpose in ("sign", "kek", "audit", "pseudonym"):
            KeyStore(t).generate(purpose)  # type: ignore[arg-type]
    return lib, pin_file


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await psycopg.AsyncConnection.connect(POSTGRES, autocommit=True)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES} options=-csearch_path={schema}"
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


def store_configs(work: Path, dsn: str) -> dict[str, StoreConfig]:
    return {
        "sqlite": StoreConfig(backend="sqlite", sqlite_path=work / uuid.uuid4().hex / "s.db"),
        "postgresql": StoreConfig(backend="postgresql", postgresql_dsn=dsn, pool_size=4),
    }


def audit_config(work: Path, durability: str = "store") -> AuditConfig:
    return AuditConfig.model_validate(
        {
            "instance": "bench",
            "spool_dir": work / uuid.uuid4().hex,
            "checkpoint_interval_seconds": 60,
            "durability": durability,
        }
    )


async def records_per_second(
    token: HsmToken, config: StoreConfig, work: Path, pairs: int, concurrency: int, durability: str
) -> tuple[float, list[float]]:
    """Records/s, and the milliseconds each durable intent made its caller wait."""
    store = open_store(config)
    await store.migrate(MIGRATIONS)
    trail = build_trail(audit_config(work, durability), store, open_audit_keys(token))
    await trail.start()
    data = {"psn_no": "x" * 30, "certno": "110105194912310037", "psn_name": "张三"}
    done = 0
    waits: list[float] = []

    async def caller() -> None:
        nonlocal done
        while done < pairs:
            done += 1
            started = time.perf_counter()
            ticket = await trail.intent("1101", f"msg{done:026d}", "bench-bot", data)
            waits.append((time.perf_counter() - started) * 1000)
            await trail.outcome(ticket, infcode="0", error="", answer={"baseinfo": data})

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await trail.close()  # ships what is left: the rate counts records in the store
    elapsed = time.perf_counter() - started
    async with store.transaction() as tx:
        row = await tx.fetch_one(
            "SELECT count(*) AS n FROM audit_records WHERE chain = :chain AND kind = 'tx.intent'",
            {"chain": trail.writer.chain},
        )
    if row is None or int(str(row["n"])) != pairs:
        raise SystemExit(f"bench: {row} transaction intents stored, {pairs} expected")
    await store.close()
    return 2 * pairs / elapsed, waits


_SLOTS = iter(range(100))


def settings(
    sim: RunningSimulator,
    work: Path,
    store: StoreConfig,
    hsm: dict[str, str] | None,
    durability: str = "store",
) -> Settings:
    """One sidecar's settings; each its own msgid slot, as replicas (they reuse the seconds)."""
    socket_dir = Path(tempfile.mkdtemp(prefix="ya-", dir="/tmp"))
    pseudonym_key = work / "pseudonym.key"  # the consent ledger's; the same for every variant
    if not pseudonym_key.exists():
        pseudonym_key.touch(mode=0o600)
        pseudonym_key.write_text(secrets.token_hex(32) + "\n")
    values: dict[str, Any] = {
        "server": {"socket_path": str(socket_dir / "s.sock")},
        "consent": {"pseudonym_key_file": str(pseudonym_key)},
        "store": store.model_dump(mode="json"),
        "institution": {
            "code": sim.app.institution_code,
            "name": "基准",
            "division": sim.app.division,
        },
        "platform": {
            "url": sim.url.split("/fsi/")[0],
            "ca_file": str(sim.pki.ca_cert),
            "client_cert_file": str(sim.pki.client_cert),
            "client_key_file": str(sim.pki.client_key),
            "msgid": {"slots": 100, "slot": next(_SLOTS)},
        },
    }
    if hsm is not None:
        values["hsm"] = hsm
        values["audit"] = audit_config(work, durability).model_dump(mode="json")
    return Settings.model_validate(values)


@asynccontextmanager
async def caller(cfg: Settings) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
    sidecar = app.build(cfg)
    await sidecar.prepare()
    await sidecar.server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{cfg.server.socket_path}") as channel:
            # The employee's consent, given once in the IM service's dialog: the gate lets the
            # measured calls through to the platform.
            purposes = (common.PURPOSE_ENROLLMENT_QUERY,)
            await demo_consent.grant(channel, METADATA, "", REQUEST.subject, purposes, _Quiet())
            stub = gateway_grpc.InsuranceGatewayStub(channel)
            yield lambda: stub.GetEnrollment(REQUEST, metadata=METADATA)
    finally:
        await sidecar.server.stop()
        await sidecar.close()


REQUEST = gateway.GetEnrollmentRequest()


class _Quiet:
    def step(self, text: str) -> None:
        pass


async def rpc_latency(
    sim: RunningSimulator,
    work: Path,
    stores: dict[str, StoreConfig],
    hsm: dict[str, str],
    calls: int,
    rate: float | None,
) -> dict[str, list[float]]:
    """Per variant, the latency of each call: one at a time, or ``rate`` calls/s (open loop)."""
    person = sim.app.population.examples().employee
    REQUEST.subject.CopyFrom(
        common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=person.certno,
            name=person.psn_name,
        )
    )
    variants = {
        "no trail": (stores["sqlite"], None, "store"),
        "store, SQLite": (stores["sqlite"], hsm, "store"),
        "journal, SQLite": (stores["sqlite"], hsm, "journal"),
        "store, PostgreSQL": (stores["postgresql"], hsm, "store"),
        "journal, PostgreSQL": (stores["postgresql"], hsm, "journal"),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rounds = 4
    for _ in range(rounds):
        for name, (store, with_hsm, durability) in variants.items():
            cfg = settings(sim, work, store, with_hsm, durability)
            async with caller(cfg) as call:
                for _ in range(20):  # warm-up: connections, sign-in, data key
                    await call()
                timed = samples[name]

                async def one(call: Any = call, timed: list[float] = timed) -> None:
                    started = time.perf_counter()
                    await call()
                    timed.append((time.perf_counter() - started) * 1000)

                if rate is None:
                    for _ in range(calls // rounds):
                        await one()
                    continue
                loop, tasks = asyncio.get_running_loop(), []
                begin = loop.time()
                for n in range(calls // rounds):  # on schedule, whether earlier calls ended
                    await asyncio.sleep(max(0.0, begin + n / rate - loop.time()))
                    tasks.append(asyncio.create_task(one()))
                await asyncio.gather(*tasks)
    return samples


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def run(pairs: int, calls: int, rps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        work = Path(tmp)
        lib, pin_file = setup_token(work)
        hsm = {"module": lib, "token_label": LABEL, "user_pin_file": str(pin_file)}
        token = HsmToken.open(
            TokenConfig(module=lib, token_label=LABEL, user_pin_file=str(pin_file), pool_size=2)
        )
        async with postgres_schema() as dsn:
            stores = store_configs(work, dsn)
            print(f"1. audit records/s (intent + outcome pairs, encrypted, chained), {pairs} pairs")
            print("   (rate = records in the store / time; wait = the durable intent's, ms)")
            for name, cfg in stores.items():
                for concurrency in (1, 8):
                    for durability in ("store", "journal"):
                        rate, waits = await records_per_second(
                            token, cfg, work, pairs, concurrency, durability
                        )
                        print(
                            f"   {name:<11} {durability:<8} {concurrency} caller(s): "
                            f"{rate:8.0f} records/s   wait p50 {pct(waits, 50):6.2f}"
                            f"  p99 {pct(waits, 99):6.2f}"
                        )
            token.close()
            async with running_simulator(seed=42, population_size=50) as sim:
                for rate in (None, float(rps)):
                    load = "one call at a time" if rate is None else f"{rps} calls/s, open loop"
                    print(f"2. GetEnrollment latency ({load}, {calls} calls per variant)")
                    samples = await rpc_latency(
                        sim, work, store_configs(work, dsn), hsm, calls, rate
                    )
                    report(samples)
        print("   (each RPC writes 4 records: RPC intent/outcome, 1101 intent/outcome)")


def report(samples: dict[str, list[float]]) -> None:
    base50, base99 = pct(samples["no trail"], 50), pct(samples["no trail"], 99)
    for name, values in samples.items():
        p50, p95, p99 = pct(values, 50), pct(values, 95), pct(values, 99)
        extra = (
            ""
            if name == "no trail"
            else f"   added p50 {p50 - base50:+6.2f} ms  p99 {p99 - base99:+6.2f} ms"
        )
        print(f"   {name:<20} p50 {p50:6.2f}  p95 {p95:6.2f}  p99 {p99:6.2f} ms{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rate", type=int, default=50, help="calls/s of the open-loop run")
    args = parser.parse_args()
    asyncio.run(run(args.pairs, args.calls, args.rate))


if __name__ == "__main__":
    main()
