"""Scheme A (envelope signature): seal/open, independent verification, tampering, user IDs."""

from __future__ import annotations

import base64
import contextlib
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm.sm.signature import SignatureEncoding, der_to_raw, raw_to_der
from hsm.sm.sm2 import HostSm2Verifier
from sidecar.platform.security.errors import (
    DecryptionFailed,
    KeyMaterialInvalid,
    MalformedSecuredMessage,
    SecurityError,
    SignatureInvalid,
    SignatureMissing,
)
from sidecar.platform.security.scheme_a import SchemeA, SchemeAConfig, SchemeAKeys
from tests.software_sm2 import SoftwareSm2
from tests.vectors.independent import gmssl_sm4_ecb, gmssl_verify, openssl_verify

KEY = b"0123456789abcdef"
HOSPITAL = SoftwareSm2.generate()
PLATFORM = SoftwareSm2.generate()


def hospital_side(config: SchemeAConfig | None = None, key: bytes = KEY) -> SchemeA:
    return SchemeA(key, HOSPITAL, HostSm2Verifier(PLATFORM.public_key), config)


def platform_side(config: SchemeAConfig | None = None) -> SchemeA:
    return SchemeA(KEY, PLATFORM, HostSm2Verifier(HOSPITAL.public_key), config)


def request(**changes: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "infno": "2206",
        "msgid": "H11010500001202611260930000001",
        "opter": "emp-001",
        "cainfo": "",
        "signtype": "",
        "input": {"data": {"psn_no": "P1", "medfee_sumamt": Decimal("128.50"), "名": "张三"}},
    }
    envelope.update(changes)
    return envelope


def answer(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "infcode": 0,
        "inf_refmsgid": "110105202611260930001234567890",
        "err_msg": None,
        "output": {"setlinfo": {"setl_id": "S1", "balc": Decimal("1000.00")}},
    }
    body.update(changes)
    return body


class RecordingSigner:
    def __init__(self, inner: SoftwareSm2) -> None:
        self.inner = inner
        self.messages: list[bytes] = []

    async def sign(self, message: bytes) -> bytes:
        self.messages.append(message)
        return await self.inner.sign(message)


async def test_sealed_request_fields() -> None:
    signer = RecordingSigner(HOSPITAL)
    sealed = await SchemeA(KEY, signer, HostSm2Verifier(PLATFORM.public_key)).seal_request(
        request()
    )
    plaintext = '{"data":{"psn_no":"P1","medfee_sumamt":128.50,"名":"张三"}}'.encode()
    assert signer.messages == [plaintext]  # compact, UTF-8, given key order, exact Decimal
    assert sealed["encType"] == "SM4" and sealed["signtype"] == "SM2"
    assert base64.b64decode(sealed["input"]) == gmssl_sm4_ecb(KEY, plaintext)
    raw = base64.b64decode(sealed["cainfo"], validate=True)
    assert len(raw) == 64 and len(sealed["cainfo"]) == 88
    assert gmssl_verify(
        HOSPITAL.public_key.to_bytes(), b"1234567812345678", plaintext, raw, der=False
    )
    assert gmssl_verify(
        HOSPITAL.public_key.to_bytes(), b"1234567812345678", plaintext, raw_to_der(raw), der=True
    )
    assert {
        k: v for k, v in sealed.items() if k not in ("input", "cainfo", "signtype", "encType")
    } == {k: v for k, v in request().items() if k not in ("input", "cainfo", "signtype")}
    json.dumps(sealed)  # the sealed envelope is plain JSON


async def test_openssl_verifies_cainfo() -> None:
    signer = RecordingSigner(HOSPITAL)
    sealed = await SchemeA(KEY, signer, HostSm2Verifier(PLATFORM.public_key)).seal_request(
        request()
    )
    der = raw_to_der(base64.b64decode(sealed["cainfo"]))
    point = HOSPITAL.public_key.to_bytes()
    assert openssl_verify(point, signer.messages[0], der, b"1234567812345678")
    assert not openssl_verify(point, signer.messages[0] + b" ", der, b"1234567812345678")


