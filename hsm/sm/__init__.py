"""The SM crypto core: SM2, SM3 and SM4 on the host, for ``hsm`` and the protocol layer.

One implementation of each, one place choosing the native code:

* :mod:`hsm.sm.sm2`        the curve, :class:`Sm2PublicKey`, ``compute_z``/``compute_e``
  (keyword-only), private-scalar and user-ID checks, :class:`HostSm2Verifier`
* :mod:`hsm.sm.signature`  the signature codec: raw r || s, strict DER, Base64; :class:`Signature`
* :mod:`hsm.sm.sm3`        SM3 and HMAC-SM3
* :mod:`hsm.sm.sm4`        SM4-ECB and SM4-CBC, PKCS#7 or unpadded
* :mod:`hsm.sm.gcm`        SM4-GCM with a random nonce, the AEAD for data at rest
* :mod:`hsm.sm.backend`    OpenSSL via pyca for SM3/SM4; tongsuopy (or gmssl) for SM2
* :mod:`hsm.sm.errors`     one error family, naming the field at fault

Private SM2 keys are not here: they live in the HSM (``hsm.sm2`` signs there). The test
double that holds one in memory is ``tests/software_sm2.py``. The platform simulator keeps its
own independent crypto on purpose, so that the two sides of a test cannot share a mistake.
"""

from __future__ import annotations

from hsm.sm.errors import DecryptionFailed, KeyMaterialInvalid, MalformedEncoding, SmError
from hsm.sm.signature import Signature, SignatureEncoding
from hsm.sm.sm2 import DEFAULT_USER_ID, HostSm2Verifier, Sm2PublicKey, compute_e, compute_z
from hsm.sm.sm3 import hmac_sm3, sm3

__all__ = [
    "DEFAULT_USER_ID",
    "DecryptionFailed",
    "HostSm2Verifier",
    "KeyMaterialInvalid",
    "MalformedEncoding",
    "Signature",
    "SignatureEncoding",
    "Sm2PublicKey",
    "SmError",
    "compute_e",
    "compute_z",
    "hmac_sm3",
    "sm3",
]
