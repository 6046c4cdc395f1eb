"""A settlement survives the sidecar: killed (SIGKILL) between 2207 and its answer, restarted.

The sidecar runs as a subprocess with the real SoftHSM token and message security scheme A, so
the same setup also shows that a 2207 answer with a bad signature is never used: the settlement
is reversed instead.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar._proto.yibao.gateway.v1 import gateway_pb2_grpc as gateway_grpc
from sidecar.config import StoreConfig
from tests.conftest import write_secret
from tests.integration.conftest import TENANT_METADATA, Token
from tests.integration.consent_support import consent_to, subject_of
from tests.integration.settlement_support import (
    assert_at_most_one_charge_per_request,
    charges_by_settlement,
    recorded_msgids,
    settle_request,
)
from tests.integration.test_hsm_startup import hsm_section
from tests.integration.test_message_security import SM4_KEY, sidecar_public_key
from tests.integration.test_server import sidecar_process, wait_serving, write_config
from yibao_devkit.simulator.app import PlatformSimulator, Reply
from yibao_devkit.simulator.crypto import PrivateKey
from yibao_devkit.simulator.faults import Fault, FaultKind
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.security import SchemeAPlatform
from yibao_devkit.simulator.server import running_simulator


class HoldingSimulator(PlatformSimulator):
    """Performs 2207, then holds its answer while ``hold_2207`` is set, until ``release``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hold_2207 = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def respond(self, body: bytes) -> Reply:
        before = self.calls.count("2207")
        reply = await super().respond(body)
        if self.hold_2207 and self.calls.count("2207") > before:
            self.holding.set()
            await self.release.wait()
        return reply


def store_section(store: StoreConfig) -> str:
    lines = [f'backend = "{store.backend}"', f'sqlite_path = "{store.sqlite_path}"']
    if store.postgresql_dsn:
        lines.append(f'postgresql_dsn = "{store.postgresql_dsn}"')
    return "\n[store]\n" + "\n".join(lines) + "\n"


SETTLEMENT_SECTION = """
[settlement]
resolve_reserve_seconds = 1.0
late_arrival_seconds = 3.0
resolver_interval_seconds = 0.5
resolver_min_age_seconds = 0.0
"""


@pytest.mark.slow
async def test_killed_between_2207_and_its_answer_then_restarted_charges_nothing_twice(
    token: Token, short_dir: Path, tmp_path: Path, store_config: StoreConfig
) -> None:
    platform_key = PrivateKey.for_seed(7)
    security = SchemeAPlatform(
        bytes.fromhex(SM4_KEY), sidecar_public_key(token, tmp_path), platform_key
    )
    platform_pem = tmp_path / "platform.pem"
    platform_pem.write_text(platform_key.public_key.pem())
    app = HoldingSimulator(Population.generate(11, 20), security=security)
    employee = app.population.examples().employee
    psn_no = employee.psn_no or ""
    async with running_simulator(app) as simulator:
        config = write_config(tmp_path / "sidecar.toml", simulator, short_dir)
        head, rest = config.read_text().split("[store]\n", 1)
        config.write_text(
            head
            + store_section(store_config)
            + rest[rest.index("\n[") :]  # the sections after [store]
            + SETTLEMENT_SECTION
            + '\n[platform.security]\nscheme = "envelope-signature"\n'
            + f'platform_public_key_file = "{platform_pem}"\n'
            + f'sm4_key_file = "{write_secret(tmp_path / "sm4.key", SM4_KEY)}"\n'
            + hsm_section(token)
        )
        socket = f"unix:{short_dir / 'sidecar.sock'}"
        token_text = app.issue_ec_token(employee.certno)

        process = sidecar_process(config, token.env)
        try:
            async with grpc.aio.insecure_channel(socket) as channel:
                await wait_serving(channel, process)
                await consent_to(channel, [subject_of(employee)])
                stub = gateway_grpc.InsuranceGatewayStub(channel)

                # A forged 2207 answer is never used: the settlement it reports is reversed.
                app.faults.set("2207", Fault(FaultKind.BAD_SIGNATURE, times=1))
                forged = settle_request(employee, token_text, "forged-answer")
                answer = await stub.SettleWithEVoucher(forged, metadata=TENANT_METADATA, timeout=10)
                assert answer.settlement.state == gateway.SETTLEMENT_STATE_REVERSED
                assert charges_by_settlement(app, psn_no) == (1, 0)

                # 2207 performed, its answer held; the sidecar dies before it arrives.
                app.hold_2207 = True
                request = settle_request(employee, token_text, "killed-in-flight")
                call = asyncio.ensure_future(  # its lease would run for a minute
                    stub.SettleWithEVoucher(request, metadata=TENANT_METADATA, timeout=60)
                )
                await asyncio.wait_for(app.holding.wait(), 10)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                with pytest.raises(grpc.aio.AioRpcError) as lost:
                    await call
                assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        app.hold_2207 = False
        app.release.set()
        assert charges_by_settlement(app, psn_no) == (2, 1)  # the killed call's charge stands

        restarted = sidecar_process(config, token.env)
        try:
            async with grpc.aio.insecure_channel(socket) as channel:
                await wait_serving(channel, restarted)
                stub = gateway_grpc.InsuranceGatewayStub(channel)
                # The same replica (msgid slot) again: the dead worker's lease is void, and the
                # repeat (or the resolver at start-up) reverses by the msgid recorded before 2207.
                again = await stub.SettleWithEVoucher(request, metadata=TENANT_METADATA, timeout=20)
                assert again.settlement.state == gateway.SETTLEMENT_STATE_REVERSED
                assert again.settlement.request_id == "killed-in-flight"
        finally:
            restarted.send_signal(signal.SIGTERM)
            _, stderr = restarted.communicate(timeout=30)
        assert restarted.returncode == 0, stderr
        assert employee.certno not in stderr and token_text not in stderr
    assert app.calls.count("2207") == 2
    assert charges_by_settlement(app, psn_no) == (2, 0)
    assert_at_most_one_charge_per_request(app, await recorded_msgids(store_config))
