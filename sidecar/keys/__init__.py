"""Keys and what is sealed with them: the HSM at start-up, the platform signer, sealed columns.

Public API (what the composition root and other packages may import):

- :mod:`.hsm_link` - ``open_hsm``, ``HsmLink``: the ``[hsm]`` token opened once, the active
  ``sign`` key's signer; one-line start-up errors.
- :mod:`.security_link` - ``build_sealing``: the ``[platform.security]`` scheme (our signer in
  the HSM, the platform's key on the host).
- :mod:`.fieldcrypt` - ``FieldSealer``, ``HostKeyWrapper``, ``SealError``, ``context``: sealed
  columns under KEK-wrapped data keys.
- :mod:`.certexpiry` - ``CertificateWatch``, ``from_pem_file``, ``signing_certificate``,
  ``CertificateUnreadable``: days until the TLS and signing certificates expire.

Not here: the SM4-GCM cipher (``sidecar.sm4gcm``) and the SM crypto core
(``sidecar.platform.security``, ``hsm``); the audit trail's HSM keys live with the trail
(``sidecar.audit.hsm_keys``). Nothing here imports gRPC.
"""

__all__ = ["certexpiry", "fieldcrypt", "hsm_link", "security_link"]
