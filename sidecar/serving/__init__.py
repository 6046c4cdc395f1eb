"""Serving gRPC: the grpc.aio server and the Kubernetes probes' health port.

Public API:

- :mod:`.server` - ``Server`` (built from ``[server]``), ``Registration``,
  ``serve_until_signalled``: the Unix socket (optionally behind the peer-credential front,
  ``sidecar.access.front``) and mutual-TLS TCP, health, reflection, drain on SIGTERM.
- :mod:`.probes` - ``Probes``, ``HsmLoginCheck``, ``TunnelCheck``: grpc.health.v1 alone on
  ``server.health_listen``, one service name per probe.

Only the composition root (``sidecar.app``) builds these.
"""

__all__ = ["probes", "server"]
