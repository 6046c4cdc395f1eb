"""The patched SoftHSM's vendor-defined SM2 / SM3 / SM4 mechanisms, end to end.

Known answers come from tests/vectors/sm.json (GB/T 32905, GB/T 32907,
GM/T 0003.5 Annex A).  Signatures made in the token are checked
by two independent verifiers (gmssl, pure Python; the OpenSSL CLI), and
gmssl signatures are checked by the token.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess

import pytest
import vendor_mech
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from gmssl import sm2 as gm_sm2
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import (
    AttributeSensitive,
    AttributeValueInvalid,
    DataLenRange,
    KeySizeRange,
    KeyTypeInconsistent,
    KeyUnextractable,
    MechanismParamInvalid,
    TemplateInconsistent,
    WrappingKeyTypeInconsistent,
)

from tests.vectors import SM2_GMT, SM3, SM4_ECB

# ---------------------------------------------------------------- vectors
# the shared known answers (tests/vectors/sm.json), under the names these tests use
SM3_ABC = SM3[0].digest.hex()  # "abc"
SM3_ABCD16 = SM3[1].digest.hex()  # "abcd" * 16
SM4_KEY = SM4_ECB[0].key
SM4_CT = SM4_ECB[0].ciphertext

V_D = SM2_GMT.d
V_XA = SM2_GMT.x.to_bytes(32, "big")
V_YA = SM2_GMT.y.to_bytes(32, "big")
V_MSG = SM2_GMT.message
V_Z = SM2_GMT.z
V_E = SM2_GMT.e
V_R = SM2_GMT.r.to_bytes(32, "big")
V_S = SM2_GMT.s.to_bytes(32, "big")

# sm2p256v1 domain parameters (GB/T 32918.5)
SM2_A = bytes.fromhex("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC")
SM2_B = bytes.fromhex("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93")
SM2_GX = bytes.fromhex("32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7")
SM2_GY = bytes.fromhex("BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0")
SM2_N = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)
DEFAULT_ID = b"1234567812345678"

# ---------------------------------------------------------------- tiny DER encoder
OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1
OID_SM2_CURVE = bytes.fromhex("06082a811ccf5501822d")  # 1.2.156.10197.1.301 (= CKA_EC_PARAMS)


def der_tlv(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        nb = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(nb)]) + nb
    return bytes([tag]) + length + body


def der_int(v: int) -> bytes:
    body = v.to_bytes(
        v.bit_length() // 8 + 1, "big"
    )  # keeps a leading 0x00 when the top bit is set
    return der_tlv(0x02, body)


def sig_der(raw: bytes) -> bytes:
    """raw r||s (64 bytes) -> GM/T 0009 DER SEQUENCE { r INTEGER, s INTEGER }."""
    assert len(raw) == 64
    return der_tlv(
        0x30, der_int(int.from_bytes(raw[:32], "big")) + der_int(int.from_bytes(raw[32:], "big"))
    )


def spki_pem(point: bytes) -> bytes:
    """X.509 SubjectPublicKeyInfo (id-ecPublicKey, SM2 curve) for an uncompressed point."""
    assert len(point) == 65 and point[0] == 4
    alg = der_tlv(0x30, OID_EC_PUBLIC_KEY + OID_SM2_CURVE)
    der = der_tlv(0x30, alg + der_tlv(0x03, b"\x00" + point))
    b64 = base64.encodebytes(der).decode().replace("\n", "")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
    ).encode()


def ec_point_attr(point: bytes) -> bytes:
    """CKA_EC_POINT: DER OCTET STRING of 04||X||Y."""
    return der_tlv(0x04, point)


def point_from_attr(ec_point: bytes) -> bytes:
    assert ec_point[:2] == b"\x04\x41", ec_point.hex()
    return ec_point[2:]


# ---------------------------------------------------------------- host-side SM2 helpers
# (independent of the token)
def sm3(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SM3())
    h.update(data)
    return h.finalize()


def sm2_z(point: bytes, uid: bytes = DEFAULT_ID) -> bytes:
    entl = (len(uid) * 8).to_bytes(2, "big")
    return sm3(entl + uid + SM2_A + SM2_B + SM2_GX + SM2_GY + point[1:33] + point[33:65])


def sm2_e(point: bytes, msg: bytes) -> bytes:
    return sm3(sm2_z(point) + msg)


def gmssl_signer(public_point: bytes, private_d: int | None = None) -> gm_sm2.CryptSM2:
    c = gm_sm2.CryptSM2(
        private_key=f"{private_d:064x}" if private_d is not None else "", public_key=""
    )
    # Set the key directly: CryptSM2.__init__ strips a "04" prefix with str.lstrip, which also eats
    # leading '0'/'4' digits of X.
    c.public_key = public_point[1:].hex()
    return c


def openssl_verify(
    tmp_path, point: bytes, msg: bytes, raw_sig: bytes
) -> subprocess.CompletedProcess:
    (tmp_path / "pub.pem").write_bytes(spki_pem(point))
    (tmp_path / "sig.der").write_bytes(sig_der(raw_sig))
    (tmp_path / "msg.bin").write_bytes(msg)
    return subprocess.run(
        [
            "openssl",
            "dgst",
            "-sm3",
            "-verify",
            "pub.pem",
            "-sigopt",
            "distid:1234567812345678",
            "-signature",
            "sig.der",
            "msg.bin",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# ---------------------------------------------------------------- token helpers
def import_sm2_public(session, point: bytes, key_type=None):
    return session.create_object(
        {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.KEY_TYPE: key_type if key_type is not None else KeyType.SM2,
            Attribute.TOKEN: False,
            Attribute.VERIFY: True,
            Attribute.EC_PARAMS: OID_SM2_CURVE,
            Attribute.EC_POINT: ec_point_attr(point),
        }
    )


def import_sm4(session, value: bytes, extra=None):
    attrs = {
        Attribute.CLASS: ObjectClass.SECRET_KEY,
        Attribute.KEY_TYPE: KeyType.SM4,
        Attribute.TOKEN: False,
        Attribute.VALUE: value,
        Attribute.ENCRYPT: True,
        Attribute.DECRYPT: True,
        Attribute.SENSITIVE: False,
        Attribute.EXTRACTABLE: True,
    }
    attrs.update(extra or {})
    return session.create_object(attrs)


def generate_sm2(session):
    return session.generate_keypair(
        KeyType.SM2,
        mechanism=Mechanism.SM2_KEY_PAIR_GEN,
        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )


SM4_CAPS = MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT | MechanismFlag.WRAP | MechanismFlag.UNWRAP


def generate_sm4(session, template=None):
    return session.generate_key(
        KeyType.SM4,
        128,
        mechanism=Mechanism.SM4_KEY_GEN,
        capabilities=SM4_CAPS,
        template=template,
    )


def sm4_cryptography(mode, key: bytes, data: bytes, encrypt: bool = True) -> bytes:
    c = Cipher(algorithms.SM4(key), mode)
    op = c.encryptor() if encrypt else c.decryptor()
    return op.update(data) + op.finalize()


# ================================================================= the way in for vendor numbers
def test_vendor_numbers_are_enum_members(sm):
    assert int(Mechanism.SM2_KEY_PAIR_GEN) == 0x80008001
    assert int(Mechanism.SM3_SM2) == 0x80008100
    assert int(Mechanism.SM2_RAW) == 0x80008200
    assert int(Mechanism.SM3_HASH) == 0x80009001
    assert int(Mechanism.SM4_KEY_GEN) == 0x8000A001
    assert int(Mechanism.SM4_ECB) == 0x8000A100
    assert int(Mechanism.SM4_CBC) == 0x8000A200
    assert int(KeyType.SM2) == 0x80000004
    assert int(KeyType.SM4) == 0x80000006
    # value lookups used by python-pkcs11 when decoding attributes
    assert Mechanism(0x80008100) is Mechanism.SM3_SM2 is sm.mech("SM3_SM2")
    assert KeyType(0x80000006) is KeyType.SM4 is sm.key_type("SM4")
    assert isinstance(Mechanism.SM2_RAW, Mechanism) and isinstance(KeyType.SM2, KeyType)
    assert Mechanism["SM4_CBC_PAD"] is Mechanism.SM4_CBC_PAD
    # idempotent (refusing to rebind is tested with the production module, tests/hsm/softhsm)
    assert vendor_mech.register(vendor_mech.SANSEC_SW).mech("SM2_RAW") is Mechanism.SM2_RAW
    # standard members untouched
    assert Mechanism(0x1081) is Mechanism.AES_ECB


def test_mechanism_list_and_info(token, sm):
    slot = token.slot
    listed = slot.get_mechanisms()
    for name, value in vendor_mech.SANSEC_SW.mechanisms.items():
        assert Mechanism(value) in listed, name
    flags = {m: slot.get_mechanism_info(m).flags for m in sm.mechanisms.values()}
    assert flags[Mechanism.SM2_KEY_PAIR_GEN] & MechanismFlag.GENERATE_KEY_PAIR
    for m in (Mechanism.SM3_SM2, Mechanism.SM2_RAW, Mechanism.SM2_SIGN):
        assert flags[m] & MechanismFlag.SIGN and flags[m] & MechanismFlag.VERIFY
    assert flags[Mechanism.SM3_HASH] & MechanismFlag.DIGEST
    assert flags[Mechanism.SM4_KEY_GEN] & MechanismFlag.GENERATE
    for m in (Mechanism.SM4_ECB, Mechanism.SM4_CBC, Mechanism.SM4_CBC_PAD, Mechanism.SM4_ECB_PAD):
        for f in (
            MechanismFlag.ENCRYPT,
            MechanismFlag.DECRYPT,
            MechanismFlag.WRAP,
            MechanismFlag.UNWRAP,
        ):
            assert flags[m] & f, (m, f)
    info = slot.get_mechanism_info(Mechanism.SM4_ECB)
    assert (info.min_key_length, info.max_key_length) == (16, 16)


# ================================================================= SM3
@pytest.mark.parametrize(("data", "expected"), [(b"abc", SM3_ABC), (b"abcd" * 16, SM3_ABCD16)])
def test_sm3_known_answers(session, data, expected):
    assert session.digest(data, mechanism=Mechanism.SM3_HASH).hex() == expected


def test_sm3_multi_part_matches_cryptography(session):
    data = os.urandom(10_000)
    chunks = iter(
        [data[:1], data[1:4097], data[4097:]]
    )  # an iterator makes python-pkcs11 use C_DigestUpdate
    assert session.digest(chunks, mechanism=Mechanism.SM3_HASH) == sm3(data)
    assert session.digest(b"", mechanism=Mechanism.SM3_HASH) == sm3(b"")


# ================================================================= SM4
def test_sm4_ecb_known_answer(session):
    key = import_sm4(session, SM4_KEY)
    assert key.key_type is KeyType.SM4
    assert key[Attribute.VALUE_LEN] == 16
    assert key.encrypt(SM4_KEY, mechanism=Mechanism.SM4_ECB) == SM4_CT
    assert key.decrypt(SM4_CT, mechanism=Mechanism.SM4_ECB) == SM4_KEY
    # CKA_CHECK_VALUE is the first 3 bytes of SM4-ECB(key, 0^16)
    assert key[Attribute.CHECK_VALUE] == sm4_cryptography(modes.ECB(), SM4_KEY, bytes(16))[:3]


def test_sm4_ecb_multi_block_matches_cryptography(session):
    key_bytes = os.urandom(16)
    key = import_sm4(session, key_bytes)
    data = os.urandom(16 * 37)
    ct = key.encrypt(data, mechanism=Mechanism.SM4_ECB)
    assert ct == sm4_cryptography(modes.ECB(), key_bytes, data)
    assert key.decrypt(ct, mechanism=Mechanism.SM4_ECB) == data


def test_sm4_without_padding_needs_whole_blocks(session):
    key = import_sm4(session, SM4_KEY)
    with pytest.raises(DataLenRange):
        key.encrypt(b"x" * 15, mechanism=Mechanism.SM4_ECB)
    with pytest.raises(DataLenRange):
        key.encrypt(b"x" * 17, mechanism=Mechanism.SM4_CBC, mechanism_param=bytes(16))


def test_sm4_cbc_round_trip_and_cross_check(session):
    key_bytes = os.urandom(16)
    key = import_sm4(session, key_bytes)
    iv = os.urandom(16)
    data = os.urandom(16 * 20)
    ct = key.encrypt(data, mechanism=Mechanism.SM4_CBC, mechanism_param=iv)
    assert ct == sm4_cryptography(modes.CBC(iv), key_bytes, data)
    assert key.decrypt(ct, mechanism=Mechanism.SM4_CBC, mechanism_param=iv) == data
    # and the other direction: cryptography encrypts, the token decrypts
    ct2 = sm4_cryptography(modes.CBC(iv), key_bytes, data[::-1])
    assert key.decrypt(ct2, mechanism=Mechanism.SM4_CBC, mechanism_param=iv) == data[::-1]


def test_sm4_cbc_pad(session):
    key_bytes = os.urandom(16)
    key = import_sm4(session, key_bytes)
    iv = os.urandom(16)
    for n in (0, 1, 15, 16, 33):
        data = os.urandom(n)
        ct = key.encrypt(data, mechanism=Mechanism.SM4_CBC_PAD, mechanism_param=iv)
        padder = padding.PKCS7(128).padder()
        assert ct == sm4_cryptography(
            modes.CBC(iv), key_bytes, padder.update(data) + padder.finalize()
        )
        assert key.decrypt(ct, mechanism=Mechanism.SM4_CBC_PAD, mechanism_param=iv) == data


def test_sm4_cbc_needs_a_16_byte_iv(session):
    key = import_sm4(session, SM4_KEY)
    with pytest.raises(MechanismParamInvalid):
        key.encrypt(bytes(16), mechanism=Mechanism.SM4_CBC, mechanism_param=bytes(8))


def test_sm4_key_must_be_16_bytes(session):
    for n in (8, 24, 32):
        with pytest.raises(AttributeValueInvalid):
            import_sm4(session, bytes(n))
    # SM4 mechanisms need an SM4 key
    aes = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.AES,
            Attribute.TOKEN: False,
            Attribute.VALUE: SM4_KEY,
            Attribute.ENCRYPT: True,
            Attribute.WRAP: True,
            Attribute.EXTRACTABLE: True,
        }
    )
    with pytest.raises(KeyTypeInconsistent):
        aes.encrypt(SM4_KEY, mechanism=Mechanism.SM4_ECB)
    with pytest.raises(WrappingKeyTypeInconsistent):
        aes.wrap_key(import_sm4(session, SM4_KEY), mechanism=Mechanism.SM4_ECB)


def test_sm4_generated_key(session):
    key = generate_sm4(session, {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    assert key.key_type is KeyType.SM4
    assert key[Attribute.VALUE_LEN] == 16
    assert key[Attribute.KEY_GEN_MECHANISM] is Mechanism.SM4_KEY_GEN
    assert (
        key[Attribute.LOCAL]
        and key[Attribute.ALWAYS_SENSITIVE]
        and key[Attribute.NEVER_EXTRACTABLE]
    )
    with pytest.raises(AttributeSensitive):
        key[Attribute.VALUE]
    iv = os.urandom(16)
    data = os.urandom(64)
    assert (
        key.decrypt(
            key.encrypt(data, mechanism=Mechanism.SM4_CBC, mechanism_param=iv),
            mechanism=Mechanism.SM4_CBC,
            mechanism_param=iv,
        )
        == data
    )
    other = generate_sm4(session)
    assert other.encrypt(data, mechanism=Mechanism.SM4_ECB) != key.encrypt(
        data, mechanism=Mechanism.SM4_ECB
    )


# ================================================================= SM2: the GM/T 0003.5 vector
def test_host_helpers_reproduce_the_vector():
    point = b"\x04" + V_XA + V_YA
    assert sm2_z(point) == V_Z
    assert sm2_e(point, V_MSG) == V_E
    # gmssl derives the same public key from d
    assert (
        gmssl_signer(point, V_D)._kg(V_D, gm_sm2.default_ecc_table["g"]).lower()
        == (V_XA + V_YA).hex()
    )


def test_openssl_cli_verifies_the_vector(tmp_path):
    res = openssl_verify(tmp_path, b"\x04" + V_XA + V_YA, V_MSG, V_R + V_S)
    assert "Verified OK" in res.stdout, res.stdout


@pytest.mark.parametrize("key_type", ["SM2", "EC"])
def test_token_verifies_the_vector(session, key_type):
    point = b"\x04" + V_XA + V_YA
    # CKK_SM2 is the vendor convention; CKK_EC keys on the SM2 curve are accepted too.
    pub = import_sm2_public(session, point, KeyType.SM2 if key_type == "SM2" else KeyType.EC)
    assert pub.key_type is getattr(KeyType, key_type)
    sig = V_R + V_S
    assert pub.verify(V_MSG, sig, mechanism=Mechanism.SM3_SM2)
    assert pub.verify(V_E, sig, mechanism=Mechanism.SM2_RAW)
    assert pub.verify(V_E, sig, mechanism=Mechanism.SM2_SIGN)
    # wrong message / e / signature are rejected
    assert not pub.verify(V_MSG + b"!", sig, mechanism=Mechanism.SM3_SM2)
    assert not pub.verify(bytes(32), sig, mechanism=Mechanism.SM2_RAW)
    bad = bytearray(sig)
    bad[-1] ^= 1
    assert not pub.verify(V_MSG, bytes(bad), mechanism=Mechanism.SM3_SM2)
    # the whole message is not e
    assert not pub.verify(V_E, sig, mechanism=Mechanism.SM3_SM2)


# ================================================================= SM2: keys generated in the token
def test_generated_sm2_key_pair_attributes(session):
    pub, priv = generate_sm2(session)
    assert pub.key_type is KeyType.SM2 and priv.key_type is KeyType.SM2
    assert pub[Attribute.EC_PARAMS] == OID_SM2_CURVE
    assert priv[Attribute.EC_PARAMS] == OID_SM2_CURVE
    point = point_from_attr(pub[Attribute.EC_POINT])
    assert len(point) == 65 and point[0] == 4
    assert pub[Attribute.KEY_GEN_MECHANISM] is Mechanism.SM2_KEY_PAIR_GEN
    assert (
        priv[Attribute.LOCAL]
        and priv[Attribute.ALWAYS_SENSITIVE]
        and priv[Attribute.NEVER_EXTRACTABLE]
    )
    # the private scalar never leaves the token
    with pytest.raises(AttributeSensitive):
        priv[Attribute.VALUE]
    kek = generate_sm4(session)
    with pytest.raises(KeyUnextractable):
        kek.wrap_key(priv, mechanism=Mechanism.SM4_ECB)


def test_sm2_key_pair_gen_refuses_other_curves(session):
    p256 = bytes.fromhex("06082a8648ce3d030107")
    with pytest.raises(TemplateInconsistent):
        session.generate_keypair(
            KeyType.SM2,
            mechanism=Mechanism.SM2_KEY_PAIR_GEN,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template={Attribute.EC_PARAMS: p256},
        )


def test_token_message_signature_verified_by_gmssl_and_openssl(session, tmp_path):
    pub, priv = generate_sm2(session)
    point = point_from_attr(pub[Attribute.EC_POINT])
    msg = (
        b'{"insuplc_admdvs":"440300","infno":"1101","msgid":"'
        + secrets.token_hex(8).encode()
        + b'"}'
    )
    sig = priv.sign(msg, mechanism=Mechanism.SM3_SM2)
    assert len(sig) == 64
    # independent verifier 1: gmssl (pure Python), Z with the default ID
    assert gmssl_signer(point).verify_with_sm3(sig.hex(), msg)
    # independent verifier 2: OpenSSL CLI with distid 1234567812345678
    res = openssl_verify(tmp_path, point, msg, sig)
    assert "Verified OK" in res.stdout, res.stdout
    # and the token itself
    assert pub.verify(msg, sig, mechanism=Mechanism.SM3_SM2)
    assert not pub.verify(msg + b" ", sig, mechanism=Mechanism.SM3_SM2)
    # signatures are randomised (random k)
    assert priv.sign(msg, mechanism=Mechanism.SM3_SM2) != sig


def test_token_raw_e_signature_verified_independently(session, tmp_path):
    pub, priv = generate_sm2(session)
    point = point_from_attr(pub[Attribute.EC_POINT])
    msg = os.urandom(200)
    e = sm2_e(point, msg)  # computed on the host, as the sidecar will
    sig = priv.sign(e, mechanism=Mechanism.SM2_RAW)
    assert len(sig) == 64
    assert gmssl_signer(point).verify(sig.hex(), e)
    # a signature over e = SM3(Z||M) is an ordinary SM2-with-SM3 signature of M
    assert gmssl_signer(point).verify_with_sm3(sig.hex(), msg)
    res = openssl_verify(tmp_path, point, msg, sig)
    assert "Verified OK" in res.stdout, res.stdout
    assert pub.verify(msg, sig, mechanism=Mechanism.SM3_SM2)
    assert pub.verify(e, sig, mechanism=Mechanism.SM2_RAW)
    # CKM_SM2_SIGN is the same operation under the vendor header's other number
    sig2 = priv.sign(e, mechanism=Mechanism.SM2_SIGN)
    assert gmssl_signer(point).verify(sig2.hex(), e)


def test_sm2_raw_needs_exactly_32_bytes(session):
    pub, priv = generate_sm2(session)
    for n in (0, 31, 33, 64):
        with pytest.raises(DataLenRange):
            priv.sign(bytes(n), mechanism=Mechanism.SM2_RAW)
    with pytest.raises(DataLenRange):
        pub.verify(bytes(31), bytes(64), mechanism=Mechanism.SM2_RAW)


def test_sm2_key_refuses_ecdsa(session):
    _pub, priv = generate_sm2(session)
    with pytest.raises(KeyTypeInconsistent):
        priv.sign(bytes(32), mechanism=Mechanism.ECDSA)


def test_gmssl_signatures_verify_in_the_token(session):
    d = secrets.randbelow(SM2_N - 2) + 1
    signer = gmssl_signer(b"\x04" + bytes(64), d)
    xy = signer._kg(d, gm_sm2.default_ecc_table["g"])
    point = b"\x04" + bytes.fromhex(xy)
    signer.public_key = xy
    pub = import_sm2_public(session, point)
    msg = "参保人 440300 结算 12.34 元".encode()
    sig_hex = None
    while sig_hex is None:  # gmssl returns None for the (negligible) retry cases
        sig_hex = signer.sign_with_sm3(msg, secrets.token_hex(32))
    assert pub.verify(msg, bytes.fromhex(sig_hex), mechanism=Mechanism.SM3_SM2)
    e = sm2_e(point, msg)
    sig_hex = None
    while sig_hex is None:
        sig_hex = signer.sign(e, secrets.token_hex(32))
    assert pub.verify(e, bytes.fromhex(sig_hex), mechanism=Mechanism.SM2_RAW)
    assert pub.verify(msg, bytes.fromhex(sig_hex), mechanism=Mechanism.SM3_SM2)


# ================================================================= wrap / unwrap under SM4
@pytest.mark.parametrize(
    ("mech", "param"), [("SM4_ECB", None), ("SM4_CBC", "iv"), ("SM4_CBC_PAD", "iv")]
)
def test_wrap_unwrap_sm4_data_key(session, mech, param):
    mechanism = getattr(Mechanism, mech)
    iv = os.urandom(16) if param else None
    kek = generate_sm4(session, {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False})
    data_key = generate_sm4(session, {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: True})
    wrapped = kek.wrap_key(data_key, mechanism=mechanism, mechanism_param=iv)
    assert len(wrapped) == (32 if mech == "SM4_CBC_PAD" else 16)
    unwrapped = kek.unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.SM4,
        wrapped,
        capabilities=SM4_CAPS,
        mechanism=mechanism,
        mechanism_param=iv,
        template={Attribute.ENCRYPT: True, Attribute.DECRYPT: True, Attribute.SENSITIVE: True},
    )
    assert unwrapped.key_type is KeyType.SM4
    data = os.urandom(48)
    civ = os.urandom(16)
    assert unwrapped.encrypt(data, mechanism=Mechanism.SM4_ECB) == data_key.encrypt(
        data, mechanism=Mechanism.SM4_ECB
    )
    ct = data_key.encrypt(data, mechanism=Mechanism.SM4_CBC, mechanism_param=civ)
    assert unwrapped.encrypt(data, mechanism=Mechanism.SM4_CBC, mechanism_param=civ) == ct
    assert unwrapped.decrypt(ct, mechanism=Mechanism.SM4_CBC, mechanism_param=civ) == data
    # a different KEK cannot unwrap it into the same key
    other = generate_sm4(session)
    if mech != "SM4_CBC_PAD":  # (with padding, a wrong KEK usually fails the padding check instead)
        wrong = other.unwrap_key(
            ObjectClass.SECRET_KEY,
            KeyType.SM4,
            wrapped,
            capabilities=SM4_CAPS,
            mechanism=mechanism,
            mechanism_param=iv,
            template={Attribute.ENCRYPT: True},
        )
        assert wrong.encrypt(data, mechanism=Mechanism.SM4_ECB) != data_key.encrypt(
            data, mechanism=Mechanism.SM4_ECB
        )


def test_wrap_is_plain_sm4_of_the_key_bytes(session):
    kek_bytes, dk_bytes, iv = os.urandom(16), os.urandom(16), os.urandom(16)
    kek = import_sm4(session, kek_bytes, extra={Attribute.WRAP: True, Attribute.UNWRAP: True})
    dk = import_sm4(session, dk_bytes)
    assert kek.wrap_key(dk, mechanism=Mechanism.SM4_ECB) == sm4_cryptography(
        modes.ECB(), kek_bytes, dk_bytes
    )
    assert kek.wrap_key(dk, mechanism=Mechanism.SM4_CBC, mechanism_param=iv) == sm4_cryptography(
        modes.CBC(iv), kek_bytes, dk_bytes
    )
    # unwrapping something wrapped by cryptography
    wrapped = sm4_cryptography(modes.CBC(iv), kek_bytes, SM4_KEY)
    k = kek.unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.SM4,
        wrapped,
        capabilities=SM4_CAPS,
        mechanism=Mechanism.SM4_CBC,
        mechanism_param=iv,
        template={Attribute.ENCRYPT: True},
    )
    assert k.encrypt(SM4_KEY, mechanism=Mechanism.SM4_ECB) == SM4_CT


def test_wrap_unwrap_generic_secret(session):
    kek = generate_sm4(session)
    secret_bytes = os.urandom(32)
    secret = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: False,
            Attribute.VALUE: secret_bytes,
            Attribute.SIGN: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True,
        }
    )
    wrapped = kek.wrap_key(secret, mechanism=Mechanism.SM4_ECB)
    assert len(wrapped) == 32
    back = kek.unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.GENERIC_SECRET,
        wrapped,
        mechanism=Mechanism.SM4_ECB,
        template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True, Attribute.SIGN: True},
    )
    assert back[Attribute.VALUE] == secret_bytes
    # a 20-byte secret is not a whole number of SM4 blocks: CBC_PAD wraps it, ECB refuses
    odd = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: False,
            Attribute.VALUE: os.urandom(20),
            Attribute.EXTRACTABLE: True,
        }
    )
    with pytest.raises(KeySizeRange):
        kek.wrap_key(odd, mechanism=Mechanism.SM4_ECB)
    assert len(kek.wrap_key(odd, mechanism=Mechanism.SM4_CBC_PAD, mechanism_param=bytes(16))) == 32


# ================================================================= HMAC-SM3
def _host_hmac_sm3_gmssl(key: bytes, message: bytes) -> str:
    """RFC 2104 HMAC over gmssl's pure-Python SM3: independent of OpenSSL."""
    from gmssl import sm3 as gm_sm3

    def digest(data: bytes) -> bytes:
        return bytes.fromhex(gm_sm3.sm3_hash(list(data)))

    block = key.ljust(64, b"\0") if len(key) <= 64 else digest(key).ljust(64, b"\0")
    inner = digest(bytes(b ^ 0x36 for b in block) + message)
    return digest(bytes(b ^ 0x5C for b in block) + inner).hex()


