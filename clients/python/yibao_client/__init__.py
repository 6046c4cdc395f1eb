"""yibao-sidecar-client: the typed Python client of the yibao-sidecar gRPC API (docs/api.md).

from yibao_client import connect_unix
from yibao_client.v1 import common, gateway
"""

from yibao_client.channels import (
    DEFAULT_SOCKET,
    connect_tls,
    connect_tls_async,
    connect_unix,
    connect_unix_async,
)
from yibao_client.client import AsyncClient, CallerIdentity, CallOptions, Client
from yibao_client.errors import (
    Aborted,
    AlreadyExists,
    ConsentRequired,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PlatformRefused,
    ResourceExhausted,
    SidecarError,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from yibao_client.retry import NO_RETRIES, RetryPolicy

__all__ = [
    "DEFAULT_SOCKET",
    "NO_RETRIES",
    "Aborted",
    "AlreadyExists",
    "AsyncClient",
    "CallOptions",
    "CallerIdentity",
    "Client",
    "ConsentRequired",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PlatformRefused",
    "ResourceExhausted",
    "RetryPolicy",
    "SidecarError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "connect_tls",
    "connect_tls_async",
    "connect_unix",
    "connect_unix_async",
]
