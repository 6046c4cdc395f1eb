"""Rates of the software SM2 paths: ``.venv/bin/python -m tests.hsm.sm.bench``.

Not a test (pytest does not collect it); it prints the figures quoted in hsm/sm/backend.py.
"""

from __future__ import annotations

import time

from tests.software_sm2 import SoftwareSm2, tongsuopy_available

MESSAGE = b"m" * 200


def rate(action: object, seconds: float = 2.0) -> float:
    assert callable(action)
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        action()
        count += 1
    return count / elapsed


def main() -> None:
    cases = [("gmssl", b"1234567812345678"), ("gmssl", b"appSecret-as-user-id")]
    if tongsuopy_available():
        cases[:0] = [("tongsuopy", b"1234567812345678"), ("tongsuopy-e", b"appSecret-as-user-id")]
    for backend, user_id in cases:
        key = SoftwareSm2.generate(user_id=user_id, backend=backend)  # type: ignore[arg-type]
        signature = key.sign_now(MESSAGE)
        signs = rate(lambda key=key: key.sign_now(MESSAGE))
        verifies = rate(lambda key=key, signature=signature: key.verify(MESSAGE, signature))
        label = f"{backend:11} user_id={user_id.decode():22}"
        print(f"{label} sign/s {signs:7.0f}  verify/s {verifies:7.0f}")


if __name__ == "__main__":
    main()
