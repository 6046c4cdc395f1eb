"""The sidecar's HSM probe and signing-certificate watch against the patched SoftHSM.

The readiness probe asks a worker session whether it is a user session; a login lost behind the
pool's back is recovered by the pool (one new C_Login), and a refused PIN is never tried again.
The signing certificate is the one ``import-cert`` stored next to the active key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hsm.errors import LoginError
from hsm.keys import KeyStore
from sidecar.keys import certexpiry
from sidecar.serving.probes import HsmLoginCheck


async def test_the_probe_confirms_the_login(token: Any) -> None:
    assert await HsmLoginCheck(token)() is True


async def test_a_login_lost_behind_the_pools_back_is_recovered_by_the_probe(token: Any) -> None:
    check = HsmLoginCheck(token)
    assert await check() is True
    logins = token.login_attempts
    assert token.raw.close_all_sessions(token.slot_id) == 0  # HSM restart, failover
    assert await check() is True
    assert token.login_attempts == logins + 1


class RefusingToken:
    """A token whose recovery meets a changed PIN (the HSM's answer, not a guess of ours)."""

    token_label = "yibao"

    def __init__(self) -> None:
        self.runs = 0

    async def run(self, fn: Any) -> None:
        self.runs += 1
        raise LoginError("login to token 'yibao' refused: PIN from user.pin is incorrect")


async def test_after_a_refused_pin_the_probe_never_tries_again() -> None:
    refusing = RefusingToken()
    check = HsmLoginCheck(refusing)  # type: ignore[arg-type]
    assert await check() is False
    assert await check() is False
    assert refusing.runs == 1


class HangingToken:
    """A network HSM that stopped answering: the job never comes back."""

    token_label = "yibao"

    async def run(self, fn: Any) -> None:
        await asyncio.Event().wait()


async def test_an_hsm_that_does_not_answer_counts_as_a_lost_login() -> None:
    assert await HsmLoginCheck(HangingToken(), timeout=0.05)() is False  # type: ignore[arg-type]


def _sm2_certificate_for(public_pem: str, directory: Path, days: int) -> bytes:
    """A certificate for the token's public key, issued by a throwaway OpenSSL SM2 CA."""
    (directory / "key.pub").write_text(public_pem)
    run = ["openssl"]
    subprocess.run(
        [*run, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2",
         "-out", str(directory / "ca.key")],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*run, "x509", "-new", "-subj", "/CN=yibao-sidecar signing", "-key",
         str(directory / "ca.key"), "-force_pubkey", str(directory / "key.pub"), "-sm3",
         "-days", str(days), "-outform", "DER", "-out", str(directory / "signing.der")],
        check=True, capture_output=True,
    )  # fmt: skip
    return (directory / "signing.der").read_bytes()


def test_the_signing_certificate_is_read_from_the_token(token: Any, tmp_path: Path) -> None:
    store = KeyStore(token)
    key = store.active("sign")
    assert key.public_key is not None
    der = _sm2_certificate_for(key.public_key.pem(), tmp_path, days=45)
    store.import_certificate(key.label, der)
    expiry = certexpiry.signing_certificate(token, key.label)
    assert expiry is not None and expiry.role == "signing"
    assert expiry.days_left(dt.datetime.now(dt.UTC)) == pytest.approx(45, abs=0.1)


def test_a_key_without_a_certificate_has_nothing_to_watch(token: Any) -> None:
    assert certexpiry.signing_certificate(token, "sign/1999-01") is None