async def test_round_trip() -> None:
    sealed = await hospital_side().seal_request(request())
    assert (
        platform_side().open_request(json.loads(json.dumps(sealed)))["input"] == request()["input"]
    )
    reply = await platform_side().seal_response(answer())
    opened = hospital_side().open_response(json.loads(json.dumps(reply)))
    assert opened["output"] == answer()["output"]
    assert opened["output"]["setlinfo"]["balc"] == Decimal("1000.00")
    assert opened["infcode"] == 0


async def test_der_configuration() -> None:
    config = SchemeAConfig(signature_encoding=SignatureEncoding.DER)
    reply = await platform_side(config).seal_response(answer())
    der_to_raw(base64.b64decode(reply["cainfo"]))
    assert hospital_side(config).open_response(reply)["output"] == answer()["output"]
    with pytest.raises(MalformedSecuredMessage, match="cainfo"):
        hospital_side().open_response(reply)


async def test_mime_base64_is_an_option() -> None:
    reply = await platform_side().seal_response(answer(output={"x": "y" * 200}))
    wrapped = "\r\n".join(reply["output"][i : i + 76] for i in range(0, len(reply["output"]), 76))
    with pytest.raises(MalformedSecuredMessage, match="output"):
        hospital_side().open_response({**reply, "output": wrapped})
    lenient = hospital_side(SchemeAConfig(accept_base64_line_breaks=True))
    assert lenient.open_response({**reply, "output": wrapped})["output"] == {"x": "y" * 200}


async def test_missing_signature() -> None:
    reply = await platform_side().seal_response(answer())
    for missing in (None, ""):
        with pytest.raises(SignatureMissing, match="cainfo"):
            hospital_side().open_response({**reply, "cainfo": missing})
    with pytest.raises(SignatureMissing):
        hospital_side().open_response({k: v for k, v in reply.items() if k != "cainfo"})


async def test_refusal_without_output() -> None:
    refusal = answer(infcode=-1, err_msg="no such person", output=None)
    with pytest.raises(SignatureMissing):
        hospital_side().open_response(refusal)
    lenient = hospital_side(SchemeAConfig(allow_unsigned_without_output=True))
    assert lenient.open_response(refusal)["output"] is None
    # the option never lets unsigned *output* through
    reply = await platform_side().seal_response(answer())
    with pytest.raises(SignatureMissing):
        lenient.open_response({**reply, "cainfo": ""})


