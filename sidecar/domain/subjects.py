"""Validation of the data subject every RPC names, collecting every bad field at once."""

from __future__ import annotations

from dataclasses import dataclass

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar.domain import validation
from sidecar.domain.codes import CERTIFICATE_TYPE_CODES
from sidecar.errors import FieldViolation

CERTIFICATE_NUMBER_MAX = 50


@dataclass(frozen=True)
class Subject:
    """A validated data subject, in the platform's terms."""

    certificate_type_code: str
    certificate_number: str
    name: str

    def __repr__(self) -> str:  # never print personal data by accident
        return f"Subject(certificate_type_code={self.certificate_type_code!r}, ...)"


def check_subject(
    subject: common.DataSubject, has_subject: bool, path: str = "subject"
) -> tuple[Subject | None, list[FieldViolation]]:
    """The validated subject, or the list of violations (field paths under ``path``)."""
    if not has_subject:
        return None, [FieldViolation(path, "is required")]
    violations: list[FieldViolation] = []
    code = CERTIFICATE_TYPE_CODES.get(subject.certificate_type)
    if code is None:
        violations.append(
            FieldViolation(f"{path}.certificate_type", "must be a known certificate type")
        )
    number = subject.certificate_number
    problem: str | None
    if subject.certificate_type == common.CERTIFICATE_TYPE_RESIDENT_ID_CARD:
        problem = validation.check_resident_id(number)
    elif not number:
        problem = "must not be empty"
    elif len(number) > CERTIFICATE_NUMBER_MAX:
        problem = f"must be at most {CERTIFICATE_NUMBER_MAX} characters"
    elif not number.isascii() or not number.isalnum():
        problem = "must be letters and digits only"
    else:
        problem = None
    if problem:
        violations.append(FieldViolation(f"{path}.certificate_number", problem))
    name_problem = validation.check_person_name(subject.name)
    if name_problem:
        violations.append(FieldViolation(f"{path}.name", name_problem))
    if violations or code is None:
        return None, violations
    return Subject(code, number, subject.name), []
