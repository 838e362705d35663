"""What the gateway knows of its accounts, folded from ``account.events``: orders, trades,
income and the newest margin snapshot per account, and the user-stream events they give
rise to (``OrderUpdate``, ``AccountUpdate``, ``ConditionalUpdate``). Dialect-free: each
API dialect turns these views and events into its own words and wire format.

One vocabulary for every dialect, as enums: an order's ``OrderStatus`` (``LIVE`` while it
rests), what happened to it (``Execution``) and what it is (``OrderKind``: a forced close
is ``LIQUIDATION`` or ``ADL``, with no client order id of its own; a dialect names it as
its venue does). Conditional orders (``ConditionalView``) have their own
``ConditionalStatus``: ``WAITING``, ``TRIGGERED`` once fired (the order they became is
then an ``OrderView`` with the same id), ``FINISHED`` when that order has ended,
``REJECTED`` when it was refused as it fired, ``CANCELED`` and ``EXPIRED`` (a
close-position order whose position is gone).

Memory is bounded: each account keeps its last ``TRADES_KEPT`` trades and ``INCOME_KEPT``
income records, and ended orders beyond ``ORDERS_KEPT`` are forgotten oldest first (as
Binance forgets them after a while).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from exchange.accounts import (
    Account,
    Marks,
    Position,
    available_to_trade,
    bucket_states,
    cross_totals,
    default_leverage,
    position_state,
    withdrawable,
)
from exchange.markets import Market, trading_fee
from schemas.enums import (
    CloseReason,
    Condition,
    IncomeKind,
    Liquidity,
    MarginMode,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    Fill,
    MarginSnapshot,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
)

TRADES_KEPT = 10_000
INCOME_KEPT = 10_000
ORDERS_KEPT = 200_000


class OrderStatus(enum.Enum):
    NEW = enum.auto()
    PARTIALLY_FILLED = enum.auto()
    FILLED = enum.auto()
    CANCELED = enum.auto()
    EXPIRED = enum.auto()


class Execution(enum.Enum):
    """What an ``OrderUpdate`` reports: the order came, traded, was amended, or ended so."""

    NEW = enum.auto()
    TRADE = enum.auto()
    AMENDMENT = enum.auto()
    FILLED = enum.auto()
    CANCELED = enum.auto()
    EXPIRED = enum.auto()


class OrderKind(enum.Enum):
    LIMIT = enum.auto()
    MARKET = enum.auto()
    LIQUIDATION = enum.auto()  # the liquidation engine's order, or a backstop transfer's side
    ADL = enum.auto()  # one side of an auto-deleveraging transfer


class ConditionalStatus(enum.Enum):
    WAITING = enum.auto()
    TRIGGERED = enum.auto()
    FINISHED = enum.auto()
    REJECTED = enum.auto()
    CANCELED = enum.auto()
    EXPIRED = enum.auto()


LIVE = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})
FORCED = frozenset({OrderKind.LIQUIDATION, OrderKind.ADL})  # the kinds of a forced close
FIRED = frozenset({ConditionalStatus.TRIGGERED, ConditionalStatus.FINISHED})  # conditional orders that became orders
_CLOSED = {CloseReason.FILLED: (OrderStatus.FILLED, Execution.FILLED),
           CloseReason.CANCELED: (OrderStatus.CANCELED, Execution.CANCELED)}
# A backstop or ADL transfer has no order; the ledger gives it one, as venues show it,
# numbered apart from the exchange's order ids (which stay below 2**50)
FORCED_ORDER_BASE = 1 << 51


def money(micro: int) -> str:
    """Exact decimal string of an amount in micro units."""
    sign = "-" if micro < 0 else ""
    whole, fraction = divmod(abs(micro), 1_000_000)
    return f"{sign}{whole}.{fraction:06d}"


def ms(ns: int) -> int:
    return ns // 1_000_000 if ns else int(time.time() * 1000)


def entry_price(market: Market, position) -> str:
    """A position's average entry price (``entry_value / |size|``), to 8 places."""
    size = abs(position.signed_size)
    if not size:
        return "0.00000000"
    ticks = Decimal(position.entry_value) / (size * market.value_per_tick_lot)
    return f"{ticks * market.tick_size:.8f}"


