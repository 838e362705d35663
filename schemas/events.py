"""Every command and event perpsim carries, as msgspec Structs.

Units (DESIGN.md, "Numbers are integers"):
- prices are integer ticks of their market (``price``, ``*_price``); 0 means "none";
- sizes are integer lots of their market (``size``, ``filled``, ``remaining``), signed
  (long > 0) only where the name says ``signed``;
- money is integer micro units (1e-6) of the quote asset (``amount``, ``*_margin``,
  ``equity``, ``balance`` ...);
- rates are integers in parts per billion (``*_ppb``);
- ``ts`` is nanoseconds since the epoch of the simulation clock, passed in, never read.

Every message starts with ``producer`` and ``seq``: the id of whoever produced it and
that producer's own sequence number, so a consumer can drop a redelivered copy.

Wire compatibility: structs are encoded as arrays (``array_like``) with the class name as
tag. A new field is appended at the end with a default; fields are never reordered,
removed or retyped, and a change that cannot follow these rules bumps
``schemas.codec.SCHEMA_VERSION``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from schemas.enums import (
    CloseReason,
    Condition,
    IncomeKind,
    LiquidationStage,
    Liquidity,
    MarginMode,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)

# ------------------------------------------------------------------------ ranges
# Every integer field is checked on decode against the range the codec and the engines
# can carry, so an out-of-range number is refused (dead-lettered) before any state
# changes. Outputs are int64 (what msgpack carries signed); inputs are bounded tighter so
# that what the engines compute from them stays within it.

MAX_INT64 = 2**63 - 1
MAX_PRICE = 2**40  # ticks
MAX_SIZE = 2**40  # lots
MAX_AMOUNT = 10**15  # micro units: 1,000,000,000 of quote in one command
MAX_RATE_PPB = 10**9  # 100% per funding interval
MAX_LEVERAGE = 10_000

Int64 = Annotated[int, msgspec.Meta(ge=-MAX_INT64 - 1, le=MAX_INT64)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]  # sequence numbers, ids, offsets, times
Price = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRICE)]
Size = Annotated[int, msgspec.Meta(ge=0, le=MAX_SIZE)]
SignedSize = Annotated[int, msgspec.Meta(ge=-MAX_SIZE, le=MAX_SIZE)]
Amount = Annotated[int, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
Rate = Annotated[int, msgspec.Meta(ge=-MAX_RATE_PPB, le=MAX_RATE_PPB)]
Leverage = Annotated[int, msgspec.Meta(ge=0, le=MAX_LEVERAGE)]
MAX_CLIENT_ORDER_ID = 64  # characters; the venues' are shorter (Binance 36, a Hyperliquid cloid 34 as hex)
ClientOrderId = Annotated[str, msgspec.Meta(max_length=MAX_CLIENT_ORDER_ID)]
Callback = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]  # ppm of price (a trailing stop's callback rate)

# Order ids are assigned by risk as ``(counter << 16) | partition`` (partition < 2**15) and
# by the liquidation engine with this bit set, so anyone can tell a liquidation order.
LIQUIDATION_ORDER_BIT = 1 << 15


class Message(msgspec.Struct, tag=True, array_like=True, gc=False):
    """Base of every message: producer id and per-producer sequence number."""

    producer: str
    seq: Count


# --------------------------------------------------------------------------- commands
# Written by clients (and the gateway) to ``risk.in``; keyed by account.


class Deposit(Message, tag="Deposit"):
    account: str
    amount: Amount
    ts: Count = 0


class Withdraw(Message, tag="Withdraw"):
    account: str
    amount: Amount
    ts: Count = 0


class PlaceOrder(Message, tag="PlaceOrder"):
    """A client's new order. Risk checks margin and forwards it as ``NewOrder``."""

    account: str
    market: str
    client_order_id: ClientOrderId
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: Price  # limit price in ticks; 0 for a market order
    size: Size
    reduce_only: bool = False
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER
    ts: Count = 0
    # Conditional orders (``condition`` not NONE) rest off the book until their trigger:
    # ``trigger_price`` for STOP and TAKE_PROFIT; ``activation_price`` (0: at once) and
    # ``callback_ppm`` for TRAILING_STOP; ``close_position`` closes whatever the position
    # is when it fires (``size`` is then 0). docs/matching.md, "Conditional orders".
    condition: Condition = Condition.NONE
    trigger_price: Price = 0
    trigger_source: TriggerSource = TriggerSource.MARK
    close_position: bool = False
    activation_price: Price = 0
    callback_ppm: Callback = 0


