"""The sidecar's own cost: two RPCs through it against the same transactions sent directly.

Run: ``.venv/bin/python benchmarks/bench_sidecar.py [--seconds S] [--rate R] [--rounds N]``
(``make bench`` builds the venv and SoftHSM first).

Everything is a separate process, as deployed: the platform simulator (scheme A message security
over mutual TLS, HTTP/2), the sidecar (``yibao-sidecar serve``, signing in a throw-away SoftHSM
token, gRPC on a Unix socket) and the load generator (this file's ``loadgen`` command, a new
process per measurement). The load is open-loop: requests are *scheduled* at a fixed rate and
each latency is measured from its scheduled time, so a slow server cannot slow the load down and
hide its own queueing.

For each RPC, in interleaved rounds at ``--rate`` requests/s:

* **sidecar**: the RPC over gRPC (Unix socket) to the sidecar process;
* **direct**: the same platform transactions sent straight to the simulator through the protocol
  layer (``sidecar.platform.client.PlatformClient`` built by ``app.build`` from the same
  configuration, with the same HSM signing), from the load-generator process: 1101 for
  GetEnrollment; 1101 then 2001 for CheckEligibility (``EligibilityChecks.check``).

It prints requests/s achieved, p50/p95/p99 latency, the sidecar's CPU time per request (utime +
stime deltas of ``/proc/<pid>/stat`` over the measured window) and the load generator's, the
added latency (sidecar - direct) and ratios; then the highest sustained rate of GetEnrollment
(rate stepped up until the achieved rate falls below 97% of the target, a request fails, or p99
exceeds ``--max-p99``); and the sidecar's peak RSS (``VmHWM``). Targets on a 2-core machine,
cache off: <= 2 ms sidecar CPU per GetEnrollment, <= 10 ms added p99 at 100 req/s, < 200 MB RSS.

The circuit breaker threshold is raised (as in bench_protocol.py): the simulator closes an HTTP/2
connection after 1000 requests, failing the requests in flight, which must not stop a
measurement; those requests are retried (queries) and show in the tail latency of both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
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

OPERATOR = "bench-im-01"
DIRECT_OPERATOR = "bench-direct-01"  # its own sign-in: never invalidates the sidecar's
METADATA = (("x-yibao-tenant", "bench-corp"), ("x-yibao-operator", OPERATOR))
DEADLINE = 10.0
PEOPLE = 40
RPCS = ("GetEnrollment", "CheckEligibility")


# ================================================================ the load generator process


def people() -> list[Any]:
    from yibao_devkit.simulator.population import Population

    return [p for p in Population.generate(SEED, POPULATION).people if p.enrolled][:PEOPLE]


async def sidecar_calls(socket: str, rpc: str) -> tuple[Callable[[Any], Awaitable[Any]], Any]:
    """One gRPC call of ``rpc`` to the sidecar for a person, and the channel to close."""
    import datetime as dt

    import grpc

    from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
    from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
    from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc

    channel = grpc.aio.insecure_channel(f"unix:{socket}")
    stub = gateway_grpc.InsuranceGatewayStub(channel)
    today = dt.date.today().isoformat()

    def subject(person: Any) -> common.DataSubject:
        return common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=person.certno,
            name=person.psn_name,
        )

    async def enrollment(person: Any) -> Any:
        request = gateway.GetEnrollmentRequest(subject=subject(person))
        return await stub.GetEnrollment(request, metadata=METADATA, timeout=DEADLINE)

    async def eligibility(person: Any) -> Any:
        request = gateway.CheckEligibilityRequest(
            subject=subject(person),
            insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
            medical_type_code="11",
            begin_date=today,
        )
        return await stub.CheckEligibility(request, metadata=METADATA, timeout=DEADLINE)

    async def consent(person: Any) -> None:  # the IM service's consent dialog, once per person
        from sidecar import demo_consent

        purposes = (common.PURPOSE_ENROLLMENT_QUERY, common.PURPOSE_ELIGIBILITY_CHECK)
        await demo_consent.grant(channel, METADATA, "", subject(person), purposes, Quiet())

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


async def direct_calls(config: Path, rpc: str) -> tuple[Callable[[Any], Awaitable[Any]], Any]:
    """The same transactions through the protocol layer, built from the sidecar's config."""
    import datetime as dt

    from sidecar import app
    from sidecar import config as configuration
    from sidecar.domain.subjects import Subject
    from sidecar.gateway.eligibility import EligibilityChecks, EligibilityQuestion
    from sidecar.gateway.enrollment import EnrollmentQueries
    from sidecar.platform.client import Operator

    settings = configuration.load(config)
    built = app.build(settings)  # the sidecar's own wiring; its server is never started
    codes = settings.platform.transactions
    queries = EnrollmentQueries(built.platform, codes.person_info)
    checks = EligibilityChecks(queries, built.platform, codes.benefit_check, "")
    operator = Operator(DIRECT_OPERATOR, DIRECT_OPERATOR)
    today = dt.date.today().isoformat()

    def subject(person: Any) -> Subject:
        return Subject(person.psn_cert_type, person.certno, person.psn_name)

    async def enrollment(person: Any) -> Any:
        return await queries.person_info(subject(person), operator, DEADLINE)

    async def eligibility(person: Any) -> Any:
        question = EligibilityQuestion(subject(person), "310", "11", today, "", "")
        return await checks.check(question, operator, DEADLINE)

    return (enrollment if rpc == "GetEnrollment" else eligibility), built


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


