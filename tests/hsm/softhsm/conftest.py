"""Fixtures: a patched SoftHSM (built by hsm/softhsm/build.sh) with a fresh token per run (made by
``softhsm_tokens``, the one way test tokens are made).

Nothing is mocked: every test talks to libsofthsm2.so through python-pkcs11.
If the library cannot be built the session fails (no skips).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hsm_fixtures import SoftHsmTokens

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
def softhsm(softhsm_lib: Path, softhsm_tokens: SoftHsmTokens) -> SoftHSM:
    """One initialised token in the process's token directory (tests/hsm_fixtures.py)."""
    made = softhsm_tokens.make(TOKEN_LABEL)
    assert f"directories.tokendir = {softhsm_tokens.run_dir / 'tokens'}" in made.conf.read_text()
    util = softhsm_lib.parent.parent / "bin" / "softhsm2-util"
    return SoftHSM(softhsm_lib, util, made.conf, TOKEN_LABEL, made.user_pin_file, made.so_pin_file)


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
