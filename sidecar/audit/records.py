"""Audit records: what one record says, its canonical bytes and its place in the hash chain.

A record's *content* is the canonical JSON of its fields (UTF-8, keys sorted, no spaces) plus its
encrypted payload. Its hash is ``SM3(prev_hash || len(content) || content || len(payload) ||
payload)`` with 8-byte big-endian lengths; the first record of a chain has 32 zero bytes as
``prev_hash``. No field of the content ever holds personal data: the data subject is a keyed
pseudonym, and everything said or answered is in the SM4-GCM payload.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hsm.sm.sm3 import sm3

FORMAT_VERSION = 1
GENESIS = bytes(32)

#: Record kinds. Intents precede the work; each intent gets exactly one outcome (``ref``).
RPC_INTENT = "rpc.intent"
RPC_OUTCOME = "rpc.outcome"
TX_INTENT = "tx.intent"
TX_OUTCOME = "tx.outcome"
CHAIN_START = "chain.start"
EXPORT = "export"
KINDS = frozenset({RPC_INTENT, RPC_OUTCOME, TX_INTENT, TX_OUTCOME, CHAIN_START, EXPORT})


def canonical(value: Mapping[str, Any]) -> bytes:
    """The one byte string of a JSON object: sorted keys, no whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, content: bytes, payload: bytes) -> bytes:
    return sm3(
        prev_hash
        + len(content).to_bytes(8, "big")
        + content
        + len(payload).to_bytes(8, "big")
        + payload
    )


@dataclass(frozen=True)
class Entry:
    """What a caller asks to record; the writer adds chain, position, time and hashes."""

    kind: str
    record_id: str
    fields: Mapping[str, Any] = field(default_factory=dict)  # no personal data, ever
    subject: str = ""  # the pseudonym (hex) or ""
    subject_key: str = ""  # the pseudonym key's label
    plaintext: bytes | None = None  # encrypted before it is stored


@dataclass(frozen=True)
class Record:
    """A record as stored: one row of ``audit_records``."""

    chain: str
    seq: int
    record_id: str
    kind: str
    at: int  # microseconds since the epoch, UTC
    subject: str
    data_key: str
    content: bytes
    payload: bytes
    prev_hash: bytes
    hash: bytes

    def fields(self) -> dict[str, Any]:
        loaded = json.loads(self.content)
        if not isinstance(loaded, dict):
            raise ValueError("record content is not a JSON object")
        return loaded

    def as_row(self) -> dict[str, object]:
        return {
            "chain": self.chain,
            "seq": self.seq,
            "record_id": self.record_id,
            "kind": self.kind,
            "at": self.at,
            "subject": self.subject,
            "data_key": self.data_key,
            "content": self.content,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Record:
        return cls(
            chain=str(row["chain"]),
            seq=int(row["seq"]),
            record_id=str(row["record_id"]),
            kind=str(row["kind"]),
            at=int(row["at"]),
            subject=str(row["subject"]),
            data_key=str(row["data_key"]),
            content=bytes(row["content"]),
            payload=bytes(row["payload"]),
            prev_hash=bytes(row["prev_hash"]),
            hash=bytes(row["hash"]),
        )


def seal_record(
    *,
    chain: str,
    seq: int,
    at: int,
    entry: Entry,
    data_key: str,
    payload: bytes,
    prev_hash: bytes,
) -> Record:
    """The record for ``entry`` at ``seq``: its content names every indexed column."""
    content = canonical(
        {
            **entry.fields,
            "v": FORMAT_VERSION,
            "chain": chain,
            "seq": seq,
            "id": entry.record_id,
            "kind": entry.kind,
            "at": at,
            "subject": entry.subject,
            "subject_key": entry.subject_key,
            "data_key": data_key,
        }
    )
    return Record(
        chain=chain,
        seq=seq,
        record_id=entry.record_id,
        kind=entry.kind,
        at=at,
        subject=entry.subject,
        data_key=data_key,
        content=content,
        payload=payload,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, content, payload),
    )


def seal_problem(record: Record) -> str | None:
    """What is wrong with a record read back from a file (None: it is as it was sealed).

    Its hash must recompute and its columns must repeat its content; whether it links to its
    predecessor is for the caller, who knows the predecessor.
    """
    if chain_hash(record.prev_hash, record.content, record.payload) != record.hash:
        return "its hash does not recompute (the line was changed)"
    try:
        fields = record.fields()
    except ValueError:
        return "its content is not a JSON object"
    columns = {
        "chain": record.chain,
        "seq": record.seq,
        "id": record.record_id,
        "kind": record.kind,
        "at": record.at,
        "subject": record.subject,
        "data_key": record.data_key,
    }
    for name, value in columns.items():
        if fields.get(name) != value:
            return f"its {name} disagrees with its content"
    return None
