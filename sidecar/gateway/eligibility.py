"""待遇资格查询: transaction 2001 (benefit check) mapped to ``CheckEligibilityResponse``.

The platform identifies people by ``psn_no``, which only 1101 reveals, so the check is 1101 then
2001. Not being eligible is a business answer (``eligible=false`` with the platform's reason),
not an RPC error; refusals of the request itself (unknown person, bad medical type) are errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import InstitutionConfig, TransactionCodes
from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.domain.subjects import Subject
from sidecar.gateway.enrollment import EnrollmentQueries, text_of
from sidecar.gateway.platform_errors import translated
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.errors import PlatformUnreachable

ENJOYS = "1"


@dataclass(frozen=True)
class EligibilityQuestion:
    """A validated CheckEligibility request in the platform's terms."""

    subject: Subject
    insurance_type_code: str
    medical_type_code: str
    begin_date: str
    end_date: str
    institution_code: str
    diagnosis_code: str = ""
    diagnosis_name: str = ""


class EligibilityChecks:
    def __init__(
        self,
        people: EnrollmentQueries,
        platform: PlatformClient,
        transactions: TransactionCodes,
        institution: InstitutionConfig,
    ) -> None:
        self._people = people
        self._platform = platform
        self._infno = transactions.benefit_check
        self._institution = institution.code

    async def check(
        self, question: EligibilityQuestion, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> gateway.CheckEligibilityResponse:
        with translated(self._people.not_found_markers):
            person = await self._people.person_info(question.subject, operator, deadline)
            psn_no = text_of(
                person.get("baseinfo") if isinstance(person, Mapping) else None, "psn_no"
            )
            if not psn_no:
                raise PlatformUnreachable("1101 answer has no psn_no", sent=True)
        data = {
            "data": {
                "psn_no": psn_no,
                "insutype": question.insurance_type_code,
                "fixmedins_code": question.institution_code or self._institution,
                "med_type": question.medical_type_code,
                "begntime": f"{question.begin_date} 00:00:00",
                "endtime": f"{question.end_date} 23:59:59" if question.end_date else "",
                "dise_codg": question.diagnosis_code,
                "dise_name": question.diagnosis_name,
            }
        }
        with translated():
            output = await self._platform.call(
                self._infno, data, operator, deadline=deadline, retry_safe=True
            )
            return _response(output)


def _response(output: Any) -> gateway.CheckEligibilityResponse:
    rows = output.get("trtinfo") if isinstance(output, Mapping) else None
    if not isinstance(rows, list) or not rows:
        raise PlatformUnreachable("2001 answer has no trtinfo", sent=True)
    answer = gateway.CheckEligibilityResponse()
    for row in rows:
        check = answer.checks.add()
        check.check_type_code = text_of(row, "trt_chk_type")
        check.fund_payment_type_code = text_of(row, "fund_pay_type")
        check.eligible = text_of(row, "trt_enjymnt_flag") == ENJOYS
        check.begin_date = text_of(row, "begndate")[:10]
        check.end_date = text_of(row, "enddate")[:10]
        check.result_text = text_of(row, "trt_chk_rslt")
    refused = [check for check in answer.checks if not check.eligible]
    answer.eligible = not refused
    answer.refusal_reason = refused[0].result_text if refused else ""
    answer.benefit_begin_date = answer.checks[0].begin_date
    answer.benefit_end_date = answer.checks[0].end_date
    return answer
