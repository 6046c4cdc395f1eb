"""``yibao-audit`` as the security team runs it: verify, export, purge; exit codes, one line."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.audit.link import build_trail
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
        ID_NUMBER in r["payload"] for r in rows if "intent" in r["record"]["kind"]
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
