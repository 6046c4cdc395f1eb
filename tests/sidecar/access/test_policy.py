"""The access policy: parsing with one-line errors, identity matching, and reloading."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sidecar.access.peer import CertificatePeer, UnixPeer
from sidecar.access.policy import Policy, PolicyError, PolicyFile, load, parse
from sidecar.access.ratelimit import Limit, RateLimiter, parse_rate

RPCS = frozenset(
    {
        "InsuranceGateway/GetEnrollment",
        "InsuranceGateway/CheckEligibility",
        "ConsentService/ListConsents",
    }
)


def caller(name: str = "im", **fields: object) -> dict[str, object]:
    return {"name": name, "tenants": ["acme"], "rpcs": ["*"], **fields}


def policy(*callers: dict[str, object]) -> Policy:
    return parse({"caller": list(callers)}, RPCS)


def test_unix_peers_match_by_uid_first_then_gid() -> None:
    p = policy(caller("by-uid", unix_uids=[1000]), caller("by-gid", unix_gids=[2000]))
    assert p.caller_for(UnixPeer(uid=1000, gid=2000, pid=1)).name == "by-uid"  # type: ignore[union-attr]
    assert p.caller_for(UnixPeer(uid=1001, gid=2000, pid=1)).name == "by-gid"  # type: ignore[union-attr]
    assert p.caller_for(UnixPeer(uid=1001, gid=2001, pid=1)) is None


def test_certificate_peers_match_by_uri_then_dns_and_ambiguity_is_nobody() -> None:
    p = policy(
        caller("a", tls_uris=["spiffe://corp/ns/im/sa/a"]),
        caller("b", tls_uris=["spiffe://corp/ns/im/sa/b"], tls_dns_names=["a.corp"]),
    )

    def peer(uris: tuple[str, ...] = (), dns: tuple[str, ...] = ()) -> CertificatePeer:
        return CertificatePeer(frozenset(uris), frozenset(dns))

    assert p.caller_for(peer(("spiffe://corp/ns/im/sa/a",), ("a.corp",))).name == "a"  # type: ignore[union-attr]
    assert p.caller_for(peer(dns=("a.corp",))).name == "b"  # type: ignore[union-attr]
    assert p.caller_for(peer(("spiffe://corp/ns/im/sa/a", "spiffe://corp/ns/im/sa/b"))) is None
    assert p.caller_for(peer(("spiffe://corp/ns/im/sa/c",))) is None
    assert p.caller_for(peer()) is None


@pytest.mark.parametrize(
    ("patterns", "allowed"),
    [
        (["*"], {"GetEnrollment", "CheckEligibility", "ListConsents"}),
        (["InsuranceGateway/*"], {"GetEnrollment", "CheckEligibility"}),
        (["InsuranceGateway/GetEnrollment", "ConsentService/*"], {"GetEnrollment", "ListConsents"}),
    ],
)
def test_rpc_patterns(patterns: list[str], allowed: set[str]) -> None:
    rule = policy(caller(rpcs=patterns, unix_uids=[1])).rules["im"]
    every = {
        ("yibao.gateway.v1.InsuranceGateway", "GetEnrollment"),
        ("yibao.gateway.v1.InsuranceGateway", "CheckEligibility"),
        ("yibao.gateway.v1.ConsentService", "ListConsents"),
    }
    assert {m for s, m in every if rule.allows_rpc(s, m)} == allowed


def test_tenants_listed_or_any() -> None:
    p = policy(caller("a", tenants=["acme"]), caller("b", tenants=["*"]))
    assert p.rules["a"].allows_tenant("acme") and not p.rules["a"].allows_tenant("globex")
    assert p.rules["b"].allows_tenant("globex")


@pytest.mark.parametrize(
    ("callers", "message"),
    [
        ([caller(unexpected=1)], "caller[0].unexpected: unknown key"),
        ([caller(rpcs=["InsuranceGateway/GetEnrolment"])], "caller[0].rpcs: Insurance"),
        ([caller(rpcs=["Nothing/*"])], "caller[0].rpcs: Nothing/* names no RPC"),
        ([caller(tenants=[])], "caller[0].tenants: Tuple should have at least 1 item"),
        ([caller(tenant_rate="5/fortnight")], "caller[0].tenant_rate: Value error, no granul"),
        ([caller(operator_rate="0/second")], "caller[0].operator_rate: Value error, a rate"),
        ([caller(unix_uids=[-1])], "caller[0].unix_uids: Value error, must be between"),
        ([caller(name="has space")], "caller[0].name: String should match pattern"),
        ([caller("a"), caller("a")], "caller[1].name: a is used twice"),
        (
            [caller("a", unix_uids=[7]), caller("b", unix_uids=[7])],
            "caller[1].unix_uids: 7 already belongs to caller a",
        ),
        (
            [caller("a", tls_uris=["spiffe://x"]), caller("b", tls_uris=["spiffe://x"])],
            "caller[1].tls_uris: spiffe://x already belongs to caller a",
        ),
    ],
)
def test_a_bad_policy_is_one_line_naming_the_key(
    callers: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^caller\[") as caught:
        parse({"caller": callers}, RPCS)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    with pytest.raises(PolicyError, match=r"^access policy .*policy.toml: cannot read: No such"):
        load(path, RPCS)
    path.write_text("[[caller]\n")
    with pytest.raises(PolicyError, match=r"^access policy .*policy.toml: not valid TOML"):
        load(path, RPCS)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, uid: int, extra: str = "") -> None:
    staged = path.with_suffix(".new")
    staged.write_text(
        f'[[caller]]\nname = "im"\nunix_uids = [{uid}]\ntenants = ["*"]\nrpcs = ["*"]\n{extra}'
    )
    os.replace(staged, path)


def uid_allowed(source: PolicyFile, uid: int) -> bool:
    return source.current().caller_for(UnixPeer(uid=uid, gid=uid, pid=1)) is not None


def test_the_file_is_reread_when_it_changes_and_no_sooner_than_the_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path, clock = tmp_path / "policy.toml", Clock()
    write(path, 1000)
    source = PolicyFile(path, RPCS, interval=5.0, clock=clock)
    write(path, 2000)
    clock.now = 4.9
    assert uid_allowed(source, 1000)  # not checked yet
    clock.now = 5.0
    assert uid_allowed(source, 2000) and not uid_allowed(source, 1000)
    assert [r.getMessage() for r in caplog.records] == ["access.policy_reloaded"]


def test_a_bad_or_missing_new_version_keeps_the_policy_and_logs_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    path, clock = tmp_path / "policy.toml", Clock()
    write(path, 1000)
    source = PolicyFile(path, RPCS, interval=0.0, clock=clock)
    write(path, 2000, extra="tenant_rate = 'lots'\n")
    for _ in range(3):
        assert uid_allowed(source, 1000)
    path.unlink()
    for _ in range(3):
        assert uid_allowed(source, 1000)
    write(path, 3000)
    assert uid_allowed(source, 3000)
    events = [r.getMessage() for r in caplog.records]
    assert events == ["access.policy_rejected", "access.policy_rejected", "access.policy_reloaded"]
    errors = [getattr(r, "error", "") for r in caplog.records[:2]]
    assert "caller[0].tenant_rate" in errors[0] and "cannot read" in errors[1]


def test_an_unusable_policy_at_start_up_raises() -> None:
    with pytest.raises(PolicyError):
        PolicyFile(Path("/nonexistent/policy.toml"), RPCS, interval=1.0)


# -- rate limits ------------------------------------------------------------------------------


def test_rates_admit_all_or_nothing_and_say_which_limit_refused() -> None:
    limiter = RateLimiter()
    tenant = Limit("tenant", parse_rate("3/minute"), ("im", "acme"))

    def operator(name: str) -> Limit:
        return Limit("operator", parse_rate("1/minute"), ("im", "acme", name))

    assert limiter.admit([tenant, operator("a")]) is None
    refused = limiter.admit([tenant, operator("a")])
    assert refused is not None and refused.scope == "operator"
    assert 0 < refused.retry_after_seconds <= 60
    assert limiter.admit([tenant, operator("b")]) is None
    assert limiter.admit([tenant, operator("c")]) is None  # the refusal above cost nothing
    refused = limiter.admit([tenant, operator("d")])
    assert refused is not None and refused.scope == "tenant"
    assert limiter.admit([]) is None


@pytest.mark.parametrize("text", ["x", "5", "0/second", "-1/second", "5/fortnight"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"parse rate limit|no granularity|at least one call"):
        parse_rate(text)
