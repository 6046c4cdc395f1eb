"""``yibao-audit`` as the security team runs it: verify, export, purge; exit codes, one line."""

from __future__ import annotations

import datetime as dt
import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.audit import payloads
from sidecar.audit.exportfile import export_line
from sidecar.audit.hsm_keys import subject_message
from sidecar.audit.link import build_trail
from sidecar.audit.records import Record
from sidecar.audit.schema import MIGRATIONS
from sidecar.config import StoreConfig
from sidecar.store import open_store
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config
from tests.sidecar.audit.test_trail import ID_NUMBER, one_rpc


def write_config(path: Path, hsm: AuditHsm, store: StoreConfig, spool: Path) -> Path:
    h = hsm.hsm_section()
    store_lines = (
        f'backend = "sqlite"\nsqlite_path = "{store.sqlite_path}"'
        if store.backend == "sqlite"
        else f'backend = "postgresql"\npostgresql_dsn = "{store.postgresql_dsn}"'
    )
    path.write_text(
        f"""
[institution]
code = "H44030500001"
name = "测试机构"
division = "440305"

[platform]
url = "https://127.0.0.1:9"
ca_file = "/nonexistent/ca.pem"
client_cert_file = "/nonexistent/client.pem"
client_key_file = "/nonexistent/client-key.pem"

[hsm]
module = "{h["module"]}"
token_label = "{h["token_label"]}"
user_pin_file = "{h["user_pin_file"]}"

[store]
{store_lines}

[audit]
instance = "cli"
spool_dir = "{spool}"
"""
    )
    return path


