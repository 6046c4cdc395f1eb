"""异地就医备案: submit (2501), list (5304) and cancel (2502) cross-region registrations.

Every call starts with 1101 (the platform knows people by ``psn_no``). Requests arrive validated
(:mod:`sidecar.gateway.offsite_requests`). Submitting or cancelling drops the subject's entries
from the read cache, before the mutating transaction is sent and again once its outcome is known.

Idempotency (docs/api.md, "Idempotency"). Submit and cancel are keyed by ``request_id`` per tenant
and method in the shared store (:mod:`sidecar.gateway.offsite_store`): a repeat with the same
payload gets the first outcome (answer or error) without acting again; another payload is
ALREADY_EXISTS / IDEMPOTENCY_KEY_REUSED; a repeat while the first call runs is ABORTED /
REQUEST_IN_PROGRESS. A call that fails before the mutating transaction is sent (bad input found
after 1101, unknown person, unknown registration, platform unreachable before sending) frees
the key.

Unknown outcomes. When 2501 or 2502 was sent but no valid answer came (timeout, dropped
connection, malformed or unverifiable answer), the sidecar never resends blindly. It asks 5304
for the person's registrations and looks for the one it sent (same person, insurance type,
target area, dates, phone and address, still active: 2501 refuses overlapping active
registrations, so there is at most one):

* found: the submission happened; the call answers with it (and so does every repeat);
* not found: the outcome stays unknown and the call fails with the transport error
  (UNAVAILABLE / PLATFORM_UNAVAILABLE or DEADLINE_EXCEEDED / PLATFORM_TIMEOUT). A repeat with the
  same key resolves again: found answers it; still not found within
  ``unknown_outcome_settle_seconds`` of sending is REQUEST_IN_PROGRESS (a slow platform may still
  perform it); after that window the submission counts as not made and is sent again (and the
  platform's own overlap rule refuses a duplicate should one slip through).

A lost 2502 is resolved the same way: 5304 shows the registration cancelled (done) or still
active, in which case a repeat sends 2502 again — cancelling twice cannot do harm.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import Message

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import OffsiteConfig, TransactionCodes
from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.domain import codes
from sidecar.domain.subjects import Subject
from sidecar.errors import FieldViolation, GatewayError
from sidecar.gateway.cache import ReadCache
from sidecar.gateway.enrollment import EnrollmentQueries, text_of
from sidecar.gateway.offsite_requests import (
    REASONS,
    Cancellation,
    Listing,
    Submission,
    reason_of,
)
from sidecar.gateway.offsite_store import (
    ClaimKind,
    OffsiteStore,
    Outcome,
    RequestKey,
    in_progress,
    store_errors_unavailable,
)
from sidecar.gateway.paging import PageTokens
from sidecar.gateway.platform_errors import translated
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.envelope import BEIJING
from sidecar.platform.errors import PlatformRefusal, PlatformUnreachable

CLOCK_SKEW = 300.0  # seconds of platform clock skew tolerated when matching a lost submission

T = TypeVar("T")


@dataclass(frozen=True)
class _Person:
    psn_no: str
    insured_areas: Mapping[str, str]  # insutype -> insuplc_admdvs


class OffsiteRegistrations:
    """The registration family against the platform, idempotent through the store."""

    def __init__(
        self,
        people: EnrollmentQueries,
        platform: PlatformClient,
        store: OffsiteStore,
        tokens: PageTokens,
        transactions: TransactionCodes,
        config: OffsiteConfig,
        *,
        cache: ReadCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._people = people
        self._platform = platform
        self._store = store
        self._tokens = tokens
        self._codes = transactions  # registration, registration_cancel, registration_query
        self._cache = cache
        self._settle = config.unknown_outcome_settle_seconds
        self._clock = clock

    # -- submit ---------------------------------------------------------------------------------

    async def submit(
        self, request: Submission, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> gateway.SubmitOffsiteRegistrationResponse:
        with store_errors_unavailable():
            await self._store.purge_now_and_then()
            claim = await self._store.claim(request.key)
            if claim.kind is not ClaimKind.REPLAY:
                outcome = await self._settled(
                    request.key,
                    request.subject,
                    lambda: self._submit(request, operator, deadline, claim.kind, claim.sent_at),
                )
            else:
                assert claim.outcome is not None
                outcome = claim.outcome
        return _replayed(outcome, gateway.SubmitOffsiteRegistrationResponse)

    async def _submit(
        self,
        request: Submission,
        operator: Operator,
        deadline: Deadline,
        kind: ClaimKind,
        sent_at: float | None,
    ) -> Outcome:
        person = await self._person(request.subject, operator, deadline)
        area = person.insured_areas.get(request.insurance_type_code)
        if area is not None and area == request.target_division_code:
            raise errors.invalid_request(
                [FieldViolation("target_division_code", "must differ from the insured area")]
            )
        if kind is ClaimKind.RESOLVE:
            with translated():
                found = await self._find_submitted(request, person, operator, deadline, sent_at)
            if found is not None:
                return await self._submitted(request, found, sent_at)
            if sent_at is not None and self._clock() - sent_at < self._settle:
                wait = self._settle - (self._clock() - sent_at)
                raise _Lost(in_progress(max(1.0, wait)))
        await self._store.mark_sent(request.key)
        sent_at = self._clock()
        self._forget(request.subject)
        try:
            output = await self._platform.call(
                self._codes.registration,
                {"refmedin": _refmedin(request, person, area)},
                operator,
                insured_area=area or "",
                deadline=deadline,
            )
        except PlatformRefusal as refusal:
            raise _Final(_translated(refusal)) from None
        except PlatformUnreachable as failure:
            if not failure.sent:
                raise _Unsent(_translated(failure)) from None
            found = await self._try_find(request, person, operator, deadline, sent_at)
            if found is None:
                raise _Lost(_translated(failure)) from None
            return await self._submitted(request, found, sent_at)
        result = output.get("result") if isinstance(output, Mapping) else None
        serial = text_of(result, "trt_dcla_detl_sn")
        if not serial:
            # Sent and acted upon, but the answer names no registration: resolve on a repeat.
            raise _Lost(
                errors.platform_unavailable("the registration answer names no registration")
            )
        registration = _sent_registration(request, serial)
        if text_of(result, "vali_flag") == "0":
            registration.state = gateway.OFFSITE_REGISTRATION_STATE_PENDING_REVIEW
        return await self._submitted(request, registration, sent_at)

    async def _submitted(
        self, request: Submission, registration: gateway.OffsiteRegistration, sent_at: float | None
    ) -> Outcome:
        at = sent_at if sent_at is not None else self._clock()
        await self._store.record_submission(request.key.tenant, registration.registration_id, at)
        registration.submit_time.FromMicroseconds(int(at * 1_000_000))
        answer = gateway.SubmitOffsiteRegistrationResponse(registration=registration)
        return Outcome(answer=answer.SerializeToString(deterministic=True))

    async def _try_find(
        self,
        request: Submission,
        person: _Person,
        operator: Operator,
        deadline: Deadline,
        sent_at: float,
    ) -> gateway.OffsiteRegistration | None:
        """Resolve a lost 2501 now if there is time left; ``None`` when not (yet) found."""
        left = deadline.left()
        if left is not None and left < 0.2:
            return None
        try:
            return await self._find_submitted(request, person, operator, deadline, sent_at)
        except (PlatformRefusal, PlatformUnreachable):
            return None

    async def _find_submitted(
        self,
        request: Submission,
        person: _Person,
        operator: Operator,
        deadline: Deadline,
        sent_at: float | None,
    ) -> gateway.OffsiteRegistration | None:
        rows = await self._query(person, operator, deadline)
        not_before = (
            None
            if sent_at is None
            else dt.datetime.fromtimestamp(sent_at - CLOCK_SKEW, BEIJING).strftime(
                "%Y-%m-%d %H:%M:%S"
            )
        )
        for row in rows:
            made = text_of(row, "crte_time")
            if (
                text_of(row, "vali_flag") != "0"
                and text_of(row, "insutype") == request.insurance_type_code
                and text_of(row, "mdtrtarea_admdvs") == request.target_division_code
                and text_of(row, "begndate")[:10] == request.start.isoformat()
                and text_of(row, "enddate")[:10] == (request.end.isoformat() if request.end else "")
                and text_of(row, "tel") == request.contact_phone
                and text_of(row, "addr") == request.address
                and (not made or not_before is None or made >= not_before)
            ):
                return _registration(row, self._today())
        return None

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(
        self, request: Cancellation, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> gateway.CancelOffsiteRegistrationResponse:
        with store_errors_unavailable():
            await self._store.purge_now_and_then()
            claim = await self._store.claim(request.key)
            if claim.kind is not ClaimKind.REPLAY:
                outcome = await self._settled(
                    request.key, request.subject, lambda: self._cancel(request, operator, deadline)
                )
            else:
                assert claim.outcome is not None
                outcome = claim.outcome
        return _replayed(outcome, gateway.CancelOffsiteRegistrationResponse)

    async def _cancel(
        self, request: Cancellation, operator: Operator, deadline: Deadline
    ) -> Outcome:
        person = await self._person(request.subject, operator, deadline)
        with translated():
            current = await self._registration(request.registration_id, person, operator, deadline)
        if current.state == gateway.OFFSITE_REGISTRATION_STATE_CANCELLED:
            return _cancelled(current)
        await self._store.mark_sent(request.key)
        self._forget(request.subject)
        data = {
            "data": {
                "trt_dcla_detl_sn": request.registration_id,
                "psn_no": person.psn_no,
                "memo": request.reason,
            }
        }
        area = person.insured_areas.get(current.insurance_type_code, "")
        try:
            await self._platform.call(
                self._codes.registration_cancel,
                data,
                operator,
                insured_area=area,
                deadline=deadline,
            )
        except PlatformRefusal as refusal:
            # Cancelled meanwhile (by another channel)? Then it is done all the same.
            after = await self._try_registration(request, person, operator, deadline)
            if after is not None and after.state == _CANCELLED:
                return _cancelled(after)
            raise _Final(_translated(refusal)) from None
        except PlatformUnreachable as failure:
            if not failure.sent:
                raise _Unsent(_translated(failure)) from None
            after = await self._try_registration(request, person, operator, deadline)
            if after is not None and after.state == _CANCELLED:
                return _cancelled(after)
            raise _Lost(_translated(failure)) from None
        current.state = _CANCELLED
        return _cancelled(current)

    async def _try_registration(
        self, request: Cancellation, person: _Person, operator: Operator, deadline: Deadline
    ) -> gateway.OffsiteRegistration | None:
        left = deadline.left()
        if left is not None and left < 0.2:
            return None
        try:
            return await self._registration(request.registration_id, person, operator, deadline)
        except (GatewayError, PlatformRefusal, PlatformUnreachable):
            return None

    async def _registration(
        self, registration_id: str, person: _Person, operator: Operator, deadline: Deadline
    ) -> gateway.OffsiteRegistration:
        for row in await self._query(person, operator, deadline):
            if text_of(row, "trt_dcla_detl_sn") == registration_id:
                return _registration(row, self._today())
        raise errors.GatewayError(
            grpc.StatusCode.NOT_FOUND,
            "REGISTRATION_NOT_FOUND",
            "no cross-region registration with this id for this data subject",
        )

    # -- list -----------------------------------------------------------------------------------

    async def list_registrations(
        self, request: Listing, tenant: str, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> gateway.ListOffsiteRegistrationsResponse:
        person = await self._person(request.subject, operator, deadline)
        with translated():
            rows = await self._query(person, operator, deadline)
        today = self._today()
        keyed = sorted(
            ((_sort_key(row), row) for row in rows if text_of(row, "trt_dcla_detl_sn")),
            key=lambda pair: pair[0],
            reverse=True,
        )
        answer = gateway.ListOffsiteRegistrationsResponse()
        page: list[tuple[tuple[str, str], gateway.OffsiteRegistration]] = []
        more = False
        for key, row in keyed:
            if request.after is not None and key >= request.after:
                continue
            registration = _registration(row, today)
            if request.states and registration.state not in request.states:
                continue
            if len(page) == request.page_size:
                more = True
                break
            page.append((key, registration))
        with store_errors_unavailable():
            times = await self._store.submit_times(tenant, [r.registration_id for _, r in page])
        for _, registration in page:
            at = times.get(registration.registration_id)
            if at is not None:
                registration.submit_time.FromMicroseconds(int(at * 1_000_000))
            answer.registrations.append(registration)
        if more:
            last = page[-1][0]
            answer.next_page_token = self._tokens.issue(
                request.binding, {"t": last[0], "id": last[1]}
            )
        return answer

    # -- shared ---------------------------------------------------------------------------------

    async def _settled(
        self, key: RequestKey, subject: Subject, act: Callable[[], Awaitable[Outcome]]
    ) -> Outcome:
        """Run ``act`` under a claimed key and record what happened to it (never cancelled
        half-way: the bookkeeping after the platform call is shielded)."""
        try:
            outcome = await act()
        except _Unsent as unsent:
            await asyncio.shield(self._store.release(key))
            raise unsent.error from None
        except _Lost as lost:
            await asyncio.shield(self._store.free(key))
            raise lost.error from None
        except _Final as final:
            outcome = Outcome(error=final.error)  # the platform's refusal is the key's outcome
        except BaseException:
            # A refusal before sending (bad input found after 1101, unknown person or
            # registration), an outage of a query, or cancellation: the key is freed; if the
            # mutating transaction may have gone out, a repeat resolves it first.
            await asyncio.shield(self._store.free(key))
            raise
        finally:
            self._forget(subject)  # reads that overlapped the mutation are not kept
        await asyncio.shield(self._store.finish(key, outcome))
        return outcome

    async def _person(self, subject: Subject, operator: Operator, deadline: Deadline) -> _Person:
        with translated(self._people.not_found_markers):
            output = await self._people.person_info(subject, operator, deadline)
            base = output.get("baseinfo") if isinstance(output, Mapping) else None
            psn_no = text_of(base, "psn_no")
            if not psn_no:
                raise PlatformUnreachable("1101 answer has no psn_no", sent=True)
        rows = output.get("insuinfo") if isinstance(output, Mapping) else None
        areas = {
            text_of(row, "insutype"): text_of(row, "insuplc_admdvs")
            for row in (rows if isinstance(rows, list) else [])
        }
        return _Person(psn_no, areas)

    async def _query(self, person: _Person, operator: Operator, deadline: Deadline) -> list[Any]:
        """The person's registrations (5304, retried as a query); raw rows."""
        area = next(iter(person.insured_areas.values()), "")
        output = await self._platform.call(
            self._codes.registration_query,
            {"data": {"psn_no": person.psn_no}},
            operator,
            insured_area=area,
            deadline=deadline,
            retry_safe=True,
        )
        rows = output.get("refmedin") if isinstance(output, Mapping) else None
        if isinstance(rows, Mapping):
            rows = [rows]
        if not isinstance(rows, list):
            raise PlatformUnreachable("5304 answer has no refmedin", sent=True)
        return [row for row in rows if isinstance(row, Mapping)]

    def _forget(self, subject: Subject) -> None:
        if self._cache is not None:
            self._cache.invalidate(subject)

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self._clock(), BEIJING).date()


