"""Helpers shared by the simulator's tests: request builders and client TLS contexts."""

from __future__ import annotations

import datetime as dt
import itertools
import ssl
from collections.abc import Callable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from yibao_devkit.simulator import (
    DEFAULT_DIVISION,
    DEFAULT_INSTITUTION_CODE,
    DEFAULT_INSTITUTION_NAME,
)
from yibao_devkit.simulator.times import beijing_now
from yibao_devkit.simulator.wire import dumps

OPERATOR = "op0001"

EnvelopeFactory = Callable[..., dict[str, Any]]


def envelope_factory() -> EnvelopeFactory:
    """Builds request envelopes the way a conforming sender does; keywords override fields."""
    sequence = itertools.count(1)

    def build(
        infno: str, payload: Mapping[str, Any], sign_no: str = "", **overrides: Any
    ) -> dict[str, Any]:
        now = beijing_now()  # the platform's clock: Beijing, whatever the host's zone
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
            "begntime": f"{beijing_now():%Y-%m-%d %H:%M:%S}",
            "psn_cert_type": "01",
            "certno": certno,
            "psn_name": name,
        }
    }


class Session:
    """One signed-in operator talking to a running simulator over mTLS: ``call`` and ``ok``."""

    def __init__(self, client: Any, simulator: Any, envelope: EnvelopeFactory) -> None:
        self.client = client
        self.simulator = simulator
        self.envelope = envelope
        self.sign_no = ""

    async def sign_in(self) -> str:
        answer = await self.call("9001", sign_in_input())
        assert answer["infcode"] == 0, answer["err_msg"]
        self.sign_no = str(answer["output"]["signinoutb"]["sign_no"])
        return self.sign_no

    def body(self, infno: str, payload: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
        return self.envelope(infno, payload, self.sign_no, **overrides)

    async def post(self, body: Mapping[str, Any]) -> Any:
        return await self.client.post(
            self.simulator.endpoint,
            content=dumps(body).encode("utf-8"),
            headers={"content-type": "application/json"},
        )

    async def call(self, infno: str, payload: Mapping[str, Any], **overrides: Any) -> Any:
        response = await self.post(self.body(infno, payload, **overrides))
        assert response.status_code == 200, response.text
        return response.json()

    async def ok(self, infno: str, payload: Mapping[str, Any], **overrides: Any) -> Any:
        """The output of a transaction that must succeed."""
        answer = await self.call(infno, payload, **overrides)
        assert answer["infcode"] == 0, (infno, answer["err_msg"])
        return answer["output"]

    async def refused(self, infno: str, payload: Mapping[str, Any], **overrides: Any) -> str:
        """The err_msg of a transaction that must be refused."""
        answer = await self.call(infno, payload, **overrides)
        assert answer["infcode"] == -1, (infno, answer["output"])
        assert answer["output"] is None
        return str(answer["err_msg"])


_visit_numbers = itertools.count(1)


def now_text(delta: dt.timedelta = dt.timedelta()) -> str:
    return f"{beijing_now() + delta:%Y-%m-%d %H:%M:%S}"


def register_input(
    psn_no: str, certno: str, *, insutype: str = "310", cert_type: str = "02"
) -> dict[str, Any]:
    return {
        "data": {
            "psn_no": psn_no,
            "insutype": insutype,
            "begntime": now_text(),
            "mdtrt_cert_type": cert_type,
            "mdtrt_cert_no": certno,
            "ipt_otp_no": f"MZ{next(_visit_numbers):08d}",
            "atddr_no": "D0001",
            "dr_name": "李医生",
            "dept_code": "A03",
            "dept_name": "内科",
            "caty": "A03",
        }
    }


def fee_item(
    mdtrt_id: str, psn_no: str, sn: str, *, pric: str, cnt: str = "1", code: str = "XA01",
    amount: str | None = None, batch: str = "B0001",
) -> dict[str, Any]:  # fmt: skip
    total = amount if amount is not None else str(Decimal(pric) * Decimal(cnt))
    return {
        "feedetl_sn": sn,
        "mdtrt_id": mdtrt_id,
        "psn_no": psn_no,
        "chrg_bchno": batch,
        "med_list_codg": code,
        "medins_list_codg": "H-" + code,
        "det_item_fee_sumamt": Decimal(total),
        "cnt": Decimal(cnt),
        "pric": Decimal(pric),
        "fee_ocur_time": now_text(),
    }


def settle_input(
    psn_no: str, certno: str, mdtrt_id: str, medfee: str, *, acct: str = "1",
    insutype: str = "310", cert_type: str = "02", **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    return {
        "data": {
            "psn_no": psn_no,
            "mdtrt_cert_type": cert_type,
            "mdtrt_cert_no": certno,
            "med_type": "11",
            "medfee_sumamt": Decimal(medfee),
            "psn_setlway": "01",
            "mdtrt_id": mdtrt_id,
            "chrg_bchno": "B0001",
            "insutype": insutype,
            "acct_used_flag": acct,
            **extra,
        }
    }
