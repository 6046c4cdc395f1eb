"""The SM core's SM2 and SM3: Z and e, keys, the host verifier on every backend, and the test
double's signatures, checked against the shared vectors, the OpenSSL command line and gmssl."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.sm import backend
from hsm.sm.errors import KeyMaterialInvalid, SmError
from hsm.sm.signature import der_to_raw, raw_to_der
from hsm.sm.sm2 import (
    DEFAULT_USER_ID,
    HostSm2Verifier,
    N,
    Sm2PublicKey,
    compute_e,
    compute_z,
    parse_private_scalar,
    private_scalar_from_base64,
)
from hsm.sm.sm3 import hmac_sm3, sm3
from sidecar.platform.security.signer import Sm2Signer, Sm2Verifier
from tests.software_sm2 import SoftwareSm2, tongsuopy_available
from tests.vectors import SM2_GMT, SM3
from tests.vectors import named as vectors
from tests.vectors.independent import (
    gmssl_e,
    gmssl_sm3,
    gmssl_verify,
    openssl_sign,
    openssl_sm3,
    openssl_verify,
)

V = vectors.SM2
VECTOR_KEY = Sm2PublicKey(int(V["xA"], 16), int(V["yA"], 16))
VECTOR_SIGNATURE = bytes.fromhex(V["r"] + V["s"])
BACKENDS = ["gmssl", "tongsuopy", "tongsuopy-e"]  # tongsuopy is pinned in constraints.txt
MESSAGE = b"x" * 200
VERIFIERS = [HostSm2Verifier(VECTOR_KEY, backend=name) for name in BACKENDS]  # type: ignore[arg-type]
# tongsuopy's public API signs with the default user ID only; tongsuopy-e and gmssl take any.
SIGNING_CASES = [
    ("gmssl", DEFAULT_USER_ID),
    ("gmssl", b"ALICE@example"),
    ("gmssl", b"x" * 40),
    ("tongsuopy", DEFAULT_USER_ID),
    ("tongsuopy-e", DEFAULT_USER_ID),
    ("tongsuopy-e", b"ALICE@example"),
    ("tongsuopy-e", b"x" * 40),
]


def test_backend_choice() -> None:
    assert tongsuopy_available()  # the fast path is what production runs; its absence is a bug
    fast, other_id = "tongsuopy", "tongsuopy-e"
    assert SoftwareSm2.generate().backend == fast
    assert HostSm2Verifier(VECTOR_KEY).backend == fast
    assert SoftwareSm2.generate(user_id=b"ALICE").backend == other_id
    assert HostSm2Verifier(VECTOR_KEY, user_id=b"ALICE").backend == other_id
    assert HostSm2Verifier(VECTOR_KEY, backend="gmssl").backend == "gmssl"
    with pytest.raises(KeyMaterialInvalid, match="backend"):
        SoftwareSm2.generate(user_id=b"ALICE", backend="tongsuopy")


def test_raw_e_path_is_dropped_when_its_self_test_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should tongsuopy's private binding ever verify anything it is given, the self-test notices
    # and the gmssl path takes over.
    monkeypatch.setattr(backend.TongsuoE, "verify", lambda *args: True)
    backend.tongsuopy_e.cache_clear()
    try:
        assert backend.tongsuopy_e() is None
        assert SoftwareSm2.generate(user_id=b"ALICE").backend == "gmssl"
        assert HostSm2Verifier(VECTOR_KEY, user_id=b"ALICE").backend == "gmssl"
    finally:
        monkeypatch.undo()
        backend.tongsuopy_e.cache_clear()
    assert backend.tongsuopy_e() is not None


@pytest.mark.parametrize("vector", SM3, ids=lambda v: f"{len(v.message)}-bytes")
def test_sm3_vectors_in_the_core_and_two_independent_implementations(vector: object) -> None:
    message, digest = vector.message, vector.digest  # type: ignore[attr-defined]
    assert sm3(message) == digest
    assert openssl_sm3(message) == digest
    assert gmssl_sm3(message) == digest


def test_hmac_sm3_is_rfc_2104_over_sm3() -> None:
    # HMAC written out from RFC 2104 over gmssl's SM3: shares no code with the core's.
    key, data = b"k" * 20, b"what the data-key blobs carry"
    block = key.ljust(64, b"\x00")
    inner = gmssl_sm3(bytes(b ^ 0x36 for b in block) + data)
    assert hmac_sm3(key, data) == gmssl_sm3(bytes(b ^ 0x5C for b in block) + inner)


def test_z_and_e_of_the_gmt_vector() -> None:
    uid, message = SM2_GMT.user_id, SM2_GMT.message
    assert compute_z(public_key=VECTOR_KEY, user_id=uid) == SM2_GMT.z
    assert compute_e(public_key=VECTOR_KEY, message=message, user_id=uid) == SM2_GMT.e
    assert gmssl_e(VECTOR_KEY.to_bytes(), uid, message) == SM2_GMT.e


def test_compute_e_takes_keywords_only() -> None:
    # Message and user ID are both bytes: positional calls could swap them without a sound.
    with pytest.raises(TypeError):
        compute_e(VECTOR_KEY, SM2_GMT.message, SM2_GMT.user_id)  # type: ignore[misc]
    with pytest.raises(TypeError):
        compute_z(VECTOR_KEY, SM2_GMT.user_id)  # type: ignore[misc]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gmt_vector_verifies(backend: str) -> None:
    verifier = HostSm2Verifier(VECTOR_KEY, backend=backend)  # type: ignore[arg-type]
    assert verifier.verify(vectors.SM2_MESSAGE, VECTOR_SIGNATURE)
    assert not verifier.verify(b"message digesT", VECTOR_SIGNATURE)
    other_id = HostSm2Verifier(VECTOR_KEY, user_id=b"1234567812345679", backend="gmssl")
    assert not other_id.verify(vectors.SM2_MESSAGE, VECTOR_SIGNATURE)


def test_vector_private_key_derives_the_vector_public_key() -> None:
    signer = SoftwareSm2(int(V["d"], 16))
    assert signer.public_key == VECTOR_KEY


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_verify_e_of_the_gmt_vector(backend_name: str) -> None:
    verifier = HostSm2Verifier(VECTOR_KEY, backend=backend_name)  # type: ignore[arg-type]
    assert verifier.verify_e(SM2_GMT.e, VECTOR_SIGNATURE)
    assert not verifier.verify_e(bytes(32), VECTOR_SIGNATURE)
    assert not verifier.verify_e(SM2_GMT.e[:31], VECTOR_SIGNATURE)


def test_verifier_rejects_out_of_range_and_wrong_length_without_raising() -> None:
    verifier = HostSm2Verifier(VECTOR_KEY)
    r, s = VECTOR_SIGNATURE[:32], VECTOR_SIGNATURE[32:]
    assert not verifier.verify(vectors.SM2_MESSAGE, b"\x00" * 32 + s)
    assert not verifier.verify(vectors.SM2_MESSAGE, r + N.to_bytes(32, "big"))
    assert not verifier.verify(vectors.SM2_MESSAGE, VECTOR_SIGNATURE[:63])
    assert not verifier.verify(vectors.SM2_MESSAGE, raw_to_der(VECTOR_SIGNATURE))


def test_the_classes_fit_the_seam() -> None:
    signer: Sm2Signer = SoftwareSm2.generate()
    verifier: Sm2Verifier = HostSm2Verifier(VECTOR_KEY)
    assert signer is not None and verifier is not None


@pytest.mark.parametrize(("backend", "user_id"), SIGNING_CASES)
async def test_software_signatures_verify_everywhere(backend: str, user_id: bytes) -> None:
    signer = SoftwareSm2.generate(user_id=user_id, backend=backend)  # type: ignore[arg-type]
    assert signer.backend == backend
    signature = await signer.sign(MESSAGE)
    assert len(signature) == 64
    point = signer.public_key.to_bytes()
    assert signer.verify(MESSAGE, signature)
    assert gmssl_verify(point, user_id, MESSAGE, signature, der=False)
    assert gmssl_verify(point, user_id, MESSAGE, raw_to_der(signature), der=True)
    assert not gmssl_verify(point, user_id, MESSAGE + b"!", signature, der=False)


@pytest.mark.parametrize(("backend", "user_id"), SIGNING_CASES)
async def test_openssl_verifies_software_signatures(backend: str, user_id: bytes) -> None:
    signer = SoftwareSm2.generate(user_id=user_id, backend=backend)  # type: ignore[arg-type]
    der = raw_to_der(await signer.sign(MESSAGE))
    point = signer.public_key.to_bytes()
    assert openssl_verify(point, MESSAGE, der, user_id)
    assert not openssl_verify(point, MESSAGE, der, b"1234567812345679")  # another user ID
    assert not openssl_verify(point, MESSAGE + b"!", der, user_id)


def test_openssl_verifies_the_gmt_vector() -> None:
    assert openssl_verify(
        VECTOR_KEY.to_bytes(),
        vectors.SM2_MESSAGE,
        raw_to_der(VECTOR_SIGNATURE),
        vectors.SM2_USER_ID,
    )


@pytest.mark.parametrize("user_id", [DEFAULT_USER_ID, b"ALICE@example"])
def test_host_verifier_accepts_openssl_signatures(user_id: bytes) -> None:
    point, der = openssl_sign(MESSAGE, user_id)
    verifier = HostSm2Verifier(Sm2PublicKey.from_bytes(point), user_id=user_id)
    assert verifier.verify(MESSAGE, der_to_raw(der))
    wrong = HostSm2Verifier(Sm2PublicKey.from_bytes(point), user_id=b"someone-else")
    assert not wrong.verify(MESSAGE, der_to_raw(der))


async def test_signature_with_one_user_id_does_not_verify_with_another() -> None:
    alice = SoftwareSm2.generate(user_id=b"ALICE")
    signature = await alice.sign(MESSAGE)
    assert HostSm2Verifier(alice.public_key, user_id=b"ALICE").verify(MESSAGE, signature)
    assert not HostSm2Verifier(alice.public_key, user_id=b"BOB").verify(MESSAGE, signature)
    assert not HostSm2Verifier(alice.public_key).verify(MESSAGE, signature)


def test_private_key_with_java_leading_zero() -> None:
    d = bytes.fromhex(V["d"])
    assert parse_private_scalar(d) == parse_private_scalar(b"\x00" + d) == int(V["d"], 16)
    text = base64.b64encode(b"\x00" + d).decode()
    assert private_scalar_from_base64(text) == int(V["d"], 16)
    assert SoftwareSm2.from_base64(text).public_key == VECTOR_KEY


@pytest.mark.parametrize(
    "data",
    [b"\x01" + bytes(32), bytes(31), bytes(32), (N - 1).to_bytes(32, "big"), b"\xff" * 32],
)
def test_bad_private_keys(data: bytes) -> None:
    with pytest.raises(KeyMaterialInvalid, match="sm2 private key"):
        parse_private_scalar(data)


def test_public_key_parsing() -> None:
    point = VECTOR_KEY.to_bytes()
    assert Sm2PublicKey.from_base64(base64.b64encode(point).decode()) == VECTOR_KEY
    with pytest.raises(KeyMaterialInvalid, match="65 bytes"):
        Sm2PublicKey.from_bytes(point[1:])
    with pytest.raises(KeyMaterialInvalid, match="not a point"):
        Sm2PublicKey.from_bytes(point[:-1] + bytes([point[-1] ^ 1]))
    with pytest.raises(KeyMaterialInvalid, match="Base64"):
        Sm2PublicKey.from_base64("not base64!")


def test_user_id_must_be_usable() -> None:
    with pytest.raises(KeyMaterialInvalid, match="user id"):
        HostSm2Verifier(VECTOR_KEY, user_id=b"")
    with pytest.raises(KeyMaterialInvalid, match="user id"):
        compute_z(public_key=VECTOR_KEY, user_id=b"x" * 8192)


def test_software_key_is_not_in_its_repr() -> None:
    signer = SoftwareSm2(int(V["d"], 16))
    assert V["d"].lower() not in repr(signer).lower()
    assert str(int(V["d"], 16)) not in repr(signer)
    assert "an-app-secret" not in repr(SoftwareSm2(2, user_id=b"an-app-secret"))


async def test_gmssl_public_key_prefix_bug_is_avoided() -> None:
    # gmssl's CryptSM2 runs public_key.lstrip("04") when the hex starts with "04"; find a key
    # whose X starts with 0x04 and check that signing and verifying still work.
    d = 1
    while True:
        signer = SoftwareSm2(d, backend="gmssl", user_id=b"bug-check")
        if signer.public_key.to_bytes()[1] == 0x04:
            break
        d += 1
    signature = await signer.sign(MESSAGE)
    assert signer.verify(MESSAGE, signature)
    assert gmssl_verify(signer.public_key.to_bytes(), b"bug-check", MESSAGE, signature, der=False)


# ------------------------------------------------------------------ hostile input
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_key_parsers_refuse_any_bytes_with_a_named_error(data: bytes) -> None:
    # A key file is written by whoever can write the volume: only the core's errors come out.
    for parse in (Sm2PublicKey.from_bytes, Sm2PublicKey.from_spki_der, Sm2PublicKey.from_pem):
        with contextlib.suppress(SmError):
            parse(data)
    with contextlib.suppress(SmError):
        Sm2PublicKey.from_bytes(b"\x04" + data[:64].ljust(64, b"\x00"))  # right size, any point


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=80))
def test_verifiers_answer_false_for_any_signature_bytes(data: bytes) -> None:
    for verifier in VERIFIERS:
        assert verifier.verify(SM2_GMT.message, data) is False
        assert verifier.verify_e(SM2_GMT.e, data) is False


def test_verifiers_refuse_signatures_at_the_edges_of_the_range() -> None:
    r, s = SM2_GMT.r, SM2_GMT.s
    edges = [(0, s), (r, 0), (N, s), (r, N), (r + N, s), (r, s - N + 2**256)]
    for er, es in edges:
        raw = er.to_bytes(33, "big")[-32:] + es.to_bytes(33, "big")[-32:]
        for verifier in VERIFIERS:
            assert not verifier.verify(SM2_GMT.message, raw)
