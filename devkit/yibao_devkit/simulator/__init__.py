"""A stand-in for the national medical-insurance platform, for tests, demos and integrators.

It speaks the platform's envelope protocol over HTTPS with mutual TLS and answers from a
deterministic synthetic population, keeps the state of visits, settlements, accounts and
registrations, and can misbehave on purpose (:mod:`~yibao_devkit.simulator.faults`). Start with
:func:`running_simulator` in tests or the ``yibao-sidecar simulate`` command for demos.
"""

from yibao_devkit.simulator.app import (
    DEFAULT_DIVISION,
    DEFAULT_INSTITUTION_CODE,
    DEFAULT_INSTITUTION_NAME,
    ENDPOINT_PATH,
    PlatformSimulator,
)
from yibao_devkit.simulator.cards import card_sn
from yibao_devkit.simulator.errors import SIGN_IN_INVALID, Refusal
from yibao_devkit.simulator.faults import Fault, FaultKind, Faults
from yibao_devkit.simulator.ledger import EntryKind, Ledger, LedgerEntry
from yibao_devkit.simulator.population import Examples, Person, Population
from yibao_devkit.simulator.server import Listening, RunningSimulator, run, running_simulator, serve

__all__ = [
    "DEFAULT_DIVISION",
    "DEFAULT_INSTITUTION_CODE",
    "DEFAULT_INSTITUTION_NAME",
    "ENDPOINT_PATH",
    "SIGN_IN_INVALID",
    "EntryKind",
    "Examples",
    "Fault",
    "FaultKind",
    "Faults",
    "Ledger",
    "LedgerEntry",
    "Listening",
    "Person",
    "PlatformSimulator",
    "Population",
    "Refusal",
    "RunningSimulator",
    "card_sn",
    "run",
    "running_simulator",
    "serve",
]
