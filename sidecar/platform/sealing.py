"""Message security of one exchange: how a request envelope travels and how an answer is opened.

The client builds a plain envelope and hands it to a ``Sealing``; the sealing returns the bytes
to send, and turns the bytes that came back into the plain answer envelope, after verifying its
signature. Three implementations, chosen per platform in configuration:

* ``Plain``: JSON as is (test setups and gateways that rely on mTLS alone);
* ``EnvelopeSignature``: scheme A, ``input``/``output`` SM4-encrypted and signed in ``cainfo``;
* ``MobilePayment``: scheme B, the whole envelope as the business data of an
  ``encData``/``signData`` body.

A signature that is missing or wrong raises ``SecurityError``: an answer is never used before its
signature verified.
"""

from __future__ import annotations

from typing import Any, Protocol

from sidecar.platform.envelope import EnvelopeError, decode_json, encode_request
from sidecar.platform.security import json_text
from sidecar.platform.security.errors import MalformedSecuredMessage
from sidecar.platform.security.scheme_a import SchemeA
from sidecar.platform.security.scheme_b import SchemeB


class Sealing(Protocol):
    async def seal(self, envelope: dict[str, Any]) -> bytes:
        """The request body to send for ``envelope``."""
        ...

    def open(self, body: bytes) -> Any:
        """The plain answer envelope in ``body``; raises EnvelopeError or SecurityError."""
        ...


class Plain:
    """No message security beyond the mutually authenticated TLS tunnel."""

    async def seal(self, envelope: dict[str, Any]) -> bytes:
        return encode_request(envelope)

    def open(self, body: bytes) -> Any:
        return decode_json(body)


class EnvelopeSignature:
    """Scheme A: the provincial gateways' SM4-encrypted, SM2-signed envelope."""

    def __init__(self, scheme: SchemeA) -> None:
        self._scheme = scheme

    async def seal(self, envelope: dict[str, Any]) -> bytes:
        sealed = await self._scheme.seal_request(envelope)
        return encode_request(sealed)

    def open(self, body: bytes) -> Any:
        return self._scheme.open_response(decode_json(body))


class MobilePayment:
    """Scheme B: mobile payment 2.0.1, the envelope as the SM4-encrypted business data."""

    def __init__(self, scheme: SchemeB) -> None:
        self._scheme = scheme

    async def seal(self, envelope: dict[str, Any]) -> bytes:
        sealed = await self._scheme.seal(envelope)
        return json_text.dumps(sealed, field="body")

    def open(self, body: bytes) -> Any:
        try:
            parsed = json_text.loads(body, field="body")
        except MalformedSecuredMessage:
            raise EnvelopeError("the answer is not JSON") from None
        return self._scheme.open(parsed).data
