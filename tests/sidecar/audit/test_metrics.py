"""The spool gauge the alert YibaoSidecarAuditSpoolNotEmpty watches follows the spool."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from sidecar.audit.link import build_trail
from sidecar.audit.metrics import SPOOL_RECORDS, observe_spool
from sidecar.audit.schema import MIGRATIONS
from sidecar.store.sqlite import SqliteStore
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config


def spool_records(reader: InMemoryMetricReader) -> list[int | float]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == SPOOL_RECORDS
        for point in metric.data.data_points  # type: ignore[union-attr]
    ]


async def test_the_gauge_counts_spooled_records_until_the_store_takes_them(
    audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    path = tmp_path / "store" / "sidecar.db"
    store = SqliteStore(path, busy_timeout_seconds=0.05)
    await store.migrate(MIGRATIONS)
    trail = build_trail(audit_config(tmp_path), store, audit_hsm.keys)
    reader = InMemoryMetricReader()
    observe_spool(MeterProvider(metric_readers=[reader]).get_meter("test"), trail.writer)
    await trail.start()
    try:
        assert spool_records(reader) == [0]
        lock = sqlite3.connect(path, isolation_level=None)  # the store cannot take writes
        lock.execute("BEGIN EXCLUSIVE")
        audit = await trail.rpc_intent(
            rpc="GetEnrollment",
            tenant="t",
            operator="o",
            subject=b"1:X",
            trace_id="",
            request=b"{}",
        )
        await trail.rpc_outcome(audit, status="OK", reason="", error="", answer=b"{}")
        await trail.writer.flush()
        assert spool_records(reader) == [2]
        lock.execute("ROLLBACK")
        lock.close()
        await trail.writer.replay()
        assert spool_records(reader) == [0]
    finally:
        await trail.close()
        await store.close()
