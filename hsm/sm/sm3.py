"""SM3 (GB/T 32905) and HMAC-SM3 on the host, through :mod:`hsm.sm.backend`.

Bound, not wrapped: SM3 of a short message costs about 2 µs, so a second Python call per hash
would show (the audit trail and the pseudonyms hash on every request).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from hsm.sm import backend

DIGEST_BYTES = 32

#: ``sm3(data)``: the 32-byte SM3 digest of ``data``.
sm3: Final[Callable[[bytes], bytes]] = backend.sm3_digest
#: ``hmac_sm3(key, data)``: HMAC-SM3 (RFC 2104 with SM3), 32 bytes.
hmac_sm3: Final[Callable[[bytes, bytes], bytes]] = backend.hmac_sm3
