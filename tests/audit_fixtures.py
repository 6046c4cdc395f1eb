"""The audit trail's HSM token: sign, kek, audit and pseudonym keys, usable in this process.

SoftHSM reads ``SOFTHSM2_CONF`` once per process and does not see tokens that other processes
create later, so the token is initialised *in this process* (``hsm.inittoken``, on the module's
free slot) in whatever token directory the process already uses, or in a fresh one. Subprocesses
given the same ``SOFTHSM2_CONF`` see it too (the token is on disk).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hsm.inittoken import init_token
from hsm.keys import KeyStore
from hsm.pin import Pin
from hsm.sm.sm2 import Sm2PublicKey
from hsm.token import HsmToken, TokenConfig
from sidecar.audit.hsm_keys import AuditKeys, open_audit_keys

LABEL = "yibao-audit"
TOKEN_ENV_SH = Path(__file__).resolve().parent.parent / "hsm" / "softhsm" / "token-env.sh"


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


def _secret(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return path


@pytest.fixture(scope="session")
def audit_hsm(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditHsm]:
    run_dir = tmp_path_factory.mktemp("audit-hsm")
    if not os.environ.get("SOFTHSM2_CONF"):
        subprocess.run(["bash", str(TOKEN_ENV_SH), str(run_dir)], check=True, capture_output=True)
        os.environ["SOFTHSM2_CONF"] = str(run_dir / "softhsm2.conf")
    conf = Path(os.environ["SOFTHSM2_CONF"])
    user_pin = "u-" + secrets.token_hex(8)
    user_pin_file = _secret(run_dir / "user.pin", user_pin)
    init_token(
        str(softhsm_lib),
        LABEL,
        Pin("s-" + secrets.token_hex(8), "test SO PIN"),
        Pin(user_pin, "test user PIN"),
    )
    token = HsmToken.open(
        TokenConfig(
            module=str(softhsm_lib),
            token_label=LABEL,
            user_pin_file=str(user_pin_file),
            pool_size=2,
        )
    )
    try:
        store = KeyStore(token)
        for purpose in ("sign", "kek", "audit", "pseudonym"):
            store.generate(purpose)  # type: ignore[arg-type]
        keys = open_audit_keys(token)
        public_key = keys.audit_key.public_key
        assert public_key is not None
        pem = run_dir / "audit.pem"
        pem.write_text(public_key.pem())
        yield AuditHsm(softhsm_lib, conf, user_pin_file, token, keys, public_key, pem)
    finally:
        token.close()
