"""The liquidation service: consumes ``liquidation.in``, one engine per partition.

Outputs: cancels, liquidation orders and backstop/ADL transfers to ``match.in`` (keyed by
market), so every change of position comes from a matching fill; outcomes to ``risk.in``
and ``account.events`` (keyed by account).

Known limitation: the service cannot see the insurance fund's balance or the ADL ranking,
which live in the risk partitions, so it settles every bankrupt bucket by backstop
(``BackstopOnly``); ADL runs in the in-process core.
"""

from __future__ import annotations

from exchange.liquidation import BackstopOnly, LiquidationEngine
from exchange.markets import Market
from schemas import ACCOUNT_EVENTS, LIQUIDATION_IN, MATCH_IN, RISK_IN
from schemas.events import CancelAllOrders, LiquidationOutcome, Message, NewOrder, PositionTransfer
from services.runtime import Outbox, ServiceSpec


def route(events: list[Message], outbox: Outbox) -> None:
    for event in events:
        kind = type(event)
        if kind in (NewOrder, CancelAllOrders, PositionTransfer):
            outbox.to(MATCH_IN, event.market, event)
        elif kind is LiquidationOutcome:
            outbox.to(RISK_IN, event.account, event)
            outbox.to(ACCOUNT_EVENTS, event.account, event)


def spec(markets: dict[str, Market], insurance_account: str = "insurance") -> ServiceSpec:
    def make(partition: int) -> LiquidationEngine:
        return LiquidationEngine(markets, BackstopOnly(), producer=f"liquidation.p{partition}",
                                 insurance_account=insurance_account, partition=partition)

    return ServiceSpec("liquidation", LIQUIDATION_IN, make, route)