class CancelOrder(Message, tag="CancelOrder"):
    """Cancel one live order. Carried on ``risk.in`` (from clients) and ``match.in``."""

    account: str
    market: str
    order_id: Count
    ts: Count = 0


class AmendOrder(Message, tag="AmendOrder"):
    """Change a live order's price and/or total size.

    A price change or a size increase loses time priority; a size decrease keeps it.
    ``size`` is the new total size, including what has already filled.
    """

    account: str
    market: str
    order_id: Count
    price: Price
    size: Size
    ts: Count = 0
    reference_price: Price = 0  # as in NewOrder
    requeue: bool = False  # lose time priority even on a size decrease (Binance's modify)
    index_price: Price = 0  # as in NewOrder


class SetMarginMode(Message, tag="SetMarginMode"):
    account: str
    market: str
    mode: MarginMode
    ts: Count = 0


class SetLeverage(Message, tag="SetLeverage"):
    account: str
    market: str
    leverage: Leverage
    ts: Count = 0


class AdjustIsolatedMargin(Message, tag="AdjustIsolatedMargin"):
    """Add (``amount`` > 0) or remove (``amount`` < 0) isolated margin of a position."""

    account: str
    market: str
    amount: Amount
    ts: Count = 0


# ------------------------------------------------------------------ matching commands
# Written by risk and liquidation to ``match.in``; keyed by market.


class NewOrder(Message, tag="NewOrder"):
    """An order that passed the pre-trade check, with its exchange order id."""

    account: str
    market: str
    order_id: Count
    client_order_id: ClientOrderId
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: Price
    size: Size
    reduce_only: bool = False
    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER
    ts: Count = 0
    # The mark price risk saw when it accepted the order (0: unknown). Matching bounds
    # market orders and checks limit prices against it with the market's price band.
    reference_price: Price = 0
    liquidation: bool = False  # sent by the liquidation engine; exempt from the band
    # Conditional orders (``condition`` not NONE) rest off the book until their trigger:
    # ``trigger_price`` for STOP and TAKE_PROFIT; ``activation_price`` (0: at once) and
    # ``callback_ppm`` for TRAILING_STOP; ``close_position`` closes whatever the position
    # is when it fires (``size`` is then 0). docs/matching.md, "Conditional orders".
    condition: Condition = Condition.NONE
    trigger_price: Price = 0
    trigger_source: TriggerSource = TriggerSource.MARK
    close_position: bool = False
    activation_price: Price = 0
    callback_ppm: Callback = 0
    # The index price risk saw (0: unknown): a limit price within the band of the index is
    # accepted even when the mark sits at its clamp, far from it (docs/matching.md)
    index_price: Price = 0


class CancelAllOrders(Message, tag="CancelAllOrders"):
    """Cancel every live order of an account in a market (liquidation, mass cancel)."""

    account: str
    market: str
    reason: CloseReason = CloseReason.CANCELED
    ts: Count = 0


class PositionTransfer(Message, tag="PositionTransfer"):
    """Move a position from one account to another at a set price, outside the book.

    Used for the insurance fund's backstop (at the mark price) and for ADL (at the
    bankrupt position's bankruptcy price). The matching engine answers with a ``Fill``
    so that every change of position comes from a fill.
    """

    market: str
    buyer: str
    seller: str
    price: Price
    size: Size
    liquidity: Liquidity
    ts: Count = 0


# ------------------------------------------------------------------- order outcomes
# Written by matching to ``risk.in`` and ``account.events``; keyed by account.


class OrderAccepted(Message, tag="OrderAccepted"):
    market: str
    account: str
    order_id: Count
    client_order_id: ClientOrderId
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: Price
    size: Size
    reduce_only: bool = False
    ts: Count = 0
    # a conditional order accepted to wait for its trigger (NewOrder's fields)
    condition: Condition = Condition.NONE
    trigger_price: Price = 0
    trigger_source: TriggerSource = TriggerSource.MARK
    close_position: bool = False
    activation_price: Price = 0
    callback_ppm: Callback = 0


