"""参保信息查询: transaction 1101 (person information) mapped to ``GetEnrollmentResponse``."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import PlatformConfig
from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.domain import codes
from sidecar.domain.subjects import Subject
from sidecar.gateway.platform_errors import translated
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.envelope import INF_TIME_FORMAT, beijing_now
from sidecar.platform.errors import PlatformUnreachable


class EnrollmentQueries:
    """Looks a person up on the platform (1101) and answers in the contract's terms."""

    def __init__(self, platform: PlatformClient, config: PlatformConfig) -> None:
        self._platform = platform
        self._infno = config.transactions.person_info
        # Refusal texts that mean "no such person" (the platform has no code for it, only words):
        # one list for every function that looks a person up, settlement included.
        self._not_found = config.person_not_found_messages

    async def get(
        self, subject: Subject, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> gateway.GetEnrollmentResponse:
        """The person's enrollment, asked for before the caller's ``deadline``."""
        with translated(self._not_found):
            return _response(await self.person_info(subject, operator, deadline))

    async def person_info(
        self, subject: Subject, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> Any:
        """The raw 1101 output for ``subject`` (other functions need its ``psn_no``).

        Platform failures surface as ``PlatformRefusal``/``PlatformUnreachable``; callers translate.
        """
        data = {
            "data": {
                "mdtrt_cert_type": "02",  # identity document (the e-voucher is "01")
                "mdtrt_cert_no": subject.certificate_number,
                "card_sn": "",
                "begntime": beijing_now().strftime(INF_TIME_FORMAT),
                "psn_cert_type": subject.certificate_type_code,
                "certno": subject.certificate_number,
                "psn_name": subject.name,
            }
        }
        return await self._platform.call(
            self._infno, data, operator, deadline=deadline, retry_safe=True
        )

    @property
    def not_found_markers(self) -> tuple[str, ...]:
        return self._not_found


def _response(output: Any) -> gateway.GetEnrollmentResponse:
    if not isinstance(output, Mapping) or not isinstance(output.get("baseinfo"), Mapping):
        raise PlatformUnreachable("1101 answer has no baseinfo", sent=True)
    base = output["baseinfo"]
    answer = gateway.GetEnrollmentResponse()
    person = answer.person
    person.certificate_type_code = text_of(base, "psn_cert_type")
    person.certificate_type = codes.certificate_type(person.certificate_type_code)
    person.certificate_number = text_of(base, "certno")
    person.name = text_of(base, "psn_name")
    person.gender_code = text_of(base, "gend")
    person.ethnicity_code = text_of(base, "naty")
    person.birth_date = _date(base, "brdy")
    person.age = _int(base, "age")
    for item in _list(output, "insuinfo"):
        enrollment = answer.enrollments.add()
        enrollment.insurance_type_code = text_of(item, "insutype")
        enrollment.insurance_type = codes.insurance_type(enrollment.insurance_type_code)
        enrollment.status_code = text_of(item, "psn_insu_stas")
        enrollment.status = codes.enrollment_status(enrollment.status_code)
        enrollment.enrollment_date = _date(item, "psn_insu_date")
        enrollment.suspension_date = _date(item, "paus_insu_date")
        enrollment.employer_name = text_of(item, "emp_name")
        enrollment.insured_area_division_code = text_of(item, "insuplc_admdvs")
        enrollment.personnel_type_code = text_of(item, "psn_type")
        enrollment.civil_servant = text_of(item, "cvlserv_flag") == "1"
        base_amount = item.get("clct_base") if isinstance(item, Mapping) else None
        if base_amount not in (None, ""):
            enrollment.contribution_base_fen = yuan_to_fen(base_amount)
    for item in _list(output, "idetinfo"):
        identity = answer.identities.add()
        identity.identity_type_code = text_of(item, "psn_idet_type")
        identity.level_code = text_of(item, "psn_type_lv")
        identity.begin_date = _date(item, "begntime")
        identity.end_date = _date(item, "endtime")
    return answer


def yuan_to_fen(value: object) -> int:
    """An amount in yuan as the platform writes it (a JSON number, 16,2) to exact fen."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise PlatformUnreachable("an amount in the answer is not a number", sent=True) from None
    fen = amount * 100
    if not fen.is_finite() or fen != fen.to_integral_value():
        raise PlatformUnreachable("an amount in the answer has more than 2 decimals", sent=True)
    return int(fen)


def text_of(item: Any, key: str) -> str:
    """``item[key]`` as text; empty when the answer lacks it (the platform omits empty fields)."""
    value = item.get(key) if isinstance(item, Mapping) else None
    return "" if value is None else str(value)


def _int(item: Any, key: str) -> int:
    text = text_of(item, key)
    try:
        return int(Decimal(text)) if text else 0
    except InvalidOperation:
        return 0


def _date(item: Any, key: str) -> str:
    """``yyyy-MM-dd`` or ``yyyy-MM-dd HH:mm:ss`` from the platform -> ``YYYY-MM-DD``."""
    return text_of(item, key)[:10]


def _list(output: Mapping[str, Any], key: str) -> list[Any]:
    value = output.get(key)
    return value if isinstance(value, list) else []
