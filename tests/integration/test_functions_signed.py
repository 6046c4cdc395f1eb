"""The bad-signature column of the fault matrix: only meaningful with message security on, so the
sidecar runs as a process signing in the HSM (scheme A) and verifying every answer."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from tests.conftest import write_secret
from tests.integration.conftest import TENANT_METADATA, Token
from tests.integration.consent_support import consent_to
from tests.integration.functions_support import submission
from tests.integration.test_gateway import details, subject_of
from tests.integration.test_hsm_startup import hsm_section
from tests.integration.test_message_security import SM4_KEY, sidecar_public_key
from tests.integration.test_server import sidecar_process, wait_serving, write_config
from yibao_devkit.simulator.app import PlatformSimulator
from yibao_devkit.simulator.crypto import PrivateKey
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.security import SchemeAPlatform
from yibao_devkit.simulator.server import running_simulator


@pytest.mark.slow
async def test_answers_with_a_bad_signature_are_never_used(
    token: Token, short_dir: Path, tmp_path: Path
) -> None:
    platform_key = PrivateKey.for_seed(7)
    security = SchemeAPlatform(
        bytes.fromhex(SM4_KEY), sidecar_public_key(token, tmp_path), platform_key
    )
    (tmp_path / "platform.pem").write_text(platform_key.public_key.pem())
    sm4 = write_secret(tmp_path / "sm4.key", SM4_KEY)
    app = PlatformSimulator(Population.generate(11, 20), security=security)
    person = app.population.examples().employee
    async with running_simulator(app) as simulator:
        config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
        config.write_text(
            config.read_text()
            + '\n[platform.security]\nscheme = "envelope-signature"\n'
            + f'platform_public_key_file = "{tmp_path / "platform.pem"}"\n'
            + f'sm4_key_file = "{sm4}"\n'
            + hsm_section(token)
        )
        process = sidecar_process(config, token.env)
        try:
            async with grpc.aio.insecure_channel(f"unix:{short_dir / 'sidecar.sock'}") as channel:
                await wait_serving(channel, process)
                await consent_to(channel, [subject_of(person)])
                stub = gateway_grpc.InsuranceGatewayStub(channel)
                # A query: every answer forged, retried three times, never used.
                app.faults.set("5206", Fault(FaultKind.BAD_SIGNATURE))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetAccount(
                        gateway.GetAccountRequest(subject=subject_of(person)),
                        metadata=TENANT_METADATA,
                        timeout=20,
                    )
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert details(caught.value)[0].reason == "PLATFORM_UNAVAILABLE"
                assert app.calls.count("5206") == 3
                app.faults.clear()

                # A submission performed, its signed answer forged: found by 5304, not resent.
                app.faults.set("2501", Fault(FaultKind.BAD_SIGNATURE, times=1))
                made = await stub.SubmitOffsiteRegistration(
                    submission(person), metadata=TENANT_METADATA, timeout=20
                )
                assert made.registration.registration_id
                assert (app.calls.count("2501"), app.calls.count("5304")) == (1, 1)

                app.faults.set("2502", Fault(FaultKind.BAD_SIGNATURE, times=1))
                gone = await stub.CancelOffsiteRegistration(
                    gateway.CancelOffsiteRegistrationRequest(
                        request_id="c-1",
                        subject=subject_of(person),
                        registration_id=made.registration.registration_id,
                    ),
                    metadata=TENANT_METADATA,
                    timeout=20,
                )
                assert gone.registration.state == gateway.OFFSITE_REGISTRATION_STATE_CANCELLED
                assert app.calls.count("2502") == 1
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert person.certno not in stderr and person.psn_name not in stderr
