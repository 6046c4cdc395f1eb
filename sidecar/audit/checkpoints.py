"""Checkpoints and anchors: a chain's position and hash, signed with SM2 in the HSM.

A checkpoint's content is canonical JSON ``{v, chain, number, kind, position, hash, at,
prev_signature, key_label, key_fingerprint}`` (``kind`` is ``checkpoint``; ``final`` for the
one a clean stop writes, after which the chain takes no more records; or, after a purge,
``anchor``); its signature (raw r||s, GM/T 0009 default ID) covers exactly those bytes. Each
names the previous one's signature, so checkpoints form their own signed chain: removing or
reordering one breaks the link to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.audit.records import FORMAT_VERSION, canonical
from sidecar.store import Tx

CHECKPOINT = "checkpoint"
FINAL = "final"
ANCHOR = "anchor"


class CheckpointSigner(Protocol):
    key_label: str
    fingerprint: str

    async def sign(self, message: bytes) -> bytes:
        """Raw r||s (64 bytes) over ``message``."""
        ...


@dataclass(frozen=True)
class Checkpoint:
    chain: str
    number: int
    kind: str
    position: int
    at: int
    content: bytes
    signature: bytes

    def as_row(self) -> dict[str, object]:
        return {
            "chain": self.chain,
            "number": self.number,
            "kind": self.kind,
            "position": self.position,
            "at": self.at,
            "content": self.content,
            "signature": self.signature,
        }


async def last_checkpoint(tx: Tx, chain: str) -> dict[str, Any] | None:
    row = await tx.fetch_one(
        "SELECT number, signature FROM audit_checkpoints WHERE chain = :chain"
        " ORDER BY number DESC LIMIT 1",
        {"chain": chain},
    )
    return dict(row) if row else None


async def write_checkpoint(
    tx: Tx,
    signer: CheckpointSigner,
    *,
    chain: str,
    kind: str,
    position: int,
    hash_: bytes,
    at: int,
    extra: dict[str, Any] | None = None,
) -> Checkpoint:
    """Sign and insert the next checkpoint of ``chain`` (under the chain's checkpoint lock)."""
    await tx.lock(f"audit_checkpoints:{chain}")
    last = await last_checkpoint(tx, chain)
    number = 0 if last is None else int(last["number"]) + 1
    prev_signature = b"" if last is None else bytes(last["signature"])
    content = canonical(
        {
            **(extra or {}),
            "v": FORMAT_VERSION,
            "chain": chain,
            "number": number,
            "kind": kind,
            "position": position,
            "hash": hash_.hex(),
            "at": at,
            "prev_signature": prev_signature.hex(),
            "key_label": signer.key_label,
            "key_fingerprint": signer.fingerprint,
        }
    )
    signature = await signer.sign(content)
    checkpoint = Checkpoint(chain, number, kind, position, at, content, signature)
    await tx.execute(
        "INSERT INTO audit_checkpoints (chain, number, kind, position, at, content, signature)"
        " VALUES (:chain, :number, :kind, :position, :at, :content, :signature)",
        checkpoint.as_row(),
    )
    return checkpoint
