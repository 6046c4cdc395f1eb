"""The trail's keys in the HSM: the pseudonym key, the checkpoint key (SM2), the KEK.

* Pseudonyms: ``PRF(pseudonym key, "<certificate type>:<number>")`` computed *in the token*
  with the profile's pseudonym function (HMAC-SM3, or a length-prefixed SM4-CBC-MAC where the
  vendor numbers no HMAC-SM3; hsm/pseudonym.py) and a non-extractable key of purpose
  ``pseudonym``, so the store can be searched by subject without holding the number. The same
  object keys the sidecar's other digests of personal data (sidecar/compliance/pseudonyms.py).
* Checkpoints: SM2 signatures with the active ``audit`` key (not the platform ``sign`` key: the
  security team can rotate or revoke them independently).
* Data keys: ``hsm.datakeys`` under the active ``kek``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from hsm.datakeys import DataKeys
from hsm.errors import HsmError, NotFound, PolicyError, TokenError
from hsm.keys import KeyInfo, KeyStore
from hsm.pseudonym import REQUIRED_OPERATION, PseudonymMechanism, token_prf
from hsm.sm2 import Sm2Signer
from hsm.token import HsmToken, WorkerSession
from sidecar.compliance.pseudonyms import subject_message


class HsmPseudonyms:
    """The pseudonym function, computed in the token (profile entry ``pseudonym``:
    ``hmac-sm3`` or ``sm4-cbc-mac``, hsm/pseudonym.py) with the key of purpose ``pseudonym``."""

    def __init__(self, token: HsmToken, key_label: str) -> None:
        self.token = token
        self.key_label = key_label
        self.mechanism: PseudonymMechanism = token.profile.pseudonym
        self._mech = token.mechs.mech(REQUIRED_OPERATION[self.mechanism])

    def _key(self, ws: WorkerSession, label: str) -> Any:
        key = ws.cache.get(("pseudonym", label))
        if key is not None:
            return key
        objs = list(
            ws.p11.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label})
        )
        method = "sign" if self.mechanism == "hmac-sm3" else "encrypt"
        if len(objs) != 1 or not hasattr(objs[0], method):
            raise PolicyError(f"pseudonym key {label} cannot compute pseudonyms")
        key = objs[0]
        if self.mechanism == "sm4-cbc-mac":
            # A MAC key that could also decrypt or wrap would turn the MAC into a cipher.
            for attribute in (Attribute.DECRYPT, Attribute.WRAP, Attribute.UNWRAP):
                if _flag(key, attribute):
                    raise PolicyError(f"pseudonym key {label} has {attribute.name} on")
        ws.cache[("pseudonym", label)] = key
        return key

    def _op(self, message: bytes, label: str) -> Callable[[WorkerSession], str]:
        def op(ws: WorkerSession) -> str:
            return token_prf(self._key(ws, label), self.mechanism, self._mech, message).hex()

        return op

    async def pseudonym(self, message: bytes) -> str:
        try:
            return await self.token.run(self._op(message, self.key_label))
        except p11e.PKCS11Error as exc:
            raise TokenError(f"pseudonym with {self.key_label}: {type(exc).__name__}") from None

    def pseudonym_blocking(self, message: bytes, label: str | None = None) -> str:
        try:
            return self.token.call(self._op(message, label or self.key_label))
        except p11e.PKCS11Error as exc:
            raise TokenError(f"pseudonym with {self.key_label}: {type(exc).__name__}") from None


def _flag(key: Any, attribute: Attribute) -> bool:
    try:
        return bool(key[attribute])
    except (p11e.PKCS11Error, ValueError):
        return False


class HsmCheckpointSigner:
    """SM2 signatures of checkpoints with the active ``audit`` key, raw r||s."""

    def __init__(self, signer: Sm2Signer) -> None:
        self._signer = signer
        self.key_label = signer.key_label
        self.fingerprint = signer.public_key.fingerprint()

    async def sign(self, message: bytes) -> bytes:
        return (await self._signer.sign(message)).to_raw()

    def sign_blocking(self, message: bytes) -> bytes:
        return self._signer.sign_blocking(message).to_raw()


@dataclass
class AuditKeys:
    pseudonyms: HsmPseudonyms
    signer: HsmCheckpointSigner
    data_keys: DataKeys
    audit_key: KeyInfo


def open_pseudonyms(token: HsmToken) -> HsmPseudonyms:
    """The pseudonym function with the active ``pseudonym`` key (HsmError if there is none)."""
    return HsmPseudonyms(token, KeyStore(token).active("pseudonym").label)


def open_audit_keys(token: HsmToken) -> AuditKeys:
    """The active pseudonym, audit and kek keys of ``token`` (HsmError naming what is missing)."""
    keys = KeyStore(token)
    pseudonym = keys.active("pseudonym")
    audit = keys.active("audit")
    if audit.public_key is None:
        raise NotFound(f"key {audit.label} has no public key on the token")
    data_keys = DataKeys(token, keys)
    data_keys.active_kek()
    return AuditKeys(
        HsmPseudonyms(token, pseudonym.label),
        HsmCheckpointSigner(Sm2Signer(token, audit.label, audit.public_key)),
        data_keys,
        audit,
    )


__all__ = [
    "AuditKeys",
    "HsmError",
    "HsmPseudonyms",
    "open_audit_keys",
    "open_pseudonyms",
    "subject_message",
]
