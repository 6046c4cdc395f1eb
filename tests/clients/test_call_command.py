"""``yibao-sidecar call``: a shell user calls the real sidecar with JSON and reads JSON back."""

from __future__ import annotations

import asyncio
import json
import sys
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar import cli
from tests.integration.conftest import RunningSidecar
from tests.integration.test_server import write_config
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Person, Population
from yibao_devkit.simulator.server import RunningSimulator

CALLER = ["--tenant", "acme-corp", "--operator", "im-bot-01"]
YIBAO_SIDECAR = Path(sys.executable).parent / "yibao-sidecar"


def subject(person: Person) -> dict[str, str]:
    return {
        "certificate_type": "CERTIFICATE_TYPE_RESIDENT_ID_CARD",
        "certificate_number": person.certno,
        "name": person.psn_name,
    }


async def call(
    capsys: pytest.CaptureFixture[str], sidecar: RunningSidecar, *argv: str
) -> tuple[int, Any, list[str]]:
    """(exit code, stdout as JSON or None, stderr lines) of `yibao-sidecar call ...`."""
    socket = ["--socket", str(sidecar.settings.server.socket_path)]
    code = await asyncio.to_thread(cli.main, ["call", *socket, *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err.splitlines()


async def test_list_names_every_rpc(
    capsys: pytest.CaptureFixture[str], sidecar: RunningSidecar
) -> None:
    socket = ["--socket", str(sidecar.settings.server.socket_path)]
    assert await asyncio.to_thread(cli.main, ["call", *socket, "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    names = {line.split()[0] for line in listed}
    assert "yibao.gateway.v1.InsuranceGateway/SettleWithEVoucher" in names
    assert "yibao.gateway.v1.ConsentService/GrantConsent" in names
    assert "grpc.health.v1.Health/Check" in names
    assert sum(n.startswith("yibao.gateway.v1.") for n in names) == 12


async def test_an_answer_is_utf8_json_without_escapes(
    sidecar: RunningSidecar, population: Population
) -> None:
    """The installed command in a process of its own: exit code, stdout bytes, stderr."""
    employee = population.examples().employee
    request = json.dumps({"subject": subject(employee)}, ensure_ascii=False)
    process = await asyncio.create_subprocess_exec(
        str(YIBAO_SIDECAR),
        "call",
        "InsuranceGateway.GetEnrollment",
        "--json",
        request,
        "--socket",
        str(sidecar.settings.server.socket_path),
        *CALLER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "LANG": "C"},
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err
    assert err == b""
    assert b"\\u" not in out
    answer = json.loads(out.decode("utf-8"))
    assert answer["person"]["name"] == employee.psn_name
    assert employee.psn_name.encode("utf-8") in out
    assert answer["enrollments"][0]["insurance_type"].startswith("INSURANCE_TYPE_")


async def test_a_bad_request_prints_every_field_violation(
    capsys: pytest.CaptureFixture[str], sidecar: RunningSidecar, population: Population
) -> None:
    person = subject(population.examples().employee)
    person["certificate_number"] = "110105194912310021"  # wrong check character
    request = {"subject": person, "begin_date": "2026-02-30", "medical_type_code": "11"}
    code, shown, err = await call(
        capsys, sidecar, "CheckEligibility", "--json", json.dumps(request), *CALLER
    )
    assert code == 1
    assert len(err) == 1 and "INVALID_ARGUMENT INVALID_REQUEST" in err[0]
    assert shown["code"] == "INVALID_ARGUMENT" and shown["code_number"] == 3
    by_type = {d["@type"].rsplit(".", 1)[-1]: d for d in shown["details"]}
    assert by_type["ErrorInfo"]["reason"] == "INVALID_REQUEST"
    fields = {v["field"] for v in by_type["BadRequest"]["field_violations"]}
    assert {"subject.certificate_number", "begin_date", "insurance_type"} <= fields


async def test_consent_required_and_retry_info_are_printed(
    capsys: pytest.CaptureFixture[str],
    sidecar: RunningSidecar,
    population: Population,
    simulator: RunningSimulator,
) -> None:
    stranger = next(p for p in population.people[5:] if p.enrolled)
    request = json.dumps({"subject": subject(stranger)})
    code, shown, err = await call(capsys, sidecar, "GetEnrollment", "--json", request, *CALLER)
    assert code == 1 and "CONSENT_REQUIRED" in err[0]
    info = shown["details"][0]
    assert info["metadata"] == {"purpose": "PURPOSE_ENROLLMENT_QUERY"}

    simulator.app.faults.set("1101", Fault(FaultKind.HTTP_5XX))
    try:
        request = json.dumps({"subject": subject(population.examples().employee)})
        code, shown, err = await call(capsys, sidecar, "GetEnrollment", "--json", request, *CALLER)
    finally:
        simulator.app.faults.clear()
    assert code == 1 and "UNAVAILABLE PLATFORM_UNAVAILABLE" in err[0]
    retry = [d for d in shown["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry and retry[0]["retry_delay"].endswith("s")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["GetEnrollment", "--json", "{not json"], "not valid JSON"),
        (["GetEnrollment", "--json", "[" * 100_000], "nested too deeply"),
        (["GetEnrollment", "--json", '{"subject":' * 5000 + "{}" + "}" * 5000], "nested too"),
        (["GetEnrollment", "--json", "[1]"], "must be a JSON object"),
        (["GetEnrollment", "--json", '{"subject": {"nickname": "x"}}'], "nickname"),
        (["GetEnrollment", "--json", '{"subject": {"certificate_type": "PASSPORT"}}'], "PASSPORT"),
        (["GetEnrolment", "--json", "{}"], "'GetEnrolment' is not a method"),
        (["--json", "{}"], "name a METHOD"),
        (["GetEnrollment", "--timeout", "soon"], "invalid float value"),
        (["GetEnrollment", "--target", "127.0.0.1:1"], "--target needs --ca, --cert, --key"),
        (["GetEnrollment", "--json", "@/nonexistent/request.json"], "cannot read the request"),
    ],
)
async def test_bad_usage_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], sidecar: RunningSidecar, argv: list[str], says: str
) -> None:
    try:
        code, shown, err = await call(capsys, sidecar, *argv, *CALLER)
    except SystemExit as exit_:  # argparse's own errors
        code, shown, err = int(str(exit_.code)), None, capsys.readouterr().err.splitlines()
    assert (code, shown) == (2, None)
    assert len(err) == 1 and says in err[0], err


def test_no_sidecar_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    socket = str(tmp_path / "absent.sock")
    assert cli.main(["call", "--socket", socket, "GetEnrollment", "--json", "{}"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and "UNAVAILABLE" in err


def test_a_server_without_reflection_is_called_with_the_compiled_contract(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    socket = str(tmp_path / "bare.sock")
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    try:
        assert cli.main(["call", "--socket", socket, "--list"]) == 0
        names = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
        assert len(names) == 12 and "yibao.gateway.v1.ConsentService/ListConsents" in names
        code = cli.main(["call", "--socket", socket, "ListConsents", "--json", "{}"])
        out, err = capsys.readouterr()
        assert code == 1 and json.loads(out)["code"] == "UNIMPLEMENTED"
        assert len(err.splitlines()) == 1
    finally:
        server.stop(None)


async def test_the_socket_comes_from_the_sidecars_config(
    capsys: pytest.CaptureFixture[str],
    sidecar: RunningSidecar,
    simulator: RunningSimulator,
    short_dir: Path,
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    request = json.dumps({"subject": {"certificate_type": "CERTIFICATE_TYPE_RESIDENT_ID_CARD"}})
    argv = ["call", "--config", str(config), *CALLER, "ListConsents", "--json", request]
    assert await asyncio.to_thread(cli.main, argv) == 1  # the sidecar's own validation answered
    assert json.loads(capsys.readouterr().out)["code"] == "INVALID_ARGUMENT"

    argv[2] = str(tmp_path / "absent.toml")
    assert await asyncio.to_thread(cli.main, argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "absent.toml" in err
