"""The audit trail's metric: how many records wait in the local spool (docs/metrics.md).

Non-zero means the audit store has not taken them yet; the alert ``YibaoSidecarAuditSpoolNotEmpty``
(k8s/components/monitoring/) watches it. The count is of this process's chain; spool files that
earlier processes left are replayed before the chain starts.
"""

from __future__ import annotations

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from sidecar.audit.spool import Spool

SPOOL_RECORDS = "yibao.audit.spool_records"


def observe_spool(meter: Meter, spool: Spool) -> None:
    """Report ``spool.pending`` as the gauge ``yibao.audit.spool_records`` at every collection."""

    def observe(_: CallbackOptions) -> list[Observation]:
        return [Observation(spool.pending)]

    meter.create_observable_gauge(
        SPOOL_RECORDS,
        callbacks=[observe],
        description="audit records in the local spool, not yet in the audit store",
    )
