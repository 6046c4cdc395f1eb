"""Everything the simulated platform remembers between requests.

Handlers receive this through their context instead of reaching for globals; later transactions
(registrations, settlements) add their stores here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sidecar.simulator.population import Population
from sidecar.simulator.signin import SignInBook


@dataclass(frozen=True)
class PlatformState:
    """The platform's data: who is insured, and who is signed in."""

    population: Population
    sign_ins: SignInBook
