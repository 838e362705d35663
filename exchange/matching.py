"""The matching engine of one market: pure, deterministic, time passed in.

``MatchingEngine.apply(command)`` takes one ``match.in`` command and returns the events it
caused, stamped with the engine's producer id and consecutive sequence numbers. It
publishes nothing and reads no clock: the same commands give the same events.

Order semantics
- Price-time priority. A taker trades at the maker's price.
- LIMIT with GTC rests what it does not fill; IOC expires it; FOK fills completely or is
  rejected (``FOK_NOT_FILLABLE``) with nothing changed; POST_ONLY is rejected
  (``WOULD_CROSS``) if it would trade on arrival.
- MARKET trades up to a protection price: the command's ``reference_price`` (risk's mark)
  or, when that is 0, the best opposite price, moved by the market's price band; what is
  left expires. A limit price outside the band around a non-zero ``reference_price`` is
  rejected (``OUTSIDE_PRICE_BAND``); liquidation orders are exempt.
- Reduce-only: the engine keeps every account's position in this market from its own
  fills (every change of position comes from a fill, including backstop and ADL
  transfers), and a reduce-only order never fills more than would bring that position to
  zero at the moment of the fill. A reduce-only order with nothing to reduce is rejected
  on arrival and closed (``REDUCE_ONLY``) when reached on the book.
- Amend: a price change or a size increase loses time priority (and may trade, as a new
  order would); a size decrease at the same price keeps it, unless the amend asks to be
  requeued (``AmendOrder.requeue``: Binance's modify, which always goes to the back). A post-only order amended to
  a crossing price is refused and stays as it was.
- Self-trade prevention: the taker's mode decides. CANCEL_TAKER closes the taker,
  CANCEL_MAKER closes the resting order and goes on matching, CANCEL_BOTH closes both,
  NONE lets them trade.

Conditional orders (``NewOrder.condition``; docs/matching.md, "Conditional orders") wait
off the book in ``exchange.triggers``; the engine's part that places, fires and closes
them is ``exchange.conditional.ConditionalOrders``, which the engine is.

Events per command: ``OrderAccepted`` / ``OrderRejected``, one ``Fill`` per match (both
sides), ``OrderClosed`` when an order ends, ``OrderAmended``, ``CommandRejected`` for a
cancel/amend/transfer that cannot be applied, then at most one ``BookDelta`` with the
levels whose size changed and a ``BBO`` if the top of the book changed. With ``coalesce``
(the matching service) those two wait for ``publish_book``, which the service calls once
per fetched batch: one delta of every level the batch changed, as a venue's feed sends it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, Final

from exchange.book import Book, Order, OrderBook, state_hash
from exchange.conditional import ConditionalOrders
from exchange.errors import UnknownCommand
from exchange.markets import PPM, Market, protection_price, strayed
from exchange.triggers import (
    Conditional,
    TriggerBook,
)
from schemas.enums import (
    CloseReason,
    Condition,
    Liquidity,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    BBO,
    AmendOrder,
    BookDelta,
    BookSnapshot,
    CancelAllOrders,
    CancelOrder,
    CommandRejected,
    Fill,
    MarkPrice,
    Message,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
    PositionTransfer,
)
from schemas.keys import PositionKey
from schemas.state import ConditionalRow, MarketState, RestingOrder

# Final: the compiled engine keeps these in C statics instead of looking them up by name
BUY: Final = Side.BUY
SELL: Final = Side.SELL
MARKET: Final = OrderType.MARKET
GTC: Final = TimeInForce.GTC
IOC: Final = TimeInForce.IOC
FOK: Final = TimeInForce.FOK
POST_ONLY: Final = TimeInForce.POST_ONLY
CANCEL_TAKER: Final = SelfTradePrevention.CANCEL_TAKER
CANCEL_MAKER: Final = SelfTradePrevention.CANCEL_MAKER
FILLED: Final = CloseReason.FILLED
CANCELED: Final = CloseReason.CANCELED

BOOK: Final = Liquidity.BOOK
NONE: Final = Condition.NONE
MARK: Final = TriggerSource.MARK
LAST: Final = TriggerSource.LAST
SELF_TRADE: Final = CloseReason.SELF_TRADE
REDUCE_ONLY: Final = CloseReason.REDUCE_ONLY
EXPIRED: Final = CloseReason.EXPIRED


class MatchingEngine(ConditionalOrders):
    """Matching for one market over an ``OrderBook`` (the fast ``Book`` by default)."""

    __slots__ = (
        "market",
        "book",
        "producer",
        "seq",
        "trade_id",
        "priority",
        "positions",
        "_keys",
        "last_price",
        "triggers",
        "_flat",
        "_traded",
        "_bbo",
        "_bid_changes",
        "_ask_changes",
        "_handlers",
        "symbol",
        "min_size",
        "band_ppm",
        "limit_band_ppm",
        "coalesce",
        "_book_ts",
    )

    def __init__(self, market: Market, book: OrderBook | None = None, producer: str | None = None):
        self.market = market
        # the market's fields the hot path reads, as the engine's own (a compiled engine reads
        # its own attributes directly, another object's by name)
        self.symbol = market.symbol
        self.min_size = market.min_size
        self.band_ppm = market.price_band_ppm
        self.limit_band_ppm = market.limit_band_ppm
        self.book: OrderBook = Book() if book is None else book
        self.producer = producer or f"match.{market.symbol}"
        self.seq = 0
        self.trade_id = 0
        self.priority = 0
        self.positions: dict[PositionKey, int] = {}  # signed sizes, from this market's fills
        self._keys: dict[str, PositionKey] = {}  # each account's key (made once: a NamedTuple is slow to make)
        self.last_price = 0
        self.triggers = TriggerBook()
        self._flat: list[str] = []  # accounts whose position went to zero in this command
        self._traded = 0  # the trade id the conditional orders have seen
        self._bbo = (0, 0, 0, 0)
        # coalesce: book deltas and BBO wait for publish_book (the service: once per batch)
        # instead of following every command
        self.coalesce = False
        self._book_ts = 0
        self._bid_changes: dict[int, int] = {}
        self._ask_changes: dict[int, int] = {}
        self._handlers: dict[type, Callable[[Any, list], None]] = {
            NewOrder: self._new_order,
            CancelOrder: self._cancel,
            AmendOrder: self._amend,
            CancelAllOrders: self._cancel_all,
            PositionTransfer: self._transfer,
            MarkPrice: self._mark,
        }

    # ------------------------------------------------------------------ entry point

    def apply(self, command: Any) -> list[Message]:
        """Apply one command; returns the events it caused, in order."""
        out: list[Message] = []
        kind = type(command)
        if kind is NewOrder:
            self._new_order(command, out)
        elif kind is CancelOrder:
            self._cancel(command, out)
        else:
            handler = self._handlers.get(kind)
            if handler is None:
                raise UnknownCommand(
                    f"the matching engine takes {', '.join(t.__name__ for t in self._handlers)}; "
                    f"got {kind.__name__}"
                )
            handler(command, out)
        if self._bid_changes or self._ask_changes:
            if self.coalesce:
                self._book_ts = command.ts
            else:
                self._publish_book(command.ts, out)
        if self._flat or self.trade_id != self._traded or kind is MarkPrice:
            if self.triggers.orders:
                self._after(command, out)
            else:
                self._flat.clear()
                self._traded = self.trade_id
        return out

    def export(self) -> MarketState:
        """The engine's state as data (``schemas.state``): resting orders in priority order."""
        orders = [RestingOrder(o.order_id, o.account, o.side, o.price, o.size, o.remaining, o.tif, o.reduce_only,
                               o.stp, o.client_order_id, o.priority)
                  for side in (BUY, SELL) for o in self.book.iter_orders(side)]
        triggers = self.triggers
        conditionals = [ConditionalRow(c.order_id, c.account, c.side, c.condition, int(c.order_type), c.tif, c.price,
                                       c.size, c.reduce_only, c.close_position, c.stp, c.client_order_id,
                                       c.trigger_price, c.source, c.activation_price, c.callback_ppm, c.extreme,
                                       c.priority)
                        for c in sorted(triggers.orders.values(), key=lambda c: c.priority)]
        return MarketState(self.symbol, self.producer, self.seq, self.trade_id, self.priority,
                           list(self.positions.items()), self.last_price, self._bbo, orders,
                           triggers.prices[MARK], conditionals)

    def load(self, state: MarketState) -> None:
        """Take over ``state`` (from ``export``); the engine must be new."""
        if len(self.book) or self.seq:
            raise ValueError("load() needs a new engine")
        if state.market != self.symbol:
            raise ValueError(f"a snapshot of {state.market} cannot be loaded into {self.symbol}'s engine")
        self.producer, self.seq, self.trade_id, self.priority = state.producer, state.seq, state.trade_id, \
            state.priority
        self.positions = {key: size for key, size in state.positions}
        bbo = state.bbo
        self.last_price, self._bbo = state.last_price, (bbo[0], bbo[1], bbo[2], bbo[3])
        for o in state.orders:
            self.book.add(Order(o.order_id, o.account, o.side, o.price, o.size, o.remaining, o.tif, o.reduce_only,
                                o.stp, o.client_order_id, o.priority))
        self.triggers.prices[MARK], self.triggers.prices[LAST] = state.mark_price, state.last_price
        self._traded = state.trade_id  # the snapshot's trades were all seen
        for c in state.conditionals:
            self.triggers.add(Conditional(c.order_id, c.account, c.side, c.condition, OrderType(c.order_type), c.tif,
                                          c.price, c.size, c.reduce_only, c.close_position, c.stp,
                                          c.client_order_id, c.trigger_price, c.source, c.activation_price,
                                          c.callback_ppm, c.priority), c.extreme)

    def position(self, account: str) -> int:
        """Signed position of ``account`` in this market, from this engine's fills."""
        return self.positions.get(self._key(account), 0)

    def _key(self, account: str) -> PositionKey:
        key = self._keys.get(account)
        if key is None:
            key = self._keys[account] = PositionKey(account, self.symbol)
        return key

    def snapshot(self, ts: int = 0, depth: int | None = None) -> BookSnapshot:
        self.seq += 1
        return BookSnapshot(
            self.producer, self.seq, self.symbol,
            self.book.levels(BUY, depth), self.book.levels(SELL, depth), ts,
        )

    def state_hash(self) -> str:
        """Hash of the market's state: the book, positions, trade and priority counters.

        The output sequence number is not part of it: a rejected command changes nothing
        in the market but still emits (and numbers) its rejection."""
        waiting = sorted((c.order_id, c.extreme, c.size) for c in self.triggers.orders.values())
        extra = f"{sorted(self.positions.items())}|{self.trade_id}|{self.priority}|{waiting}"
        return f"{state_hash(self.book)}:{hashlib.blake2b(extra.encode(), digest_size=8).hexdigest()}"

    # ---------------------------------------------------------------------- helpers

    def _reject(self, cmd: NewOrder, reason: RejectReason, detail: str, out: list) -> None:
        self.seq += 1
        out.append(OrderRejected(
            self.producer, self.seq, self.symbol, cmd.account, cmd.order_id,
            cmd.client_order_id, reason, detail, cmd.ts,
        ))

    def _refuse(self, cmd: Any, reason: RejectReason, detail: str, out: list, order_id: int = 0) -> None:
        self.seq += 1
        account = getattr(cmd, "account", "") or getattr(cmd, "buyer", "")
        out.append(CommandRejected(
            self.producer, self.seq, account, cmd.producer, cmd.seq, type(cmd).__name__,
            reason, detail, order_id, cmd.ts,
        ))

    def _capacity(self, account: str, side: Side) -> int:
        """How much ``side`` can trade for ``account`` and only reduce its position."""
        position = self.position(account)
        if side is BUY:
            return -position if position < 0 else 0
        return position if position > 0 else 0

    def _band_violation(self, price: int, reference: int, index: int = 0) -> str:
        """Why ``price`` is outside the band around the mark ``reference``; where the mark has
        strayed more than a band from the ``index`` (it sits at its clamp), a price within
        the band around the index is accepted too: a mark pinned far away never halts
        trading at the index."""
        if reference <= 0:
            return ""
        band_ppm = self.limit_band_ppm
        if abs(price - reference) * PPM > reference * band_ppm:
            if strayed(reference, index, band_ppm) and abs(price - index) * PPM <= index * band_ppm:
                return ""
            market = self.market
            return (
                f"price {market.format_price(price)} is more than "
                f"{band_ppm / 10_000:g}% from the mark {market.format_price(reference)}"
            )
        return ""

    def _close(self, order: Order, reason: CloseReason, ts: int, out: list) -> None:
        self.seq += 1
        out.append(OrderClosed(
            self.producer, self.seq, self.symbol, order.account, order.order_id,
            reason, order.size - order.remaining, order.remaining, ts,
        ))

    def _close_resting(self, order: Order, reason: CloseReason, ts: int, out: list) -> None:
        size = self.book.remove(order)
        (self._bid_changes if order.side is BUY else self._ask_changes)[order.price] = size
        self._close(order, reason, ts, out)

    def _rest(self, order: Order) -> None:
        self.priority += 1
        order.priority = self.priority
        size = self.book.add(order)
        (self._bid_changes if order.side is BUY else self._ask_changes)[order.price] = size

    def _publish_book(self, ts: int, out: list, seq: int = 0) -> None:
        """The levels changed since the last publication as one ``BookDelta`` (their sizes
        now), then a ``BBO`` if the top moved. ``seq`` 0: numbered in the engine's own
        sequence; else (``publish_book``) under ``<producer>.book`` / ``.bbo`` with that
        number."""
        bids, asks = self._bid_changes, self._ask_changes
        if seq:
            producer = f"{self.producer}.book"
            number = seq
        else:
            self.seq += 1
            producer, number = self.producer, self.seq
        out.append(BookDelta(producer, number, self.symbol,
                             [*bids.items()] if bids else [], [*asks.items()] if asks else [], ts))
        # The top can only have changed if a changed level is at or better than it.
        old = self._bbo
        touched = False
        for price in bids:
            if price >= old[0]:
                touched = True
                break
        if not touched:
            for price in asks:
                if price <= old[2] or not old[2]:
                    touched = True
                    break
        bids.clear()
        asks.clear()
        if touched:
            bbo = self.book.top()
            if bbo != old:
                self._bbo = bbo
                if seq:
                    out.append(BBO(f"{self.producer}.bbo", seq, self.symbol, *bbo, ts))
                else:
                    self.seq += 1
                    out.append(BBO(self.producer, self.seq, self.symbol, *bbo, ts))

    def publish_book(self, seq: int) -> list[Message]:
        """With ``coalesce``: the book's changes since the last call, as a venue's feed
        sends them, one ``BookDelta`` of every level that changed (its size now) and a
        ``BBO`` if the top moved, stamped with the last change's time. They are numbered
        ``seq`` (the caller's: the input offset they reflect) under the producers
        ``<producer>.book`` and ``<producer>.bbo``, so that the engine's own sequence does
        not depend on where a batch ended."""
        out: list[Message] = []
        if self._bid_changes or self._ask_changes:
            self._publish_book(self._book_ts, out, seq)
        return out

    # ------------------------------------------------------------------- new orders

    def _new_order(self, cmd: NewOrder, out: list) -> None:
        # each of the command's fields read once: a compiled engine reads a Struct's by name
        market = self.market
        size = cmd.size
        symbol = self.symbol
        named = cmd.market
        condition = cmd.condition
        if cmd.close_position and condition is not NONE and named == symbol and not size:
            size = self.min_size  # sized when it fires
        if size < self.min_size or named != symbol:
            if named != symbol:
                return self._reject(cmd, RejectReason.UNKNOWN_MARKET,
                                    f"this engine matches {symbol}, not {named}", out)
            if size <= 0:
                return self._reject(cmd, RejectReason.INVALID_SIZE,
                                    f"size must be positive, got {size}", out)
            return self._reject(cmd, RejectReason.BELOW_MIN_SIZE,
                                f"size {market.format_size(size)} is below the minimum of "
                                f"{market.format_size(market.min_size)}", out)
        book = self.book
        order_id = cmd.order_id
        if book.get(order_id) is not None or order_id in self.triggers.orders:
            return self._reject(cmd, RejectReason.DUPLICATE_ORDER_ID,
                                f"order id {order_id} is already live", out)
        if condition is not NONE:
            return self._new_conditional(cmd, out)
        side = cmd.side
        buy = side is BUY
        best = book.best(SELL if buy else BUY)
        tif = cmd.tif
        order_type = cmd.order_type
        reference = cmd.reference_price
        if order_type is MARKET:
            reference = reference or (0 if best is None else best.price)
            if reference <= 0:
                return self._reject(cmd, RejectReason.NO_LIQUIDITY,
                                    "a market order needs a mark price or a resting opposite order", out)
            limit = protection_price(reference, cmd.index_price, self.band_ppm, buy)
            if tif is not FOK:
                tif = IOC
        else:
            limit = cmd.price
            if limit <= 0:
                return self._reject(cmd, RejectReason.INVALID_PRICE,
                                    f"price must be positive, got {limit}", out)
            if reference and not cmd.liquidation:
                problem = self._band_violation(limit, reference, cmd.index_price)
                if problem:
                    return self._reject(cmd, RejectReason.OUTSIDE_PRICE_BAND, problem, out)
        crosses = best is not None and (best.price <= limit if buy else best.price >= limit)
        if crosses and tif is POST_ONLY:
            assert best is not None  # it crosses
            return self._reject(cmd, RejectReason.WOULD_CROSS,
                                f"post-only price {market.format_price(limit)} would trade "
                                f"against {market.format_price(best.price)}", out)
        account = cmd.account
        reduce_only = cmd.reduce_only
        if reduce_only and self._capacity(account, side) == 0:
            return self._reject(cmd, RejectReason.REDUCE_ONLY_WOULD_INCREASE,
                                f"position is {market.format_size(self.position(account))}; "
                                f"a reduce-only {side.name} cannot reduce it", out)
        client_order_id = cmd.client_order_id
        order = Order(order_id, account, side, limit, size, size, tif, reduce_only, cmd.stp, client_order_id)
        if tif is FOK:
            fillable = self._fillable(order, limit) if crosses else 0
            if fillable < size:
                return self._reject(cmd, RejectReason.FOK_NOT_FILLABLE,
                                    f"only {market.format_size(fillable)} of "
                                    f"{market.format_size(size)} can fill now", out)
        ts = cmd.ts
        self.seq += 1
        out.append(OrderAccepted(
            self.producer, self.seq, symbol, account, order_id, client_order_id, side, order_type, tif, limit, size,
            reduce_only, ts,
        ))
        if crosses and self._take(order, limit, ts, out):
            return None
        if order.remaining == 0:
            self._close(order, FILLED, ts, out)
        elif tif is GTC or tif is POST_ONLY:
            self.priority += 1
            order.priority = self.priority
            (self._bid_changes if buy else self._ask_changes)[limit] = book.add(order)
        else:
            self._close(order, EXPIRED, ts, out)
        return None

    def _take(self, order: Order, limit: int, ts: int, out: list) -> bool:
        """Match ``order`` against the book up to ``limit``. True if the order was closed
        by self-trade prevention or reduce-only; otherwise the caller rests or expires
        what remains."""
        book = self.book
        buy = order.side is BUY
        opposite = SELL if buy else BUY
        changes = self._ask_changes if buy else self._bid_changes
        positions = self.positions
        producer = self.producer
        symbol = self.symbol
        taker_account = order.account
        taker_key = self._key(taker_account)
        taker_side = order.side
        taker_sign = 1 if buy else -1
        while order.remaining:
            maker = book.best(opposite)
            if maker is None:
                break
            price = maker.price
            if (price > limit) if buy else (price < limit):
                break
            if maker.account == taker_account and order.stp:
                if order.stp is not CANCEL_TAKER:
                    self._close_resting(maker, SELF_TRADE, ts, out)
                if order.stp is not CANCEL_MAKER:
                    self._close(order, SELF_TRADE, ts, out)
                    return True
                continue
            quantity = order.remaining if order.remaining < maker.remaining else maker.remaining
            if order.reduce_only:
                capacity = self._capacity(taker_account, taker_side)
                if capacity == 0:
                    self._close(order, REDUCE_ONLY, ts, out)
                    return True
                if capacity < quantity:
                    quantity = capacity
            if maker.reduce_only:
                capacity = self._capacity(maker.account, maker.side)
                if capacity == 0:
                    self._close_resting(maker, REDUCE_ONLY, ts, out)
                    continue
                if capacity < quantity:
                    quantity = capacity
            self.trade_id += 1
            self.seq += 1
            out.append(Fill(
                producer, self.seq, symbol, self.trade_id, price, quantity, taker_side,
                taker_account, order.order_id, maker.account, maker.order_id, BOOK, ts,
            ))
            moved = quantity * taker_sign
            position = positions.get(taker_key, 0) + moved
            if position:
                positions[taker_key] = position
            else:
                positions.pop(taker_key, None)
                self._flat.append(taker_account)
            maker_key = self._key(maker.account)
            position = positions.get(maker_key, 0) - moved
            if position:
                positions[maker_key] = position
            else:
                positions.pop(maker_key, None)
                self._flat.append(maker.account)
            order.remaining -= quantity
            self.last_price = price
            level_size = book.reduce(maker, quantity)
            if maker.remaining == 0:
                level_size = book.remove(maker)
                self.seq += 1
                out.append(OrderClosed(
                    producer, self.seq, symbol, maker.account, maker.order_id, FILLED,
                    maker.size, 0, ts,
                ))
            changes[price] = level_size
        if order.reduce_only and order.remaining and self._capacity(taker_account, taker_side) == 0:
            self._close(order, REDUCE_ONLY, ts, out)
            return True
        return False

    def _fillable(self, order: Order, limit: int) -> int:
        """How much ``order`` would fill now, by a dry run of ``_take``'s rules."""
        buy = order.side is BUY
        simulated: dict[str, int] = {}

        def capacity(account: str, side: Side) -> int:
            position = simulated.get(account, self.position(account))
            if side is BUY:
                return -position if position < 0 else 0
            return position if position > 0 else 0

        def move(account: str, quantity: int) -> None:
            simulated[account] = simulated.get(account, self.position(account)) + quantity

        total = 0
        for maker in self.book.iter_orders(SELL if buy else BUY):
            if (maker.price > limit) if buy else (maker.price < limit):
                break
            if maker.account == order.account and order.stp:
                if order.stp is CANCEL_MAKER:
                    continue
                break
            quantity = min(order.size - total, maker.remaining)
            if order.reduce_only:
                quantity = min(quantity, capacity(order.account, order.side))
            if maker.reduce_only:
                quantity = min(quantity, capacity(maker.account, maker.side))
            if order.reduce_only and quantity == 0 and capacity(order.account, order.side) == 0:
                break
            signed = quantity if buy else -quantity
            move(order.account, signed)
            move(maker.account, -signed)
            total += quantity
            if total >= order.size:
                break
        return total

    # ------------------------------------------------------------- cancel and amend

    def _find(self, cmd: CancelOrder | AmendOrder, out: list) -> Order | None:
        if cmd.market != self.symbol:
            self._refuse(cmd, RejectReason.UNKNOWN_MARKET,
                         f"this engine matches {self.symbol}, not {cmd.market}", out, cmd.order_id)
            return None
        order = self.book.get(cmd.order_id)
        if order is None:
            self._refuse(cmd, RejectReason.UNKNOWN_ORDER,
                         f"order {cmd.order_id} is not live in {cmd.market}", out, cmd.order_id)
            return None
        if order.account != cmd.account:
            self._refuse(cmd, RejectReason.NOT_ORDER_OWNER,
                         f"order {cmd.order_id} belongs to another account", out, cmd.order_id)
            return None
        return order

    def _cancel(self, cmd: CancelOrder, out: list) -> None:
        order = self.book.get(cmd.order_id)
        if order is None or order.account != cmd.account or cmd.market != self.symbol:
            waiting = self.triggers.get(cmd.order_id)
            if waiting is not None and waiting.account == cmd.account and cmd.market == self.symbol:
                self._close_conditional(self.triggers.take(cmd.order_id), CANCELED, cmd.ts, out)
                return
            self._find(cmd, out)  # names the reason
            return
        size = self.book.remove(order)
        (self._bid_changes if order.side is BUY else self._ask_changes)[order.price] = size
        self.seq += 1
        out.append(OrderClosed(
            self.producer, self.seq, self.symbol, order.account, order.order_id,
            CANCELED, order.size - order.remaining, order.remaining, cmd.ts,
        ))

    def _cancel_all(self, cmd: CancelAllOrders, out: list) -> None:
        if cmd.market != self.symbol:
            return self._refuse(cmd, RejectReason.UNKNOWN_MARKET,
                                f"this engine matches {self.symbol}, not {cmd.market}", out)
        mine = [order for side in (BUY, SELL) for order in self.book.iter_orders(side)
                if order.account == cmd.account]
        mine.sort(key=lambda order: order.priority)
        for order in mine:
            self._close_resting(order, cmd.reason, cmd.ts, out)
        for waiting in self.triggers.of(cmd.account):
            self._close_conditional(self.triggers.take(waiting.order_id), cmd.reason, cmd.ts, out)
        return None

    def _amend(self, cmd: AmendOrder, out: list) -> None:
        waiting = self.triggers.get(cmd.order_id)
        if waiting is not None and waiting.account == cmd.account and cmd.market == self.symbol:
            return self._refuse(cmd, RejectReason.NOT_AMENDABLE, "a conditional order is cancelled and placed "
                                "again, not amended", out, cmd.order_id)
        order = self._find(cmd, out)
        if order is None:
            return None
        price, size = cmd.price, cmd.size
        filled = order.size - order.remaining
        if price <= 0:
            return self._refuse(cmd, RejectReason.INVALID_PRICE,
                                f"price must be positive, got {price}", out, order.order_id)
        if size <= filled:
            return self._refuse(cmd, RejectReason.INVALID_SIZE,
                                f"new size {size} must exceed the {filled} lots already filled",
                                out, order.order_id)
        if size - filled < self.min_size:
            return self._refuse(cmd, RejectReason.BELOW_MIN_SIZE,
                                f"{size - filled} lots would remain, below the minimum of "
                                f"{self.market.min_size}", out, order.order_id)
        if price != order.price:
            problem = self._band_violation(price, cmd.reference_price, cmd.index_price)
            if problem:
                return self._refuse(cmd, RejectReason.OUTSIDE_PRICE_BAND, problem, out, order.order_id)
        best = self.book.best(SELL if order.side is BUY else BUY)
        crosses = best is not None and (
            best.price <= price if order.side is BUY else best.price >= price
        )
        if crosses and order.tif is POST_ONLY:
            assert best is not None  # it crosses
            return self._refuse(cmd, RejectReason.WOULD_CROSS,
                                f"post-only price {self.market.format_price(price)} would trade "
                                f"against {self.market.format_price(best.price)}", out, order.order_id)
        remaining = size - filled
        ts = cmd.ts
        if price == order.price and remaining <= order.remaining and not cmd.requeue:
            level_size = self.book.reduce(order, order.remaining - remaining)
            order.size = size
            (self._bid_changes if order.side is BUY else self._ask_changes)[price] = level_size
            self.seq += 1
            out.append(OrderAmended(self.producer, self.seq, self.symbol, order.account,
                                    order.order_id, price, size, remaining, True, ts))
            return None
        level_size = self.book.remove(order)
        (self._bid_changes if order.side is BUY else self._ask_changes)[order.price] = level_size
        order = order.requeued()
        order.price, order.size, order.remaining = price, size, remaining
        self.seq += 1
        out.append(OrderAmended(self.producer, self.seq, self.symbol, order.account,
                                order.order_id, price, size, remaining, False, ts))
        if crosses and self._take(order, price, ts, out):
            return None
        if order.remaining == 0:
            self._close(order, FILLED, ts, out)
        else:
            self._rest(order)
        return None

    # --------------------------------------------------------------------- transfers

    def _transfer(self, cmd: PositionTransfer, out: list) -> None:
        if cmd.market != self.symbol:
            return self._refuse(cmd, RejectReason.UNKNOWN_MARKET,
                                f"this engine matches {self.symbol}, not {cmd.market}", out)
        if cmd.size <= 0:
            return self._refuse(cmd, RejectReason.INVALID_SIZE, f"size must be positive, got {cmd.size}", out)
        if cmd.price <= 0:
            return self._refuse(cmd, RejectReason.INVALID_PRICE, f"price must be positive, got {cmd.price}", out)
        if cmd.buyer == cmd.seller:
            return self._refuse(cmd, RejectReason.INVALID_SIZE, "buyer and seller are the same account", out)
        self.trade_id += 1
        self.seq += 1
        out.append(Fill(self.producer, self.seq, self.symbol, self.trade_id, cmd.price,
                        cmd.size, BUY, cmd.buyer, 0, cmd.seller, 0, cmd.liquidity, cmd.ts))
        for account, moved in ((cmd.buyer, cmd.size), (cmd.seller, -cmd.size)):
            key = self._key(account)
            position = self.positions.get(key, 0) + moved
            if position:
                self.positions[key] = position
            else:
                self.positions.pop(key, None)
                self._flat.append(account)
        return None
