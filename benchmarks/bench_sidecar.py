"""The sidecar's own cost against issue 14's targets: every target printed with PASS or MISS.

Run: ``.venv/bin/python benchmarks/bench_sidecar.py [options]`` (``make bench`` builds the venv and
SoftHSM first; ``make bench BENCH_ARGS="--soak 600"`` for the real soak figure). Options and the
latest figures: docs/performance.md.

Everything is a separate process, as deployed: the platform simulator (scheme A message security
over mutual TLS), the sidecar (``yibao-sidecar serve``, signing in a throw-away SoftHSM token, the
audit trail on, gRPC on a Unix socket, the libcurl transport over HTTP/1.1 unless ``--transport
httpx``) and the load generator (this file's ``loadgen`` command, a new process per measurement).
The load is open-loop: requests are *scheduled* at a fixed rate and each latency is measured from
its scheduled time, so a slow server cannot slow the load down and hide its own queueing.

What one run measures, each figure against a baseline of the same run:

* **comparison** at ``--rate`` (100/s), interleaved rounds, medians: each RPC through the sidecar
  and the same transactions sent straight to the simulator through the protocol layer
  (``PlatformClient`` built by ``app.build`` from the same configuration, same HSM signing) from
  the load generator: 1101 for GetEnrollment; 1101 then 2001 for CheckEligibility. The sidecar's
  CPU per request is utime + stime of ``/proc/<pid>/stat`` over the measured window; *added
  latency* is sidecar minus direct. With ``--baseline REF`` and/or ``--baseline-env K=V`` a second
  sidecar (the tree at REF, or this tree with that environment) runs the same phases: the A/B of a
  lever in one run.
* **SoftHSM signature CPU**: N signatures (C_Sign of e with the bench's sign key) on one raw
  session in a separate process, CPU per signature; subtracted once per platform transaction from
  the sidecar's CPU per request to give the CPU the sidecar spends outside the in-process token
  (with a hardware HSM that time is not ours).
* **highest sustained rate** of GetEnrollment, sidecar and direct (rate stepped up by
  ``--ramp-factor``, then one step halfway; held: >= 97% achieved, no error, p99 <= ``--max-p99``).
* **the sidecar's own ceiling**: the same ramp through a second sidecar whose platform is a
  stand-in that costs (almost) nothing: this file's ``standin`` command, an HTTP/1.1 server on the
  simulator's TLS certificate that forwards the first request of each transaction to the simulator
  and answers every later one with that answer (its ``output`` correctly encrypted and signed by
  the simulator) under a fresh ``inf_refmsgid`` and ``respond_time``.
* **peak RSS** (``VmHWM``) of the sidecar over the whole run, and a **soak** of ``--soak``
  seconds of GetEnrollment at ``--soak-rate`` with RSS sampled throughout: the slope (MB/min, least
  squares) of the second half.

The targets' thresholds are the data in :data:`TARGETS`. The circuit breaker threshold is raised
(as in bench_protocol.py) so that a connection the simulator closes cannot stop a measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import os
import secrets
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_protocol import (  # noqa: E402
    LABEL,
    POPULATION,
    SEED,
    Simulator,
    process_cpu,
    sm4_key_file,
    start_simulator,
)
from softhsm_token import softhsm_library, use_token_directory  # noqa: E402

from yibao_devkit.simulator.app import DEFAULT_DIVISION, DEFAULT_INSTITUTION_CODE  # noqa: E402

TENANT = "bench-corp"
DIRECT_OPERATOR = "bench-direct-01"  # its own sign-in: never invalidates a sidecar's
PEOPLE = 40
RPCS = ("GetEnrollment", "CheckEligibility")
TRANSACTIONS = {"GetEnrollment": 1, "CheckEligibility": 2}  # platform calls (signatures) per RPC
BEIJING = dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True)
class Target:
    """One of issue 14's targets: ``value <= limit`` (or ``>=`` when ``at_least``)."""

    label: str
    unit: str
    limit: float | None  # None: reported, no threshold
    at_least: bool = False

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "not run"
        if self.limit is None:
            return "reported"
        met = value >= self.limit if self.at_least else value <= self.limit
        return "PASS" if met else "MISS"


#: Issue 14's targets, the one place their thresholds live.
TARGETS: dict[str, Target] = {
    "cpu_without_signature": Target(
        "sidecar CPU per GetEnrollment, without the SoftHSM signature", "ms", 2.0
    ),
    "cpu_with_signature": Target("sidecar CPU per GetEnrollment, SoftHSM signature in", "ms", None),
    "signature_cpu": Target(
        "  of which: one SoftHSM SM2 signature (separate measurement)", "ms", None
    ),
    "added_p50": Target("added latency at p50, GetEnrollment, audit trail on", "ms", 1.5),
    "added_p99": Target("added latency at p99, GetEnrollment, audit trail on", "ms", 10.0),
    "sustained_ratio": Target(
        "highest sustained GetEnrollment rate, sidecar / direct", "x", 0.9, at_least=True
    ),
    "standin_ceiling": Target("sidecar's own ceiling, zero-cost platform stand-in", "req/s", None),
    "eligibility_rate": Target(
        "CheckEligibility at the rate: achieved / scheduled rate", "x", 0.97, at_least=True
    ),
    "eligibility_in_deadline": Target(
        "CheckEligibility at the rate: calls done inside the caller's deadline", "%", 100.0, True
    ),
    "peak_rss": Target("sidecar peak RSS (VmHWM)", "MB", 120.0),
    "soak_slope": Target("sidecar RSS slope over the soak (second half)", "MB/min", 0.2),
}


