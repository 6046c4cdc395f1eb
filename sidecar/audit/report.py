"""``yibao-audit verify --html FILE``: a one-page HTML report of a verification, for auditors.

Self-contained: one UTF-8 file, inline CSS, no script, no external asset (its Content-Security-
Policy forbids both, so even a value that escaped escaping could not run or call out). Every value
from the store (chain ids, messages, notes) is HTML-escaped: the store is what an attacker
controls. The verdict at the top is green only when verify exits 0; any problem makes it red and
puts the problems first. Times are shown in Beijing time (UTC+08:00, a fixed offset: China has no
daylight saving time, and the host's time zone plays no part); the generation time is passed in.

The page is written piece by piece to a text stream, and each list is bounded (``Limits``) with a
count of what was left out, so a history of many chains or checkpoints gives a bounded page;
``verify --json`` has everything.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO, TypeVar

from sidecar.audit.history import History
from sidecar.audit.summary import chain_state, head_entry, problems
from sidecar.audit.verify import ChainReport, Finding

T = TypeVar("T")
BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+08:00")

_CSS = """
body{font:14px/1.45 "Noto Sans CJK SC","Noto Sans",Arial,sans-serif;color:#1b1b1b;margin:0;
background:#fff}
main{max-width:1180px;margin:0 auto;padding:0 24px 32px}
.verdict{padding:18px 24px;color:#fff}
.verdict.ok{background:#1e7b34}.verdict.bad{background:#b3261e}
.verdict h1{margin:0 0 4px;font-size:24px}.verdict p{margin:0}
h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #d0d0d0;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td.id,td.sig{font-family:"DejaVu Sans Mono",monospace;word-break:break-all}
td.id{min-width:7em}
td.hash{font-family:"DejaVu Sans Mono",monospace;white-space:nowrap}
#problems{border-left:8px solid #b3261e;background:#fde7e5;padding:4px 16px 12px}
#problems h2{color:#8c1d18;border-color:#e6a19c}
#problems td{background:#fff5f4}
#problems.none{border-left-color:#1e7b34;background:#e8f4ea}
#problems.none h2{color:#1e6b30}
tr.bad td{background:#fde7e5}
td.status.ok{color:#1e6b30;font-weight:bold}td.status.bad{color:#b3261e;font-weight:bold}
.more{font-style:italic}
footer{margin-top:24px;color:#555;font-size:12px}
"""


_CHAIN_COLUMNS = (
    "status", "chain", "state", "records", "positions", "checkpoints verified", "sealed to",
    "last record hash", "notes",
)  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """At most this many rows per list; the rest are counted."""

    problems: int = 200
    chains: int = 500
    checkpoints: int = 500


def beijing(micros: int) -> str:
    """Microseconds since the epoch (UTC) as Beijing time."""
    at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    return at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _row(cells: Iterable[tuple[str, object]], css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    tds = "".join(f'<td class="{k}">{_e(v)}</td>' if k else f"<td>{_e(v)}</td>" for k, v in cells)
    return f"<tr{cls}>{tds}</tr>\n"


def _head(*names: str) -> str:
    return "<tr>" + "".join(f"<th>{_e(n)}</th>" for n in names) + "</tr>\n"


def _more(left: int, what: str) -> str:
    if left <= 0:
        return ""
    return f'<p class="more">… and {left} more {_e(what)} not listed (see verify --json).</p>\n'


def _table(
    out: TextIO,
    header: str,
    items: Iterable[T],
    row: Callable[[T], str],
    limit: int,
    what: str,
    empty: str,
) -> None:
    """Rows for the first ``limit`` items; the rest are only counted (never rendered)."""
    shown = left = 0
    for item in items:
        if shown == limit:
            left += 1
            continue
        if not shown:
            out.write("<table>\n" + header)
        out.write(row(item))
        shown += 1
    out.write("</table>\n" if shown else f"<p>{_e(empty)}</p>\n")
    out.write(_more(left, what))


def _span(first: int, last: int) -> str:
    return "–" if first < 0 else f"{first}..{last}"


def findings(history: History) -> Iterator[Finding]:
    for report in problems(history):
        if report.first is not None:
            yield report.first


def _problem_row(finding: Finding) -> str:
    return _row(
        [
            ("kind", finding.kind),
            ("", finding.scope),
            ("id", finding.chain),
            ("", finding.position),
            ("", finding.message),
        ],
        "bad",
    )


def _chain_row(r: ChainReport) -> str:
    status = "ok" if r.first is None else r.first.kind
    return _row(
        [
            ("status " + ("ok" if r.ok else "bad"), status),
            ("id", r.chain),
            ("", chain_state(r)),
            ("", r.records),
            ("", _span(r.first_seq, r.last_seq)),
            ("", f"{len(r.verified)} of {r.checkpoints}"),
            ("", r.sealed_to if r.sealed_to >= 0 else "–"),
            ("hash", r.head_hash[:16] + "…" if r.head_hash else "–"),
            ("", "; ".join(r.notes)),
        ],
        "" if r.ok else "bad",
    )


def _checkpoint_row(item: tuple[str, dict[str, Any]]) -> str:
    chain, c = item
    return _row(
        [
            ("id", chain),
            ("", c.get("number")),
            ("", c.get("kind")),
            ("", c.get("position")),
            ("", beijing(int(c.get("at", 0)))),
            ("hash", str(c.get("hash", ""))[:16] + "…"),
        ]
    )


def _registry_row(r: ChainReport) -> str:
    return _row(
        [
            ("status " + ("ok" if r.ok else "bad"), "ok" if r.ok else "FAIL"),
            ("id", r.chain),
            ("", r.records),
            ("", "" if r.first is None else r.first.message),
        ],
        "" if r.ok else "bad",
    )


def _head_row(line: str) -> str:
    h = head_entry(line)
    return _row(
        [("", h["scope"]), ("id", h["id"]), ("", f"#{h['number']}"), ("sig", h["signature"])]
    )


def write_report(
    out: TextIO,
    history: History,
    *,
    exit_code: int,
    generated_at: dt.datetime,
    options: dict[str, Any],
    limits: Limits = Limits(),
) -> None:
    """Write the report of ``history`` (verify's result, ``exit_code``) to ``out``."""
    bad = sum(1 for _ in findings(history))
    chains_bad = sum(1 for r in history.chains.values() if not r.ok)
    ok = exit_code == 0 and bad == 0
    generated = generated_at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    verdict = (
        "Audit trail verified"
        if ok
        else f"Audit trail NOT verified: {bad} problem{'s' if bad != 1 else ''} found"
    )
    out.write(
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<title>{_e(verdict)} — yibao-audit</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header class="verdict {"ok" if ok else "bad"}" id="verdict"><h1>{_e(verdict)}</h1>'
        f"<p>{len(history.chains)} chains, {chains_bad} with problems · "
        f"exit code {exit_code} · generated {_e(generated)} Beijing time (UTC+08:00)</p>"
        "</header>\n<main>\n"
    )
    out.write('<section id="problems">\n' if bad else '<section id="problems" class="none">\n')
    out.write(f"<h2>Problems ({bad})</h2>\n")
    _table(
        out,
        _head("kind", "scope", "chain / instance", "position", "message"),
        findings(history),
        _problem_row,
        limits.problems,
        "problems",
        "No problem found: every chain, checkpoint, registry entry and expected head verified.",
    )
    out.write('</section>\n<section id="chains">\n<h2>Chains</h2>\n')
    _table(
        out,
        _head(*_CHAIN_COLUMNS),
        # problem chains first, so a bounded list never hides one behind many good ones
        (r for wanted in (False, True) for r in history.chains.values() if r.ok is wanted),
        _chain_row,
        limits.chains,
        "chains",
        "The store holds no chain.",
    )
    out.write('</section>\n<section id="checkpoints">\n<h2>Verified checkpoints</h2>\n')
    _table(
        out,
        _head("chain", "number", "kind", "position", "signed at (Beijing)", "hash"),
        ((r.chain, c) for r in history.chains.values() for c in r.verified),
        _checkpoint_row,
        limits.checkpoints,
        "checkpoints",
        "No checkpoint verified.",
    )
    out.write('</section>\n<section id="registry">\n<h2>Chain registry</h2>\n')
    _table(
        out,
        _head("status", "instance", "entries", "problem"),
        history.registries,
        _registry_row,
        limits.chains,
        "registries",
        "No registry entry (chains begun before the registry existed).",
    )
    out.write(
        '</section>\n<section id="heads">\n<h2>Heads to keep outside the store</h2>\n'
        "<p>Pass these to the next run with <code>--expect-head FILE</code>.</p>\n"
    )
    _table(
        out,
        _head("scope", "id", "number", "signature"),
        history.current,
        _head_row,
        limits.chains,
        "heads",
        "No head.",
    )
    named = ", ".join(options.get("open_chains", [])) or "none"
    out.write(
        "</section>\n<footer>\n"
        f"<p>Chains named live or crashed: {_e(named)}; every unfinished chain accepted: "
        f"{_e('yes' if options.get('allow_open') else 'no')}; data keys unwrapped in the HSM: "
        f"{_e('yes' if options.get('data_keys') else 'no')}; expected heads checked: "
        f"{_e(options.get('expected_heads', 0))}.</p>\n"
        f"<p>Public keys (SHA-256 of the SubjectPublicKeyInfo): "
        f"{_e(', '.join(options.get('public_keys', [])))}.</p>\n"
        "<p>Produced by <code>yibao-audit verify --html</code>; docs/audit.md explains each "
        "kind of problem.</p>\n</footer>\n</main>\n</body>\n</html>\n"
    )
