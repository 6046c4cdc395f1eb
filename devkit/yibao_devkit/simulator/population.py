"""A deterministic synthetic population: the people the simulated platform knows about.

Everything derives from one ``random.Random(seed)``, never the global generator, and from a
fixed reference date rather than today, so the same seed yields the same people on every machine
and every day: tests and demos can name a person by seed and index.

About one person in ten has a valid resident ID but no record on the platform. They model the
public ID space: the sidecar can validate their ID locally, yet the platform refuses them in 1101.
The first four people are fixed kinds (see :meth:`Population.examples`) so every population big
enough for a demo has one of each.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from yibao_devkit.simulator import names
from yibao_devkit.simulator.divisions import DIVISIONS, Division
from yibao_devkit.simulator.ids import resident_id_check_char

REFERENCE_DATE = dt.date(2025, 1, 1)  # "now" for generation: ages, retirement, insurance dates
BIRTH_FIRST = dt.date(1950, 1, 1)
BIRTH_LAST = dt.date(2005, 12, 31)
EMPLOYEE_SCHEME_START = dt.date(1999, 1, 1)  # 职工基本医疗保险 nationwide from 1999
RESIDENT_SCHEME_START = dt.date(2008, 1, 1)

# Insurance types (险种类型).
INSUTYPE_EMPLOYEE = "310"  # 职工基本医疗保险
INSUTYPE_CIVIL_SERVANT = "320"  # 公务员医疗补助
INSUTYPE_LARGE_EXPENSE = "330"  # 大额医疗费用补助
INSUTYPE_RESIDENT = "390"  # 城乡居民基本医疗保险

# Person types (人员类别).
PSN_TYPE_IN_SERVICE = "11"  # 在职
PSN_TYPE_RETIRED = "12"  # 退休
PSN_TYPE_URBAN_RESIDENT = "1501"  # 城乡居民（成年）

# Insurance status (人员参保状态).
STAS_NORMAL = "1"  # 正常参保
STAS_SUSPENDED = "2"  # 暂停参保
STAS_TERMINATED = "4"  # 终止参保

CERT_TYPE_RESIDENT_ID = "01"  # 居民身份证
GEND_MALE = "1"
GEND_FEMALE = "2"
NATY_HAN = "01"
_MINORITY_NATY = ("02", "03", "04", "05", "06", "07", "08")  # 蒙古 回 藏 维吾尔 苗 彝 壮 (GB 3304)

# Illustrative person-identity categories; the real dictionary (人员身份类别) is regional.
_IDENTITIES = (("2201", "低保对象"), ("2301", "特困供养人员"))

NOT_ENROLLED_SHARE = 0.10
RESIDENT_SHARE = 0.30  # of the enrolled
CIVIL_SERVANT_SHARE = 0.10  # of employees
LARGE_EXPENSE_SHARE = 0.40  # of employees
SUSPENDED_SHARE = 0.08
TERMINATED_SHARE = 0.07
IDENTITY_SHARE = 0.03


@dataclass(frozen=True)
class Enrollment:
    """One insurance enrolment, a row of 1101's ``insuinfo``; ``balc`` is in integer fen."""

    insutype: str
    psn_type: str
    psn_insu_stas: str
    psn_insu_date: dt.date
    paus_insu_date: dt.date | None
    cvlserv_flag: str
    insuplc_admdvs: str
    emp_name: str
    balc: int


@dataclass(frozen=True)
class Identity:
    """A special identity (a row of 1101's ``idetinfo``), e.g. a subsistence-allowance holder."""

    psn_idet_type: str
    psn_type_lv: str
    memo: str
    begntime: dt.datetime
    endtime: dt.datetime | None


@dataclass(frozen=True)
class Person:
    """A synthetic person; ``psn_no`` is ``None`` when the platform has no record of them."""

    psn_no: str | None
    psn_cert_type: str
    certno: str
    psn_name: str
    gend: str
    naty: str
    brdy: dt.date
    insuplc_admdvs: str
    insuinfo: tuple[Enrollment, ...]
    idetinfo: tuple[Identity, ...]

    @property
    def enrolled(self) -> bool:
        """Whether the platform has a record (and therefore answers 1101 for this person)."""
        return self.psn_no is not None

    def age_on(self, day: dt.date) -> int:
        """Age in whole years on ``day``."""
        had_birthday = (day.month, day.day) >= (self.brdy.month, self.brdy.day)
        return day.year - self.brdy.year - (0 if had_birthday else 1)


