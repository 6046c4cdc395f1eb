"""``InsuranceGateway``: the gRPC face of the five insurance functions.

Each method validates its request (collecting every bad field), takes the caller and deadline
the filter chain established (its ``CallContext``, handed in where gRPC's servicers take gRPC's
context), and hands a validated domain request to the function's module.
"""

from __future__ import annotations

import re
from typing import Any

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import OffsiteConfig
from sidecar.domain import validation
from sidecar.domain.codes import INSURANCE_TYPE_CODES
from sidecar.domain.subjects import Subject, check_subject
from sidecar.errors import FieldViolation
from sidecar.gateway import offsite_requests
from sidecar.gateway.account import AccountQueries, account_query
from sidecar.gateway.cache import ReadCache
from sidecar.gateway.eligibility import EligibilityChecks, EligibilityQuestion
from sidecar.gateway.enrollment import EnrollmentQueries
from sidecar.gateway.paging import PageTokens
from sidecar.gateway.registrations import OffsiteRegistrations
from sidecar.gateway.settlement import SettlementFunctions
from sidecar.interceptors.context import CallContext
from sidecar.platform.client import Operator
from sidecar.platform.envelope import beijing_now
from sidecar.serving.server import Registration

SERVICE_NAME = gateway.DESCRIPTOR.services_by_name["InsuranceGateway"].full_name


# The chain calls our methods with the CallContext where the generated servicer's signatures say
# gRPC's context: typed as Any so that those signatures are not imposed; its defaults still answer
# UNIMPLEMENTED for an RPC of the contract not built yet.
_Servicer: Any = gateway_grpc.InsuranceGatewayServicer


class InsuranceGatewayService(_Servicer):  # type: ignore[misc]
    """The ``InsuranceGateway`` methods, called by the filter chain with the request and the
    call's ``CallContext``."""

    def __init__(
        self,
        *,
        enrollment: EnrollmentQueries,
        eligibility: EligibilityChecks,
        account: AccountQueries,
        offsite: OffsiteRegistrations,
        tokens: PageTokens,
        cache: ReadCache,
        settlement: SettlementFunctions,
        offsite_policy: OffsiteConfig,
    ) -> None:
        self._enrollment = enrollment
        self._eligibility = eligibility
        self._account = account
        self._offsite = offsite
        self._tokens = tokens
        self._cache = cache  # read-only answers; mutating functions invalidate their subject
        self._max_backdate_days = offsite_policy.max_backdate_days
        self._settlement = settlement

    def registration(self) -> Registration:
        return Registration(
            SERVICE_NAME,
            lambda server: gateway_grpc.add_InsuranceGatewayServicer_to_server(self, server),
        )

    async def GetEnrollment(  # noqa: N802 - gRPC method name
        self,
        request: gateway.GetEnrollmentRequest,
        call: CallContext,
    ) -> gateway.GetEnrollmentResponse:
        subject = call.subject or validated_subject(request)
        return await self._cache.read(
            "GetEnrollment",
            call.identified.tenant,
            subject,
            request,
            lambda: self._enrollment.get(subject, _operator(call), call.deadline),
        )

    async def GetAccount(  # noqa: N802
        self, request: gateway.GetAccountRequest, call: CallContext
    ) -> gateway.GetAccountResponse:
        tenant = call.identified.tenant
        query = account_query(
            request, tokens=self._tokens, tenant=tenant, today=beijing_now().date()
        )
        return await self._cache.read(
            "GetAccount",
            tenant,
            query.subject,
            request,
            lambda: self._account.get(query, _operator(call), call.deadline),
        )

    async def SubmitOffsiteRegistration(  # noqa: N802
        self, request: gateway.SubmitOffsiteRegistrationRequest, call: CallContext
    ) -> gateway.SubmitOffsiteRegistrationResponse:
        submission = offsite_requests.submission(
            request,
            tenant=call.identified.tenant,
            today=beijing_now().date(),
            max_backdate_days=self._max_backdate_days,
        )
        return await self._offsite.submit(submission, _operator(call), call.deadline)

    async def ListOffsiteRegistrations(  # noqa: N802
        self, request: gateway.ListOffsiteRegistrationsRequest, call: CallContext
    ) -> gateway.ListOffsiteRegistrationsResponse:
        tenant = call.identified.tenant
        listing = offsite_requests.listing(request, tokens=self._tokens, tenant=tenant)
        return await self._offsite.list_registrations(
            listing, tenant, _operator(call), call.deadline
        )

    async def CancelOffsiteRegistration(  # noqa: N802
        self, request: gateway.CancelOffsiteRegistrationRequest, call: CallContext
    ) -> gateway.CancelOffsiteRegistrationResponse:
        cancellation = offsite_requests.cancellation(request, tenant=call.identified.tenant)
        return await self._offsite.cancel(cancellation, _operator(call), call.deadline)

    async def SettleWithEVoucher(  # noqa: N802
        self, request: gateway.SettleWithEVoucherRequest, call: CallContext
    ) -> gateway.SettleWithEVoucherResponse:
        return await self._settlement.settle(
            request,
            call.identified.tenant,
            _operator(call),
            call.deadline,
            pseudonym=call.subject_pseudonym,  # the consent gate's: one HSM call, not two
        )

    async def GetSettlement(  # noqa: N802
        self, request: gateway.GetSettlementRequest, call: CallContext
    ) -> gateway.GetSettlementResponse:
        return await self._settlement.get(
            request, call.identified.tenant, pseudonym=call.subject_pseudonym
        )

    async def CancelSettlement(  # noqa: N802
        self, request: gateway.CancelSettlementRequest, call: CallContext
    ) -> gateway.CancelSettlementResponse:
        return await self._settlement.cancel(
            request,
            call.identified.tenant,
            _operator(call),
            call.deadline,
            pseudonym=call.subject_pseudonym,
        )

    async def CheckEligibility(  # noqa: N802
        self, request: gateway.CheckEligibilityRequest, call: CallContext
    ) -> gateway.CheckEligibilityResponse:
        question = eligibility_question(request, call.subject)
        return await self._cache.read(
            "CheckEligibility",
            call.identified.tenant,
            question.subject,
            request,
            lambda: self._eligibility.check(question, _operator(call), call.deadline),
        )


