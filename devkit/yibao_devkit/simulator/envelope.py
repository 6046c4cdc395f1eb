"""The request and response envelopes shared by every transaction.

Parsing checks the envelope's shape only (presence, type, length, formats); policy that needs the
simulator's state (which institution and area it serves, sign-in) lives in :mod:`app`. A problem
raises :class:`~yibao_devkit.simulator.errors.Refusal` with the platform's text for it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.wire import Json, JsonObject

_INFNO = re.compile(r"[0-9]{4}[A-Z]?")  # some regions add a letter suffix, e.g. 2501A
_DIVISION = re.compile(r"[0-9]{6}")
_MSGID_SEQUENCE = re.compile(r"[0-9]{4}")
_OPTER_TYPES = frozenset({"1", "2", "3"})  # staff, self-service terminal, mobile terminal

# (field, maximum length). Required unless listed in _OPTIONAL. sign_no is only length-checked
# here: whether it is present and valid is the sign-in check's business, so that a missing sign_no
# earns the same "sign in again" refusal as a stale one.
_LIMITS: Final[tuple[tuple[str, int], ...]] = (
    ("infno", 5),
    ("msgid", 30),
    ("mdtrtarea_admvs", 6),
    ("insuplc_admdvs", 6),
    ("recer_sys_code", 10),
    ("dev_no", 100),
    ("dev_safe_info", 2000),
    ("cainfo", 1024),
    ("signtype", 10),
    ("infver", 6),
    ("opter_type", 3),
    ("opter", 30),
    ("opter_name", 50),
    ("inf_time", 19),
    ("fixmedins_code", 12),
    ("fixmedins_name", 200),
    ("sign_no", 30),
)
_OPTIONAL: Final = frozenset(
    {"insuplc_admdvs", "dev_no", "dev_safe_info", "cainfo", "signtype", "sign_no"}
)
INPUT_MAX_CHARS: Final = 40000


@dataclass(frozen=True)
class RequestEnvelope:
    """A request envelope whose shape has been checked; optional fields are ``""`` if absent."""

    infno: str
    msgid: str
    mdtrtarea_admvs: str
    insuplc_admdvs: str
    recer_sys_code: str
    dev_no: str
    dev_safe_info: str
    cainfo: str
    signtype: str
    infver: str
    opter_type: str
    opter: str
    opter_name: str
    inf_time: str
    fixmedins_code: str
    fixmedins_name: str
    sign_no: str
    input: Mapping[str, Any]


def parse_request(body: Mapping[str, Any]) -> RequestEnvelope:
    """Check a decoded request body and return its envelope, or raise ``Refusal``."""
    infno = _text(body, "infno", 5, required=True)
    if not _INFNO.fullmatch(infno):
        raise errors.Refusal(errors.UNKNOWN_INFNO.format(infno=infno))
    values: dict[str, str] = {"infno": infno}
    for field, limit in _LIMITS[1:]:
        values[field] = _text(body, field, limit, required=field not in _OPTIONAL)
    _check_msgid(values["msgid"], values["fixmedins_code"])
    for field in ("mdtrtarea_admvs", "insuplc_admdvs"):
        if values[field] and not _DIVISION.fullmatch(values[field]):
            raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field=field))
    if values["opter_type"] not in _OPTER_TYPES:
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field="opter_type"))
    if times.parse_datetime(values["inf_time"]) is None:
        raise errors.Refusal(errors.INF_TIME_INVALID)
    payload = body.get("input")
    if payload is None:
        raise errors.Refusal(errors.FIELD_MISSING.format(field="input"))
    if not isinstance(payload, Mapping):
        raise errors.Refusal(errors.INPUT_NOT_OBJECT)
    # default=str: amounts arrive as Decimal; their text is what counts towards the limit.
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    if len(text) > INPUT_MAX_CHARS:
        raise errors.Refusal(errors.FIELD_TOO_LONG.format(field="input", limit=INPUT_MAX_CHARS))
    return RequestEnvelope(**values, input=payload)


def _text(body: Mapping[str, Any], field: str, limit: int, *, required: bool) -> str:
    value = body.get(field)
    if value is None or value == "":
        if required:
            raise errors.Refusal(errors.FIELD_MISSING.format(field=field))
        return ""
    if not isinstance(value, str):
        raise errors.Refusal(errors.FIELD_NOT_STRING.format(field=field))
    if len(value) > limit:
        raise errors.Refusal(errors.FIELD_TOO_LONG.format(field=field, limit=limit))
    return value


def _check_msgid(msgid: str, fixmedins_code: str) -> None:
    """msgid = institution code (12) + yyyyMMddHHmmss (14) + sequence (4 digits)."""
    if (
        len(msgid) != 30
        or msgid[:12] != fixmedins_code
        or times.parse_compact(msgid[12:26]) is None
        or not _MSGID_SEQUENCE.fullmatch(msgid[26:])
    ):
        raise errors.Refusal(errors.MSGID_INVALID)


def response(
    *,
    infcode: int,
    inf_refmsgid: str,
    refmsg_time: str,
    respond_time: str,
    err_msg: str | None,
    output: Json,
) -> JsonObject:
    """The response envelope, in the platform's field order."""
    return {
        "infcode": infcode,
        "inf_refmsgid": inf_refmsgid,
        "refmsg_time": refmsg_time,
        "respond_time": respond_time,
        "err_msg": err_msg,
        "warn_msg": None,
        "cainfo": None,
        "signtype": None,
        "output": output,
    }
