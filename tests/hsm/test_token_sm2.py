"""SM2 on the host and in the token: known answers, codecs, interoperability."""

from __future__ import annotations

import contextlib

import pytest
from gmssl import sm2 as gm_sm2
from hypothesis import given
from hypothesis import strategies as st

from hsm.errors import InvalidSignature, MalformedInput
from hsm.sm.errors import KeyMaterialInvalid
from hsm.sm.signature import Signature, SignatureEncoding
from hsm.sm.sm2 import DEFAULT_USER_ID, N, Sm2PublicKey, compute_e
from hsm.sm2 import HostVerifier, Sm2Signer, sign_message_in_token, verify_e_in_token
from tests.vectors import SM2_GMT as V
from tests.vectors import SM3, SM4_ECB
from tests.vectors.independent import gmssl_verify, openssl_verify

VEC_KEY = Sm2PublicKey(V.x, V.y)
VEC_SIG = Signature(V.r, V.s)


def _signer(token) -> Sm2Signer:
    from hsm.keys import KeyStore

    info = KeyStore(token).active("sign")
    return Sm2Signer(token, info.label, info.public_key)


# ------------------------------------------------------------------ known answers
# (Z, e, SM3 and SM4 on the host: the core's tests, tests/hsm/sm/)
def test_vector_verifies_on_the_host() -> None:
    HostVerifier().verify(VEC_KEY, V.message, VEC_SIG)
    HostVerifier().verify_e(VEC_KEY, V.e, VEC_SIG)
    with pytest.raises(InvalidSignature):
        HostVerifier().verify(VEC_KEY, b"message digesT", VEC_SIG)
    with pytest.raises(InvalidSignature):
        HostVerifier().verify(VEC_KEY, V.message, VEC_SIG, user_id=b"ALICE123@YAHOO.COM")
    with pytest.raises(InvalidSignature):
        HostVerifier().verify_e(VEC_KEY, bytes(32), VEC_SIG)


def test_vector_verifies_in_the_token(token) -> None:
    e = V.e
    enc = token.profile.signature_encoding
    assert token.call(lambda ws: verify_e_in_token(ws, token.mechs, enc, VEC_KEY, e, VEC_SIG))
    bad = Signature(VEC_SIG.r, VEC_SIG.s ^ 1)
    assert not token.call(lambda ws: verify_e_in_token(ws, token.mechs, enc, VEC_KEY, e, bad))


def test_sm3_and_sm4_vectors_through_the_token(token) -> None:
    from pkcs11 import Attribute, ObjectClass

    for vector in SM3:
        out = token.call(
            lambda ws, m=vector.message: ws.p11.digest(m, mechanism=token.mechs.mech("sm3_digest"))
        )
        assert out == vector.digest
    ecb = SM4_ECB[0]

    def sm4(ws):
        key = ws.p11.create_object(
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: token.mechs.key_type("sm4"),
                Attribute.TOKEN: False,
                Attribute.VALUE: ecb.key,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
            }
        )
        try:
            ct = key.encrypt(ecb.plaintext, mechanism=token.mechs.mech("sm4_ecb"))
            pt = key.decrypt(ct, mechanism=token.mechs.mech("sm4_ecb"))
        finally:
            key.destroy()
        return ct, pt

    ct, pt = token.call(sm4)
    assert ct == ecb.ciphertext and pt == ecb.plaintext


# ------------------------------------------------------------------ codecs
def test_signature_encodings_round_trip() -> None:
    assert Signature.from_der(VEC_SIG.to_der()) == VEC_SIG
    assert Signature.from_raw(VEC_SIG.to_raw()) == VEC_SIG
    assert len(VEC_SIG.to_raw()) == 64
    for enc in SignatureEncoding:
        assert Signature.decode(VEC_SIG.encode(enc), enc) == VEC_SIG
        assert Signature.from_b64(VEC_SIG.to_b64(enc), enc) == VEC_SIG


@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_codecs_round_trip_any_valid_pair(r: int, s: int) -> None:
    sig = Signature(r, s)
    assert Signature.from_der(sig.to_der()) == sig
    assert Signature.from_raw(sig.to_raw()) == sig


