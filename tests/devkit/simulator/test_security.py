"""The simulator's schemes A and B against the sidecar's, and against OpenSSL and gmssl.

The simulator's crypto (``yibao_devkit.simulator.crypto``, ``signing_text``, ``security``) shares no
code with ``sidecar.platform.security``; every test here is a check between two independent
implementations: what one seals, the other opens, in both directions, and third parties (the
OpenSSL command line, gmssl) agree with the simulator's signatures and ciphertexts.
"""

from __future__ import annotations

import base64
import decimal
import json
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hsm.sm.sm2 import HostSm2Verifier, Sm2PublicKey
from sidecar.platform.security import canonical, json_text
from sidecar.platform.security.errors import SignatureInvalid
from sidecar.platform.security.scheme_a import SchemeA
from sidecar.platform.security.scheme_b import SchemeB, SchemeBConfig
from tests.devkit.simulator.support import envelope_factory, person_input, sign_in_input
from tests.software_sm2 import SoftwareSm2
from tests.vectors import named as vectors
from tests.vectors.independent import gmssl_verify, openssl_sign
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator import PlatformSimulator, Population, running_simulator
from yibao_devkit.simulator import crypto as sim
from yibao_devkit.simulator.envelope import response
from yibao_devkit.simulator.errors import Refusal
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.security import (
    SECURITY_CHECK_FAILED,
    SchemeAPlatform,
    SchemeBPlatform,
    derive_data_key,
)
from yibao_devkit.simulator.signing_text import string_to_sign
from yibao_devkit.simulator.wire import Money, dumps

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl command line not installed")

SM4_KEY = b"K3y-0f-Scheme-A!"
OTHER_ID = b"H44030500001"  # an institution code as the SM2 user ID
HOSPITAL = SoftwareSm2.generate()  # the sidecar's software signer, default user ID
PLATFORM_KEY = sim.PrivateKey.for_seed(20261126)


def point_of(key: SoftwareSm2) -> sim.PublicKey:
    return sim.PublicKey.from_point(key.public_key.to_bytes())


def sidecar_view(key: sim.PrivateKey) -> Sm2PublicKey:
    return Sm2PublicKey.from_bytes(key.public_key.point())


def wire(message: Mapping[str, Any]) -> bytes:
    """A message as it travels: the simulator's JSON writer (amounts exact)."""
    return dumps(message).encode("utf-8")


def received(body: bytes) -> dict[str, Any]:
    """A body as the simulator's app decodes it (exact decimals)."""
    value: dict[str, Any] = json.loads(body, parse_float=decimal.Decimal)
    return value


def an_answer(output: Any, err_msg: str | None = None) -> dict[str, Any]:
    return dict(
        response(
            infcode=-1 if err_msg else 0,
            inf_refmsgid="44030020261126093000" + "0000000001",
            refmsg_time="20261126093000123",
            respond_time="20261126093000456",
            err_msg=err_msg,
            output=output,
        )
    )


OUTPUT = {
    "baseinfo": {"psn_no": "44030000000000000001", "psn_name": "张三", "age": 35},
    "insuinfo": [{"balc": Money(123450), "insutype": "310", "paus_insu_date": None}],
    "memo": 'a & b = c "quoted" \\ \n',
}
OUTPUT_PARSED = received(wire(OUTPUT))


def request_envelope(infno: str = "1101") -> dict[str, Any]:
    payload = person_input("440305199001011234", "张三")
    payload["data"]["amt"] = decimal.Decimal("12.50")
    return envelope_factory()(infno, payload, "S0001")


# ------------------------------------------------------------------------------ scheme A


def scheme_a_pair(
    user_id: bytes = sim.DEFAULT_USER_ID, backend: sim.BackendChoice = "auto"
) -> tuple[SchemeA, SchemeAPlatform]:
    hospital = HOSPITAL if user_id == sim.DEFAULT_USER_ID else SoftwareSm2.generate(user_id=user_id)
    simulator = SchemeAPlatform(
        SM4_KEY, point_of(hospital), PLATFORM_KEY, user_id=user_id, backend=backend
    )
    verifier = HostSm2Verifier(sidecar_view(PLATFORM_KEY), user_id=user_id)
    return SchemeA(SM4_KEY, hospital, verifier), simulator


