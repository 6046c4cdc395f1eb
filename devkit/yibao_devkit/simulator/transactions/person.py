"""1101 person information (人员信息获取): who the person is and how they are insured.

All three vouchers are accepted (see :mod:`~yibao_devkit.simulator.transactions.people`): the
e-voucher token (01), the resident ID card (02) and the social-security card with its ``card_sn``
(03). The account balance answered is the live one, after the settlements made so far.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.population import (
    CERT_TYPE_RESIDENT_ID,
    INSUTYPE_EMPLOYEE,
    Enrollment,
    Identity,
    Person,
)
from yibao_devkit.simulator.state import PlatformState
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.wire import Json, JsonObject, Money


def person_info(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    """Find the person by voucher and confirm the resident ID and name when they are given."""
    data = section(payload, "data")
    mdtrt_cert_type = text(data, "mdtrt_cert_type", 3)
    mdtrt_cert_no = text(data, "mdtrt_cert_no", 50)
    card_sn = text(data, "card_sn", 32, required=False)
    begntime = text(data, "begntime", 19, required=False)
    psn_cert_type = text(data, "psn_cert_type", 6, required=False)
    certno = text(data, "certno", 50, required=False)
    psn_name = text(data, "psn_name", 50, required=False)

    if mdtrt_cert_type not in people.CERT_TYPES:
        raise errors.Refusal(errors.MDTRT_CERT_TYPE_INVALID.format(value=mdtrt_cert_type))
    if psn_cert_type and psn_cert_type != CERT_TYPE_RESIDENT_ID:
        raise errors.Refusal(errors.PSN_CERT_TYPE_INVALID.format(value=psn_cert_type))
    card_numbered = mdtrt_cert_type != people.CERT_EC_TOKEN  # ID card and SSC carry the ID
    if card_numbered and certno and certno != mdtrt_cert_no:
        raise errors.Refusal(errors.CERT_NO_MISMATCH)
    as_of = ctx.now.date()
    if begntime:
        parsed = times.parse_datetime(begntime)
        if parsed is None:
            raise errors.Refusal(errors.BEGNTIME_INVALID)
        as_of = parsed.date()

    person = people.by_voucher(ctx, mdtrt_cert_type, mdtrt_cert_no, card_sn)
    assert person.psn_no is not None  # by_voucher answers enrolled people only
    if certno and certno != person.certno:
        raise errors.Refusal(errors.CERT_NO_MISMATCH)
    if psn_name and psn_name != person.psn_name:
        raise errors.Refusal(errors.NAME_MISMATCH)
    return {
        "baseinfo": _baseinfo(person, person.psn_no, as_of),
        "insuinfo": [_insuinfo(row, person.psn_no, ctx.state) for row in person.insuinfo],
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


def _insuinfo(row: Enrollment, psn_no: str, state: PlatformState) -> JsonObject:
    balc = state.accounts.balance(psn_no) if row.insutype == INSUTYPE_EMPLOYEE else row.balc
    return {
        "balc": Money(balc),
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
