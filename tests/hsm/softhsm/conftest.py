"""Fixtures: a patched SoftHSM (built by hsm/softhsm/build.sh) with a fresh token per run.

Nothing is mocked: every test talks to libsofthsm2.so through python-pkcs11.
If the library cannot be built the session fails (no skips).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import write_secret

REPO = Path(__file__).resolve().parents[3]
SOFTHSM_DIR = REPO / "hsm" / "softhsm"
TOKEN_ENV_SH = SOFTHSM_DIR / "token-env.sh"
TOKEN_LABEL = "yibao-test"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vendor_mech  # noqa: E402  (needs the path above)


@dataclass(frozen=True)
class SoftHSM:
    lib_path: Path
    util_path: Path
    conf_path: Path
    token_label: str
    user_pin_file: Path
    so_pin_file: Path

    @property
    def user_pin(self) -> str:
        return self.user_pin_file.read_text().strip()


@pytest.fixture(scope="session")
def softhsm(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> SoftHSM:
    """A per-run token directory, SOFTHSM2_CONF, and one initialised token."""
    run_dir = tmp_path_factory.mktemp("softhsm")
    out = subprocess.run(
        ["bash", str(TOKEN_ENV_SH), str(run_dir)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    conf = run_dir / "softhsm2.conf"
    assert f"SOFTHSM2_CONF={conf}" in out
    assert f"directories.tokendir = {run_dir / 'tokens'}" in conf.read_text()
    # The library reads SOFTHSM2_CONF at C_Initialize, i.e. when pkcs11.lib() first loads it.
    os.environ["SOFTHSM2_CONF"] = str(conf)

    user_pin_file = write_secret(run_dir / "user.pin", secrets.token_hex(8))
    so_pin_file = write_secret(run_dir / "so.pin", secrets.token_hex(8))
    util = softhsm_lib.parent.parent / "bin" / "softhsm2-util"
    # softhsm2-util is short-lived; PINs on its argv are acceptable in tests only.
    subprocess.run(
        [
            str(util),
            "--module",
            str(softhsm_lib),
            "--init-token",
            "--free",
            "--label",
            TOKEN_LABEL,
            "--so-pin",
            so_pin_file.read_text().strip(),
            "--pin",
            user_pin_file.read_text().strip(),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    return SoftHSM(softhsm_lib, util, conf, TOKEN_LABEL, user_pin_file, so_pin_file)


@pytest.fixture(scope="session")
def sm() -> vendor_mech.Registered:
    """The vendor profile's mechanisms/key types, registered with python-pkcs11."""
    return vendor_mech.register(vendor_mech.SANSEC_SW)


@pytest.fixture(scope="session")
def token(softhsm: SoftHSM, sm):
    import pkcs11

    lib = pkcs11.lib(str(softhsm.lib_path))
    return lib.get_token(token_label=softhsm.token_label)


@pytest.fixture
def session(token, softhsm: SoftHSM):
    with token.open(user_pin=softhsm.user_pin, rw=True) as s:
        yield s
