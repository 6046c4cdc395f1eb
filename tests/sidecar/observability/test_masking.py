"""The one masking module: what each mask keeps, and that scrubbing free text finds what it must."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sidecar.domain.validation import resident_id_check_char
from sidecar.observability import masking
from yibao_devkit.simulator.population import Population

DIGITS = st.text("0123456789", min_size=1, max_size=1)


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    first = draw(st.sampled_from("123456789"))
    body = draw(st.text("0123456789", min_size=16, max_size=16))
    return first + body + resident_id_check_char(first + body)


mobiles = st.builds(
    lambda second, rest: "1" + second + rest,
    st.sampled_from("3456789"),
    st.text("0123456789", min_size=9, max_size=9),
)


def test_the_documented_shapes() -> None:
    assert masking.mask_id("110105194912310021") == "110105********0021"
    assert masking.mask_name("张三") == "张*"
    assert masking.mask_name("欧阳娜娜") == "欧***"
    assert masking.mask_phone("13812345678") == "138****5678"
    assert masking.mask_phone("+86 138-1234-5678") == "138****5678"
    assert masking.mask_token("ECT1234567890abcdef") == "[token]"
    assert masking.mask_id("E1234567") == "****"  # short numbers keep nothing
    assert masking.mask_name("  ") == "*"


@given(resident_ids())
def test_an_id_mask_keeps_six_and_four_and_never_the_birth_date(number: str) -> None:
    masked = masking.mask_id(number)
    assert len(masked) == len(number)
    assert masked[:6] == number[:6] and masked[-4:] == number[-4:]
    assert masked[6:14] == "********"  # the birth date is gone
    assert number not in masked


@given(st.text(min_size=1, max_size=50).filter(lambda t: t.strip() and "*" not in t))
def test_a_name_mask_keeps_only_the_first_character(name: str) -> None:
    masked = masking.mask_name(name)
    assert masked[0] == name.strip()[0]
    assert set(masked[1:]) == {"*"}
    if len(name.strip()) > 1:
        assert name.strip() not in masked


@given(mobiles)
def test_a_phone_mask_hides_the_middle(phone: str) -> None:
    masked = masking.mask_phone(phone)
    assert masked == phone[:3] + "****" + phone[-4:]


@given(st.text(max_size=64))
def test_a_token_mask_shows_nothing_of_it(token: str) -> None:
    assert masking.mask_token(token) == masking.TOKEN_MASK


GLUE = " ,:;=\"'()[]{}abcX张三\n"


@given(
    st.text(GLUE, max_size=8),
    st.text(GLUE, min_size=1, max_size=8),
    st.text(GLUE, max_size=8),
    resident_ids(),
    mobiles,
)
def test_scrub_masks_ids_and_phones_inside_free_text(
    before: str, between: str, after: str, number: str, phone: str
) -> None:
    text = f"{before}{number}{between}{phone}{after}"
    scrubbed = masking.scrub(text)
    assert number not in scrubbed and phone not in scrubbed
    assert masking.mask_id(number) in scrubbed and masking.mask_phone(phone) in scrubbed


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=200))
def test_scrub_leaves_text_without_digits_alone(text: str) -> None:
    assert masking.scrub(text) == text


def test_scrub_leaves_protocol_identifiers_alone() -> None:
    """Msgids, trace ids, latencies and timestamps are not personal data; they stay readable."""
    for text in (
        "H44030500001202611260815120001",  # a msgid: institution + time + sequence
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "latency_ms 12.5",
        "2026-11-26T08:15:12.123+00:00",
        "1764144912123456",  # microseconds since the epoch (16 digits)
    ):
        assert masking.scrub(text) == text


def test_every_synthetic_id_is_found_by_scrub() -> None:
    for person in Population.generate(42).people:
        assert person.certno not in masking.scrub(f"subject={person.certno}")


def test_the_log_formatter_scrubs_every_string_it_writes() -> None:
    import io
    import json
    import logging

    from sidecar.observability import logs

    person = Population.generate(42).people[0]
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("aiosqlite").level)
    logs.configure("DEBUG", stream)
    try:
        logging.getLogger("sidecar.test").warning(
            "lookup of %s failed", person.certno, extra={"note": f"tel 13812345678 {person.certno}"}
        )
        logging.getLogger("aiosqlite").debug("executing INSERT ... %s", person.certno)
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        logging.getLogger("aiosqlite").setLevel(saved[2])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # the store driver's debug line (SQL parameters) is not written
    entry = json.loads(lines[0])
    assert entry["event"] == f"lookup of {masking.mask_id(person.certno)} failed"
    assert entry["note"] == f"tel 138****5678 {masking.mask_id(person.certno)}"
