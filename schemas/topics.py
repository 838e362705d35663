"""Topic names and the one tagged union each topic carries (DESIGN.md, "Events and topics")."""

from __future__ import annotations

from typing import Union

from schemas.events import (
    BBO,
    AdjustIsolatedMargin,
    AmendOrder,
    BookDelta,
    BookSnapshot,
    CancelAllOrders,
    CancelOrder,
    CollateralTransfer,
    CommandAccepted,
    CommandRejected,
    DeadLetter,
    Deposit,
    Fill,
    Funding,
    LiquidationOutcome,
    LiquidationTrigger,
    MarginSnapshot,
    MarkPrice,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
    PlaceOrder,
    PositionTransfer,
    SetLeverage,
    SetMarginMode,
    Trade,
    Withdraw,
)

RISK_IN = "risk.in"
MATCH_IN = "match.in"
LIQUIDATION_IN = "liquidation.in"
MARKET_DATA = "market.data"
ACCOUNT_EVENTS = "account.events"
DEADLETTER = "deadletter"

# risk.in, keyed by account: commands, order outcomes and fills, marks, funding,
# liquidation outcomes.
RiskIn = Union[
    Deposit,
    Withdraw,
    PlaceOrder,
    CancelOrder,
    AmendOrder,
    SetMarginMode,
    SetLeverage,
    AdjustIsolatedMargin,
    OrderAccepted,
    OrderRejected,
    OrderAmended,
    OrderClosed,
    Fill,
    CommandRejected,
    MarkPrice,
    Funding,
    LiquidationOutcome,
    CollateralTransfer,
]

# match.in, keyed by market: accepted orders, cancels, amends, transfers.
MatchIn = Union[NewOrder, CancelOrder, AmendOrder, CancelAllOrders, PositionTransfer]

# liquidation.in, keyed by account: bucket states from risk, and the outcomes of the
# liquidation engine's own orders, forwarded by risk.
LiquidationIn = Union[LiquidationTrigger, OrderClosed, OrderRejected]

# market.data, keyed by market.
MarketData = Union[Trade, BookDelta, BookSnapshot, BBO, MarkPrice, Funding]

# account.events, keyed by account.
AccountEvents = Union[
    CommandAccepted,
    CommandRejected,
    OrderAccepted,
    OrderRejected,
    OrderAmended,
    OrderClosed,
    Fill,
    MarginSnapshot,
    LiquidationOutcome,
    CollateralTransfer,
]

Deadletter = DeadLetter

TOPICS: dict[str, object] = {
    RISK_IN: RiskIn,
    MATCH_IN: MatchIn,
    LIQUIDATION_IN: LiquidationIn,
    MARKET_DATA: MarketData,
    ACCOUNT_EVENTS: AccountEvents,
    DEADLETTER: Deadletter,
}

KEYED_TOPICS = (RISK_IN, MATCH_IN, LIQUIDATION_IN, MARKET_DATA, ACCOUNT_EVENTS)


def topic_partitions(partitions: int) -> dict[str, int]:
    """Every topic with its partition count: the keyed topics get ``partitions``, the
    dead letters one."""
    return {**{topic: partitions for topic in KEYED_TOPICS}, DEADLETTER: 1}