def a_cases() -> list[tuple[bytes, sim.Backend]]:
    return [
        (uid, b) for uid in (sim.DEFAULT_USER_ID, OTHER_ID) for b in sim.available_backends(uid)
    ]


@pytest.mark.parametrize(("user_id", "backend"), a_cases())
async def test_scheme_a_request_sealed_by_the_sidecar_opens_in_the_simulator(
    user_id: bytes, backend: sim.BackendChoice
) -> None:
    sidecar, simulator = scheme_a_pair(user_id, backend)
    envelope = request_envelope()
    body = received(json_text.dumps(await sidecar.seal_request(envelope)))
    assert (body["encType"], body["signtype"]) == ("SM4", "SM2")
    opened = simulator.open(body)
    assert opened["input"] == envelope["input"]
    assert opened["infno"] == "1101"


@pytest.mark.parametrize(("user_id", "backend"), a_cases())
def test_scheme_a_answer_sealed_by_the_simulator_opens_in_the_sidecar(
    user_id: bytes, backend: sim.BackendChoice
) -> None:
    sidecar, simulator = scheme_a_pair(user_id, backend)
    sealed = simulator.seal(an_answer(OUTPUT))
    assert (sealed["encType"], sealed["signtype"]) == ("SM4", "SM2")
    opened = sidecar.open_response(json_text.loads(wire(sealed), field="answer"))
    assert opened["output"] == OUTPUT_PARSED
    # the signature covers exactly the encrypted bytes
    plaintext = sim.sm4_ecb_decrypt(SM4_KEY, base64.b64decode(str(sealed["output"])))
    assert plaintext == wire(OUTPUT)


def test_scheme_a_refusal_is_signed_over_null() -> None:
    """Convention: a refusal's output is JSON null, encrypted and signed like any output."""
    sidecar, simulator = scheme_a_pair()
    sealed = simulator.seal(an_answer(None, "未查询到该人员的参保信息"))
    assert sim.sm4_ecb_decrypt(SM4_KEY, base64.b64decode(str(sealed["output"]))) == b"null"
    opened = sidecar.open_response(received(wire(sealed)))
    assert (opened["output"], opened["err_msg"]) == (None, "未查询到该人员的参保信息")


async def test_scheme_a_wrong_user_id_is_refused() -> None:
    sidecar, _ = scheme_a_pair(OTHER_ID)
    _, default_simulator = scheme_a_pair()
    body = received(json_text.dumps(await sidecar.seal_request(request_envelope())))
    with pytest.raises(Refusal) as refused:
        default_simulator.open(body)
    assert refused.value.err_msg == SECURITY_CHECK_FAILED


