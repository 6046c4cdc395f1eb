"""Fixtures for the audit trail: a real SoftHSM token with its keys, a trail on the ``store``.

The token lives in this process (the trail signs, wraps and pseudonymises through the pool).
SoftHSM reads ``SOFTHSM2_CONF`` once per process, so if another fixture already chose a token
directory, the audit token is made in that same directory.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hsm.sm2 import Sm2PublicKey
from hsm.token import HsmToken, TokenConfig
from sidecar.audit.hsm_keys import AuditKeys, open_audit_keys
from sidecar.audit.link import build_trail
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.trail import AuditTrail
from sidecar.config import AuditConfig
from sidecar.store import Store
from tests.conftest import TOKEN_ENV_SH, write_secret

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

    def cli_args(self) -> list[str]:
        return [
            "--module", str(self.lib), "--token-label", LABEL,
            "--user-pin-file", str(self.user_pin_file),
        ]  # fmt: skip


@pytest.fixture(scope="session")
def audit_hsm(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditHsm]:
    run_dir = tmp_path_factory.mktemp("audit-hsm")
    conf_env = os.environ.get("SOFTHSM2_CONF")
    if conf_env:
        conf = Path(conf_env)
    else:
        subprocess.run(["bash", str(TOKEN_ENV_SH), str(run_dir)], check=True, capture_output=True)
        conf = run_dir / "softhsm2.conf"
        os.environ["SOFTHSM2_CONF"] = str(conf)
    user_pin = write_secret(run_dir / "user.pin", "u-" + secrets.token_hex(8))
    so_pin = write_secret(run_dir / "so.pin", "s-" + secrets.token_hex(8))
    common = [
        "--module",
        str(softhsm_lib),
        "--token-label",
        LABEL,
        "--user-pin-file",
        str(user_pin),
    ]
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    steps = [["init-token", "--so-pin-file", str(so_pin)]] + [
        ["keygen", "--purpose", purpose] for purpose in ("kek", "audit", "pseudonym")
    ]
    for step in steps:
        done = subprocess.run(
            [sys.executable, "-m", "hsm.cli", *step, *common],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    token = HsmToken.open(
        TokenConfig(module=str(softhsm_lib), token_label=LABEL, user_pin_file=str(user_pin),
                    pool_size=2)
    )  # fmt: skip
    try:
        keys = open_audit_keys(token)
        public_key = keys.audit_key.public_key
        assert public_key is not None
        pem = run_dir / "audit.pem"
        pem.write_text(public_key.pem())
        yield AuditHsm(softhsm_lib, conf, user_pin, token, keys, public_key, pem)
    finally:
        token.close()


def audit_config(tmp_path: Path, **changes: object) -> AuditConfig:
    values: dict[str, object] = {
        "instance": "test",
        "spool_dir": str(tmp_path / "spool"),
        "replay_interval_seconds": 3600,  # tests replay explicitly
        "checkpoint_interval_seconds": 3600,
    }
    values.update(changes)
    return AuditConfig.model_validate(values)


@pytest.fixture
async def migrated(store: Store) -> Store:
    await store.migrate(MIGRATIONS)
    return store


@pytest.fixture
async def trail(migrated: Store, audit_hsm: AuditHsm, tmp_path: Path) -> AsyncIterator[AuditTrail]:
    made = build_trail(audit_config(tmp_path), migrated, audit_hsm.keys)
    await made.start()
    yield made
    await made.close()
