"""Envelope validation, checked on the simulator's request handler directly (no network)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.devkit.simulator.support import EnvelopeFactory, sign_in_input
from yibao_devkit.simulator import PlatformSimulator, Population, errors
from yibao_devkit.simulator.times import BEIJING

FIXED_NOW = dt.datetime(2025, 11, 26, 9, 30, 15, 123456, tzinfo=BEIJING)


@pytest.fixture
def app(population: Population) -> PlatformSimulator:
    return PlatformSimulator(population, clock=lambda: FIXED_NOW)


def answer(app: PlatformSimulator, body: dict[str, Any]) -> dict[str, Any]:
    status, envelope = app.handle(json.dumps(body).encode())
    assert status == 200
    return dict(envelope)


def test_response_envelope_fields(app: PlatformSimulator, envelope: EnvelopeFactory) -> None:
    first = answer(app, envelope("9001", sign_in_input()))
    second = answer(app, envelope("9001", sign_in_input()))
    assert first["infcode"] == 0
    assert first["inf_refmsgid"] == "440300" + "20251126093015" + "0000000001"
    assert second["inf_refmsgid"].endswith("0000000002")
    assert first["refmsg_time"] == first["respond_time"] == "20251126093015123"
    assert first["err_msg"] is None
    assert first["output"]["signinoutb"]["sign_time"] == "2025-11-26 09:30:15"


@pytest.mark.parametrize(
    ("overrides", "err_msg"),
    [
        ({"infno": ""}, errors.FIELD_MISSING.format(field="infno")),
        ({"infno": "ABCD"}, errors.UNKNOWN_INFNO.format(infno="ABCD")),
        ({"infno": "2501A"}, errors.UNKNOWN_INFNO.format(infno="2501A")),
        ({"msgid": None}, errors.FIELD_MISSING.format(field="msgid")),
        ({"msgid": "H44030500001202511260930150001X"}, errors.FIELD_TOO_LONG.format(
            field="msgid", limit=30)),
        ({"msgid": "H4403050000120251126093015001"}, errors.MSGID_INVALID),
        ({"msgid": "H99999999999202511260930150001"}, errors.MSGID_INVALID),
        ({"msgid": "H44030500001202513260930150001"}, errors.MSGID_INVALID),
        ({"msgid": "H4403050000120251126093015000A"}, errors.MSGID_INVALID),
        ({"mdtrtarea_admvs": "44030"}, errors.FIELD_BAD_VALUE.format(field="mdtrtarea_admvs")),
        ({"mdtrtarea_admvs": "110000"}, errors.WRONG_AREA.format(code="110000")),
        ({"insuplc_admdvs": "abc"}, errors.FIELD_BAD_VALUE.format(field="insuplc_admdvs")),
        ({"recer_sys_code": "X" * 11}, errors.FIELD_TOO_LONG.format(
            field="recer_sys_code", limit=10)),
        ({"infver": None}, errors.FIELD_MISSING.format(field="infver")),
        ({"opter_type": "9"}, errors.FIELD_BAD_VALUE.format(field="opter_type")),
        ({"opter_type": 1}, errors.FIELD_NOT_STRING.format(field="opter_type")),
        ({"opter_name": "名" * 51}, errors.FIELD_TOO_LONG.format(field="opter_name", limit=50)),
        ({"inf_time": "2025-11-26T09:30:15"}, errors.INF_TIME_INVALID),
        ({"inf_time": "2025-02-30 09:30:15"}, errors.INF_TIME_INVALID),
        ({"fixmedins_name": ""}, errors.FIELD_MISSING.format(field="fixmedins_name")),
        ({"input": None}, errors.FIELD_MISSING.format(field="input")),
        ({"input": "{}"}, errors.INPUT_NOT_OBJECT),
        ({"input": {"pad": "x" * 40000}}, errors.FIELD_TOO_LONG.format(
            field="input", limit=40000)),
        ({"input": {"signIn": {"opter_no": "op0001"}}},
         errors.FIELD_MISSING.format(field="mac")),
    ],
)  # fmt: skip
def test_envelope_refusals(
    app: PlatformSimulator,
    envelope: EnvelopeFactory,
    overrides: dict[str, Any],
    err_msg: str,
) -> None:
    body = envelope("9001", sign_in_input())
    body["msgid"] = "H44030500001202511260930150001"
    body.update(overrides)
    result = answer(app, body)
    assert (result["infcode"], result["err_msg"], result["output"]) == (-1, err_msg, None)


def test_wrong_institution_is_refused(app: PlatformSimulator, envelope: EnvelopeFactory) -> None:
    body = envelope(
        "9001",
        sign_in_input(),
        fixmedins_code="H11010500009",
        msgid="H11010500009202511260930150001",
    )
    result = answer(app, body)
    assert result["err_msg"] == errors.UNKNOWN_INSTITUTION.format(code="H11010500009")


def test_optional_fields_may_be_omitted(app: PlatformSimulator, envelope: EnvelopeFactory) -> None:
    body = envelope("9001", sign_in_input())
    for optional in ("insuplc_admdvs", "dev_no", "dev_safe_info", "cainfo", "signtype", "sign_no"):
        del body[optional]
    assert answer(app, body)["infcode"] == 0


def test_amounts_in_requests_are_parsed_exactly(app: PlatformSimulator) -> None:
    status, _ = app.handle(b'{"infno": "9001", "amount": 0.1}')
    assert status == 200  # parsed with Decimal; refused later for the missing envelope fields
