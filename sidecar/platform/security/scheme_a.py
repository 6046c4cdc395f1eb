"""Scheme A: the envelope signature of the provincial gateways (platform-protocol.md §5 A).

Sealing a request envelope (a dict with the §2 fields) replaces its ``input`` and adds:

* ``encType: "SM4"`` and ``signtype: "SM2"`` (the field names as the gateways spell them);
* ``input``: Base64 of SM4-**ECB**-PKCS7 of the input's JSON bytes. The reference names SM4 and
  no mode, and the envelope has no IV field; ECB with PKCS#7 is what the same platform family
  uses for scheme B and what the peers' SDKs call "SM4 encryption". A deployment that turns out
  to use CBC needs a new option here, not a guess;
* ``cainfo``: Base64 of the raw ``r || s`` SM3-with-SM2 signature over exactly the plaintext
  bytes that were encrypted. Those bytes are ``json_text.dumps(input)``: compact separators,
  UTF-8, non-ASCII as itself (``ensure_ascii=False``), keys in the order given, Decimals exact.
  Serialising once and using the same bytes for both removes any chance of the two differing.

Opening an answer decrypts ``output``, verifies ``cainfo`` over the decrypted bytes, and only
then parses them as JSON (Decimals exact). A missing ``cainfo`` raises SignatureMissing, a wrong
one SignatureInvalid: never a warning. An answer without ``output`` (a refusal) must still be
signed unless :attr:`SchemeAConfig.allow_unsigned_without_output` says the gateway does not sign
those.

The simulator uses the same class for the other direction (``open_request``/``seal_response``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hsm.sm import sm4
from hsm.sm.signature import (
    SignatureEncoding,
    b64decode,
    b64encode,
    decode_signature,
)
from hsm.sm.sm2 import DEFAULT_USER_ID, check_user_id
from sidecar.platform.security.errors import (
    KeyMaterialInvalid,
    MalformedSecuredMessage,
    SecurityError,
    SignatureInvalid,
    SignatureMissing,
)
from sidecar.platform.security.json_text import dumps, loads
from sidecar.platform.security.pending import PendingSeal
from sidecar.platform.security.signer import Sm2Signer, Sm2Verifier

ENC_TYPE = "SM4"
SIGN_TYPE = "SM2"


@dataclass(frozen=True)
class SchemeAKeys:
    """The SM4 key for ``input``/``output`` and the SM2 user ID of both signatures.

    Build the signer and the platform verifier with ``user_id``; give ``sm4_key`` to
    :class:`SchemeA`.
    """

    sm4_key: bytes = field(repr=False)
    user_id: bytes = DEFAULT_USER_ID

    def __post_init__(self) -> None:
        if len(self.sm4_key) != sm4.KEY_SIZE:
            raise KeyMaterialInvalid("sm4 key", f"must be {sm4.KEY_SIZE} bytes")
        check_user_id(self.user_id)

    @classmethod
    def derived_from_client_id(cls, client_id: str) -> SchemeAKeys:
        """DEPLOYMENT-SPECIFIC and UNCONFIRMED: keys derived from the client ID.

        The reference says only that "in one deployment both the SM4 key and the SM2 user ID
        are derived from the client ID", without the derivation. This implements the simplest
        reading, by analogy with scheme B's ``appId[:16]`` key: SM4 key = the first 16
        characters of the client ID as UTF-8 (they must be ASCII), user ID = the whole client
        ID as UTF-8. Confirm it against that deployment's documentation before relying on it;
        the default is configured keys.
        """
        key = client_id[:16].encode("utf-8")
        if len(key) != sm4.KEY_SIZE:
            raise KeyMaterialInvalid("client id", "must start with 16 ASCII characters")
        return cls(sm4_key=key, user_id=client_id.encode("utf-8"))


@dataclass(frozen=True)
class SchemeAConfig:
    signature_encoding: SignatureEncoding = SignatureEncoding.RAW  # inside cainfo's Base64
    allow_unsigned_without_output: bool = False  # accept unsigned answers that carry no output
    accept_base64_line_breaks: bool = False  # MIME-style Base64 (CR/LF every 76 characters)


class SchemeA:
    """Seals envelopes with our signer and opens envelopes signed by the peer."""

    def __init__(
        self,
        sm4_key: bytes,
        signer: Sm2Signer,
        peer: Sm2Verifier,
        config: SchemeAConfig | None = None,
    ) -> None:
        if len(sm4_key) != sm4.KEY_SIZE:
            raise KeyMaterialInvalid("sm4 key", f"must be {sm4.KEY_SIZE} bytes")
        self._key = bytes(sm4_key)
        self._signer = signer
        self._peer = peer
        self._config = config or SchemeAConfig()

    async def seal_request(self, envelope: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``envelope`` with ``input`` encrypted and signed."""
        pending = self.prepare(envelope, "input")
        return pending.complete(await self._signer.sign(pending.message))

    def open_response(self, answer: Any) -> dict[str, Any]:
        """A copy of ``answer`` with ``output`` verified and decrypted (parsed JSON)."""
        return self._open(answer, "output")

    async def seal_response(self, answer: Mapping[str, Any]) -> dict[str, Any]:
        """The platform's side, for the simulator: encrypt and sign ``output``."""
        pending = self.prepare(answer, "output")
        return pending.complete(await self._signer.sign(pending.message))

    def open_request(self, envelope: Any) -> dict[str, Any]:
        """The platform's side, for the simulator: verify and decrypt ``input``."""
        return self._open(envelope, "input")

    def prepare(self, message: Mapping[str, Any], name: str) -> PendingSeal:
        """``message`` with ``name`` ("input" or "output") encrypted, awaiting ``cainfo``.

        For callers without an event loop: sign ``.message`` and call ``.complete``.
        """
        if name not in message:
            raise MalformedSecuredMessage(name, "is missing")
        plaintext = dumps(message[name], field=name)
        sealed = {k: v for k, v in message.items() if k != "cainfo"}
        sealed[name] = b64encode(sm4.encrypt_ecb(self._key, plaintext))
        sealed["signtype"] = SIGN_TYPE
        sealed["encType"] = ENC_TYPE
        return PendingSeal(plaintext, sealed, "cainfo", self._config.signature_encoding)

    def _open(self, message: Any, name: str) -> dict[str, Any]:
        try:
            return self._open_checked(message, name)
        except SecurityError:
            raise
        except (TypeError, ValueError, RecursionError):
            raise MalformedSecuredMessage(name, "cannot be read as a scheme-A envelope") from None

    def _open_checked(self, message: Any, name: str) -> dict[str, Any]:
        config = self._config
        if not isinstance(message, Mapping):
            raise MalformedSecuredMessage("envelope", "is not a JSON object")
        value = message.get(name)
        cainfo = message.get("cainfo")
        absent = value is None or value == ""
        if absent and config.allow_unsigned_without_output and cainfo in (None, ""):
            return {**message, name: None}
        if cainfo is None or cainfo == "":
            raise SignatureMissing("cainfo", "is missing")
        if absent:
            raise MalformedSecuredMessage(name, "is missing")
        if message.get("encType", ENC_TYPE) != ENC_TYPE:
            raise MalformedSecuredMessage("encType", f"must be {ENC_TYPE!r}")
        if message.get("signtype", SIGN_TYPE) not in (SIGN_TYPE, ""):
            raise MalformedSecuredMessage("signtype", f"must be {SIGN_TYPE!r}")
        line_breaks = config.accept_base64_line_breaks
        ciphertext = b64decode(value, field=name, allow_line_breaks=line_breaks)
        plaintext = sm4.decrypt_ecb(self._key, ciphertext, field=name)
        raw = b64decode(cainfo, field="cainfo", allow_line_breaks=line_breaks)
        signature = decode_signature(raw, config.signature_encoding, field="cainfo")
        if not self._peer.verify(plaintext, signature):
            raise SignatureInvalid("cainfo", f"does not verify over the decrypted {name}")
        return {**message, name: loads(plaintext, field=name)}
