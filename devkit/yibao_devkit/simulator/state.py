"""Everything the simulated platform remembers between requests.

Handlers receive this through their context instead of reaching for globals. Each store is a
small module of its own with one job; this class only gathers them. All of them are plain
in-memory structures touched from the event loop's thread only, so no locking is needed:
handlers are synchronous and run to completion one at a time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from yibao_devkit.simulator.accounts import Accounts
from yibao_devkit.simulator.confirmation import SecondConfirmation
from yibao_devkit.simulator.cumulative import Cumulative
from yibao_devkit.simulator.ectokens import EcTokens
from yibao_devkit.simulator.ledger import Ledger
from yibao_devkit.simulator.population import Population
from yibao_devkit.simulator.registrations import Registrations
from yibao_devkit.simulator.serials import Serials
from yibao_devkit.simulator.settlements import Settlements
from yibao_devkit.simulator.signin import SignInBook
from yibao_devkit.simulator.visits import Visits


@dataclass(frozen=True)
class PlatformState:
    """The platform's data: who is insured, who is signed in, and what they did."""

    population: Population
    sign_ins: SignInBook
    institution_code: str
    institution_name: str
    accounts: Accounts
    cumulative: Cumulative
    serials: Serials
    ec_tokens: EcTokens = field(default_factory=EcTokens)
    registrations: Registrations = field(default_factory=Registrations)
    visits: Visits = field(default_factory=Visits)
    settlements: Settlements = field(default_factory=Settlements)
    ledger: Ledger = field(default_factory=Ledger)
    confirmation: SecondConfirmation = field(default_factory=SecondConfirmation)

    @classmethod
    def fresh(
        cls,
        population: Population,
        *,
        division: str,
        institution_code: str,
        institution_name: str,
        opened: dt.date,
    ) -> PlatformState:
        """The state of a platform that has just started serving ``population``."""
        return cls(
            population=population,
            sign_ins=SignInBook(division),
            institution_code=institution_code,
            institution_name=institution_name,
            accounts=Accounts(population),
            cumulative=Cumulative(population, opened),
            serials=Serials(division),
        )
