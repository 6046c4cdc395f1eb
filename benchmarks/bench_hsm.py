"""Throughput of the ``hsm`` package against the patched SoftHSM (prints figures).

Run: ``.venv/bin/python benchmarks/bench_hsm.py [--seconds S]``

Builds (or reuses) the patched SoftHSM with ``hsm/softhsm/build.sh``, makes a
throw-away token in a temporary directory, initialises it with the package's
own init-token code, generates an SM2 sign key and an SM4 KEK, then measures:

* SM2 signatures/s (sign of a 32-byte e) through one raw python-pkcs11 session
  (the baseline), and through the pool with 1, 2 and 4 workers fed by 16
  concurrent asyncio callers (same operation: C_Sign of e, decoded to r, s);
* data-key wrap and unwrap per second (C_Encrypt/C_Decrypt SM4-CBC + HMAC-SM3);
* host SM3 of 200-byte messages;
* SM2 verification on the host (tongsuopy) and in the token (C_Verify of e
  with an imported public-key object), one thread each.

Targets (2-core machine): pool overhead at 1 worker within 10% of the raw
session; 2 or more workers at least 1.6x the single-session rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from softhsm_token import fresh_token  # noqa: E402

from hsm.datakeys import DataKeys  # noqa: E402
from hsm.keys import KeyStore  # noqa: E402
from hsm.profiles import load_profile  # noqa: E402
from hsm.sm.sm2 import DEFAULT_USER_ID, compute_e  # noqa: E402
from hsm.sm.sm3 import sm3  # noqa: E402
from hsm.sm2 import HostVerifier, Sm2Signer, verify_e_in_token  # noqa: E402
from hsm.token import HsmToken, WorkerSession  # noqa: E402

LABEL = "bench"
CALLERS = 16
ROUNDS = 5
BASH = "/bin/bash"


def _runs(values: list[float]) -> str:
    return "/".join(f"{v:.0f}" for v in values)


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        fn()
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        n += 50
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


async def pool_rate(
    token: HsmToken, op: Callable[[WorkerSession], object], seconds: float
) -> float:
    """Operations/s with CALLERS asyncio tasks awaiting token.run(op) in a loop."""
    await asyncio.gather(*(token.run(op) for _ in range(40)))  # warm up every session
    count = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await token.run(op)
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    secs = ap.parse_args().seconds
    profile = load_profile("softhsm-sm")

    with tempfile.TemporaryDirectory(prefix="bench-hsm-") as d:
        lib, pin = fresh_token(Path(d), LABEL)
        admin = HsmToken(module_path=lib, token_label=LABEL, profile=profile, pin=pin, pool_size=1)
        store = KeyStore(admin)
        sign_key = store.generate("sign")
        store.generate("kek")
        assert sign_key.public_key is not None
        pub = sign_key.public_key
        signer = Sm2Signer(admin, sign_key.label, pub)
        e = signer.digest(secrets.token_bytes(200))
        mech = admin.mechs.mech("sm2_sign_e")
        print(f"nproc={os.cpu_count()}  measurement={secs:.1f}s each  callers={CALLERS}")

        # --- baseline: one raw python-pkcs11 session, key object found once
        from pkcs11 import Attribute, ObjectClass

        raw_session = admin.open_session()  # outside the pool
        priv = next(
            raw_session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: sign_key.label}
            )
        )
        # Other processes share these 2 cores, so raw and pool runs are interleaved
        # over ROUNDS rounds and each figure is the median of its rounds.
        raw_runs: list[float] = []
        pool_runs: dict[int, list[float]] = {1: [], 2: [], 4: []}
        pools = {
            w: HsmToken(module_path=lib, token_label=LABEL, profile=profile, pin=pin, pool_size=w)
            for w in pool_runs
        }
        for _ in range(ROUNDS):
            raw_runs.append(rate(lambda: priv.sign(e, mechanism=mech), secs))
            for workers, tok in pools.items():
                s = Sm2Signer(tok, sign_key.label, pub)
                pool_runs[workers].append(asyncio.run(pool_rate(tok, s.sign_e_op(e), secs)))
        for tok in pools.values():
            tok.close()
        raw = statistics.median(raw_runs)
        print(f"SM2 sign, raw session (baseline)     {raw:8.0f} /s   runs {_runs(raw_runs)}")
        results = {w: statistics.median(r) for w, r in pool_runs.items()}
        # Paired ratios (pool / raw of the same round) cancel most of the drift.
        ratios = {
            w: statistics.median(p / r for p, r in zip(runs, raw_runs, strict=True))
            for w, runs in pool_runs.items()
        }
        for workers, value in results.items():
            print(
                f"SM2 sign, pool {workers} worker(s)             {value:8.0f} /s   "
                f"x{ratios[workers]:.2f} of raw (paired median)   runs {_runs(pool_runs[workers])}"
            )
        print(f"  pool cost at 1 worker vs raw: {(1 - ratios[1]) * 100:+.1f}% (target <= +10%)")
        print(f"  2 workers: x{ratios[2]:.2f}, 4 workers: x{ratios[4]:.2f} (target >= 1.6)")
        raw_ws = WorkerSession(raw_session)

        # --- data keys
        tok = HsmToken(module_path=lib, token_label=LABEL, profile=profile, pin=pin, pool_size=2)
        dks = DataKeys(tok)
        _, blob = dks.new_blocking()
        print(f"data-key wrap (1 thread)             {rate(dks.new_blocking, secs):8.0f} /s")
        unwrap = rate(lambda: dks.unwrap_blocking(blob), secs)
        print(f"data-key unwrap (1 thread)           {unwrap:8.0f} /s")

        async def dk_rate(fn: Callable[[], object]) -> float:
            count = 0
            stop = time.perf_counter() + secs

            async def caller() -> None:
                nonlocal count
                while time.perf_counter() < stop:
                    await fn()  # type: ignore[misc]
                    count += 1

            start = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(CALLERS)))
            return count / (time.perf_counter() - start)

        print(f"data-key wrap (pool 2, async)        {asyncio.run(dk_rate(dks.new)):8.0f} /s")
        unwrap = asyncio.run(dk_rate(lambda: dks.unwrap(blob)))
        print(f"data-key unwrap (pool 2, async)      {unwrap:8.0f} /s")
        tok.close()

        # --- host SM3
        msg = secrets.token_bytes(200)
        print(f"host SM3, 200-byte messages          {rate(lambda: sm3(msg), secs):8.0f} /s")

        # --- verification: host vs token
        m = secrets.token_bytes(200)
        sig = signer.sign_blocking(m)
        hv = HostVerifier()
        host = rate(lambda: hv.verify(pub, m, sig), secs)
        other_id = b"ALICE123@YAHOO.COM"  # not the default ID: tongsuopy-e, or gmssl without it
        sig_other = Sm2Signer(admin, sign_key.label, pub, user_id=other_id).sign_blocking(m)
        host_other = rate(lambda: hv.verify(pub, m, sig_other, user_id=other_id), secs)
        e_m = compute_e(public_key=pub, message=m, user_id=DEFAULT_USER_ID)
        enc = admin.profile.signature_encoding
        tokv = rate(lambda: verify_e_in_token(raw_ws, admin.mechs, enc, pub, e_m, sig), secs)
        full = rate(
            lambda: verify_e_in_token(
                raw_ws,
                admin.mechs,
                enc,
                pub,
                compute_e(public_key=pub, message=m, user_id=DEFAULT_USER_ID),
                sig,
            ),
            secs,
        )
        print(f"SM2 verify, host (tongsuopy)         {host:8.0f} /s")
        print(f"SM2 verify, host, other user ID      {host_other:8.0f} /s")
        print(f"SM2 verify, token (C_Verify of e)    {tokv:8.0f} /s   (+ host Z/e: {full:.0f} /s)")
        raw_session.close()
        admin.close()


if __name__ == "__main__":
    main()