async def open_loop(
    call: Callable[[Any], Awaitable[Any]], who: list[Any], rate: float, seconds: float
) -> Result:
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
    return Result(achieved, q[49], q[94], q[98], len(latencies), len(errors), cpu / n, first)


async def loadgen(args: argparse.Namespace) -> None:
    """The ``loadgen`` command: warms up, prints ``start``, measures, prints a JSON result."""
    if args.target == "sidecar":
        call, resource = await sidecar_calls(args.socket, args.rpc)
    else:
        call, resource = await direct_calls(Path(args.config), args.rpc)
    who = []
    for person in people():  # only people the platform answers for this RPC
        with contextlib.suppress(Exception):
            await call(person)
            who.append(person)
    if not who:
        raise RuntimeError(f"no person answered {args.rpc}")
    await open_loop(call, who, args.rate, args.warmup)
    print("start", flush=True)
    result = await open_loop(call, who, args.rate, args.seconds)
    print(json.dumps(result.__dict__), flush=True)
    await resource.close()


# ================================================================ the orchestrator


@dataclass
class Phase:
    target: str
    rpc: str
    rate: float
    result: Result
    sidecar_cpu: float  # CPU seconds of the sidecar process per request (0 for direct)


@dataclass
class Sidecar:
    process: subprocess.Popen[str]
    socket: Path
    config: Path

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
    sidecar: Sidecar, target: str, rpc: str, rate: float, args: argparse.Namespace
) -> Phase:
    argv = [
        sys.executable,
        __file__,
        "loadgen",
        "--target",
        target,
        "--rpc",
        rpc,
        "--rate",
        str(rate),
        "--seconds",
        str(args.seconds),
        "--warmup",
        str(args.warmup),
        "--socket",
        str(sidecar.socket),
        "--config",
        str(sidecar.config),
    ]
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
    spy = profiler(sidecar, args) if target == "sidecar" and args.profile else None
    line = process.stdout.readline()
    cpu = sidecar.cpu() - cpu0
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
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(sidecar.process.pid),
        "--duration",
        str(max(1, int(args.seconds) - 1)),
        "--rate",
        "100",
        "--nonblocking",
        "--format",
        "raw",
        "--nolineno",
        "--output",
        args.profile,
    ]
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
    )
    return Phase(
        phases[0].target, phases[0].rpc, phases[0].rate, result, med(lambda p: p.sidecar_cpu)
    )


