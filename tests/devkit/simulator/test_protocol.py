"""The platform protocol over real mutual TLS: sign-in, person information, refusals."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.devkit.simulator.support import OPERATOR, EnvelopeFactory, person_input, sign_in_input
from yibao_devkit.simulator import SIGN_IN_INVALID, Population, RunningSimulator, errors
from yibao_devkit.simulator.population import Person

REFMSGID = re.compile(r"440300[0-9]{14}[0-9]{10}")
MILLIS = re.compile(r"[0-9]{17}")


async def call(
    client: httpx.AsyncClient, simulator: RunningSimulator, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(simulator.endpoint, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    answer: dict[str, Any] = response.json()
    assert REFMSGID.fullmatch(answer["inf_refmsgid"])
    assert MILLIS.fullmatch(answer["refmsg_time"])
    assert MILLIS.fullmatch(answer["respond_time"])
    return answer


async def sign_in(
    client: httpx.AsyncClient, simulator: RunningSimulator, envelope: EnvelopeFactory
) -> str:
    answer = await call(client, simulator, envelope("9001", sign_in_input()))
    assert answer["infcode"] == 0, answer["err_msg"]
    sign_no: str = answer["output"]["signinoutb"]["sign_no"]
    return sign_no


async def person_info(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    sign_no: str,
    person: Person,
    **changes: str,
) -> dict[str, Any]:
    payload = person_input(person.certno, person.psn_name)
    payload["data"].update(changes)
    return await call(client, simulator, envelope("1101", payload, sign_no))


async def test_sign_in_answers_a_sign_no_over_http2(
    client: httpx.AsyncClient, simulator: RunningSimulator, envelope: EnvelopeFactory
) -> None:
    response = await client.post(simulator.endpoint, json=envelope("9001", sign_in_input()))
    assert response.http_version == "HTTP/2"
    answer = response.json()
    assert answer["infcode"] == 0
    assert answer["err_msg"] is None
    signinoutb = answer["output"]["signinoutb"]
    assert re.fullmatch(r"[0-9]{1,30}", signinoutb["sign_no"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", signinoutb["sign_time"])
    assert simulator.app.sign_ins.current(OPERATOR) == signinoutb["sign_no"]


async def test_person_info_for_an_enrolled_employee(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    sign_no = await sign_in(client, simulator, envelope)
    person = population.examples().employee
    response = await client.post(
        simulator.endpoint,
        json=envelope("1101", person_input(person.certno, person.psn_name), sign_no),
    )
    answer = response.json()
    assert answer["infcode"] == 0, answer["err_msg"]
    base = answer["output"]["baseinfo"]
    assert base["psn_no"] == person.psn_no
    assert base["certno"] == person.certno
    assert base["psn_name"] == person.psn_name
    assert base["psn_cert_type"] == "01"
    assert base["gend"] == person.gend
    assert base["naty"] == person.naty
    assert base["brdy"] == person.brdy.isoformat()
    assert isinstance(base["age"], int) and 19 <= base["age"] <= 77
    rows = answer["output"]["insuinfo"]
    assert [row["insutype"] for row in rows] == [row.insutype for row in person.insuinfo]
    first = rows[0]
    assert first["psn_insu_stas"] == "1"
    assert first["psn_insu_date"] == person.insuinfo[0].psn_insu_date.isoformat()
    assert first["paus_insu_date"] is None
    assert first["insuplc_admdvs"] == person.insuplc_admdvs
    assert first["emp_name"] == person.insuinfo[0].emp_name
    assert answer["output"]["idetinfo"] == []
    # balc travels as a JSON number with exactly two decimals, e.g. "balc":3606.63
    fen = person.insuinfo[0].balc
    assert f'"balc":{fen // 100}.{fen % 100:02d},' in response.text


async def test_person_info_for_suspended_and_resident(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    sign_no = await sign_in(client, simulator, envelope)
    examples = population.examples()
    suspended = await person_info(client, simulator, envelope, sign_no, examples.suspended)
    row = suspended["output"]["insuinfo"][0]
    assert row["psn_insu_stas"] == "2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", row["paus_insu_date"])
    resident = await person_info(client, simulator, envelope, sign_no, examples.resident)
    assert resident["output"]["insuinfo"][0]["insutype"] == "390"
    assert resident["output"]["insuinfo"][0]["psn_type"] == "1501"


async def test_person_unknown_to_the_platform_is_refused(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    sign_no = await sign_in(client, simulator, envelope)
    answer = await person_info(client, simulator, envelope, sign_no, population.examples().unknown)
    assert answer["infcode"] == -1
    assert answer["err_msg"] == errors.PERSON_NOT_FOUND
    assert answer["output"] is None


async def test_person_refusals(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    sign_no = await sign_in(client, simulator, envelope)
    person = population.examples().employee
    cases = [
        ({"psn_name": "王某某"}, errors.NAME_MISMATCH),
        ({"psn_cert_type": "99"}, errors.PSN_CERT_TYPE_INVALID.format(value="99")),
        ({"mdtrt_cert_type": "09"}, errors.MDTRT_CERT_TYPE_INVALID.format(value="09")),
        ({"mdtrt_cert_type": "03"}, errors.CARD_SN_MISSING),
        ({"mdtrt_cert_type": "01"}, errors.E_VOUCHER_INVALID),
        ({"certno": "110105199001011237"}, errors.CERT_NO_MISMATCH),
        (
            {"mdtrt_cert_no": person.certno[:17] + ("0" if person.certno[17] != "0" else "1"),
             "certno": ""},
            errors.CERT_NO_INVALID,
        ),
        ({"begntime": "2025/01/01"}, errors.BEGNTIME_INVALID),
    ]  # fmt: skip
    for changes, expected in cases:
        answer = await person_info(client, simulator, envelope, sign_no, person, **changes)
        assert (answer["infcode"], answer["err_msg"]) == (-1, expected), changes


async def test_business_transaction_without_sign_in_is_refused(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    person = population.examples().employee
    for sign_no in ("", "440300202501010000000000000001"):
        answer = await person_info(client, simulator, envelope, sign_no, person)
        assert (answer["infcode"], answer["err_msg"]) == (-1, SIGN_IN_INVALID)
    body = envelope("1101", person_input(person.certno, person.psn_name))
    del body["sign_no"]
    answer = await call(client, simulator, body)
    assert (answer["infcode"], answer["err_msg"]) == (-1, SIGN_IN_INVALID)


async def test_sign_in_is_superseded_signed_out_and_dropped(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    person = population.examples().employee
    first = await sign_in(client, simulator, envelope)
    second = await sign_in(client, simulator, envelope)
    assert first != second
    stale = await person_info(client, simulator, envelope, first, person)
    assert stale["err_msg"] == SIGN_IN_INVALID
    assert (await person_info(client, simulator, envelope, second, person))["infcode"] == 0

    # Someone else's session is not ours.
    other = await call(client, simulator, envelope("9001", sign_in_input("op0002"), opter="op0002"))
    other_no = other["output"]["signinoutb"]["sign_no"]
    borrowed = await person_info(client, simulator, envelope, other_no, person)
    assert borrowed["err_msg"] == SIGN_IN_INVALID

    out = await call(
        client,
        simulator,
        envelope("9002", {"signOut": {"sign_no": second, "opter_no": OPERATOR}}, second),
    )
    assert out["infcode"] == 0
    assert "sign_time" in out["output"]["signoutoutb"]
    after = await person_info(client, simulator, envelope, second, person)
    assert after["err_msg"] == SIGN_IN_INVALID

    third = await sign_in(client, simulator, envelope)
    simulator.app.sign_ins.invalidate_all()
    dropped = await person_info(client, simulator, envelope, third, person)
    assert dropped["err_msg"] == SIGN_IN_INVALID


async def test_sign_in_for_another_operator_than_the_envelope_is_refused(
    client: httpx.AsyncClient, simulator: RunningSimulator, envelope: EnvelopeFactory
) -> None:
    answer = await call(client, simulator, envelope("9001", sign_in_input("someone-else")))
    assert (answer["infcode"], answer["err_msg"]) == (-1, errors.SIGN_IN_OPERATOR_MISMATCH)


async def test_unknown_infno_is_refused(
    client: httpx.AsyncClient, simulator: RunningSimulator, envelope: EnvelopeFactory
) -> None:
    sign_no = await sign_in(client, simulator, envelope)
    answer = await call(client, simulator, envelope("9999", {"data": {}}, sign_no))
    assert (answer["infcode"], answer["err_msg"]) == (-1, "交易编号[9999]不存在")


async def test_malformed_json_answers_400_with_an_envelope(
    client: httpx.AsyncClient, simulator: RunningSimulator
) -> None:
    for body in (b'{"infno": "9001",', b"\xff\xfe", b"[1, 2]", b'{"a": NaN}'):
        response = await client.post(
            simulator.endpoint, content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        answer = response.json()
        assert (answer["infcode"], answer["err_msg"]) == (-1, errors.MALFORMED_BODY)
        assert REFMSGID.fullmatch(answer["inf_refmsgid"])


async def test_http_level_answers(client: httpx.AsyncClient, simulator: RunningSimulator) -> None:
    assert (await client.get(simulator.endpoint)).status_code == 405
    assert (await client.post(simulator.url + "/elsewhere", content=b"{}")).status_code == 404
    too_big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert (await client.post(simulator.endpoint, content=too_big)).status_code == 413


async def test_calls_are_counted_per_infno(
    client: httpx.AsyncClient,
    simulator: RunningSimulator,
    envelope: EnvelopeFactory,
    population: Population,
) -> None:
    sign_no = await sign_in(client, simulator, envelope)
    person = population.examples().employee
    for _ in range(3):
        await person_info(client, simulator, envelope, sign_no, person)
    await client.post(simulator.endpoint, content=b"not json")
    calls = simulator.app.calls
    assert calls.count("9001") == 1
    assert calls.count("1101") == 3
    assert calls.total == 5
    assert dict(calls.snapshot()) == {"9001": 1, "1101": 3}
    calls.reset()
    assert calls.total == 0


async def test_http11_is_offered_too(
    simulator: RunningSimulator, envelope: EnvelopeFactory
) -> None:
    async with httpx.AsyncClient(http2=False, verify=simulator.client_ssl_context()) as http1:
        response = await http1.post(simulator.endpoint, json=envelope("9001", sign_in_input()))
    assert response.http_version == "HTTP/1.1"
    assert response.json()["infcode"] == 0