# ================================================================ the load generator process


def people() -> list[Any]:
    from yibao_devkit.simulator.population import Population

    return [p for p in Population.generate(SEED, POPULATION).people if p.enrolled][:PEOPLE]


async def sidecar_calls(
    socket: str, rpc: str, operator: str, deadline: float
) -> tuple[Callable[[Any], Awaitable[Any]], Any]:
    """One gRPC call of ``rpc`` to the sidecar for a person, and the channel to close."""
    import grpc

    from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
    from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
    from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc

    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    stub = gateway_grpc.InsuranceGatewayStub(channel)
    metadata = (("x-yibao-tenant", TENANT), ("x-yibao-operator", operator))
    today = dt.datetime.now(BEIJING).date().isoformat()

    def subject(person: Any) -> common.DataSubject:
        return common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=person.certno,
            name=person.psn_name,
        )

    async def enrollment(person: Any) -> Any:
        request = gateway.GetEnrollmentRequest(subject=subject(person))
        return await stub.GetEnrollment(request, metadata=metadata, timeout=deadline)

    async def eligibility(person: Any) -> Any:
        request = gateway.CheckEligibilityRequest(
            subject=subject(person),
            insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
            medical_type_code="11",
            begin_date=today,
        )
        return await stub.CheckEligibility(request, metadata=metadata, timeout=deadline)

    async def consent(person: Any) -> None:  # the IM service's consent dialog, once per person
        from yibao_devkit import demo_consent

        purposes = (common.PURPOSE_ENROLLMENT_QUERY, common.PURPOSE_ELIGIBILITY_CHECK)
        await demo_consent.grant(channel, metadata, "", subject(person), purposes, Quiet())

    async def with_consent(person: Any) -> Any:
        if person.certno not in consented:
            await consent(person)
            consented.add(person.certno)
        return await (enrollment if rpc == "GetEnrollment" else eligibility)(person)

    consented: set[str] = set()
    return with_consent, channel


class Quiet:
    def step(self, text: str) -> None:
        pass


async def direct_calls(
    config: Path, rpc: str, deadline: float
) -> tuple[Callable[[Any], Awaitable[Any]], Any]:
    """The same transactions through the protocol layer, built from the sidecar's config."""
    from sidecar import app
    from sidecar import config as configuration
    from sidecar.domain.subjects import Subject
    from sidecar.gateway.eligibility import EligibilityChecks, EligibilityQuestion
    from sidecar.gateway.enrollment import EnrollmentQueries
    from sidecar.platform.client import Operator

    settings = configuration.load(config)
    built = app.build(settings)  # the sidecar's own wiring; its server is never started
    codes = settings.platform.transactions
    queries = EnrollmentQueries(built.platform, settings.platform)
    checks = EligibilityChecks(queries, built.platform, codes, settings.institution)
    operator = Operator(DIRECT_OPERATOR, DIRECT_OPERATOR)
    today = dt.datetime.now(BEIJING).date().isoformat()

    def subject(person: Any) -> Subject:
        return Subject(person.psn_cert_type, person.certno, person.psn_name)

    async def enrollment(person: Any) -> Any:
        return await queries.person_info(subject(person), operator, _deadline(deadline))

    async def eligibility(person: Any) -> Any:
        question = EligibilityQuestion(subject(person), "310", "11", today, "", "")
        return await checks.check(question, operator, _deadline(deadline))

    return (enrollment if rpc == "GetEnrollment" else eligibility), built


def _deadline(seconds: float) -> Any:
    from sidecar.deadlines import Deadline

    return Deadline.of_budget(seconds, time.monotonic)


@dataclass
class Result:
    rate: float  # achieved requests/s (successes over the time to the last completion)
    p50: float
    p95: float
    p99: float
    ok: int
    errors: int
    cpu: float  # CPU seconds per request of the load generator process
    first_error: str = ""
    late: int = 0  # successes that ended after the caller's deadline (from their scheduled time)


