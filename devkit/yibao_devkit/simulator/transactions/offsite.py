"""Offsite-treatment registration (异地就医备案): 2501 register, 2502 cancel, 5304 list, 5302.

The reference names 2501/2502 "transfer registration" (转院备案); with the target area's division
code in ``mdtrtarea_admdvs`` they serve offsite registration, and regions use variants such as
``2501A`` (register those as aliases, see :func:`~.default_registry`).

2501 refuses, as the platform does: an unknown person, an insurance type they are not enrolled in,
an enrolment that gives no benefits on the start date, an end date before the start date, a
target area that is not a real division or is the insured area itself, and a period overlapping
an active registration of the same person. 2502 cancels by the registration serial
``trt_dcla_detl_sn``; a cancelled registration stays listed by 5304 with ``vali_flag`` 0.

5302 (人员定点信息查询) answers the person's designated institutions: the simulator's own
institution for everyone enrolled, plus the receiving institution of each active registration
that names one (``biz_appy_type`` 03, 异地就医).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Final

from yibao_devkit.simulator import errors, times
from yibao_devkit.simulator.ids import PROVINCE_PREFIXES
from yibao_devkit.simulator.registrations import Registration
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import day, moment, section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.wire import Json, JsonObject

_DIVISION = re.compile(r"[0-9]{6}")
VALID, INVALID = "1", "0"
BIZ_APPY_LOCAL: Final = "01"  # 门诊统筹定点 at the institution itself (illustrative code)
BIZ_APPY_OFFSITE: Final = "03"  # 异地就医定点 (illustrative code)

# Optional descriptive fields of 2501 (field, maximum length), echoed by 5304.
_DETAILS: Final = (
    ("tel", 50),
    ("addr", 200),
    ("insu_optins", 6),
    ("diag_code", 30),
    ("diag_name", 100),
    ("dise_cond_dscr", 2000),
    ("reflin_medins_no", 30),
    ("reflin_medins_name", 200),
    ("hosp_agre_refl_flag", 3),
    ("refl_type", 6),
    ("refl_date", 19),
    ("refl_rea", 100),
    ("refl_opnn", 100),
    ("refl_old_mdtrt_id", 30),  # 2501A
    ("memo", 500),
)
_REQUIRED_DETAILS: Final = frozenset({"tel", "addr", "refl_rea"})


def register(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "refmedin")
    psn_no = text(data, "psn_no", 30)
    insutype = text(data, "insutype", 6)
    area = text(data, "mdtrtarea_admdvs", 6)
    begndate = day(data, "begndate")
    enddate = day(data, "enddate", required=False)
    details = {
        field: text(data, field, limit, required=field in _REQUIRED_DETAILS)
        for field, limit in _DETAILS
    }
    assert begndate is not None
    if not _DIVISION.fullmatch(area):
        raise errors.Refusal(errors.FIELD_BAD_VALUE.format(field="mdtrtarea_admdvs"))
    if area[:2] not in PROVINCE_PREFIXES:
        raise errors.Refusal(errors.OFFSITE_AREA_INVALID.format(code=area))
    if enddate is not None and enddate < begndate:
        raise errors.Refusal(errors.TIME_ORDER_INVALID)

    row = people.enrollment(people.by_psn_no(ctx, psn_no), insutype)
    problem = people.entitlement_problem(row, begndate)
    if problem is not None:
        raise errors.Refusal(problem)
    if area == row.insuplc_admdvs:
        raise errors.Refusal(errors.OFFSITE_SAME_AREA.format(code=area))
    clash = ctx.state.registrations.overlapping(psn_no, begndate, enddate)
    if clash is not None:
        raise errors.Refusal(errors.OFFSITE_OVERLAP.format(serial=clash.trt_dcla_detl_sn))

    serial = ctx.state.serials.next(ctx.now)
    ctx.state.registrations.add(
        Registration(
            trt_dcla_detl_sn=serial,
            psn_no=psn_no,
            insutype=insutype,
            mdtrtarea_admdvs=area,
            begndate=begndate,
            enddate=enddate,
            details={field: value for field, value in details.items() if value},
            registered_at=ctx.now,
            msgid=ctx.envelope.msgid,
        )
    )
    return {"result": {"trt_dcla_detl_sn": serial}}


def cancel(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    serial = text(data, "trt_dcla_detl_sn", 30)
    psn_no = text(data, "psn_no", 30)
    text(data, "memo", 500, required=False)
    found = ctx.state.registrations.get(serial)
    if found is None or found.psn_no != psn_no:
        raise errors.Refusal(errors.OFFSITE_NOT_FOUND.format(serial=serial))
    if not found.active:
        raise errors.Refusal(errors.OFFSITE_ALREADY_CANCELLED.format(serial=serial))
    found.cancelled_at = ctx.now
    return {"result": {"trt_dcla_detl_sn": serial, "vali_flag": INVALID}}


def query(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    """5304: the person's registrations overlapping [begntime, endtime] (all when absent)."""
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    begin = moment(data, "begntime", required=False)
    end = moment(data, "endtime", required=False)
    people.by_psn_no(ctx, psn_no)
    found = [
        _listed(registration)
        for registration in ctx.state.registrations.of(psn_no)
        if registration.overlaps(
            begin.date() if begin else dt.date.min, end.date() if end else None
        )
    ]
    return {"refmedin": found}


