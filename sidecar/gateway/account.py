"""医保账户查询: 1101 balances, 5206 cumulative figures and the regional statement, newest first.

The platform identifies people by ``psn_no``, which only 1101 reveals, so every page is 1101 (the
balances), then 5206 (the year's cumulative figures through the current month, or December of an
earlier year), then one or two calls of the region's statement query (``5307`` in the
simulator; ``platform.transactions.account_statement``, empty where the region has none).

Paging. The statement query pages **oldest first** by ``page_num``/``page_size`` and reports the
``total`` of entries in the period; the contract pages **newest first**. The first page reads the
total and remembers it as the *anchor*: entries are only ever appended (newer ones at the end),
so the oldest-first positions below the anchor never move, and page *k* is the slice
``[anchor - offset - size, anchor - offset)`` of that fixed prefix. Entries booked after the first
page therefore never shift or repeat later pages; the caller sees them by starting again. The
token (see :mod:`sidecar.gateway.paging`) carries ``anchor`` and ``offset``, bound to the
subject, tenant and filters; a statement that shrank below its anchor is refused as a stale token.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sidecar import errors
from sidecar._proto.yibao.gateway.v1 import gateway_pb2 as gateway
from sidecar.config import TransactionCodes
from sidecar.deadlines import NO_DEADLINE, Deadline
from sidecar.domain import codes, validation
from sidecar.domain.codes import INSURANCE_TYPE_CODES
from sidecar.domain.subjects import Subject, check_subject
from sidecar.errors import FieldViolation
from sidecar.gateway.enrollment import EnrollmentQueries, text_of, yuan_to_fen
from sidecar.gateway.paging import BadPageToken, PageTokens, binding_of, page_size_of
from sidecar.gateway.platform_errors import translated
from sidecar.platform.client import Operator, PlatformClient
from sidecar.platform.errors import PlatformUnreachable

METHOD: Final = "GetAccount"
STATEMENT_PAGE_MAX: Final = 100  # the most a statement query returns per page
ACCOUNT_INSUTYPE: Final = "310"  # personal accounts belong to employee basic insurance
FIRST_YEAR: Final = 1998  # employee basic insurance (and its personal account) began in 1998

# Regional statement codes (chg_type) as the contract's kinds; unknown codes stay UNSPECIFIED.
STATEMENT_KINDS: Final[Mapping[str, int]] = {
    "01": gateway.STATEMENT_ENTRY_KIND_SETTLEMENT_PAYMENT,  # 结算支出
    "02": gateway.STATEMENT_ENTRY_KIND_SETTLEMENT_REFUND,  # 结算撤销退回
    "03": gateway.STATEMENT_ENTRY_KIND_SETTLEMENT_REFUND,  # 冲正退回
}

# Names for cumulative categories whose rows carry no name (5206 answers codes only).
CUMULATIVE_NAMES: Final[Mapping[str, str]] = {
    "C001": "起付线累计",
    "C002": "统筹基金支付累计",
    "C003": "医疗费用总额累计",
    "C004": "个人账户支付累计",
}


@dataclass(frozen=True)
class StatementPosition:
    anchor: int  # entries in the period when the first page was read
    offset: int  # entries already returned, newest first


@dataclass(frozen=True)
class AccountQuery:
    """A validated GetAccount request."""

    subject: Subject
    insurance_type_code: str  # "": every insurance type
    year: int
    start: dt.date
    end: dt.date
    page_size: int
    position: StatementPosition | None
    binding: bytes  # what the next page token is bound to
    through_month: int  # 5206 sums January through this month (December of past years)


def account_query(
    request: gateway.GetAccountRequest, *, tokens: PageTokens, tenant: str, today: dt.date
) -> AccountQuery:
    """The validated query, or INVALID_ARGUMENT naming every bad field (``today`` in CST)."""
    subject, violations = check_subject(request.subject, request.HasField("subject"))
    insurance = ""
    if request.insurance_type:
        insurance = INSURANCE_TYPE_CODES.get(request.insurance_type, "")
        if not insurance:
            violations.append(FieldViolation("insurance_type", "must be a known insurance type"))
    year = request.cumulative_year or today.year
    if not FIRST_YEAR <= year <= today.year:
        violations.append(
            FieldViolation("cumulative_year", f"must be 0 or a year from {FIRST_YEAR} to now")
        )
    start = _date(request.statement_start_date, dt.date(today.year, 1, 1))
    end = _date(request.statement_end_date, today)
    if start is None:
        violations.append(FieldViolation("statement_start_date", "must be a date YYYY-MM-DD"))
    if end is None:
        violations.append(FieldViolation("statement_end_date", "must be a date YYYY-MM-DD"))
    elif start is not None and end < start:
        violations.append(
            FieldViolation("statement_end_date", "must not be before statement_start_date")
        )
    size = page_size_of(request.page_size)
    if size is None:
        violations.append(FieldViolation("page_size", "must not be negative"))
    binding = binding_of(METHOD, tenant, request)
    position: StatementPosition | None = None
    if request.page_token:
        try:
            opened = tokens.open(request.page_token, binding)
            anchor, offset = opened["anchor"], opened["offset"]
            if not (isinstance(anchor, int) and isinstance(offset, int)):
                raise BadPageToken("malformed")
            if not 0 < offset < anchor:
                raise BadPageToken("malformed")
            position = StatementPosition(anchor, offset)
        except (BadPageToken, KeyError):
            violations.append(
                FieldViolation("page_token", "is not a token of this query (or has expired)")
            )
    if violations or subject is None or start is None or end is None or size is None:
        raise errors.invalid_request(violations)
    return AccountQuery(
        subject=subject,
        insurance_type_code=insurance,
        year=year,
        start=start,
        end=end,
        page_size=size,
        position=position,
        binding=binding,
        through_month=today.month if year == today.year else 12,
    )


class AccountQueries:
    """Answers GetAccount from 1101, 5206 and the regional statement query."""

    def __init__(
        self,
        people: EnrollmentQueries,
        platform: PlatformClient,
        tokens: PageTokens,
        transactions: TransactionCodes,
    ) -> None:
        self._people = people
        self._platform = platform
        self._tokens = tokens
        self._cumulative = transactions.cumulative_info
        self._statement = transactions.account_statement  # "": the region has none

    async def get(
        self, query: AccountQuery, operator: Operator, deadline: Deadline = NO_DEADLINE
    ) -> gateway.GetAccountResponse:
        with translated(self._people.not_found_markers):
            person = await self._people.person_info(query.subject, operator, deadline)
            base = person.get("baseinfo") if isinstance(person, Mapping) else None
            psn_no = text_of(base, "psn_no")
            if not psn_no:
                raise PlatformUnreachable("1101 answer has no psn_no", sent=True)
        insuinfo = person.get("insuinfo") if isinstance(person, Mapping) else None
        rows = (
            [row for row in insuinfo if isinstance(row, Mapping)]
            if isinstance(insuinfo, list)
            else []
        )
        area = text_of(rows[0], "insuplc_admdvs") if rows else ""
        answer = gateway.GetAccountResponse()
        with translated():
            for row in rows:
                code = text_of(row, "insutype")
                if _wanted(query, code) and row.get("balc") not in (None, ""):
                    balance = answer.balances.add()
                    balance.insurance_type_code = code
                    balance.insurance_type = codes.insurance_type(code)
                    balance.balance_fen = yuan_to_fen(row["balc"])
            await self._figures(query, psn_no, area, operator, deadline, answer)
            if self._statement:
                answer.statement_available = True
                if _wanted(query, ACCOUNT_INSUTYPE):
                    await self._page(query, psn_no, area, operator, deadline, answer)
        return answer

    async def _figures(
        self,
        query: AccountQuery,
        psn_no: str,
        area: str,
        operator: Operator,
        deadline: Deadline,
        answer: gateway.GetAccountResponse,
    ) -> None:
        cum_ym = f"{query.year:04d}{query.through_month:02d}"
        data = {"data": {"psn_no": psn_no, "cum_ym": cum_ym}}
        output = await self._platform.call(
            self._cumulative,
            data,
            operator,
            insured_area=area,
            deadline=deadline,
            retry_safe=True,
        )
        rows = output.get("cuminfo") if isinstance(output, Mapping) else None
        if not isinstance(rows, list):
            raise PlatformUnreachable("5206 answer has no cuminfo", sent=True)
        for row in rows:
            code = text_of(row, "insutype")
            if not _wanted(query, code):
                continue
            figure = answer.cumulative_figures.add()
            figure.insurance_type_code = code
            figure.insurance_type = codes.insurance_type(code)
            year = text_of(row, "year")
            figure.year = int(year) if year.isdigit() else query.year
            figure.category_code = text_of(row, "cum_type_code")
            figure.category_name = text_of(row, "cum_type_name") or CUMULATIVE_NAMES.get(
                figure.category_code, ""
            )
            figure.amount_fen = yuan_to_fen(row.get("cum", 0))

    async def _page(
        self,
        query: AccountQuery,
        psn_no: str,
        area: str,
        operator: Operator,
        deadline: Deadline,
        answer: gateway.GetAccountResponse,
    ) -> None:
        """One page of the statement, newest first, and the token of the next one."""
        size = query.page_size
        if query.position is None:
            first, total = await self._fetch_page(
                psn_no, area, query, 1, STATEMENT_PAGE_MAX, operator, deadline
            )
            anchor, offset = total, 0
            low, high = max(0, anchor - size), anchor
            if high <= STATEMENT_PAGE_MAX:
                entries = first[low:high]
                if len(entries) != high - low:
                    raise PlatformUnreachable("statement page shorter than its total", sent=True)
            else:
                entries = await self._fetch(
                    psn_no, area, query, low, high, anchor, operator, deadline
                )
        else:
            anchor, offset = query.position.anchor, query.position.offset
            high = anchor - offset
            low = max(0, high - size)
            entries = await self._fetch(psn_no, area, query, low, high, anchor, operator, deadline)
        for row in reversed(entries):
            _entry(answer.statement_entries.add(), row)
        if low > 0:
            answer.next_page_token = self._tokens.issue(
                query.binding, {"anchor": anchor, "offset": offset + (high - low)}
            )

    async def _fetch(
        self,
        psn_no: str,
        area: str,
        query: AccountQuery,
        low: int,
        high: int,
        anchor: int,
        operator: Operator,
        deadline: Deadline,
    ) -> list[Any]:
        """Entries ``[low, high)`` (oldest-first positions) in as few statement calls as fit."""
        if high <= low:
            return []
        size = next(
            (s for s in range(high - low, STATEMENT_PAGE_MAX + 1) if low // s == (high - 1) // s),
            STATEMENT_PAGE_MAX,
        )
        found: list[Any] = []
        for page in range(low // size, (high - 1) // size + 1):
            rows, total = await self._fetch_page(
                psn_no, area, query, page + 1, size, operator, deadline
            )
            if total < anchor:
                raise errors.invalid_request(
                    [FieldViolation("page_token", "the statement changed; start from page one")]
                )
            first = page * size
            found.extend(rows[max(low, first) - first : min(high, first + size) - first])
        if len(found) != high - low:
            raise PlatformUnreachable("statement page shorter than its total", sent=True)
        return found

    async def _fetch_page(
        self,
        psn_no: str,
        area: str,
        query: AccountQuery,
        page_num: int,
        page_size: int,
        operator: Operator,
        deadline: Deadline,
    ) -> tuple[list[Any], int]:
        data = {
            "data": {
                "psn_no": psn_no,
                "begntime": f"{query.start.isoformat()} 00:00:00",
                # the statement period is [begntime, endtime): the day after the last day
                "endtime": f"{(query.end + dt.timedelta(days=1)).isoformat()} 00:00:00",
                "page_num": page_num,
                "page_size": page_size,
            }
        }
        output = await self._platform.call(
            self._statement,
            data,
            operator,
            insured_area=area,
            deadline=deadline,
            retry_safe=True,
        )
        summary = output.get("data") if isinstance(output, Mapping) else None
        rows = output.get("acctdetl") if isinstance(output, Mapping) else None
        total = summary.get("total") if isinstance(summary, Mapping) else None
        if isinstance(total, str) and total.isdigit():
            total = int(total)
        if not isinstance(rows, list) or not isinstance(total, int) or isinstance(total, bool):
            raise PlatformUnreachable("statement answer has no acctdetl or total", sent=True)
        if total < 0 or len(rows) > page_size:
            raise PlatformUnreachable("statement answer is inconsistent", sent=True)
        return rows, total


def _entry(entry: gateway.StatementEntry, row: Any) -> None:
    entry.entry_date = text_of(row, "chg_time")[:10]
    entry.kind_code = text_of(row, "chg_type")
    entry.kind = gateway.StatementEntryKind.ValueType(STATEMENT_KINDS.get(entry.kind_code, 0))
    entry.amount_fen = yuan_to_fen(row.get("chg_amt") if isinstance(row, Mapping) else None)
    after = row.get("aft_balc") if isinstance(row, Mapping) else None
    if after not in (None, ""):
        entry.balance_after_fen = yuan_to_fen(after)
    entry.description = text_of(row, "chg_type_name")
    entry.settlement_id = text_of(row, "setl_id")
    entry.insurance_type_code = text_of(row, "insutype") or ACCOUNT_INSUTYPE
    entry.insurance_type = codes.insurance_type(entry.insurance_type_code)


def _wanted(query: AccountQuery, insutype: str) -> bool:
    return not query.insurance_type_code or insutype == query.insurance_type_code


def _date(value: str, default: dt.date) -> dt.date | None:
    if not value:
        return default
    if validation.check_iso_date(value):
        return None
    return dt.date.fromisoformat(value)
