"""Fixtures for the ``hsm`` package's tests (tests/hsm/, and the sidecar tests that need its
token): the patched SoftHSM, never a mock. A plugin of tests/conftest.py, so one definition
serves every directory.

The recipe is the one of ``hsm/softhsm``: ``build.sh`` builds (or reuses) the
patched libsofthsm2.so and prints its path last; ``token-env.sh DIR`` writes a
per-run SoftHSM configuration: the one token directory of the process, where
``softhsm_tokens.make`` makes every test token (the audit trail's, the integration tests', the
SoftHSM tests'). If the library cannot be built the session fails; nothing is skipped.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
            if "--profile" not in args:  # the token-changing commands need it named
                argv += ["--profile", "softhsm-sm"]
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


@dataclass(frozen=True)
class MadeToken:
    """A token made by :meth:`SoftHsmTokens.make`: its label, PIN files and how to reach it."""

    lib: Path
    conf: Path
    label: str
    user_pin_file: Path
    so_pin_file: Path
    profile: Path | None = None

    def env(self) -> dict[str, str]:
        """The environment of a subprocess that uses this token (the same token directory)."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def hsm_section(self) -> dict[str, str]:
        """The ``[hsm]`` configuration section for this token."""
        section = {
            "module": str(self.lib),
            "token_label": self.label,
            "user_pin_file": str(self.user_pin_file),
        }
        if self.profile is not None:
            section["profile"] = str(self.profile)
        return section

    def open(self, pool_size: int = 2) -> Any:
        from hsm.token import HsmToken, TokenConfig

        return HsmToken.open(
            TokenConfig(
                module=str(self.lib),
                token_label=self.label,
                user_pin_file=str(self.user_pin_file),
                pool_size=pool_size,
                **({"profile": str(self.profile)} if self.profile is not None else {}),
            )
        )


@dataclass(frozen=True)
class SoftHsmTokens:
    """The one SoftHSM token directory of this test process, and the one way tokens are made.

    SoftHSM reads ``SOFTHSM2_CONF`` once per process (at C_Initialize) and never sees a token
    that another process makes afterwards. So every test token lives in one directory, set
    before this process first loads the module, and is initialised *in this process*: it is
    visible here whatever ran first, and to every subprocess given :meth:`MadeToken.env` (the
    token is on disk). ``yibao-hsm init-token`` itself is tested in tests/hsm/test_cli.py.
    """

    lib: Path
    conf: Path
    run_dir: Path

    def make(
        self, label: str, *, purposes: Sequence[str] = (), profile: Path | None = None
    ) -> MadeToken:
        """A new token ``label`` (random PINs in 0600 files), with one key per purpose."""
        from hsm.inittoken import init_token
        from hsm.keys import KeyStore
        from hsm.pin import Pin

        directory = self.run_dir / label
        directory.mkdir()
        made = MadeToken(
            self.lib,
            self.conf,
            label,
            write_secret(directory / "user.pin", "u-" + secrets.token_hex(8)),
            write_secret(directory / "so.pin", "s-" + secrets.token_hex(8)),
            profile,
        )
        init_token(
            str(self.lib),
            label,
            Pin(made.so_pin_file.read_text().strip(), "test SO PIN"),
            Pin(made.user_pin_file.read_text().strip(), "test user PIN"),
        )
        if purposes:
            with made.open() as token:
                store = KeyStore(token)
                for purpose in purposes:
                    store.generate(purpose)
        return made


@pytest.fixture(scope="session")
def softhsm_tokens(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> SoftHsmTokens:
    """Every SoftHSM token of the test process is made here (see :class:`SoftHsmTokens`)."""
    run_dir = tmp_path_factory.mktemp("softhsm-tokens")
    out = subprocess.run(
        ["bash", str(TOKEN_ENV_SH), str(run_dir)], check=True, capture_output=True, text=True
    ).stdout
    conf = run_dir / "softhsm2.conf"
    assert f"SOFTHSM2_CONF={conf}" in out
    # Read by the module at C_Initialize (also by our re-initialisation with OS locking).
    os.environ["SOFTHSM2_CONF"] = str(conf)
    return SoftHsmTokens(softhsm_lib, conf, run_dir)


@pytest.fixture(scope="session")
def hsm_env(softhsm_tokens: SoftHsmTokens) -> Env:
    """One token (``TOKEN_LABEL``) and the helpers of the ``hsm`` package's tests."""
    made = softhsm_tokens.make(TOKEN_LABEL)
    return Env(
        lib=made.lib,
        conf=made.conf,
        run_dir=made.user_pin_file.parent,
        user_pin_file=made.user_pin_file,
        so_pin_file=made.so_pin_file,
    )


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
