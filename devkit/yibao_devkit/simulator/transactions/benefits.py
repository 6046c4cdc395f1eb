"""2001 benefit check (人员待遇享受检查): may this person be treated on this insurance?

A person who may not is a business answer, not an error: ``infcode`` 0 with
``trt_enjymnt_flag`` "0" and ``trt_chk_rslt`` saying why (suspended or terminated enrolment, a
visit outside the enrolment's dates). Only malformed input, an unknown person number and an
insurance type the person is not enrolled in are refused with ``infcode`` -1, as on the platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yibao_devkit.simulator import errors, policy, times
from yibao_devkit.simulator.transactions import people
from yibao_devkit.simulator.transactions.inputs import moment, section, text
from yibao_devkit.simulator.transactions.registry import Transaction, TransactionContext
from yibao_devkit.simulator.wire import JsonObject

TRT_CHK_TYPE_ENROLMENT = "01"  # 参保状态检查, the check this simulator performs
ENJOYS, DOES_NOT_ENJOY = "1", "0"


def benefit_check(payload: Mapping[str, Any], ctx: TransactionContext) -> JsonObject:
    data = section(payload, "data")
    psn_no = text(data, "psn_no", 30)
    insutype = text(data, "insutype", 6)
    text(data, "fixmedins_code", 12, required=False)
    med_type = text(data, "med_type", 6)
    begntime = moment(data, "begntime")
    endtime = moment(data, "endtime", required=False)
    text(data, "dise_codg", 30, required=False)
    text(data, "dise_name", 300, required=False)
    assert begntime is not None
    if med_type not in policy.MED_TYPES:
        raise errors.Refusal(errors.MED_TYPE_INVALID.format(value=med_type))
    if endtime is not None and endtime < begntime:
        raise errors.Refusal(errors.TIME_ORDER_INVALID)

    row = people.enrollment(people.by_psn_no(ctx, psn_no), insutype)
    problem = people.entitlement_problem(row, begntime.date())
    if problem is None and endtime is not None:
        problem = people.entitlement_problem(row, endtime.date())
    return {
        "trtinfo": [
            {
                "psn_no": psn_no,
                "trt_chk_type": TRT_CHK_TYPE_ENROLMENT,
                "fund_pay_type": policy.scheme_for(row).fund_pay_type,
                "trt_enjymnt_flag": ENJOYS if problem is None else DOES_NOT_ENJOY,
                "begndate": times.format_date(row.psn_insu_date),
                "enddate": (
                    None if row.paus_insu_date is None else times.format_date(row.paus_insu_date)
                ),
                "trt_chk_rslt": errors.BENEFIT_OK if problem is None else problem,
            }
        ]
    }


TRANSACTIONS = (Transaction("2001", "人员待遇享受检查", benefit_check),)
