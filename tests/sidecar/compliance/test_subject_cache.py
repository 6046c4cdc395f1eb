"""A revocation drops the subject's cached answers (the gateway's cache, behind SubjectCache)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import consent_pb2 as consent
from sidecar._proto.yibao.gateway.v1 import consent_pb2_grpc as consent_grpc
from sidecar.compliance.consent_ledger import MIGRATIONS, ConsentLedger
from sidecar.compliance.pseudonyms import HostPseudonymizer
from sidecar.config import CacheConfig, ServerConfig
from sidecar.domain.subjects import Subject
from sidecar.gateway.consent import SERVICE_NAME, ConsentService
from sidecar.interceptors.caller import CallerIdentity
from sidecar.interceptors.chain import FilterChain
from sidecar.serving.server import Server
from sidecar.store import Store
from yibao_devkit.simulator.population import Population

METADATA = (("x-yibao-tenant", "acme-corp"), ("x-yibao-operator", "im-bot-01"))
PSEUDONYMS = HostPseudonymizer(b"k" * 32)


@dataclass
class RecordingCache:
    invalidated: list[tuple[str, str]] = field(default_factory=list)
    cleared: int = 0

    def invalidate(self, subject: Subject) -> int:
        self.invalidated.append((subject.certificate_type_code, subject.certificate_number))
        return 1

    def clear(self) -> None:
        self.cleared += 1


@pytest.fixture
async def served(store: Store) -> AsyncIterator[tuple[grpc.aio.Channel, RecordingCache]]:
    await store.migrate(MIGRATIONS)
    cache = RecordingCache()
    service = ConsentService(ConsentLedger(store), PSEUDONYMS, cache)
    directory = Path(tempfile.mkdtemp(prefix="ys-", dir="/tmp"))
    socket = directory / "s.sock"
    server = Server(
        [service.registration()],
        ServerConfig(
            socket_path=socket, socket_mode=0o600, max_concurrent_rpcs=16, grace_period_seconds=0.5
        ),
        interceptors=[FilterChain([CallerIdentity()], services=[SERVICE_NAME])],
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix:{socket}") as channel:
            yield channel, cache
    finally:
        await server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def subject(index: int) -> common.DataSubject:
    person = Population.generate(42, 10).people[index]
    return common.DataSubject(
        certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
        certificate_number=person.certno,
        name=person.psn_name,
    )


async def test_revoking_drops_the_subjects_cached_answers(
    served: tuple[grpc.aio.Channel, RecordingCache],
) -> None:
    channel, cache = served
    stub = consent_grpc.ConsentServiceStub(channel)
    consents = []
    for index in (0, 1):
        request = consent.GrantConsentRequest(
            request_id=f"g{index}",
            subject=subject(index),
            purpose=common.PURPOSE_ENROLLMENT_QUERY,
            scope="查询",
            notice_version="v1",
            notice_sm3_hex="0" * 64,
            channel_evidence="im-msg",
        )
        consents.append((await stub.GrantConsent(request, metadata=METADATA)).consent)
    assert (cache.invalidated, cache.cleared) == ([], 0)  # a grant leaves the cache alone

    await stub.RevokeConsent(
        consent.RevokeConsentRequest(
            request_id="r0",
            subject_purpose=consent.SubjectPurpose(
                subject=subject(0), purpose=common.PURPOSE_ENROLLMENT_QUERY
            ),
        ),
        metadata=METADATA,
    )
    assert (cache.invalidated, cache.cleared) == ([("01", subject(0).certificate_number)], 0)

    await stub.RevokeConsent(
        consent.RevokeConsentRequest(request_id="r1", consent_id=consents[1].consent_id),
        metadata=METADATA,
    )  # by id: the ledger keeps no number to name the subject by, so the cache is emptied
    assert (len(cache.invalidated), cache.cleared) == (1, 1)


async def test_the_gateway_read_cache_fits_the_seam() -> None:
    from sidecar.compliance.consent_gate import SubjectCache
    from sidecar.gateway.cache import ReadCache

    cache: SubjectCache = ReadCache(CacheConfig(ttl_seconds=30, max_entries=10), key=b"k" * 32)
    assert cache.invalidate(Subject("01", "x", "y")) == 0
