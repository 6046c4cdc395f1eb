"""The trail's keys in the HSM: the pseudonym key (HMAC-SM3), the checkpoint key (SM2), the KEK.

* Pseudonyms: ``HMAC-SM3(pseudonym key, "<certificate type>:<number>")`` computed *in the
  token* (profile operation ``sm3_hmac``, a generic-secret key of purpose ``pseudonym`` that
  cannot be extracted), so the store can be searched by subject without holding the number.
* Checkpoints: SM2 signatures with the active ``audit`` key (not the platform ``sign`` key: the
  security team can rotate or revoke them independently).
* Data keys: ``hsm.datakeys`` under the active ``kek``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pkcs11 import Attribute, ObjectClass
from pkcs11 import exceptions as p11e

from hsm.datakeys import DataKeys
from hsm.errors import HsmError, NotFound, PolicyError, TokenError
from hsm.keys import KeyInfo, KeyStore
from hsm.sm2 import Sm2Signer
from hsm.token import HsmToken, WorkerSession


def subject_message(certificate_type: int, certificate_number: str) -> bytes:
    """The bytes a pseudonym is computed over (the number as the caller sent it, trimmed)."""
    return f"{certificate_type}:{certificate_number.strip().upper()}".encode()


class HsmPseudonyms:
    """Keyed pseudonyms of data subjects, computed in the token."""

    def __init__(self, token: HsmToken, key_label: str) -> None:
        self.token = token
        self.key_label = key_label
        self._mech = token.mechs.mech("sm3_hmac")

    def _op(self, message: bytes, label: str) -> Callable[[WorkerSession], str]:
        def op(ws: WorkerSession) -> str:
            key = ws.cache.get(("hmac", label))
            if key is None:
                objs = list(
                    ws.p11.get_objects(
                        {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}
                    )
                )
                if len(objs) != 1 or not hasattr(objs[0], "sign"):
                    raise PolicyError(f"pseudonym key {label} cannot compute pseudonyms")
                key = objs[0]
                ws.cache[("hmac", label)] = key
            return bytes(key.sign(message, mechanism=self._mech)).hex()

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


__all__ = ["AuditKeys", "HsmError", "HsmPseudonyms", "open_audit_keys", "subject_message"]