def print_comparison(phases: dict[tuple[str, str], list[Phase]], args: argparse.Namespace) -> None:
    print()
    print(
        f"At {args.rate:.0f} req/s, {args.seconds:.0f} s measured after {args.warmup:.0f} s of "
        f"warm-up, median of {args.rounds} interleaved round(s); latencies in ms"
    )
    head = ("", "req/s", "p50", "p95", "p99", "sidecar CPU", "loadgen CPU", "ok", "errors")
    print(
        f"{head[0]:28}{head[1]:>8}{head[2]:>9}{head[3]:>9}{head[4]:>9}{head[5]:>13}"
        f"{head[6]:>13}{head[7]:>7}{head[8]:>7}"
    )
    for rpc in RPCS:
        med = {t: median_phase(phases[(t, rpc)]) for t in ("direct", "sidecar")}
        for target, p in med.items():
            r = p.result
            sidecar_cpu = ms(p.sidecar_cpu) if target == "sidecar" else "       -"
            print(
                f"{rpc + ' ' + target:28}{r.rate:8.1f}{ms(r.p50):>9}{ms(r.p95):>9}"
                f"{ms(r.p99):>9}{sidecar_cpu:>13}{ms(r.cpu):>13}{r.ok:7d}{r.errors:7d}"
            )
        s, d = med["sidecar"].result, med["direct"].result
        print(
            f"{'  added by the sidecar':28}{'':8}{ms(s.p50 - d.p50):>9}{ms(s.p95 - d.p95):>9}"
            f"{ms(s.p99 - d.p99):>9}"
        )
        print(
            f"{'  ratio sidecar/direct':28}{s.rate / d.rate:8.2f}{s.p50 / d.p50:9.2f}"
            f"{s.p95 / d.p95:9.2f}{s.p99 / d.p99:9.2f}"
        )
    print("  sidecar CPU: the sidecar process (all threads, HSM workers included) per request;")
    print("  loadgen CPU: the load generator per request (direct: the whole protocol layer)")


def sustained(
    sidecar: Sidecar, target: str, args: argparse.Namespace
) -> tuple[float, Phase] | None:
    """The highest rate of GetEnrollment held (>= 97% achieved, no error, p99 <= max-p99)."""
    best: tuple[float, Phase] | None = None
    rate = args.ramp_start
    while rate <= args.ramp_limit:
        phase = run_phase(sidecar, target, "GetEnrollment", rate, args)
        r = phase.result
        held = r.rate >= 0.97 * rate and r.errors == 0 and r.p99 <= args.max_p99
        print(
            f"  {target:8}{rate:7.0f}/s target: {r.rate:7.1f}/s achieved, p99 {ms(r.p99)} ms, "
            f"sidecar CPU {ms(phase.sidecar_cpu)} ms/req  {'held' if held else 'NOT held'}"
        )
        if not held:
            break
        best = (rate, phase)
        rate = rate * args.ramp_factor
    return best


def write_config(
    work: Path, socket: Path, sim: Simulator, keys: tuple[str, Path, Path] | None, http2: bool
) -> Path:
    """The sidecar's configuration; ``keys`` (module, PIN file, SM4 key file) for scheme A."""
    s = sim.lines
    pseudonym_key = work / "pseudonym.key"
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
instance = "bench"
spool_dir = "{work / "audit-spool"}"
"""
    config = work / "sidecar.toml"
    config.write_text(f"""\
[server]
socket_path = "{socket}"
max_concurrent_rpcs = 4096

[institution]
code = "{DEFAULT_INSTITUTION_CODE}"
name = "压测机构"
division = "{DEFAULT_DIVISION}"

[platform]
url = "{s["url"].split("/fsi/")[0]}"
ca_file = "{s["ca_cert"]}"
client_cert_file = "{s["client_cert"]}"
client_key_file = "{s["client_key"]}"
timeout_seconds = 10
http2 = {"true" if http2 else "false"}

