"""The synthetic population: deterministic, and every identifier valid by independent checks."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from yibao_devkit.simulator.divisions import BY_CODE
from yibao_devkit.simulator.population import Person, Population


def gb11643_check_char(first17: str) -> str:
    """Computed from the standard's definition (weights 2^(17-i) mod 11, check = (12 - S) mod 11),
    independently of the table in sidecar.domain.validation."""
    total = sum(int(digit) * pow(2, 17 - i, 11) for i, digit in enumerate(first17))
    check = (12 - total % 11) % 11
    return "X" if check == 10 else str(check)


def assert_person_consistent(person: Person) -> None:
    certno = person.certno
    assert len(certno) == 18
    assert certno[:17].isdigit()
    assert certno[17] == gb11643_check_char(certno[:17])
    assert certno[:6] in BY_CODE
    assert dt.date(1950, 1, 1) <= person.brdy <= dt.date(2005, 12, 31)
    assert certno[6:14] == person.brdy.strftime("%Y%m%d")
    assert person.gend == ("1" if int(certno[16]) % 2 else "2")
    assert person.psn_cert_type == "01"
    assert person.insuplc_admdvs == BY_CODE[certno[:6]].insured_area
    if person.psn_no is None:
        assert person.insuinfo == ()
    else:
        assert len(person.psn_no) == 30
        assert person.psn_no.isdigit()
        assert person.insuinfo
    for row in person.insuinfo:
        assert row.balc >= 0
        assert row.insutype in {"310", "320", "330", "390"}
        assert row.psn_insu_stas in {"1", "2", "4"}
        assert row.insuplc_admdvs == person.insuplc_admdvs
        assert row.psn_insu_date > person.brdy
        if row.psn_insu_stas == "1":
            assert row.paus_insu_date is None
        else:
            assert row.paus_insu_date is not None
            assert row.paus_insu_date > row.psn_insu_date


def test_same_seed_gives_identical_people() -> None:
    assert Population.generate(7).people == Population.generate(7).people


def test_different_seeds_give_different_people() -> None:
    assert Population.generate(7).people != Population.generate(8).people


def test_every_person_is_consistent() -> None:
    population = Population.generate(42)
    assert len(population.people) == 200
    for person in population.people:
        assert_person_consistent(person)


def test_identifiers_are_unique() -> None:
    people = Population.generate(42).people
    assert len({p.certno for p in people}) == len(people)
    psn_nos = [p.psn_no for p in people if p.psn_no is not None]
    assert len(set(psn_nos)) == len(psn_nos)


def test_some_are_not_enrolled_and_the_mix_is_realistic() -> None:
    people = Population.generate(42, 1000).people
    share_unknown = sum(not p.enrolled for p in people) / len(people)
    assert 0.05 < share_unknown < 0.15
    insutypes = Counter(row.insutype for p in people for row in p.insuinfo)
    assert insutypes["310"] > insutypes["390"] > 0
    assert insutypes["320"] > 0 and insutypes["330"] > 0
    statuses = Counter(row.psn_insu_stas for p in people for row in p.insuinfo)
    assert statuses["1"] > statuses["2"] > 0 and statuses["4"] > 0
    assert Counter(p.gend for p in people).keys() == {"1", "2"}


def test_examples_are_one_of_each_kind() -> None:
    population = Population.generate(42)
    examples = population.examples()
    assert examples.employee.enrolled
    assert examples.employee.insuinfo[0].insutype == "310"
    assert examples.employee.insuinfo[0].psn_insu_stas == "1"
    assert examples.resident.insuinfo[0].insutype == "390"
    assert examples.suspended.insuinfo[0].psn_insu_stas == "2"
    assert not examples.unknown.enrolled
    assert population.find(examples.unknown.certno) is examples.unknown


def test_find_by_certno_and_psn_no() -> None:
    population = Population.generate(42)
    person = population.examples().employee
    assert population.find(person.certno) is person
    assert person.psn_no is not None
    assert population.find_psn_no(person.psn_no) is person
    assert population.find("110105199001011234") is None


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**64), size=st.integers(min_value=0, max_value=60))
def test_any_seed_is_deterministic_and_valid(seed: int, size: int) -> None:
    population = Population.generate(seed, size)
    assert len(population.people) == size
    assert population.people == Population.generate(seed, size).people
    for person in population.people:
        assert_person_consistent(person)