def designated(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    """5302: the person's designated institutions, optionally of one ``biz_appy_type``."""
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    biz_appy_type = text(data, "biz_appy_type", 6, required=False)
    person = people.by_psn_no(ctx, psn_no)
    first = min((row.psn_insu_date for row in person.insuinfo), default=None)
    rows: list[JsonObject] = []
    if first is not None:
        rows.append(
            _designation(
                psn_no, 1, BIZ_APPY_LOCAL, ctx.state.institution_code,
                ctx.state.institution_name, first, None,
            )
        )  # fmt: skip
    for registration in ctx.state.registrations.of(psn_no):
        code = registration.details.get("reflin_medins_no")
        if registration.active and code:
            rows.append(
                _designation(
                    psn_no, len(rows) + 1, BIZ_APPY_OFFSITE, code,
                    registration.details.get("reflin_medins_name", ""),
                    registration.begndate, registration.enddate,
                )
            )  # fmt: skip
    if biz_appy_type:
        rows = [row for row in rows if row["biz_appy_type"] == biz_appy_type]
    return {"psnfixmedin": rows}


def _listed(registration: Registration) -> JsonObject:
    row: dict[str, Json] = {
        "trt_dcla_detl_sn": registration.trt_dcla_detl_sn,
        "psn_no": registration.psn_no,
        "insutype": registration.insutype,
        "mdtrtarea_admdvs": registration.mdtrtarea_admdvs,
        "begndate": times.format_date(registration.begndate),
        "enddate": _date_or_none(registration.enddate),
        "vali_flag": VALID if registration.active else INVALID,
        "crte_time": times.format_datetime(registration.registered_at),
    }
    for field, _ in _DETAILS:
        row[field] = registration.details.get(field)
    return row


def _designation(
    psn_no: str,
    serial: int,
    biz_appy_type: str,
    code: str,
    name: str,
    begin: dt.date,
    end: dt.date | None,
) -> JsonObject:
    return {
        "psn_no": psn_no,
        "fix_srt_no": str(serial),
        "biz_appy_type": biz_appy_type,
        "fixmedins_code": code,
        "fixmedins_name": name,
        "begndate": times.format_date(begin),
        "enddate": _date_or_none(end),
    }


def _date_or_none(value: dt.date | None) -> Json:
    return None if value is None else times.format_date(value)


TRANSACTIONS = (
    Transaction("2501", "异地就医备案", register),
    Transaction("2502", "异地就医备案撤销", cancel),
    Transaction("5304", "备案信息查询", query),
    Transaction("5302", "人员定点信息查询", designated),
)