def flip_base64(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


async def test_scheme_a_tampering_gets_one_answer() -> None:
    sidecar, simulator = scheme_a_pair()
    body = received(json_text.dumps(await sidecar.seal_request(request_envelope())))
    size = len(base64.b64decode(body["input"]))
    variants = [{**body, "input": flip_base64(body["input"], i)} for i in (0, 17, size - 1)]
    variants += [{**body, "cainfo": flip_base64(body["cainfo"], i)} for i in (0, 40, 63)]
    variants += [{**body, "cainfo": ""}, {**body, "cainfo": "not base64!"}]
    variants += [{k: v for k, v in body.items() if k != "cainfo"}, {**body, "input": "AAAA"}]
    for variant in variants:
        with pytest.raises(Refusal) as refused:
            simulator.open(variant)
        assert refused.value.err_msg == SECURITY_CHECK_FAILED
    with pytest.raises(Refusal, match="encType"):
        simulator.open({**body, "encType": "AES"})


# ------------------------------------------------------------------------------ scheme B


def scheme_b_pair(
    *, user_id_from_app_secret: bool = False, backend: sim.BackendChoice = "auto"
) -> tuple[SchemeB, SchemeBPlatform]:
    config = SchemeBConfig(
        app_id=vectors.B_APP_ID,
        app_secret=vectors.B_APP_SECRET,
        user_id_from_app_secret=user_id_from_app_secret,
    )
    user_id = config.sm2_user_id()
    hospital = HOSPITAL if user_id == sim.DEFAULT_USER_ID else SoftwareSm2.generate(user_id=user_id)
    simulator = SchemeBPlatform(
        vectors.B_APP_ID,
        vectors.B_APP_SECRET,
        point_of(hospital),
        PLATFORM_KEY,
        user_id_from_app_secret=user_id_from_app_secret,
        backend=backend,
        clock=lambda: vectors.B_TIMESTAMP,
    )
    verifier = HostSm2Verifier(sidecar_view(PLATFORM_KEY), user_id=user_id)
    return SchemeB(config, hospital, verifier), simulator


def b_cases() -> list[tuple[bool, sim.Backend]]:
    secret_id = vectors.B_APP_SECRET.encode()
    return [(False, b) for b in sim.available_backends()] + [
        (True, b) for b in sim.available_backends(secret_id)
    ]


@pytest.mark.parametrize(("from_secret", "backend"), b_cases())
async def test_scheme_b_request_sealed_by_the_sidecar_opens_in_the_simulator(
    from_secret: bool, backend: sim.BackendChoice
) -> None:
    sidecar, simulator = scheme_b_pair(user_id_from_app_secret=from_secret, backend=backend)
    envelope = request_envelope("2207")
    body = received(json_text.dumps(await sidecar.seal(envelope)))
    assert simulator.routing_infno(body) == "2207"
    assert simulator.open(body) == envelope  # the business data is the whole envelope


@pytest.mark.parametrize(("from_secret", "backend"), b_cases())
def test_scheme_b_answer_sealed_by_the_simulator_opens_in_the_sidecar(
    from_secret: bool, backend: sim.BackendChoice
) -> None:
    sidecar, simulator = scheme_b_pair(user_id_from_app_secret=from_secret, backend=backend)
    for answer in (an_answer(OUTPUT), an_answer(None, "系统繁忙")):
        sealed = simulator.seal(answer)
        assert list(sealed) == [
            "appId", "encType", "signType", "timestamp", "version", "encData", "signData",
        ]  # fmt: skip
        opened = sidecar.open(json_text.loads(wire(sealed), field="body"))
        assert opened.data == received(wire(answer))


def test_scheme_b_string_to_sign_matches_the_pinned_vector() -> None:
    fields = {
        "appId": vectors.B_APP_ID,
        "encType": "SM4",
        "signType": "SM2",
        "timestamp": vectors.B_TIMESTAMP,
        "version": vectors.B_VERSION,
        "encData": "ignored",
        "signData": "ignored",
        "extra": {"ignored": True},
        "data": vectors.B_DATA,
    }
    assert string_to_sign(fields, vectors.B_APP_SECRET) == vectors.B_STRING_TO_SIGN


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.decimals(
        allow_nan=False, allow_infinity=False, places=2, min_value=-(10**6), max_value=10**6
    ),
    st.text(max_size=5),
    st.sampled_from(["", " ", "&=", '"\\\n', "张三"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(data=_values, extra_fields=st.dictionaries(st.sampled_from(["code", "msg", "ts"]), _scalars))
def test_scheme_b_canonical_strings_agree(data: Any, extra_fields: dict[str, Any]) -> None:
    fields = {"appId": vectors.B_APP_ID, "version": "2.0.1", **extra_fields, "data": data}
    assert string_to_sign(fields, "s3cr3t") == canonical.string_to_sign(fields, "s3cr3t")


async def test_scheme_b_tampering_gets_one_answer() -> None:
    sidecar, simulator = scheme_b_pair()
    body = received(json_text.dumps(await sidecar.seal(request_envelope())))
    enc = body["encData"]
    flipped = [
        enc[:i] + ("0" if enc[i] != "0" else "1") + enc[i + 1 :] for i in (0, 40, len(enc) - 1)
    ]
    variants = [{**body, "encData": text} for text in flipped]
    variants += [{**body, "signData": flip_base64(body["signData"], i)} for i in (0, 33, 63)]
    variants += [{**body, "timestamp": "1764120600001"}, {**body, "version": "2.0.2"}]
    variants += [{**body, "appId": "X" * 32}, {**body, "signData": ""}, {**body, "encData": "xyz"}]
    for variant in variants:
        with pytest.raises(Refusal) as refused:
            simulator.open(variant)
        assert refused.value.err_msg == SECURITY_CHECK_FAILED
    assert simulator.open({**body, "extra": {"unsigned": 1}})["infno"] == "1101"  # not signed


# --------------------------------------------------------- independence: OpenSSL, gmssl


def openssl(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)


def openssl_accepts(key: sim.PublicKey, message: bytes, der: bytes, user_id: bytes) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pub.pem").write_text(key.pem())
        (folder / "sig.der").write_bytes(der)
        (folder / "msg.bin").write_bytes(message)
        done = openssl(
            "dgst", "-sm3", "-verify", str(folder / "pub.pem"),
            "-sigopt", f"distid:{user_id.decode()}",
            "-signature", str(folder / "sig.der"), str(folder / "msg.bin"),
        )  # fmt: skip
        return done.returncode == 0 and b"Verified OK" in done.stdout


def der_of(raw: bytes) -> bytes:
    def integer(value: bytes) -> bytes:
        value = value.lstrip(b"\x00") or b"\x00"
        if value[0] & 0x80:
            value = b"\x00" + value
        return bytes((0x02, len(value))) + value

    body = integer(raw[:32]) + integer(raw[32:])
    return bytes((0x30, len(body))) + body


def test_handwritten_pem_is_what_tongsuopy_writes() -> None:
    from tongsuopy.crypto import serialization  # type: ignore[import-untyped]
    from tongsuopy.crypto.asymciphers import ec  # type: ignore[import-untyped]

    key = PLATFORM_KEY.public_key
    native = ec.EllipticCurvePublicNumbers(key.x, key.y, ec.SM2()).public_key()
    pem = native.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert pem.decode() == key.pem()
    assert sim.PublicKey.parse(key.pem()) == key


@needs_openssl
@pytest.mark.parametrize(("user_id", "backend"), a_cases())
def test_simulator_signatures_verify_with_openssl_and_gmssl(
    user_id: bytes, backend: sim.BackendChoice
) -> None:
    signer = sim.Signer(PLATFORM_KEY, user_id=user_id, backend=backend)
    message = 'cainfo over 张三\'s input {"a":1}'.encode()
    raw = signer.sign(message)
    point = PLATFORM_KEY.public_key.point()
    assert openssl_accepts(PLATFORM_KEY.public_key, message, der_of(raw), user_id)
    assert not openssl_accepts(PLATFORM_KEY.public_key, message + b"!", der_of(raw), user_id)
    assert gmssl_verify(point, user_id, message, raw, der=False)
    assert not gmssl_verify(point, b"another-user-id", message, raw, der=False)


@needs_openssl
@pytest.mark.parametrize(("user_id", "backend"), a_cases())
def test_simulator_verifies_openssl_signatures_and_the_standard_vector(
    user_id: bytes, backend: sim.BackendChoice
) -> None:
    point, der = openssl_sign(b"signed by openssl", user_id)
    r, s = sim._decode_dss_fallback(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    verifier = sim.Verifier(sim.PublicKey.from_point(point), user_id=user_id, backend=backend)
    assert verifier.verify(b"signed by openssl", raw)
    assert not verifier.verify(b"signed by openss1", raw)
    assert not verifier.verify(b"signed by openssl", raw[:32] + bytes(32))
    if user_id == sim.DEFAULT_USER_ID:
        v = vectors.SM2
        annex = sim.PublicKey(int(v["xA"], 16), int(v["yA"], 16))
        annex_rs = bytes.fromhex(v["r"] + v["s"])
        assert sim.Verifier(annex, backend=backend).verify(vectors.SM2_MESSAGE, annex_rs)
        assert sim.PrivateKey(int(v["d"], 16)).public_key == annex


@needs_openssl
def test_scheme_b_key_and_enc_data_match_openssl() -> None:
    seed = vectors.B_APP_ID[:16].encode().hex()
    done = openssl("enc", "-sm4-ecb", "-K", seed, "-nosalt", data=vectors.B_APP_SECRET.encode())
    assert done.returncode == 0, done.stderr
    key = done.stdout.hex().upper()[:16].encode()
    assert key == vectors.B_DATA_KEY == derive_data_key(vectors.B_APP_ID, vectors.B_APP_SECRET)
    assert (
        sim.sm4_ecb_encrypt(key, vectors.B_PLAINTEXT)
        == openssl("enc", "-sm4-ecb", "-K", key.hex(), "-nosalt", data=vectors.B_PLAINTEXT).stdout
    )
    _, simulator = scheme_b_pair()
    answer = an_answer(OUTPUT)
    sealed = simulator.seal(answer)
    expected = openssl("enc", "-sm4-ecb", "-K", key.hex(), "-nosalt", data=wire(answer)).stdout
    assert sealed["encData"] == expected.hex().upper()
    sm4 = openssl(
        "enc",
        "-sm4-ecb",
        "-K",
        vectors.SM4_KEY,
        "-nopad",
        data=bytes.fromhex(vectors.SM4_PLAINTEXT),
    )
    assert sm4.stdout.hex() == vectors.SM4_CIPHERTEXT
    assert (
        sim.sm4_ecb_encrypt(bytes.fromhex(vectors.SM4_KEY), bytes.fromhex(vectors.SM4_PLAINTEXT))[
            :16
        ].hex()
        == vectors.SM4_CIPHERTEXT
    )
    for message, digest in vectors.SM3:
        assert sim.sm3(message).hex() == digest


# ------------------------------------------------------------- the app's request path


@pytest.mark.parametrize("scheme", ["a", "b"])
async def test_bad_signature_fault_fails_the_sidecars_open(
    scheme: str, population: Population
) -> None:
    sidecar: Any
    security: SchemeAPlatform | SchemeBPlatform
    if scheme == "a":
        sidecar, security = scheme_a_pair()
        seal = sidecar.seal_request
        open_answer = sidecar.open_response
    else:
        sidecar, security = scheme_b_pair()
        seal = sidecar.seal

        def open_answer(body: Any) -> Any:
            return sidecar.open(body).data

    app = PlatformSimulator(population, security=security)
    app.faults.set("9001", Fault(FaultKind.BAD_SIGNATURE, times=1))
    body = json_text.dumps(await seal(request_envelope_for_sign_in()))
    corrupted = received((await app.respond(body)).body)
    with pytest.raises(SignatureInvalid):
        open_answer(corrupted)
    assert app.calls.count("9001") == 1  # the infno was found, even inside encData
    again = open_answer(received((await app.respond(body)).body))  # replayed, well signed
    assert again["infcode"] == 0
    # a tampered request is refused with a signed refusal the sidecar can open
    tampered = received(body)
    field = "cainfo" if scheme == "a" else "signData"
    tampered[field] = flip_base64(tampered[field], 5)
    refusal = open_answer(received((await app.respond(wire(tampered))).body))
    assert (refusal["infcode"], refusal["err_msg"]) == (-1, SECURITY_CHECK_FAILED)


def request_envelope_for_sign_in() -> dict[str, Any]:
    return envelope_factory()("9001", sign_in_input())


# ------------------------------------------------------------------ over mutual TLS


@pytest.mark.parametrize("scheme", ["a", "b"])
async def test_end_to_end_over_mutual_tls(
    scheme: str, pki: DevPki, population: Population, client: httpx.AsyncClient
) -> None:
    sidecar: Any
    security: SchemeAPlatform | SchemeBPlatform
    if scheme == "a":
        sidecar, security = scheme_a_pair()
        seal = sidecar.seal_request
        open_answer = sidecar.open_response
    else:
        sidecar, security = scheme_b_pair()
        seal = sidecar.seal

        def open_answer(body: Any) -> Any:
            return sidecar.open(body).data

    build = envelope_factory()
    app = PlatformSimulator(population, security=security)
    async with running_simulator(app, pki=pki) as running:

        async def call(envelope: dict[str, Any]) -> Any:
            sent = await client.post(
                running.endpoint,
                content=json_text.dumps(await seal(envelope)),
                headers={"content-type": "application/json"},
            )
            assert sent.status_code == 200, sent.text
            return open_answer(json_text.loads(sent.content, field="answer"))

        signed_in = await call(build("9001", sign_in_input()))
        assert signed_in["infcode"] == 0, signed_in["err_msg"]
        sign_no = signed_in["output"]["signinoutb"]["sign_no"]
        employee = population.examples().employee
        person = await call(
            build("1101", person_input(employee.certno, employee.psn_name), sign_no)
        )
        assert person["infcode"] == 0, person["err_msg"]
        assert person["output"]["baseinfo"]["psn_no"] == employee.psn_no
        assert isinstance(person["output"]["insuinfo"][0]["balc"], decimal.Decimal)
    assert app.calls.count("1101") == 1


def test_command_line_serves_scheme_a(tmp_path: Path) -> None:
    client_key = tmp_path / "client.pub"
    client_key.write_text(point_of(HOSPITAL).pem())
    sm4_key_file = tmp_path / "sm4.key"
    sm4_key_file.write_text(SM4_KEY.hex())
    process = subprocess.Popen(
        [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0", "--seed", "7",
         "--pki-dir", str(tmp_path / "pki"), "--population-size", "20", "--security", "a",
         "--client-public-key", str(client_key), "--sm4-key-file", str(sm4_key_file)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = dict(process.stdout.readline().rstrip("\n").split(": ", 1) for _ in range(7))
        platform = sim.PrivateKey.for_seed(7).public_key
        assert lines["platform_public_key"] == platform.point().hex().upper()
        assert base64.b64decode(lines["platform_public_key_base64"]) == platform.point()
        assert Path(lines["platform_public_key_pem"]).read_text() == platform.pem()
        scheme = SchemeA(
            SM4_KEY, HOSPITAL, HostSm2Verifier(Sm2PublicKey.from_bytes(platform.point()))
        )
        pending = scheme.prepare(envelope_factory()("9001", sign_in_input()), "input")
        body = json_text.dumps(pending.complete(HOSPITAL.sign_now(pending.message)))
        context = ssl.create_default_context(cafile=lines["ca_cert"])
        context.load_cert_chain(lines["client_cert"], lines["client_key"])
        with httpx.Client(http2=True, verify=context, timeout=10) as http:
            answer = http.post(lines["url"], content=body).content
        assert scheme.open_response(json_text.loads(answer, field="answer"))["infcode"] == 0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def test_command_line_needs_the_client_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0",
         "--pki-dir", str(tmp_path), "--security", "b"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--client-public-key" in result.stderr


# ---------------------------------------------------------------------------- rates


def rate(operation: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        operation()
        count += 1
    return count / elapsed


def sm2_rates(user_id: bytes, backend: sim.Backend) -> tuple[float, float]:
    message = bytes(range(200))
    signer = sim.Signer(PLATFORM_KEY, user_id=user_id, backend=backend)
    verifier = sim.Verifier(PLATFORM_KEY.public_key, user_id=user_id, backend=backend)
    signature = signer.sign(message)
    seconds = 0.3 if backend == "gmssl" else 0.6
    return (
        rate(lambda: signer.sign(message), seconds),
        rate(lambda: verifier.verify(message, signature), seconds),
    )


@pytest.mark.slow
def test_rates() -> None:
    """Sign/verify rates of the simulator's SM2 (200-byte messages); ``pytest -s`` prints them."""
    lines = []
    for user_id in (sim.DEFAULT_USER_ID, OTHER_ID):
        for backend in sim.available_backends(user_id):
            sign_rate, verify_rate = sm2_rates(user_id, backend)
            lines.append(
                f"{backend:12} id={user_id.decode():17} sign {sign_rate:8.0f}/s "
                f"verify {verify_rate:8.0f}/s"
            )
            if backend != "gmssl":
                assert sign_rate > 150 and verify_rate > 150  # far from a bottleneck
    _, simulator = scheme_a_pair()
    answer = an_answer(OUTPUT)
    lines.append(f"scheme A seal (SM4 + sign) {rate(lambda: simulator.seal(answer), 0.6):8.0f}/s")
    print("\n" + "\n".join(lines))
