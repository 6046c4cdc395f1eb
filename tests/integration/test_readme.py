"""README.md's "Running it yourself" works as written: its minimal ``sidecar.toml`` starts.

The test takes the README's own text: the first TOML block after "A minimal `sidecar.toml`"
(unchanged), the shell line that makes the pseudonym key, and the environment overrides the
README names for a user who cannot write ``/run`` and ``/var/lib``. It makes the development PKI
the way ``simulate --pki-dir dev-pki`` does, starts ``yibao-sidecar serve`` in that directory,
checks that it answers its health check on the socket, and stops it with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.conftest import REPO
from tests.integration.test_server import wait_serving
from yibao_devkit import devcerts

README = (REPO / "README.md").read_text(encoding="utf-8")
SECTION = README.split("## Running it yourself", 1)[1].split("\n## ", 1)[0]


def minimal_config() -> str:
    after = SECTION.split("A minimal `sidecar.toml`", 1)[1]
    match = re.search(r"```toml\n(.*?)```", after, re.DOTALL)
    assert match, "README: no TOML block after 'A minimal `sidecar.toml`'"
    return match.group(1)


def key_command() -> str:
    shell = re.search(r"```sh\n(.*?)```", SECTION, re.DOTALL)
    assert shell, "README: no shell block in 'Running it yourself'"
    (line,) = [line for line in shell.group(1).splitlines() if "pseudonym.key" in line]
    return line.split("#", 1)[0].strip()


def overrides_named() -> list[str]:
    intro = SECTION.split("A minimal `sidecar.toml`", 1)[1].split("```", 1)[0]
    named = set(re.findall(r"`(YIBAO_SIDECAR__[A-Z_]+)`", intro))
    return sorted(named - {"YIBAO_SIDECAR__SECTION__KEY"})  # the pattern itself


def start_as_the_readme_says(work: Path, socket_path: Path, store: Path) -> subprocess.Popen[str]:
    """Lay out ``work`` as the README's commands do, then ``yibao-sidecar serve`` in it."""
    (work / "sidecar.toml").write_text(minimal_config(), encoding="utf-8")
    devcerts.generate(work / "dev-pki")  # what `simulate --pki-dir dev-pki` makes
    subprocess.run(["bash", "-c", key_command()], cwd=work, check=True, timeout=30)
    assert oct((work / "pseudonym.key").stat().st_mode & 0o777) == "0o600"
    named = overrides_named()
    assert named == ["YIBAO_SIDECAR__SERVER__SOCKET_PATH", "YIBAO_SIDECAR__STORE__SQLITE_PATH"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("YIBAO_SIDECAR__")},
        "YIBAO_SIDECAR__SERVER__SOCKET_PATH": str(socket_path),
        "YIBAO_SIDECAR__STORE__SQLITE_PATH": str(store),
    }
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("yibao-sidecar")), "serve", "--config", "sidecar.toml"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
async def test_the_readme_minimal_config_starts_as_shown(tmp_path: Path, short_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    socket_path = short_dir / "sidecar.sock"
    process = start_as_the_readme_says(work, socket_path, tmp_path / "store" / "sidecar.db")
    try:
        async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
            answer = await wait_serving(channel, process)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert not socket_path.exists()
