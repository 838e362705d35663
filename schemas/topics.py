"""Topic names and the one tagged union each topic carries (DESIGN.md, "Events and topics")."""

from __future__ import annotations

from typing import Union

from schemas.events import (
    BBO,
    AdjustIsolatedMargin,
    AmendOrder,
    ApiKey,
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
    OrderTriggered,
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
STATE = "state"  # snapshots of the services' partitions (schemas.state), compacted
KEYS = "keys"  # API keys, compacted

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
    OrderTriggered,
    Fill,
    CommandRejected,
    MarkPrice,
    Funding,
    LiquidationOutcome,
    CollateralTransfer,
]

# match.in, keyed by market: accepted orders, cancels, amends, transfers, and the marks
# conditional orders watch.
MatchIn = Union[NewOrder, CancelOrder, AmendOrder, CancelAllOrders, PositionTransfer, MarkPrice]

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
    OrderTriggered,
    Fill,
    MarginSnapshot,
    LiquidationOutcome,
    CollateralTransfer,
]

Deadletter = DeadLetter

# keys, keyed by API key.
Keys = ApiKey

TOPICS: dict[str, object] = {
    RISK_IN: RiskIn,
    MATCH_IN: MatchIn,
    LIQUIDATION_IN: LiquidationIn,
    MARKET_DATA: MarketData,
    ACCOUNT_EVENTS: AccountEvents,
    DEADLETTER: Deadletter,
    KEYS: Keys,
}

KEYED_TOPICS = (RISK_IN, MATCH_IN, LIQUIDATION_IN, MARKET_DATA, ACCOUNT_EVENTS, STATE)
COMPACTED_TOPICS = (STATE, KEYS)  # the newest record of each key is what counts


def topic_partitions(partitions: int) -> dict[str, int]:
    """Every topic with its partition count: the keyed topics get ``partitions``, the
    dead letters and the keys one."""
    return {**{topic: partitions for topic in KEYED_TOPICS}, DEADLETTER: 1, KEYS: 1}


# ------------------------------------------------------------------ who may say what
# Producer ids are names: a service's engines are ``match.<MARKET>`` / ``match.p<N>``,
# ``risk.p<N>`` (and ``risk.p<N>.margin``), ``liquidation.p<N>``, ``oracle``; dead letters
# ``<service>.p<N>.dlq``. Anyone else is a client, and a client may not take a service's
# name. Each reader refuses (dead-letters, or a client skips) a message whose type its
# topic carries but whose producer may not send it. The bus is an internal network: this
# stops mistakes and confused clients, not an attacker who can write to the topics (that
# is what Kafka ACLs per principal are for; docs/services.md).

MATCHING, RISK, LIQUIDATION, ORACLE = "match.", "risk.", "liquidation.", "oracle"
SERVICE_PRODUCERS = (MATCHING, RISK, LIQUIDATION, ORACLE)
CLIENT = "client"  # any producer that is not a service's


def producer_kind(producer: str) -> str:
    """``match.``, ``risk.``, ``liquidation.``, ``oracle`` or ``client``."""
    if producer == ORACLE:
        return ORACLE
    for prefix in (MATCHING, RISK, LIQUIDATION):
        if producer.startswith(prefix):
            return prefix
    return CLIENT


def _commands() -> dict[type, tuple[str, ...]]:
    return {kind: (CLIENT,) for kind in (Deposit, Withdraw, PlaceOrder, CancelOrder, AmendOrder, SetMarginMode,
                                         SetLeverage, AdjustIsolatedMargin)}


SENDERS: dict[str, dict[type, tuple[str, ...]]] = {
    RISK_IN: {
        **_commands(),
        **{kind: (MATCHING,) for kind in (OrderAccepted, OrderRejected, OrderAmended, OrderClosed, OrderTriggered,
                                          Fill, CommandRejected)},
        MarkPrice: (ORACLE,), Funding: (ORACLE,),
        LiquidationOutcome: (LIQUIDATION,),
        CollateralTransfer: (RISK,),
    },
    MATCH_IN: {NewOrder: (RISK, LIQUIDATION), CancelOrder: (RISK,), AmendOrder: (RISK,),
               CancelAllOrders: (LIQUIDATION,), PositionTransfer: (LIQUIDATION,), MarkPrice: (ORACLE,)},
    LIQUIDATION_IN: {LiquidationTrigger: (RISK,), OrderClosed: (MATCHING,), OrderRejected: (MATCHING,)},
    MARKET_DATA: {Trade: (MATCHING,), BookDelta: (MATCHING,), BookSnapshot: (MATCHING,), BBO: (MATCHING,),
                  MarkPrice: (ORACLE,), Funding: (ORACLE,)},
    ACCOUNT_EVENTS: {
        CommandAccepted: (RISK,), CommandRejected: (RISK, MATCHING),
        OrderAccepted: (MATCHING,), OrderRejected: (RISK, MATCHING), OrderAmended: (MATCHING,),
        OrderClosed: (MATCHING,), OrderTriggered: (MATCHING,), Fill: (MATCHING,), MarginSnapshot: (RISK,),
        LiquidationOutcome: (LIQUIDATION,), CollateralTransfer: (RISK,),
    },
    KEYS: {ApiKey: (CLIENT,)},
}


def refusal(topic: str, message) -> str | None:
    """Why ``message`` may not come on ``topic`` from its producer, or None if it may."""
    allowed = SENDERS.get(topic, {}).get(type(message))
    if allowed is None:
        return None  # the codec already refuses types the topic does not carry
    kind = producer_kind(message.producer)
    if kind in allowed:
        return None
    who = "a client" if kind == CLIENT else f"{kind.rstrip('.')} ({message.producer!r})"
    may = " or ".join("clients" if a == CLIENT else a.rstrip(".") for a in allowed)
    return f"{type(message).__name__} on {topic} may come only from {may}, not from {who}"
