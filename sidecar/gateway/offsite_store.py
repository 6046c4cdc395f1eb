"""The registration family's state in the shared store: idempotency keys and submissions.

``offsite_requests`` remembers each ``request_id`` of ``SubmitOffsiteRegistration`` and
``CancelOffsiteRegistration`` per tenant and method: a keyed digest of the payload
(``Pseudonymizer.digest``, the HSM's pseudonym function: the payload holds the person's ID
number, name and phone, which an unkeyed hash would give back by brute force), whether the mutating
transaction (2501 / 2502) may have been sent, a lease held while a call runs, and the outcome once
it is known. ``offsite_submissions`` records the registrations submitted through this sidecar,
so that listings can show their ``submit_time`` (registrations made elsewhere have none).

The life of a key (one row)::

    (none) --claim--> running, sent=0, leased
    running, sent=0 --mark_sent--> running, sent=1          (just before 2501/2502 goes out)
    running --finish--> done (the answer or the error, replayed to every repeat)
    running --release--> (none)                             (2501/2502 did not go out)
    running, sent=0 --free--> (none)                        (failed before sending)
    running, sent=1 --free--> running, sent=1, lease 0      (outcome lost; resolved on a repeat)

A repeat finds ``done`` (replay), a live lease (``REQUEST_IN_PROGRESS``), or an expired lease:
``sent=0`` starts afresh, ``sent=1`` must be resolved with the platform's query first. Claims run
under a transaction-scoped lock on the key, so concurrent duplicates see one winner.

The outcome holds personal data (a registration's answer carries the contact phone and address),
so it is stored sealed (``sidecar.keys.fieldcrypt``, SM4-GCM), bound to its tenant, method and key.
Rows written before sealing (none exist in production) would not open and answer UNAVAILABLE.
Migration 2 blanks the unkeyed SHA-256 digests of rows written before it (they cannot be re-keyed:
the payload is gone); a repeat of such a ``request_id`` answers ``IDEMPOTENCY_KEY_REUSED``.
"""

from __future__ import annotations

import contextlib
import enum
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.message import Message

from sidecar.compliance.pseudonyms import OFFSITE_PAYLOAD, Pseudonymizer
from sidecar.config import OffsiteConfig
from sidecar.errors import FieldViolation, GatewayError
from sidecar.keys.fieldcrypt import FieldSealer, context
from sidecar.store import Migration, Store, StoreError

COMPONENT = "offsite"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=COMPONENT,
        version=1,
        statements=(
            "CREATE TABLE offsite_requests ("
            " tenant TEXT NOT NULL,"
            " method TEXT NOT NULL,"
            " request_id TEXT NOT NULL,"
            " payload_sha256 TEXT NOT NULL,"
            " state TEXT NOT NULL,"
            " sent BIGINT NOT NULL,"
            " sent_at BIGINT,"
            " lease_until BIGINT NOT NULL,"
            " outcome {blob},"
            " created_at BIGINT NOT NULL,"
            " updated_at BIGINT NOT NULL,"
            " PRIMARY KEY (tenant, method, request_id))",
            "CREATE TABLE offsite_submissions ("
            " registration_id TEXT NOT NULL,"
            " tenant TEXT NOT NULL,"
            " submit_time BIGINT NOT NULL,"
            " PRIMARY KEY (tenant, registration_id))",
        ),
    ),
    # Payload digests are keyed from now on (column name kept); the unkeyed SHA-256 of rows
    # written before cannot be re-keyed, so it is dropped rather than kept at rest.
    Migration(
        component=COMPONENT,
        version=2,
        statements=("UPDATE offsite_requests SET payload_sha256 = ''",),
    ),
)

RUNNING, DONE = "running", "done"


@dataclass(frozen=True)
class RequestKey:
    tenant: str
    method: str
    request_id: str
    payload: bytes = field(repr=False)  # every other field, serialized; in memory only


def request_key(tenant: str, method: str, request: Message) -> RequestKey:
    """The key of a mutating request: its ``request_id`` and every other field (the store
    keeps only a keyed digest of those)."""
    copy = type(request)()
    copy.CopyFrom(request)
    request_id = getattr(copy, "request_id")  # noqa: B009 - every mutating request has one
    copy.ClearField("request_id")
    return RequestKey(tenant, method, request_id, copy.SerializeToString(deterministic=True))


class ClaimKind(enum.Enum):
    FRESH = "fresh"  # nothing was sent for this key: act
    RESOLVE = "resolve"  # something may have been sent: resolve with the platform first
    REPLAY = "replay"  # the outcome is known


