"""The settlement records in the shared store: one row per (tenant, request_id), and its attempts.

The row is the settlement's state machine (see docs/settlement.md). Every transition is one
conditional ``UPDATE`` (``WHERE state = ... AND lease_owner = ...``) so that two workers, in
this process or in another replica, can never both move the same row: the one whose update
changed a row owns the transition, the other reads what happened.

``settlement_attempts`` holds the msgid of every 2207 request, written *before* the request
leaves: a sidecar that dies while the answer is on its way finds, after its restart, the msgid
it needs to reverse (2601) the settlement.

No certificate number, name or token is stored: the subject and the payload are kept as keyed
digests (the subject's pseudonym and ``Pseudonymizer.digest`` of the payload, computed with the
HSM's pseudonym function; enough to match a repeat or a lookup, useless for trying ID numbers).
The columns keep their historical names ``subject_sha256`` / ``payload_sha256``; version 3 blanks
the unkeyed SHA-256 values of rows written before it (they cannot be re-keyed: the plaintext is
gone), so such a row is no longer found by subject and a repeat of its ``request_id`` answers
``IDEMPOTENCY_KEY_REUSED``. The platform's ``psn_no`` is kept because
reversal and cancellation need it, sealed (``sidecar.keys.fieldcrypt``, SM4-GCM under an HSM-wrapped
data key) in ``psn_no_sealed`` and bound to its tenant and request. The plaintext ``psn_no``
column of version 1 is no longer written; a row written before version 2 (none exist in
production) is still read from it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from sidecar.keys.fieldcrypt import FieldSealer, context
from sidecar.store import Migration, Row, Store, Tx
from sidecar.store.base import now_micros

COMPONENT = "settlement"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        component=COMPONENT,
        version=1,
        statements=(
            "CREATE TABLE settlement_records ("
            " tenant TEXT NOT NULL,"
            " request_id TEXT NOT NULL,"
            " payload_sha256 TEXT NOT NULL,"
            " subject_sha256 TEXT NOT NULL,"
            " state TEXT NOT NULL,"
            " lease_owner TEXT NOT NULL,"
            " lease_until BIGINT NOT NULL,"
            " operator TEXT NOT NULL,"
            " created_at BIGINT NOT NULL,"
            " updated_at BIGINT NOT NULL,"
            " insurance_type_code TEXT NOT NULL,"
            " medical_type_code TEXT NOT NULL,"
            " institution_code TEXT NOT NULL,"
            " institution_name TEXT NOT NULL,"
            " total_fen BIGINT NOT NULL,"
            " psn_no TEXT,"
            " insured_area TEXT,"
            " mdtrt_id TEXT,"
            " setl_id TEXT,"
            " fund_fen BIGINT,"
            " account_fen BIGINT,"
            " cash_fen BIGINT,"
            " other_fen BIGINT,"
            " balance_after_fen BIGINT,"
            " settle_time BIGINT,"
            " cancel_time BIGINT,"
            " failure_reason TEXT,"
            " failure_code TEXT,"
            " failure_message TEXT,"
            " PRIMARY KEY (tenant, request_id))",
            "CREATE INDEX settlement_records_by_setl_id ON settlement_records (tenant, setl_id)",
            "CREATE INDEX settlement_records_by_state ON settlement_records (state, lease_until)",
            "CREATE TABLE settlement_attempts ("
            " tenant TEXT NOT NULL,"
            " request_id TEXT NOT NULL,"
            " msgid TEXT NOT NULL,"
            " infno TEXT NOT NULL,"
            " sent_at BIGINT NOT NULL,"
            " PRIMARY KEY (tenant, request_id, msgid))",
            "CREATE TABLE settlement_cancel_keys ("
            " tenant TEXT NOT NULL,"
            " request_id TEXT NOT NULL,"
            " payload_sha256 TEXT NOT NULL,"
            " target_request_id TEXT NOT NULL,"
            " created_at BIGINT NOT NULL,"
            " PRIMARY KEY (tenant, request_id))",
        ),
    ),
    Migration(
        component=COMPONENT,
        version=2,
        statements=("ALTER TABLE settlement_records ADD COLUMN psn_no_sealed {blob}",),
    ),
    Migration(
        component=COMPONENT,
        version=3,
        statements=(
            "UPDATE settlement_records SET payload_sha256 = '', subject_sha256 = ''",
            "UPDATE settlement_cancel_keys SET payload_sha256 = ''",
        ),
    ),
)


class State(enum.Enum):
    """Where a settlement is; the contract's PENDING covers RUNNING and SENDING."""

    RUNNING = "running"  # claimed; the chain before 2207 runs; nothing can have been charged
    SENDING = "sending"  # a 2207 msgid is recorded: a charge may exist until resolved
    SETTLED = "settled"  # the platform answered 2207: charged
    FAILED = "failed"  # the platform refused: nothing charged
    REVERSED = "reversed"  # an unknown outcome was undone (2601) or shown never to have charged
    CANCELLING = "cancelling"  # a 2208 for a settled settlement is on its way
    CANCELLED = "cancelled"  # cancelled after settling (2208)

    @property
    def final(self) -> bool:
        return self in (State.SETTLED, State.FAILED, State.REVERSED, State.CANCELLED)


