"""The whole history: every chain, the chain registry, the links between them, data keys, heads.

``Verifier.verify_chain`` checks one chain against its own checkpoints. This module adds what
only the whole store can show (docs/audit.md, "What verify detects"):

* every registry entry verifies and names its predecessor (``registry.py``); every chain an
  ``open`` entry names exists; every final checkpoint a ``close`` entry names exists;
* every chain's first record names its registry entry, which must exist, and its predecessor's
  last checkpoint and last record, which must still be there with the same signature and hash
  (the last record seals a crashed predecessor's tail);
* a chain without a final checkpoint is ``unfinished`` (a failure) unless the operator names it
  as live or crashed; then its records after the last checkpoint are its open tail;
* every data key a record needs is present; with ``unwrap`` (the HSM) each one unwraps and opens
  the first payload that uses it (nothing is printed or kept);
* every signature the operator exported earlier (``expected_heads``) is still in the store.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hsm.datakeys import DataKeyBlob
from hsm.errors import HsmError, PolicyError, TokenError
from hsm.keys import parse_label
from hsm.sm.sm2 import Sm2PublicKey
from sidecar.audit import payloads
from sidecar.audit.checkpoints import ANCHOR
from sidecar.audit.records import CHAIN_START, Record
from sidecar.audit.registry import CLOSE, OPEN
from sidecar.audit.schema import MIGRATIONS
from sidecar.audit.verify import ChainReport, Finding, Verifier
from sidecar.store import Store, StoreError, Tx

Unwrap = Callable[[bytes], Awaitable[bytes]]
SCHEMA_VERSION = max(m.version for m in MIGRATIONS)


@dataclass
class History:
    chains: dict[str, ChainReport] = field(default_factory=dict)
    registries: list[ChainReport] = field(default_factory=list)
    heads: list[ChainReport] = field(default_factory=list)  # expected heads that are missing
    current: list[str] = field(default_factory=list)  # "head ..." lines to export

    def reports(self) -> list[ChainReport]:
        return [*self.chains.values(), *self.registries, *self.heads]

    def chain(self, chain: str) -> ChainReport:
        """The report of ``chain``; an empty one when the store holds nothing of it."""
        if chain not in self.chains:
            self.chains[chain] = ChainReport(chain)
        return self.chains[chain]


@dataclass
class _Store:
    records: dict[str, list[Record]]
    checkpoints: dict[str, list[Mapping[str, Any]]]
    registry: dict[str, list[Mapping[str, Any]]]
    data_keys: dict[str, bytes]


async def _schema_version(tx: Tx) -> None:
    """StoreError unless the audit tables are at the version this code reads (verify never
    migrates: it only reads)."""
    try:
        row = await tx.fetch_one(
            "SELECT MAX(version) AS v FROM store_migrations WHERE component = 'audit'"
        )
    except StoreError:
        raise
    except Exception:  # no migrations table at all: not a sidecar's store
        raise StoreError("audit: the store has no audit tables") from None
    version = int(row["v"]) if row is not None and row["v"] is not None else 0
    if version < SCHEMA_VERSION:
        raise StoreError(
            f"audit: the store's audit tables are at version {version}, verify reads version "
            f"{SCHEMA_VERSION}: start the upgraded sidecar once (it migrates the store) first"
        )


async def _read(store: Store) -> _Store:
    async with store.transaction() as tx:
        await _schema_version(tx)
        chains = sorted(
            str(row["chain"])
            for row in await tx.fetch_all(
                "SELECT DISTINCT chain FROM audit_records"
                " UNION SELECT DISTINCT chain FROM audit_checkpoints"
            )
        )
        read = _Store({}, {}, defaultdict(list), {})
        for chain in chains:
            read.records[chain] = [
                Record.from_row(row)
                for row in await tx.fetch_all(
                    "SELECT * FROM audit_records WHERE chain = :chain ORDER BY seq",
                    {"chain": chain},
                )
            ]
            read.checkpoints[chain] = await tx.fetch_all(
                "SELECT * FROM audit_checkpoints WHERE chain = :chain ORDER BY number",
                {"chain": chain},
            )
        for row in await tx.fetch_all("SELECT * FROM audit_registry ORDER BY instance, number"):
            read.registry[str(row["instance"])].append(row)
        for row in await tx.fetch_all("SELECT key_id, wrapped FROM audit_data_keys"):
            read.data_keys[str(row["key_id"])] = bytes(row["wrapped"])
    return read


def _registry(
    verifier: Verifier, instance: str, rows: Sequence[Mapping[str, Any]]
) -> tuple[ChainReport, list[dict[str, Any]]]:
    """The verified entries of one instance's registry, in order, up to the first problem."""
    report = ChainReport(instance, records=len(rows), scope="registry")
    entries: list[dict[str, Any]] = []
    prev = ""
    for expected, row in enumerate(rows):
        number = int(row["number"])

        def fail(kind: str, message: str, number: int = number) -> None:
            report.fail(Finding(instance, kind, number, message, scope="registry"))

        if number != expected:
            fail("removed", f"entry #{expected} is missing", expected)
            break
        try:
            content = json.loads(bytes(row["content"]))
        except ValueError:
            content = None
        if not isinstance(content, dict):
            fail("forged", f"entry #{number}: content is not a JSON object")
            break
        disagree = [
            k for k in ("instance", "number", "event", "chain", "at") if content.get(k) != row[k]
        ]
        if disagree:
            fail(
                "forged", f"entry #{number}: column {disagree[0]} disagrees with the signed content"
            )
            break
        problem = verifier.signature_problem(
            content, bytes(row["content"]), bytes(row["signature"])
        )
        if not problem and content.get("prev_signature") != prev:
            problem = "does not name the previous entry's signature"
        if problem:
            fail("forged", f"entry #{number}: {problem}")
            break
        entries.append(content)
        prev = bytes(row["signature"]).hex()
    return report, entries


