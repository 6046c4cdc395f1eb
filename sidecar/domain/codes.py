"""Translations between the contract's enums and the platform's dictionary codes.

Answers carry both the enum and the raw code, so a code missing here is not lost: it maps to the
enum's UNSPECIFIED value and the raw code still reaches the caller.
"""

from __future__ import annotations

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common

CERTIFICATE_TYPE_CODES: dict[int, str] = {
    common.CERTIFICATE_TYPE_RESIDENT_ID_CARD: "01",
    common.CERTIFICATE_TYPE_HONG_KONG_TRAVEL_PERMIT: "04",
    common.CERTIFICATE_TYPE_MACAO_TRAVEL_PERMIT: "05",
    common.CERTIFICATE_TYPE_TAIWAN_TRAVEL_PERMIT: "06",
    common.CERTIFICATE_TYPE_FOREIGN_PERMANENT_RESIDENCE_ID: "07",
    common.CERTIFICATE_TYPE_FOREIGN_PASSPORT: "08",
    # Published dictionaries disagree (17 in most, 16 in some); regional maps come with issue 4.
    common.CERTIFICATE_TYPE_HK_MACAO_TAIWAN_RESIDENCE_PERMIT: "17",
    common.CERTIFICATE_TYPE_SOCIAL_SECURITY_CARD: "90",
    common.CERTIFICATE_TYPE_OTHER: "99",
}

INSURANCE_TYPE_CODES: dict[int, str] = {
    common.INSURANCE_TYPE_EMPLOYEE_BASIC: "310",
    common.INSURANCE_TYPE_CIVIL_SERVANT_SUBSIDY: "320",
    common.INSURANCE_TYPE_LARGE_EXPENSE_SUBSIDY: "330",
    common.INSURANCE_TYPE_RETIREE_SPECIAL: "340",
    common.INSURANCE_TYPE_RESIDENT_BASIC: "390",
    common.INSURANCE_TYPE_RESIDENT_SERIOUS_ILLNESS: "392",
    common.INSURANCE_TYPE_MATERNITY: "510",
}

ENROLLMENT_STATUS_CODES: dict[int, str] = {
    common.ENROLLMENT_STATUS_ENROLLED: "1",
    common.ENROLLMENT_STATUS_SUSPENDED: "2",
    common.ENROLLMENT_STATUS_TERMINATED: "4",
}


def _reverse(table: dict[int, str]) -> dict[str, int]:
    return {code: value for value, code in table.items()}


_CERTIFICATE_TYPES = _reverse(CERTIFICATE_TYPE_CODES)
_INSURANCE_TYPES = _reverse(INSURANCE_TYPE_CODES)
_ENROLLMENT_STATUSES = _reverse(ENROLLMENT_STATUS_CODES)


def certificate_type(code: str) -> common.CertificateType.ValueType:
    return common.CertificateType.ValueType(_CERTIFICATE_TYPES.get(code, 0))


def insurance_type(code: str) -> common.InsuranceType.ValueType:
    return common.InsuranceType.ValueType(_INSURANCE_TYPES.get(code, 0))


def enrollment_status(code: str) -> common.EnrollmentStatus.ValueType:
    return common.EnrollmentStatus.ValueType(_ENROLLMENT_STATUSES.get(code, 0))
