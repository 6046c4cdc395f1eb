"""Helpers shared by the simulator's tests: request builders and client TLS contexts."""

from __future__ import annotations

import datetime as dt
import itertools
import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sidecar.simulator import DEFAULT_DIVISION, DEFAULT_INSTITUTION_CODE, DEFAULT_INSTITUTION_NAME

OPERATOR = "op0001"

EnvelopeFactory = Callable[..., dict[str, Any]]


def envelope_factory() -> EnvelopeFactory:
    """Builds request envelopes the way a conforming sender does; keywords override fields."""
    sequence = itertools.count(1)

    def build(
        infno: str, payload: Mapping[str, Any], sign_no: str = "", **overrides: Any
    ) -> dict[str, Any]:
        now = dt.datetime.now()
        body: dict[str, Any] = {
            "infno": infno,
            "msgid": f"{DEFAULT_INSTITUTION_CODE}{now:%Y%m%d%H%M%S}{next(sequence) % 10000:04d}",
            "mdtrtarea_admvs": DEFAULT_DIVISION,
            "insuplc_admdvs": "",
            "recer_sys_code": "MBS_LOCAL",
            "dev_no": "",
            "dev_safe_info": "",
            "cainfo": "",
            "signtype": "",
            "infver": "V1.0",
            "opter_type": "1",
            "opter": OPERATOR,
            "opter_name": "张医生",
            "inf_time": f"{now:%Y-%m-%d %H:%M:%S}",
            "fixmedins_code": DEFAULT_INSTITUTION_CODE,
            "fixmedins_name": DEFAULT_INSTITUTION_NAME,
            "sign_no": sign_no,
            "input": dict(payload),
        }
        body.update(overrides)
        return body

    return build


def client_context(
    *, trust: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client TLS context trusting ``trust`` and presenting ``cert``/``key`` if given."""
    context = ssl.create_default_context(cafile=str(trust))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def sign_in_input(operator: str = OPERATOR) -> dict[str, Any]:
    return {"signIn": {"opter_no": operator, "mac": "00-16-3E-01-02-03", "ip": "10.0.0.8"}}


def person_input(certno: str, name: str, *, cert_type: str = "02") -> dict[str, Any]:
    return {
        "data": {
            "mdtrt_cert_type": cert_type,
            "mdtrt_cert_no": certno,
            "card_sn": "",
            "begntime": f"{dt.datetime.now():%Y-%m-%d %H:%M:%S}",
            "psn_cert_type": "01",
            "certno": certno,
            "psn_name": name,
        }
    }
