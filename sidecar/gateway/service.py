"""``InsuranceGateway``: the gRPC face of the five insurance functions.

Each method validates its request (collecting every bad field), takes the caller established by
the filter chain, and hands a validated domain request to the function's module. RPCs not built
yet raise ``NotImplementedError``, which the filter chain answers with UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any, NoReturn

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.gateway.enrollment import EnrollmentQueries
from sidecar.gateway.subjects import check_subject
from sidecar.interceptors.caller import caller_of
from sidecar.interceptors.chain import current_call
from sidecar.platform.client import Operator
from sidecar.server import Registration

Context = Any  # grpc.aio.ServicerContext; the generated base class accepts either flavour
SERVICE_NAME = gateway.DESCRIPTOR.services_by_name["InsuranceGateway"].full_name


class InsuranceGatewayService(gateway_grpc.InsuranceGatewayServicer):
    def __init__(self, *, enrollment: EnrollmentQueries) -> None:
        self._enrollment = enrollment

    def registration(self) -> Registration:
        return Registration(
            SERVICE_NAME,
            lambda server: gateway_grpc.add_InsuranceGatewayServicer_to_server(self, server),
        )

    async def GetEnrollment(  # noqa: N802 - gRPC method name
        self,
        request: gateway.GetEnrollmentRequest,
        context: Context,
    ) -> gateway.GetEnrollmentResponse:
        subject, violations = check_subject(request.subject, request.HasField("subject"))
        if subject is None:
            raise errors.invalid_request(violations)
        return await self._enrollment.get(subject, _operator(), context.time_remaining())

    # Built by the functions issue; until then the filter chain answers UNIMPLEMENTED.

    async def GetAccount(  # noqa: N802
        self, request: gateway.GetAccountRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def SubmitOffsiteRegistration(  # noqa: N802
        self, request: gateway.SubmitOffsiteRegistrationRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def ListOffsiteRegistrations(  # noqa: N802
        self, request: gateway.ListOffsiteRegistrationsRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def CancelOffsiteRegistration(  # noqa: N802
        self, request: gateway.CancelOffsiteRegistrationRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def SettleWithEVoucher(  # noqa: N802
        self, request: gateway.SettleWithEVoucherRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def GetSettlement(  # noqa: N802
        self, request: gateway.GetSettlementRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def CancelSettlement(  # noqa: N802
        self, request: gateway.CancelSettlementRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError

    async def CheckEligibility(  # noqa: N802
        self, request: gateway.CheckEligibilityRequest, context: Context
    ) -> NoReturn:
        raise NotImplementedError


def _operator() -> Operator:
    caller = caller_of(current_call())
    return Operator(id=caller.operator, name=caller.operator)