_CANCELLED: Final = gateway.OFFSITE_REGISTRATION_STATE_CANCELLED


class _Final(Exception):
    """The platform refused the mutating transaction: that is the key's outcome."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.reason)
        self.error = error


class _Unsent(_Final):  # (subclasses: caught before _Final)
    """The mutating transaction did not reach the platform: the key is released."""


class _Lost(_Final):
    """Sent, but the outcome is unknown: the key stays, a repeat resolves it."""


def _translated(failure: PlatformRefusal | PlatformUnreachable) -> GatewayError:
    try:
        with translated():
            raise failure
    except GatewayError as error:
        return error
    raise AssertionError("unreachable: translated() turns platform failures into GatewayError")


def _replayed(outcome: Outcome, kind: type[T]) -> T:
    if outcome.error is not None:
        raise outcome.error
    assert outcome.answer is not None
    answer = kind()
    assert isinstance(answer, Message)
    answer.ParseFromString(outcome.answer)
    return answer


def _cancelled(registration: gateway.OffsiteRegistration) -> Outcome:
    answer = gateway.CancelOffsiteRegistrationResponse(registration=registration)
    return Outcome(answer=answer.SerializeToString(deterministic=True))


def _refmedin(request: Submission, person: _Person, area: str | None) -> dict[str, Any]:
    code, wording = REASONS[request.reason]
    data: dict[str, Any] = {
        "psn_no": person.psn_no,
        "insutype": request.insurance_type_code,
        "tel": request.contact_phone,
        "addr": request.address,
        "insu_optins": area or "",
        "mdtrtarea_admdvs": request.target_division_code,
        "begndate": request.start.isoformat(),
        "refl_type": code,
        "refl_rea": wording,
    }
    if request.end is not None:
        data["enddate"] = request.end.isoformat()
    if request.hospital_code:
        data["reflin_medins_no"] = request.hospital_code
        data["reflin_medins_name"] = request.hospital_name
    if request.diagnosis_code:
        data["diag_code"] = request.diagnosis_code
        data["diag_name"] = request.diagnosis_name
    return data


def _sent_registration(request: Submission, serial: str) -> gateway.OffsiteRegistration:
    registration = gateway.OffsiteRegistration(
        registration_id=serial,
        state=gateway.OFFSITE_REGISTRATION_STATE_ACTIVE,
        insurance_type=codes.insurance_type(request.insurance_type_code),
        insurance_type_code=request.insurance_type_code,
        target_division_code=request.target_division_code,
        start_date=request.start.isoformat(),
        end_date=request.end.isoformat() if request.end else "",
        reason=gateway.OffsiteReason.ValueType(request.reason),
        contact_phone=request.contact_phone,
        address=request.address,
    )
    if request.hospital_code:
        registration.hospital.code = request.hospital_code
        registration.hospital.name = request.hospital_name
    if request.diagnosis_code:
        registration.diagnosis.code = request.diagnosis_code
        registration.diagnosis.name = request.diagnosis_name
    return registration


def _registration(row: Any, today: dt.date) -> gateway.OffsiteRegistration:
    """A 5304 row in the contract's terms."""
    flag = text_of(row, "vali_flag")
    end = text_of(row, "enddate")[:10]
    if flag == "0":
        state = gateway.OFFSITE_REGISTRATION_STATE_CANCELLED
    elif flag == "1":
        expired = bool(end) and end < today.isoformat()
        state = (
            gateway.OFFSITE_REGISTRATION_STATE_EXPIRED
            if expired
            else gateway.OFFSITE_REGISTRATION_STATE_ACTIVE
        )
    else:
        state = gateway.OFFSITE_REGISTRATION_STATE_UNSPECIFIED
    code = text_of(row, "insutype")
    reason = reason_of(text_of(row, "refl_type"), text_of(row, "refl_rea"))
    registration = gateway.OffsiteRegistration(
        registration_id=text_of(row, "trt_dcla_detl_sn"),
        state=state,
        insurance_type=codes.insurance_type(code),
        insurance_type_code=code,
        target_division_code=text_of(row, "mdtrtarea_admdvs"),
        start_date=text_of(row, "begndate")[:10],
        end_date=end,
        reason=reason,
        contact_phone=text_of(row, "tel"),
        address=text_of(row, "addr"),
    )
    if text_of(row, "reflin_medins_no"):
        registration.hospital.code = text_of(row, "reflin_medins_no")
        registration.hospital.name = text_of(row, "reflin_medins_name")
    if text_of(row, "diag_code"):
        registration.diagnosis.code = text_of(row, "diag_code")
        registration.diagnosis.name = text_of(row, "diag_name")
    return registration


def _sort_key(row: Any) -> tuple[str, str]:
    return (text_of(row, "crte_time"), text_of(row, "trt_dcla_detl_sn"))