[platform.msgid]
slots = 2       # slot 0 the sidecar, slot 1 the direct load generator

[platform.resilience]
breaker_failure_threshold = 1000
max_in_flight = 1024
{security}
[cache]
ttl_seconds = 0   # off: every request reaches the platform

[consent]
pseudonym_key_file = "{pseudonym_key}"

[store]
sqlite_path = "{work / "sidecar.db"}"

[log]
level = "WARNING"
""")
    return config


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
    work: Path, config: Path, socket: Path, cprofile: str | None = None
) -> Iterator[Sidecar]:
    log = (work / "sidecar.log").open("w")
    profiled = ["-m", "cProfile", "-o", cprofile] if cprofile else []
    argv = [sys.executable, *profiled, "-m", "sidecar", "serve", "--config", str(config)]
    process = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=log, text=True)  # noqa: S603
    sidecar = Sidecar(process, socket, config)
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"sidecar did not start: {(work / 'sidecar.log').read_text()}")
            time.sleep(0.1)
        yield sidecar
    finally:
        sidecar.stop()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured duration of each load")
    ap.add_argument("--warmup", type=float, default=2.0, help="warm-up before each measurement")
    ap.add_argument("--rate", type=float, default=100.0, help="requests/s of the comparison")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved direct/sidecar rounds")
    ap.add_argument("--ramp-start", type=float, default=25.0)
    ap.add_argument("--ramp-factor", type=float, default=1.4)
    ap.add_argument("--ramp-limit", type=float, default=5000.0)
    ap.add_argument("--max-p99", type=float, default=0.25, help="seconds; for the ramp")
    ap.add_argument("--no-ramp", action="store_true", help="skip the highest sustained rate")
    ap.add_argument("--security", choices=("a", "plain"), default="a", help="message security")
    ap.add_argument("--http1", action="store_true", help="HTTP/1.1 to the platform, not HTTP/2")
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
    args = ap.parse_args()
    if args.command == "loadgen":
        asyncio.run(loadgen(args))
        return

    def terminated(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
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
        socket = work / "sidecar.sock"
        config = write_config(work, socket, sim, keys, http2=not args.http1)
        sidecar = stack.enter_context(started_sidecar(work, config, socket, args.cprofile))
        scheme = "scheme A, SoftHSM pool 2" if keys else "plain (mTLS only)"
        print(
            f"nproc={os.cpu_count()}  simulator pid {sim.process.pid}, sidecar pid "
            f"{sidecar.process.pid}: {scheme}, HTTP/{'1.1' if args.http1 else '2'}, cache: none, "
            f"audit trail: {'on' if keys else 'off'}"
        )

        phases: dict[tuple[str, str], list[Phase]] = {}
        for _ in range(args.rounds):
            for rpc in RPCS:
                for target in ("direct", "sidecar"):
                    phase = run_phase(sidecar, target, rpc, args.rate, args)
                    phases.setdefault((target, rpc), []).append(phase)
        print_comparison(phases, args)
        memory = sidecar.memory()
        print(f"  sidecar RSS after the comparison: {memory['VmRSS'] / 1024:.1f} MB")

        if not args.no_ramp:
            print()
            print(
                f"Highest sustained GetEnrollment rate (x{args.ramp_factor} steps; held: >= 97%"
                f" achieved, no error, p99 <= {args.max_p99 * 1000:.0f} ms)"
            )
            held = {target: sustained(sidecar, target, args) for target in ("sidecar", "direct")}
            rates = {
                t: (f"{h[0]:.0f}/s" if h else f"< {args.ramp_start:.0f}/s") for t, h in held.items()
            }
            print(f"  highest held: sidecar {rates['sidecar']}, direct {rates['direct']}")
        memory = sidecar.memory()
        print(
            f"Sidecar peak RSS (VmHWM): {memory['VmHWM'] / 1024:.1f} MB "
            f"(now {memory['VmRSS'] / 1024:.1f} MB)"
        )


if __name__ == "__main__":
    main()