async def open_loop(
    call: Callable[[Any], Awaitable[Any]], who: list[Any], rate: float, seconds: float,
    deadline: float,
) -> Result:  # fmt: skip
    """``rate`` requests/s for ``seconds``, each timed from its scheduled start."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: list[str] = []
    cpu0 = time.process_time()
    start = loop.time() + 0.05
    last = start

    async def one(i: int, at: float) -> None:
        nonlocal last
        await asyncio.sleep(max(0.0, at - loop.time()))
        try:
            await call(who[i % len(who)])
        except Exception as exc:  # counted and reported
            errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
            return
        last = max(last, loop.time())
        latencies.append(loop.time() - at)

    n = max(1, int(rate * seconds))
    await asyncio.gather(*(one(i, start + i / rate) for i in range(n)))
    cpu = time.process_time() - cpu0
    if len(latencies) < 2:
        raise RuntimeError(f"fewer than 2 calls succeeded; first error: {errors[:1]}")
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    achieved = len(latencies) / max(last - start, 1e-9)
    first = errors[0] if errors else ""
    late = sum(1 for latency in latencies if latency > deadline)
    return Result(achieved, q[49], q[94], q[98], len(latencies), len(errors), cpu / n, first, late)


async def loadgen(args: argparse.Namespace) -> None:
    """The ``loadgen`` command: warms up, prints ``start``, measures, prints a JSON result."""
    if args.target == "sidecar":
        call, resource = await sidecar_calls(args.socket, args.rpc, args.operator, args.deadline)
    else:
        call, resource = await direct_calls(Path(args.config), args.rpc, args.deadline)
    who = []
    refusals: list[str] = []
    for person in people():  # only people the platform answers for this RPC
        try:
            await call(person)
        except Exception as exc:  # not enrolled for this RPC: left out
            refusals.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            continue
        who.append(person)
    if not who:
        raise RuntimeError(f"no person answered {args.rpc}; first refusal: {refusals[:1]}")
    await open_loop(call, who, args.rate, args.warmup, args.deadline)
    print("start", flush=True)
    result = await open_loop(call, who, args.rate, args.seconds, args.deadline)
    print(json.dumps(result.__dict__), flush=True)
    await resource.close()


# ================================================================ the zero-cost platform stand-in


async def standin(args: argparse.Namespace) -> None:
    """The ``standin`` command: HTTP/1.1 over mutual TLS, one canned answer per transaction.

    The first request of each ``infno`` goes to the simulator (``--upstream``) and its answer is
    kept; every later request of that ``infno`` is answered with the kept answer under a fresh
    ``inf_refmsgid`` and ``respond_time`` (scheme A signs the plain ``output`` only, so the kept
    ``output`` and ``cainfo`` stay valid). The sidecar's replay guard sees a new answer each time.
    Prints ``url: https://...`` once listening.
    """
    import httpx

    pki = Path(args.pki)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.ca)
    context.load_cert_chain(pki / "server.pem", pki / "server-key.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    upstream_tls = ssl.create_default_context(cafile=args.ca)
    upstream_tls.load_cert_chain(args.client_cert, args.client_key)
    upstream = httpx.AsyncClient(verify=upstream_tls, timeout=10.0)
    canned: dict[str, dict[str, Any]] = {}
    serial = itertools.count()

    async def answer(path: str, body: bytes, headers: dict[str, str]) -> bytes:
        infno = str(json.loads(body).get("infno", ""))
        kept = canned.get(infno)
        if kept is None:
            forwarded = {k: v for k, v in headers.items() if k not in ("host", "content-length")}
            reply = await upstream.post(args.upstream + path, content=body, headers=forwarded)
            parsed = reply.json()
            if reply.status_code == 200 and parsed.get("infcode") == 0 and infno != "9001":
                canned[infno] = parsed
            return reply.content
        fresh = dict(kept)
        now = dt.datetime.now(BEIJING).strftime("%Y%m%d%H%M%S%f")[:17]
        fresh["inf_refmsgid"] = f"SI{os.getpid():08d}{next(serial):020d}"
        fresh["respond_time"] = now
        fresh["refmsg_time"] = now
        return json.dumps(fresh, ensure_ascii=False).encode()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip().lower()] = value.strip()
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                content = await answer(path, body, headers)
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json;charset=utf-8\r\n"
                    + f"content-length: {len(content)}\r\n\r\n".encode()
                    + content
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0, ssl=context, backlog=512)
    port = server.sockets[0].getsockname()[1]
    print(f"url: https://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()
    await upstream.aclose()


# ================================================================ one SoftHSM signature's CPU


def signature_cpu(args: argparse.Namespace) -> None:
    """The ``signcost`` command: CPU seconds of one C_Sign with the bench's sign key (raw session).

    Prints one JSON line: ``{"cpu": seconds per signature, "n": count}``. Run in its own process
    against the same token as the sidecar, so its CPU is SoftHSM's signature alone.
    """
    from pkcs11 import Attribute, ObjectClass

    from hsm.keys import KeyStore
    from hsm.pin import read_pin_file
    from hsm.profiles import load_profile
    from hsm.sm2 import Sm2Signer
    from hsm.token import HsmToken

    token = HsmToken(
        module_path=args.module,
        token_label=LABEL,
        profile=load_profile("softhsm-sm"),
        pin=read_pin_file(args.pin_file),
        pool_size=1,
    )
    key = KeyStore(token).active("sign")
    assert key.public_key is not None
    e = Sm2Signer(token, key.label, key.public_key).digest(secrets.token_bytes(200))
    mechanism = token.mechs.mech("sm2_sign_e")
    session = token.open_session()
    private = next(
        session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: key.label})
    )
    for _ in range(20):  # warm
        private.sign(e, mechanism=mechanism)
    cpu0 = time.process_time()
    for _ in range(args.count):
        private.sign(e, mechanism=mechanism)
    cpu = (time.process_time() - cpu0) / args.count
    token.close()
    print(json.dumps({"cpu": cpu, "n": args.count}), flush=True)


# ================================================================ the orchestrator


@dataclass
class Phase:
    target: str  # "direct" or a sidecar's name
    rpc: str
    rate: float
    result: Result
    sidecar_cpu: float  # CPU seconds of the sidecar process per request (0 for direct)


@dataclass
class Sidecar:
    name: str  # "sidecar", "baseline", "standin"
    process: subprocess.Popen[str]
    socket: Path
    config: Path
    operator: str  # its own sign-in on the platform

    def cpu(self) -> float:
        return process_cpu(self.process.pid)

    def memory(self) -> dict[str, int]:
        """VmHWM (peak RSS) and VmRSS in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text().splitlines()
        fields = (line.split(":") for line in status)
        return {k: int(v.split()[0]) for k, v in fields if k in ("VmHWM", "VmRSS")}

    def stop(self) -> None:
        Simulator(self.process).stop()  # SIGTERM, then SIGKILL after 15 s


