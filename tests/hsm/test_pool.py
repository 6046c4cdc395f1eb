"""The session pool: concurrency, and recovery after sessions vanish."""

from __future__ import annotations

import asyncio
import threading

from hsm.keys import KeyStore
from hsm.sm2 import HostVerifier, Sm2Signer


def _signer(token) -> Sm2Signer:
    info = KeyStore(token).active("sign")
    return Sm2Signer(token, info.label, info.public_key)


async def test_many_tasks_sign_at_once_and_every_signature_is_valid(token) -> None:
    signer = _signer(token)
    msgs = [f"task {i}".encode() * 7 for i in range(300)]
    sigs = await asyncio.gather(*(signer.sign(m) for m in msgs))
    verifier = HostVerifier()
    for m, s in zip(msgs, sigs, strict=True):
        verifier.verify(signer.public_key, m, s)


def test_many_threads_sign_at_once(token) -> None:
    signer = _signer(token)
    errors: list[BaseException] = []
    results: list[tuple[bytes, object]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            for j in range(25):
                m = f"thread {i} msg {j}".encode()
                s = signer.sign_blocking(m)
                with lock:
                    results.append((m, s))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 200
    for m, s in results:
        HostVerifier().verify(signer.public_key, m, s)  # type: ignore[arg-type]


async def test_recovers_after_close_all_sessions_and_logs_in_again(token) -> None:
    signer = _signer(token)
    await signer.sign(b"warm up")
    logins, recoveries = token.login_attempts, token.recoveries
    assert token.raw.close_all_sessions(token.slot_id) == 0  # behind the pool's back
    sigs = await asyncio.gather(*(signer.sign(b"after %d" % i) for i in range(20)))
    for i, s in enumerate(sigs):
        HostVerifier().verify(signer.public_key, b"after %d" % i, s)
    assert token.login_attempts == logins + 1  # exactly one new C_Login for the whole pool
    # A worker that picked up its next job after another worker's recovery pass still holds a
    # dead session and runs its own pass (reopening, no login): at least one pass, not exactly.
    assert token.recoveries >= recoveries + 1


async def test_recovers_when_only_one_worker_session_is_closed(token) -> None:
    signer = _signer(token)
    await signer.sign(b"warm up")
    logins = token.login_attempts
    victim = token._sessions[0].p11
    victim.close()
    sigs = await asyncio.gather(*(signer.sign(b"m%d" % i) for i in range(40)))
    for i, s in enumerate(sigs):
        HostVerifier().verify(signer.public_key, b"m%d" % i, s)
    assert token.login_attempts == logins  # the login survived: no new C_Login
