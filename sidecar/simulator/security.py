"""The message-security step of the request path, where SM2 signatures and SM4 encryption go.

The app's request path is: decode the body -> :meth:`MessageSecurity.open` (verify the sender's
signature, decrypt ``input``) -> check and dispatch -> :meth:`MessageSecurity.seal` (encrypt
``output``, sign) -> encode. Both schemes seen in the field (the envelope signature of provincial
gateways, and the mobile-payment ``encData``/``signData`` body) fit behind this protocol; until
they are implemented the simulator speaks plain JSON through :class:`PlainText`.

:meth:`MessageSecurity.corrupt_signature` serves the ``bad-signature`` fault: it must turn a
sealed answer into one whose signature a correct client rejects. Every scheme implements it for
its own signature field.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Final, Protocol

from sidecar.simulator.wire import JsonObject

# Looks like a Base64 signature of the right size but verifies against nothing.
CORRUPT_SIGNATURE: Final = "QkFEU0lHTkFUVVJF" * 5 + "AAAAAAAA"


class MessageSecurity(Protocol):
    def open(self, body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """The request with ``input`` in clear, after checking the sender's signature.

        Raises :class:`~sidecar.simulator.errors.Refusal` when the request cannot be trusted.
        """
        ...

    def seal(self, answer: JsonObject) -> JsonObject:
        """The answer as it travels: ``output`` encrypted and the envelope signed, if required."""
        ...

    def corrupt_signature(self, answer: JsonObject) -> JsonObject:
        """``answer`` (as sealed) with a signature that does not verify."""
        ...


class PlainText:
    """No message security: requests and answers travel as plain JSON, as in most test setups."""

    def open(self, body: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return body

    def seal(self, answer: JsonObject) -> JsonObject:
        return answer

    def corrupt_signature(self, answer: JsonObject) -> JsonObject:
        corrupted: dict[str, Any] = dict(answer)
        corrupted["cainfo"] = CORRUPT_SIGNATURE
        corrupted["signtype"] = "SM2"
        if "signData" in corrupted:
            corrupted["signData"] = CORRUPT_SIGNATURE
        return corrupted
