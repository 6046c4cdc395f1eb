"""Request and response envelopes of the national platform interface (V1.0).

Every transaction travels in the same JSON envelope (platform-protocol.md §2 and §3). This module
builds and parses them, and checks every field against the lengths and formats the interface
allows, so that a malformed envelope is caught here with the field's name instead of being
refused by the platform with a vague message.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

# Beijing time lives in sidecar/domain/beijing.py; re-exported for the platform modules using it.
from sidecar.domain.beijing import BEIJING as BEIJING
from sidecar.domain.beijing import beijing_now as beijing_now
from sidecar.platform.security import json_text
from sidecar.platform.security.errors import SecurityError

INF_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_INF_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_MSGID = re.compile(r"[A-Za-z0-9]{12}[0-9]{18}")
_INFNO = re.compile(r"[0-9]{4}[A-Z]?")
_DIVISION = re.compile(r"[0-9]{6}")
_PLATFORM_TIME = re.compile(r"[0-9]{17}")

SUCCESS = 0
FAILURE = -1


class EnvelopeError(ValueError):
    """An envelope field breaks the interface's rules; the message names the field."""


# Maximum lengths in characters (platform-protocol.md §2). The interface counts characters.
REQUEST_LIMITS: dict[str, int] = {
    "infno": 5,
    "msgid": 30,
    "mdtrtarea_admvs": 6,
    "insuplc_admdvs": 6,
    "recer_sys_code": 10,
    "dev_no": 100,
    "dev_safe_info": 2000,
    "cainfo": 1024,
    "signtype": 10,
    "infver": 6,
    "opter_type": 3,
    "opter": 30,
    "opter_name": 50,
    "inf_time": 19,
    "fixmedins_code": 12,
    "fixmedins_name": 200,
    "sign_no": 30,
}
INPUT_LIMIT = 40_000


@dataclass(frozen=True)
class RequestEnvelope:
    """One request to the platform; ``input`` is the transaction's business input."""

    infno: str
    msgid: str
    mdtrtarea_admvs: str
    recer_sys_code: str
    infver: str
    opter_type: str
    opter: str
    opter_name: str
    inf_time: str
    fixmedins_code: str
    fixmedins_name: str
    sign_no: str
    input: dict[str, Any]
    insuplc_admdvs: str = ""
    dev_no: str = ""
    dev_safe_info: str = ""
    cainfo: str = ""
    signtype: str = ""

    def __post_init__(self) -> None:
        for name, limit in REQUEST_LIMITS.items():
            value = getattr(self, name)
            if len(value) > limit:
                raise EnvelopeError(f"{name} is longer than {limit} characters")
        required = ("infno", "msgid", "mdtrtarea_admvs", "recer_sys_code", "infver")
        for name in (*required, "opter_type", "opter", "opter_name", "fixmedins_code"):
            if not getattr(self, name):
                raise EnvelopeError(f"{name} must not be empty")
        if not _INFNO.fullmatch(self.infno):
            raise EnvelopeError("infno must be 4 digits with an optional capital letter")
        if not _MSGID.fullmatch(self.msgid):
            raise EnvelopeError("msgid must be the institution code, a timestamp and a sequence")
        if not _DIVISION.fullmatch(self.mdtrtarea_admvs):
            raise EnvelopeError("mdtrtarea_admvs must be 6 digits")
        if self.insuplc_admdvs and not _DIVISION.fullmatch(self.insuplc_admdvs):
            raise EnvelopeError("insuplc_admdvs must be 6 digits")
        if not _INF_TIME.fullmatch(self.inf_time):
            raise EnvelopeError("inf_time must be written yyyy-MM-dd HH:mm:ss")

    def to_dict(self) -> dict[str, Any]:
        """The envelope's fields in the interface's order (``input`` still in clear)."""
        return asdict(self)

    def to_json(self) -> bytes:
        """The envelope as UTF-8 JSON, fields in the interface's order."""
        return encode_request(self.to_dict())


def encode_request(body: dict[str, Any]) -> bytes:
    """A request body as UTF-8 JSON, refusing an ``input`` longer than the interface allows.

    The limit applies to ``input`` as it travels: plain JSON, or the Base64 text of scheme A.
    """
    travelling = body.get("input")
    text = travelling if isinstance(travelling, str) else _compact(travelling).decode()
    if len(text) > INPUT_LIMIT:
        raise EnvelopeError(f"input is longer than {INPUT_LIMIT} characters")
    return _compact(body)


def _compact(value: Any) -> bytes:
    """Compact UTF-8 JSON; amounts (``Decimal``) written as exact JSON numbers, never floats."""
    try:
        return json_text.dumps(value, field="envelope")
    except SecurityError as exc:
        raise EnvelopeError(str(exc)) from None


def decode_json(body: bytes) -> Any:
    """JSON as the platform writes it, with exact ``Decimal`` numbers; EnvelopeError if not."""
    try:
        return json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EnvelopeError("the answer is not JSON") from None
    except RecursionError:
        raise EnvelopeError("the answer is nested too deeply") from None


@dataclass(frozen=True)
class ResponseEnvelope:
    """One answer from the platform. Decimal numbers in ``output`` are parsed as ``Decimal``."""

    infcode: int
    inf_refmsgid: str
    refmsg_time: str
    respond_time: str
    err_msg: str
    output: Any

    @property
    def ok(self) -> bool:
        return self.infcode == SUCCESS

    @classmethod
    def parse(cls, body: bytes) -> ResponseEnvelope:
        """Parse and check an answer; raise EnvelopeError naming what is wrong."""
        return cls.from_dict(decode_json(body))

    @classmethod
    def from_dict(cls, data: Any) -> ResponseEnvelope:
        """Check an answer already parsed (and, under message security, opened)."""
        if not isinstance(data, dict):
            raise EnvelopeError("the answer is not a JSON object")
        infcode = data.get("infcode")
        if isinstance(infcode, str) and re.fullmatch(r"-?[0-9]{1,4}", infcode):
            infcode = int(infcode)
        if not isinstance(infcode, int) or isinstance(infcode, bool):
            raise EnvelopeError("infcode is missing or not an integer")
        texts: dict[str, str] = {}
        for name in ("inf_refmsgid", "refmsg_time", "respond_time", "err_msg"):
            value = data.get(name)
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise EnvelopeError(f"{name} is not a string")
            texts[name] = value
        if len(texts["inf_refmsgid"]) > 30:
            raise EnvelopeError("inf_refmsgid is longer than 30 characters")
        for name in ("refmsg_time", "respond_time"):
            if texts[name] and not _PLATFORM_TIME.fullmatch(texts[name]):
                raise EnvelopeError(f"{name} must be written yyyyMMddHHmmssSSS")
        return cls(infcode=infcode, output=data.get("output"), **texts)
