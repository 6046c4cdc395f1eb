"""The audit trail's HSM token: sign, kek, audit and pseudonym keys, usable in this process.

Made by ``softhsm_tokens`` (tests/hsm_fixtures.py) like every test token: in this process, in the
process's one token directory, so subprocesses given :meth:`AuditHsm.env` see it too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hsm.keys import KeyStore
from hsm.sm.sm2 import Sm2PublicKey
from hsm.token import HsmToken
from sidecar.audit.hsm_keys import AuditKeys, open_audit_keys
from tests.hsm_fixtures import SoftHsmTokens

LABEL = "yibao-audit"


@dataclass(frozen=True)
class AuditHsm:
    lib: Path
    conf: Path
    user_pin_file: Path
    token: HsmToken
    keys: AuditKeys
    public_key: Sm2PublicKey
    public_key_file: Path
    label: str = LABEL

    def env(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def hsm_section(self) -> dict[str, str]:
        return {
            "module": str(self.lib),
            "token_label": self.label,
            "user_pin_file": str(self.user_pin_file),
        }


@pytest.fixture(scope="session")
def audit_hsm(softhsm_tokens: SoftHsmTokens) -> Iterator[AuditHsm]:
    made = softhsm_tokens.make(LABEL)
    token = made.open()
    try:
        store = KeyStore(token)
        for purpose in ("sign", "kek", "audit", "pseudonym"):
            store.generate(purpose)  # type: ignore[arg-type]
        keys = open_audit_keys(token)
        public_key = keys.audit_key.public_key
        assert public_key is not None
        pem = made.user_pin_file.parent / "audit.pem"
        pem.write_text(public_key.pem())
        yield AuditHsm(made.lib, made.conf, made.user_pin_file, token, keys, public_key, pem)
    finally:
        token.close()
