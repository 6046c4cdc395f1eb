"""A verification's result as plain data: what ``yibao-audit verify --json`` prints and the HTML
report (``report.py``) shows.

One document per run (``FORMAT``): the verdict and exit code, every chain (positions, record count,
the hash of its last stored record, checkpoints stored and verified, open or closed), every problem
(the first per chain, registry and expected head, as ``verify`` finds them), each instance's
registry and the ``head`` signatures to keep outside the store. Times are microseconds since the
epoch, UTC, as stored. Nothing in it is personal data: records are named by chain and position,
never by subject or payload.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from sidecar.audit.checkpoints import FINAL
from sidecar.audit.history import History
from sidecar.audit.verify import ChainReport

FORMAT = "yibao-audit-verify/1"


def chain_state(report: ChainReport) -> str:
    """``closed`` (a verified final checkpoint), ``open`` (every checkpoint verified and none is
    final: live, crashed or cut), or ``unknown`` (its checkpoints did not verify)."""
    if any(c.get("kind") == FINAL for c in report.verified):
        return "closed"
    return "open" if len(report.verified) == report.checkpoints else "unknown"


def _position(value: int) -> int | None:
    return value if value >= 0 else None


def chain_entry(report: ChainReport) -> dict[str, Any]:
    last = report.verified[-1] if report.verified else None
    return {
        "id": report.chain,
        "ok": report.ok,
        "state": chain_state(report),
        "records": report.records,
        "first_seq": _position(report.first_seq),
        "last_seq": _position(report.last_seq),
        "head_hash": report.head_hash or None,
        "checkpoints": report.checkpoints,
        "checkpoints_verified": len(report.verified),
        "last_checkpoint": None
        if last is None
        else {k: last.get(k) for k in ("number", "kind", "position", "hash", "at")},
        "sealed_to": _position(report.sealed_to),
        "notes": list(report.notes),
    }


def problem_entry(report: ChainReport) -> dict[str, Any]:
    finding = report.first
    assert finding is not None
    return {
        "kind": finding.kind,
        "scope": finding.scope,
        "chain": finding.chain,
        "seq": finding.position,
        "message": finding.message,
        "line": f"FAIL {finding}",
    }


def registry_entry(report: ChainReport) -> dict[str, Any]:
    return {
        "instance": report.chain,
        "ok": report.ok,
        "entries": report.records,
        "problem": None if report.first is None else report.first.message,
    }


def head_entry(line: str) -> dict[str, Any]:
    """``head registry I #N SIG`` / ``head chain C #N SIG`` as data (the id may hold spaces)."""
    _, scope, rest = line.split(" ", 2)
    name, number, signature = rest.rsplit(" ", 2)
    return {"scope": scope, "id": name, "number": int(number.lstrip("#")), "signature": signature}


def problems(history: History) -> Iterator[ChainReport]:
    """Every report with a problem, chains first (in id order), then registries, then heads."""
    every = itertools.chain(history.chains.values(), history.registries, history.heads)
    return (report for report in every if report.first is not None)  # no list of all chains


def document(history: History, exit_code: int, options: dict[str, Any]) -> dict[str, Any]:
    """The whole result; ``options`` says how verify ran (open chains named, data keys...)."""
    found = [problem_entry(report) for report in problems(history)]
    return {
        "format": FORMAT,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "options": options,
        "summary": {
            "chains": len(history.chains),
            "chains_with_problems": sum(1 for r in history.chains.values() if not r.ok),
            "problems": len(found),
        },
        "problems": found,
        "chains": [chain_entry(report) for report in history.chains.values()],
        "registries": [registry_entry(report) for report in history.registries],
        "heads": [head_entry(line) for line in history.current],
    }


def write_json(doc: dict[str, Any], out: TextIO) -> None:
    """UTF-8 as is (no ``\\u`` escapes), indented for reading, one trailing newline."""
    json.dump(doc, out, ensure_ascii=False, indent=2)
    out.write("\n")


def options(
    *,
    open_chains: Sequence[str],
    allow_open: bool,
    expected_heads: int,
    data_keys: bool,
    public_keys: Sequence[str],
) -> dict[str, Any]:
    return {
        "open_chains": sorted(open_chains),
        "allow_open": allow_open,
        "expected_heads": expected_heads,
        "data_keys": data_keys,
        "public_keys": list(public_keys),
    }
