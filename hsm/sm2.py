"""SM2 in the token: signing with a key the HSM holds, verification inside the HSM.

Everything SM2 that needs no private key (the curve, the public-key type, Z and e, the
signature codec, host verification) is the SM crypto core, :mod:`hsm.sm`; this module keeps
only what talks PKCS#11, plus :class:`HostVerifier`, the ``hsm`` package's raising, multi-key
face of the core's verifier. Why a thin module over the core rather than folding it in: the
core must import neither python-pkcs11 nor the token pool, so that the protocol layer (and
any tool) can use it without an HSM, and the token's operations stay next to the token.

Signing (GB/T 32918.2, GM/T 0009): the host computes Z once per signer and e = SM3(Z || M)
(OpenSSL SM3, ~260,000 hashes/s), and the token signs the 32-byte e (profile operation
``sm2_sign_e``), so the user ID is configurable and the message never travels to the HSM.

Verification of the platform's signatures, measured with ``benchmarks/bench_hsm.py`` on this
2-core machine (default ID, 200-byte messages, one thread each; the machine was shared with
other jobs, so the spread across three runs is given):

* host (the core's backend: tongsuopy, native SM2): 1,220-1,610 verifications/s;
* token, C_Verify of a host-computed e with an imported session public-key object (patched
  SoftHSM): 1,010-1,780/s, or 950-1,500/s including the host Z/e computation.

The raw rates are on a par, so the choice rests on what each path costs the rest of the
system: a token verification occupies a pool session (signing throughput drops by the same
amount), and with a network HSM it adds a network round trip per call, while host
verification scales with host cores and needs no HSM at all. :class:`HostVerifier` is
therefore the default; :func:`verify_e_in_token` stays available (and is tested) for
deployments that must verify inside the HSM.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pkcs11 import exceptions as p11e

from hsm.errors import ConfigError, InvalidSignature, PolicyError, TokenError
from hsm.sm.signature import Signature, SignatureEncoding
from hsm.sm.sm2 import (
    DEFAULT_USER_ID,
    SM2_EC_PARAMS,
    HostSm2Verifier,
    Sm2PublicKey,
    compute_z,
    e_from_z,
)

if TYPE_CHECKING:
    from hsm.mechanisms import Registered
    from hsm.token import HsmToken, WorkerSession


def decode_token_signature(data: bytes, encoding: Literal["raw", "der"]) -> Signature:
    """Decode what the token's C_Sign returned, per the profile's encoding."""
    return Signature.decode(data, SignatureEncoding(encoding), field="token signature")


# ------------------------------------------------------------------ host verification
class HostVerifier:
    """Verify SM2 signatures on the host under any key; raises :class:`InvalidSignature`.

    One core :class:`~hsm.sm.sm2.HostSm2Verifier` per (key, user ID), kept for reuse.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[Sm2PublicKey, bytes], HostSm2Verifier] = {}

    def _verifier(self, public_key: Sm2PublicKey, user_id: bytes) -> HostSm2Verifier:
        verifier = self._cache.get((public_key, user_id))
        if verifier is None:
            verifier = HostSm2Verifier(public_key, user_id=user_id)
            if len(self._cache) > 64:
                self._cache.clear()
            self._cache[(public_key, user_id)] = verifier
        return verifier

    def verify(
        self,
        public_key: Sm2PublicKey,
        message: bytes,
        signature: Signature,
        user_id: bytes = DEFAULT_USER_ID,
    ) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` is valid for ``message``."""
        if not self._verifier(public_key, user_id).verify(message, signature.to_raw()):
            raise InvalidSignature("SM2 signature does not verify")

    def verify_e(self, public_key: Sm2PublicKey, e: bytes, signature: Signature) -> None:
        """Verify against a host-computed e (any user ID went into e)."""
        if not self._verifier(public_key, DEFAULT_USER_ID).verify_e(e, signature.to_raw()):
            raise InvalidSignature("SM2 signature does not verify")


# ------------------------------------------------------------------ token operations
def _pub_object(ws: WorkerSession, mechs: Registered, public_key: Sm2PublicKey) -> Any:
    from pkcs11 import Attribute, ObjectClass

    cache_key = ("sm2-verify-key", public_key)
    obj = ws.cache.get(cache_key)
    if obj is None:
        obj = ws.p11.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: mechs.key_type("sm2"),
                Attribute.TOKEN: False,
                Attribute.PRIVATE: False,
                Attribute.VERIFY: True,
                Attribute.EC_PARAMS: SM2_EC_PARAMS,
                Attribute.EC_POINT: public_key.ec_point_attribute(),
                Attribute.LABEL: "yibao/verify",
            }
        )
        ws.cache[cache_key] = obj
    return obj


def verify_e_in_token(
    ws: WorkerSession,
    mechs: Registered,
    encoding: Literal["raw", "der"],
    public_key: Sm2PublicKey,
    e: bytes,
    signature: Signature,
) -> bool:
    """C_Verify of e with an imported (session) public-key object."""
    key = _pub_object(ws, mechs, public_key)
    sig = signature.encode(SignatureEncoding(encoding))
    return bool(key.verify(e, sig, mechanism=mechs.mech("sm2_verify_e")))


def sign_message_in_token(
    ws: WorkerSession,
    mechs: Registered,
    encoding: Literal["raw", "der"],
    label: str,
    message: bytes,
) -> Signature:
    """C_Sign of a whole message (``sm2_sign_message``): the token computes Z with
    the default ID and e.  Kept for HSMs without raw-e signing; :class:`Sm2Signer`
    (host Z/e, configurable ID, only 32 bytes to the HSM) is the normal path."""
    key = _find_private_key(ws, label)
    return decode_token_signature(
        key.sign(message, mechanism=mechs.mech("sm2_sign_message")), encoding
    )


class Sm2Signer:
    """Signs with one token private key; Z is computed once per signer."""

    def __init__(
        self,
        token: HsmToken,
        key_label: str,
        public_key: Sm2PublicKey,
        user_id: bytes = DEFAULT_USER_ID,
    ) -> None:
        self.token = token
        self.key_label = key_label
        self.public_key = public_key
        self.user_id = user_id
        self._z = compute_z(public_key=public_key, user_id=user_id)
        self._mech = token.mechs.mech("sm2_sign_e")
        self._encoding = token.profile.signature_encoding

    def digest(self, message: bytes) -> bytes:
        """e = SM3(Z || M) for this signer's key and user ID."""
        return e_from_z(self._z, message)

    def sign_e_op(self, e: bytes) -> Callable[[WorkerSession], Signature]:
        """The pool operation that signs a precomputed e."""
        if len(e) != 32:
            raise ConfigError(f"e must be 32 bytes, got {len(e)}")

        def op(ws: WorkerSession) -> Signature:
            key = ws.cache.get(("sm2-sign-key", self.key_label))
            if key is None:
                key = _find_private_key(ws, self.key_label)
                if not hasattr(key, "sign"):  # python-pkcs11 mixes in sign() only if CKA_SIGN
                    raise PolicyError(
                        f"key {self.key_label} may not sign (CKA_SIGN is false: "
                        "a previous or retired version)"
                    )
                ws.cache[("sm2-sign-key", self.key_label)] = key
            return decode_token_signature(key.sign(e, mechanism=self._mech), self._encoding)

        return op

    async def sign(self, message: bytes) -> Signature:
        try:
            return await self.token.run(self.sign_e_op(self.digest(message)))
        except p11e.PKCS11Error as exc:
            raise self._error(exc) from None

    def sign_blocking(self, message: bytes) -> Signature:
        try:
            return self.token.call(self.sign_e_op(self.digest(message)))
        except p11e.PKCS11Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> TokenError:
        return TokenError(f"signing with key {self.key_label} failed: {type(exc).__name__}")


def _find_private_key(ws: WorkerSession, label: str) -> Any:
    from pkcs11 import Attribute, ObjectClass

    # list(): exhaust the search so C_FindObjectsFinal runs now, not at garbage collection
    objs = list(
        ws.p11.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label})
    )
    if len(objs) != 1:
        raise TokenError(f"private key {label} not found on the token (found {len(objs)})")
    return objs[0]
