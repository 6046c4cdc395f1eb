"""Purge (with a signed anchor) and data-subject export: the trail's two maintenance jobs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hsm.datakeys import DataKeys
from hsm.sm.sm2 import Sm2PublicKey
from sidecar.audit import payloads
from sidecar.audit.checkpoints import ANCHOR, CheckpointSigner, write_checkpoint
from sidecar.audit.records import EXPORT, Entry, Record
from sidecar.audit.trail import Pseudonyms
from sidecar.audit.verify import Verifier
from sidecar.audit.writer import AuditWriter
from sidecar.store import Store

DAY_MICROS = 86_400 * 1_000_000


class PurgeRefused(Exception):
    """The purge would remove records younger than the retention, or an unverified chain."""


@dataclass(frozen=True)
class Purged:
    chain: str
    position: int
    records: int


async def purge(
    store: Store,
    signer: CheckpointSigner,
    public_keys: Sequence[Sm2PublicKey],
    *,
    before: int,
    retention_days: int,
    now: int,
) -> list[Purged]:
    """Remove each chain's records older than ``before``, leaving a signed anchor per chain."""
    if retention_days < 730:
        raise PurgeRefused("the retention cannot be shorter than 730 days (two years)")
    if before > now - retention_days * DAY_MICROS:
        raise PurgeRefused(
            f"records younger than the retention ({retention_days} days) are kept; "
            "choose an earlier date"
        )
    verifier = Verifier(public_keys)
    done: list[Purged] = []
    async with store.transaction() as tx:
        chains = [
            str(row["chain"])
            for row in await tx.fetch_all(
                "SELECT DISTINCT chain FROM audit_records WHERE at < :before", {"before": before}
            )
        ]
    for chain in sorted(chains):
        async with store.transaction() as tx:
            await tx.lock(f"audit_checkpoints:{chain}")
            records = [
                Record.from_row(row)
                for row in await tx.fetch_all(
                    "SELECT * FROM audit_records WHERE chain = :chain ORDER BY seq",
                    {"chain": chain},
                )
            ]
            checkpoints = await tx.fetch_all(
                "SELECT * FROM audit_checkpoints WHERE chain = :chain ORDER BY number",
                {"chain": chain},
            )
            report = verifier.verify_chain(chain, records, checkpoints)
            if report.first is not None:
                raise PurgeRefused(f"chain {chain} does not verify ({report.first}); not purged")
            old = [r for r in records if r.at < before]
            if not old or old[-1].seq > report.sealed_to:
                continue  # nothing old, or the old records are not yet sealed by a checkpoint
            last = old[-1]
            await write_checkpoint(
                tx,
                signer,
                chain=chain,
                kind=ANCHOR,
                position=last.seq,
                hash_=last.hash,
                at=now,
                extra={"purged_before": before},
            )
            await tx.execute(
                "DELETE FROM audit_records WHERE chain = :chain AND seq <= :seq",
                {"chain": chain, "seq": last.seq},
            )
            done.append(Purged(chain, last.seq, len(old)))
    return done


async def export_subject(
    store: Store,
    pseudonyms: Pseudonyms,
    data_keys: DataKeys,
    writer: AuditWriter,
    *,
    subject: bytes,
    requested_by: str,
) -> list[dict[str, Any]]:
    """Every record of one data subject, decrypted; the export is recorded (durably) first."""
    pseudonym = await pseudonyms.pseudonym(subject)
    async with store.transaction() as tx:
        rows = await tx.fetch_all(
            "SELECT * FROM audit_records WHERE subject = :subject ORDER BY chain, seq",
            {"subject": pseudonym},
        )
        keys = {
            str(row["key_id"]): bytes(row["wrapped"])
            for row in await tx.fetch_all("SELECT key_id, wrapped FROM audit_data_keys")
        }
    records = [Record.from_row(row) for row in rows]
    await writer.append(
        Entry(
            EXPORT,
            uuid.uuid4().hex,
            {"requested_by": requested_by, "records": len(records)},
            pseudonym,
            pseudonyms.key_label,
        ),
        durable=True,
    )
    unwrapped: dict[str, bytes] = {}
    out = []
    for record in records:
        if record.data_key not in unwrapped:
            unwrapped[record.data_key] = await data_keys.unwrap(keys[record.data_key])
        plain = payloads.decrypt(
            unwrapped[record.data_key], record.payload, record.record_id.encode()
        )
        out.append(
            {
                "chain": record.chain,
                "seq": record.seq,
                "record": record.fields(),
                "payload": plain.decode("utf-8", errors="replace"),
            }
        )
    return out