def run(hsm: AuditHsm, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.audit.cli", *args],
        capture_output=True, text=True, timeout=120, env=hsm.env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
async def configured(store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path) -> Path:
    store = open_store(store_config)
    try:
        await store.migrate(MIGRATIONS)
        trail = build_trail(audit_config(tmp_path), store, audit_hsm.keys)
        await trail.start()
        for n in range(2):
            await one_rpc(trail, n)
        await trail.close()
    finally:
        await store.close()
    return write_config(tmp_path / "sidecar.toml", audit_hsm, store_config, tmp_path / "spool")


@pytest.mark.slow
def test_verify_export_and_purge_refusal(
    configured: Path, audit_hsm: AuditHsm, store_config: StoreConfig, tmp_path: Path
) -> None:
    # The key as the security team exports it.
    pem = tmp_path / "audit.pem"
    label = audit_hsm.keys.audit_key.label
    exported = subprocess.run(
        [sys.executable, "-m", "hsm.cli", "export-public", "--label", label, "--out", str(pem),
         "--module", str(audit_hsm.lib), "--token-label", audit_hsm.label,
         "--user-pin-file", str(audit_hsm.user_pin_file)],
        capture_output=True, text=True, env=audit_hsm.env(),
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    good = run(audit_hsm, "verify", "--config", str(configured), "--public-key", str(pem))
    assert good.returncode == 0, good.stderr + good.stdout
    assert "1 chains, 0 with problems" in good.stdout

    out = tmp_path / "subject.jsonl"
    export = run(
        audit_hsm, "export", "--config", str(configured), "--subject", ID_NUMBER,
        "--requested-by", "dpo-01", "--out", str(out),
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(
        ID_NUMBER in json.dumps(r["payload"]) for r in rows if "intent" in r["record"]["kind"]
    )
    assert out.stat().st_mode & 0o777 == 0o600
    after = run(audit_hsm, "verify", "--config", str(configured), "--public-key", str(pem))
    assert after.returncode == 0 and "2 chains, 0 with problems" in after.stdout  # export chain

    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    refused = run(audit_hsm, "purge", "--config", str(configured), "--before", yesterday)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "retention (730 days)" in refused.stderr


async def test_verify_names_the_first_changed_record(
    configured: Path, audit_hsm: AuditHsm, store_config: StoreConfig
) -> None:
    store = open_store(store_config)
    try:
        async with store.transaction() as tx:
            await tx.execute("UPDATE audit_records SET subject = 'x' WHERE seq = 3")
    finally:
        await store.close()
    bad = run(
        audit_hsm, "verify", "--config", str(configured),
        "--public-key", str(audit_hsm.public_key_file),
    )  # fmt: skip
    assert bad.returncode == 1
    assert "FAIL changed: chain test/" in bad.stdout and "record 3: column subject" in bad.stdout


def test_usage_errors_are_one_line(audit_hsm: AuditHsm, tmp_path: Path) -> None:
    missing = run(audit_hsm, "verify", "--config", str(tmp_path / "none.toml"), "--public-key", "x")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("yibao-audit: config: cannot read")
    unknown = run(audit_hsm, "shred")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1


@pytest.mark.parametrize("version", [0, 1])
async def test_verify_refuses_a_store_not_migrated_to_the_registry(
    version: int, store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    store = open_store(store_config)
    try:
        await store.migrate(MIGRATIONS[:version])
    finally:
        await store.close()
    config = write_config(tmp_path / "sidecar.toml", audit_hsm, store_config, tmp_path / "spool")
    done = run(
        audit_hsm, "verify", "--config", str(config),
        "--public-key", str(audit_hsm.public_key_file),
    )  # fmt: skip
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr == (
        f"yibao-audit: audit: the store's audit tables are at version {version}, verify reads "
        "version 2: start the upgraded sidecar once (it migrates the store) first\n"
    )


def verify_json(hsm: AuditHsm, config: Path, *extra: str) -> tuple[int, dict[str, Any], bytes]:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar.audit.cli", "verify", "--config", str(config),
         "--public-key", str(hsm.public_key_file), "--json", *extra],
        capture_output=True, timeout=120, env=hsm.env(), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.stderr == b"", done.stderr
    return done.returncode, json.loads(done.stdout.decode("utf-8")), done.stdout


async def stored(store_config: StoreConfig, where: str = "", **params: object) -> list[Record]:
    store = open_store(store_config)
    try:
        async with store.transaction() as tx:
            found = await tx.fetch_all(
                f"SELECT * FROM audit_records {where} ORDER BY chain, seq", params
            )
    finally:
        await store.close()
    return [Record.from_row(row) for row in found]


async def test_verify_json_describes_every_chain_and_registry(
    configured: Path, audit_hsm: AuditHsm, store_config: StoreConfig
) -> None:
    records = await stored(store_config)
    code, doc, raw = verify_json(audit_hsm, configured)
    assert code == 0 and doc["ok"] is True and doc["exit_code"] == 0
    assert doc["format"] == "yibao-audit-verify/1" and doc["problems"] == []
    assert doc["summary"] == {"chains": 1, "chains_with_problems": 0, "problems": 0}
    [chain] = doc["chains"]
    assert chain["id"] == records[0].chain and chain["ok"] is True
    assert chain["state"] == "closed" and chain["records"] == len(records)
    assert (chain["first_seq"], chain["last_seq"]) == (0, records[-1].seq)
    assert chain["head_hash"] == records[-1].hash.hex()
    assert chain["checkpoints"] == chain["checkpoints_verified"] == 1
    assert chain["last_checkpoint"]["kind"] == "final"
    assert chain["last_checkpoint"]["position"] == records[-1].seq
    assert doc["registries"] == [{"instance": "test", "ok": True, "entries": 2, "problem": None}]
    [head] = doc["heads"]
    assert head["scope"] == "registry" and head["id"] == "test" and head["number"] == 1
    assert len(head["signature"]) == 128
    assert doc["options"]["public_keys"] == [audit_hsm.public_key.fingerprint()]
    # The text output is still the default, unchanged.
    text = run(audit_hsm, "verify", "--config", str(configured), "--public-key",
               str(audit_hsm.public_key_file))  # fmt: skip
    assert text.stdout.endswith("1 chains, 0 with problems\n") and not raw.startswith(b"ok")


async def test_verify_json_lists_every_problem_in_utf8(
    configured: Path, audit_hsm: AuditHsm, store_config: StoreConfig
) -> None:
    [chain] = {r.chain for r in await stored(store_config)}
    store = open_store(store_config)
    try:
        async with store.transaction() as tx:
            await tx.execute("UPDATE audit_records SET subject = 'x' WHERE seq = 3")
    finally:
        await store.close()
    code, doc, raw = verify_json(audit_hsm, configured, "--open-chain", "病历-链")
    assert code == 1 and doc["ok"] is False and doc["exit_code"] == 1
    assert doc["problems"] == [
        {
            "kind": "changed", "scope": "chain", "chain": chain, "seq": 3,
            "message": "record 3: column subject disagrees with its content",
            "line": f"FAIL changed: chain {chain}: record 3: column subject disagrees with its "
            "content",
        },
        {
            "kind": "removed", "scope": "chain", "chain": "病历-链", "seq": 0,
            "message": "the whole chain is missing (named by --open-chain)",
            "line": "FAIL removed: chain 病历-链: the whole chain is missing "
            "(named by --open-chain)",
        },
    ]  # fmt: skip
    assert doc["summary"] == {"chains": 2, "chains_with_problems": 2, "problems": 2}
    assert "病历-链".encode() in raw and b"\\u" not in raw


@pytest.mark.slow
async def test_export_round_trips_to_the_decrypted_records(
    configured: Path, audit_hsm: AuditHsm, store_config: StoreConfig, tmp_path: Path
) -> None:
    pseudonym = await audit_hsm.keys.pseudonyms.pseudonym(subject_message(1, ID_NUMBER))
    records = await stored(store_config, "WHERE subject = :s", s=pseudonym)
    out = tmp_path / "subject.jsonl"
    export = run(
        audit_hsm, "export", "--config", str(configured), "--subject", ID_NUMBER,
        "--requested-by", "dpo-01", "--out", str(out),
    )  # fmt: skip
    assert export.returncode == 0, export.stderr
    raw = out.read_bytes().decode("utf-8")
    assert "张三" in raw and "\\u" not in raw  # readable Chinese, not escaped
    lines = raw.splitlines()
    assert len(lines) == len(records) == 8
    store = open_store(store_config)
    try:
        async with store.transaction() as tx:
            wrapped = {
                str(row["key_id"]): bytes(row["wrapped"])
                for row in await tx.fetch_all("SELECT key_id, wrapped FROM audit_data_keys")
            }
    finally:
        await store.close()
    for line, record in zip(lines, records, strict=True):
        row = json.loads(line)
        key = await audit_hsm.keys.data_keys.unwrap(wrapped[record.data_key])
        plain = payloads.decrypt(key, record.payload, record.record_id.encode())
        assert row == {
            "chain": record.chain,
            "seq": record.seq,
            "record": record.fields(),
            "payload": json.loads(plain),
        }
        assert isinstance(row["payload"], dict)  # an object, not JSON inside a string
    intent = json.loads(lines[0])
    assert intent["record"]["kind"] == "rpc.intent"
    assert intent["payload"] == {"name": "张三", "certno": ID_NUMBER, "n": 0}


def test_export_line_keeps_a_payload_that_is_not_json_as_text() -> None:
    row = {"chain": "c", "seq": 1, "record": {"kind": "export"}, "payload": ""}
    assert json.loads(export_line(row))["payload"] is None
    odd = json.loads(export_line({**row, "payload": "not json: 病"}))
    assert odd["payload"] is None and odd["payload_text"] == "not json: 病"


async def test_verify_html_writes_a_report_and_never_overwrites_one(
    configured: Path, audit_hsm: AuditHsm, store_config: StoreConfig, tmp_path: Path
) -> None:
    evil = "<script>document.title='pwned'</script>"
    store = open_store(store_config)
    try:
        async with store.transaction() as tx:
            await tx.execute("UPDATE audit_records SET chain = :c WHERE seq = 5", {"c": evil})
    finally:
        await store.close()
    page = tmp_path / "report.html"
    args = ("verify", "--config", str(configured), "--public-key", str(audit_hsm.public_key_file))
    done = run(audit_hsm, *args, "--html", str(page))
    assert done.returncode == 1 and "FAIL removed: chain <script>" in done.stdout  # text as ever
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_mode & 0o777 == 0o600
    assert "<script" not in text and html.escape(evil) in text
    assert 'class="verdict bad"' in text and "record at position 5 is missing" in text
    again = run(audit_hsm, *args, "--html", str(page))
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == f"yibao-audit: --html {page}: File exists\n"
    assert page.read_text(encoding="utf-8") == text
    nowhere = run(audit_hsm, *args, "--html", str(tmp_path / "none" / "r.html"))
    assert nowhere.returncode == 2 and nowhere.stdout == ""
    assert nowhere.stderr == f"yibao-audit: --html {tmp_path}/none/r.html: No such directory\n"


async def test_no_report_and_no_json_when_the_store_cannot_be_verified(
    store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    store = open_store(store_config)
    try:
        await store.migrate(MIGRATIONS[:1])  # audit tables older than verify reads
    finally:
        await store.close()
    config = write_config(tmp_path / "sidecar.toml", audit_hsm, store_config, tmp_path / "spool")
    page = tmp_path / "report.html"
    done = run(
        audit_hsm, "verify", "--config", str(config), "--public-key",
        str(audit_hsm.public_key_file), "--json", "--html", str(page),
    )  # fmt: skip
    assert done.returncode == 3 and done.stdout == "" and done.stderr.count("\n") == 1
    assert not page.exists()  # never a page that looks like a verification
