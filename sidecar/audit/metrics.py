"""The audit trail's metric: how many records wait on the local volume (docs/metrics.md).

Non-zero means the audit store has not taken them yet: records in the spool, or, with
``durability = "journal"``, journaled records not yet shipped (a few, briefly, is normal there).
The alert ``YibaoSidecarAuditSpoolNotEmpty`` (k8s/components/monitoring/) watches it. The count
is of this process's chain; files that earlier processes left are replayed before the chain starts.
"""

from __future__ import annotations

from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Meter, Observation

SPOOL_RECORDS = "yibao.audit.spool_records"


class _Local(Protocol):
    @property
    def unshipped(self) -> int: ...


def observe_spool(meter: Meter, writer: _Local) -> None:
    """Report ``writer.unshipped`` as the gauge ``yibao.audit.spool_records`` at each collection."""

    def observe(_: CallbackOptions) -> list[Observation]:
        return [Observation(writer.unshipped)]

    meter.create_observable_gauge(
        SPOOL_RECORDS,
        callbacks=[observe],
        description="audit records in the local spool or journal, not yet in the audit store",
    )
