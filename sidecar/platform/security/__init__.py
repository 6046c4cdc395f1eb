"""Message security for the platform: SM4 encryption and SM2 signatures around envelopes.

Two schemes are seen in the field (platform-protocol.md §5): the envelope signature of the
provincial gateways (``scheme_a``) and the mobile-payment body signature (``scheme_b``). Both
sign through the :class:`~sidecar.platform.security.signer.Sm2Signer` seam, so the private key
can live in the HSM. SM2 verification, SM3, SM4 and the signature codec are the SM crypto core's
(:mod:`hsm.sm`); what is here is the schemes themselves: canonical strings, JSON text, sealing.

Like the rest of ``sidecar.platform`` nothing here knows about gRPC.
"""
