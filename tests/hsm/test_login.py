"""Wrong PINs: one clear error, exactly one C_Login, and the PIN never leaks.

Login state is per process in PKCS#11, and the session fixtures of this suite
are logged in, so each wrong-PIN case runs in a fresh subprocess.  C_Login
calls are counted by ``login_spy.c``, an interposer in front of the patched
SoftHSM, i.e. what the token really received.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hsm_fixtures import CLI, REPO, TOKEN_LABEL, Env, write_secret

PROBE = """
import sys
from hsm.errors import HsmError
from hsm.token import HsmToken, TokenConfig
try:
    cfg = TokenConfig(module=sys.argv[1], token_label=sys.argv[2], user_pin_file=sys.argv[3])
    HsmToken.open(cfg)
except HsmError as exc:
    print(type(exc).__name__, exc, sep="|")
"""


def _spy_env(hsm_env: Env, tmp_path: Path) -> tuple[dict[str, str], Path]:
    log = tmp_path / "logins.log"
    return hsm_env.env(YIBAO_SPY_TARGET=str(hsm_env.lib), YIBAO_SPY_LOG=str(log)), log


def test_wrong_pin_one_error_and_one_login(hsm_env: Env, spy_lib: Path, tmp_path: Path) -> None:
    wrong = write_secret(tmp_path / "wrong.pin", "not-the-pin-42")
    env, log = _spy_env(hsm_env, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(spy_lib), TOKEN_LABEL, str(wrong)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    kind, msg = proc.stdout.strip().split("|")
    assert kind == "LoginError"
    assert str(wrong) in msg and "incorrect" in msg and "not-the-pin-42" not in msg
    assert log.read_text().splitlines() == ["C_Login user_type=1 rv=0xa0"]  # CKR_PIN_INCORRECT


def test_wrong_pin_via_cli_exit_3_one_line_one_login(
    hsm_env: Env, spy_lib: Path, tmp_path: Path
) -> None:
    wrong = write_secret(tmp_path / "wrong.pin", "not-the-pin-43")
    env, log = _spy_env(hsm_env, tmp_path)
    proc = hsm_env.cli("list", module=spy_lib, pin_file=wrong, env=env)
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and str(wrong) in proc.stderr
    assert "not-the-pin-43" not in proc.stderr + proc.stdout
    assert len(log.read_text().splitlines()) == 1


def test_right_pin_logs_in_once_for_the_whole_pool(
    hsm_env: Env, spy_lib: Path, tmp_path: Path
) -> None:
    env, log = _spy_env(hsm_env, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(spy_lib), TOKEN_LABEL, str(hsm_env.user_pin_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr
    assert log.read_text().splitlines() == ["C_Login user_type=1 rv=0x0"]


def test_pin_never_in_logs_or_exceptions(
    hsm_env: Env, token, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from hsm.errors import HsmError
    from hsm.keys import KeyStore
    from hsm.pin import read_pin_file
    from hsm.sm2 import Sm2Signer

    caplog.set_level(logging.DEBUG)
    pin = read_pin_file(hsm_env.user_pin_file).reveal()
    info = KeyStore(token).active("sign")
    signer = Sm2Signer(token, info.label, info.public_key)
    token.raw.close_all_sessions(token.slot_id)  # forces recovery and a second C_Login
    signer.sign_blocking(b"log check")
    messages: list[str] = []
    for bad in (tmp_path / "missing.pin", write_secret(tmp_path / "open.pin", pin, 0o644)):
        with pytest.raises(HsmError) as exc:
            read_pin_file(bad)
        messages.append(str(exc.value))
    text = caplog.text + "\n".join(messages) + "".join(r.getMessage() for r in caplog.records)
    assert "logged in" in caplog.text
    assert pin not in text


def test_cli_argv_and_cmdline_never_hold_the_pin(hsm_env: Env, tmp_path: Path) -> None:
    """While the CLI waits at a prompt its /proc/<pid>/cmdline and environ hold no PIN."""
    pin = Path(hsm_env.user_pin_file).read_text().strip()
    fifo = tmp_path / "so.fifo"
    import os

    os.mkfifo(fifo, 0o600)
    argv = [
        *CLI,
        "list",
        "--module",
        str(hsm_env.lib),
        "--token-label",
        TOKEN_LABEL,
        "--user-pin-file",
        str(hsm_env.user_pin_file),
        "--json",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hsm_env.env(), cwd=REPO
    )
    seen = b""
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen += Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            seen += Path(f"/proc/{proc.pid}/environ").read_bytes()
        except OSError:
            break
        time.sleep(0.01)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen and pin.encode() not in seen
    assert pin not in out + err
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert pin not in ps