def _signatures(read: _Store) -> dict[tuple[str, int], str]:
    return {
        (chain, int(row["number"])): bytes(row["signature"]).hex()
        for chain, rows in read.checkpoints.items()
        for row in rows
    }


def _check_predecessor(
    history: History,
    read: _Store,
    signatures: Mapping[tuple[str, int], str],
    chain: str,
    predecessor: Any,
) -> None:
    """The predecessor a chain's start names is still there: the checkpoint it named, and the
    last record it had then (which seals a crashed predecessor's tail)."""
    if not isinstance(predecessor, dict):
        return
    previous, number = str(predecessor.get("chain")), int(predecessor.get("checkpoint", -1))
    if previous not in read.records:
        history.chain(previous).fail(
            Finding(previous, "removed", 0, f"the whole chain is missing (chain {chain} names it)")
        )
        return
    report = history.chain(previous)
    if number >= 0 and signatures.get((previous, number)) != predecessor.get("signature"):
        report.fail(
            Finding(
                previous,
                "removed",
                number,
                f"checkpoint #{number}, which the start of chain {chain} names, is missing "
                "(the chain's tail or checkpoints were deleted)",
            )
        )
        return
    position = int(predecessor.get("position", -1))
    if position < 0 or report.first is not None:
        return
    purged_to = max(
        (int(c["position"]) for c in report.verified if c["kind"] == ANCHOR), default=-1
    )
    if position <= purged_to:
        return
    found = {r.seq: r for r in read.records[previous]}.get(position)
    if found is None:
        report.fail(
            Finding(
                previous,
                "removed",
                position,
                f"record {position}, which the start of chain {chain} seals, is missing "
                "(the chain's tail was deleted)",
            )
        )
    elif found.hash.hex() != predecessor.get("hash"):
        report.fail(
            Finding(
                previous,
                "changed",
                position,
                f"records up to position {position} were rewritten (the start of chain {chain} "
                "sealed another hash)",
            )
        )
    elif position > report.sealed_to:
        report.sealed_to = position
        report.notes.append(f"sealed up to position {position} by the start of chain {chain}")


def _cross_check(history: History, read: _Store, verifier: Verifier) -> None:
    signatures = _signatures(read)
    for instance, rows in sorted(read.registry.items()):
        report, entries = _registry(verifier, instance, rows)
        history.registries.append(report)
        if rows:
            number = len(rows) - 1
            head = bytes(rows[-1]["signature"]).hex()
            history.current.append(f"head registry {instance} #{number} {head}")
        for entry in entries:
            chain, number = str(entry["chain"]), int(entry["number"])
            exists = chain in read.records or chain in read.checkpoints
            if entry["event"] == OPEN:
                if not exists:
                    history.chain(chain).fail(
                        Finding(
                            chain,
                            "removed",
                            0,
                            f"the whole chain is missing (registry {instance} #{number} "
                            "records its start)",
                        )
                    )
                _check_predecessor(history, read, signatures, chain, entry.get("predecessor"))
            elif entry["event"] == CLOSE:
                final = int(entry["checkpoint"])
                if signatures.get((chain, final)) != entry.get("checkpoint_signature"):
                    history.chain(chain).fail(
                        Finding(
                            chain,
                            "removed",
                            final,
                            f"final checkpoint #{final} (registry {instance} #{number}) is "
                            "missing: the chain's checkpoints or its tail were deleted",
                        )
                    )
    registered = {
        (instance, int(row["number"])): row
        for instance, rows in read.registry.items()
        for row in rows
    }
    for chain, records in read.records.items():
        if not records or records[0].seq != 0 or records[0].kind != CHAIN_START:
            continue  # purged: the registry and the anchor speak for the start
        if history.chain(chain).first is not None:
            continue  # its content may not even be JSON; the first problem is named
        start = records[0].fields()
        names = start.get("registry")
        if not isinstance(names, dict):
            history.chain(chain).notes.append("not in the registry (begun before it existed)")
            continue
        instance, number = str(names.get("instance")), int(names.get("number", -1))
        row = registered.get((instance, number))
        if row is None or str(row["chain"]) != chain or str(row["event"]) != OPEN:
            history.chain(chain).fail(
                Finding(
                    chain,
                    "removed",
                    0,
                    f"registry {instance} entry #{number}, which the chain's start names, "
                    "is missing",
                )
            )
        _check_predecessor(history, read, signatures, chain, start.get("predecessor"))