@dataclass(frozen=True)
class Claim:
    kind: ClaimKind
    outcome: Outcome | None = None
    sent_at: float | None = None  # seconds since the epoch, for RESOLVE


@dataclass(frozen=True)
class Outcome:
    """A recorded answer (serialized response) or error."""

    answer: bytes | None = None
    error: GatewayError | None = None

    def encode(self) -> bytes:
        if self.answer is not None:
            return b"A" + self.answer
        assert self.error is not None
        e = self.error
        return b"E" + json.dumps(
            {
                "code": e.code.name,
                "reason": e.reason,
                "message": e.message,
                "metadata": dict(e.metadata),
                "violations": [[v.field, v.description] for v in e.violations],
                "retry": e.retry_after_seconds,
            },
            ensure_ascii=False,
        ).encode("utf-8")

    @classmethod
    def decode(cls, blob: bytes) -> Outcome:
        if blob[:1] == b"A":
            return cls(answer=bytes(blob[1:]))
        data = json.loads(bytes(blob[1:]).decode("utf-8"))
        return cls(
            error=GatewayError(
                grpc.StatusCode[data["code"]],
                data["reason"],
                data["message"],
                metadata=data["metadata"],
                violations=tuple(FieldViolation(f, d) for f, d in data["violations"]),
                retry_after_seconds=data["retry"],
            )
        )


def key_reused() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
        "this request_id was used before with a different request",
    )


def in_progress(retry_after_seconds: float) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.ABORTED,
        "REQUEST_IN_PROGRESS",
        "a call with this request_id is still running; repeat it later with the same request_id",
        retry_after_seconds=retry_after_seconds,
    )


def store_unavailable() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "STORE_UNAVAILABLE",
        "the sidecar's store cannot be reached; repeat with the same request_id",
        retry_after_seconds=1.0,
    )


@contextlib.contextmanager
def store_errors_unavailable() -> Iterator[None]:
    """Inside this block, a store that cannot be reached or written is UNAVAILABLE."""
    try:
        yield
    except StoreError:
        raise store_unavailable() from None