def run_phase(
    sidecar: Sidecar,
    target: str,
    rpc: str,
    rate: float,
    args: argparse.Namespace,
    seconds: float | None = None,
    sample: Callable[[], None] | None = None,
) -> Phase:
    """One load generator process against ``sidecar`` (or ``direct`` from its configuration)."""
    argv = [
        sys.executable, __file__, "loadgen", "--target", target, "--rpc", rpc,
        "--rate", str(rate), "--seconds", str(seconds or args.seconds),
        "--warmup", str(args.warmup), "--socket", str(sidecar.socket),
        "--config", str(sidecar.config), "--operator", sidecar.operator,
        "--deadline", str(args.deadline),
    ]  # fmt: skip
    env = dict(os.environ)
    if target == "direct":  # its own msgid slot: the simulator refuses a reused msgid
        env["YIBAO_SIDECAR__PLATFORM__MSGID__SLOT"] = "1"
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)  # noqa: S603
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "start":
        process.wait()
        raise RuntimeError(f"load generator failed before measuring ({target} {rpc}): {line}")
    cpu0 = sidecar.cpu()
    profiled = target == "sidecar" and sidecar.name == "sidecar" and args.profile
    spy = profiler(sidecar, args) if profiled else None
    stop = threading.Event()
    sampler = None
    if sample is not None:

        def sampling() -> None:
            while not stop.wait(args.soak_interval):
                sample()

        sampler = threading.Thread(target=sampling, daemon=True)
        sampler.start()
    line = process.stdout.readline()
    cpu = sidecar.cpu() - cpu0
    stop.set()
    if sampler is not None:
        sampler.join()
    if spy is not None:
        spy.wait()
        print_profile(Path(args.profile), rpc)
    if process.wait() != 0 or not line:
        raise RuntimeError(f"load generator failed ({target} {rpc} at {rate}/s)")
    result = Result(**json.loads(line))
    if result.errors:
        print(f"  {target} {rpc} {rate:.0f}/s: {result.errors} errors, first: {result.first_error}")
    return Phase(target, rpc, rate, result, cpu / (result.ok + result.errors))


