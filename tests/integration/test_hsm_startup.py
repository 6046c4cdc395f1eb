"""The sidecar with an HSM: it logs in once at start-up, and HSM problems stop it in one line.

Each sidecar runs as its own process with its own SOFTHSM2_CONF, exactly as deployed; the token
is set up with the security team's tool (yibao-hsm), never with test shortcuts.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import write_secret
from tests.integration.conftest import Token
from tests.integration.test_server import sidecar_process, wait_serving, write_config
from yibao_devkit.simulator.server import RunningSimulator


def hsm_section(token: Token, **changes: str) -> str:
    values = {"module": str(token.module), "token_label": token.label,
              "user_pin_file": str(token.user_pin_file), **changes}  # fmt: skip
    return "\n[hsm]\n" + "".join(f'{key} = "{value}"\n' for key, value in values.items())


async def test_the_sidecar_logs_in_once_and_keeps_the_pin_to_itself(
    token: Token, simulator: RunningSimulator, short_dir: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    config.write_text(config.read_text() + hsm_section(token))
    process = sidecar_process(config, token.env)
    try:
        async with grpc.aio.insecure_channel(f"unix:{short_dir / 'sidecar.sock'}") as channel:
            answer = await wait_serving(channel, process)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    ready = [json.loads(line) for line in stderr.splitlines() if '"hsm.ready"' in line]
    assert len(ready) == 1 and ready[0]["key"].startswith("sign/")
    assert token.user_pin_file.read_text().strip() not in stderr


@pytest.mark.parametrize(
    ("changes", "mode", "expected"),
    [
        ({"token_label": "no-such-token"}, 0o600, "no-such-token"),
        ({}, 0o644, "user.pin"),
        ({"profile": "no-such-profile"}, 0o600, "no-such-profile"),
        ({"module": "/nonexistent/libpkcs11.so"}, 0o600, "/nonexistent/libpkcs11.so"),
    ],
)
async def test_hsm_problems_stop_start_up_with_one_line_naming_the_thing(
    token: Token, simulator: RunningSimulator, short_dir: Path, tmp_path: Path,
    changes: dict[str, str], mode: int, expected: str,
) -> None:  # fmt: skip
    pin_file = write_secret(tmp_path / "user.pin", token.user_pin_file.read_text().strip(), mode)
    config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
    config.write_text(
        config.read_text() + hsm_section(token, user_pin_file=str(pin_file), **changes)
    )
    process = sidecar_process(config, token.env)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("hsm: ") and expected in stderr
    assert pin_file.read_text().strip() not in stderr