@pytest.mark.parametrize(
    ("decode", "data"),
    [
        (Signature.from_raw, b"\x01" * 63),
        (Signature.from_raw, b"\x00" * 64),  # r = s = 0
        (Signature.from_raw, b"\xff" * 64),  # r, s >= n
        (Signature.from_der, b""),
        (Signature.from_der, b"\x30\x03\x02\x01"),
        (Signature.from_der, VEC_SIG.to_der() + b"\x00"),  # trailing garbage
        (Signature.from_der, b"\x30\x06\x02\x01\x01\x02\x01\x01"[:-1]),
        (
            Signature.from_der,
            bytes.fromhex("3008020200010202 0001".replace(" ", "")),
        ),  # non-minimal
        (lambda t: Signature.from_b64(t, SignatureEncoding.DER), "not base64!"),
        (lambda t: Signature.from_b64(t, SignatureEncoding.RAW), "AQEBAQEBAQEBAQ=="),
    ],
)
def test_malformed_signatures_are_refused_cleanly(decode, data) -> None:
    with pytest.raises(MalformedInput) as exc:
        decode(data)
    assert "\n" not in str(exc.value)


@given(st.binary(max_size=80))
def test_der_decoder_never_crashes(data: bytes) -> None:
    with contextlib.suppress(MalformedInput):
        Signature.from_der(data)


def test_public_key_encodings() -> None:
    assert Sm2PublicKey.from_spki_der(VEC_KEY.spki_der()) == VEC_KEY
    assert Sm2PublicKey.from_pem(VEC_KEY.pem()) == VEC_KEY
    assert Sm2PublicKey.from_ec_point(VEC_KEY.ec_point_attribute()) == VEC_KEY
    with pytest.raises(KeyMaterialInvalid, match="not a point"):
        Sm2PublicKey(VEC_KEY.x, VEC_KEY.y + 1)
    with pytest.raises(MalformedInput, match="SubjectPublicKeyInfo"):
        Sm2PublicKey.from_spki_der(VEC_KEY.spki_der()[:-1])


# ------------------------------------------------------------------ interoperability
def test_token_signatures_verify_with_openssl_and_gmssl(token) -> None:
    signer = _signer(token)
    msg = b"interop " * 25
    sig = signer.sign_blocking(msg)
    point = signer.public_key.to_bytes()
    assert openssl_verify(point, msg, sig.to_der(), DEFAULT_USER_ID)
    assert not openssl_verify(point, msg + b"!", sig.to_der(), DEFAULT_USER_ID)
    assert gmssl_verify(point, DEFAULT_USER_ID, msg, sig.to_raw(), der=False)
    assert gmssl_verify(point, DEFAULT_USER_ID, msg, sig.to_der(), der=True)
    assert not gmssl_verify(point, DEFAULT_USER_ID, msg + b"!", sig.to_raw(), der=False)


def test_gmssl_signature_verifies_via_our_paths(token) -> None:
    import secrets

    d = secrets.randbelow(N - 2) + 1
    crypt = gm_sm2.CryptSM2(private_key=f"{d:064x}", public_key="")
    pub_hex = crypt._kg(d, gm_sm2.default_ecc_table["g"])
    crypt = gm_sm2.CryptSM2(private_key=f"{d:064x}", public_key=pub_hex)
    pub = Sm2PublicKey.from_bytes(bytes.fromhex("04" + pub_hex))
    msg = b"from gmssl"
    sig = Signature.from_raw(bytes.fromhex(crypt.sign_with_sm3(msg, secrets.token_hex(32))))
    HostVerifier().verify(pub, msg, sig)
    e = compute_e(public_key=pub, message=msg, user_id=DEFAULT_USER_ID)
    assert token.call(lambda ws: verify_e_in_token(ws, token.mechs, "raw", pub, e, sig))


async def test_custom_user_id_round_trip(token) -> None:
    from hsm.keys import KeyStore

    info = KeyStore(token).active("sign")
    signer = Sm2Signer(token, info.label, info.public_key, user_id=b"ALICE123@YAHOO.COM")
    sig = await signer.sign(b"custom id")
    HostVerifier().verify(info.public_key, b"custom id", sig, user_id=b"ALICE123@YAHOO.COM")
    with pytest.raises(InvalidSignature):
        HostVerifier().verify(info.public_key, b"custom id", sig)


def test_token_side_z_signing_matches_host_verification(token) -> None:
    from hsm.keys import KeyStore

    info = KeyStore(token).active("sign")
    msg = b"token computes Z and e"
    enc = token.profile.signature_encoding
    sig = token.call(lambda ws: sign_message_in_token(ws, token.mechs, enc, info.label, msg))
    HostVerifier().verify(info.public_key, msg, sig)
