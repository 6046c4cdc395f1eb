"""Message security for the platform: SM4 encryption and SM2 signatures around envelopes.

Two schemes are seen in the field (platform-protocol.md §5): the envelope signature of the
provincial gateways (``scheme_a``) and the mobile-payment body signature (``scheme_b``). Both
sign through the :class:`~sidecar.platform.security.signer.Sm2Signer` seam, so the private key
can live in the HSM; everything else (SM4, encodings, canonical strings) happens here on the host.

Like the rest of ``sidecar.platform`` nothing here knows about gRPC.
"""
