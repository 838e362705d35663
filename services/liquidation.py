"""The liquidation service: consumes ``liquidation.in``, one engine per partition.

Outputs (``schemas.topics.ROUTES``): cancels, liquidation orders and backstop/ADL transfers to ``match.in`` (keyed by
market), so every change of position comes from a matching fill; outcomes to ``risk.in``
and ``account.events`` (keyed by account).

The service cannot see risk's accounts: risk sends the fund's balance and the ranked ADL
candidates of its partition with a bucket state near settlement (``StateView``). Known
limitation: with several risk partitions, only the bankrupt account's partition is seen.
"""

from __future__ import annotations

from exchange.liquidation import LiquidationEngine, LiquidationPolicy
from exchange.markets import Market
from schemas import LIQUIDATION_IN
from schemas.topics import LIQUIDATION, ROUTES
from services.runtime.runner import ServiceSpec


def spec(markets: dict[str, Market], insurance_account: str = "insurance",
         policy: LiquidationPolicy | None = None) -> ServiceSpec:
    """``policy``: the venue profile's (``exchange.venues``)."""
    def make(partition: int) -> LiquidationEngine:
        return LiquidationEngine(markets, None, producer=f"liquidation.p{partition}",
                                 insurance_account=insurance_account, partition=partition, policy=policy)

    return ServiceSpec("liquidation", LIQUIDATION_IN, make, ROUTES[LIQUIDATION], LIQUIDATION)
