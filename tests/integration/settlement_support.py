"""Helpers of the settlement tests: requests, settings, the audit of the simulator's ledger."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import Settings, StoreConfig
from sidecar.store import open_store
from tests.integration.conftest import RunningSidecar, running_sidecar, settings_for
from tests.integration.consent_support import consent_to
from tests.integration.test_gateway import subject_of
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.ledger import EntryKind
from yibao_devkit.simulator.population import Person
from yibao_devkit.simulator.server import RunningSimulator

# Two items: 2 x 12.50 and 1.5 x 3.33 (4.995 rounds half-up to 5.00): 30.00 yuan in all.
FEES = (("A001", "门诊诊查费", "2", 1250, 2500), ("B002", "阿莫西林胶囊", "1.5", 333, 500))
TOTAL_FEN = 3000


def settle_request(
    person: Person, ec_token: str, request_id: str, **changes: Any
) -> gateway.SettleWithEVoucherRequest:
    fields: dict[str, Any] = {
        "request_id": request_id,
        "subject": subject_of(person),
        "ec_token": ec_token,
        "insurance_type": common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        "medical_type_code": "11",
        "department_code": "A03",
        "department_name": "内科",
        "doctor_code": "D440300000001",
        "doctor_name": "张医生",
        "diagnosis": common.Diagnosis(code="J06.900", name="急性上呼吸道感染"),
        "fee_items": [
            gateway.FeeItem(
                item_code=code, item_name=name, quantity=q, unit_price_fen=p, total_fen=t
            )
            for code, name, q, p, t in FEES
        ],
        "total_fen": TOTAL_FEN,
        "use_personal_account": True,
    }
    fields.update(changes)
    return gateway.SettleWithEVoucherRequest(**fields)


def settlement_settings(
    simulator: RunningSimulator,
    socket_dir: Path,
    store: StoreConfig | None = None,
    **settlement: Any,
) -> Settings:
    base = settings_for(simulator, socket_dir).model_dump(mode="json", exclude_none=True)
    if store is not None:
        base["store"] = store.model_dump(mode="json", exclude_none=True)
    base["cache"] = {"ttl_seconds": 300}  # on: settlements must invalidate what it holds
    base["settlement"] = {
        "resolve_reserve_seconds": 1.0,
        "late_arrival_seconds": 2.0,
        "resolver_interval_seconds": 0.5,
        "resolver_min_age_seconds": 0.0,
        **settlement,
    }
    return Settings.model_validate(base)


def charges_by_settlement(app: PlatformSimulator, psn_no: str) -> tuple[int, int]:
    """(charges made, charges still standing) for the person, from the simulator's ledger."""
    charges = app.ledger.charges(psn_no=psn_no)
    return len(charges), len(app.ledger.active_charges(psn_no=psn_no))


def assert_at_most_one_charge_per_request(app: PlatformSimulator, msgids: dict[str, str]) -> None:
    """The invariant: net of cancellations and reversals, no request has more than one charge.

    ``msgids`` maps every 2207 msgid the sidecar recorded to its request id.
    """
    standing: Counter[str] = Counter()
    for entry in app.ledger.entries:
        if entry.kind is EntryKind.CHARGE:
            assert entry.msgid in msgids, "a charge the sidecar has no record of"
            if not app.ledger.is_undone(entry.setl_id):
                standing[msgids[entry.msgid]] += 1
    assert all(count <= 1 for count in standing.values()), standing


async def recorded_msgids(store: StoreConfig) -> dict[str, str]:
    """Every 2207 msgid in the sidecar's store, mapped to its request id."""
    opened = open_store(store)
    try:
        async with opened.transaction() as tx:
            rows = await tx.fetch_all("SELECT msgid, request_id FROM settlement_attempts")
    finally:
        await opened.close()
    return {row["msgid"]: row["request_id"] for row in rows}


@contextlib.asynccontextmanager
async def consenting_sidecar(
    settings: Settings, app: PlatformSimulator
) -> AsyncIterator[RunningSidecar]:
    """A running sidecar where the first five people consent to every purpose."""
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [subject_of(p) for p in app.population.people[:5]])
        yield running
