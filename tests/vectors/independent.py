"""Independent implementations for cross-checks: the OpenSSL command line and gmssl.

Nothing here imports the code under test. The SPKI PEM and Z are built by hand from the
standards so that a shared mistake cannot make both sides agree.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from pathlib import Path

from gmssl import sm2 as gm_sm2
from gmssl import sm3 as gm_sm3
from gmssl import sm4 as gm_sm4

OPENSSL = shutil.which("openssl")  # Debian's openssl: scripts/bootstrap.sh installs it

# SubjectPublicKeyInfo ::= SEQUENCE (0x59 bytes) {
#   SEQUENCE (0x13) { OID 1.2.840.10045.2.1 id-ecPublicKey (06 07 2a8648ce3d0201),
#                     OID 1.2.156.10197.1.301 sm2p256v1   (06 08 2a811ccf5501822d) },
#   BIT STRING (0x42 bytes, 0 unused bits) 04 || X || Y }
_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d034200")

_A = "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"
_B = "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"
_GX = "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
_GY = "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"


def _run(*args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None, "the openssl command line is required (apt-get install openssl)"
    return subprocess.run([OPENSSL, *args], input=data, capture_output=True, check=False)


def spki_pem(point: bytes) -> bytes:
    assert len(point) == 65 and point[0] == 4
    b64 = base64.b64encode(_SPKI_PREFIX + point).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"
    ).encode()


def openssl_sm4_ecb(key: bytes, plaintext: bytes) -> bytes:
    """SM4-ECB with OpenSSL's default PKCS#7 padding."""
    done = _run("enc", "-sm4-ecb", "-K", key.hex(), "-nosalt", data=plaintext)
    assert done.returncode == 0, done.stderr
    return done.stdout


def openssl_sm4_cbc(key: bytes, iv: bytes, plaintext: bytes, *, pad: bool) -> bytes:
    """SM4-CBC, PKCS#7-padded or not (``-nopad``)."""
    extra = () if pad else ("-nopad",)
    done = _run("enc", "-sm4-cbc", "-K", key.hex(), "-iv", iv.hex(), *extra, data=plaintext)
    assert done.returncode == 0, done.stderr
    return done.stdout


def openssl_sm3(data: bytes) -> bytes:
    done = _run("dgst", "-sm3", "-binary", data=data)
    assert done.returncode == 0, done.stderr
    return done.stdout


def tongsuopy_sm4_gcm(key: bytes, iv: bytes, aad: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    """(ciphertext, tag) of SM4-GCM in Tongsuo (OpenSSL 3.0 on Debian has no SM4-GCM)."""
    from tongsuopy.crypto.ciphers import Cipher, algorithms, modes  # type: ignore[import-untyped]

    encryptor = Cipher(algorithms.SM4(key), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return body, encryptor.tag


def openssl_verify(point: bytes, message: bytes, der_signature: bytes, user_id: bytes) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pub.pem").write_bytes(spki_pem(point))
        (folder / "sig.der").write_bytes(der_signature)
        (folder / "msg.bin").write_bytes(message)
        done = _run(
            "dgst", "-sm3", "-verify", str(folder / "pub.pem"),
            "-sigopt", f"distid:{user_id.decode()}",
            "-signature", str(folder / "sig.der"), str(folder / "msg.bin"),
        )  # fmt: skip
        return done.returncode == 0 and b"Verified OK" in done.stdout


def openssl_sign(message: bytes, user_id: bytes) -> tuple[bytes, bytes]:
    """A fresh OpenSSL SM2 key's (public point, DER signature) over ``message``."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        key, msg, sig = folder / "key.pem", folder / "msg.bin", folder / "sig.der"
        assert _run("genpkey", "-algorithm", "SM2", "-out", str(key)).returncode == 0
        msg.write_bytes(message)
        done = _run(
            "dgst", "-sm3", "-sign", str(key), "-sigopt", f"distid:{user_id.decode()}",
            "-out", str(sig), str(msg),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        spki = _run("pkey", "-in", str(key), "-pubout", "-outform", "DER").stdout
        assert spki.startswith(_SPKI_PREFIX)
        return spki[len(_SPKI_PREFIX) :], sig.read_bytes()


def gmssl_sm4_ecb(key: bytes, plaintext: bytes) -> bytes:
    crypt = gm_sm4.CryptSM4()  # PKCS#7 padding by default
    crypt.set_key(key, gm_sm4.SM4_ENCRYPT)
    return bytes(crypt.crypt_ecb(plaintext))


def gmssl_sm4_cbc(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    crypt = gm_sm4.CryptSM4()  # PKCS#7 padding by default
    crypt.set_key(key, gm_sm4.SM4_ENCRYPT)
    return bytes(crypt.crypt_cbc(iv, plaintext))


def gmssl_sm3(data: bytes) -> bytes:
    return bytes.fromhex(gm_sm3.sm3_hash(list(data)))


def gmssl_e(point: bytes, user_id: bytes, message: bytes) -> bytes:
    """e = SM3(Z || M) with Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA), via gmssl."""
    entl = (len(user_id) * 8).to_bytes(2, "big")
    z = gmssl_sm3(entl + user_id + bytes.fromhex(_A + _B + _GX + _GY) + point[1:])
    return gmssl_sm3(z + message)


def gmssl_verify(
    point: bytes, user_id: bytes, message: bytes, signature: bytes, *, der: bool
) -> bool:
    crypt = gm_sm2.CryptSM2(private_key="", public_key="", asn1=der)
    crypt.public_key = point[1:].hex()  # see hsm/sm/backend.py: the constructor mangles some keys
    return bool(crypt.verify(signature.hex(), gmssl_e(point, user_id, message)))