def profiler(sidecar: Sidecar, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """py-spy sampling the sidecar (all threads, native frames) for the measured window."""
    argv = [
        str(Path(sys.executable).with_name("py-spy")), "record",
        "--pid", str(sidecar.process.pid), "--duration", str(max(1, int(args.seconds) - 1)),
        "--rate", "100", "--nonblocking", "--format", "raw", "--nolineno",
        "--output", args.profile,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


def print_profile(raw: Path, rpc: str, top: int = 25) -> None:
    """Where the sidecar's busy samples are: by innermost frame, and inclusive per function."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [
            frame.split(" (")[0] + " " + frame.rpartition("/")[2].rstrip(")")
            for frame in stack.split(";")
        ]
        n = int(count)
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + n
    print(f"\n  py-spy, sidecar during {rpc} ({total} busy samples): inclusive / self")
    for frame, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {n / total:6.1%} {own.get(frame, 0) / total:6.1%}  {frame[:110]}")
    print("  by innermost frame:")
    for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {n / total:6.1%}  {frame[:110]}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def median_phase(phases: list[Phase]) -> Phase:
    """Each figure the median of the rounds (achieved rate, quantiles, CPU)."""

    def med(get: Callable[[Phase], float]) -> float:
        return float(statistics.median(get(p) for p in phases))

    r = phases[0].result
    result = Result(
        med(lambda p: p.result.rate),
        med(lambda p: p.result.p50),
        med(lambda p: p.result.p95),
        med(lambda p: p.result.p99),
        sum(p.result.ok for p in phases),
        sum(p.result.errors for p in phases),
        med(lambda p: p.result.cpu),
        r.first_error,
        sum(p.result.late for p in phases),
    )
    return Phase(
        phases[0].target, phases[0].rpc, phases[0].rate, result, med(lambda p: p.sidecar_cpu)
    )


def print_comparison(
    phases: dict[tuple[str, str], list[Phase]], targets: list[str], args: argparse.Namespace
) -> dict[tuple[str, str], Phase]:
    print()
    print(
        f"At {args.rate:.0f} req/s, {args.seconds:.0f} s measured after {args.warmup:.0f} s of "
        f"warm-up, median of {args.rounds} interleaved round(s); latencies in ms"
    )
    head = ("", "req/s", "p50", "p95", "p99", "sidecar CPU", "loadgen CPU", "ok", "errors")
    print(
        f"{head[0]:30}{head[1]:>8}{head[2]:>9}{head[3]:>9}{head[4]:>9}{head[5]:>13}"
        f"{head[6]:>13}{head[7]:>7}{head[8]:>7}"
    )
    medians: dict[tuple[str, str], Phase] = {}
    for rpc in RPCS:
        med = {t: median_phase(phases[(t, rpc)]) for t in targets}
        medians.update({(t, rpc): p for t, p in med.items()})
        for target, p in med.items():
            r = p.result
            sidecar_cpu = ms(p.sidecar_cpu) if target != "direct" else "       -"
            print(
                f"{rpc + ' ' + target:30}{r.rate:8.1f}{ms(r.p50):>9}{ms(r.p95):>9}"
                f"{ms(r.p99):>9}{sidecar_cpu:>13}{ms(r.cpu):>13}{r.ok:7d}{r.errors:7d}"
            )
        d = med["direct"].result
        for target in targets[1:]:
            s = med[target].result
            print(
                f"{'  added by ' + target:30}{'':8}{ms(s.p50 - d.p50):>9}{ms(s.p95 - d.p95):>9}"
                f"{ms(s.p99 - d.p99):>9}"
            )
        for other in targets[2:]:  # the A/B: each baseline or variant against this tree
            b, s = med[other], med["sidecar"]
            print(
                f"{'  sidecar / ' + other:30}{s.result.rate / b.result.rate:8.2f}"
                f"{s.result.p50 / b.result.p50:9.2f}{s.result.p95 / b.result.p95:9.2f}"
                f"{s.result.p99 / b.result.p99:9.2f}{s.sidecar_cpu / b.sidecar_cpu:13.2f}"
            )
    print("  sidecar CPU: the sidecar process (all threads, HSM workers included) per request;")
    print("  loadgen CPU: the load generator per request (direct: the whole protocol layer)")
    return medians


def sustained(
    sidecar: Sidecar, target: str, args: argparse.Namespace, start: float
) -> tuple[float, Phase] | None:
    """The highest rate of GetEnrollment held (>= 97% achieved, no error, p99 <= max-p99):
    stepped up by the ramp factor, then one step halfway (geometric) past the last held rate."""
    best: tuple[float, Phase] | None = None

    def attempt(rate: float) -> bool:
        nonlocal best
        phase = run_phase(sidecar, target, "GetEnrollment", rate, args)
        r = phase.result
        held = r.rate >= 0.97 * rate and r.errors == 0 and r.p99 <= args.max_p99
        label = "direct" if target == "direct" else sidecar.name
        print(
            f"  {label:8}{rate:7.0f}/s target: {r.rate:7.1f}/s achieved, p99 {ms(r.p99)} ms, "
            f"sidecar CPU {ms(phase.sidecar_cpu)} ms/req  {'held' if held else 'NOT held'}"
        )
        if held and (best is None or rate > best[0]):
            best = (rate, phase)
        return held

    rate = start
    while rate <= args.ramp_limit and attempt(rate):
        rate *= args.ramp_factor
    if best is not None and rate <= args.ramp_limit:
        attempt(best[0] * args.ramp_factor**0.5)
    return best


def write_config(
    work: Path,
    name: str,
    url: str,
    sim: Simulator,
    keys: tuple[str, Path, Path] | None,
    args: argparse.Namespace,
) -> tuple[Path, Path]:
    """A sidecar's configuration and socket; ``keys`` (module, PIN file, SM4 key file) for
    scheme A. Each sidecar has its own directory (socket, store, spool)."""
    home = work / name
    home.mkdir()
    socket = home / "sidecar.sock"
    s = sim.lines
    pseudonym_key = home / "pseudonym.key"
    pseudonym_key.touch(mode=0o600)
    pseudonym_key.write_text(secrets.token_hex(32) + "\n")
    security = ""
    if keys is not None:
        lib, pin_file, sm4_file = keys
        security = f"""
[platform.security]
scheme = "envelope-signature"
platform_public_key_file = "{s["platform_public_key_pem"]}"
sm4_key_file = "{sm4_file}"

[hsm]
module = "{lib}"
token_label = "{LABEL}"
user_pin_file = "{pin_file}"
pool_size = 2

[audit]                 # on, as in production: every RPC and transaction recorded
instance = "bench-{name}"
spool_dir = "{home / "audit-spool"}"
"""
    transport = f'transport = "{args.transport}"' if args.transport != "httpx" else ""
    config = home / "sidecar.toml"
    config.write_text(f"""\
[server]
socket_path = "{socket}"
max_concurrent_rpcs = 4096

[institution]
code = "{DEFAULT_INSTITUTION_CODE}"
name = "压测机构"
division = "{DEFAULT_DIVISION}"

[platform]
url = "{url}"
ca_file = "{s["ca_cert"]}"
client_cert_file = "{s["client_cert"]}"
client_key_file = "{s["client_key"]}"
timeout_seconds = 10
http2 = {"true" if args.http2 else "false"}
{transport}

[platform.msgid]
slots = {4 + len(args.variant)}  # 0 sidecar, 1 direct, 2 baseline, 3 stand-in, 4+ variants

[platform.resilience]
breaker_failure_threshold = 1000
max_in_flight = 1024
{security}
[cache]
ttl_seconds = 0   # off: every request reaches the platform

[consent]
pseudonym_key_file = "{pseudonym_key}"

[store]
sqlite_path = "{home / "sidecar.db"}"

[log]
level = "WARNING"
""")
    return config, socket


def key_ceremony(work: Path) -> tuple[str, Path, Path]:
    """A throw-away token with a sign key, made with ``yibao-hsm`` as the security team would."""
    lib = softhsm_library()
    use_token_directory(work)  # inherited by every process
    pins = {}
    for who in ("so", "user"):
        pins[who] = work / f"{who}.pin"
        pins[who].touch(mode=0o600)
        pins[who].write_text(secrets.token_hex(8) + "\n")
    public_pem = work / "sidecar-sign.pem"
    common = ["--module", lib, "--token-label", LABEL, "--profile", "softhsm-sm",
              "--user-pin-file", str(pins["user"])]  # fmt: skip
    for command in (
        ["init-token", "--so-pin-file", str(pins["so"])],
        ["keygen", "--purpose", "sign"],
        ["keygen", "--purpose", "kek"],  # the audit trail: data keys, checkpoints, pseudonyms
        ["keygen", "--purpose", "audit"],
        ["keygen", "--purpose", "pseudonym"],
        ["export-public", "--out", str(public_pem)],
    ):
        hsm_cli = [sys.executable, "-m", "hsm.cli", *command, *common]
        subprocess.run(hsm_cli, check=True, capture_output=True, cwd=REPO)  # noqa: S603
    return lib, pins["user"], public_pem


@contextlib.contextmanager
def started_sidecar(
    work: Path,
    name: str,
    config: Path,
    socket: Path,
    *,
    slot: int,
    tree: Path = REPO,
    env: dict[str, str] | None = None,
    cprofile: str | None = None,
) -> Iterator[Sidecar]:
    """``yibao-sidecar serve`` from ``tree`` (this checkout, or a baseline's export)."""
    log = (work / name / "sidecar.log").open("w")
    profiled = ["-m", "cProfile", "-o", cprofile] if cprofile else []
    argv = [sys.executable, *profiled, "-m", "sidecar", "serve", "--config", str(config)]
    environment = dict(os.environ, YIBAO_SIDECAR__PLATFORM__MSGID__SLOT=str(slot), **(env or {}))
    process = subprocess.Popen(  # noqa: S603
        argv, cwd=tree, stdout=log, stderr=log, text=True, env=environment
    )
    sidecar = Sidecar(name, process, socket, config, f"bench-{name}-01")
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                text = (work / name / "sidecar.log").read_text()[-3000:]
                raise RuntimeError(f"sidecar {name} did not start: {text}")
            time.sleep(0.1)
        yield sidecar
    finally:
        sidecar.stop()
        log.close()


def exported_tree(work: Path, ref: str) -> Path:
    """The sources of ``ref`` (``git archive``), to run a baseline sidecar from."""
    tree = work / f"tree-{ref.replace('/', '_')}"
    tree.mkdir()
    git = ["git", "archive", "--format=tar", ref]
    archive = subprocess.run(git, cwd=REPO, check=True, capture_output=True).stdout  # noqa: S603
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)  # noqa: S603, S607
    return tree


@contextlib.contextmanager
def started_standin(sim: Simulator, work: Path) -> Iterator[str]:
    """The zero-cost platform stand-in (``standin`` command) in its own process; its URL."""
    s = sim.lines
    argv = [
        sys.executable, __file__, "standin", "--upstream", s["url"].split("/fsi/")[0],
        "--pki", str(work / "pki-a"), "--ca", s["ca_cert"],
        "--client-cert", s["client_cert"], "--client-key", s["client_key"],
    ]  # fmt: skip
    log = (work / "standin.log").open("w")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True)  # noqa: S603
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("url: "):
            log.flush()
            raise RuntimeError(f"stand-in did not start: {(work / 'standin.log').read_text()}")
        yield line.removeprefix("url: ").strip()
    finally:
        Simulator(process).stop()  # type: ignore[arg-type]
        log.close()


def measure_signature(keys: tuple[str, Path, Path], n: int) -> float:
    """CPU seconds of one SoftHSM signature, measured in its own process (``signcost``)."""
    lib, pin_file, _ = keys
    argv = [
        sys.executable, __file__, "signcost", "--module", lib, "--pin-file", str(pin_file),
        "--count", str(n),
    ]  # fmt: skip
    done = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=REPO)  # noqa: S603
    return float(json.loads(done.stdout.strip().splitlines()[-1])["cpu"])