def revalue(snapshot: MarginSnapshot, markets: dict[str, Market], marks: dict[str, int]) -> MarginSnapshot:
    """The snapshot valued at the current ``marks`` with risk's own formulas: risk sends a
    snapshot when an account changes, not on every mark, but a bot reads its unrealized
    PnL, margin ratio and liquidation price at the current mark. Open-order reservations
    are what the snapshot's ``available_to_trade`` implies."""
    if not snapshot.positions:
        return snapshot
    account = Account(snapshot.account)
    account.balance = snapshot.balance
    then, now = Marks(), Marks()
    for state in snapshot.positions:
        key = account.key(state.market)
        position = account.positions[key] = Position(key, markets[state.market], state.mode, state.leverage)
        position.size, position.entry_value, position.margin = state.signed_size, state.entry_value, \
            state.isolated_margin
        then.marks[state.market] = state.mark_price
        now.marks[state.market] = marks.get(state.market) or state.mark_price
    if now.marks == then.marks:
        return snapshot
    equity, im, _, _ = cross_totals(account, then)
    account.reserved = max(0, equity - im - snapshot.available_to_trade)
    totals = cross_totals(account, now)
    positions = [position_state(account, p, now, totals) for p in account.positions.values()]
    return MarginSnapshot(snapshot.producer, snapshot.seq, snapshot.account, snapshot.balance,
                          available_to_trade(account, now, totals), withdrawable(account, now, totals),
                          bucket_states(account, now, totals), positions, snapshot.ts, snapshot.income,
                          snapshot.applied, snapshot.settings)


@dataclass(slots=True)
class OrderView:
    order_id: int
    account: str
    market: Market
    client_order_id: str
    side: Side
    kind: OrderKind
    tif: TimeInForce
    price: int
    size: int
    reduce_only: bool
    time_ms: int
    executed: int = 0
    quote: int = 0  # micro units
    status: OrderStatus = OrderStatus.NEW
    update_ms: int = 0
    trade_id: int = 0  # for the order a backstop or ADL transfer is shown as: the transfer's trade

    def average(self) -> str:
        """The exact average fill price to 8 places (as Binance reports it), "0" before any fill."""
        if not self.executed:
            return "0"
        ticks = Decimal(self.quote) / (self.executed * self.market.value_per_tick_lot)
        return f"{ticks * self.market.tick_size:.8f}"


@dataclass(slots=True)
class ConditionalView:
    """A conditional order: what was asked, and where it stands."""

    order_id: int
    account: str
    market: Market
    client_order_id: str
    side: Side
    condition: Condition
    kind: OrderKind  # what it becomes when it fires: LIMIT or MARKET
    tif: TimeInForce
    price: int
    size: int  # 0 for close-position
    reduce_only: bool
    close_position: bool
    trigger_price: int
    source: TriggerSource
    activation_price: int
    callback_ppm: int
    time_ms: int
    status: ConditionalStatus = ConditionalStatus.WAITING
    update_ms: int = 0
    trigger_ms: int = 0
    reason: str = ""  # why it was refused or ended


@dataclass(slots=True)
class TradeView:
    account: str
    market: Market
    trade_id: int
    order_id: int
    side: Side
    price: int
    size: int
    maker: bool
    commission: int  # micro units charged (negative: a rebate)
    time_ms: int
    realized: int = 0
    start: int = 0  # the account's position in the market before this trade, signed lots
    forced: bool = False  # a liquidation's, a backstop's or an ADL's trade


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """An order changed: ``execution`` says how (with ``trade`` for a TRADE)."""

    order: OrderView
    execution: Execution
    when: int
    trade: TradeView | None = None


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    """Risk sent a new margin snapshot for the account."""

    snapshot: MarginSnapshot