class Kind(Enum):
    """What sort of record a generated person gets."""

    EMPLOYEE = "employee"
    RESIDENT = "resident"
    NOT_ENROLLED = "not enrolled"


@dataclass(frozen=True)
class Examples:
    """People a demo or an integrator's first test can use, one of each interesting kind."""

    employee: Person  # enrolled in 310, status normal, with an account balance
    resident: Person  # enrolled in 390, status normal
    suspended: Person  # enrolled, status suspended
    unknown: Person  # a valid resident ID the platform has no record of


class Population:
    """The people of one simulated platform, searchable by resident ID and person number."""

    def __init__(self, seed: int, people: tuple[Person, ...]) -> None:
        self.seed = seed
        self.people = people
        self._by_certno: Mapping[str, Person] = MappingProxyType({p.certno: p for p in people})
        self._by_psn_no: Mapping[str, Person] = MappingProxyType(
            {p.psn_no: p for p in people if p.psn_no is not None}
        )

    @classmethod
    def generate(cls, seed: int, size: int = 200) -> Population:
        """``size`` people derived from ``seed`` alone; needs ``size >= 4`` for :meth:`examples`."""
        if size < 0:
            raise ValueError("size must not be negative")
        rng = random.Random(seed)  # noqa: S311 - synthetic data that must be reproducible
        return cls(seed, _Generator(rng).people(size))

    def find(self, certno: str) -> Person | None:
        """The person with this resident ID, enrolled or not, or ``None``."""
        return self._by_certno.get(certno)

    def find_psn_no(self, psn_no: str) -> Person | None:
        """The enrolled person with this platform person number, or ``None``."""
        return self._by_psn_no.get(psn_no)

    def examples(self) -> Examples:
        """The four fixed-kind people at the start of every population of at least four."""
        if len(self.people) < 4:
            raise ValueError("examples need a population of at least 4 people")
        employee, resident, suspended, unknown = self.people[:4]
        return Examples(employee=employee, resident=resident, suspended=suspended, unknown=unknown)


# The first people have fixed kinds and statuses so that Population.examples always exists.
_FIXED_SLOTS: tuple[tuple[Kind, str], ...] = (
    (Kind.EMPLOYEE, STAS_NORMAL),
    (Kind.RESIDENT, STAS_NORMAL),
    (Kind.EMPLOYEE, STAS_SUSPENDED),
    (Kind.NOT_ENROLLED, STAS_NORMAL),
)