def flip_base64(text: str, byte_index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[byte_index] ^= 0x01
    return base64.b64encode(raw).decode()


async def test_tampered_output() -> None:
    reply = await platform_side().seal_response(answer())
    size = len(base64.b64decode(reply["output"]))
    with pytest.raises(DecryptionFailed, match="output"):
        hospital_side().open_response({**reply, "output": flip_base64(reply["output"], size - 1)})
    for index in range(size):
        with pytest.raises((DecryptionFailed, SignatureInvalid)):
            hospital_side().open_response({**reply, "output": flip_base64(reply["output"], index)})
    with pytest.raises(SignatureInvalid, match="cainfo"):  # first block: padding intact
        hospital_side().open_response({**reply, "output": flip_base64(reply["output"], 0)})


async def test_tampered_cainfo() -> None:
    reply = await platform_side().seal_response(answer())
    for index in (0, 31, 32, 63):
        with pytest.raises(SignatureInvalid, match="cainfo"):
            hospital_side().open_response({**reply, "cainfo": flip_base64(reply["cainfo"], index)})
    with pytest.raises(MalformedSecuredMessage, match="cainfo"):
        hospital_side().open_response({**reply, "cainfo": reply["cainfo"][:-4]})


async def test_wrong_key_or_signer() -> None:
    reply = await platform_side().seal_response(answer())
    with pytest.raises(DecryptionFailed, match="output"):
        hospital_side(key=b"fedcba9876543210").open_response(reply)
    impostor = SchemeA(KEY, SoftwareSm2.generate(), HostSm2Verifier(HOSPITAL.public_key))
    with pytest.raises(SignatureInvalid):
        hospital_side().open_response(await impostor.seal_response(answer()))


async def test_shape_errors() -> None:
    reply = await platform_side().seal_response(answer())
    for body, field in [
        ("text", "envelope"),
        ({**reply, "encType": "AES"}, "encType"),
        ({**reply, "signtype": "RSA"}, "signtype"),
        ({**reply, "output": {"plain": True}}, "output"),
        ({**reply, "output": None}, "output"),
    ]:
        with pytest.raises(MalformedSecuredMessage) as caught:
            hospital_side().open_response(body)
        assert caught.value.field == field
    with pytest.raises(MalformedSecuredMessage, match="input"):
        await hospital_side().seal_request({"infno": "1101"})
    with pytest.raises(MalformedSecuredMessage, match="float"):
        await hospital_side().seal_request(request(input={"amt": 1.5}))


async def test_user_id_variants() -> None:
    keys = SchemeAKeys(sm4_key=KEY, user_id=b"H11010500001")
    platform = SoftwareSm2.generate(user_id=keys.user_id)
    reply = await SchemeA(
        keys.sm4_key, platform, HostSm2Verifier(HOSPITAL.public_key)
    ).seal_response(answer())
    same_id = SchemeA(KEY, HOSPITAL, HostSm2Verifier(platform.public_key, user_id=keys.user_id))
    assert same_id.open_response(reply)["output"] == answer()["output"]
    default_id = SchemeA(KEY, HOSPITAL, HostSm2Verifier(platform.public_key))
    with pytest.raises(SignatureInvalid):
        default_id.open_response(reply)


def test_keys_derived_from_client_id_are_an_explicit_option() -> None:
    keys = SchemeAKeys.derived_from_client_id("CLIENT0123456789-extra")
    assert keys.sm4_key == b"CLIENT0123456789"
    assert keys.user_id == b"CLIENT0123456789-extra"
    assert "CLIENT0123456789" not in repr(keys).split("user_id")[0]
    with pytest.raises(KeyMaterialInvalid, match="client id"):
        SchemeAKeys.derived_from_client_id("short")
    with pytest.raises(KeyMaterialInvalid, match="sm4 key"):
        SchemeAKeys(sm4_key=b"short")
    with pytest.raises(KeyMaterialInvalid, match="sm4 key"):
        SchemeA(b"short", HOSPITAL, HostSm2Verifier(PLATFORM.public_key))


leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6), st.binary(max_size=3)
)
anything = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
names = st.sampled_from(["output", "cainfo", "encType", "signtype", "infcode"])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(names, st.text(max_size=5)), anything, max_size=6))
def test_opener_never_crashes(body: dict[str, Any]) -> None:
    with contextlib.suppress(SecurityError):
        hospital_side().open_response(body)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_opener_never_crashes_on_mutations_of_a_real_answer(draw: st.DataObject) -> None:
    import asyncio

    reply = asyncio.run(platform_side().seal_response(answer()))
    name = draw.draw(st.sampled_from(sorted(reply)))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    reply[name] = draw.draw(st.one_of(anything, st.text(alphabet=alphabet, max_size=120)))
    with contextlib.suppress(SecurityError):
        hospital_side().open_response(reply)


def test_two_step_sealing_without_an_event_loop() -> None:
    # The simulator's synchronous path: prepare, sign with sign_now, complete.
    pending = platform_side().prepare(answer(), "output")
    assert "cainfo" not in pending.body
    reply = pending.complete(PLATFORM.sign_now(pending.message))
    assert hospital_side().open_response(reply)["output"] == answer()["output"]
    with pytest.raises(MalformedSecuredMessage, match="64 bytes"):
        pending.complete(b"\x01" * 63)
