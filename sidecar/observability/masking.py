"""The one place that masks personal data before it can reach a log line, an error or a transcript.

Logs, span attributes and status messages never carry identity numbers, names, phone numbers or
tokens (docs/compliance.md, "Data hygiene"). Code that must *mention* such a value (a demo
transcript, an operator-facing hint) shows its mask; the log formatter also passes every line
through :func:`scrub` as a safety net for values that slipped into free text.

The masks keep just enough to recognise a value one already holds, never enough to recover it:

- identity numbers: the first six and the last four characters, ``110105********1234``;
- names: the first character (usually the surname), ``张**``;
- phone numbers: the first three and the last four digits, ``138****5678``;
- tokens (e-voucher tokens, codes): nothing at all, only that there was one.
"""

from __future__ import annotations

import re

MASK = "*"
TOKEN_MASK = "[token]"  # noqa: S105 - the placeholder shown instead of a token

# An 18-character resident ID (17 digits + digit/X), or a 15-digit first-generation one, not
# part of a longer run of digits (msgids, timestamps); an 11-digit mainland mobile number likewise.
_RESIDENT_ID = re.compile(r"(?<![0-9])([1-9][0-9]{16}[0-9Xx]|[1-9][0-9]{14})(?![0-9])")
_MOBILE = re.compile(r"(?<![0-9])(?:\+?86[- ]?)?(1[3-9][0-9]{9})(?![0-9])")


def mask_id(number: str) -> str:
    """``110105********1234``: the first six and last four characters of an ID number.

    Numbers of ten characters or fewer (passports, short permits) keep nothing: four of their
    characters would be too much of them.
    """
    if len(number) <= 10:
        return MASK * 4
    return number[:6] + MASK * (len(number) - 10) + number[-4:]


def mask_name(name: str) -> str:
    """``张**``: the first character and one ``*`` per further character (at least one)."""
    stripped = name.strip()
    if not stripped:
        return MASK
    return stripped[0] + MASK * max(1, len(stripped) - 1)


def mask_phone(phone: str) -> str:
    """``138****5678``: the first three and the last four digits of a phone number."""
    digits = re.sub(r"[^0-9]", "", phone)
    if len(digits) == 13 and digits.startswith("86"):  # +86 country code
        digits = digits[2:]
    if len(digits) < 11:
        return MASK * 4
    return digits[:3] + MASK * (len(digits) - 7) + digits[-4:]


def mask_token(token: str) -> str:
    """A token is a bearer secret: nothing of it is shown, not even its length."""
    del token
    return TOKEN_MASK


def scrub(text: str) -> str:
    """``text`` with every identity number and mobile phone number in it masked.

    A safety net for free text (log lines); names and tokens have no shape to find, so code must
    never write them in the first place.
    """
    text = _RESIDENT_ID.sub(lambda m: mask_id(m.group(1)), text)
    return _MOBILE.sub(lambda m: mask_phone(m.group(1)), text)
