"""The filter chain every RPC passes through before it reaches a service (Envoy-style).

Each filter sees the call and decides to pass it on or refuse it; the order is set once in the
composition root (``sidecar.app``).
"""
