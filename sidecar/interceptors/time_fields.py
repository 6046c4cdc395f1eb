"""Filter: every ``google.protobuf.Timestamp`` and ``Duration`` in a request is a valid one.

protobuf accepts any ``seconds`` and ``nanos`` on the wire, but a Timestamp outside
0001-01-01T00:00:00Z..9999-12-31T23:59:59.999999999Z or a Duration outside ±10,000 years (or with
nanos out of range or of the other sign) has no meaning, no JSON form and no ``datetime``. The
check walks the message's descriptor, so a Timestamp or Duration field added anywhere in the
contract, at any depth, in repeated fields and map values, is covered without code. Bad ones are
``INVALID_ARGUMENT`` / ``INVALID_REQUEST`` naming each field's path (``expire_time``,
``items[2].start_time``), before the consent gate and the servicers look at the request (they may
convert times to ``datetime``); the audit filter has recorded the call before.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from sidecar import errors
from sidecar.errors import FieldViolation
from sidecar.interceptors.chain import Call, Proceed

TIMESTAMP_SECONDS = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 .. 9999-12-31T23:59:59
DURATION_SECONDS = 315_576_000_000  # 10,000 years, protobuf's bound
_NANOS = 1_000_000_000


def time_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """A violation for every set Timestamp or Duration in ``message`` that is out of range."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        path, kind = prefix + field.name, field.message_type
        if kind is not None and kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for key in value:  # a string key could be anything: not echoed
                    shown = key if isinstance(key, int) else "*"
                    found += _check(value[key], f"{path}[{shown}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                found += _check(item, f"{path}[{index}]")
        else:
            found += _check(value, path)
    return found


def _check(message: Message, path: str) -> list[FieldViolation]:
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
        low, high = TIMESTAMP_SECONDS
        if not (low <= seconds <= high and 0 <= nanos < _NANOS):
            return [FieldViolation(path, "must be a valid timestamp")]
        return []
    if name == "google.protobuf.Duration":
        seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
        same_sign = seconds == 0 or nanos == 0 or (seconds < 0) == (nanos < 0)
        if not (abs(seconds) <= DURATION_SECONDS and abs(nanos) < _NANOS and same_sign):
            return [FieldViolation(path, "must be a valid duration")]
        return []
    return time_violations(message, path + ".")


class TimeFields:
    """Filter: refuses a request with an invalid Timestamp or Duration anywhere in it."""

    async def __call__(self, call: Call, request: Message, proceed: Proceed) -> Message:
        violations = time_violations(request)
        if violations:
            raise errors.invalid_request(violations)
        return await proceed(request)
