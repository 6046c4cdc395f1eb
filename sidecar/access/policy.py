"""The access policy: which caller (workload identity) may use which tenants and RPCs, how often.

A TOML file, one ``[[caller]]`` table per calling workload::

    [[caller]]
    name = "im-service"                       # appears in logs and the audit trail
    unix_uids = [1000]                        # kernel identity over the Unix socket
    unix_gids = []                            #   (a uid match wins over a gid match)
    tls_uris = ["spiffe://corp.example/ns/im/sa/im-service"]   # client certificate URI SANs
    tls_dns_names = []                        # client certificate DNS SANs
    tenants = ["acme-corp"]                   # or ["*"]
    rpcs = ["InsuranceGateway/GetEnrollment", "ConsentService/*"]   # or ["*"]
    tenant_rate = "50/second"                 # optional; per tenant of this caller
    operator_rate = "5/second"                # optional; per operator of a tenant

Every identity belongs to at most one caller, and every RPC pattern must name a real service and
method, so a typo is an error when the file is loaded instead of a silent refusal later.
``PolicyFile`` reloads the file when it changes; an invalid new version keeps the old policy.
"""

from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limits import RateLimitItem
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sidecar.access.peer import CertificatePeer, Peer, UnixPeer
from sidecar.access.ratelimit import parse_rate

log = logging.getLogger(__name__)

ANY = "*"


class PolicyError(Exception):
    """The policy file cannot be used; ``str()`` is one line naming the file and the key."""


class _CallerModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    unix_uids: tuple[int, ...] = ()
    unix_gids: tuple[int, ...] = ()
    tls_uris: tuple[str, ...] = ()
    tls_dns_names: tuple[str, ...] = ()
    tenants: tuple[str, ...] = Field(min_length=1)
    rpcs: tuple[str, ...] = Field(min_length=1)
    tenant_rate: str | None = None
    operator_rate: str | None = None

    @field_validator("unix_uids", "unix_gids")
    @classmethod
    def _ids(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 0 <= v < 2**32 - 1 for v in value):
            raise ValueError("must be between 0 and 4294967294")
        return value

    @field_validator("tenant_rate", "operator_rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)  # ValueError names the problem
        return value


class _PolicyModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    caller: tuple[_CallerModel, ...] = ()


@dataclass(frozen=True)
class Rule:
    """What one caller may do."""

    name: str
    tenants: frozenset[str]
    rpcs: frozenset[str]  # "Service/Method", "Service/*" or "*"
    tenant_rate: RateLimitItem | None
    operator_rate: RateLimitItem | None

    def allows_rpc(self, service: str, method: str) -> bool:
        short = service.rsplit(".", 1)[-1]
        return bool({ANY, f"{short}/{ANY}", f"{short}/{method}"} & self.rpcs)

    def allows_tenant(self, tenant: str) -> bool:
        return ANY in self.tenants or tenant in self.tenants


class Policy:
    """A validated policy: identities → rules."""

    def __init__(self, rules: Iterable[tuple[Rule, _CallerModel]]) -> None:
        self.rules: dict[str, Rule] = {}
        self._by: dict[str, dict[Any, Rule]] = {
            "unix_uids": {},
            "unix_gids": {},
            "tls_uris": {},
            "tls_dns_names": {},
        }
        for index, (rule, model) in enumerate(rules):
            if rule.name in self.rules:
                raise ValueError(f"caller[{index}].name: {rule.name} is used twice")
            self.rules[rule.name] = rule
            for key, table in self._by.items():
                for identity in getattr(model, key):
                    if identity in table:
                        raise ValueError(
                            f"caller[{index}].{key}: {identity} already belongs to "
                            f"caller {table[identity].name}"
                        )
                    table[identity] = rule

    def caller_for(self, peer: Peer) -> Rule | None:
        """The rule of the caller this peer is, or None for an unknown (or ambiguous) peer."""
        if isinstance(peer, UnixPeer):
            return self._by["unix_uids"].get(peer.uid) or self._by["unix_gids"].get(peer.gid)
        assert isinstance(peer, CertificatePeer)
        matches = {self._by["tls_uris"][u] for u in peer.uris if u in self._by["tls_uris"]}
        if not matches:
            table = self._by["tls_dns_names"]
            matches = {table[d] for d in peer.dns_names if d in table}
        # A certificate that names two callers is nobody: refusing is the only safe answer.
        return matches.pop() if len(matches) == 1 else None


def parse(data: dict[str, Any], known_rpcs: Collection[str]) -> Policy:
    """Validate ``data`` (a parsed TOML document); ValueError names the key at fault."""
    try:
        model = _PolicyModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in first["loc"]
        ).replace(".[", "[")
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValueError(f"{where or '(whole file)'}: {message}") from None
    pairs = []
    for index, caller in enumerate(model.caller):
        for pattern in caller.rpcs:
            if not _known(pattern, known_rpcs):
                raise ValueError(f"caller[{index}].rpcs: {pattern} names no RPC of the sidecar")
        rule = Rule(
            name=caller.name,
            tenants=frozenset(caller.tenants),
            rpcs=frozenset(caller.rpcs),
            tenant_rate=parse_rate(caller.tenant_rate) if caller.tenant_rate else None,
            operator_rate=parse_rate(caller.operator_rate) if caller.operator_rate else None,
        )
        pairs.append((rule, caller))
    return Policy(pairs)


def _known(pattern: str, known_rpcs: Collection[str]) -> bool:
    if pattern == ANY:
        return True
    service, _, method = pattern.partition("/")
    if method == ANY:
        return any(rpc.startswith(f"{service}/") for rpc in known_rpcs)
    return pattern in known_rpcs


def load(path: Path, known_rpcs: Collection[str]) -> Policy:
    """Read and validate the policy file; PolicyError is one line naming the file and key."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        return parse(data, known_rpcs)
    except OSError as exc:
        raise PolicyError(f"access policy {path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"access policy {path}: not valid TOML: {exc}") from None
    except ValueError as exc:
        raise PolicyError(f"access policy {path}: {exc}") from None


_Signature = tuple[int, int, int, int] | None


class PolicyFile:
    """The policy in force, reloaded when the file changes (checked at most every ``interval``).

    The check is an ``os.stat`` made by the first call after the interval, so there is no thread
    or task to manage; Kubernetes' ConfigMap updates (a symlink swap) change the inode and so are
    seen. A new version that does not validate, or a file that disappeared, keeps the policy in
    force and logs one line, once per change.
    """

    def __init__(
        self,
        path: Path,
        known_rpcs: Collection[str],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._known = frozenset(known_rpcs)
        self._interval = interval
        self._clock = clock
        self._signature = _signature(path)
        self._policy = load(path, self._known)  # start-up: an error here stops the sidecar
        self._checked = clock()

    def current(self) -> Policy:
        now = self._clock()
        if now - self._checked >= self._interval:
            self._checked = now
            self._reload_if_changed()
        return self._policy

    def _reload_if_changed(self) -> None:
        signature = _signature(self._path)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            policy = load(self._path, self._known)
        except PolicyError as exc:
            log.error("access.policy_rejected", extra={"error": str(exc), "kept": "previous"})
            return
        self._policy = policy
        log.info("access.policy_reloaded", extra={"callers": len(policy.rules)})


def _signature(path: Path) -> _Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
