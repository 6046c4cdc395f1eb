"""Measure the simulator's throughput for 1101 over mutual TLS and HTTP/2 (not a test).

Run: ``.venv/bin/python -m tests.devkit.simulator.bench_throughput [seconds] [concurrency]``.
One httpx client (one HTTP/2 connection) and one simulator share this process's event loop, so
the figure is a floor: client and server compete for one core.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.devkit.simulator.support import envelope_factory, person_input, sign_in_input
from yibao_devkit import devcerts
from yibao_devkit.simulator import running_simulator


async def measure(seconds: float, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        pki = devcerts.generate(Path(scratch))
        async with running_simulator(pki=pki, population_size=200) as simulator:
            envelope = envelope_factory()
            context = simulator.client_ssl_context()
            async with httpx.AsyncClient(http2=True, verify=context, timeout=20) as http:
                answer = await http.post(simulator.endpoint, json=envelope("9001", sign_in_input()))
                sign_no = answer.json()["output"]["signinoutb"]["sign_no"]
                person = simulator.app.population.examples().employee
                payload = person_input(person.certno, person.psn_name)
                done = 0
                deadline = time.monotonic() + seconds

                async def worker() -> None:
                    nonlocal done
                    while time.monotonic() < deadline:
                        response = await http.post(
                            simulator.endpoint, json=envelope("1101", payload, sign_no)
                        )
                        assert response.json()["infcode"] == 0
                        done += 1

                started = time.monotonic()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return done / (time.monotonic() - started)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rate = asyncio.run(measure(seconds, concurrency))
    print(f"1101 over mTLS HTTP/2: {rate:.0f} requests/s ({concurrency} concurrent, {seconds} s)")


if __name__ == "__main__":
    main()
