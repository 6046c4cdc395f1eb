"""``ConsentService``: the consent ledger's gRPC face (built by the compliance issue).

Until the ledger exists every RPC raises ``NotImplementedError``: the filter chain answers
UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any, NoReturn

from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar.server import Registration

SERVICE_NAME = consent.DESCRIPTOR.services_by_name["ConsentService"].full_name


class ConsentService(consent_grpc.ConsentServiceServicer):
    def registration(self) -> Registration:
        return Registration(
            SERVICE_NAME,
            lambda server: consent_grpc.add_ConsentServiceServicer_to_server(self, server),
        )

    async def GrantConsent(self, request: consent.GrantConsentRequest, context: Any) -> NoReturn:  # noqa: N802
        raise NotImplementedError

    async def RevokeConsent(self, request: consent.RevokeConsentRequest, context: Any) -> NoReturn:  # noqa: N802
        raise NotImplementedError

    async def ListConsents(self, request: consent.ListConsentsRequest, context: Any) -> NoReturn:  # noqa: N802
        raise NotImplementedError
