"""Scheme B (mobile payment 2.0.1): the fixed vector, round trips, tampering, user IDs."""

from __future__ import annotations

import base64
import contextlib
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsm.sm.signature import SignatureEncoding, der_to_raw
from hsm.sm.sm2 import HostSm2Verifier
from sidecar.platform.security.canonical import string_to_sign
from sidecar.platform.security.errors import (
    DecryptionFailed,
    KeyMaterialInvalid,
    MalformedSecuredMessage,
    SecurityError,
    SignatureInvalid,
    SignatureMissing,
)
from sidecar.platform.security.scheme_b import SchemeB, SchemeBConfig, derive_data_key
from tests.software_sm2 import SoftwareSm2
from tests.vectors import named as vectors
from tests.vectors.independent import gmssl_sm4_ecb, gmssl_verify, openssl_sm4_ecb

CONFIG = SchemeBConfig(app_id=vectors.B_APP_ID, app_secret=vectors.B_APP_SECRET)
HOSPITAL = SoftwareSm2.generate()
PLATFORM = SoftwareSm2.generate()


def hospital_side(config: SchemeBConfig = CONFIG) -> SchemeB:
    return SchemeB(config, HOSPITAL, HostSm2Verifier(PLATFORM.public_key), clock=lambda: "1")


def platform_side(config: SchemeBConfig = CONFIG) -> SchemeB:
    return SchemeB(config, PLATFORM, HostSm2Verifier(HOSPITAL.public_key))


class RecordingSigner:
    """Signs like HOSPITAL and remembers what it was asked to sign."""

    def __init__(self, inner: SoftwareSm2) -> None:
        self.inner = inner
        self.messages: list[bytes] = []

    async def sign(self, message: bytes) -> bytes:
        self.messages.append(message)
        return await self.inner.sign(message)


def test_data_key_vector() -> None:
    assert derive_data_key(vectors.B_APP_ID, vectors.B_APP_SECRET) == vectors.B_DATA_KEY


def test_data_key_independently_with_openssl() -> None:
    seed = vectors.B_APP_ID[:16].encode()
    derived = openssl_sm4_ecb(seed, vectors.B_APP_SECRET.encode()).hex().upper()[:16].encode()
    assert derived == vectors.B_DATA_KEY == CONFIG.data_key()


async def test_vector_request_body() -> None:
    signer = RecordingSigner(HOSPITAL)
    scheme = SchemeB(CONFIG, signer, HostSm2Verifier(PLATFORM.public_key))
    body = await scheme.seal(vectors.B_DATA, timestamp=vectors.B_TIMESTAMP)
    assert list(body) == [
        "appId", "encType", "signType", "timestamp", "version", "encData", "signData",
    ]  # fmt: skip
    assert body["appId"] == vectors.B_APP_ID
    assert (body["encType"], body["signType"]) == ("SM4", "SM2")
    assert (body["timestamp"], body["version"]) == (vectors.B_TIMESTAMP, "2.0.1")
    # what was signed: exactly the hand-derived string to sign, as UTF-8
    assert signer.messages == [vectors.B_STRING_TO_SIGN.encode()]
    # encData: upper-case hex of SM4-ECB-PKCS7 of the plaintext JSON, computed independently
    expected = gmssl_sm4_ecb(vectors.B_DATA_KEY, vectors.B_PLAINTEXT).hex().upper()
    assert body["encData"] == expected
    # signData: Base64 of raw r||s, which gmssl verifies over the string to sign
    raw = base64.b64decode(body["signData"], validate=True)
    assert len(raw) == 64
    point = HOSPITAL.public_key.to_bytes()
    assert gmssl_verify(point, b"1234567812345678", signer.messages[0], raw, der=False)


async def test_vector_enc_data_with_openssl() -> None:
    body = await hospital_side().seal(vectors.B_DATA, timestamp=vectors.B_TIMESTAMP)
    expected = openssl_sm4_ecb(vectors.B_DATA_KEY, vectors.B_PLAINTEXT).hex().upper()
    assert body["encData"] == expected


async def test_round_trip_both_directions() -> None:
    request = await hospital_side().seal(vectors.B_DATA, extra={"trace": "t-1"})
    opened = platform_side().open(json.loads(json.dumps(request)))
    assert opened.data == json.loads(vectors.B_PLAINTEXT.decode(), parse_float=Decimal)
    assert opened.data["feeSumamt"] == Decimal("128.50")
    assert opened.extra == {"trace": "t-1"}
    assert opened.fields["appId"] == vectors.B_APP_ID and "signData" not in opened.fields

    answer = await platform_side().seal({"payStas": "1"}, fields={"code": 0, "message": "成功"})
    back = hospital_side().open(answer)
    assert back.data == {"payStas": "1"} and back.fields["message"] == "成功"


