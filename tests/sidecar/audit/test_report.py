"""The HTML report and the JSON document of a verification, from verify's own result objects:
escaping (the store is the attacker's), a verdict that is never green on a problem, Beijing time
whatever the host's zone, and bounded output for a huge history."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import tracemalloc
from html.parser import HTMLParser

from sidecar.audit.checkpoints import CHECKPOINT, FINAL
from sidecar.audit.history import History
from sidecar.audit.report import Limits, beijing, write_report
from sidecar.audit.summary import chain_state, document, head_entry, write_json
from sidecar.audit.verify import ChainReport, Finding

EVIL = "<script>alert('x')</script>\"'&"
AT = dt.datetime(2026, 12, 6, 16, 30, tzinfo=dt.UTC)  # 00:30 the next day in Beijing
OPTIONS = {"open_chains": [EVIL], "allow_open": False, "data_keys": False, "public_keys": []}


def good_chain(chain: str = "sidecar-0/20261206T020000Z-a1b2c3") -> ChainReport:
    report = ChainReport(chain, records=10, checkpoints=2, sealed_to=9, last_position=9)
    report.first_seq, report.last_seq, report.head_hash = 0, 9, "ab" * 32
    report.verified = [
        {"number": 0, "kind": CHECKPOINT, "position": 4, "hash": "cd" * 32, "at": 0},
        {"number": 1, "kind": FINAL, "position": 9, "hash": "ab" * 32, "at": 1_765_000_000_000_000},
    ]
    return report


def bad_chain(chain: str, message: str = "record 3 was changed") -> ChainReport:
    report = ChainReport(chain, records=5, first_seq=0, last_seq=4, head_hash="ef" * 32)
    report.fail(Finding(chain, "changed", 3, message))
    return report


def history(*chains: ChainReport) -> History:
    made = History()
    made.chains = {c.chain: c for c in chains}
    registry = ChainReport("sidecar-0", records=2, scope="registry")
    made.registries = [registry]
    made.current = ["head registry sidecar-0 #1 " + "9f" * 64]
    return made


def render(made: History, exit_code: int, limits: Limits | None = None) -> str:
    out = io.StringIO()
    write_report(
        out, made, exit_code=exit_code, generated_at=AT, options=OPTIONS, limits=limits or Limits()
    )
    return out.getvalue()


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    return tags


def test_every_value_from_the_store_is_escaped() -> None:
    note = good_chain(EVIL)
    note.notes.append(EVIL)
    made = history(note, bad_chain(EVIL + "2", message=EVIL))
    made.current.append(f"head chain {EVIL} #3 " + "00" * 64)
    page = render(made, 1)
    tags = parsed(page)
    assert "script" not in tags.tags and "<script" not in page
    assert set(tags.tags) <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "p", "main", "section",
        "h2", "table", "tr", "th", "td", "footer", "code",
    }  # fmt: skip
    text = "".join(tags.text)
    assert text.count(EVIL) >= 6  # chains, problem, message, note, head, options: all shown
    assert "default-src 'none'" in page  # and no script could run even if one got through


def test_a_problem_is_never_a_green_page() -> None:
    unfinished = ChainReport("live", open=True)
    unfinished.fail(Finding("live", "unfinished", 0, "no final checkpoint"))
    for exit_code in (0, 1):  # even if a caller got the exit code wrong
        page = render(history(good_chain(), unfinished), exit_code)
        assert 'class="verdict bad"' in page and "verdict ok" not in page
        assert "NOT verified: 1 problem found" in page
        assert '<section id="problems">' in page and "no final checkpoint" in page
    clean = render(history(good_chain()), 0)
    assert 'class="verdict ok"' in clean and "<h1>Audit trail verified</h1>" in clean
    assert '<section id="problems" class="none">' in clean and "No problem found" in clean


def test_problem_chains_come_first_and_times_are_beijing_time() -> None:
    page = render(history(good_chain("a-good"), bad_chain("z-bad")), 1)
    assert page.index("z-bad") < page.index("a-good")
    assert "generated 2026-12-07 00:30:00 Beijing time (UTC+08:00)" in page
    assert "1970-01-01 08:00:00" in page  # checkpoint #0 at the epoch
    assert beijing(1_765_000_000_000_000) == "2025-12-06 13:46:40"


def test_a_huge_history_gives_a_bounded_page_with_the_rest_counted() -> None:
    chains = [bad_chain(f"c{n:06d}") for n in range(20_000)] + [good_chain()]
    made = history(*chains)
    page = render(made, 1, Limits(problems=50, chains=30, checkpoints=1))
    assert page.count('<tr class="bad">') == 50 + 30
    assert "… and 19950 more problems not listed" in page
    assert "… and 19971 more chains not listed" in page
    assert "… and 1 more checkpoints not listed" in page
    assert len(page) < 60_000

    class Sink:  # counts what is written, keeps nothing
        size = 0

        def write(self, text: str) -> int:
            Sink.size += len(text)
            return len(text)

    tracemalloc.start()
    try:
        write_report(Sink(), made, exit_code=1, generated_at=AT, options=OPTIONS)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Written piece by piece, with no list of all 20,001 chains (160 kB of references alone):
    # the peak is far below the page (default limits: 200 + 500 rows).
    assert Sink.size > 100_000 and peak < Sink.size / 10


def test_the_json_document_round_trips_in_utf8() -> None:
    made = history(good_chain(), bad_chain("链-1"))
    doc = document(made, 1, OPTIONS)
    out = io.StringIO()
    write_json(doc, out)
    assert "链-1" in out.getvalue() and "\\u" not in out.getvalue()
    assert json.loads(out.getvalue()) == doc
    assert [c["state"] for c in doc["chains"]] == ["closed", "open"]
    assert doc["chains"][1]["checkpoints_verified"] == 0 and doc["problems"][0]["seq"] == 3


def test_chain_state_and_head_lines() -> None:
    assert chain_state(good_chain()) == "closed"
    forged = ChainReport("f", checkpoints=2)  # its checkpoints did not verify
    assert chain_state(forged) == "unknown"
    assert head_entry("head chain a b/c #17 " + "4b" * 64) == {
        "scope": "chain", "id": "a b/c", "number": 17, "signature": "4b" * 64,
    }  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{128}", head_entry(history().current[0])["signature"])
