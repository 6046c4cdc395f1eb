"""Regional second confirmation of settlements (二次确认), off unless switched on.

Some regions make the insured confirm a settlement on their phone: the institution's system then
passes the code the person received (an SMS code or a dynamic token) in 2207's ``data``. When the
switch is on, 2207 refuses without the code or with a wrong one. The simulator sends no SMS;
tests and demos read the code the person "received" with :meth:`SecondConfirmation.expected`.
The code is derived from a per-simulator secret, the person and the visit, so it is stable for
one settlement attempt and differs between visits. With ``per_person=True`` it is derived from
the person alone, like a dynamic token from the person's app or an SMS code sent when the first
attempt was refused: a caller can then ask the person and settle again in a new visit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

DEFAULT_FIELD = "sms_code"


class SecondConfirmation:
    """The switch, the input field it reads, and the codes it expects."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(16)
        self.required = False
        self.field = DEFAULT_FIELD
        self.per_person = False

    def require(self, field: str = DEFAULT_FIELD, *, per_person: bool = False) -> None:
        """Make 2207 demand the code in ``data[field]`` (``sms_code`` or e.g. ``dynamic_token``)."""
        self.required = True
        self.field = field
        self.per_person = per_person

    def disable(self) -> None:
        self.required = False

    def expected(self, psn_no: str, mdtrt_id: str = "") -> str:
        """The six-digit code the person would have received for settling this visit."""
        scope = psn_no if self.per_person else f"{psn_no}:{mdtrt_id}"
        digest = hmac.new(self._secret, scope.encode(), hashlib.sha256).digest()
        return f"{int.from_bytes(digest[:8], 'big') % 1_000_000:06d}"

    def matches(self, psn_no: str, mdtrt_id: str, given: str) -> bool:
        return hmac.compare_digest(self.expected(psn_no, mdtrt_id), given)
