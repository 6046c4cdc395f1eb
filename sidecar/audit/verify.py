"""Offline verification of every chain and checkpoint, with the exported public key(s) only.

For each chain it reports the *first* problem, named by position:

* ``changed``   a record's content, payload or hash does not recompute, an indexed column
                disagrees with the content, or a record no longer links to a checkpoint's hash;
* ``removed``   a position is missing (a gap, or later records renumbered down, or records
                after the last checkpoint's position are gone);
* ``reordered`` the record at a position says it belongs at another one that is present;
* ``inserted``  a record sits where another record, now displaced, says it belongs;
* ``forged``    a checkpoint's signature does not verify, or its link to the previous one is
                broken (``removed`` when a checkpoint number is missing).

A chain whose records are all covered by its *final* checkpoint (written at a clean stop) is
finished; records after a final checkpoint are ``inserted``. A chain without one is *open*
(``ChainReport.open``): live, crashed, or cut. Whether that is a failure, and every check that
spans chains (the registry, predecessors, data keys, expected heads), is decided by
``sidecar.audit.history``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hsm.errors import HsmError
from hsm.sm.signature import Signature
from hsm.sm.sm2 import Sm2PublicKey
from hsm.sm2 import HostVerifier
from sidecar.audit.checkpoints import ANCHOR, FINAL
from sidecar.audit.records import GENESIS, Record, chain_hash
from sidecar.store import Store

_COLUMNS = ("chain", "kind", "at", "subject", "data_key")


@dataclass(frozen=True)
class Finding:
    chain: str  # the chain, or the instance for scope "registry"
    kind: str  # changed | removed | reordered | inserted | forged | unfinished
    position: int  # record position, or checkpoint / registry entry number
    message: str
    scope: str = "chain"  # chain | registry | head

    def __str__(self) -> str:
        return f"{self.kind}: {self.scope} {self.chain}: {self.message}"


@dataclass
class ChainReport:
    chain: str
    records: int = 0
    checkpoints: int = 0
    sealed_to: int = -1  # last position covered by a verified checkpoint
    last_position: int = -1
    first: Finding | None = None
    notes: list[str] = field(default_factory=list)
    open: bool = False  # no final checkpoint: live, crashed, or cut
    scope: str = "chain"
    verified: list[dict[str, Any]] = field(default_factory=list, repr=False)  # checkpoints
    first_seq: int = -1  # positions and hash of the records as stored (-1, "": none left)
    last_seq: int = -1
    head_hash: str = ""

    @property
    def ok(self) -> bool:
        return self.first is None

    def fail(self, finding: Finding) -> None:
        """Keep the first problem found."""
        if self.first is None:
            self.first = finding


def _content(record: Record) -> dict[str, Any] | None:
    try:
        loaded = json.loads(record.content)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


class Verifier:
    def __init__(self, public_keys: Sequence[Sm2PublicKey]) -> None:
        self._keys = {key.fingerprint(): key for key in public_keys}
        self._host = HostVerifier()

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(
        self, chain: str, rows: Sequence[Mapping[str, Any]], report: ChainReport
    ) -> list[dict[str, Any]] | None:
        verified: list[dict[str, Any]] = []
        prev_signature = ""
        for expected, row in enumerate(rows):
            number = int(row["number"])
            if number != expected:
                report.first = Finding(
                    chain, "removed", expected, f"checkpoint #{expected} is missing"
                )
                return None
            try:
                content = json.loads(bytes(row["content"]))
            except ValueError:
                content = None
            signature = bytes(row["signature"])
            problem = self._checkpoint_problem(content, row, signature, prev_signature)
            if problem:
                report.first = Finding(chain, "forged", number, f"checkpoint #{number}: {problem}")
                return None
            assert content is not None
            verified.append(content)
            prev_signature = signature.hex()
        return verified

    def _checkpoint_problem(
        self,
        content: Any,
        row: Mapping[str, Any],
        signature: bytes,
        prev_signature: str,
    ) -> str:
        if not isinstance(content, dict):
            return "content is not a JSON object"
        for key in ("chain", "number", "kind", "position", "at"):
            if content.get(key) != row[key]:
                return f"column {key} disagrees with the signed content"
        problem = self.signature_problem(content, bytes(row["content"]), signature)
        if problem:
            return problem
        if content.get("prev_signature") != prev_signature:
            return "does not name the previous checkpoint's signature"
        return ""

    # ------------------------------------------------------------------ records
    def verify_chain(
        self,
        chain: str,
        records: Sequence[Record],
        checkpoint_rows: Sequence[Mapping[str, Any]],
    ) -> ChainReport:
        report = ChainReport(chain, records=len(records), checkpoints=len(checkpoint_rows))
        if records:
            report.first_seq, report.last_seq = records[0].seq, records[-1].seq
            report.head_hash = records[-1].hash.hex()
        checkpoints = self._checkpoints(chain, checkpoint_rows, report)
        if checkpoints is None:
            return report
        report.verified = checkpoints
        anchors = [c for c in checkpoints if c["kind"] == ANCHOR]
        start, prev = 0, GENESIS
        if anchors:
            start, prev = int(anchors[-1]["position"]) + 1, bytes.fromhex(anchors[-1]["hash"])
            report.notes.append(f"purged up to position {start - 1} (signed anchor)")
        sealed = {
            int(c["position"]): c for c in checkpoints if int(c["position"]) >= start
        }  # position -> the latest checkpoint there
        live = [r for r in records if r.seq >= start]
        claims = [(_content(r) or {}).get("seq") for r in live]
        expected = start
        for index, record in enumerate(live):
            finding = self._record_problem(chain, record, expected, prev, claims, index)
            if finding is not None:
                report.first = finding
                return report
            checkpoint = sealed.get(record.seq)
            if checkpoint is not None:
                if checkpoint["hash"] != record.hash.hex():
                    report.first = Finding(
                        chain,
                        "changed",
                        record.seq,
                        f"records up to position {record.seq} were rewritten "
                        f"(checkpoint #{checkpoint['number']} signed another hash)",
                    )
                    return report
                report.sealed_to = record.seq
            prev = record.hash
            expected = record.seq + 1
        report.last_position = expected - 1
        covered = max((int(c["position"]) for c in checkpoints), default=-1)
        if covered > report.last_position:
            report.first = Finding(
                chain,
                "removed",
                report.last_position + 1,
                f"records from position {report.last_position + 1} to {covered} are missing "
                f"(a checkpoint covers position {covered})",
            )
            return report
        finals = [c for c in checkpoints if c["kind"] == FINAL]
        report.open = not finals
        if finals and report.last_position > int(finals[-1]["position"]):
            position = int(finals[-1]["position"])
            report.first = Finding(
                chain,
                "inserted",
                position + 1,
                f"records at positions {position + 1}..{report.last_position} come after the "
                f"final checkpoint #{finals[-1]['number']} (position {position})",
            )
        return report

    def signature_problem(self, content: Mapping[str, Any], raw: bytes, signature: bytes) -> str:
        """Why ``signature`` over ``raw`` (whose parsed form is ``content``) is not ours, or ""."""
        public_key = self._keys.get(str(content.get("key_fingerprint")))
        if public_key is None:
            return f"signed by {content.get('key_label')}, whose public key was not given"
        try:
            self._host.verify(public_key, raw, Signature.from_raw(signature))
        except HsmError:
            return "signature does not verify"
        return ""

    @staticmethod
    def _record_problem(
        chain: str,
        record: Record,
        expected: int,
        prev: bytes,
        claims: Sequence[Any],
        index: int,
    ) -> Finding | None:
        if record.seq > expected:
            return Finding(chain, "removed", expected, f"record at position {expected} is missing")
        content = _content(record)
        if content is None:
            return Finding(chain, "changed", record.seq, f"record {record.seq} is not readable")
        claimed = content.get("seq")
        if claimed != record.seq and isinstance(claimed, int):
            if claimed < record.seq:
                return Finding(
                    chain,
                    "inserted",
                    claimed,
                    f"a record was inserted at position {claimed} "
                    f"(record {claimed} now sits at position {record.seq})",
                )
            if record.seq in claims[index + 1 :]:
                return Finding(
                    chain,
                    "reordered",
                    record.seq,
                    f"position {record.seq} holds record {claimed}",
                )
            return Finding(
                chain, "removed", record.seq, f"record at position {record.seq} is missing"
            )
        if chain_hash(record.prev_hash, record.content, record.payload) != record.hash:
            return Finding(chain, "changed", record.seq, f"record {record.seq} was changed")
        for column in _COLUMNS:
            if content.get(column) != getattr(record, column):
                return Finding(
                    chain,
                    "changed",
                    record.seq,
                    f"record {record.seq}: column {column} disagrees with its content",
                )
        if content.get("id") != record.record_id:
            return Finding(
                chain, "changed", record.seq, f"record {record.seq}: column record_id changed"
            )
        if record.prev_hash != prev:
            return Finding(
                chain,
                "changed",
                record.seq - 1,
                f"record {record.seq - 1} was changed (record {record.seq} no longer links to it)",
            )
        return None


async def verify_store(
    store: Store, public_keys: Sequence[Sm2PublicKey], **options: Any
) -> list[ChainReport]:
    """Every chain's report, then any registry or expected head that failed.

    The checks span chains (``sidecar.audit.history.verify_history`` has the options).
    """
    from sidecar.audit.history import verify_history  # it builds on this module

    history = await verify_history(store, public_keys, **options)
    return [
        *history.chains.values(),
        *(r for r in history.reports() if r.scope != "chain" and not r.ok),
    ]