@dataclass(frozen=True)
class Record:
    """One row of ``settlement_records``."""

    tenant: str
    request_id: str
    payload_sha256: str
    subject_sha256: str
    state: State
    lease_owner: str
    lease_until: int
    operator: str
    created_at: int
    updated_at: int
    insurance_type_code: str
    medical_type_code: str
    institution_code: str
    institution_name: str
    total_fen: int
    psn_no: str | None = None
    insured_area: str | None = None
    mdtrt_id: str | None = None
    setl_id: str | None = None
    fund_fen: int | None = None
    account_fen: int | None = None
    cash_fen: int | None = None
    other_fen: int | None = None
    balance_after_fen: int | None = None
    settle_time: int | None = None
    cancel_time: int | None = None
    failure_reason: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    def __repr__(self) -> str:  # psn_no and the platform's text are personal data
        return f"Record({self.tenant!r}, {self.request_id!r}, {self.state.value})"

    @classmethod
    def from_row(cls, row: Row, psn_no: str | None) -> Record:
        """The record of ``row``, with its ``psn_no`` opened by the caller."""
        values: dict[str, Any] = {f.name: row[f.name] for f in fields(cls)}
        values["state"] = State(values["state"])
        values["psn_no"] = psn_no
        return cls(**values)

    def columns(self) -> dict[str, object]:
        """The plaintext columns (all but ``psn_no``, which is stored sealed)."""
        values: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "psn_no"
        }
        values["state"] = self.state.value
        return values

    def leased(self, now: int) -> bool:
        """Whether a worker still holds the row (and may be waiting for the platform)."""
        return self.lease_until > now


@dataclass(frozen=True)
class Attempt:
    msgid: str
    infno: str
    sent_at: int


@dataclass(frozen=True)
class CancelKey:
    payload_sha256: str
    target_request_id: str


# Column names come from the Record dataclass, never from input; values are always parameters.
# ``psn_no`` is written only sealed (``psn_no_sealed``); the plaintext column is read for old rows.
_COLUMNS = tuple(f.name for f in fields(Record) if f.name != "psn_no")
_WRITTEN = (*_COLUMNS, "psn_no_sealed")
_SELECT = f"SELECT {', '.join((*_COLUMNS, 'psn_no', 'psn_no_sealed'))} FROM settlement_records"  # noqa: S608


