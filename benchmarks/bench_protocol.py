"""Cost of message security on a 1101 round trip through the protocol layer (prints figures).

Run: ``.venv/bin/python benchmarks/bench_protocol.py [--seconds S] [--concurrency N]``
(``make bench-protocol`` builds the venv and SoftHSM first).

Starts two platform simulators as SEPARATE processes (so they do not share this process's
GIL): one with scheme A message security, one with plain JSON, both over mutual TLS (HTTP/2
offered by ALPN). Makes a throw-away SoftHSM token in a temporary directory with an SM2 sign
key, then measures, in one run:

1. ``PlatformClient.call("1101", ...)`` with scheme A (``EnvelopeSignature``; SM2 signing in
   the HSM through the pool via ``HsmSm2Signer``, the platform's signature verified on the
   host): requests/s and p50/p99 latency with N concurrent callers for S seconds after a
   warm-up;
2. the same calls with ``Plain`` sealing against the plain simulator;
3. a per-call breakdown measured separately in-process, one operation at a time: SM2 sign of
   the 1101 input (HSM, through the pool), SM2 verify of a 1101 output (host), SM4-ECB encrypt
   of the input plus decrypt of the output, and the plain HTTP round trip.

Each phase uses a fresh ``PlatformClient`` (connection and sign-in) and calls 1101 with
``retry_safe=True`` as the sidecar does; failed posts are counted and reported. The platform link
is the sidecar's own tunnel, ``CurlTransport`` (libcurl); ``--http1`` measures over HTTP/1.1.

Both simulators get SIGTERM when the benchmark ends, also on errors and on SIGTERM/Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pycurl  # noqa: E402
from softhsm_token import fresh_token  # noqa: E402

from hsm.keys import KeyStore  # noqa: E402
from hsm.profiles import load_profile  # noqa: E402
from hsm.sm import sm4  # noqa: E402
from hsm.sm.sm2 import HostSm2Verifier, Sm2PublicKey  # noqa: E402
from hsm.sm.sm2 import Sm2PublicKey as HsmPublicKey  # noqa: E402
from hsm.sm2 import Sm2Signer  # noqa: E402
from hsm.token import HsmToken  # noqa: E402
from sidecar.config import InstitutionConfig, PlatformConfig, ResilienceConfig  # noqa: E402
from sidecar.keys.security_link import HsmSm2Signer  # noqa: E402
from sidecar.platform.client import Operator, PlatformClient  # noqa: E402
from sidecar.platform.curl_transport import CurlTransport  # noqa: E402
from sidecar.platform.envelope import INF_TIME_FORMAT, beijing_now  # noqa: E402
from sidecar.platform.msgid import MsgIdGenerator  # noqa: E402
from sidecar.platform.sealing import EnvelopeSignature, Plain, Sealing  # noqa: E402
from sidecar.platform.security import json_text  # noqa: E402
from sidecar.platform.security.scheme_a import SchemeA  # noqa: E402
from sidecar.platform.transport import ClientIdentity, TransportError  # noqa: E402
from tests.software_sm2 import SoftwareSm2  # noqa: E402
from yibao_devkit.simulator.app import (  # noqa: E402
    DEFAULT_DIVISION,
    DEFAULT_INSTITUTION_CODE,
    DEFAULT_INSTITUTION_NAME,
)
from yibao_devkit.simulator.population import Population  # noqa: E402

SEED = 42
POPULATION = 200
LABEL = "bench-protocol"
POOL_SIZE = 2
BASH = "/bin/bash"
OPERATOR = Operator("bench-op-01", "bench operator")
INSTITUTION = InstitutionConfig(
    code=DEFAULT_INSTITUTION_CODE, name=DEFAULT_INSTITUTION_NAME, division=DEFAULT_DIVISION
)


# ---------------------------------------------------------------- the simulator processes


@dataclass
class Simulator:
    process: subprocess.Popen[str]
    lines: dict[str, str] = field(default_factory=dict)
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_simulator(
    stack: contextlib.ExitStack, work: Path, name: str, extra: list[str], wanted: str
) -> Simulator:
    """Start ``python -m yibao_devkit.simulator`` and wait for its ``wanted:`` line."""
    pki = work / f"pki-{name}"
    argv = [
        sys.executable, "-m", "yibao_devkit.simulator", "--listen", "127.0.0.1:0",
        "--seed", str(SEED), "--population-size", str(POPULATION), "--pki-dir", str(pki),
        *extra,
    ]  # fmt: skip
    log = (work / f"simulator-{name}.log").open("w")
    stack.callback(log.close)
    process = subprocess.Popen(  # noqa: S603
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True
    )
    sim = Simulator(process)
    stack.callback(sim.stop)
    ready = threading.Event()

    def drain() -> None:  # keeps reading so the pipe never fills
        assert process.stdout is not None
        for line in process.stdout:
            sim.output.append(line)
            key, sep, value = line.partition(": ")
            if sep:
                sim.lines[key.strip()] = value.strip()
            if wanted in sim.lines:
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(60) or wanted not in sim.lines:
        log.flush()
        err = (work / f"simulator-{name}.log").read_text()[-2000:]
        raise RuntimeError(f"simulator {name} did not start: {''.join(sim.output)}{err}")
    return sim


# ---------------------------------------------------------------- the HSM


# ---------------------------------------------------------------- measurements


class CountingTransport:
    """``CurlTransport`` that counts the posts that failed (the client retries those)."""

    failures = 0  # over the whole run
    first: str | None = None

    def __init__(self, inner: CurlTransport) -> None:
        self._inner = inner

    async def post(self, body: bytes, *, timeout: float) -> bytes:
        try:
            return await self._inner.post(body, timeout=timeout)
        except TransportError as exc:
            CountingTransport.failures += 1
            CountingTransport.first = CountingTransport.first or str(exc)
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_client(
    sim: Simulator, sealing: Sealing, msgids: MsgIdGenerator, *, http2: bool = True
) -> PlatformClient:
    s = sim.lines
    identity = ClientIdentity(Path(s["client_cert"]), Path(s["client_key"]))
    # 1101 is a query: retried like the sidecar does (retry_safe). The breaker threshold is
    # raised to the configuration's maximum so that a burst of failures on a connection the
    # server closed (see the report below the table) cannot stop the measurement.
    endpoint = urlsplit(s["url"])  # the simulator prints its endpoint: base URL and path
    platform = PlatformConfig(
        url=f"{endpoint.scheme}://{endpoint.netloc}",
        path=endpoint.path,
        ca_file=Path(s["ca_cert"]),
        client_cert_file=Path(s["client_cert"]),
        client_key_file=Path(s["client_key"]),
        timeout_seconds=20.0,
        http2=http2,
        resilience=ResilienceConfig(breaker_failure_threshold=1000),
    )
    transport = CountingTransport(CurlTransport(platform, platform.ca_file, identity))
    return PlatformClient(transport, msgids, INSTITUTION, platform, sealing=sealing)


def input_1101() -> dict[str, Any]:
    person = Population.generate(SEED, POPULATION).examples().employee
    return {
        "data": {
            "mdtrt_cert_type": "02",
            "mdtrt_cert_no": person.certno,
            "card_sn": "",
            "begntime": beijing_now().strftime(INF_TIME_FORMAT),
            "psn_cert_type": person.psn_cert_type,
            "certno": person.certno,
            "psn_name": person.psn_name,
        }
    }


@dataclass
class Load:
    rps: float
    p50: float  # seconds
    p99: float
    calls: int
    errors: int
    client_cpu: float  # CPU seconds per call: this process (all threads, incl. HSM workers)
    simulator_cpu: float  # CPU seconds per call: the simulator process


def process_cpu(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float, simulator_pid: int
) -> Load:
    """``concurrency`` callers in a loop for a 1 s warm-up, then ``seconds`` measured."""
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []

    async def caller(stop: float, record: bool) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await call()
            except Exception as exc:  # counted and reported
                errors += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            if record:
                latencies.append(time.perf_counter() - t0)

    warm = time.perf_counter() + 1.0
    await asyncio.gather(*(caller(warm, False) for _ in range(concurrency)))
    errors = 0
    cpu0, sim0 = time.process_time(), process_cpu(simulator_pid)
    start = time.perf_counter()
    await asyncio.gather(*(caller(start + seconds, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    cpu, sim = time.process_time() - cpu0, process_cpu(simulator_pid) - sim0
    if not latencies:
        raise RuntimeError(f"no call succeeded ({errors} errors; first: {first_error})")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    if errors:
        print(f"  {errors} errors, the first: {first_error[0]}", file=sys.stderr)
    n = len(latencies)
    return Load(n / elapsed, q[49], q[98], n, errors, cpu / n, sim / n)


Cost = tuple[float, float]  # (wall seconds, CPU seconds of this process) per operation


async def per_op_async(fn: Callable[[], Awaitable[Any]], seconds: float) -> Cost:
    """Mean cost of ``await fn()``, one at a time, over about ``seconds``."""
    for _ in range(10):
        await fn()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        await fn()
        n += 1
        now = time.perf_counter()
        if now - start >= seconds:
            return (now - start) / n, (time.process_time() - cpu) / n


def per_op(fn: Callable[[], object], seconds: float) -> Cost:
    """Mean cost of ``fn()`` over about ``seconds``."""
    for _ in range(20):
        fn()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.perf_counter()
        if now - start >= seconds:
            return (now - start) / n, (time.process_time() - cpu) / n


def http_version(sim: Simulator) -> str:
    """The HTTP version libcurl negotiates with the simulator (ALPN), as the tunnel asks."""
    s = sim.lines
    handle = pycurl.Curl()
    try:
        handle.setopt(pycurl.URL, s["url"])
        handle.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2TLS)
        handle.setopt(pycurl.CAINFO, s["ca_cert"])
        handle.setopt(pycurl.SSLCERT, s["client_cert"])
        handle.setopt(pycurl.SSLKEY, s["client_key"])
        handle.setopt(pycurl.POSTFIELDS, b"{}")
        handle.setopt(pycurl.WRITEFUNCTION, lambda data: None)
        handle.perform()
        version = int(handle.getinfo(pycurl.INFO_HTTP_VERSION))
    finally:
        handle.close()
    return {pycurl.CURL_HTTP_VERSION_2_0: "HTTP/2"}.get(version, "HTTP/1.1")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f} ms"


async def run(
    secured_sim: Simulator, plain_sim: Simulator, signer: Sm2Signer, args: argparse.Namespace
) -> None:
    sm4_key = bytes.fromhex(args.sm4_key)
    point = HsmPublicKey.from_pem(args.platform_pem)
    platform_key = Sm2PublicKey.from_bytes(point.uncompressed())
    ours = HsmSm2Signer(signer)
    scheme = SchemeA(sm4_key, ours, HostSm2Verifier(platform_key))
    data = input_1101()
    msgids = MsgIdGenerator(INSTITUTION.code)  # shared: the simulators refuse a reused msgid

    # A fresh client (connection, sign-in) for every phase: an HTTP/2 connection left idle
    # longer than the simulator's keep-alive timeout (Hypercorn's 5 s) fails on reuse.
    @contextlib.asynccontextmanager
    async def connected(secured: bool) -> AsyncIterator[Callable[[], Awaitable[Any]]]:
        if secured:
            client = make_client(
                secured_sim, EnvelopeSignature(scheme), msgids, http2=not args.http1
            )
        else:
            client = make_client(plain_sim, Plain(), msgids, http2=not args.http1)
        try:
            yield lambda: client.call("1101", data, OPERATOR, retry_safe=True)
        finally:
            await client.close()

    async with connected(False) as plain_call, connected(True) as secured_call:
        answer = await plain_call()
        checked = await secured_call()
    assert checked == answer, "scheme A and plain answers differ"
    name = answer["baseinfo"]["psn_name"]
    print(f"1101 answers for {name} ({data['data']['certno'][:6]}...) from both simulators")

    # Interleaved rounds of the two loads; each figure is the median of its rounds.
    conc, secs = args.concurrency, args.seconds
    rounds: dict[str, list[Load]] = {"secured": [], "plain": []}
    for _ in range(args.rounds):
        for which in rounds:
            sim = secured_sim if which == "secured" else plain_sim
            async with connected(which == "secured") as call:
                rounds[which].append(await load(call, conc, secs, sim.process.pid))

    # Breakdown, one operation at a time, in this process.
    b = args.breakdown_seconds
    in_text = json_text.dumps(data, field="input")
    out_text = json_text.dumps(answer, field="output")
    peer = SoftwareSm2.generate()  # stands in for the platform's key (same verify backend)
    out_sig = peer.sign_now(out_text)
    verifier = HostSm2Verifier(peer.public_key)
    assert verifier.verify(out_text, out_sig)
    out_cipher = sm4.encrypt_ecb(sm4_key, out_text)

    def sm4_both() -> None:
        sm4.encrypt_ecb(sm4_key, in_text)
        sm4.decrypt_ecb(sm4_key, out_cipher)

    parts: dict[str, Cost] = {
        "SM2 sign (HSM, pool)": await per_op_async(lambda: ours.sign(in_text), b),
        "SM2 verify (host)": per_op(lambda: verifier.verify(out_text, out_sig), b),
        "SM4 enc in + dec out": per_op(sm4_both, b),
    }
    async with connected(False) as call:
        parts["HTTP (plain 1101 call)"] = await per_op_async(call, b)
    async with connected(True) as call:
        sequential_secured = await per_op_async(call, b)

    def med(which: str, attr: str) -> float:
        return float(statistics.median(getattr(x, attr) for x in rounds[which]))

    print()
    print(
        f"1101 round trip, {conc} concurrent callers, {secs:.0f} s after a 1 s warm-up, "
        f"median of {args.rounds} interleaved round(s)"
    )
    cols = ("req/s", "p50", "p99", "CPU/call", "sim CPU/call", "calls", "errors")
    print(f"{'':22}{cols[0]:>8}{cols[1]:>12}{cols[2]:>12}{cols[3]:>13}{cols[4]:>13}", end="")
    print(f"{cols[5]:>7}{cols[6]:>7}")
    ratio: dict[str, float] = {}
    for which, title in (("secured", "scheme A + HSM"), ("plain", "plain (mTLS only)")):
        calls = sum(x.calls for x in rounds[which])
        errors = sum(x.errors for x in rounds[which])
        print(
            f"{title:22}{med(which, 'rps'):8.1f}{ms(med(which, 'p50')):>12}"
            f"{ms(med(which, 'p99')):>12}{ms(med(which, 'client_cpu')):>13}"
            f"{ms(med(which, 'simulator_cpu')):>13}{calls:7d}{errors:7d}"
        )
    for attr in ("rps", "p50", "p99", "client_cpu", "simulator_cpu"):
        ratio[attr] = med("secured", attr) / med("plain", attr)
    print(
        f"{'ratio secured/plain':22}{ratio['rps']:8.2f}{ratio['p50']:12.2f}{ratio['p99']:12.2f}"
        f"{ratio['client_cpu']:13.2f}{ratio['simulator_cpu']:13.2f}"
    )
    print("  CPU/call: this process (all threads, incl. HSM workers); sim: the simulator process")
    rps_runs = {k: "/".join(f"{x.rps:.0f}" for x in v) for k, v in rounds.items()}
    print(f"  req/s per round: secured {rps_runs['secured']}, plain {rps_runs['plain']}")
    if CountingTransport.failures:
        print(
            f"  {CountingTransport.failures} HTTP posts failed and were retried "
            f"(first: {CountingTransport.first}); the simulator ends an HTTP/2 connection "
            "after 1000 requests and never answers the requests in flight on it"
        )

    print()
    print(
        f"Per-call breakdown (one operation at a time, in this process; input {len(in_text)} B, "
        f"output {len(out_text)} B)"
    )
    total = sum(wall for wall, _ in parts.values())
    print(f"  {'':26}{'wall':>11}{'share':>8}{'CPU':>12}")
    for title, (wall, cpu) in parts.items():
        print(f"  {title:26}{ms(wall)}{wall / total:8.1%}{ms(cpu)}")
    print(f"  {'sum':26}{ms(total)}{'':8}{ms(sum(cpu for _, cpu in parts.values()))}")
    wall, cpu = sequential_secured
    print(f"  {'scheme A 1101 call':26}{ms(wall)}{'':8}{ms(cpu)}  (measured whole, for comparison)")


def sm4_key_file(work: Path, key_hex: str) -> Path:
    """The SM4 key in a 0600 file, for the simulator's ``--sm4-key-file``."""
    path = work / "sm4.key"
    path.touch(mode=0o600)
    path.write_text(key_hex + "\n", encoding="ascii")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="measured duration of each load")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent callers")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved secured/plain rounds")
    ap.add_argument(
        "--breakdown-seconds", type=float, default=1.5, help="duration of each breakdown item"
    )
    ap.add_argument(
        "--http1", action="store_true", help="HTTP/1.1 (a pool of connections) instead of HTTP/2"
    )
    args = ap.parse_args()
    args.sm4_key = secrets.token_hex(16)

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-protocol-")))
        lib, pin = fresh_token(work, LABEL)
        token = HsmToken(
            module_path=lib,
            token_label=LABEL,
            profile=load_profile("softhsm-sm"),
            pin=pin,
            pool_size=POOL_SIZE,
        )
        stack.callback(token.close)
        key = KeyStore(token).generate("sign")
        assert key.public_key is not None
        signer = Sm2Signer(token, key.label, key.public_key)
        client_pem = work / "sidecar-sign.pem"
        client_pem.write_text(key.public_key.pem())

        security = ["--security", "a", "--client-public-key", str(client_pem)]
        security += ["--sm4-key-file", str(sm4_key_file(work, args.sm4_key))]
        secured_sim = start_simulator(stack, work, "a", security, "platform_public_key_pem")
        args.platform_pem = Path(secured_sim.lines["platform_public_key_pem"]).read_text()
        plain_sim = start_simulator(stack, work, "plain", ["--security", "plain"], "client_key")
        print(
            f"nproc={os.cpu_count()}  HSM pool={POOL_SIZE}  simulators: pids "
            f"{secured_sim.process.pid} (scheme A), {plain_sim.process.pid} (plain)  "
            f"HTTP: {'1.1 (--http1)' if args.http1 else http_version(secured_sim)}"
        )
        asyncio.run(run(secured_sim, plain_sim, signer, args))


if __name__ == "__main__":
    main()
