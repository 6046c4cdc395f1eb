"""The HTML report as an auditor sees it: made by the real ``yibao-audit verify --html`` from a
real store, opened in Debian's Chromium (headless; scripts/bootstrap.sh installs it), read back as
text from its DOM and looked at as pixels of a screenshot. The broken trail's chain id carries a
script: it must show as text and never run."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from sidecar.audit.link import build_trail
from sidecar.audit.schema import MIGRATIONS
from sidecar.config import StoreConfig
from sidecar.store import open_store
from tests.audit_fixtures import AuditHsm
from tests.sidecar.audit.conftest import audit_config
from tests.sidecar.audit.test_cli import run, write_config
from tests.sidecar.audit.test_trail import one_rpc

pytestmark = pytest.mark.slow

EVIL = "<script>document.body.setAttribute('data-pwned','1')</script>"
RED = (179, 38, 30)  # the verdict of a broken trail (report.py's CSS)
GREEN = (30, 123, 52)  # the verdict of a verified one
PROBLEMS = (253, 231, 229)  # the problems section's background


async def trail_report(
    store_config: StoreConfig, hsm: AuditHsm, tmp_path: Path, *, tamper: bool
) -> tuple[Path, str]:
    """A store with one closed chain (tampered or not) and the report verify wrote of it."""
    store = open_store(store_config)
    try:
        await store.migrate(MIGRATIONS)
        trail = build_trail(audit_config(tmp_path), store, hsm.keys)
        await trail.start()
        for n in range(2):
            await one_rpc(trail, n)
        await trail.close()
        if tamper:  # record 5 moved to a chain of the attacker's naming
            async with store.transaction() as tx:
                await tx.execute("UPDATE audit_records SET chain = :c WHERE seq = 5", {"c": EVIL})
    finally:
        await store.close()
    config = write_config(tmp_path / "sidecar.toml", hsm, store_config, tmp_path / "spool")
    page = tmp_path / "report.html"
    done = run(
        hsm, "verify", "--config", str(config), "--public-key", str(hsm.public_key_file),
        "--html", str(page),
    )  # fmt: skip
    assert done.returncode == (1 if tamper else 0), done.stdout + done.stderr
    return page, trail.writer.chain


def chromium(page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: scripts/bootstrap.sh installs Debian's chromium"
    done = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--force-device-scale-factor=1", "--window-size=1200,900",
         f"--user-data-dir={profile}", *mode, page.as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def dom(page: Path, tmp_path: Path) -> Dom:
    parsed = Dom()
    parsed.feed(chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout)
    return parsed


def pixels(page: Path, tmp_path: Path) -> Image.Image:
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "profile-shot", f"--screenshot={shot}")
    return Image.open(shot).convert("RGB")


def share(image: Image.Image, colour: tuple[int, int, int], box: tuple[int, ...]) -> float:
    """The share of the pixels in ``box`` within a small tolerance of ``colour``."""
    region = image.crop(box)
    near = sum(
        count
        for count, rgb in region.getcolors(region.width * region.height) or []
        if max(abs(a - b) for a, b in zip(rgb, colour, strict=True)) <= 6
    )
    return near / (region.width * region.height)


async def test_a_tampered_trail_shows_its_problems_in_red_and_runs_no_script(
    store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    page, chain = await trail_report(store_config, audit_hsm, tmp_path, tamper=True)
    read = dom(page, tmp_path)
    text = " ".join(read.text)
    assert "Audit trail NOT verified: 2 problems found" in text
    assert chain in text and EVIL in text  # both chain ids, the script as plain text
    assert "record at position 5 is missing" in text  # the gap the move left
    assert "record at position 0 is missing" in text  # the attacker's chain
    assert not [tag for tag, _ in read.tags if tag == "script"]
    assert all("data-pwned" not in attrs for _, attrs in read.tags)
    problems = [attrs for tag, attrs in read.tags if attrs.get("id") == "problems"]
    assert problems == [{"id": "problems"}]  # the highlighted section, not the "none" one

    image = pixels(page, tmp_path)
    assert image.size == (1200, 900)
    assert len(image.getcolors(1 << 20) or []) > 50  # not blank: text, tables, colours
    assert share(image, RED, (0, 0, 1200, 60)) > 0.6  # the verdict is red
    assert share(image, GREEN, (0, 0, 1200, 900)) == 0  # and nothing is green-verified
    assert share(image, PROBLEMS, (0, 60, 1200, 400)) > 0.2  # the problems section, coloured


async def test_a_verified_trail_is_green_with_its_chain_and_checkpoint(
    store_config: StoreConfig, audit_hsm: AuditHsm, tmp_path: Path
) -> None:
    page, chain = await trail_report(store_config, audit_hsm, tmp_path, tamper=False)
    text = " ".join(dom(page, tmp_path).text)
    assert "Audit trail verified" in text and "NOT verified" not in text
    assert chain in text and "final" in text and "No problem found" in text
    image = pixels(page, tmp_path)
    assert share(image, GREEN, (0, 0, 1200, 60)) > 0.6
    assert share(image, RED, (0, 0, 1200, 900)) == 0
    assert share(image, PROBLEMS, (0, 0, 1200, 900)) == 0