def soak(sidecar: Sidecar, args: argparse.Namespace) -> float:
    """GetEnrollment at ``--soak-rate`` for ``--soak`` seconds; RSS slope (MB/min) of the
    second half (the first half includes the allocator's and the caches' growth to their size)."""
    samples: list[tuple[float, float]] = []
    start = time.monotonic()

    def sample() -> None:
        samples.append((time.monotonic() - start, sidecar.memory()["VmRSS"] / 1024))

    phase = run_phase(sidecar, "sidecar", "GetEnrollment", args.soak_rate, args, args.soak, sample)
    second_half = samples[len(samples) // 2 :]
    if len(second_half) < 2:
        raise RuntimeError("the soak is too short for two RSS samples in its second half")
    slope, _ = statistics.linear_regression(
        [t for t, _ in second_half], [rss for _, rss in second_half]
    )
    r = phase.result
    print(
        f"\nSoak: {args.soak:.0f} s of GetEnrollment at {args.soak_rate:.0f}/s: "
        f"{r.rate:.1f}/s achieved, p99 {ms(r.p99)} ms, {r.errors} errors; RSS "
        f"{samples[0][1]:.1f} -> {samples[-1][1]:.1f} MB over {len(samples)} samples, "
        f"slope of the second half {slope * 60:+.3f} MB/min"
    )
    return slope * 60


def print_targets(values: dict[str, float | None], notes: dict[str, str]) -> int:
    """Every target with its value and PASS/MISS; the number of misses."""
    print("\nIssue 14 targets (baselines above, same run)")
    misses = 0
    for key, target in TARGETS.items():
        value = values.get(key)
        verdict = target.verdict(value)
        misses += verdict == "MISS"
        limit = ""
        if target.limit is not None:
            limit = f"{'>=' if target.at_least else '<='} {target.limit:g} {target.unit}"
        shown = "-" if value is None else f"{value:10.2f} {target.unit}"
        note = notes.get(key, "")
        print(f"  {verdict:8} {target.label:66} {shown:>17}  {limit:14} {note}")
    return misses


def env_pairs(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--baseline-env: expected KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured duration of each load")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up before each measurement")
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s of the comparison")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved direct/sidecar rounds")
    ap.add_argument("--deadline", type=float, default=3.0, help="the caller's deadline, seconds")
    ap.add_argument("--ramp-start", type=float, default=25.0)
    ap.add_argument("--ramp-factor", type=float, default=1.4)
    ap.add_argument("--ramp-limit", type=float, default=5000.0)
    ap.add_argument("--max-p99", type=float, default=0.25, help="seconds; for the ramp")
    ap.add_argument("--no-ramp", action="store_true", help="skip the highest sustained rates")
    ap.add_argument("--no-standin", action="store_true", help="skip the stand-in's ceiling")
    ap.add_argument("--soak", type=float, default=30.0, help="soak seconds (0: none; 600 real)")
    ap.add_argument("--soak-rate", type=float, default=50.0)
    ap.add_argument("--soak-interval", type=float, default=2.0, help="RSS sample period, s")
    ap.add_argument("--signatures", type=int, default=500, help="SoftHSM signatures to time")
    ap.add_argument("--baseline", metavar="REF", help="A/B: also run the sidecar of git REF")
    ap.add_argument(
        "--baseline-env", metavar="K=V", action="append", default=[],
        help="A/B: the baseline sidecar's extra environment (repeatable)",
    )  # fmt: skip
    ap.add_argument(
        "--variant", metavar="NAME:K=V,...", action="append", default=[],
        help="A/B: one more sidecar of this tree with that environment (repeatable)",
    )  # fmt: skip
    ap.add_argument("--security", choices=("a", "plain"), default="a", help="message security")
    ap.add_argument("--transport", choices=("curl", "httpx"), default="curl")
    ap.add_argument("--http2", action="store_true", help="HTTP/2 to the platform, not HTTP/1.1")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the sidecar phases into FILE (raw)")
    ap.add_argument("--cprofile", metavar="FILE", help="run the sidecar under cProfile into FILE")
    sub = ap.add_subparsers(dest="command")
    lg = sub.add_parser("loadgen", help="(internal) one measurement, in its own process")
    lg.add_argument("--target", choices=("sidecar", "direct"), required=True)
    lg.add_argument("--rpc", choices=RPCS, required=True)
    lg.add_argument("--rate", type=float, required=True)
    lg.add_argument("--seconds", type=float, required=True)
    lg.add_argument("--warmup", type=float, required=True)
    lg.add_argument("--socket", required=True)
    lg.add_argument("--config", required=True)
    lg.add_argument("--operator", required=True)
    lg.add_argument("--deadline", type=float, required=True)
    si = sub.add_parser("standin", help="(internal) the zero-cost platform stand-in")
    for name in ("--upstream", "--pki", "--ca", "--client-cert", "--client-key"):
        si.add_argument(name, required=True)
    sc = sub.add_parser("signcost", help="(internal) CPU of one SoftHSM signature")
    sc.add_argument("--module", required=True)
    sc.add_argument("--pin-file", required=True)
    sc.add_argument("--count", type=int, default=500)
    args = ap.parse_args()
    if args.command == "loadgen":
        asyncio.run(loadgen(args))
        return
    if args.command == "standin":
        asyncio.run(standin(args))
        return
    if args.command == "signcost":
        signature_cpu(args)
        return
    baseline_env = env_pairs(args.baseline_env)

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    values: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bs-", dir="/tmp")))
        if args.security == "a":
            lib, pin_file, public_pem = key_ceremony(work)
            sm4_file = sm4_key_file(work, secrets.token_hex(16))
            security = ["--security", "a", "--client-public-key", str(public_pem)]
            security += ["--sm4-key-file", str(sm4_file)]
            sim = start_simulator(stack, work, "a", security, "platform_public_key_pem")
            keys: tuple[str, Path, Path] | None = (lib, pin_file, sm4_file)
        else:
            sim = start_simulator(stack, work, "plain", ["--security", "plain"], "client_key")
            keys = None
        sim_url = sim.lines["url"].split("/fsi/")[0]
        config, socket = write_config(work, "sidecar", sim_url, sim, keys, args)
        sidecar = stack.enter_context(
            started_sidecar(work, "sidecar", config, socket, slot=0, cprofile=args.cprofile)
        )
        sidecars = [sidecar]
        if args.baseline or baseline_env:
            tree = exported_tree(work, args.baseline) if args.baseline else REPO
            b_config, b_socket = write_config(work, "baseline", sim_url, sim, keys, args)
            sidecars.append(
                stack.enter_context(
                    started_sidecar(
                        work, "baseline", b_config, b_socket, slot=2, tree=tree, env=baseline_env
                    )
                )
            )
            print(f"baseline sidecar: {args.baseline or 'this tree'} {baseline_env or ''}")
        for index, variant in enumerate(args.variant):
            name, _, pairs = variant.partition(":")
            if not name.isidentifier() or name in ("sidecar", "baseline", "standin"):
                raise SystemExit(f"--variant: expected NAME:K=V[,K=V], not {variant!r}")
            v_env = env_pairs(pairs.split(",") if pairs else [])
            v_config, v_socket = write_config(work, name, sim_url, sim, keys, args)
            sidecars.append(
                stack.enter_context(
                    started_sidecar(work, name, v_config, v_socket, slot=4 + index, env=v_env)
                )
            )
            print(f"variant sidecar {name}: this tree with {v_env}")
        scheme = "scheme A, SoftHSM pool 2" if keys else "plain (mTLS only)"
        print(
            f"nproc={os.cpu_count()}  simulator pid {sim.process.pid}, sidecar pid "
            f"{sidecar.process.pid}: {scheme}, {args.transport} HTTP/{'2' if args.http2 else '1.1'}"
            f", cache: none, audit trail: {'on' if keys else 'off'}, caller's deadline "
            f"{args.deadline:g} s"
        )
        signature = measure_signature(keys, args.signatures) if keys else 0.0
        if keys:
            print(
                f"SoftHSM SM2 signature: {ms(signature)} ms CPU each "
                f"({args.signatures} on one raw session, own process)"
            )

        phases: dict[tuple[str, str], list[Phase]] = {}
        targets = ["direct", *(s.name for s in sidecars)]
        for _ in range(args.rounds):
            for rpc in RPCS:
                phase = run_phase(sidecar, "direct", rpc, args.rate, args)
                phases.setdefault(("direct", rpc), []).append(phase)
                for each in sidecars:
                    phase = run_phase(each, "sidecar", rpc, args.rate, args)
                    phase.target = each.name
                    phases.setdefault((each.name, rpc), []).append(phase)
        medians = print_comparison(phases, targets, args)
        print(f"  sidecar RSS after the comparison: {sidecar.memory()['VmRSS'] / 1024:.1f} MB")
        enrollment = medians[("sidecar", "GetEnrollment")]
        direct = medians[("direct", "GetEnrollment")]
        per_request = enrollment.sidecar_cpu
        values["cpu_with_signature"] = per_request * 1000
        values["signature_cpu"] = signature * 1000 if keys else None
        values["cpu_without_signature"] = (
            per_request - TRANSACTIONS["GetEnrollment"] * signature
        ) * 1000
        notes["cpu_without_signature"] = "(CPU per request - 1 x signature)"
        values["added_p50"] = (enrollment.result.p50 - direct.result.p50) * 1000
        values["added_p99"] = (enrollment.result.p99 - direct.result.p99) * 1000
        notes["added_p50"] = f"(direct p50 {ms(direct.result.p50).strip()} ms)"
        notes["added_p99"] = f"(direct p99 {ms(direct.result.p99).strip()} ms)"
        checks = [p.result for p in phases[("sidecar", "CheckEligibility")]]
        scheduled = sum(r.ok + r.errors for r in checks)
        inside = sum(r.ok - r.late for r in checks)
        values["eligibility_in_deadline"] = 100.0 * inside / scheduled
        eligibility = medians[("sidecar", "CheckEligibility")].result
        values["eligibility_rate"] = eligibility.rate / args.rate
        notes["eligibility_in_deadline"] = (
            f"({eligibility.rate:.1f}/s achieved, p99 {ms(eligibility.p99).strip()} ms)"
        )

        if not args.no_ramp:
            print()
            print(
                f"Highest sustained GetEnrollment rate (x{args.ramp_factor} steps; held: >= 97%"
                f" achieved, no error, p99 <= {args.max_p99 * 1000:.0f} ms)"
            )
            held = {t: sustained(sidecar, t, args, args.ramp_start) for t in ("sidecar", "direct")}
            rates = {
                t: (f"{h[0]:.0f}/s" if h else f"< {args.ramp_start:.0f}/s") for t, h in held.items()
            }
            print(f"  highest held: sidecar {rates['sidecar']}, direct {rates['direct']}")
            s_held, d_held = held["sidecar"], held["direct"]
            if s_held and d_held:
                values["sustained_ratio"] = s_held[0] / d_held[0]
                notes["sustained_ratio"] = f"({s_held[0]:.0f} vs {d_held[0]:.0f} req/s)"
        if not args.no_standin and keys:
            url = stack.enter_context(started_standin(sim, work))
            s_config, s_socket = write_config(work, "standin", url, sim, keys, args)
            standin_sidecar = stack.enter_context(
                started_sidecar(work, "standin", s_config, s_socket, slot=3)
            )
            print(f"\nThe sidecar's own ceiling: its platform a zero-cost stand-in ({url})")
            ceiling = sustained(standin_sidecar, "sidecar", args, args.ramp_start * 2)
            if ceiling is not None:
                values["standin_ceiling"] = ceiling[0]
                notes["standin_ceiling"] = (
                    f"(sidecar CPU {ms(ceiling[1].sidecar_cpu).strip()} ms/req there)"
                )
            standin_sidecar.stop()
        if args.soak > 0:
            values["soak_slope"] = soak(sidecar, args)
            notes["soak_slope"] = f"({args.soak:.0f} s at {args.soak_rate:.0f}/s)"
        memory = sidecar.memory()
        values["peak_rss"] = memory["VmHWM"] / 1024
        print(
            f"Sidecar peak RSS (VmHWM): {memory['VmHWM'] / 1024:.1f} MB "
            f"(now {memory['VmRSS'] / 1024:.1f} MB)"
        )
        print_targets(values, notes)


if __name__ == "__main__":
    main()