class OffsiteStore:
    """Idempotency keys and submissions of the registration family, in the shared store."""

    def __init__(
        self,
        store: Store,
        config: OffsiteConfig,
        *,
        sealer: FieldSealer,
        digests: Pseudonymizer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sealer = sealer
        self._digests = digests
        self._lease = config.request_lease_seconds
        self._keep = config.keep_request_ids_hours * 3600
        self._clock = clock
        self._next_purge = 0.0

    async def purge(self) -> int:
        """Forget finished keys older than ``offsite.keep_request_ids_hours`` (docs/api.md
        promises at least 24 hours); how many. Keys whose outcome is still unknown are never
        purged."""
        cutoff = _micros(self._clock() - self._keep)
        async with self._store.transaction() as tx:
            return await tx.execute(
                "DELETE FROM offsite_requests WHERE state = :done AND updated_at < :cutoff",
                {"done": DONE, "cutoff": cutoff},
            )

    async def purge_now_and_then(self) -> None:
        """``purge`` at most once an hour, from the request path."""
        if self._clock() >= self._next_purge:
            self._next_purge = self._clock() + 3600.0
            await self.purge()

    async def claim(self, key: RequestKey) -> Claim:
        """Take the key for this call, or say why not (raises for reuse and in-progress)."""
        now = _micros(self._clock())
        lease_until = now + _micros(self._lease)
        params = _key_params(key)
        digest = await self._digests.digest(f"{OFFSITE_PAYLOAD}:{key.method}", key.payload)
        sealed: bytes | None = None
        async with self._store.transaction() as tx:
            await tx.lock(f"offsite:{key.tenant}:{key.method}:{key.request_id}")
            row = await tx.fetch_one(
                "SELECT payload_sha256, state, sent, sent_at, lease_until, outcome"
                " FROM offsite_requests"
                " WHERE tenant = :tenant AND method = :method AND request_id = :request_id",
                params,
            )
            if row is None:
                await tx.execute(
                    "INSERT INTO offsite_requests (tenant, method, request_id, payload_sha256,"
                    " state, sent, sent_at, lease_until, outcome, created_at, updated_at)"
                    " VALUES (:tenant, :method, :request_id, :payload, :state, 0, NULL,"
                    " :lease_until, NULL, :now, :now)",
                    {**params, "payload": digest, "state": RUNNING,
                     "lease_until": lease_until, "now": now},
                )  # fmt: skip
                return Claim(ClaimKind.FRESH)
            if row["payload_sha256"] != digest:
                raise key_reused()
            if row["state"] == DONE:
                sealed = bytes(row["outcome"])
            elif int(row["lease_until"]) > now:
                raise in_progress(max(1.0, (int(row["lease_until"]) - now) / 1e6))
            else:
                await tx.execute(
                    "UPDATE offsite_requests SET lease_until = :lease_until, updated_at = :now"
                    " WHERE tenant = :tenant AND method = :method AND request_id = :request_id",
                    {**params, "lease_until": lease_until, "now": now},
                )
                if int(row["sent"]):
                    at = row["sent_at"]
                    return Claim(ClaimKind.RESOLVE, sent_at=None if at is None else at / 1e6)
                return Claim(ClaimKind.FRESH)
        # a finished key: open its outcome outside the transaction (the key may need the HSM)
        assert sealed is not None
        plain = await self._sealer.open(sealed, _outcome_context(key))
        return Claim(ClaimKind.REPLAY, Outcome.decode(plain))

    async def mark_sent(self, key: RequestKey) -> None:
        """Record, before it goes out, that the mutating transaction may reach the platform."""
        now = _micros(self._clock())
        await self._update(key, "sent = 1, sent_at = :now, updated_at = :now", {"now": now})

    async def finish(self, key: RequestKey, outcome: Outcome) -> None:
        """Record the outcome that every repeat of the key will get."""
        sealed = await self._sealer.seal(outcome.encode(), _outcome_context(key))
        now = _micros(self._clock())
        await self._update(
            key,
            "state = :done, outcome = :outcome, lease_until = 0, updated_at = :now",
            {"done": DONE, "outcome": sealed, "now": now},
        )

    async def free(self, key: RequestKey) -> None:
        """The call ends without an outcome: forget the key if nothing was sent, else drop the
        lease so that a repeat resolves what was sent."""
        now = _micros(self._clock())
        params = {**_key_params(key), "running": RUNNING, "now": now}
        async with self._store.transaction() as tx:
            await tx.execute(
                "DELETE FROM offsite_requests WHERE tenant = :tenant AND method = :method"
                " AND request_id = :request_id AND state = :running AND sent = 0",
                params,
            )
            await tx.execute(
                "UPDATE offsite_requests SET lease_until = 0, updated_at = :now"
                " WHERE tenant = :tenant AND method = :method AND request_id = :request_id"
                " AND state = :running",
                params,
            )

    async def release(self, key: RequestKey) -> None:
        """The mutating transaction did not go out: forget the key (repeatable after a fix)."""
        async with self._store.transaction() as tx:
            await tx.execute(
                "DELETE FROM offsite_requests WHERE tenant = :tenant AND method = :method"
                " AND request_id = :request_id AND state = :running",
                {**_key_params(key), "running": RUNNING},
            )

    async def record_submission(self, tenant: str, registration_id: str, at: float) -> None:
        async with self._store.transaction() as tx:
            await tx.execute(
                "INSERT INTO offsite_submissions (registration_id, tenant, submit_time)"
                " VALUES (:registration_id, :tenant, :at)"
                " ON CONFLICT (tenant, registration_id) DO NOTHING",
                {"registration_id": registration_id, "tenant": tenant, "at": _micros(at)},
            )

    async def submit_times(self, tenant: str, registration_ids: Sequence[str]) -> dict[str, float]:
        """When each of ``registration_ids`` was submitted through this sidecar (seconds)."""
        if not registration_ids:
            return {}
        found: dict[str, float] = {}
        async with self._store.transaction() as tx:
            for registration_id in registration_ids:
                row = await tx.fetch_one(
                    "SELECT submit_time FROM offsite_submissions"
                    " WHERE tenant = :tenant AND registration_id = :registration_id",
                    {"tenant": tenant, "registration_id": registration_id},
                )
                if row is not None:
                    found[registration_id] = int(row["submit_time"]) / 1e6
        return found

    async def _update(self, key: RequestKey, assignments: str, values: dict[str, object]) -> None:
        async with self._store.transaction() as tx:
            await tx.execute(
                f"UPDATE offsite_requests SET {assignments}"  # noqa: S608 - fixed fragments
                " WHERE tenant = :tenant AND method = :method AND request_id = :request_id",
                {**_key_params(key), **values},
            )


def _key_params(key: RequestKey) -> dict[str, object]:
    return {"tenant": key.tenant, "method": key.method, "request_id": key.request_id}


def _outcome_context(key: RequestKey) -> bytes:
    return context("offsite_requests.outcome", key.tenant, key.method, key.request_id)


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)
