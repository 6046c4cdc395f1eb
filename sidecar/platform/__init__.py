"""The national platform's protocol: envelopes, message IDs, the mTLS tunnel, the client.

Nothing in this package knows about gRPC; the gateway services translate between the two.
"""
