"""Fixtures that run the real thing: the simulator over mTLS and the sidecar on a Unix socket."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar import app
from sidecar.config import Settings
from sidecar.observability import telemetry
from tests.audit_fixtures import AuditHsm
from tests.conftest import TOKEN_ENV_SH, write_secret
from tests.integration.consent_support import consent_to, subject_of
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator, running_simulator


@dataclass(frozen=True)
class Token:
    module: Path
    env: dict[str, str]
    user_pin_file: Path
    label: str = "yibao-it"


@pytest.fixture(scope="session")
def token(softhsm_lib: Path, tmp_path_factory: pytest.TempPathFactory) -> Token:
    run_dir = tmp_path_factory.mktemp("sidecar-hsm")
    subprocess.run(["bash", str(TOKEN_ENV_SH), str(run_dir)], check=True, capture_output=True)
    env = {**os.environ, "SOFTHSM2_CONF": str(run_dir / "softhsm2.conf")}
    user_pin = write_secret(run_dir / "user.pin", secrets.token_hex(8))
    so_pin = write_secret(run_dir / "so.pin", secrets.token_hex(8))
    made = Token(softhsm_lib, env, user_pin)
    common = [
        "--module",
        str(softhsm_lib),
        "--token-label",
        made.label,
        "--user-pin-file",
        str(user_pin),
    ]
    for args in (
        ["init-token", "--so-pin-file", str(so_pin)],
        ["keygen", "--purpose", "sign"],
        ["keygen", "--purpose", "kek"],  # sealed columns (sidecar/keys/fieldcrypt.py)
        ["keygen", "--purpose", "pseudonym"],  # pseudonyms and keyed digests with [hsm]
    ):
        result = subprocess.run(
            [sys.executable, "-m", "hsm.cli", *args, *common],
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    return made


TENANT_METADATA = (("x-yibao-tenant", "acme-corp"), ("x-yibao-operator", "im-bot-01"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for Unix sockets (their paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with running_simulator(seed=42, population_size=50) as running:
        yield running


@pytest.fixture
def population(simulator: RunningSimulator) -> Population:
    return simulator.app.population


_TRAIL: list[AuditHsm] = []  # set by the autouse fixture below, for helpers without fixtures


@pytest.fixture(autouse=True, scope="session")
def _audit_trail_on(audit_hsm: AuditHsm) -> None:
    _TRAIL[:] = [audit_hsm]


def audit_trail() -> AuditHsm | None:
    """The audit trail's token, for settings built outside fixtures (sidecars that are prepared)."""
    return _TRAIL[0] if _TRAIL else None


def settings_for(
    simulator: RunningSimulator, socket_dir: Path, audit: AuditHsm | None = None, **server: Any
) -> Settings:
    """A sidecar for the simulator; with ``audit``, the audit trail on (and its HSM token)."""
    trail: dict[str, Any] = {}
    if audit is not None:
        trail = {
            "hsm": audit.hsm_section(),
            "audit": {"instance": "it", "spool_dir": str(socket_dir / "audit-spool")},
        }
    return Settings.model_validate(
        {
            **trail,
            "server": {"socket_path": str(socket_dir / "sidecar.sock"), **server},
            "store": {"sqlite_path": str(socket_dir / "store" / "sidecar.db")},
            "consent": {"pseudonym_key_file": str(pseudonym_key_file(socket_dir))},
            "institution": {
                "code": simulator.app.institution_code,
                "name": "测试机构",
                "division": simulator.app.division,
            },
            "platform": {
                "url": simulator.url.split("/fsi/")[0],
                "ca_file": str(simulator.pki.ca_cert),
                "client_cert_file": str(simulator.pki.client_cert),
                "client_key_file": str(simulator.pki.client_key),
                "timeout_seconds": 5,
            },
        }
    )


def pseudonym_key_file(directory: Path) -> Path:
    """The host-held pseudonym key of a test sidecar (one per directory, made once)."""
    path = directory / "pseudonym.key"
    if not path.exists():
        write_secret(path, secrets.token_hex(32))
    return path


@dataclass
class RunningSidecar:
    sidecar: app.Sidecar
    channel: grpc.aio.Channel
    settings: Settings


@contextlib.asynccontextmanager
async def running_sidecar(
    settings: Settings, observability: telemetry.Telemetry | None = None
) -> AsyncIterator[RunningSidecar]:
    sidecar = app.build(settings, observability)
    await sidecar.prepare()
    await sidecar.server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{settings.server.socket_path}") as channel:
            yield RunningSidecar(sidecar, channel, settings)
    finally:
        await sidecar.server.stop()
        await sidecar.close()


@pytest.fixture
async def sidecar(
    simulator: RunningSimulator, short_dir: Path, audit_hsm: AuditHsm
) -> AsyncIterator[RunningSidecar]:
    """A sidecar in front of the simulator; the first five people consent to every purpose."""
    async with running_sidecar(settings_for(simulator, short_dir, audit_hsm)) as running:
        people = simulator.app.population.people[:5]  # the four examples and one more
        await consent_to(running.channel, [subject_of(person) for person in people])
        yield running
