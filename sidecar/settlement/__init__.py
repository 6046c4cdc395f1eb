"""电子凭证结算: the settlement state machine and its tables in the shared store.

``records`` owns the tables (``MIGRATIONS``) and their conditional writes, ``chain`` the
platform's inputs and answers, ``machine`` the states and who resolves what (docs/settlement.md),
``resolver`` the background task that resolves what no call is waiting for.
"""

from sidecar.settlement.records import MIGRATIONS

__all__ = ["MIGRATIONS"]
