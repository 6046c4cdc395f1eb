"""The sidecar's link to the HSM: open the token, find the active signing key, close both.

Everything cryptographic lives in the ``hsm`` package; this module only turns the sidecar's
``[hsm]`` configuration into a logged-in token and an SM2 signer for the active ``sign`` key,
and turns what can go wrong there into one-line start-up errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from hsm.errors import HsmError
from hsm.keys import KeyStore
from hsm.sm2 import Sm2Signer
from hsm.token import HsmToken, TokenConfig
from sidecar.config import ConfigError, HsmConfig

log = logging.getLogger(__name__)


@dataclass
class HsmLink:
    token: HsmToken
    signer: Sm2Signer
    key_label: str
    fingerprint: str

    def close(self) -> None:
        self.token.close()


def open_hsm(config: HsmConfig, user_id: bytes = b"1234567812345678") -> HsmLink:
    """Log in and find the active signing key, or raise ConfigError with the HSM's one line.

    ``user_id`` is the SM2 user ID (GM/T 0009) of the signatures the platform will verify.
    """
    try:
        token = HsmToken.open(
            TokenConfig(
                module=str(config.module),
                token_label=config.token_label,
                profile=config.profile,
                user_pin_file=str(config.user_pin_file),
                pool_size=config.pool_size,
            )
        )
    except HsmError as exc:
        raise ConfigError(f"hsm: {exc}") from None
    try:
        key = KeyStore(token).active("sign")
        if key.public_key is None:
            raise ConfigError(f"hsm: key {key.label} has no public key object on the token")
        signer = Sm2Signer(token, key.label, key.public_key, user_id)
    except HsmError as exc:
        token.close()
        raise ConfigError(f"hsm: {exc}") from None
    except ConfigError:
        token.close()
        raise
    link = HsmLink(token, signer, key.label, key.public_key.fingerprint())
    log.info("hsm.ready", extra={"key": key.label, "fingerprint": link.fingerprint[:16]})
    return link
