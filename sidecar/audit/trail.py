"""The audit trail as the request path sees it: RPC intents/outcomes and transaction ones.

The RPC filter opens an ``RpcAudit`` (its intent is queued, and committed at the latest with the
RPC's first transaction intent, which is durable before the platform is called) and keeps it in a
context variable, so the platform client's recorder can tie every transaction to the RPC,
the caller and the data subject without knowing about gRPC. Everything the caller or the platform
said goes into the encrypted payload; the record's fields say only who, what, when and how it went.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.audit.records import (
    CHAIN_START,
    RPC_INTENT,
    RPC_OUTCOME,
    TX_INTENT,
    TX_OUTCOME,
    Entry,
    Record,
)
from sidecar.audit.writer import AuditUnavailable, AuditWriter


class Pseudonyms(Protocol):
    key_label: str

    async def pseudonym(self, message: bytes) -> str: ...


@dataclass(frozen=True)
class RpcAudit:
    """The RPC being audited: what its transactions' records repeat."""

    record_id: str
    rpc: str
    tenant: str
    operator: str
    subject: str
    subject_key: str
    trace_id: str
    started: float


@dataclass(frozen=True)
class TxTicket:
    record_id: str
    infno: str
    msgid: str
    started: float
    rpc: RpcAudit | None


_current: contextvars.ContextVar[RpcAudit | None] = contextvars.ContextVar(
    "yibao_audit_rpc", default=None
)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True).encode()


class AuditTrail:
    """Records RPCs (for the filter) and platform transactions (for the platform client)."""

    def __init__(
        self, writer: AuditWriter, pseudonyms: Pseudonyms, instance: str, cache_size: int = 4096
    ) -> None:
        self.writer = writer
        self._pseudonyms = pseudonyms
        self._instance = instance
        # Recent pseudonyms, so a subject's next calls skip the HSM round trip. Keyed by an
        # HMAC-SHA256 under a per-process random key: the cache holds no ID number itself.
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._cache_size = cache_size
        self._cache_key = secrets.token_bytes(32)

    async def start(self) -> Record:
        return await self.writer.start(
            Entry(CHAIN_START, uuid.uuid4().hex, {"instance": self._instance})
        )

    async def close(self) -> None:
        await self.writer.close()

    async def pseudonym(self, subject: bytes | None) -> tuple[str, str]:
        if not subject:
            return "", ""
        slot = hmac.digest(self._cache_key, subject, "sha256")
        pseudonym = self._cache.get(slot)
        if pseudonym is None:
            pseudonym = await self._pseudonyms.pseudonym(subject)
            self._cache[slot] = pseudonym
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(slot)
        return pseudonym, self._pseudonyms.key_label

    # ------------------------------------------------------------------ RPCs
    async def rpc_intent(
        self,
        *,
        rpc: str,
        tenant: str,
        operator: str,
        subject: bytes | None,
        trace_id: str,
        request: bytes,
    ) -> RpcAudit:
        """The RPC's intent, queued in the chain (AuditUnavailable if the trail cannot record)."""
        pseudonym, key = await self.pseudonym(subject)
        audit = RpcAudit(
            uuid.uuid4().hex, rpc, tenant, operator, pseudonym, key, trace_id, time.perf_counter()
        )
        fields = {"rpc": rpc, "tenant": tenant, "operator": operator, "trace_id": trace_id}
        intent = Entry(RPC_INTENT, audit.record_id, fields, pseudonym, key, request)
        # Queued: committed with the RPC's first transaction intent, which must be durable
        # before the platform is called, or with the outcome (an RPC that calls no platform).
        await self.writer.append(intent)
        _current.set(audit)
        return audit

    async def rpc_outcome(
        self, audit: RpcAudit, *, status: str, reason: str, error: str, answer: bytes
    ) -> None:
        _current.set(None)
        await self.writer.append(self._rpc_outcome_entry(audit, status, reason, error, answer))

    def _rpc_outcome_entry(
        self, audit: RpcAudit, status: str, reason: str, error: str, answer: bytes
    ) -> Entry:
        fields = {
            "rpc": audit.rpc,
            "tenant": audit.tenant,
            "operator": audit.operator,
            "trace_id": audit.trace_id,
            "ref": audit.record_id,
            "status": status,
            "reason": reason,
            "error": error,
            "latency_ms": round((time.perf_counter() - audit.started) * 1000, 3),
        }
        return Entry(
            RPC_OUTCOME, uuid.uuid4().hex, fields, audit.subject, audit.subject_key, answer
        )

    # ------------------------------------------------------------------ transactions
    async def intent(
        self, infno: str, msgid: str, operator: str, data: Mapping[str, Any]
    ) -> TxTicket:
        """Before a transaction is sent (AuditUnavailable: do not send it)."""
        rpc = _current.get()
        ticket = TxTicket(uuid.uuid4().hex, infno, msgid, time.perf_counter(), rpc)
        fields = {**self._tx_fields(ticket), "operator": operator}
        entry = Entry(
            TX_INTENT,
            ticket.record_id,
            fields,
            rpc.subject if rpc else "",
            rpc.subject_key if rpc else "",
            _json({"input": data}),
        )
        refusal = self._tx_outcome_entry(ticket, "none", "AuditUnavailable", {})
        await self.writer.append(entry, refusal=refusal, durable=True)
        return ticket

    async def outcome(self, ticket: object, *, infcode: str, error: str, answer: Any) -> None:
        """After a transaction: its answer, refusal or failure."""
        if not isinstance(ticket, TxTicket):
            raise TypeError("not a ticket of this trail")
        await self.writer.append(self._tx_outcome_entry(ticket, infcode, error, answer))

    def _tx_fields(self, ticket: TxTicket) -> dict[str, Any]:
        rpc = ticket.rpc
        return {
            "infno": ticket.infno,
            "msgid": ticket.msgid,
            "rpc": rpc.rpc if rpc else "",
            "rpc_ref": rpc.record_id if rpc else "",
            "tenant": rpc.tenant if rpc else "",
            "trace_id": rpc.trace_id if rpc else "",
        }

    def _tx_outcome_entry(self, ticket: TxTicket, infcode: str, error: str, answer: Any) -> Entry:
        rpc = ticket.rpc
        fields = {
            **self._tx_fields(ticket),
            "ref": ticket.record_id,
            "infcode": infcode,
            "error": error,
            "latency_ms": round((time.perf_counter() - ticket.started) * 1000, 3),
        }
        return Entry(
            TX_OUTCOME,
            uuid.uuid4().hex,
            fields,
            rpc.subject if rpc else "",
            rpc.subject_key if rpc else "",
            _json({"answer": answer}),
        )


__all__ = ["AuditTrail", "AuditUnavailable", "RpcAudit", "TxTicket"]