class _Generator:
    """Draws people from one random stream; owns the sets that keep identifiers unique."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._certnos: set[str] = set()
        self._psn_nos: set[str] = set()

    def people(self, size: int) -> tuple[Person, ...]:
        return tuple(self._person(index) for index in range(size))

    def _person(self, index: int) -> Person:
        rng = self._rng
        if index < len(_FIXED_SLOTS):
            kind, status = _FIXED_SLOTS[index]
        else:
            kind, status = self._draw_kind(), self._draw_status()
        division = rng.choice(DIVISIONS)
        male = rng.random() < 0.5
        brdy = BIRTH_FIRST + dt.timedelta(days=rng.randrange((BIRTH_LAST - BIRTH_FIRST).days + 1))
        certno = self._certno(division, brdy, male=male)
        name = names.person_name(rng, male=male)
        naty = rng.choice(_MINORITY_NATY) if rng.random() < 0.08 else NATY_HAN
        enrolments: tuple[Enrollment, ...] = ()
        identities: tuple[Identity, ...] = ()
        psn_no: str | None = None
        if kind is not Kind.NOT_ENROLLED:
            psn_no = self._psn_no(division)
            if kind is Kind.EMPLOYEE:
                enrolments = self._employee(division, brdy, status, male=male)
            else:
                enrolments = self._resident(division, brdy, status)
            if rng.random() < IDENTITY_SHARE:
                identities = (self._identity(brdy),)
        return Person(
            psn_no=psn_no,
            psn_cert_type=CERT_TYPE_RESIDENT_ID,
            certno=certno,
            psn_name=name,
            gend=GEND_MALE if male else GEND_FEMALE,
            naty=naty,
            brdy=brdy,
            insuplc_admdvs=division.insured_area,
            insuinfo=enrolments,
            idetinfo=identities,
        )

    def _draw_kind(self) -> Kind:
        if self._rng.random() < NOT_ENROLLED_SHARE:
            return Kind.NOT_ENROLLED
        return Kind.RESIDENT if self._rng.random() < RESIDENT_SHARE else Kind.EMPLOYEE

    def _draw_status(self) -> str:
        draw = self._rng.random()
        if draw < SUSPENDED_SHARE:
            return STAS_SUSPENDED
        if draw < SUSPENDED_SHARE + TERMINATED_SHARE:
            return STAS_TERMINATED
        return STAS_NORMAL

    def _certno(self, division: Division, brdy: dt.date, *, male: bool) -> str:
        """A GB 11643 resident ID: address, birth date, sequence (odd = male), check char."""
        while True:
            sequence = self._rng.randrange(500) * 2 + (1 if male else 0)
            first17 = f"{division.code}{brdy:%Y%m%d}{sequence:03d}"
            certno = first17 + resident_id_check_char(first17)
            if certno not in self._certnos:
                self._certnos.add(certno)
                return certno

    def _psn_no(self, division: Division) -> str:
        """A 30-digit platform person number: insured area (6) + 24 random digits."""
        while True:
            psn_no = division.insured_area + "".join(
                self._rng.choice("0123456789") for _ in range(24)
            )
            if psn_no not in self._psn_nos:
                self._psn_nos.add(psn_no)
                return psn_no

    def _dates(self, earliest: dt.date, status: str) -> tuple[dt.date, dt.date | None]:
        """An enrolment date after ``earliest``, and a pause date when the status needs one."""
        latest = REFERENCE_DATE - dt.timedelta(days=60)
        earliest = min(earliest, latest)
        start = earliest + dt.timedelta(days=self._rng.randrange((latest - earliest).days + 1))
        if status == STAS_NORMAL:
            return start, None
        pause_from = start + dt.timedelta(days=30)
        span = (REFERENCE_DATE - pause_from).days
        return start, pause_from + dt.timedelta(days=self._rng.randrange(max(span, 1)))

    def _employee(
        self, division: Division, brdy: dt.date, status: str, *, male: bool
    ) -> tuple[Enrollment, ...]:
        rng = self._rng
        adult = _add_years(brdy, 18)
        start, pause = self._dates(max(adult, EMPLOYEE_SCHEME_START), status)
        retirement_age = 60 if male else 55
        retired = _add_years(brdy, retirement_age) <= REFERENCE_DATE
        civil_servant = rng.random() < CIVIL_SERVANT_SHARE
        employer = (
            names.public_body_name(rng, division.name)
            if civil_servant
            else names.company_name(rng, division.city)
        )
        ceiling = 2_000_000 if retired else 800_000  # fen: up to 20,000 / 8,000 yuan
        balance = 0 if rng.random() < 0.05 else rng.randrange(ceiling)

        def row(insutype: str, balc: int) -> Enrollment:
            return Enrollment(
                insutype=insutype,
                psn_type=PSN_TYPE_RETIRED if retired else PSN_TYPE_IN_SERVICE,
                psn_insu_stas=status,
                psn_insu_date=start,
                paus_insu_date=pause,
                cvlserv_flag="1" if civil_servant else "0",
                insuplc_admdvs=division.insured_area,
                emp_name=employer,
                balc=balc,
            )

        rows = [row(INSUTYPE_EMPLOYEE, balance)]
        if civil_servant:
            rows.append(row(INSUTYPE_CIVIL_SERVANT, 0))
        if rng.random() < LARGE_EXPENSE_SHARE:
            rows.append(row(INSUTYPE_LARGE_EXPENSE, 0))
        return tuple(rows)

    def _resident(self, division: Division, brdy: dt.date, status: str) -> tuple[Enrollment, ...]:
        start, pause = self._dates(max(brdy, RESIDENT_SCHEME_START), status)
        return (
            Enrollment(
                insutype=INSUTYPE_RESIDENT,
                psn_type=PSN_TYPE_URBAN_RESIDENT,
                psn_insu_stas=status,
                psn_insu_date=start,
                paus_insu_date=pause,
                cvlserv_flag="0",
                insuplc_admdvs=division.insured_area,
                emp_name="",
                balc=0,  # resident insurance has no personal account
            ),
        )

    def _identity(self, brdy: dt.date) -> Identity:
        code, memo = self._rng.choice(_IDENTITIES)
        earliest = max(_add_years(brdy, 18), dt.date(2015, 1, 1))
        start, _ = self._dates(earliest, STAS_NORMAL)
        return Identity(
            psn_idet_type=code,
            psn_type_lv="",
            memo=memo,
            begntime=dt.datetime.combine(start, dt.time()),
            endtime=None,
        )


def _add_years(day: dt.date, years: int) -> dt.date:
    """The same calendar day ``years`` later (29 February becomes 1 March)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, month=3, day=1)
