"""Fixtures for the audit trail: a trail on the ``store``, keys from the ``audit_hsm`` token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.audit.link import build_trail
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.trail import AuditTrail
from sidecar.config import AuditConfig
from sidecar.store import Store
from tests.audit_fixtures import AuditHsm


def audit_config(tmp_path: Path, **changes: object) -> AuditConfig:
    values: dict[str, object] = {
        "instance": "test",
        "spool_dir": str(tmp_path / "spool"),
        "replay_interval_seconds": 3600,  # tests replay explicitly
        "checkpoint_interval_seconds": 3600,
    }
    values.update(changes)
    return AuditConfig.model_validate(values)


@pytest.fixture
async def migrated(store: Store) -> Store:
    await store.migrate(MIGRATIONS)
    return store


@pytest.fixture
async def trail(migrated: Store, audit_hsm: AuditHsm, tmp_path: Path) -> AsyncIterator[AuditTrail]:
    made = build_trail(audit_config(tmp_path), migrated, audit_hsm.keys)
    await made.start()
    yield made
    await made.close()
