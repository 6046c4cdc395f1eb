"""The pseudonym function: a keyed PRF computed in the token, one construction per profile.

Pseudonyms of data subjects and every digest of personal data at rest are ``PRF(pseudonym key,
message)``. Which PRF is data: the profile's ``pseudonym`` entry (hsm/profiles/*.toml).

``hmac-sm3``
    HMAC-SM3 (``C_Sign`` with profile operation ``sm3_hmac``) under a 256-bit generic secret.
    32-byte output. For tokens that number an HMAC-SM3 mechanism.
``sm4-cbc-mac``
    For tokens with SM4-CBC but no HMAC-SM3 (the Sansec ``swpkcs11.h`` profile): a
    length-prefixed CBC-MAC, computed by one ``C_Encrypt`` with ``sm4_cbc`` and a zero IV over
    ``u128be(len(message)) || message || 0x80 || 0x00*`` (ISO/IEC 9797-1 padding method 2 to a
    multiple of 16), keeping the last ciphertext block. With the length in the first block no
    input is a prefix of another, which makes CBC-MAC a secure PRF for messages of any length
    (Bellare-Kilian-Rogaway; Petrank-Rackoff). 16-byte output. The key is an SM4 key whose only
    capability is ``CKA_ENCRYPT``: never decrypt, wrap or unwrap, sensitive, non-extractable.

Pseudonyms are lower-case hex. :func:`host_sm4_cbc_mac` computes the second construction on the
host (the SM core's SM4-CBC) for the known-answer test only: the sidecar never holds the key.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from hsm.errors import ConfigError
from hsm.sm import sm4

PseudonymMechanism = Literal["hmac-sm3", "sm4-cbc-mac"]
PSEUDONYM_MECHANISMS: Final[tuple[PseudonymMechanism, ...]] = ("hmac-sm3", "sm4-cbc-mac")
#: The profile operation each construction needs.
REQUIRED_OPERATION: Final[dict[PseudonymMechanism, str]] = {
    "hmac-sm3": "sm3_hmac",
    "sm4-cbc-mac": "sm4_cbc",
}
BLOCK: Final = 16
ZERO_IV: Final = bytes(BLOCK)


def parse_mechanism(value: object, source: str) -> PseudonymMechanism:
    """A profile's ``pseudonym`` value, or ConfigError naming the allowed ones."""
    for known in PSEUDONYM_MECHANISMS:
        if value == known:
            return known
    raise ConfigError(
        f"profile {source}: pseudonym must be one of {', '.join(PSEUDONYM_MECHANISMS)}"
    )


def cbc_mac_input(message: bytes) -> bytes:
    """``u128be(len) || message || 0x80 || zeros``: prefix-free, a multiple of 16 bytes."""
    padded = message + b"\x80"
    padded += bytes(-len(padded) % BLOCK)
    return len(message).to_bytes(BLOCK, "big") + padded


def host_sm4_cbc_mac(key: bytes, message: bytes) -> bytes:
    """The ``sm4-cbc-mac`` construction on the host (known-answer tests only)."""
    return sm4.encrypt_cbc(key, ZERO_IV, cbc_mac_input(message), pad=False)[-BLOCK:]


def token_prf(key: Any, kind: PseudonymMechanism, mechanism: Any, message: bytes) -> bytes:
    """``PRF(key, message)`` computed by the token with python-pkcs11 key object ``key``."""
    if kind == "hmac-sm3":
        return bytes(key.sign(message, mechanism=mechanism))
    out = bytes(key.encrypt(cbc_mac_input(message), mechanism=mechanism, mechanism_param=ZERO_IV))
    if len(out) < BLOCK:
        raise ConfigError("the token's SM4-CBC answer is shorter than one block")
    return out[-BLOCK:]
