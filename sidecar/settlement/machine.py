"""The settlement state machine: exactly one charge per (tenant, request_id), or none.

docs/settlement.md has the diagram and the invariants; in short:

* a call **claims** its key with an insert; a repeat finds the row and follows it (waits while a
  live worker holds it, takes it over when the worker's lease ran out, returns final outcomes);
* the chain 1101 -> 2201 -> 2204 -> 2206 runs in RUNNING, where nothing can be charged: a
  transient failure there gives the key back, a refusal records FAILED;
* each 2207 msgid is written (state SENDING) **before** the request leaves; an answer makes the
  row SETTLED, a refusal FAILED, anything else leaves it SENDING (the contract's PENDING);
* a SENDING row is **resolved** by reversing every recorded msgid with 2601: reversed, already
  undone, or "not found" once no late arrival is possible any more -> REVERSED. The resolver is
  the call itself (with the part of the deadline it kept back), a repeat of the call, a
  CancelSettlement of it, and the background resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from sidecar.config import InstitutionConfig, SettlementConfig, TransactionCodes
from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.domain.subjects import Subject
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.envelope import beijing_now
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable
from sidecar.settlement import chain
from sidecar.settlement.durable import StoreRetry, durably
from sidecar.settlement.errors import (
    InProgress,
    KeyReused,
    NotFound,
    Pending,
    PersonRefused,
    Refused,
    Unreachable,
    Unrecorded,
)
from sidecar.settlement.records import (
    CancelKey,
    LostClaim,
    Record,
    SettlementRecords,
    State,
)
from sidecar.store import StoreUnavailable
from sidecar.store.base import now_micros

log = logging.getLogger(__name__)
T = TypeVar("T")

_MICROS = 1_000_000
PLATFORM_REFUSED = "PLATFORM_REFUSED"  # failure_reason of a FAILED row


class SubjectCache(Protocol):
    """The read-answer cache (sidecar/gateway/cache.py): a settlement invalidates the subject."""

    def invalidate(self, subject: Subject) -> object: ...


class NoCache:
    def invalidate(self, subject: Subject) -> object:
        return None


@dataclass(frozen=True)
class Pacing:
    """The machine's own pace (not configuration: ``[settlement]`` has the policy)."""

    poll_seconds: float = 0.05  # how often a duplicate looks at the row it waits for
    store: StoreRetry = field(default_factory=StoreRetry)  # writes retried over a store blip


@dataclass(frozen=True)
class Claim:
    """What a SettleWithEVoucher call asks for, with its idempotency key and digests."""

    tenant: str
    request_id: str
    payload_sha256: str
    subject_sha256: str
    order: chain.Order


