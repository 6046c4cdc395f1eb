"""Sidecars of a Deployment lease their msgid slots from the shared store (slot = "lease")."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar import app
from sidecar.config import ConfigError, Settings, StoreConfig, load
from sidecar.store import StoreError
from tests.integration.conftest import running_sidecar, settings_for
from tests.integration.consent_support import consent_to, subject_of
from tests.integration.test_gateway import call_enrollment
from yibao_devkit.simulator.server import RunningSimulator


@contextlib.contextmanager
def socket_dirs(count: int) -> Iterator[list[Path]]:
    made = [Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp")) for _ in range(count)]
    try:
        yield made
    finally:
        for directory in made:
            shutil.rmtree(directory, ignore_errors=True)


def leasing(simulator: RunningSimulator, directory: Path, store: StoreConfig) -> Settings:
    settings = settings_for(simulator, directory)
    msgid = settings.platform.msgid.model_copy(update={"slot": "lease", "slots": 2})
    platform = settings.platform.model_copy(update={"msgid": msgid})
    return settings.model_copy(update={"platform": platform, "store": store})


async def lease_rows(sidecar: app.Sidecar) -> list[tuple[int, str]]:
    async with sidecar.store.transaction() as tx:
        rows = await tx.fetch_all("SELECT slot, holder FROM msgid_leases ORDER BY slot")
    return [(int(row["slot"]), str(row["holder"])) for row in rows]


async def test_two_replicas_lease_two_slots_and_a_third_cannot_start(
    simulator: RunningSimulator, store_config: StoreConfig
) -> None:
    person = simulator.app.population.examples().employee
    with socket_dirs(3) as (a, b, c):
        async with running_sidecar(leasing(simulator, a, store_config)) as one:
            async with running_sidecar(leasing(simulator, b, store_config)) as two:
                for running in (one, two):
                    await consent_to(running.channel, [subject_of(person)])
                    answer = await call_enrollment(running, subject_of(person))
                    assert answer.person.name == person.psn_name
                rows = await lease_rows(one.sidecar)
                assert [slot for slot, _ in rows] == [0, 1]
                assert len({holder for _, holder in rows}) == 2

                third = app.build(leasing(simulator, c, store_config))
                with pytest.raises(StoreError, match="all 2 msgid slots are leased"):
                    await third.prepare()
                await third.close()
            assert [slot for slot, _ in await lease_rows(one.sidecar)] == [0]  # two gave it back


def test_lease_is_chosen_by_configuration(tmp_path: Path) -> None:
    config = tmp_path / "sidecar.toml"
    config.write_text(
        '[institution]\ncode = "H44030500001"\nname = "x"\ndivision = "440300"\n'
        '[platform]\nurl = "https://127.0.0.1:9"\nca_file = "a"\nclient_cert_file = "b"\n'
        'client_key_file = "c"\n'
    )
    env = {
        "YIBAO_SIDECAR__PLATFORM__MSGID__SLOT": "lease",
        "YIBAO_SIDECAR__PLATFORM__MSGID__SLOTS": "4",
    }
    assert load(config, env).platform.msgid.slot == "lease"
    assert (
        load(config, {**env, "YIBAO_SIDECAR__PLATFORM__MSGID__SLOT": "3"}).platform.msgid.slot == 3
    )
    with pytest.raises(ConfigError, match=r"platform\.msgid"):
        load(config, {**env, "YIBAO_SIDECAR__PLATFORM__MSGID__SLOT": "4"})
    with pytest.raises(ConfigError, match=r"platform\.msgid"):
        load(config, {**env, "YIBAO_SIDECAR__PLATFORM__MSGID__RENEW_SECONDS": "29"})