def validated_subject(request: gateway.GetEnrollmentRequest) -> Subject:
    """The request's subject, validated, or INVALID_ARGUMENT naming every bad field."""
    subject, violations = check_subject(request.subject, request.HasField("subject"))
    if subject is None:
        raise errors.invalid_request(violations)
    return subject


def eligibility_question(
    request: gateway.CheckEligibilityRequest, checked: Subject | None = None
) -> EligibilityQuestion:
    """The validated question, or INVALID_ARGUMENT naming every bad field.

    ``checked`` is the request's subject as the consent gate already validated it (the
    ``CallContext``'s); without it the subject is validated here.
    """
    subject: Subject | None = checked
    violations: list[FieldViolation] = []
    if subject is None:
        subject, violations = check_subject(request.subject, request.HasField("subject"))
    insurance = INSURANCE_TYPE_CODES.get(request.insurance_type)
    if insurance is None:
        violations.append(FieldViolation("insurance_type", "must be a known insurance type"))
    if not re.fullmatch(r"[0-9A-Za-z]{1,6}", request.medical_type_code):
        violations.append(FieldViolation("medical_type_code", "must be 1-6 letters or digits"))
    begin_problem = validation.check_iso_date(request.begin_date)
    if begin_problem:
        violations.append(FieldViolation("begin_date", begin_problem))
    if request.end_date:
        end_problem = validation.check_iso_date(request.end_date)
        if end_problem:
            violations.append(FieldViolation("end_date", end_problem))
        elif not begin_problem and request.end_date < request.begin_date:
            violations.append(FieldViolation("end_date", "must not be before begin_date"))
    if request.institution_code and not re.fullmatch(r"[0-9A-Za-z]{12}", request.institution_code):
        violations.append(FieldViolation("institution_code", "must be 12 letters or digits"))
    if len(request.diagnosis.code) > 30 or len(request.diagnosis.name) > 300:
        violations.append(
            FieldViolation("diagnosis", "code at most 30, name at most 300 characters")
        )
    if violations or subject is None or insurance is None:
        raise errors.invalid_request(violations)
    return EligibilityQuestion(
        subject=subject,
        insurance_type_code=insurance,
        medical_type_code=request.medical_type_code,
        begin_date=request.begin_date,
        end_date=request.end_date,
        institution_code=request.institution_code,
        diagnosis_code=request.diagnosis.code,
        diagnosis_name=request.diagnosis.name,
    )


def _operator(call: CallContext) -> Operator:
    """The platform's operator (opter, opter_name) for the caller's opaque operator handle."""
    caller = call.identified
    return Operator(id=caller.operator, name=caller.operator)
