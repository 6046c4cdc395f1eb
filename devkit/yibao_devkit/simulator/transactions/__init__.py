"""The transactions the simulator answers; each module exports its ``TRANSACTIONS``.

=====  ===============================================  =====================================
code   transaction                                      module
=====  ===============================================  =====================================
9001   sign-in (签到)                                    :mod:`.signing`
9002   sign-out (签退)                                   :mod:`.signing`
1101   person information (人员信息获取)                 :mod:`.person`
2001   benefit check (人员待遇享受检查)                  :mod:`.benefits`
2201   outpatient registration (门诊挂号)                :mod:`.outpatient`
2204   fee details upload (门诊费用明细信息上传)         :mod:`.outpatient`
2206   pre-settlement (门诊预结算)                       :mod:`.settlement`
2207   settlement (门诊结算)                             :mod:`.settlement`
2208   settlement cancellation (门诊结算撤销)            :mod:`.settlement`
2501   offsite registration (异地就医备案)               :mod:`.offsite`
2502   its cancellation (备案撤销)                       :mod:`.offsite`
2601   reversal (冲正)                                   :mod:`.reversal`
5206   cumulative information (人员累计信息查询)         :mod:`.cumulative_query`
5302   designated institutions (人员定点信息查询)        :mod:`.offsite`
5304   registration query (备案信息查询)                 :mod:`.offsite`
5307   account statement, regional (个人账户明细查询)    :mod:`.account`
=====  ===============================================  =====================================
"""

from __future__ import annotations

from collections.abc import Mapping

from yibao_devkit.simulator.transactions import (
    account,
    benefits,
    cumulative_query,
    offsite,
    outpatient,
    person,
    reversal,
    settlement,
    signing,
)
from yibao_devkit.simulator.transactions.registry import (
    Handler,
    Transaction,
    TransactionContext,
    TransactionRegistry,
)

__all__ = [
    "Handler",
    "Transaction",
    "TransactionContext",
    "TransactionRegistry",
    "default_registry",
]


def default_registry(aliases: Mapping[str, str] | None = None) -> TransactionRegistry:
    """A fresh registry with every transaction, plus ``aliases`` (variant code -> code).

    For example ``{"2501A": "2501"}`` for a region that uses the suffixed registration code.
    """
    registry = TransactionRegistry(
        (
            *signing.TRANSACTIONS,
            *person.TRANSACTIONS,
            *benefits.TRANSACTIONS,
            *outpatient.TRANSACTIONS,
            *settlement.TRANSACTIONS,
            *reversal.TRANSACTIONS,
            *offsite.TRANSACTIONS,
            *cumulative_query.TRANSACTIONS,
            *account.TRANSACTIONS,
        )
    )
    for code, canonical in (aliases or {}).items():
        registry.alias(code, canonical)
    return registry
