"""Topic names and the one tagged union each topic carries (DESIGN.md, "Events and topics")."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from schemas.events import (
    BBO,
    LIQUIDATION_ORDER_BIT,
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
VENUE = "venue"  # the venue's identity: its first record (services.runtime.venue), compacted
CLAIMS = "claims"  # who writes under each name, at which epoch (services.runtime.claims), compacted

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
COMPACTED_TOPICS = (STATE, KEYS, VENUE, CLAIMS)  # the newest record of each key is what counts


def topic_partitions(partitions: int) -> dict[str, int]:
    """Every topic with its partition count: the keyed topics get ``partitions``, the
    dead letters, the keys, the venue's identity and the claims one."""
    return {**{topic: partitions for topic in KEYED_TOPICS}, DEADLETTER: 1, KEYS: 1, VENUE: 1, CLAIMS: 1}


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
# The services' producers (but the oracle's) count from 0, or number by their input offset:
# one more than SERVICE_SEQ_STEP past the last seen (or past 0, for the first) is no step a
# service takes, and every reader refuses it (a forged jump of 2**50 under matching's name
# cut risk off from matching; a MarginSnapshot at 2**62 showed 1e9 to the gateway for good).
SERVICE_SEQ_STEP = 2**32
SERVICES_COUNTING = (MATCHING, RISK, LIQUIDATION)


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


# ------------------------------------------------------------------ where outputs go
# One table of the topology: for each service, each type it emits and where that goes.
# Every service's outbox (services.runtime.runner.Outbox.route), the in-process exchange
# (exchange.core) and the tests' oracle double read it; tests/test_schemas.py checks that
# every route is one that SENDERS lets its readers accept.


def _market(event) -> tuple[str, ...]:
    return (event.market,)


def _account(event) -> tuple[str, ...]:
    return (event.account,)


def _fill_accounts(event: Fill) -> tuple[str, ...]:
    return (event.taker_account, event.maker_account)


def _to_account(event: CollateralTransfer) -> tuple[str, ...]:
    return (event.to_account,)


def _transfer_party(event: CollateralTransfer) -> tuple[str, ...]:
    """A fund movement settled on another partition is shown under the trader it came from
    (or the fund, when it came from no trader); an unsettled one under its payer."""
    return (event.from_account or event.to_account,) if event.settle else (event.from_account,)


def _liquidation_order(event) -> bool:
    return bool(event.order_id & LIQUIDATION_ORDER_BIT)


def _traders_order(event) -> bool:
    return not event.order_id & LIQUIDATION_ORDER_BIT


def _settled(event: CollateralTransfer) -> bool:
    return event.settle


def trade_of(fill: Fill) -> Trade:
    """The public print of a fill, as ``market.data`` carries it."""
    return Trade(fill.producer, fill.seq, fill.market, fill.trade_id, fill.price, fill.size, fill.taker_side,
                 fill.ts)


@dataclass(frozen=True, slots=True)
class Route:
    """One destination of an output: ``topic``, keyed by each of ``keys(event)`` (one copy per
    partition they reach), or every partition of the topic when ``keys`` is None; only when
    ``when(event)`` holds; published as ``convert(event)`` when given. ``forwards``: the
    service whose message this passes on unchanged (under that service's producer id)."""

    topic: str
    keys: Callable[[Any], tuple[str, ...]] | None
    when: Callable[[Any], bool] | None = None
    convert: Callable[[Any], Any] | None = None
    forwards: str | None = None


def _to(topic: str, keys: Callable[[Any], tuple[str, ...]] | None, *kinds: type,
        when: Callable[[Any], bool] | None = None) -> dict[type, tuple[Route, ...]]:
    return {kind: (Route(topic, keys, when),) for kind in kinds}


_ORDER_OUTCOMES = (OrderAccepted, OrderRejected, OrderAmended, OrderClosed, OrderTriggered, CommandRejected)

ROUTES: dict[str, dict[type, tuple[Route, ...]]] = {
    RISK: {
        **_to(MATCH_IN, _market, NewOrder, CancelOrder, AmendOrder),
        **_to(LIQUIDATION_IN, _account, LiquidationTrigger),
        **_to(ACCOUNT_EVENTS, _account, CommandAccepted, CommandRejected, MarginSnapshot),
        # matching's outcome of a liquidation order is passed on to the liquidation engine; risk's
        # own refusal of a trader's order goes to the trader
        OrderClosed: (Route(LIQUIDATION_IN, _account, _liquidation_order, forwards=MATCHING),),
        OrderRejected: (Route(LIQUIDATION_IN, _account, _liquidation_order, forwards=MATCHING),
                        Route(ACCOUNT_EVENTS, _account, _traders_order)),
        CollateralTransfer: (Route(RISK_IN, _to_account, _settled),  # to the fund's partition
                             Route(ACCOUNT_EVENTS, _transfer_party)),
    },
    MATCHING: {
        **{kind: (Route(RISK_IN, _account), Route(ACCOUNT_EVENTS, _account)) for kind in _ORDER_OUTCOMES},
        Fill: (Route(RISK_IN, _fill_accounts), Route(ACCOUNT_EVENTS, _fill_accounts),
               Route(MARKET_DATA, _market, convert=trade_of)),
        **_to(MARKET_DATA, _market, BookDelta, BBO, BookSnapshot),
    },
    LIQUIDATION: {
        **_to(MATCH_IN, _market, NewOrder, CancelAllOrders, PositionTransfer),
        LiquidationOutcome: (Route(RISK_IN, _account), Route(ACCOUNT_EVENTS, _account)),
    },
    ORACLE: {
        # every risk partition holds positions in every market; conditional orders in matching watch the mark
        MarkPrice: (Route(RISK_IN, None), Route(MATCH_IN, _market), Route(MARKET_DATA, _market)),
        Funding: (Route(RISK_IN, None), Route(MARKET_DATA, _market)),
    },
}


class Unroutable(LookupError):
    """A service emitted a type the routes table has no destination for."""


def destinations(service: str, event) -> list[tuple[Route, Any]]:
    """Where ``event``, emitted by ``service`` (``RISK``, ``MATCHING``, ...), goes: each route
    that applies to it, with the message it publishes there."""
    routes = ROUTES[service].get(type(event))
    if routes is None:
        raise Unroutable(f"{type(event).__name__} from {service.rstrip('.')} has no route (schemas.topics.ROUTES)")
    return [(route, event if route.convert is None else route.convert(event))
            for route in routes if route.when is None or route.when(event)]


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