class OrderTriggered(Message, tag="OrderTriggered"):
    """A conditional order's trigger was reached: matching took it off its trigger book
    and hands risk the order it becomes (``order_type``, ``price``, ``size``; a close-position
    order's size is the position's now). Risk checks its margin and sends it back as a
    ``NewOrder`` with the same id, or refuses it (``OrderRejected``)."""

    market: str
    account: str
    order_id: Count
    client_order_id: ClientOrderId
    side: Side
    order_type: OrderType
    tif: TimeInForce
    price: Price
    size: Size
    reduce_only: bool
    stp: SelfTradePrevention
    condition: Condition
    trigger_price: Price  # for a trailing stop, the level it fired at
    fired_at: Price  # the price that reached it
    trigger_source: TriggerSource = TriggerSource.MARK
    ts: Count = 0


class OrderRejected(Message, tag="OrderRejected"):
    """A new order refused by risk (pre-trade) or by matching (validation)."""

    market: str
    account: str
    order_id: Count  # 0 when risk refused it before assigning an id
    client_order_id: ClientOrderId
    reason: RejectReason
    detail: str = ""
    ts: Count = 0


class OrderAmended(Message, tag="OrderAmended"):
    market: str
    account: str
    order_id: Count
    price: Price
    size: Size  # new total size
    remaining: Size
    priority_kept: bool
    ts: Count = 0


class OrderClosed(Message, tag="OrderClosed"):
    """An order stopped being live; ``remaining`` is what never filled."""

    market: str
    account: str
    order_id: Count
    reason: CloseReason
    filled: Size
    remaining: Size
    ts: Count = 0


class Fill(Message, tag="Fill"):
    """One match, with both sides: risk applies each side to its account's position."""

    market: str
    trade_id: Count
    price: Price
    size: Size
    taker_side: Side
    taker_account: str
    taker_order_id: Count
    maker_account: str
    maker_order_id: Count
    liquidity: Liquidity = Liquidity.BOOK
    ts: Count = 0


class CommandAccepted(Message, tag="CommandAccepted"):
    """A non-order command (deposit, leverage, ...) was applied."""

    account: str
    ref_producer: str
    ref_seq: Count
    command: str
    ts: Count = 0


class CommandRejected(Message, tag="CommandRejected"):
    """A command was refused; ``command`` is its type name, ``reason`` says why."""

    account: str
    ref_producer: str
    ref_seq: Count
    command: str
    reason: RejectReason
    detail: str = ""
    order_id: Count = 0
    ts: Count = 0


# ----------------------------------------------------------------------- market data
# Written by matching and oracle to ``market.data``; keyed by market.


class Trade(Message, tag="Trade"):
    """The public view of a ``Fill``."""

    market: str
    trade_id: Count
    price: Price
    size: Size
    taker_side: Side
    ts: Count = 0


class BookDelta(Message, tag="BookDelta"):
    """Levels whose total size changed: (price, new total size); size 0 removes it."""

    market: str
    bids: list[tuple[Price, Size]]
    asks: list[tuple[Price, Size]]
    ts: Count = 0


class BookSnapshot(Message, tag="BookSnapshot"):
    """Levels best first: (price, total size)."""

    market: str
    bids: list[tuple[Price, Size]]
    asks: list[tuple[Price, Size]]
    ts: Count = 0


class BBO(Message, tag="BBO"):
    """Best bid and offer; a price of 0 means that side is empty."""

    market: str
    bid_price: Price
    bid_size: Size
    ask_price: Price
    ask_size: Size
    ts: Count = 0


class MarkPrice(Message, tag="MarkPrice"):
    market: str
    index_price: Price
    mark_price: Price
    ts: Count = 0


class Funding(Message, tag="Funding"):
    """A funding interval ended: risk pays ``−side · |size| · price · rate``, ``price`` being
    what the venue charges funding on (``FundingRule.on_mark``): the index on Hyperliquid
    (its oracle price), the mark on Binance."""

    market: str
    rate_ppb: Rate
    price: Price
    ts: Count = 0


# ------------------------------------------------------------------ margin and liquidation


class PositionState(msgspec.Struct, array_like=True, gc=False):
    market: str
    mode: MarginMode
    leverage: Leverage
    signed_size: SignedSize
    entry_value: Int64  # |size| · entry price, in micro units; entry = entry_value / |size|
    isolated_margin: Int64
    mark_price: Price
    unrealized_pnl: Int64
    initial_margin: Int64
    maintenance_margin: Int64
    liquidation_price: Int64  # ticks; 0 when there is none
    bankruptcy_price: Int64  # where the bucket's equity reaches 0, the others at their marks (MARGIN.md)
    # the position's share of its bucket's loss (MM_i / MM_c of a multi-position cross
    # bucket) taken at its price: what ADL and liquidation orders are limited at; the
    # bankruptcy price for a bucket of one position
    adl_price: Int64 = 0


