"""The risk service: consumes ``risk.in``, one ``RiskEngine`` per partition (``risk.p<N>``).

Outputs: accepted orders, cancels and amends to ``match.in`` (keyed by market); bucket
states and the outcomes of liquidation orders to ``liquidation.in`` (keyed by account);
answers, margin snapshots and collateral transfers to ``account.events``. Margin
snapshots are coalesced: one per changed account per processed batch (``RiskEngine.flush``).
"""

from __future__ import annotations

from exchange.markets import Market
from exchange.risk import RiskEngine
from schemas import ACCOUNT_EVENTS, LIQUIDATION_IN, MATCH_IN, RISK_IN
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    AmendOrder,
    CancelOrder,
    CollateralTransfer,
    LiquidationTrigger,
    Message,
    NewOrder,
    OrderClosed,
    OrderRejected,
)
from services.runtime.bus import partition_for
from services.runtime.runner import Outbox, ServiceSpec


def route(events: list[Message], outbox: Outbox) -> None:
    for event in events:
        kind = type(event)
        if kind in (NewOrder, CancelOrder, AmendOrder):
            outbox.to(MATCH_IN, event.market, event)
        elif kind is LiquidationTrigger:
            outbox.to(LIQUIDATION_IN, event.account, event)
        elif kind in (OrderClosed, OrderRejected) and event.order_id & LIQUIDATION_ORDER_BIT:
            outbox.to(LIQUIDATION_IN, event.account, event)
        elif kind is CollateralTransfer and event.settle:
            outbox.to(RISK_IN, event.to_account, event)  # to the fund's partition
            outbox.to(ACCOUNT_EVENTS, event.from_account or event.to_account, event)
        else:
            outbox.to(ACCOUNT_EVENTS, event.account if hasattr(event, "account") else event.from_account, event)


def spec(markets: dict[str, Market], insurance_account: str = "insurance", liquidation_fee_ppm: int = 0,
         partitions: int = 1, settings: dict | None = None) -> ServiceSpec:
    """``partitions``: of ``risk.in``, to know which partition holds the insurance fund."""
    fund_partition = partition_for(insurance_account, partitions)

    def make(partition: int) -> RiskEngine:
        return RiskEngine(markets, producer=f"risk.p{partition}", partition=partition,
                          insurance_account=insurance_account, liquidation_fee_ppm=liquidation_fee_ppm,
                          defer_snapshots=True, holds_fund=partition == fund_partition, **(settings or {}))

    return ServiceSpec("risk", RISK_IN, make, route)
