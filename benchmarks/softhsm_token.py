"""A throw-away SoftHSM token for a benchmark: the patched library and a fresh token directory.

Every benchmark that signs or wraps keys starts here, so the token is made the same way in each.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

from hsm.inittoken import init_token
from hsm.pin import Pin

REPO = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash") or "/bin/bash"


def softhsm_library() -> str:
    """The patched libsofthsm2.so (built once per machine, cached by the patch's hash)."""
    build = [BASH, str(REPO / "hsm/softhsm/build.sh")]
    out = subprocess.run(build, check=True, capture_output=True, text=True).stdout  # noqa: S603
    return out.strip().splitlines()[-1]


def use_token_directory(work: Path) -> None:
    """Point SoftHSM (this process and every child) at an empty token directory under ``work``."""
    env_sh = [BASH, str(REPO / "hsm/softhsm/token-env.sh"), str(work)]
    subprocess.run(env_sh, check=True, capture_output=True)  # noqa: S603
    os.environ["SOFTHSM2_CONF"] = str(work / "softhsm2.conf")


def fresh_token(work: Path, label: str) -> tuple[str, Pin]:
    """The library and the user PIN of a new, initialised token ``label`` under ``work``."""
    lib = softhsm_library()
    use_token_directory(work)
    user = Pin("bench-" + secrets.token_hex(6), source="benchmark")
    init_token(lib, label, Pin("so-" + secrets.token_hex(6), source="benchmark"), user)
    return lib, user