async def test_answer_without_data_is_still_verified() -> None:
    answer = await platform_side().seal(None, fields={"code": -1, "message": "refused"})
    answer.pop("encData")
    assert hospital_side().open(answer).data is None
    answer["message"] = "accepted"
    with pytest.raises(SignatureInvalid):
        hospital_side().open(answer)


async def test_extra_is_unsigned_but_other_fields_are_signed() -> None:
    answer = await platform_side().seal({"a": 1}, fields={"code": 0})
    hospital_side().open({**answer, "extra": "anything"})
    for name, value in (("code", 1), ("timestamp", "2"), ("appId", "X"), ("newField", "x")):
        with pytest.raises(SignatureInvalid, match="signData"):
            hospital_side().open({**answer, name: value})


def flip_hex(text: str, index: int) -> str:
    swapped = "0" if text[index] != "0" else "1"
    return text[:index] + swapped + text[index + 1 :]


async def test_tampered_enc_data() -> None:
    answer = await platform_side().seal(vectors.B_DATA)
    enc = answer["encData"]
    # last block: the padding breaks
    with pytest.raises(DecryptionFailed, match="encData"):
        hospital_side().open({**answer, "encData": flip_hex(enc, len(enc) - 1)})
    # every position: always refused, as bad ciphertext or as a signature mismatch
    for index in range(0, len(enc), 7):
        with pytest.raises((DecryptionFailed, SignatureInvalid)):
            hospital_side().open({**answer, "encData": flip_hex(enc, index)})
    with pytest.raises(MalformedSecuredMessage, match="encData"):
        hospital_side().open({**answer, "encData": enc[:-1]})
    with pytest.raises(MalformedSecuredMessage, match="encData"):
        hospital_side().open({**answer, "encData": enc[:-2] + "zz"})


async def test_tampered_sign_data() -> None:
    answer = await platform_side().seal(vectors.B_DATA)
    raw = bytearray(base64.b64decode(answer["signData"]))
    for index in (0, 31, 32, 63):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        with pytest.raises(SignatureInvalid, match="signData"):
            hospital_side().open({**answer, "signData": base64.b64encode(tampered).decode()})
    with pytest.raises(MalformedSecuredMessage, match="signData"):
        hospital_side().open({**answer, "signData": "!!" + answer["signData"][2:]})
    for missing in (None, ""):
        with pytest.raises(SignatureMissing, match="signData"):
            hospital_side().open({**answer, "signData": missing})
    without = {k: v for k, v in answer.items() if k != "signData"}
    with pytest.raises(SignatureMissing):
        hospital_side().open(without)


async def test_signature_by_another_key_is_refused() -> None:
    impostor = SchemeB(CONFIG, SoftwareSm2.generate(), HostSm2Verifier(HOSPITAL.public_key))
    answer = await impostor.seal({"a": 1})
    with pytest.raises(SignatureInvalid):
        hospital_side().open(answer)


async def test_shape_errors() -> None:
    answer = await platform_side().seal({"a": 1})
    cases: list[tuple[Any, str]] = [
        ([], "body"),
        ({**answer, "encType": "AES"}, "encType"),
        ({**answer, "signType": "RSA"}, "signType"),
        ({**answer, "data": {"a": 1}}, "data"),
        ({**answer, "signData": 5}, "signData"),
        ({**answer, "encData": 5}, "encData"),
    ]
    for body, field in cases:
        with pytest.raises(MalformedSecuredMessage) as caught:
            hospital_side().open(body)
        assert caught.value.field == field
    assert hospital_side().open({**answer, "data": None}).data == {"a": 1}  # null data: absent


async def test_error_messages_never_carry_secrets_or_plaintext() -> None:
    answer = await platform_side().seal({"psnName": "张三"})
    other = SchemeBConfig(app_id=vectors.B_APP_ID, app_secret="another-secret")
    with pytest.raises(SecurityError) as caught:
        SchemeB(other, HOSPITAL, HostSm2Verifier(PLATFORM.public_key)).open(answer)
    text = str(caught.value)
    assert "张三" not in text and vectors.B_APP_SECRET not in text and "another-secret" not in text
    assert vectors.B_APP_SECRET not in repr(CONFIG)


