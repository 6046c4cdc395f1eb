"""Social-security cards (社会保障卡): card number and card identification code (卡识别码).

The card number printed on a third-generation card is the holder's social-security number, which
is their resident ID; the 32-character ``card_sn`` identifies the physical card. The simulator
derives ``card_sn`` from the resident ID with a keyed hash so that every person has exactly one
stable card without the population having to store it: tests call :func:`card_sn` to read it.
"""

from __future__ import annotations

import hashlib

_ISSUER = "D15600000"  # country code 156 + a fixed issuer block: 9 characters


def card_sn(certno: str, insured_area: str) -> str:
    """The 32-character card identification code of the card issued to ``certno``.

    Insured area (6) + issuer block (9) + 17 digits derived from the resident ID.
    """
    digest = hashlib.sha256(f"card:{certno}".encode()).hexdigest()
    digits = str(int(digest, 16))[-17:].rjust(17, "0")
    return f"{insured_area}{_ISSUER}{digits}"