class Settlements:
    """Settle, read, cancel and resolve settlements; one instance per sidecar process."""

    def __init__(
        self,
        records: SettlementRecords,
        platform: PlatformClient,
        institution: InstitutionConfig,
        transactions: TransactionCodes,
        policy: SettlementConfig,
        *,
        pacing: Pacing | None = None,
        cache: SubjectCache | None = None,
        clock: Callable[[], dt.datetime] = beijing_now,
        replica: str = "",
    ) -> None:
        self._records = records
        self._platform = platform
        self._institution = institution
        self._codes = transactions  # person_info, outpatient_registration, ... reversal
        self._policy = policy
        self._pacing = pacing or Pacing()
        self._cache: SubjectCache = cache if cache is not None else NoCache()  # may define len
        self._clock = clock
        # ``replica`` names this replica uniquely among the live ones (its msgid slot): a row held
        # by another worker of the same replica was left by an earlier, dead process of it.
        self._replica = f"{replica}-" if replica else ""
        self._worker = f"{replica or 'w'}-{uuid.uuid4().hex[:16]}"

    # -- SettleWithEVoucher -------------------------------------------------------------------

    async def settle(self, claim: Claim, operator: Operator, deadline: Deadline) -> Record:
        """The settlement for ``claim``'s key: made now, or the first call's outcome."""
        deadline = self._bounded(deadline)
        fresh = self._fresh_record(claim, operator, deadline)
        try:
            existing = await self._records.claim(fresh)
            if existing is None:
                return await self._run(fresh, claim.order, operator, deadline)
            if existing.payload_sha256 != claim.payload_sha256:
                raise KeyReused()
            return await self._follow(existing, claim.order, operator, deadline)
        finally:
            self._cache.invalidate(claim.order.subject)

    async def _follow(
        self, record: Record, order: chain.Order, operator: Operator, deadline: Deadline
    ) -> Record:
        """A repeat: wait for a live worker, take over from a dead one, answer final states."""
        while True:
            if record.state.final or record.state is State.CANCELLING:
                return self._answer(record)
            now = now_micros()
            if self._free(record, now):
                taken = await self._take_over(record, deadline, now)
                if taken is not None and taken.state is State.RUNNING:
                    log.info("settlement.taken_over", extra={"state": "running"})
                    return await self._run(taken, order, operator, deadline)
                if taken is not None and taken.state is State.SENDING:
                    return self._answer(await self._resolve_owned(taken, deadline))
            elif _left(deadline) <= self._pacing.poll_seconds * 2:
                return record  # PENDING: still in someone's hands when our deadline comes
            else:
                await asyncio.sleep(self._pacing.poll_seconds)
            again = await self._records.get(record.tenant, record.request_id)
            if again is None:  # its worker gave the key back (a transient failure): claim it
                return await self._claim_again(record, order, operator, deadline)
            record = again

    async def _claim_again(
        self, old: Record, order: chain.Order, operator: Operator, deadline: Deadline
    ) -> Record:
        now = now_micros()
        fresh = replace(  # same key, payload and subject; this call's worker and operator
            old,
            state=State.RUNNING,
            lease_owner=self._worker,
            lease_until=_micros(deadline),
            operator=operator.id,
            created_at=now,
            updated_at=now,
            psn_no=None,
            insured_area=None,
            mdtrt_id=None,
        )
        existing = await self._records.claim(fresh)
        if existing is None:
            return await self._run(fresh, order, operator, deadline)
        return await self._follow(existing, order, operator, deadline)

    async def _run(
        self, record: Record, order: chain.Order, operator: Operator, deadline: Deadline
    ) -> Record:
        """The chain, holding the row; returns the final record or raises the call's error."""
        try:
            person, mdtrt_id, batch = await self._prepare(record, order, operator, deadline)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._records.release(record))
            raise
        return await self._send(record, order, operator, deadline, person, mdtrt_id, batch)

    async def _prepare(
        self, record: Record, order: chain.Order, operator: Operator, deadline: Deadline
    ) -> tuple[chain.Person, str, str]:
        """1101 -> 2201 -> 2204 -> 2206. Refusals after 1101 are recorded as FAILED."""
        codes = self._codes
        now = self._clock()
        try:
            output = await self._call(
                codes.person_info,
                chain.person_input(order, now),
                operator,
                deadline,
                retry_safe=True,  # a query: retried within the deadline
            )
            person = chain.person_from(output, order.insurance_type_code)
        except PlatformRefusal as refusal:
            raise PersonRefused(refusal) from None
        except chain.AnswerProblem as problem:
            raise Unreachable(f"the insurance platform: {problem}") from None
        except PlatformUnreachable as failure:
            raise _unreachable(failure) from None
        visit_number = f"YS{uuid.uuid4().hex[:24]}"
        batch = f"B{uuid.uuid4().hex[:16]}"
        area = person.insured_area
        try:
            output = await self._call(
                codes.outpatient_registration,
                chain.registration_input(order, person, visit_number, now),
                operator,
                deadline,
                area,
            )
            mdtrt_id = chain.visit_from(output)
            await self._call(
                codes.fee_upload,
                chain.fees_input(order, person, mdtrt_id, batch, now),
                operator,
                deadline,
                area,
            )
            await self._call(
                codes.pre_settlement,
                chain.settlement_input(order, person, mdtrt_id, batch, final=False),
                operator,
                deadline,
                area,
            )
        except PlatformRefusal as refusal:
            raise await self._failed(record, refusal, deadline) from None
        except chain.AnswerProblem as problem:
            raise Unreachable(f"the insurance platform: {problem}") from None
        except PlatformUnreachable as failure:
            raise _unreachable(failure) from None
        return person, mdtrt_id, batch

    async def _send(
        self,
        record: Record,
        order: chain.Order,
        operator: Operator,
        deadline: Deadline,
        person: chain.Person,
        mdtrt_id: str,
        batch: str,
    ) -> Record:
        """2207 with its msgid recorded first; then SETTLED, FAILED, or resolution."""
        current = record
        sent: list[str] = []
        send_by = deadline.minus(self._policy.resolve_reserve_seconds)  # 2207's own deadline

        async def before_send(msgid: str) -> None:
            nonlocal current
            held = current
            current = await self._durably(
                lambda: self._records.record_attempt(
                    held,
                    msgid,
                    self._codes.settlement,
                    psn_no=person.psn_no,
                    insured_area=person.insured_area,
                    mdtrt_id=mdtrt_id,
                ),
                send_by,
            )
            sent.append(msgid)

        data = chain.settlement_input(order, person, mdtrt_id, batch, final=True)
        try:
            output = await self._platform.call(
                self._codes.settlement,
                data,
                operator,
                insured_area=person.insured_area,
                deadline=send_by,
                before_send=before_send,
            )
            charged = chain.charged_from(output, order.total_fen, sent[-1])
        except PlatformRefusal as refusal:  # a definite answer: nothing charged
            raise await self._failed(current, refusal, deadline) from None
        except LostClaim:
            raise InProgress() from None
        except (PlatformUnreachable, chain.AnswerProblem, asyncio.CancelledError) as failure:
            return await self._unknown(current, failure, deadline)
        settle_time = now_micros()  # once: a retried write repeats the same values
        try:
            settled = await self._durably(
                lambda: self._records.move(
                    current,
                    (State.SENDING,),
                    State.SETTLED,
                    lease_until=0,
                    setl_id=charged.setl_id,
                    fund_fen=charged.fund_fen,
                    account_fen=charged.account_fen,
                    cash_fen=charged.cash_fen,
                    other_fen=charged.other_fen,
                    balance_after_fen=charged.balance_after_fen,
                    settle_time=settle_time,
                ),
                deadline,
            )
        except StoreUnavailable:
            log.error("settlement.settled_unrecorded")
            raise Unrecorded() from None
        if settled is None:  # someone resolved it meanwhile (only after our lease ran out)
            return await self._reread(current)
        log.info("settlement.settled", extra={"attempts": len(sent)})
        return settled

    async def _unknown(self, record: Record, failure: BaseException, deadline: Deadline) -> Record:
        """2207's answer is missing or unusable: resolve now if time allows, else say PENDING."""
        if record.state is State.RUNNING:  # no 2207 msgid was recorded, so none was sent
            with contextlib.suppress(Exception):
                await asyncio.shield(self._records.release(record))
            if isinstance(failure, PlatformUnreachable):
                raise _unreachable(failure)
            raise failure
        if isinstance(failure, PlatformUnreachable) and not failure.sent:
            attempts = await self._durably(lambda: self._records.attempts(record), deadline)
            if len(attempts) <= 1:  # the only 2207 never left this process: nothing charged
                await self._durably(lambda: self._records.release(record), deadline)
                raise _unreachable(failure)
        log.warning("settlement.outcome_unknown", extra={"error": type(failure).__name__})
        if isinstance(failure, asyncio.CancelledError):  # the caller went away: resolver's job
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    self._records.move(record, (State.SENDING,), State.SENDING, lease_until=0)
                )
            raise failure
        resolved = await self._resolve_owned(record, deadline)
        if resolved.state is State.SENDING:
            raise Pending(
                timed_out=isinstance(failure, PlatformUnreachable) and failure.timed_out,
                retry_after=max(1.0, self._policy.late_arrival_seconds / 4),
            )
        return resolved

    # -- resolution -----------------------------------------------------------------------------

    async def _resolve_owned(self, record: Record, deadline: Deadline) -> Record:
        """Reverse every 2207 msgid of a SENDING row we hold; release the lease if unresolved."""
        if record.state is State.CANCELLING:
            return await self._cancel_owned(record, deadline, raise_errors=False)
        attempts = await self._durably(lambda: self._records.attempts(record), deadline)
        operator = Operator(record.operator, record.operator)
        resolved = bool(record.psn_no) or not attempts
        now = now_micros()
        late = int(self._policy.late_arrival_seconds * _MICROS)
        reversed_any = False
        for attempt in attempts:
            if not record.psn_no:
                break
            try:
                await self._call(
                    self._codes.reversal,
                    chain.reversal_input(record.psn_no, attempt.msgid, attempt.infno),
                    operator,
                    deadline,
                    record.insured_area or "",
                    retry_safe=True,
                )
                reversed_any = True
            except PlatformRefusal as refusal:
                if _says(refusal, self._policy.reversal_done_messages):
                    continue
                if _says(refusal, self._policy.reversal_not_found_messages):
                    if now - attempt.sent_at < late:
                        resolved = False  # the 2207 may still be on its way to the platform
                    continue
                log.error("settlement.reversal_refused", extra={"infcode": refusal.infcode})
                resolved = False
            except PlatformUnreachable as failure:
                log.warning("settlement.reversal_unreachable", extra={"sent": failure.sent})
                resolved = False
        if resolved:
            at = now_micros()
            done = await self._durably(
                lambda: self._records.move(
                    record, (State.SENDING,), State.REVERSED, lease_until=0, cancel_time=at
                ),
                deadline,
            )
            log.info("settlement.reversed", extra={"charged_before": reversed_any})
            return done if done is not None else await self._reread(record)
        released = await self._durably(
            lambda: self._records.move(record, (State.SENDING,), State.SENDING, lease_until=0),
            deadline,
        )
        return released if released is not None else await self._reread(record)

    async def resolve(self, record: Record, deadline: Deadline = NO_DEADLINE) -> Record:
        """Take an unleased SENDING or CANCELLING row and try to resolve it (background use)."""
        deadline = self._bounded(deadline)
        now = now_micros()
        if not self._free(record, now):
            return record
        taken = await self._take_over(record, deadline, now)
        if taken is None:
            return await self._reread(record)
        return await self._resolve_owned(taken, deadline)

    async def resolve_due(self, min_age_seconds: float, budget_seconds: float | None = None) -> int:
        """Resolve the rows nobody holds that are older than ``min_age_seconds``, each within
        ``budget_seconds`` (``None``: the policy's default); how many."""
        older = now_micros() - int(min_age_seconds * _MICROS)
        done = 0
        mine = (self._replica, self._worker) if self._replica else None
        for record in await self._records.unresolved(older, earlier_self=mine):
            each = NO_DEADLINE if budget_seconds is None else Deadline.after(budget_seconds)
            result = await self.resolve(record, each)
            done += result.state is not record.state
        return done

    # -- GetSettlement --------------------------------------------------------------------------

    async def get(
        self, tenant: str, subject_sha256: str, *, request_id: str = "", setl_id: str = ""
    ) -> Record:
        record = (
            await self._records.get(tenant, request_id)
            if request_id
            else await self._records.by_settlement_id(tenant, setl_id)
        )
        if record is None or record.subject_sha256 != subject_sha256:
            raise NotFound()
        return record

    # -- CancelSettlement -----------------------------------------------------------------------

    async def cancel(
        self,
        tenant: str,
        request_id: str,
        payload_sha256: str,
        subject: Subject,
        subject_sha256: str,
        operator: Operator,
        deadline: Deadline,
        *,
        original_request_id: str = "",
        setl_id: str = "",
    ) -> Record:
        deadline = self._bounded(deadline)
        target = await self.get(
            tenant, subject_sha256, request_id=original_request_id, setl_id=setl_id
        )
        key = await self._records.cancel_key(
            tenant, request_id, CancelKey(payload_sha256, target.request_id)
        )
        if key is not None and key.payload_sha256 != payload_sha256:
            raise KeyReused()
        try:
            return await self._cancel_target(target, deadline)
        finally:
            self._cache.invalidate(subject)

    async def _cancel_target(self, record: Record, deadline: Deadline) -> Record:
        if record.state in (State.FAILED, State.REVERSED, State.CANCELLED):
            return record
        now = now_micros()
        if not self._free(record, now):
            raise InProgress()
        if record.state is State.SETTLED:
            taken = await self._records.move(
                record,
                (State.SETTLED,),
                State.CANCELLING,
                owner=self._worker,
                lease_until=_micros(deadline),
            )
        else:
            taken = await self._take_over(record, deadline, now)
        if taken is None:
            raise InProgress()
        if taken.state is State.RUNNING:  # its worker died before 2207: nothing was charged
            done = await self._records.move(
                taken, (State.RUNNING,), State.REVERSED, lease_until=0, cancel_time=now_micros()
            )
            return done if done is not None else await self._reread(taken)
        if taken.state is State.SENDING:
            return await self._resolve_owned(taken, deadline)
        return await self._cancel_owned(taken, deadline, raise_errors=True)

    async def _cancel_owned(
        self, record: Record, deadline: Deadline, *, raise_errors: bool
    ) -> Record:
        """2208 for a CANCELLING row we hold; a resend after a lost answer is safe."""
        if not (record.setl_id and record.mdtrt_id and record.psn_no):
            raise AssertionError("a settled row lacks setl_id, mdtrt_id or psn_no")  # INTERNAL
        operator = Operator(record.operator, record.operator)
        try:
            await self._call(
                self._codes.settlement_cancel,
                chain.cancellation_input(record.setl_id, record.mdtrt_id, record.psn_no),
                operator,
                deadline,
                record.insured_area or "",
            )
        except PlatformRefusal as refusal:
            if not _says(refusal, self._policy.cancellation_done_messages):
                back = await self._durably(
                    lambda: self._records.move(
                        record, (State.CANCELLING,), State.SETTLED, lease_until=0
                    ),
                    deadline,
                )
                if raise_errors:
                    raise Refused(str(refusal.infcode), refusal.err_msg) from None
                return back if back is not None else await self._reread(record)
        except PlatformUnreachable as failure:
            released = await self._durably(
                lambda: self._records.move(
                    record, (State.CANCELLING,), State.CANCELLING, lease_until=0
                ),
                deadline,
            )
            if raise_errors:
                raise _unreachable(failure) from None
            return released if released is not None else await self._reread(record)
        at = now_micros()
        done = await self._durably(
            lambda: self._records.move(
                record, (State.CANCELLING,), State.CANCELLED, lease_until=0, cancel_time=at
            ),
            deadline,
        )
        log.info("settlement.cancelled")
        return done if done is not None else await self._reread(record)

    # -- helpers --------------------------------------------------------------------------------

    async def _call(
        self,
        infno: str,
        data: Any,
        operator: Operator,
        deadline: Deadline,
        insured_area: str = "",
        *,
        retry_safe: bool = False,
    ) -> Any:
        return await self._platform.call(
            infno,
            data,
            operator,
            insured_area=insured_area,
            deadline=deadline,
            retry_safe=retry_safe,
        )

    async def _durably(self, write: Callable[[], Awaitable[T]], deadline: Deadline) -> T:
        """A state write retried while the store is briefly away, within ``deadline``."""
        return await durably(write, deadline, self._pacing.store)

    async def _failed(
        self, record: Record, refusal: PlatformRefusal, deadline: Deadline
    ) -> Refused:
        """Record a refusal as FAILED (nothing charged) and return the call's error."""
        moved = await self._durably(
            lambda: self._records.move(
                record,
                (State.RUNNING, State.SENDING),
                State.FAILED,
                lease_until=0,
                failure_reason=PLATFORM_REFUSED,
                failure_code=str(refusal.infcode),
                failure_message=refusal.err_msg,
            ),
            deadline,
        )
        if moved is None:
            log.warning("settlement.failed_after_takeover")
        return Refused(str(refusal.infcode), refusal.err_msg)

    def _answer(self, record: Record) -> Record:
        """What a repeat returns: the record, or the first refusal again."""
        if record.state is State.FAILED:
            raise Refused(record.failure_code or "-1", record.failure_message or "(no message)")
        return record

    def _free(self, record: Record, now: int) -> bool:
        """Whether nobody live holds the row: its lease ran out, or its holder was an earlier
        process of this replica (which cannot be running any more)."""
        if not record.leased(now):
            return True
        owner = record.lease_owner
        return bool(self._replica) and owner.startswith(self._replica) and owner != self._worker

    async def _take_over(self, record: Record, deadline: Deadline, now: int) -> Record | None:
        return await self._records.take_over(
            record, self._worker, _micros(deadline), force=record.leased(now)
        )

    async def _reread(self, record: Record) -> Record:
        again = await self._records.get(record.tenant, record.request_id)
        if again is None:  # rows are never deleted while a call runs: a bug, INTERNAL
            raise AssertionError("a settlement row vanished")
        return again

    def _bounded(self, deadline: Deadline) -> Deadline:
        """The caller's deadline, or the policy's default budget when it set none: a row's
        lease must end some time."""
        return deadline.or_after(self._policy.default_budget_seconds)

    def _fresh_record(self, claim: Claim, operator: Operator, deadline: Deadline) -> Record:
        now = now_micros()
        order = claim.order
        return Record(
            tenant=claim.tenant,
            request_id=claim.request_id,
            payload_sha256=claim.payload_sha256,
            subject_sha256=claim.subject_sha256,
            state=State.RUNNING,
            lease_owner=self._worker,
            lease_until=_micros(deadline),
            operator=operator.id,
            created_at=now,
            updated_at=now,
            insurance_type_code=order.insurance_type_code,
            medical_type_code=order.medical_type_code,
            institution_code=self._institution.code,
            institution_name=self._institution.name,
            total_fen=order.total_fen,
        )


def _left(deadline: Deadline) -> float:
    """Seconds left (the machine's deadlines are always bounded: ``Settlements._bounded``)."""
    left = deadline.left()
    return math.inf if left is None else left


def _micros(deadline: Deadline) -> int:
    """A monotonic deadline as a wall-clock lease end in microseconds."""
    return now_micros() + int(_left(deadline) * _MICROS)


def _says(refusal: PlatformRefusal, markers: Sequence[str]) -> bool:
    return any(marker in refusal.err_msg for marker in markers)


def _unreachable(failure: PlatformUnreachable) -> Unreachable:
    return Unreachable(
        f"the insurance platform is unreachable: {failure}",
        timed_out=failure.timed_out,
        retry_after=failure.retry_after,
    )
