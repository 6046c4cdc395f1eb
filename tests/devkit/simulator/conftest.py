"""Fixtures for the platform simulator's tests: one development PKI per session, a simulator on a
free port per test, an mTLS client, and an envelope builder."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.devkit.simulator.support import (
    EnvelopeFactory,
    Session,
    client_context,
    envelope_factory,
)
from yibao_devkit.devcerts import DevPki
from yibao_devkit.simulator import (
    PlatformSimulator,
    Population,
    RunningSimulator,
    running_simulator,
)

SEED = 42


@pytest.fixture(scope="session")
def population() -> Population:
    return Population.generate(SEED)


@pytest.fixture
async def simulator(pki: DevPki, population: Population) -> AsyncIterator[RunningSimulator]:
    async with running_simulator(PlatformSimulator(population), pki=pki) as running:
        yield running


@pytest.fixture
async def client(pki: DevPki) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP/2 client holding the sidecar's development client certificate."""
    context = client_context(trust=pki.ca_cert, cert=pki.client_cert, key=pki.client_key)
    async with httpx.AsyncClient(http2=True, verify=context, timeout=10) as http:
        yield http


@pytest.fixture
def envelope() -> EnvelopeFactory:
    return envelope_factory()


@pytest.fixture
async def session(
    client: httpx.AsyncClient, simulator: RunningSimulator, envelope: EnvelopeFactory
) -> Session:
    """A signed-in operator on a fresh simulator."""
    signed_in = Session(client, simulator, envelope)
    await signed_in.sign_in()
    return signed_in
