"""Message security end to end: the sidecar signs in the HSM, the simulator checks with its own
crypto, and the simulator's signed answers are verified before the sidecar uses them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from tests.conftest import write_secret
from tests.integration.conftest import TENANT_METADATA, Token
from tests.integration.consent_support import consent_to
from tests.integration.test_gateway import details, subject_of
from tests.integration.test_hsm_startup import hsm_section
from tests.integration.test_server import sidecar_process, wait_serving, write_config
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.crypto import PrivateKey, PublicKey
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.security import SchemeAPlatform, SchemeBPlatform
from yibao_devkit.simulator.server import running_simulator

SM4_KEY = "0123456789abcdeffedcba9876543210"
APP_ID = "APPID0000000000000001"
APP_SECRET = "demo-app-secret-0001"


def sidecar_public_key(token: Token, directory: Path) -> PublicKey:
    out = directory / "sidecar-sign.pem"
    result = subprocess.run(
        [sys.executable, "-m", "hsm.cli", "export-public", "--out", str(out),
         "--module", str(token.module), "--token-label", token.label,
         "--user-pin-file", str(token.user_pin_file)],
        env=token.env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return PublicKey.from_pem(out.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["envelope-signature", "mobile-payment"])
async def test_signed_and_encrypted_round_trip_and_a_forged_answer_is_refused(
    token: Token, short_dir: Path, tmp_path: Path, scheme: str
) -> None:
    client_key = sidecar_public_key(token, tmp_path)
    platform_key = PrivateKey.for_seed(7)
    if scheme == "envelope-signature":
        security: object = SchemeAPlatform(bytes.fromhex(SM4_KEY), client_key, platform_key)
        keys = f'sm4_key_file = "{write_secret(tmp_path / "sm4.key", SM4_KEY)}"\n'
    else:
        security = SchemeBPlatform(APP_ID, APP_SECRET, client_key, platform_key)
        secret = write_secret(tmp_path / "app.secret", APP_SECRET)
        keys = f'app_id = "{APP_ID}"\napp_secret_file = "{secret}"\n'
    platform_pem = tmp_path / "platform.pem"
    platform_pem.write_text(platform_key.public_key.pem())
    app = PlatformSimulator(Population.generate(11, 20), security=security)  # type: ignore[arg-type]
    person = app.population.examples().employee
    request = gateway_pb2.GetEnrollmentRequest(subject=subject_of(person))
    async with running_simulator(app) as simulator:
        config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
        config.write_text(
            config.read_text()
            + f'\n[platform.security]\nscheme = "{scheme}"\n'
            + f'platform_public_key_file = "{platform_pem}"\n{keys}'
            + hsm_section(token)
        )
        process = sidecar_process(config, token.env)
        try:
            async with grpc.aio.insecure_channel(f"unix:{short_dir / 'sidecar.sock'}") as channel:
                await wait_serving(channel, process)
                stub = gateway_grpc.InsuranceGatewayStub(channel)
                await consent_to(channel, [request.subject])
                answer = await stub.GetEnrollment(request, metadata=TENANT_METADATA, timeout=10)
                assert answer.person.name == person.psn_name
                assert app.calls.count("1101") == 1  # the simulator verified our HSM signature

                # Every answer forged: the query is retried (3 attempts), none is ever used.
                app.faults.set("1101", Fault(FaultKind.BAD_SIGNATURE, times=10))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetEnrollment(request, metadata=TENANT_METADATA, timeout=10)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "untrusted answer" in (caught.value.details() or "")
                assert details(caught.value)[0].reason == "PLATFORM_UNAVAILABLE"
                assert app.calls.count("1101") == 1 + 3
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert person.certno not in stderr


async def test_a_scheme_without_its_keys_is_refused_at_start_up(
    token: Token, short_dir: Path, tmp_path: Path
) -> None:
    async with running_simulator(seed=3, population_size=5) as simulator:
        config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
        config.write_text(
            config.read_text()
            + '\n[platform.security]\nscheme = "envelope-signature"\n'
            + hsm_section(token)
        )
        process = sidecar_process(config, token.env)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2
    assert stderr.strip() == (
        "config: platform.security (from "
        f"{config}): Value error, scheme envelope-signature needs platform_public_key_file, "
        "sm4_key_file"
    )
