"""``yibao-sidecar demo``: the whole path, end to end, with real processes.

It makes throwaway development certificates, starts the platform simulator (HTTPS with client
certificates) and the sidecar (gRPC on a Unix socket) as separate processes, plays a scripted IM
service against the sidecar, prints a readable transcript, stops both with SIGTERM and exits 0
only if every step answered as expected.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from sidecar._proto.yibao.gateway.v1 import common_pb2 as common
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.domain.beijing import beijing_today
from sidecar.domain.validation import check_resident_id
from sidecar.observability.masking import mask_id, mask_name
from yibao_devkit import demo_consent, demo_settlement, devcerts
from yibao_devkit.simulator.app import DEFAULT_DIVISION, DEFAULT_INSTITUTION_CODE
from yibao_devkit.simulator.population import Person, Population

SEED = 42
METADATA = (("x-yibao-tenant", "acme-corp"), ("x-yibao-operator", "im-bot-01"))
STARTUP_TIMEOUT = 30.0


class DemoFailed(Exception):
    """A step of the demo did not answer as expected."""


@dataclass
class Processes:
    simulator: subprocess.Popen[str]
    sidecar: subprocess.Popen[str] | None = None
    ec_tokens: dict[str, str] = field(default_factory=dict)  # resident ID -> e-voucher token


def main(argv: Sequence[str] | None = None) -> int:
    """``yibao-sidecar demo [--workdir DIR] [--pkcs11-module LIB]``."""
    parser = argparse.ArgumentParser(
        prog="yibao-sidecar demo", description="run simulator + sidecar + a scripted IM client"
    )
    parser.add_argument("--workdir", type=Path, help="keep the demo's files here (default: temp)")
    parser.add_argument(
        "--pkcs11-module",
        type=Path,
        default=os.environ.get("YIBAO_PKCS11_MODULE") or None,
        help="the patched SoftHSM library (default: $YIBAO_PKCS11_MODULE)",
    )
    args = parser.parse_args(argv)
    try:
        return run(args.workdir, args.pkcs11_module)
    except KeyboardInterrupt:
        return 1


def run(workdir: Path | None, pkcs11_module: Path | None) -> int:
    """Run the demo in ``workdir`` (kept) or in a temporary directory (removed)."""
    if pkcs11_module is None or not pkcs11_module.is_file():
        print(
            "yibao-sidecar demo: no PKCS#11 module: run `make demo`, or pass --pkcs11-module "
            "(or set YIBAO_PKCS11_MODULE) to the patched SoftHSM built by hsm/softhsm/build.sh",
            file=sys.stderr,
        )
        return 2
    try:
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            return _run_in(workdir.resolve(), pkcs11_module.resolve())
        with tempfile.TemporaryDirectory(prefix="yibao-demo-") as scratch:
            return _run_in(Path(scratch), pkcs11_module.resolve())
    except DemoFailed as failure:  # one line, no traceback; the transcript shows the steps before
        sys.stdout.flush()
        print(f"demo: {failure}", file=sys.stderr)
        return 1


def _run_in(workdir: Path, module: Path) -> int:
    say = Transcript(sys.stdout)
    say.title("yibao-sidecar demo: IM service -> sidecar (gRPC, Unix socket) -> platform (mTLS)")
    pki = devcerts.generate(workdir / "pki")
    say.step(f"development PKI in {pki.ca_cert.parent} (CA, simulator server, sidecar client)")
    hsm = _key_ceremony(workdir / "hsm", module, say)
    with _started(workdir, pki, hsm, say) as processes:
        try:
            socket_path = workdir / "sidecar.sock"
            calls = LastCall()
            try:
                asyncio.run(_script(socket_path, say, processes.ec_tokens, calls))
            except grpc.aio.AioRpcError as error:
                raise DemoFailed(failed_call(calls.method, error)) from None
            _show_hsm_login(workdir / "sidecar.log", say)
        finally:
            _stop(processes, say)
    _verify_audit_trail(workdir, say)
    say.title("demo finished: every step answered as expected")
    return 0


@dataclass(frozen=True)
class DemoHsm:
    module: Path
    conf: Path
    user_pin_file: Path
    public_key_file: Path
    sm4_key_file: Path


def _key_ceremony(directory: Path, module: Path, say: Transcript) -> DemoHsm:
    """The security team's part: a token with two PINs held apart, a signing key and a KEK."""
    say.title("HSM key ceremony (yibao-hsm on the patched SoftHSM)")
    (directory / "tokens").mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")  # fmt: skip
    os.environ["SOFTHSM2_CONF"] = str(conf)  # inherited by the sidecar process too
    so_pin = _secret_file(directory / "so.pin")  # the security officer's
    user_pin = _secret_file(directory / "user.pin")  # the operators' (the sidecar's)
    common = ["--module", str(module), "--token-label", "yibao-demo", "--profile", "softhsm-sm",
              "--user-pin-file", str(user_pin)]  # fmt: skip
    _hsm(say, "init-token", *common, "--so-pin-file", str(so_pin))
    say.step("token 'yibao-demo' initialised; SO PIN and user PIN in separate 0600 files")
    _hsm(say, "keygen", "--purpose", "sign", *common)
    _hsm(say, "keygen", "--purpose", "kek", *common)
    _hsm(say, "keygen", "--purpose", "audit", *common)  # the audit trail's checkpoints
    _hsm(say, "keygen", "--purpose", "pseudonym", *common)  # pseudonyms, keyed digests
    for line in _hsm(say, "list", *common).splitlines():
        say.step(f"    {line}")
    csr = directory / "sidecar.csr.pem"
    _hsm(say, "csr", "--subject", "CN=yibao-sidecar-demo,O=Demo,C=CN", "--out", str(csr), *common)
    verified = subprocess.run(  # noqa: S603 - fixed argv
        [shutil.which("openssl") or "openssl", "req", "-verify", "-noout", "-in", str(csr),
         "-vfyopt", "distid:1234567812345678"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if "verify OK" not in verified.stdout + verified.stderr:
        raise DemoFailed("OpenSSL did not verify the token's SM2 certificate request")
    say.step("PKCS#10 request signed SM2-with-SM3 inside the token; OpenSSL: verify OK")
    public_key = directory / "sidecar-sign.pem"
    _hsm(say, "export-public", "--out", str(public_key), *common)
    # The scheme-A SM4 key, agreed with the platform out of band.
    sm4_key = _secret_file(directory / "scheme-a.sm4key", secrets.token_hex(16))
    return DemoHsm(module, conf, user_pin, public_key, sm4_key)


def _secret_file(path: Path, value: str | None = None) -> Path:
    """A new 0600 file holding ``value`` (default: a random PIN)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write((value or secrets.token_hex(8)) + "\n")
    return path


def _hsm(say: Transcript, *args: str) -> str:
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "hsm.cli", *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DemoFailed(f"yibao-hsm {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


@contextlib.contextmanager
def _started(
    workdir: Path, pki: devcerts.DevPki, hsm: DemoHsm, say: Transcript
) -> Iterator[Processes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    simulator_log = (workdir / "simulator.log").open("w")
    simulator = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "sidecar", "simulate", "--listen", "127.0.0.1:0",
         "--seed", str(SEED), "--pki-dir", str(pki.ca_cert.parent),
         "--security", "a", "--client-public-key", str(hsm.public_key_file),
         "--sm4-key-file", str(hsm.sm4_key_file),
         "--issue-ec-token", Population.generate(SEED).examples().employee.certno],
        stdout=subprocess.PIPE, stderr=simulator_log, text=True, env=env,
    )  # fmt: skip
    processes = Processes(simulator)
    try:
        announced = _read_announcement(simulator)
        processes.ec_tokens.update(
            {k.removeprefix("ec_token_"): v for k, v in announced.items() if k.startswith("ec_")}
        )
        url = announced["url"]
        say.step(f"platform simulator listening on {url} (client certificate required)")
        say.step("message security: scheme A, SM4-encrypted input/output, SM2 signatures both ways")
        config = workdir / "sidecar.toml"
        platform_key = Path(announced["platform_public_key_pem"])
        config.write_text(_sidecar_config(workdir, url, pki, hsm, platform_key))
        sidecar_log = (workdir / "sidecar.log").open("w")
        processes.sidecar = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "sidecar", "serve", "--config", str(config)],
            stdout=sidecar_log, stderr=sidecar_log, text=True, env=env,
        )  # fmt: skip
        say.step(f"sidecar started with {config.name}; JSON logs in {workdir / 'sidecar.log'}")
        yield processes
    except BaseException:
        _stop(processes, say)
        raise


def _read_announcement(simulator: subprocess.Popen[str]) -> dict[str, str]:
    """The ``name: value`` lines the simulator prints at start-up, up to its platform key."""
    assert simulator.stdout is not None
    announced: dict[str, str] = {}
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        line = simulator.stdout.readline()
        if not line:
            raise DemoFailed(f"the simulator exited early (code {simulator.wait()})")
        name, _, value = line.strip().partition(": ")
        announced[name] = value
        if name == "platform_public_key_pem":
            match = re.search(r"https://[0-9.:\[\]a-z]+", announced.get("url", ""))
            if match is None:
                raise DemoFailed("the simulator did not report its address")
            announced["url"] = match.group(0)
            return announced
    raise DemoFailed("the simulator did not report its address and key in time")


def _sidecar_config(
    workdir: Path, url: str, pki: devcerts.DevPki, hsm: DemoHsm, platform_key: Path
) -> str:
    return f"""\
# Written by `yibao-sidecar demo`.
[server]
socket_path = "{workdir / "sidecar.sock"}"
grace_period_seconds = 5

[store]
sqlite_path = "{workdir / "store" / "sidecar.db"}"

[institution]
code = "{DEFAULT_INSTITUTION_CODE}"
name = "演示企业医保服务"
division = "{DEFAULT_DIVISION}"

[platform]
url = "{url}"
ca_file = "{pki.ca_cert}"
client_cert_file = "{pki.client_cert}"
client_key_file = "{pki.client_key}"
timeout_seconds = 10

[platform.security]
scheme = "envelope-signature"
platform_public_key_file = "{platform_key}"
sm4_key_file = "{hsm.sm4_key_file}"

[hsm]
module = "{hsm.module}"
token_label = "yibao-demo"
user_pin_file = "{hsm.user_pin_file}"

[audit]
instance = "demo"
spool_dir = "{workdir / "audit-spool"}"
"""


def _verify_audit_trail(workdir: Path, say: Transcript) -> None:
    """The auditor's part: every chain checked offline with the exported ``audit`` public key."""
    say.title("audit trail: yibao-audit verify with the exported public key only")
    hsm_dir = workdir / "hsm"
    common = ["--module", str(_demo_module(workdir)), "--token-label", "yibao-demo",
              "--profile", "softhsm-sm", "--user-pin-file", str(hsm_dir / "user.pin")]  # fmt: skip
    label = next(
        line.split()[0] for line in _hsm(say, "list", *common).splitlines()
        if line.startswith("audit/")
    )  # fmt: skip
    public_key = hsm_dir / "audit.pem"
    _hsm(say, "export-public", "--label", label, "--out", str(public_key), *common)
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "sidecar.audit.cli", "verify", "--config",
         str(workdir / "sidecar.toml"), "--public-key", str(public_key)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise DemoFailed(f"yibao-audit verify: {(result.stdout + result.stderr).strip()}")
    for line in result.stdout.splitlines():
        say.step(line)


def _demo_module(workdir: Path) -> Path:
    for line in (workdir / "sidecar.toml").read_text().splitlines():
        if line.startswith("module = "):
            return Path(line.split('"')[1])
    raise DemoFailed("the demo configuration names no PKCS#11 module")


def _stop(processes: Processes, say: Transcript) -> None:
    for name, process in (("sidecar", processes.sidecar), ("simulator", processes.simulator)):
        if process is None or process.poll() is not None:
            continue
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise DemoFailed(f"the {name} did not stop within 15 s of SIGTERM") from None
        say.step(f"{name} stopped on SIGTERM (exit code {code})")
        if code != 0:
            raise DemoFailed(f"the {name} exited with code {code}")


async def _script(
    socket_path: Path,
    say: Transcript,
    ec_tokens: dict[str, str] | None = None,
    calls: LastCall | None = None,
) -> None:
    examples = Population.generate(SEED).examples()
    interceptors: list[Any] | None = [calls] if calls is not None else None
    async with grpc.aio.insecure_channel(
        f"unix:{socket_path}", interceptors=interceptors
    ) as channel:
        await _wait_serving(channel, say)
        stub = gateway_grpc.InsuranceGatewayStub(channel)

        say.title("个人信息处理同意 GrantConsent (the IM service's consent dialog)")
        queries = (common.PURPOSE_ENROLLMENT_QUERY, common.PURPOSE_ELIGIBILITY_CHECK,
                   common.PURPOSE_ACCOUNT_QUERY, common.PURPOSE_OFFSITE_REGISTRATION)  # fmt: skip
        people = (("employee", examples.employee), ("resident", examples.resident),
                  ("suspended", examples.suspended), ("unknown", examples.unknown))  # fmt: skip
        for label, person in people:
            subject = _enrollment_request(person).subject
            await demo_consent.grant(channel, METADATA, label, subject, queries, say)

        say.title("参保信息查询 GetEnrollment")
        for label, person in (("employee", examples.employee), ("resident", examples.resident),
                              ("suspended", examples.suspended)):  # fmt: skip
            answer = await stub.GetEnrollment(_enrollment_request(person), metadata=METADATA)
            say.enrollment(label, person, answer)

        say.title("待遇资格查询 CheckEligibility (general outpatient, today)")
        for label, person in (("employee", examples.employee), ("suspended", examples.suspended)):
            check = gateway.CheckEligibilityRequest(
                subject=_enrollment_request(person).subject,
                insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
                medical_type_code="11",
                begin_date=beijing_today().isoformat(),  # the contract's dates are Beijing's
            )
            verdict_of = await stub.CheckEligibility(check, metadata=METADATA)
            verdict = (
                "eligible" if verdict_of.eligible else f"not eligible: {verdict_of.refusal_reason}"
            )
            say.step(f"{label} {mask_id(person.certno)}: {verdict}")

        await _account_and_registrations(stub, examples, say)

        say.title("电子凭证结算 SettleWithEVoucher, GetSettlement, CancelSettlement (employee)")
        employee = examples.employee
        token = (ec_tokens or {}).get(employee.certno)
        if token is None:
            raise DemoFailed("the simulator printed no e-voucher token for the employee")
        await demo_consent.grant(
            channel,
            METADATA,
            "employee",
            _enrollment_request(employee).subject,
            (common.PURPOSE_SETTLEMENT,),
            say,
        )
        say.step(f"employee {mask_id(employee.certno)} shows the e-voucher QR code (token scanned)")
        try:
            await demo_settlement.act(stub, employee, token, say.step)
        except demo_settlement.ActFailed as failure:
            raise DemoFailed(str(failure)) from None

        say.title("refusals the IM service must handle")
        unknown = _enrollment_request(examples.unknown)
        await _expect(say, "unknown person", grpc.StatusCode.NOT_FOUND,
                      lambda: stub.GetEnrollment(unknown, metadata=METADATA))  # fmt: skip
        broken = _enrollment_request(examples.employee)
        broken.subject.certificate_number = _wrong_check_digit(
            person_number=examples.employee.certno
        )
        broken.subject.name = ""
        await _expect(say, "bad check digit and empty name", grpc.StatusCode.INVALID_ARGUMENT,
                      lambda: stub.GetEnrollment(broken, metadata=METADATA))  # fmt: skip
        anonymous = _enrollment_request(examples.employee)
        await _expect(say, "no caller metadata", grpc.StatusCode.UNAUTHENTICATED,
                      lambda: stub.GetEnrollment(anonymous))  # fmt: skip
        revoked = _enrollment_request(examples.resident)
        await demo_consent.revoke(
            channel, METADATA, revoked.subject, common.PURPOSE_ENROLLMENT_QUERY, say
        )
        await _expect(say, "consent revoked", grpc.StatusCode.FAILED_PRECONDITION,
                      lambda: stub.GetEnrollment(revoked, metadata=METADATA))  # fmt: skip


async def _account_and_registrations(
    stub: gateway_grpc.InsuranceGatewayAsyncStub, examples: Any, say: Transcript
) -> None:
    """Acts for GetAccount and the registration family (异地就医备案)."""
    say.title("医保账户查询 GetAccount (balances, this year's figures, statement newest first)")
    for label, person in (("employee", examples.employee), ("resident", examples.resident)):
        account = await stub.GetAccount(
            gateway.GetAccountRequest(subject=_enrollment_request(person).subject, page_size=5),
            metadata=METADATA,
        )
        balances = ", ".join(
            f"{b.insurance_type_code} {yuan(b.balance_fen)}" for b in account.balances
        )
        say.step(f"{label} {mask_id(person.certno)}: balance {balances or 'none'}")
        for figure in account.cumulative_figures:
            say.step(
                f"    {figure.year} {figure.insurance_type_code} {figure.category_code} "
                f"{figure.category_name}: {yuan(figure.amount_fen)}"
            )
        entries = len(account.statement_entries)
        more = ", more pages" if account.next_page_token else ""
        say.step(f"    statement: {entries} entries on the first page{more}")

    say.title("异地就医备案 SubmitOffsiteRegistration / ListOffsiteRegistrations / Cancel")
    person = examples.employee
    subject = _enrollment_request(person).subject
    today = beijing_today()  # "start_date must not be in the past" is judged in Beijing
    request = gateway.SubmitOffsiteRegistrationRequest(
        request_id=f"demo-{secrets.token_hex(8)}",
        subject=subject,
        insurance_type=common.INSURANCE_TYPE_EMPLOYEE_BASIC,
        target_division_code="440305",
        start_date=today.isoformat(),
        end_date=(today + dt.timedelta(days=180)).isoformat(),
        reason=gateway.OFFSITE_REASON_RESIDENT_WORKING_ELSEWHERE,
        contact_phone="13800000000",
        address="深圳市南山区科技园1号",
    )
    made = (await stub.SubmitOffsiteRegistration(request, metadata=METADATA)).registration
    state = gateway.OffsiteRegistrationState.Name(made.state).removeprefix(
        "OFFSITE_REGISTRATION_STATE_"
    )
    say.step(
        f"employee {mask_id(person.certno)} registers for 440305 (深圳南山) "
        f"{made.start_date} to {made.end_date}: {made.registration_id} {state}"
    )
    again = (await stub.SubmitOffsiteRegistration(request, metadata=METADATA)).registration
    if again.registration_id != made.registration_id:
        raise DemoFailed("a repeated request_id registered twice")
    say.step(f"    same request_id again: the same {again.registration_id}, not submitted twice")
    listed = await stub.ListOffsiteRegistrations(
        gateway.ListOffsiteRegistrationsRequest(subject=subject), metadata=METADATA
    )
    for item in listed.registrations:
        say.step(f"    listed: {item.registration_id} to {item.target_division_code}, "
                 f"{gateway.OffsiteRegistrationState.Name(item.state)}")  # fmt: skip
    cancelled = await stub.CancelOffsiteRegistration(
        gateway.CancelOffsiteRegistrationRequest(
            request_id=f"demo-{secrets.token_hex(8)}",
            subject=subject,
            registration_id=made.registration_id,
            reason="派驻结束",
        ),
        metadata=METADATA,
    )
    say.step(
        f"    cancelled: {cancelled.registration.registration_id} "
        f"{gateway.OffsiteRegistrationState.Name(cancelled.registration.state)}"
    )
    resident = gateway.SubmitOffsiteRegistrationRequest()
    resident.CopyFrom(request)
    resident.request_id = f"demo-{secrets.token_hex(8)}"
    resident.subject.CopyFrom(_enrollment_request(examples.resident).subject)
    await _expect(say, "resident registering under employee insurance",
                  grpc.StatusCode.FAILED_PRECONDITION,
                  lambda: stub.SubmitOffsiteRegistration(resident, metadata=METADATA))  # fmt: skip
    backwards = gateway.SubmitOffsiteRegistrationRequest()
    backwards.CopyFrom(request)
    backwards.start_date = (today - dt.timedelta(days=30)).isoformat()
    backwards.end_date = (today - dt.timedelta(days=60)).isoformat()
    backwards.contact_phone = ""
    await _expect(say, "registration with dates backwards and no phone",
                  grpc.StatusCode.INVALID_ARGUMENT,
                  lambda: stub.SubmitOffsiteRegistration(backwards, metadata=METADATA))  # fmt: skip


if TYPE_CHECKING:  # generic in the type stubs only
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.UnaryUnaryClientInterceptor


class LastCall(_Interceptor):
    """Remembers the method of the demo's latest call, to name it if the call fails."""

    def __init__(self) -> None:
        self.method = "(no call yet)"

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        text = method.decode() if isinstance(method, bytes) else str(method)
        self.method = text.rsplit("/", 1)[-1]
        return await continuation(client_call_details, request)


def failed_call(method: str, error: grpc.aio.AioRpcError) -> str:
    """``<RPC> failed: <STATUS> <reason> (<what is wrong>)``: the one line a failed step ends in."""
    reason, problem = "", error.details() or ""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            problem = "; ".join(f"{v.field} {v.description}" for v in bad.field_violations)
    words = " ".join(part for part in (error.code().name, reason) if part)
    problem = " ".join(problem.split())  # one line, whatever the message holds
    return f"{method} failed: {words}" + (f" ({problem})" if problem else "")


def yuan(fen: int) -> str:
    """Exact fen as yuan for the transcript: ``-12.05``, never through a float."""
    sign = "-" if fen < 0 else ""
    return f"{sign}¥{abs(fen) // 100}.{abs(fen) % 100:02d}"


def _show_hsm_login(log_file: Path, say: Transcript) -> None:
    for line in log_file.read_text().splitlines():
        if '"event": "hsm.ready"' in line:
            say.step("sidecar logged in to the HSM once at start-up; its signing key stays there")
            return
    raise DemoFailed("the sidecar did not report its HSM login")


async def _wait_serving(channel: grpc.aio.Channel, say: Transcript) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(grpc.aio.AioRpcError):
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                say.step("sidecar health: SERVING (grpc.health.v1)")
                return
        await asyncio.sleep(0.2)
    raise DemoFailed("the sidecar did not become healthy in time")


def _enrollment_request(person: Person) -> gateway.GetEnrollmentRequest:
    return gateway.GetEnrollmentRequest(
        subject=common.DataSubject(
            certificate_type=common.CERTIFICATE_TYPE_RESIDENT_ID_CARD,
            certificate_number=person.certno,
            name=person.psn_name,
        )
    )


def _wrong_check_digit(person_number: str) -> str:
    for other in "0123456789X":
        candidate = person_number[:17] + other
        if candidate != person_number and check_resident_id(candidate) is not None:
            return candidate
    raise AssertionError("unreachable")


async def _expect(
    say: Transcript, label: str, code: grpc.StatusCode, call: Callable[[], Awaitable[Any]]
) -> None:
    try:
        await call()
    except grpc.aio.AioRpcError as error:
        if error.code() != code:
            raise DemoFailed(f"{label}: expected {code.name}, got {error.code().name}") from None
        say.refusal(label, error)
        return
    raise DemoFailed(f"{label}: expected {code.name}, but the call succeeded")


class Transcript:
    """Prints the demo's story for a person to read; identity numbers are masked."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def title(self, text: str) -> None:
        print(f"\n== {text}", file=self._out, flush=True)

    def step(self, text: str) -> None:
        print(f"   {text}", file=self._out, flush=True)

    def enrollment(self, label: str, person: Person, answer: gateway.GetEnrollmentResponse) -> None:
        p = answer.person
        self.step(f"{label}: {mask_name(p.name)} ({mask_id(p.certificate_number)}), age {p.age}")
        if not answer.enrollments:
            self.step("    no enrollments")
        for e in answer.enrollments:
            type_name = common.InsuranceType.Name(e.insurance_type).removeprefix("INSURANCE_TYPE_")
            status = common.EnrollmentStatus.Name(e.status).removeprefix("ENROLLMENT_STATUS_")
            since = f"since {e.enrollment_date}" + (
                f", suspended {e.suspension_date}" if e.suspension_date else ""
            )
            employer = f", employer {e.employer_name}" if e.employer_name else ""
            area = e.insured_area_division_code
            self.step(
                f"    {e.insurance_type_code} {type_name}: {status} {since}, area {area}{employer}"
            )

    def refusal(self, label: str, error: grpc.aio.AioRpcError) -> None:
        self.step(f"{label}: {error.code().name} - {error.details()}")
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                extra = "".join(f", {k}={v}" for k, v in sorted(info.metadata.items()))
                self.step(f"    ErrorInfo reason={info.reason}{extra}")
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                for violation in bad.field_violations:
                    self.step(f"    BadRequest {violation.field}: {violation.description}")
