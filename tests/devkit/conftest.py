"""Fixtures of the dev kit's tests: one development PKI per session (devcerts and the simulator)."""

from __future__ import annotations

import pytest

from yibao_devkit import devcerts
from yibao_devkit.devcerts import DevPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return devcerts.generate(tmp_path_factory.mktemp("pki"))
