"""1101 person information (人员信息获取): who the person is and how they are insured.

Only the resident ID card voucher (``mdtrt_cert_type`` 02) is simulated for now; the e-voucher
token (01) and the social-security card (03) are refused as unsupported until their issues land.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sidecar.simulator import errors, times
from sidecar.simulator.population import CERT_TYPE_RESIDENT_ID, Enrollment, Identity, Person
from sidecar.simulator.transactions.inputs import section, text
from sidecar.simulator.transactions.registry import Transaction, TransactionContext
from sidecar.simulator.wire import Json, JsonObject, Money
from sidecar.validation import check_resident_id

MDTRT_CERT_TYPES = frozenset(
    {"01", "02", "03"}
)  # e-voucher, resident ID card, social-security card
MDTRT_CERT_TYPE_ID_CARD = "02"


def person_info(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    """Look the person up by resident ID and confirm the name when one is given."""
    data = section(payload, "data")
    mdtrt_cert_type = text(data, "mdtrt_cert_type", 3)
    mdtrt_cert_no = text(data, "mdtrt_cert_no", 50)
    text(data, "card_sn", 32, required=False)
    begntime = text(data, "begntime", 19, required=False)
    psn_cert_type = text(data, "psn_cert_type", 6, required=False)
    certno = text(data, "certno", 50, required=False)
    psn_name = text(data, "psn_name", 50, required=False)

    if mdtrt_cert_type not in MDTRT_CERT_TYPES:
        raise errors.Refusal(errors.MDTRT_CERT_TYPE_INVALID.format(value=mdtrt_cert_type))
    if mdtrt_cert_type != MDTRT_CERT_TYPE_ID_CARD:
        raise errors.Refusal(errors.MDTRT_CERT_TYPE_UNSUPPORTED.format(value=mdtrt_cert_type))
    if psn_cert_type and psn_cert_type != CERT_TYPE_RESIDENT_ID:
        raise errors.Refusal(errors.PSN_CERT_TYPE_INVALID.format(value=psn_cert_type))
    if certno and certno != mdtrt_cert_no:
        raise errors.Refusal(errors.CERT_NO_MISMATCH)
    if check_resident_id(mdtrt_cert_no, today=ctx.now.date()) is not None:
        raise errors.Refusal(errors.CERT_NO_INVALID)
    as_of = ctx.now.date()
    if begntime:
        parsed = times.parse_datetime(begntime)
        if parsed is None:
            raise errors.Refusal(errors.BEGNTIME_INVALID)
        as_of = parsed.date()

    person = ctx.state.population.find(mdtrt_cert_no)
    if person is None or person.psn_no is None:
        raise errors.Refusal(errors.PERSON_NOT_FOUND)
    if psn_name and psn_name != person.psn_name:
        raise errors.Refusal(errors.NAME_MISMATCH)
    return {
        "baseinfo": _baseinfo(person, person.psn_no, as_of),
        "insuinfo": [_insuinfo(row) for row in person.insuinfo],
        "idetinfo": [_idetinfo(row) for row in person.idetinfo],
    }


def _baseinfo(person: Person, psn_no: str, as_of: dt.date) -> JsonObject:
    return {
        "psn_no": psn_no,
        "psn_cert_type": person.psn_cert_type,
        "certno": person.certno,
        "psn_name": person.psn_name,
        "gend": person.gend,
        "naty": person.naty,
        "brdy": times.format_date(person.brdy),
        "age": person.age_on(as_of),
    }


def _insuinfo(row: Enrollment) -> JsonObject:
    return {
        "balc": Money(row.balc),
        "insutype": row.insutype,
        "psn_type": row.psn_type,
        "psn_insu_stas": row.psn_insu_stas,
        "psn_insu_date": times.format_date(row.psn_insu_date),
        "paus_insu_date": _optional_date(row.paus_insu_date),
        "cvlserv_flag": row.cvlserv_flag,
        "insuplc_admdvs": row.insuplc_admdvs,
        "emp_name": row.emp_name,
    }


def _idetinfo(row: Identity) -> JsonObject:
    return {
        "psn_idet_type": row.psn_idet_type,
        "psn_type_lv": row.psn_type_lv,
        "memo": row.memo,
        "begntime": times.format_datetime(row.begntime),
        "endtime": None if row.endtime is None else times.format_datetime(row.endtime),
    }


def _optional_date(value: dt.date | None) -> Json:
    return None if value is None else times.format_date(value)


TRANSACTIONS = (Transaction("1101", "人员信息获取", person_info),)