class BucketState(msgspec.Struct, array_like=True, gc=False):
    market: str  # "" for the cross bucket
    mode: MarginMode
    equity: Int64
    initial_margin: Int64
    maintenance_margin: Int64
    margin_ratio_ppb: Int64  # MM / equity; -1 when infinite (equity <= 0 < MM)


class IncomeItem(msgspec.Struct, array_like=True, gc=False):
    """One movement of an account's wallet: a deposit, realized PnL, a fee, a funding
    payment, a liquidation charge. ``amount`` is signed (received > 0)."""

    market: str  # "" for transfers
    kind: IncomeKind
    amount: Int64
    trade_id: Count = 0  # the fill's trade id for REALIZED_PNL and COMMISSION
    ts: Count = 0


class MarketSetting(msgspec.Struct, array_like=True, gc=False):
    """An account's margin mode and leverage in a market where it holds no position (those
    with a position are in ``PositionState``): what it set, so that a client reads it back
    (Binance's ``symbolConfig``, Hyperliquid's ``activeAssetData``)."""

    market: str
    mode: MarginMode
    leverage: Leverage


class MarginSnapshot(Message, tag="MarginSnapshot"):
    account: str
    balance: Int64
    available_to_trade: Int64
    withdrawable: Int64
    buckets: list[BucketState]
    positions: list[PositionState]
    ts: Count = 0
    # the wallet movements since the account's previous snapshot, in order
    income: list[IncomeItem] = []
    # producer -> the newest sequence number of its that this snapshot reflects (risk's own
    # answers and matching's order events, docs/gateway.md "Consistency")
    applied: dict[str, Count] = {}
    settings: list[MarketSetting] = []  # the mode and leverage set in markets without a position


class AdlCandidate(msgspec.Struct, array_like=True, gc=False):
    """An opposite position ADL may close, ranked by risk (best first)."""

    market: str
    account: str
    size: Size


class LiquidationTrigger(Message, tag="LiquidationTrigger"):
    """A bucket fell below maintenance (``equity < MM``; ``market`` is "" for cross), or,
    while it is being liquidated, its state changed: risk sends its current state after
    every fill, mark update or funding payment that touches it."""

    account: str
    market: str
    mode: MarginMode
    equity: Int64
    maintenance_margin: Int64
    positions: list[PositionState]
    ts: Count = 0
    order_markets: list[str] = []  # markets where the bucket has resting orders
    update: bool = False  # a state of a bucket already in liquidation, not a new trigger
    # Sent when settlement is near (equity < 2/3 MM), for a liquidation service that cannot
    # see risk: the insurance fund's balance if this risk partition holds the fund, and
    # the ADL candidates of this partition for the bucket's positions, best ranked first.
    fund_known: bool = False
    fund_balance: Int64 = 0
    adl: list[AdlCandidate] = []


class LiquidationOutcome(Message, tag="LiquidationOutcome"):
    """A step of a bucket's liquidation, reported to risk and to the account."""

    account: str
    market: str
    mode: MarginMode
    stage: LiquidationStage
    equity: Int64
    detail: str = ""
    ts: Count = 0


class CollateralTransfer(Message, tag="CollateralTransfer"):
    """Money moved between accounts by liquidation (backstop collateral, bad debt).

    ``from_market``/``to_market`` name the isolated bucket ("" for the cross balance).
    """

    from_account: str
    from_market: str
    to_account: str
    to_market: str
    amount: Int64
    stage: LiquidationStage
    ts: Count = 0
    # True: the recipient's risk partition applies it (the fund lives in another partition);
    # False: already applied, a report for account.events
    settle: bool = False


class DeadLetter(Message, tag="DeadLetter"):
    """Something that could not be decoded or applied, with the reason and the bytes."""

    topic: str
    partition: Count
    offset: Count
    reason: str
    payload: bytes
    ts: Count = 0


# ------------------------------------------------------------------------ settings
# Written by ``perpsim accounts create`` to ``keys`` (compacted, keyed by API key).


class ApiKey(Message, tag="ApiKey"):
    """An API key of an account, for the gateway (HMAC-signed requests)."""

    key: str
    secret: str
    account: str
    ts: Count = 0

