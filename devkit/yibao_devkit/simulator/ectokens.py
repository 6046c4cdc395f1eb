"""E-voucher tokens (电子凭证 ecToken): what the insured's QR code yields at the counter.

The real token is obtained by scanning the employee's medical-insurance QR code with a terminal
of the institution; the simulator has no app, so tests and demos ask for one with
:meth:`EcTokens.issue`. A token is opaque (``ec`` + 40 hex digits), names one person, and stays
valid for :data:`TOKEN_LIFETIME` (a few minutes, as the real ones do), during which it may be used
for the whole 1101 -> 2201 -> 2207 chain.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

TOKEN_LIFETIME = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class _Token:
    certno: str
    expires: dt.datetime


class EcTokens:
    """Issued e-voucher tokens and the person each one names."""

    def __init__(self, lifetime: dt.timedelta = TOKEN_LIFETIME) -> None:
        self._lifetime = lifetime
        self._tokens: dict[str, _Token] = {}

    def issue(self, certno: str, now: dt.datetime) -> str:
        """A new token for the person with resident ID ``certno``, valid from ``now``."""
        token = "ec" + secrets.token_hex(20)
        self._tokens[token] = _Token(certno, now + self._lifetime)
        return token

    def resolve(self, token: str, now: dt.datetime) -> str | None:
        """The resident ID ``token`` names, or ``None`` if it is unknown or has expired."""
        found = self._tokens.get(token)
        if found is None:
            return None
        if now >= found.expires:
            del self._tokens[token]
            return None
        return found.certno
