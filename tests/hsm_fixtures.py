"""Fixtures for the ``hsm`` package's tests (tests/hsm/, and the sidecar tests that need its
token): the patched SoftHSM, never a mock. A plugin of tests/conftest.py, so one definition
serves every directory.

The recipe is the one of ``hsm/softhsm``: ``build.sh`` builds (or reuses) the
patched libsofthsm2.so and prints its path last; ``token-env.sh DIR`` writes a
per-run SoftHSM configuration, shared with the audit trail's token (tests/audit_fixtures.py).
If the library cannot be built the session fails; nothing is skipped.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, TOKEN_ENV_SH, write_secret

CLI = [sys.executable, "-m", "hsm.cli"]
TOKEN_LABEL = "yibao-pkg"


@dataclass(frozen=True)
class Env:
    lib: Path
    conf: Path
    run_dir: Path
    user_pin_file: Path
    so_pin_file: Path

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf), **extra}

    def cli(
        self,
        *args: str,
        label: str = TOKEN_LABEL,
        module: Path | None = None,
        pin_file: Path | None = None,
        env: dict[str, str] | None = None,
        common: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        argv = [*CLI, *args]
        if common:
            argv += [
                "--module",
                str(module or self.lib),
                "--token-label",
                label,
                "--user-pin-file",
                str(pin_file or self.user_pin_file),
            ]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=120,
            env=env or self.env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,  # never a terminal: PIN prompts must fail cleanly
        )


def find_one(ws: object, object_class: object, label: str) -> object:
    """The one object of a class and label; the search is finished at once (unlike
    python-pkcs11's get_key, whose search is finalised only at garbage collection)."""
    from pkcs11 import Attribute

    objs = list(ws.p11.get_objects({Attribute.CLASS: object_class, Attribute.LABEL: label}))  # type: ignore[attr-defined]
    assert len(objs) == 1, (label, objs)
    return objs[0]


@pytest.fixture(scope="session")
def hsm_env(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Env:
    """The process's SoftHSM token directory and one token (``TOKEN_LABEL``) in it.

    SoftHSM reads ``SOFTHSM2_CONF`` once per process and does not see tokens another process
    makes later, so the directory is the one this process already uses if any (the audit
    trail's fixture shares it) and the token is initialised in this process: whichever fixture
    runs first, the token is visible here and to every subprocess (``cli``). ``yibao-hsm
    init-token`` itself is tested in tests/hsm/test_cli.py.
    """
    from hsm.inittoken import init_token
    from hsm.pin import Pin

    run_dir = tmp_path_factory.mktemp("hsmpkg")
    if not os.environ.get("SOFTHSM2_CONF"):
        out = subprocess.run(
            ["bash", str(TOKEN_ENV_SH), str(run_dir)], check=True, capture_output=True, text=True
        ).stdout
        assert f"SOFTHSM2_CONF={run_dir / 'softhsm2.conf'}" in out
        # Read by the module at C_Initialize (also by our re-initialisation with OS locking).
        os.environ["SOFTHSM2_CONF"] = str(run_dir / "softhsm2.conf")
    env = Env(
        lib=softhsm_lib,
        conf=Path(os.environ["SOFTHSM2_CONF"]),
        run_dir=run_dir,
        user_pin_file=write_secret(run_dir / "user.pin", "u-" + secrets.token_hex(8)),
        so_pin_file=write_secret(run_dir / "so.pin", "s-" + secrets.token_hex(8)),
    )
    init_token(
        str(softhsm_lib),
        TOKEN_LABEL,
        Pin(env.so_pin_file.read_text().strip(), "test SO PIN"),
        Pin(env.user_pin_file.read_text().strip(), "test user PIN"),
    )
    return env


@pytest.fixture(scope="session")
def token(hsm_env: Env) -> Iterator[object]:
    from hsm.keys import KeyStore
    from hsm.token import HsmToken, TokenConfig

    tok = HsmToken.open(
        TokenConfig(
            module=str(hsm_env.lib),
            token_label=TOKEN_LABEL,
            user_pin_file=str(hsm_env.user_pin_file),
            pool_size=4,
        )
    )
    store = KeyStore(tok)
    store.generate("sign", "2026-01")
    store.generate("kek", "2026-01")
    yield tok
    tok.close()


@pytest.fixture(scope="session")
def spy_lib(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A C_Login-counting interposer module in front of the patched SoftHSM."""
    out = tmp_path_factory.mktemp("spy") / "libloginspy.so"
    subprocess.run(
        [
            "cc",
            "-shared",
            "-fPIC",
            "-O2",
            "-o",
            str(out),
            str(REPO / "tests" / "hsm" / "login_spy.c"),
            "-ldl",
        ],
        check=True,
        capture_output=True,
    )
    return out
