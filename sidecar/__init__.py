"""yibao-sidecar: a gRPC sidecar between an enterprise IM service and the national
medical-insurance platform. See docs/architecture.md for the map of this package."""

__version__ = "0.1.0"
