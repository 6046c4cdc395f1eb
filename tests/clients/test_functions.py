"""One test per function, each through the kit's example for it, against the real sidecar."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Iterator

import pytest

from sidecar.domain.beijing import beijing_today
from tests.clients.conftest import EXAMPLES, example
from tests.integration.conftest import RunningSidecar
from yibao_client import Client, ConsentRequired, connect_unix
from yibao_client.v1 import common, consent, gateway
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator


def subject(person: Person) -> common.DataSubject:
    return common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number=person.certno,
        name=person.psn_name,
    )


@pytest.fixture
def client(sidecar: RunningSidecar) -> Iterator[Client]:
    with connect_unix(
        sidecar.settings.server.socket_path, tenant="acme-corp", operator="im-bot-01"
    ) as opened:
        yield opened


async def test_enrollment(client: Client, population: Population) -> None:
    employee = population.examples().employee
    answer = await asyncio.to_thread(example("enrollment").enrollments, client, subject(employee))
    assert answer.person.certificate_number == employee.certno
    assert answer.person.name == employee.psn_name
    assert answer.enrollments, "an enrolled employee has enrollments"


async def test_account_pages_through_the_statement(client: Client, population: Population) -> None:
    employee = population.examples().employee
    first, entries = await asyncio.to_thread(
        example("account").statement, client, subject(employee), 1
    )
    assert first.balances
    assert len(entries) >= len(first.statement_entries)
    assert len({(e.entry_date, e.amount_fen, e.description) for e in entries}) <= len(entries)


async def test_offsite_registration_submit_list_cancel(
    client: Client, population: Population
) -> None:
    offsite = example("offsite")
    person = subject(population.examples().employee)
    made = await asyncio.to_thread(offsite.submit, client, person, "310115", beijing_today())
    assert made.registration_id
    listed = await asyncio.to_thread(offsite.registrations, client, person)
    assert made.registration_id in {r.registration_id for r in listed}
    cancelled = await asyncio.to_thread(offsite.cancel, client, person, made.registration_id)
    assert cancelled.state == gateway.OFFSITE_REGISTRATION_STATE_CANCELLED


async def test_settlement_settle_read_cancel(
    client: Client, population: Population, simulator: RunningSimulator
) -> None:
    settlement = example("settlement")
    employee = population.examples().employee
    token = simulator.app.issue_ec_token(employee.certno)
    made = await asyncio.to_thread(settlement.settle, client, subject(employee), token)
    assert made.state == gateway.SETTLEMENT_STATE_SETTLED
    assert made.total_fen == 3000
    assert (
        made.fund_paid_fen + made.account_paid_fen + made.cash_paid_fen + made.other_paid_fen
        == made.total_fen
    )
    read = await asyncio.to_thread(
        settlement.settlement_of, client, subject(employee), made.request_id
    )
    assert read.settlement_id == made.settlement_id
    undone = await asyncio.to_thread(settlement.cancel, client, subject(employee), made.request_id)
    assert undone.state == gateway.SETTLEMENT_STATE_CANCELLED


async def test_eligibility_is_an_answer(client: Client, population: Population) -> None:
    examples = population.examples()
    check = example("eligibility").check
    employee = await asyncio.to_thread(check, client, subject(examples.employee), beijing_today())
    assert employee.eligible
    suspended = await asyncio.to_thread(
        check, client, subject(examples.suspended), beijing_today() + dt.timedelta(days=1)
    )
    assert not suspended.eligible and suspended.refusal_reason


async def test_consent_gates_the_calls_and_revocation_takes_effect(
    client: Client, population: Population
) -> None:
    # an enrolled person who is not one of the five the fixture made consent
    person = next(p for p in population.people[5:] if p.enrolled)
    consents = example("consent")
    enrollments = example("enrollment").enrollments
    with pytest.raises(ConsentRequired) as refused:
        await asyncio.to_thread(enrollments, client, subject(person))
    assert refused.value.reason == "CONSENT_REQUIRED"
    assert refused.value.metadata["purpose"] == "PURPOSE_ENROLLMENT_QUERY"

    granted = await asyncio.to_thread(
        consents.grant, client, subject(person), common.PURPOSE_ENROLLMENT_QUERY
    )
    assert granted.state == consent.CONSENT_STATE_ACTIVE
    active = await asyncio.to_thread(consents.active, client, subject(person))
    assert [c.consent_id for c in active] == [granted.consent_id]
    await asyncio.to_thread(enrollments, client, subject(person))

    revoked = await asyncio.to_thread(consents.revoke, client, granted.consent_id)
    assert revoked.state == consent.CONSENT_STATE_REVOKED
    with pytest.raises(ConsentRequired):
        await asyncio.to_thread(enrollments, client, subject(person))


@pytest.mark.parametrize(
    ("script", "extra", "says"),
    [
        ("consent.py", ["--revoke"], "revoked CONSENT_STATE_REVOKED"),
        ("enrollment.py", [], "INSURANCE_TYPE_"),
        ("account.py", [], "元"),
        ("eligibility.py", [], "eligible"),
        ("offsite.py", ["--cancel"], "cancelled OFFSITE_REGISTRATION_STATE_CANCELLED"),
        ("settlement.py", ["--cancel"], "now SETTLEMENT_STATE_CANCELLED"),
    ],
)
async def test_each_example_runs_as_a_script(
    sidecar: RunningSidecar,
    population: Population,
    simulator: RunningSimulator,
    script: str,
    extra: list[str],
    says: str,
) -> None:
    employee = population.examples().employee
    if script == "settlement.py":
        extra = [*extra, "--ec-token", simulator.app.issue_ec_token(employee.certno)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / script),
        "--socket",
        str(sidecar.settings.server.socket_path),
        "--certno",
        employee.certno,
        "--name",
        employee.psn_name,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert says in out.decode(), out.decode()
