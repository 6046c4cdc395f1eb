"""The sealing seam: plain JSON, scheme A and scheme B around one envelope exchange."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from sidecar.platform.envelope import EnvelopeError, ResponseEnvelope
from sidecar.platform.sealing import EnvelopeSignature, MobilePayment, Plain
from sidecar.platform.security.errors import SecurityError
from sidecar.platform.security.scheme_a import SchemeA
from sidecar.platform.security.scheme_b import SchemeB, SchemeBConfig
from tests.software_sm2 import SoftwareSm2

ENVELOPE = {"infno": "1101", "msgid": "H44030500001202611260930000001", "input": {"data": {"a": 1}}}
ANSWER = {"infcode": 0, "err_msg": None, "output": {"insuinfo": [{"balc": Decimal("12.30")}]}}
SM4_KEY = bytes(range(16))


def parties() -> tuple[SoftwareSm2, SoftwareSm2]:
    return SoftwareSm2.generate(), SoftwareSm2.generate()  # (sidecar, platform)


async def test_plain_round_trip_keeps_amounts_exact() -> None:
    sealing = Plain()
    sent = json.loads(await sealing.seal(dict(ENVELOPE)))
    assert sent == ENVELOPE
    body = b'{"infcode":0,"output":{"insuinfo":[{"balc":12.30}]}}'
    answer = ResponseEnvelope.from_dict(sealing.open(body))
    assert answer.output["insuinfo"][0]["balc"] == Decimal("12.30")
    with pytest.raises(EnvelopeError):
        sealing.open(b"<html>")


async def test_scheme_a_request_is_encrypted_and_the_answer_verified() -> None:
    sidecar, platform = parties()
    ours = SchemeA(SM4_KEY, sidecar, platform)
    theirs = SchemeA(SM4_KEY, platform, sidecar)
    sealing = EnvelopeSignature(ours)
    sent = json.loads(await sealing.seal(dict(ENVELOPE)))
    assert isinstance(sent["input"], str) and sent["encType"] == "SM4" and sent["cainfo"]
    assert theirs.open_request(sent)["input"] == ENVELOPE["input"]
    reply = await theirs.seal_response(ANSWER)
    opened = ResponseEnvelope.from_dict(sealing.open(json.dumps(reply, default=str).encode()))
    assert opened.ok and opened.output["insuinfo"][0]["balc"] == Decimal("12.30")


async def test_scheme_a_refuses_an_answer_signed_by_someone_else() -> None:
    sidecar, platform = parties()
    impostor = SoftwareSm2.generate()
    sealing = EnvelopeSignature(SchemeA(SM4_KEY, sidecar, platform))
    forged = await SchemeA(SM4_KEY, impostor, sidecar).seal_response(ANSWER)
    with pytest.raises(SecurityError):
        sealing.open(json.dumps(forged, default=str).encode())


async def test_scheme_b_carries_the_envelope_as_business_data() -> None:
    sidecar, platform = parties()
    config = SchemeBConfig(app_id="APP1234567890ABCDEF", app_secret="s3cret-app-secret")
    sealing = MobilePayment(SchemeB(config, sidecar, platform))
    sent = json.loads(await sealing.seal(dict(ENVELOPE)))
    assert {"appId", "encData", "signData", "timestamp"} <= set(sent) and "input" not in sent
    assert SchemeB(config, platform, sidecar).open(sent).data == ENVELOPE
    reply = await SchemeB(config, platform, sidecar).seal(ANSWER)
    opened = ResponseEnvelope.from_dict(sealing.open(json.dumps(reply, default=str).encode()))
    assert opened.output["insuinfo"][0]["balc"] == Decimal("12.30")
    reply["signData"] = reply["signData"][:-4] + "AAAA"
    with pytest.raises(SecurityError):
        sealing.open(json.dumps(reply, default=str).encode())
