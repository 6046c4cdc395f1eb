"""Fixtures shared by every test package: the patched SoftHSM library, built once per machine.

``hsm/softhsm/build.sh`` builds (or finds in its cache) SoftHSM 2.6.1 with our SM mechanisms and
prints the library's path last. A cold build takes one to three minutes, so it runs after
collection and before the first test (outside the per-test timeout), and only when a collected
test needs the library. If it cannot be built the tests that need it fail; nothing is skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

pytest_plugins = ["tests.store_fixtures", "tests.hsm_fixtures", "tests.audit_fixtures"]

REPO = Path(__file__).resolve().parent.parent
BUILD_SH = REPO / "hsm" / "softhsm" / "build.sh"
TOKEN_ENV_SH = REPO / "hsm" / "softhsm" / "token-env.sh"

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
        os.killpg(proc.pid, signal.SIGTERM)  # never leave an orphaned make behind (Ctrl-C)
        proc.wait()
        raise
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        _BUILD["error"] = f"hsm/softhsm/build.sh failed (exit {proc.returncode}):\n{err[-4000:]}"
    else:
        _BUILD["lib"] = Path(lines[-1])


def pytest_collection_finish(session: pytest.Session) -> None:
    if not _BUILD and any("softhsm_lib" in item.fixturenames for item in session.items):  # type: ignore[attr-defined]
        _run_build_sh()


@pytest.fixture(scope="session")
def softhsm_lib() -> Path:
    """The patched libsofthsm2.so; the test fails (never skips) if it cannot be built."""
    if not _BUILD:
        _run_build_sh()
    if "error" in _BUILD:
        pytest.fail(str(_BUILD["error"]), pytrace=False)
    lib = _BUILD["lib"]
    assert isinstance(lib, Path)
    return lib


def write_secret(path: Path, value: str, mode: int = 0o600) -> Path:
    """A secret file created with its final mode: never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, mode)
    return path
