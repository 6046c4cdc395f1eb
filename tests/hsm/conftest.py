"""Fixtures: a patched SoftHSM (built by hsm/softhsm/build.sh) with a fresh token per run.

Nothing is mocked: every test talks to libsofthsm2.so through python-pkcs11.
If the library cannot be built the session fails (no skips).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOFTHSM_DIR = REPO / "hsm" / "softhsm"
BUILD_SH = SOFTHSM_DIR / "build.sh"
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


_BUILD: dict[str, object] = {}


def _run_build_sh() -> None:
    """Run build.sh once per session; remember the library path or the error."""
    proc = subprocess.Popen(
        ["bash", str(BUILD_SH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=1800)
    except BaseException:
        # never leave an orphaned make behind (e.g. on Ctrl-C)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        _BUILD["error"] = f"hsm/softhsm/build.sh failed (exit {proc.returncode}):\n{err[-4000:]}"
    else:
        _BUILD["lib"] = Path(lines[-1])


def pytest_collection_finish(session: pytest.Session) -> None:
    # The (cold, ~2 min) SoftHSM build runs here, after collection and before any test, so that
    # it is not subject to the per-test timeout (pyproject: pytest-timeout = 120 s).
    here = Path(__file__).resolve().parent
    if not _BUILD and any(
        Path(str(item.path)).resolve().is_relative_to(here) for item in session.items
    ):
        _run_build_sh()


@pytest.fixture(scope="session")
def softhsm_lib() -> Path:
    """The patched libsofthsm2.so built (or found in the cache) by build.sh; fail hard on error."""
    if not _BUILD:  # e.g. collection hook not run in some embedding; build now
        _run_build_sh()
    if "error" in _BUILD:
        pytest.fail(str(_BUILD["error"]), pytrace=False)
    return _BUILD["lib"]  # type: ignore[return-value]


def _write_secret(path: Path, value: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


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

    user_pin_file = _write_secret(run_dir / "user.pin", secrets.token_hex(8))
    so_pin_file = _write_secret(run_dir / "so.pin", secrets.token_hex(8))
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
