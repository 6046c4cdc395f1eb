"""Fixtures that run the real thing: the simulator over mTLS and the sidecar on a Unix socket."""

from __future__ import annotations

import contextlib
import secrets
import shutil
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
from tests.conftest import write_secret
from tests.hsm_fixtures import SoftHsmTokens
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
def token(softhsm_tokens: SoftHsmTokens) -> Token:
    """The sidecar's token: sign, kek (sealed columns, sidecar/keys/fieldcrypt.py) and pseudonym
    keys; sidecar processes reach it with ``token.env``."""
    made = softhsm_tokens.make("yibao-it", purposes=("sign", "kek", "pseudonym"))
    return Token(made.lib, made.env(), made.user_pin_file, made.label)


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