async def test_app_secret_as_user_id() -> None:
    config = SchemeBConfig(
        app_id=vectors.B_APP_ID, app_secret=vectors.B_APP_SECRET, user_id_from_app_secret=True
    )
    user_id = config.sm2_user_id()
    assert user_id == vectors.B_APP_SECRET.encode()
    hospital = SoftwareSm2.generate(user_id=user_id)
    platform = SoftwareSm2.generate(user_id=user_id)
    body = await SchemeB(
        config, hospital, HostSm2Verifier(platform.public_key, user_id=user_id)
    ).seal({"a": 1})
    receiver = SchemeB(config, platform, HostSm2Verifier(hospital.public_key, user_id=user_id))
    assert receiver.open(body).data == {"a": 1}
    default_id = SchemeB(CONFIG, platform, HostSm2Verifier(hospital.public_key))
    with pytest.raises(SignatureInvalid):
        default_id.open(body)


def test_user_id_configuration() -> None:
    assert CONFIG.sm2_user_id() == b"1234567812345678"
    custom = SchemeBConfig(app_id=vectors.B_APP_ID, app_secret="s", user_id=b"HOSP-1")
    assert custom.sm2_user_id() == b"HOSP-1"
    with pytest.raises(KeyMaterialInvalid, match="user id"):
        SchemeBConfig(
            app_id=vectors.B_APP_ID, app_secret="s", user_id=b"X", user_id_from_app_secret=True
        )
    with pytest.raises(KeyMaterialInvalid, match="appId"):
        SchemeBConfig(app_id="short", app_secret="s")
    with pytest.raises(KeyMaterialInvalid, match="appSecret"):
        SchemeBConfig(app_id=vectors.B_APP_ID, app_secret="")


async def test_der_peers_are_a_configuration() -> None:
    config = SchemeBConfig(
        app_id=vectors.B_APP_ID,
        app_secret=vectors.B_APP_SECRET,
        signature_encoding=SignatureEncoding.DER,
    )
    body = await SchemeB(config, HOSPITAL, HostSm2Verifier(PLATFORM.public_key)).seal({"a": 1})
    raw = der_to_raw(base64.b64decode(body["signData"]))
    assert len(raw) == 64
    assert SchemeB(config, PLATFORM, HostSm2Verifier(HOSPITAL.public_key)).open(body).data == {
        "a": 1
    }
    with pytest.raises(MalformedSecuredMessage, match="signData"):
        platform_side().open(body)  # a RAW peer does not guess


async def test_seal_refuses_reserved_fields_and_floats() -> None:
    with pytest.raises(ValueError, match="signData"):
        await hospital_side().seal({"a": 1}, fields={"signData": "x"})
    with pytest.raises(MalformedSecuredMessage, match="float"):
        await hospital_side().seal({"amt": 1.5})


def test_string_to_sign_of_a_body_matches_the_vector_when_fields_come_in_any_order() -> None:
    body = {"version": "2.0.1", "appId": vectors.B_APP_ID, "timestamp": vectors.B_TIMESTAMP,
            "signType": "SM2", "encType": "SM4", "data": vectors.B_DATA}  # fmt: skip
    assert string_to_sign(body, vectors.B_APP_SECRET) == vectors.B_STRING_TO_SIGN


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
    st.decimals(), st.binary(max_size=3),
)  # fmt: skip
anything = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    ["appId", "encType", "signType", "timestamp", "version", "encData", "signData", "extra", "data"]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.one_of(field_names, st.text(max_size=5)), anything, max_size=8))
def test_opener_never_crashes_on_arbitrary_bodies(body: dict[Any, Any]) -> None:
    with contextlib.suppress(SecurityError):
        hospital_side().open(body)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_opener_never_crashes_on_mutations_of_a_real_body(draw: st.DataObject) -> None:
    import asyncio

    answer = asyncio.run(platform_side().seal(vectors.B_DATA))
    name = draw.draw(st.sampled_from(sorted(answer)))
    answer[name] = draw.draw(st.one_of(anything, st.text(alphabet="0123456789ABCDEF", max_size=64)))
    with contextlib.suppress(SecurityError):
        hospital_side().open(answer)


def test_two_step_sealing_without_an_event_loop() -> None:
    pending = platform_side().prepare({"a": 1}, extra={"e": 1}, timestamp=vectors.B_TIMESTAMP)
    assert pending.message.decode().endswith("&key=" + vectors.B_APP_SECRET)
    body = pending.complete(PLATFORM.sign_now(pending.message))
    assert list(body)[-2:] == ["signData", "extra"]
    assert hospital_side().open(body).data == {"a": 1}
