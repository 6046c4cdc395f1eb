"""Offsite-treatment registrations (异地就医备案) made by 2501 and cancelled by 2502.

Kept per person in registration order so that listing (5304) and the overlap check that 2501
applies touch only that person's few records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass
class Registration:
    """One registration; ``details`` are the sender's descriptive fields, echoed by 5304."""

    trt_dcla_detl_sn: str
    psn_no: str
    insutype: str
    mdtrtarea_admdvs: str
    begndate: dt.date
    enddate: dt.date | None  # open-ended when absent
    details: Mapping[str, str]
    registered_at: dt.datetime
    msgid: str
    cancelled_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.cancelled_at is None

    def overlaps(self, begin: dt.date, end: dt.date | None) -> bool:
        """Whether ``[begin, end]`` (``None``: open-ended) shares a day with this registration."""
        starts_before_other_ends = end is None or self.begndate <= end
        ends_after_other_starts = self.enddate is None or begin <= self.enddate
        return starts_before_other_ends and ends_after_other_starts


class Registrations:
    """Registrations by serial and per person."""

    def __init__(self) -> None:
        self._by_serial: dict[str, Registration] = {}
        self._by_person: dict[str, list[Registration]] = {}

    def add(self, registration: Registration) -> None:
        self._by_serial[registration.trt_dcla_detl_sn] = registration
        self._by_person.setdefault(registration.psn_no, []).append(registration)

    def get(self, serial: str) -> Registration | None:
        return self._by_serial.get(serial)

    def of(self, psn_no: str) -> Sequence[Registration]:
        """The person's registrations, oldest first, cancelled ones included."""
        return tuple(self._by_person.get(psn_no, ()))

    def overlapping(self, psn_no: str, begin: dt.date, end: dt.date | None) -> Registration | None:
        """An active registration of the person that overlaps ``[begin, end]``, if any."""
        for registration in self._by_person.get(psn_no, ()):
            if registration.active and registration.overlaps(begin, end):
                return registration
        return None