class SettlementRecords:
    """Reads and conditional writes of the settlement tables; no business rules."""

    def __init__(self, store: Store, sealer: FieldSealer) -> None:
        self._store = store
        self._sealer = sealer

    async def claim(self, record: Record) -> Record | None:
        """Insert ``record`` unless its key exists: ``None`` if we own it now, else that row."""
        names = ", ".join(_WRITTEN)
        values = ", ".join(f":{name}" for name in _WRITTEN)
        sealed = await self._seal(record.tenant, record.request_id, record.psn_no)
        async with self._store.transaction() as tx:
            inserted = await tx.execute(
                f"INSERT INTO settlement_records ({names}) VALUES ({values})"  # noqa: S608
                " ON CONFLICT (tenant, request_id) DO NOTHING",
                {**record.columns(), "psn_no_sealed": sealed},
            )
            if inserted:
                return None
            row = await _get(tx, record.tenant, record.request_id)
        if row is None:  # deleted between the insert and the read: claim it again
            return await self.claim(record)
        return await self._record(row)

    async def get(self, tenant: str, request_id: str) -> Record | None:
        async with self._store.transaction() as tx:
            row = await _get(tx, tenant, request_id)
        return await self._record(row) if row is not None else None

    async def by_settlement_id(self, tenant: str, setl_id: str) -> Record | None:
        async with self._store.transaction() as tx:
            row = await tx.fetch_one(
                f"{_SELECT} WHERE tenant = :tenant AND setl_id = :setl_id",
                {"tenant": tenant, "setl_id": setl_id},
            )
        return await self._record(row) if row is not None else None

    async def move(
        self,
        record: Record,
        expected: tuple[State, ...],
        state: State,
        *,
        owner: str | None = None,
        lease_until: int | None = None,
        **changes: object,
    ) -> Record | None:
        """Move the row from one of ``expected`` (held by ``record.lease_owner``) to ``state``.

        ``owner``/``lease_until`` hand the row to a new holder. The new row, or ``None`` if the
        row was not in that state or held by someone else (another worker moved it first).
        A row already in ``state`` with exactly these values (a repeat of a transition whose
        commit was not acknowledged) counts as moved: retrying a move is idempotent.
        """
        values: dict[str, object] = {
            "state": state.value,
            "updated_at": now_micros(),
            "lease_owner": record.lease_owner if owner is None else owner,
            "lease_until": record.lease_until if lease_until is None else lease_until,
            **changes,
        }
        unknown = set(values) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"not a settlement column: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = :set_{name}" for name in values)
        states = ", ".join(f":was_{index}" for index in range(len(expected)))
        params: dict[str, object] = {f"set_{name}": value for name, value in values.items()}
        params.update({f"was_{index}": s.value for index, s in enumerate(expected)})
        params.update(
            {"tenant": record.tenant, "request_id": record.request_id, "owner": record.lease_owner}
        )
        async with self._store.transaction() as tx:
            changed = await tx.execute(
                f"UPDATE settlement_records SET {assignments}"  # noqa: S608
                " WHERE tenant = :tenant AND request_id = :request_id"
                f" AND state IN ({states}) AND lease_owner = :owner",
                params,
            )
            row = await _get(tx, record.tenant, record.request_id)
            if not changed and not (row is not None and _already(row, values)):
                row = None
        return await self._record(row) if row is not None else None

    async def take_over(
        self, record: Record, owner: str, lease_until: int, *, force: bool = False
    ) -> Record | None:
        """Take a row whose lease ran out (its holder died or gave up); ``None`` if we lost.

        ``force`` takes it although the lease runs, from a holder known to be dead.
        """
        now = now_micros()
        lease = "" if force else " AND lease_until <= :now"
        async with self._store.transaction() as tx:
            changed = await tx.execute(
                "UPDATE settlement_records SET lease_owner = :owner, lease_until = :until,"  # noqa: S608
                " updated_at = :now"
                " WHERE tenant = :tenant AND request_id = :request_id AND state = :state"
                f" AND lease_owner = :was_owner{lease}",
                {
                    "owner": owner,
                    "until": lease_until,
                    "now": now,
                    "tenant": record.tenant,
                    "request_id": record.request_id,
                    "state": record.state.value,
                    "was_owner": record.lease_owner,
                },
            )
            row = await _get(tx, record.tenant, record.request_id) if changed else None
        return await self._record(row) if row is not None else None

    async def release(self, record: Record) -> None:
        """Forget a claim that charged nothing (so the key can be used again)."""
        async with self._store.transaction() as tx:
            deleted = await tx.execute(
                "DELETE FROM settlement_records WHERE tenant = :tenant AND request_id = :r"
                " AND lease_owner = :owner AND state IN (:running, :sending)",
                {
                    "tenant": record.tenant,
                    "r": record.request_id,
                    "owner": record.lease_owner,
                    "running": State.RUNNING.value,
                    "sending": State.SENDING.value,
                },
            )
            if deleted:
                await tx.execute(
                    "DELETE FROM settlement_attempts WHERE tenant = :tenant AND request_id = :r",
                    {"tenant": record.tenant, "r": record.request_id},
                )

    async def record_attempt(
        self,
        record: Record,
        msgid: str,
        infno: str,
        *,
        psn_no: str,
        insured_area: str,
        mdtrt_id: str,
    ) -> Record:
        """Write a 2207 msgid and move the row to SENDING, in one transaction, before sending.

        The row also gets what reversal and cancellation need (person, insured area, visit).
        """
        sealed = await self._seal(record.tenant, record.request_id, psn_no)
        now = now_micros()
        async with self._store.transaction() as tx:
            changed = await tx.execute(
                "UPDATE settlement_records SET state = :sending, updated_at = :now,"
                " psn_no_sealed = :psn_no, insured_area = :area, mdtrt_id = :mdtrt_id"
                " WHERE tenant = :tenant AND request_id = :r AND lease_owner = :owner"
                " AND state IN (:running, :sending)",
                {
                    "psn_no": sealed,
                    "area": insured_area,
                    "mdtrt_id": mdtrt_id,
                    "sending": State.SENDING.value,
                    "running": State.RUNNING.value,
                    "now": now,
                    "tenant": record.tenant,
                    "r": record.request_id,
                    "owner": record.lease_owner,
                },
            )
            if not changed:
                raise LostClaim("the settlement row was taken over before 2207 was sent")
            await tx.execute(
                "INSERT INTO settlement_attempts (tenant, request_id, msgid, infno, sent_at)"
                " VALUES (:tenant, :r, :msgid, :infno, :now)"
                " ON CONFLICT (tenant, request_id, msgid) DO NOTHING",  # a retried write
                {
                    "tenant": record.tenant,
                    "r": record.request_id,
                    "msgid": msgid,
                    "infno": infno,
                    "now": now,
                },
            )
            row = await _get(tx, record.tenant, record.request_id)
        assert row is not None
        return await self._record(row)

    async def forget_attempt(self, record: Record, msgid: str) -> None:
        """Drop an attempt known not to have left this process (the transport sent nothing)."""
        async with self._store.transaction() as tx:
            await tx.execute(
                "DELETE FROM settlement_attempts"
                " WHERE tenant = :tenant AND request_id = :r AND msgid = :msgid",
                {"tenant": record.tenant, "r": record.request_id, "msgid": msgid},
            )

    async def attempts(self, record: Record) -> list[Attempt]:
        async with self._store.transaction() as tx:
            rows = await tx.fetch_all(
                "SELECT msgid, infno, sent_at FROM settlement_attempts"
                " WHERE tenant = :tenant AND request_id = :r ORDER BY sent_at, msgid",
                {"tenant": record.tenant, "r": record.request_id},
            )
        return [Attempt(row["msgid"], row["infno"], int(row["sent_at"])) for row in rows]

    async def unresolved(
        self,
        older_than: int,
        limit: int = 100,
        *,
        earlier_self: tuple[str, str] | None = None,
    ) -> list[Record]:
        """Rows that need a resolver: SENDING or CANCELLING, last touched before ``older_than``,
        and unleased — or held by an earlier process of this replica, when ``earlier_self`` is
        (the replica's owner prefix, this process's own owner id)."""
        held = ""
        params: dict[str, object] = {
            "sending": State.SENDING.value,
            "cancelling": State.CANCELLING.value,
            "now": now_micros(),
            "older": older_than,
            "limit": limit,
        }
        if earlier_self is not None:
            held = " OR (lease_owner LIKE :prefix AND lease_owner <> :me)"
            params["prefix"] = earlier_self[0].replace("%", "").replace("_", "") + "%"
            params["me"] = earlier_self[1]
        async with self._store.transaction() as tx:
            rows = await tx.fetch_all(
                f"{_SELECT} WHERE state IN (:sending, :cancelling)"
                f" AND (lease_until <= :now{held})"
                " AND updated_at <= :older ORDER BY updated_at LIMIT :limit",
                params,
            )
        return [await self._record(row) for row in rows]

    async def cancel_key(self, tenant: str, request_id: str, key: CancelKey) -> CancelKey | None:
        """Remember a CancelSettlement key; the one stored before if the key was used."""
        async with self._store.transaction() as tx:
            inserted = await tx.execute(
                "INSERT INTO settlement_cancel_keys"
                " (tenant, request_id, payload_sha256, target_request_id, created_at)"
                " VALUES (:tenant, :r, :payload, :target, :now)"
                " ON CONFLICT (tenant, request_id) DO NOTHING",
                {
                    "tenant": tenant,
                    "r": request_id,
                    "payload": key.payload_sha256,
                    "target": key.target_request_id,
                    "now": now_micros(),
                },
            )
            if inserted:
                return None
            row = await tx.fetch_one(
                "SELECT payload_sha256, target_request_id FROM settlement_cancel_keys"
                " WHERE tenant = :tenant AND request_id = :r",
                {"tenant": tenant, "r": request_id},
            )
        return CancelKey(row["payload_sha256"], row["target_request_id"]) if row else None

    async def _seal(self, tenant: str, request_id: str, psn_no: str | None) -> bytes | None:
        if psn_no is None:
            return None
        return await self._sealer.seal(psn_no.encode("utf-8"), _psn_no_context(tenant, request_id))

    async def _record(self, row: Row) -> Record:
        sealed = row["psn_no_sealed"]
        if sealed is None:
            return Record.from_row(row, row["psn_no"])  # unset, or a row from before version 2
        context = _psn_no_context(str(row["tenant"]), str(row["request_id"]))
        plain = await self._sealer.open(bytes(sealed), context)
        return Record.from_row(row, plain.decode("utf-8"))


class LostClaim(Exception):
    """Another worker took the row over; this one must stop acting on it."""


def _psn_no_context(tenant: str, request_id: str) -> bytes:
    return context("settlement_records.psn_no", tenant, request_id)


def _already(row: Row, values: dict[str, object]) -> bool:
    """Whether ``row`` already holds ``values`` (all but the time of the update)."""
    return all(row[name] == value for name, value in values.items() if name != "updated_at")


async def _get(tx: Tx, tenant: str, request_id: str) -> Row | None:
    return await tx.fetch_one(
        f"{_SELECT} WHERE tenant = :tenant AND request_id = :request_id",
        {"tenant": tenant, "request_id": request_id},
    )