def _hmac_key(session, value: bytes, **extra):
    return session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
            Attribute.TOKEN: False,
            Attribute.VALUE: value,
            Attribute.SIGN: True,
            Attribute.VERIFY: True,
            **extra,
        }
    )


@pytest.mark.parametrize("length", [0, 1, 63, 64, 65, 1000])
def test_sm3_hmac_matches_two_host_implementations(session, length):
    from cryptography.hazmat.primitives import hmac as c_hmac

    key_bytes, message = os.urandom(32), os.urandom(length)
    key = _hmac_key(session, key_bytes)
    mac = key.sign(message, mechanism=Mechanism.SM3_HMAC)
    host = c_hmac.HMAC(key_bytes, hashes.SM3())
    host.update(message)
    assert mac == host.finalize()
    assert mac.hex() == _host_hmac_sm3_gmssl(key_bytes, message)
    assert key.verify(message, mac, mechanism=Mechanism.SM3_HMAC)
    assert not key.verify(message + b"x", mac, mechanism=Mechanism.SM3_HMAC)


def test_sm3_hmac_multi_part_and_generated_key(session):
    key = session.generate_key(
        KeyType.GENERIC_SECRET,
        256,
        mechanism=Mechanism.GENERIC_SECRET_KEY_GEN,
        template={Attribute.SIGN: True, Attribute.VERIFY: True, Attribute.EXTRACTABLE: False},
    )
    whole = key.sign(b"abc" * 100, mechanism=Mechanism.SM3_HMAC)
    parts = key.sign(iter([b"abc" * 50, b"abc" * 50]), mechanism=Mechanism.SM3_HMAC)
    assert whole == parts and len(whole) == 32


def test_sm3_hmac_key_rules(session, token):
    """At least 32 bytes, a generic secret (an SM4 key may not MAC), listed for SIGN/VERIFY."""
    with pytest.raises(KeySizeRange):
        _hmac_key(session, os.urandom(16)).sign(b"x", mechanism=Mechanism.SM3_HMAC)
    sm4 = session.create_object(
        {
            Attribute.CLASS: ObjectClass.SECRET_KEY,
            Attribute.KEY_TYPE: KeyType.SM4,
            Attribute.TOKEN: False,
            Attribute.VALUE: SM4_KEY,
            Attribute.SIGN: True,
        }
    )
    with pytest.raises(KeyTypeInconsistent):
        sm4.sign(b"x" * 32, mechanism=Mechanism.SM3_HMAC)
    info = token.slot.get_mechanism_info(Mechanism.SM3_HMAC)
    assert info.flags & MechanismFlag.SIGN and info.flags & MechanismFlag.VERIFY
    assert info.min_key_length == 32