@dataclass(frozen=True, slots=True)
class ConditionalUpdate:
    """A conditional order was placed, fired, refused or ended."""

    order: ConditionalView
    when: int


UserEvent = OrderUpdate | AccountUpdate | ConditionalUpdate


@dataclass
class AccountState:
    snapshot: MarginSnapshot | None = None
    trades: deque = field(default_factory=lambda: deque(maxlen=TRADES_KEPT))
    by_trade: dict = field(default_factory=dict)  # (market, trade id) -> TradeView, for the income join
    income: deque = field(default_factory=lambda: deque(maxlen=INCOME_KEPT))
    income_mark: tuple[str, int] = ("", -1)  # the newest snapshot whose income was taken


class Ledger:
    """Folds account events; ``notify(account, event)`` receives the ``UserEvent``s."""

    def __init__(self, markets: dict[str, Market], notify: Callable[[str, UserEvent], None] | None = None,
                 listening: Callable[[str], bool] | None = None, marks: Callable[[], dict[str, int]] | None = None):
        """``listening(account)``: whether anyone receives the account's stream events
        (they are only built then); ``marks()``: the current mark of each market."""
        self.markets = markets
        self.marks = marks or dict
        self.listening = listening or (lambda account: notify is not None)
        self.orders: dict[int, OrderView] = {}
        self.live: dict[str, dict[int, OrderView]] = {}  # account -> its open orders
        self.by_account: dict[str, dict[int, OrderView]] = {}  # account -> its orders known
        self.accounts: dict[str, AccountState] = {}
        self.conditionals: dict[int, ConditionalView] = {}
        self.conditionals_of: dict[str, dict[int, ConditionalView]] = {}  # account -> its conditional orders
        self.notify = notify or (lambda account, payload: None)
        self._tran_id = 0
        # (account, market) -> its position from the fills read (every fill is on account.events
        # from the venue's start, so a trade's position before it is known exactly)
        self.positions: dict[tuple[str, str], int] = {}
        # a fill or close can overtake its order's acceptance (they come through different
        # partitions of account.events): kept here until the order is known
        self._early: dict[int, list] = {}

    def account(self, account: str) -> AccountState:
        state = self.accounts.get(account)
        if state is None:
            state = self.accounts[account] = AccountState()
        return state

    def snapshot(self, account: str) -> MarginSnapshot:
        """The account's newest margin snapshot, as risk sent it."""
        snapshot = self.account(account).snapshot
        return snapshot or MarginSnapshot("", 0, account, 0, 0, 0, [], [], 0)

    def setting(self, account: str, market: Market) -> tuple[MarginMode, int]:
        """The account's margin mode and leverage in ``market``: its position's, what it set
        while flat, or the venue's defaults (cross, ``default_leverage``)."""
        snapshot = self.snapshot(account)
        for held in (*snapshot.positions, *snapshot.settings):
            if held.market == market.symbol:
                return held.mode, held.leverage
        return MarginMode.CROSS, default_leverage(market)

    def valued(self, account: str) -> MarginSnapshot:
        """The newest snapshot valued at the current marks (what the API reports)."""
        return revalue(self.snapshot(account), self.markets, self.marks())

    def apply(self, message) -> None:
        if isinstance(message, OrderAccepted):
            if message.condition is Condition.NONE:
                self._accepted(message)
            else:
                self._conditional_accepted(message)
        elif isinstance(message, Fill):
            self._fill(message)
        elif isinstance(message, OrderClosed):
            waiting = self.conditionals.get(message.order_id)
            if waiting is not None:
                was = waiting.status
                self._conditional_ended(message.order_id, message.reason, ms(message.ts))
                if was is ConditionalStatus.WAITING:
                    return  # the conditional order itself ended; no plain order had its id
            self._closed(message)
        elif isinstance(message, OrderTriggered):
            self._conditional_triggered(message)
        elif isinstance(message, OrderRejected):
            if message.order_id in self.conditionals:
                self._conditional_refused(message)
        elif isinstance(message, OrderAmended):
            self._amended(message)
        elif isinstance(message, MarginSnapshot):
            self._margin(message)

    # ------------------------------------------------------------------ orders

    def _accepted(self, message: OrderAccepted) -> None:
        market = self.markets.get(message.market)
        if market is None or message.order_id in self.orders:
            return
        kind, client_order_id = OrderKind[message.order_type.name], message.client_order_id
        if message.order_id & LIQUIDATION_ORDER_BIT:  # the liquidation engine's: a forced close
            kind, client_order_id = OrderKind.LIQUIDATION, ""
        order = OrderView(message.order_id, message.account, market, client_order_id, message.side,
                          kind, message.tif, message.price, message.size, message.reduce_only, ms(message.ts))
        self._add(order)
        self.live.setdefault(order.account, {})[order.order_id] = order
        self._forget_old_orders()
        if self.listening(order.account):
            self.notify(order.account, OrderUpdate(order, Execution.NEW, order.time_ms))
        for early in self._early.pop(message.order_id, ()):
            if isinstance(early, OrderClosed):
                self._closed(early)
            else:
                self._order_filled(order, *early)

    def expired(self, order_id: int, account: str, market: Market, client_order_id: str, side: Side, kind: OrderKind,
                tif: TimeInForce, price: int, size: int, reduce_only: bool) -> OrderView:
        """An order that ended as soon as it came (an FOK that could not fill)."""
        now = int(time.time() * 1000)
        order = OrderView(order_id, account, market, client_order_id, side, kind, tif, price, size, reduce_only, now,
                          status=OrderStatus.EXPIRED, update_ms=now)
        self._add(order)
        if self.listening(account):
            self.notify(account, OrderUpdate(order, Execution.EXPIRED, now))
        return order

    def _fill(self, fill: Fill) -> None:
        market = self.markets.get(fill.market)
        if market is None:
            return
        when = ms(fill.ts)
        book = fill.liquidity is Liquidity.BOOK
        sides = ((fill.taker_account, fill.taker_order_id, fill.taker_side, False, market.taker_fee_ppm),
                 (fill.maker_account, fill.maker_order_id, Side(-int(fill.taker_side)), True, market.maker_fee_ppm))
        value = fill.price * fill.size * market.value_per_tick_lot
        for account, order_id, side, maker, fee_ppm in sides:
            commission = trading_fee(value, fee_ppm) if book else 0
            if not book:  # a backstop or ADL transfer: an order of its own for each side
                order_id = self._forced_order(fill, account, market, side, maker, when)
            held = (account, market.symbol)
            start = self.positions.get(held, 0)
            self.positions[held] = start + (fill.size if side is Side.BUY else -fill.size)
            forced = not book or bool(order_id & LIQUIDATION_ORDER_BIT and order_id < FORCED_ORDER_BASE)
            trade = TradeView(account, market, fill.trade_id, order_id, side, fill.price, fill.size, maker,
                              commission, when, start=start, forced=forced)
            state = self.account(account)
            if len(state.trades) == state.trades.maxlen:
                old = state.trades[0]
                state.by_trade.pop((old.market.symbol, old.trade_id), None)
            state.trades.append(trade)
            state.by_trade[(market.symbol, fill.trade_id)] = trade
            order = self.orders.get(order_id)
            if order is not None and order.account == account:
                self._order_filled(order, value, when, trade)
            elif order is None:
                self._wait_for_order(order_id, (value, when, trade))

    def _forced_order(self, fill: Fill, account: str, market: Market, side: Side, maker: bool, when: int) -> int:
        """The order one side of a backstop or ADL transfer is shown as, new and empty,
        filled by the caller."""
        order_id = FORCED_ORDER_BASE + (sorted(self.markets).index(market.symbol) << 41) + (fill.trade_id << 1) + maker
        if order_id not in self.orders:
            kind = OrderKind.ADL if fill.liquidity is Liquidity.ADL else OrderKind.LIQUIDATION
            order = OrderView(order_id, account, market, "", side, kind, TimeInForce.IOC, fill.price, fill.size, True,
                              when, trade_id=fill.trade_id)
            self._add(order)
            self.live.setdefault(account, {})[order_id] = order  # until the fill ends it
        return order_id

    def _order_filled(self, order: OrderView, value: int, when: int, trade: TradeView) -> None:
        order.executed += trade.size
        order.quote += value
        if order.status in LIVE:
            self._set_status(order, OrderStatus.FILLED if order.executed >= order.size else
                             OrderStatus.PARTIALLY_FILLED)
        order.update_ms = when
        if self.listening(order.account):
            self.notify(order.account, OrderUpdate(order, Execution.TRADE, when, trade))

    def _wait_for_order(self, order_id: int, early) -> None:
        self._early.setdefault(order_id, []).append(early)
        if len(self._early) > 10_000:  # orders never seen (placed before the gateway started)
            for stale in list(self._early)[:5_000]:
                del self._early[stale]

    def _closed(self, message: OrderClosed) -> None:
        order = self.orders.get(message.order_id)
        if order is None:
            if not message.order_id & LIQUIDATION_ORDER_BIT:
                self._wait_for_order(message.order_id, message)
            return
        status, execution = _CLOSED.get(message.reason, (OrderStatus.EXPIRED, Execution.EXPIRED))
        was = order.status
        self._set_status(order, status)
        order.update_ms = ms(message.ts)
        if (status is not OrderStatus.FILLED or was is not OrderStatus.FILLED) and self.listening(order.account):
            self.notify(order.account, OrderUpdate(order, execution, order.update_ms))

    def _amended(self, message: OrderAmended) -> None:
        order = self.orders.get(message.order_id)
        if order is None:
            return
        order.price, order.size, order.update_ms = message.price, message.size, ms(message.ts)
        if self.listening(order.account):
            self.notify(order.account, OrderUpdate(order, Execution.AMENDMENT, order.update_ms))

    def _set_status(self, order: OrderView, status: OrderStatus) -> None:
        order.status = status
        if status not in LIVE:
            self.live.get(order.account, {}).pop(order.order_id, None)

    def _forget_old_orders(self) -> None:
        if len(self.orders) <= ORDERS_KEPT:
            return
        excess = len(self.orders) - ORDERS_KEPT * 3 // 4
        for order_id in [i for i, o in self.orders.items() if o.status not in LIVE][:excess]:
            order = self.orders.pop(order_id)
            self.by_account.get(order.account, {}).pop(order_id, None)

    def _add(self, order: OrderView) -> None:
        self.orders[order.order_id] = order
        self.by_account.setdefault(order.account, {})[order.order_id] = order

    def open_orders(self, account: str, market: Market | None = None) -> list[OrderView]:
        return [o for o in self.live.get(account, {}).values() if market is None or o.market is market]

    def forced_orders(self, account: str, market: Market | None = None) -> list[OrderView]:
        """The account's forced closes (liquidation and ADL orders), oldest first."""
        return [o for o in self.by_account.get(account, {}).values()
                if o.kind in FORCED and (market is None or o.market is market)]

    # ------------------------------------------------------- conditional orders

    def _conditional_accepted(self, message: OrderAccepted) -> None:
        market = self.markets.get(message.market)
        if market is None or message.order_id in self.conditionals:
            return
        order = ConditionalView(message.order_id, message.account, market, message.client_order_id, message.side,
                                message.condition, OrderKind[message.order_type.name], message.tif, message.price,
                                message.size, message.reduce_only, message.close_position, message.trigger_price,
                                message.trigger_source, message.activation_price, message.callback_ppm,
                                ms(message.ts))
        order.update_ms = order.time_ms
        self.conditionals[order.order_id] = order
        self.conditionals_of.setdefault(order.account, {})[order.order_id] = order
        self._forget_old_conditionals()
        self._conditional_changed(order)

    def _conditional_triggered(self, message: OrderTriggered) -> None:
        order = self.conditionals.get(message.order_id)
        if order is None or order.status is not ConditionalStatus.WAITING:
            return
        order.status, order.trigger_ms = ConditionalStatus.TRIGGERED, ms(message.ts)
        order.update_ms = order.trigger_ms
        self._conditional_changed(order)

    def _conditional_refused(self, message: OrderRejected) -> None:
        order = self.conditionals[message.order_id]
        if order.status in (ConditionalStatus.WAITING, ConditionalStatus.TRIGGERED):
            order.status, order.reason, order.update_ms = ConditionalStatus.REJECTED, message.detail, ms(message.ts)
            self._conditional_changed(order)

    def _conditional_ended(self, order_id: int, reason: CloseReason, when: int) -> None:
        order = self.conditionals[order_id]
        if order.status is ConditionalStatus.WAITING:  # ended while waiting
            order.status = ConditionalStatus.EXPIRED if reason is CloseReason.POSITION_CLOSED else \
                ConditionalStatus.CANCELED
            order.reason = reason.name
        elif order.status is ConditionalStatus.TRIGGERED:  # the order it became has ended
            order.status = ConditionalStatus.FINISHED
        else:
            return
        order.update_ms = when
        self._conditional_changed(order)

    def _conditional_changed(self, order: ConditionalView) -> None:
        if self.listening(order.account):
            self.notify(order.account, ConditionalUpdate(order, order.update_ms))

    def _forget_old_conditionals(self) -> None:
        if len(self.conditionals) <= ORDERS_KEPT:
            return
        excess = len(self.conditionals) - ORDERS_KEPT * 3 // 4
        for order_id in [i for i, o in self.conditionals.items()
                         if o.status not in (ConditionalStatus.WAITING, ConditionalStatus.TRIGGERED)][:excess]:
            order = self.conditionals.pop(order_id)
            self.conditionals_of.get(order.account, {}).pop(order_id, None)

    def open_conditionals(self, account: str, market: Market | None = None) -> list[ConditionalView]:
        return [o for o in self.conditionals_of.get(account, {}).values()
                if o.status is ConditionalStatus.WAITING and (market is None or o.market is market)]

    # ------------------------------------------------------------------ margin

    def _margin(self, snapshot: MarginSnapshot) -> None:
        state = self.account(snapshot.account)
        known = state.snapshot
        if known is None or snapshot.seq >= known.seq or snapshot.producer != known.producer:
            state.snapshot = snapshot
        producer, seq = state.income_mark
        if snapshot.income and (snapshot.producer != producer or snapshot.seq > seq):
            state.income_mark = (snapshot.producer, snapshot.seq)  # a redelivered snapshot adds nothing twice
            for item in snapshot.income:
                self._tran_id += 1
                state.income.append((self._tran_id, item))
                if item.kind is IncomeKind.REALIZED_PNL:
                    trade = state.by_trade.get((item.market, item.trade_id))
                    if trade is not None:
                        trade.realized += item.amount
                elif item.kind is IncomeKind.COMMISSION:
                    trade = state.by_trade.get((item.market, item.trade_id))
                    if trade is not None:
                        trade.commission = -item.amount  # risk's own figure
        if state.snapshot is snapshot and snapshot.producer and self.listening(snapshot.account):
            self.notify(snapshot.account, AccountUpdate(snapshot))
