"""One pseudonym function per sidecar: the HSM's, shared by the consent ledger, the audit trail,
settlements and offsite registrations; a host key only for development without ``[hsm]``."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from hsm.keys import KeyStore
from hsm.token import HsmToken
from sidecar import app
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.audit.hsm_keys import open_pseudonyms
from sidecar.compliance.pseudonyms import subject_message
from sidecar.config import ConfigError, StoreConfig
from sidecar.store import open_store
from tests.audit_fixtures import AuditHsm
from tests.hsm_fixtures import SoftHsmTokens
from tests.integration.conftest import TENANT_METADATA, running_sidecar, settings_for
from tests.integration.consent_support import consent_to
from tests.integration.settlement_support import settle_request
from tests.integration.test_gateway import subject_of
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.server import RunningSimulator

SOFTHSM_PROFILE = Path(__file__).resolve().parents[2] / "hsm" / "profiles" / "softhsm-sm.toml"


@pytest.fixture(scope="module")
def mac_hsm(
    softhsm_tokens: SoftHsmTokens, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], HsmToken]]:
    """A token set up as on a Sansec HSM: softhsm-sm's numbers without ``sm3_hmac``, so the
    pseudonym function is the in-token SM4-CBC-MAC; every key the sidecar needs."""
    profile = tmp_path_factory.mktemp("mac-hsm") / "softhsm-sm4-mac.toml"
    text = re.sub(r"(?m)^sm3_hmac .*$", "", SOFTHSM_PROFILE.read_text())
    profile.write_text(text.replace('pseudonym = "hmac-sm3"', 'pseudonym = "sm4-cbc-mac"'))
    made = softhsm_tokens.make("yibao-mac-it", profile=profile)
    token = made.open()
    try:
        keys = KeyStore(token)
        for purpose in ("sign", "kek", "audit", "pseudonym"):
            keys.generate(purpose)  # type: ignore[arg-type]
        yield made.hsm_section(), token
    finally:
        token.close()


@pytest.mark.parametrize("function", ["hmac-sm3", "sm4-cbc-mac"])
async def test_with_hsm_every_component_stores_the_same_pseudonym_from_the_token(
    simulator: RunningSimulator,
    population: Population,
    short_dir: Path,
    audit_hsm: AuditHsm,
    store_config: StoreConfig,
    function: str,
    request: pytest.FixtureRequest,
) -> None:
    """No ``consent.pseudonym_key_file`` with ``[hsm]``: the consent ledger's subject, the audit
    trail's and the settlement's are one value, the token's PRF of the subject; on a profile
    without HMAC-SM3 (as Sansec's) the sidecar starts and uses the SM4-CBC-MAC."""
    settings = settings_for(simulator, short_dir, audit_hsm)
    prf = audit_hsm.keys.pseudonyms
    if function == "sm4-cbc-mac":
        section, token = request.getfixturevalue("mac_hsm")
        assert settings.hsm is not None
        settings = settings.model_copy(update={"hsm": settings.hsm.model_copy(update=section)})
        prf = open_pseudonyms(token)
        assert prf.mechanism == "sm4-cbc-mac"
    settings = settings.model_copy(
        update={
            "store": store_config,
            "consent": settings.consent.model_copy(update={"pseudonym_key_file": None}),
        }
    )
    person = population.examples().employee
    async with running_sidecar(settings) as running:
        await consent_to(running.channel, [subject_of(person)])
        token = simulator.app.issue_ec_token(person.certno)
        stub = gateway_grpc.InsuranceGatewayStub(running.channel)
        await stub.SettleWithEVoucher(
            settle_request(person, token, "settle-p"), metadata=TENANT_METADATA
        )
    expected = prf.pseudonym_blocking(subject_message(1, person.certno))
    assert len(expected) == (64 if function == "hmac-sm3" else 32)
    store = open_store(store_config)
    try:
        async with store.transaction() as tx:
            consent = {
                r["subject"] for r in await tx.fetch_all("SELECT subject FROM consent_grants")
            }
            settled = {
                r["subject_sha256"]
                for r in await tx.fetch_all("SELECT subject_sha256 FROM settlement_records")
            }
            audited = {
                r["subject"]
                for r in await tx.fetch_all("SELECT subject FROM audit_records")
                if r["subject"]
            }
    finally:
        await store.close()
    assert consent == settled == audited == {expected}


async def test_without_hsm_the_host_key_is_for_development_and_says_so(
    simulator: RunningSimulator, short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(simulator, short_dir)
    assert settings.hsm is None
    with caplog.at_level(logging.WARNING, logger="sidecar.app"):
        async with running_sidecar(settings) as running:
            before = [r.getMessage() for r in caplog.records]
            assert "pseudonyms.host_key_development_only" not in before  # start-up: one line

            running.sidecar.started()
    assert "pseudonyms.host_key_development_only" in [r.getMessage() for r in caplog.records]
    keyless = settings.model_copy(
        update={"consent": settings.consent.model_copy(update={"pseudonym_key_file": None})}
    )
    with pytest.raises(ConfigError, match=r"consent.pseudonym_key_file: required without \[hsm\]"):
        app.build(keyless)
