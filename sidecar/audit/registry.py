"""The chain registry: per instance, a signed and linked list of chain starts and clean stops.

Every entry is canonical JSON ``{v, instance, number, event, chain, at, prev_signature,
key_label, key_fingerprint, ...}`` signed with SM2 by the ``audit`` key (like a checkpoint), and
names the previous entry of the same instance by its signature, so an entry cannot be removed
from the middle, reordered or changed without a signature that no longer fits.

* ``open`` (written before a chain's first record) also names the ``predecessor``: the chain of
  the instance's previous entry, that chain's last signed checkpoint and its last stored record
  ``{chain, checkpoint, signature, position, hash}`` (-1 and "" when it had none). The chain's
  first record repeats it. If the predecessor crashed, this signs its tail at the restart: records
  after its last checkpoint are then covered too (the hash of the last one pins all before it).
* ``close`` (written with the final checkpoint, in the same transaction) names the final
  checkpoint's number, position, hash and signature.

So deleting a whole chain, its final checkpoint with the records before it, or all of its
checkpoints contradicts a signed entry. What nothing signed names is the newest suffix of an
instance's history; docs/audit.md says what operators do about that (``--expect-head``).
"""

from __future__ import annotations

from typing import Any

from sidecar.audit.checkpoints import Checkpoint, CheckpointSigner
from sidecar.audit.records import FORMAT_VERSION, canonical
from sidecar.store import Tx

OPEN = "open"
CLOSE = "close"


def instance_of(chain: str) -> str:
    """The instance a chain id names (``<instance>/<start>-<random>``), or the id itself."""
    return chain.split("/", 1)[0]


async def _append(
    tx: Tx,
    signer: CheckpointSigner,
    *,
    instance: str,
    event: str,
    chain: str,
    at: int,
    extra: dict[str, Any],
    last: dict[str, Any] | None,
) -> dict[str, Any]:
    number = 0 if last is None else int(last["number"]) + 1
    fields = {
        **extra,
        "v": FORMAT_VERSION,
        "instance": instance,
        "number": number,
        "event": event,
        "chain": chain,
        "at": at,
        "prev_signature": "" if last is None else bytes(last["signature"]).hex(),
        "key_label": signer.key_label,
        "key_fingerprint": signer.fingerprint,
    }
    content = canonical(fields)
    signature = await signer.sign(content)
    await tx.execute(
        "INSERT INTO audit_registry (instance, number, event, chain, at, content, signature)"
        " VALUES (:instance, :number, :event, :chain, :at, :content, :signature)",
        {
            "instance": instance,
            "number": number,
            "event": event,
            "chain": chain,
            "at": at,
            "content": content,
            "signature": signature,
        },
    )
    return fields


async def _last(tx: Tx, instance: str) -> dict[str, Any] | None:
    row = await tx.fetch_one(
        "SELECT number, chain, signature FROM audit_registry WHERE instance = :instance"
        " ORDER BY number DESC LIMIT 1",
        {"instance": instance},
    )
    return dict(row) if row else None


async def register_open(
    tx: Tx, signer: CheckpointSigner, *, instance: str, chain: str, at: int
) -> dict[str, Any]:
    """Sign the start of ``chain``; returns the entry (``number``, ``predecessor``)."""
    await tx.lock(f"audit_registry:{instance}")
    last = await _last(tx, instance)
    predecessor: dict[str, Any] | None = None
    if last is not None:
        previous = str(last["chain"])
        row = await tx.fetch_one(
            "SELECT number, signature FROM audit_checkpoints WHERE chain = :chain"
            " ORDER BY number DESC LIMIT 1",
            {"chain": previous},
        )
        tail = await tx.fetch_one(
            "SELECT seq, hash FROM audit_records WHERE chain = :chain ORDER BY seq DESC LIMIT 1",
            {"chain": previous},
        )
        predecessor = {
            "chain": previous,
            "checkpoint": int(row["number"]) if row else -1,
            "signature": bytes(row["signature"]).hex() if row else "",
            "position": int(tail["seq"]) if tail else -1,
            "hash": bytes(tail["hash"]).hex() if tail else "",
        }
    return await _append(
        tx,
        signer,
        instance=instance,
        event=OPEN,
        chain=chain,
        at=at,
        extra={"predecessor": predecessor},
        last=last,
    )


async def register_close(
    tx: Tx, signer: CheckpointSigner, *, instance: str, final: Checkpoint, at: int
) -> dict[str, Any]:
    """Sign the clean stop of ``final.chain``, naming its final checkpoint."""
    await tx.lock(f"audit_registry:{instance}")
    last = await _last(tx, instance)
    return await _append(
        tx,
        signer,
        instance=instance,
        event=CLOSE,
        chain=final.chain,
        at=at,
        extra={
            "checkpoint": final.number,
            "position": final.position,
            "checkpoint_signature": final.signature.hex(),
        },
        last=last,
    )
