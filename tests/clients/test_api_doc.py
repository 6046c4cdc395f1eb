"""docs/api.md section 6 as a user follows it: every `yibao-sidecar call` example, in order,
against the real sidecar and the simulator. Only what a reader must fill in is filled in: the
dates (Beijing, from today), the registration id and the e-voucher token from earlier steps."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shlex
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.domain.beijing import beijing_today
from tests.integration.conftest import RunningSidecar
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
DOC_PERSON = ("310115197409042519", "朱博杰")
RPCS = {
    "GetEnrollment",
    "GetAccount",
    "SubmitOffsiteRegistration",
    "ListOffsiteRegistrations",
    "CancelOffsiteRegistration",
    "SettleWithEVoucher",
    "GetSettlement",
    "CancelSettlement",
    "CheckEligibility",
    "GrantConsent",
    "RevokeConsent",
    "ListConsents",
}


def shell_examples() -> list[list[str]]:
    text = API_DOC.read_text()
    section = text[text.index("## 6. Calling from a shell") : text.index("## 7. ")]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [shlex.split(block) for block in blocks if block.startswith("yibao-sidecar call ")]


def test_every_rpc_has_a_shell_example() -> None:
    assert {argv[2] for argv in shell_examples()} == RPCS


async def test_the_shell_examples_work_in_order(
    capsys: pytest.CaptureFixture[str],
    sidecar: RunningSidecar,
    simulator: RunningSimulator,
    population: Population,
) -> None:
    employee = population.examples().employee
    assert (employee.certno, employee.psn_name) == DOC_PERSON  # the simulator of the docs
    start = beijing_today() + dt.timedelta(days=1)
    filled = {
        "2027-01-04": start.isoformat(),
        "2027-04-03": (start + dt.timedelta(days=89)).isoformat(),
        "EC_TOKEN": simulator.app.issue_ec_token(employee.certno),
    }
    socket = ["--socket", str(sidecar.settings.server.socket_path)]
    for argv in shell_examples():
        assert argv[:2] == ["yibao-sidecar", "call"]
        argv = [filled.get(word, word) for word in argv]
        for placeholder, value in filled.items():
            argv = [word.replace(placeholder, value) for word in argv]
        code = await asyncio.to_thread(cli.main, ["call", *socket, *argv[2:]])
        out, err = capsys.readouterr()
        shown = json.loads(out)
        if "310115197409042510" not in " ".join(argv):
            assert code == 0, (argv[2], out, err)
            assert err == ""
        else:  # the documented failure
            assert code == 1 and shown["code"] == "INVALID_ARGUMENT"
            assert "subject.certificate_number" in out
        if argv[2] == "SubmitOffsiteRegistration":
            filled["REGISTRATION_ID"] = shown["registration"]["registration_id"]
        if argv[2] == "SettleWithEVoucher":
            assert shown["settlement"]["state"] == "SETTLEMENT_STATE_SETTLED"
        if argv[2] == "CancelSettlement":
            assert shown["settlement"]["state"] == "SETTLEMENT_STATE_CANCELLED"
        if argv[2] == "RevokeConsent":
            assert all(c["state"] == "CONSENT_STATE_REVOKED" for c in shown["consents"])


async def test_the_client_kit_quick_start_runs(sidecar: RunningSidecar) -> None:
    text = API_DOC.read_text()
    section = text[text.index("## 7. The Python client kit") : text.index("## 8. ")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    socket = str(sidecar.settings.server.socket_path)
    scope: dict[str, object] = {}
    await asyncio.to_thread(exec, code.replace("/run/yibao/sidecar.sock", socket), scope)
    answer = scope["answer"]
    assert answer.person.certificate_number == DOC_PERSON[0]  # type: ignore[attr-defined]
