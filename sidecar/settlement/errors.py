"""How a settlement call can end other than with a record, in the state machine's own terms.

The machine knows nothing of gRPC: it raises these, and the servicer's side
(``sidecar/gateway/settlement.py``) maps each to the contract's status and ``ErrorInfo`` reason
(docs/api.md). Each carries what the mapping needs and no personal data beyond the platform's
own refusal text, which the contract returns in ``ErrorInfo`` metadata only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.platform.errors import PlatformRefusal


class SettlementError(Exception):
    """A settlement call ends without a record to answer with."""


class KeyReused(SettlementError):
    """The ``request_id`` was used before with a different payload."""


class InProgress(SettlementError):
    """Another live call holds this settlement; repeat later."""


class NotFound(SettlementError):
    """No settlement with this key for this data subject."""


class Unrecorded(SettlementError):
    """2207 was answered but the store stayed away until the deadline: the row is SENDING."""


@dataclass
class PersonRefused(SettlementError):
    """1101 was refused (a read: the key was given back); the refusal says why."""

    refusal: PlatformRefusal


@dataclass
class Refused(SettlementError):
    """The platform refused a step: nothing was charged (or a cancellation did not happen)."""

    code: str
    message: str


@dataclass
class Unreachable(SettlementError):
    """No valid answer came for a step that changed nothing: the call may be repeated."""

    detail: str
    timed_out: bool = False
    retry_after: float | None = None


@dataclass
class Pending(SettlementError):
    """2207's answer was lost and could not be resolved in time: PENDING, resolved later."""

    timed_out: bool
    retry_after: float
