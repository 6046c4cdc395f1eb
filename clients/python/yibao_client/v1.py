"""The contract's messages, generated from proto/ (``yibao.gateway.v1``): build requests with them.

from yibao_client.v1 import common, consent, gateway
subject = common.DataSubject(certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD, ...)
request = gateway.GetEnrollmentRequest(subject=subject)
"""

from yibao_client._proto.yibao.gateway.v1 import common_pb2 as common
from yibao_client._proto.yibao.gateway.v1 import consent_pb2 as consent
from yibao_client._proto.yibao.gateway.v1 import gateway_pb2 as gateway

__all__ = ["common", "consent", "gateway"]