def _names_a_kek(blob: bytes) -> None:
    """A blob that names another key of the token would make the token fail (TokenError, as if
    the HSM were down): refuse it here as the finding it is."""
    label = DataKeyBlob.parse(blob).kek_label
    if parse_label(label)[0] != "kek":
        raise PolicyError(f"it names key {label}, which is not a KEK")


async def _check_data_keys(history: History, read: _Store, unwrap: Unwrap | None) -> None:
    for chain, records in read.records.items():
        report = history.chain(chain)
        first_use: dict[str, Record] = {}
        for record in records:
            if record.data_key not in read.data_keys:
                report.fail(
                    Finding(
                        chain,
                        "removed",
                        record.seq,
                        f"data key {record.data_key}, which record {record.seq} needs, is missing",
                    )
                )
                break
            first_use.setdefault(record.data_key, record)
        if unwrap is None:
            continue
        for key_id, record in first_use.items():
            try:
                _names_a_kek(read.data_keys[key_id])
                key = await unwrap(read.data_keys[key_id])
            except TokenError:
                raise  # the HSM cannot be used: exit 3, not a finding
            except HsmError as exc:  # tampered, malformed, names another or a retired key
                report.fail(
                    Finding(
                        chain, "changed", record.seq, f"data key {key_id} does not unwrap: {exc}"
                    )
                )
                break
            try:
                payloads.decrypt(key, record.payload, record.record_id.encode())
            except payloads.PayloadError:
                report.fail(
                    Finding(
                        chain,
                        "changed",
                        record.seq,
                        f"data key {key_id} does not open the payload of record {record.seq}",
                    )
                )
                break


def _check_open(
    history: History, read: _Store, open_chains: Collection[str], allow_open: bool
) -> None:
    for chain in sorted(set(open_chains) - set(read.records) - set(read.checkpoints)):
        history.chain(chain).fail(
            Finding(chain, "removed", 0, "the whole chain is missing (named by --open-chain)")
        )
    for chain, report in history.chains.items():
        if not report.open or report.first is not None:
            continue
        tail = (
            f"positions {report.sealed_to + 1}..{report.last_position} are covered by no checkpoint"
            if report.last_position > report.sealed_to
            else "every record is covered by a signature"
        )
        rows = read.checkpoints.get(chain, [])
        if rows:
            signature = bytes(rows[-1]["signature"]).hex()
            history.current.append(f"head chain {chain} #{rows[-1]['number']} {signature}")
        if chain in open_chains or allow_open:
            report.notes.append(f"open: no final checkpoint, named live or crashed; {tail}")
        else:
            report.fail(
                Finding(
                    chain,
                    "unfinished",
                    report.sealed_to + 1,
                    f"no final checkpoint (still running, crashed, or its tail was cut); {tail}; "
                    "name it with --open-chain if it is live or crashed",
                )
            )


def _check_heads(history: History, read: _Store, expected: Sequence[str]) -> None:
    present = set(_signatures(read).values()) | {
        bytes(row["signature"]).hex() for rows in read.registry.values() for row in rows
    }
    for signature in expected:
        if signature.lower() not in present:
            report = ChainReport(signature[:16], scope="head")
            report.fail(
                Finding(
                    signature[:16],
                    "removed",
                    0,
                    "the signed object this exported head names is not in the store "
                    "(history after it was deleted)",
                    scope="head",
                )
            )
            history.heads.append(report)


async def verify_history(
    store: Store,
    public_keys: Sequence[Sm2PublicKey],
    *,
    open_chains: Collection[str] = (),
    allow_open: bool = False,
    expected_heads: Sequence[str] = (),
    unwrap: Unwrap | None = None,
) -> History:
    """Verify everything the store holds; see the module docstring."""
    verifier = Verifier(public_keys)
    read = await _read(store)
    history = History()
    for chain in read.records.keys() | read.checkpoints.keys():
        history.chains[chain] = verifier.verify_chain(
            chain, read.records.get(chain, []), read.checkpoints.get(chain, [])
        )
    _cross_check(history, read, verifier)
    await _check_data_keys(history, read, unwrap)
    _check_open(history, read, open_chains, allow_open)
    _check_heads(history, read, expected_heads)
    history.chains = dict(sorted(history.chains.items()))
    return history
