"""Conditional orders in a market's matching engine: placing, firing and closing them.

``ConditionalOrders`` is the part of ``exchange.matching.MatchingEngine`` that handles
``NewOrder``s with a ``condition`` (docs/matching.md, "Conditional orders"). They wait off
the book in ``exchange.triggers`` (the trigger book), watching the mark (``MarkPrice``
commands) or the last trade. They are checked after every message that moves their
price, once what that message caused is out (``_after``); each one reached is taken off
and handed to risk as an ``OrderTriggered`` (risk checks margin and sends it back as a
plain ``NewOrder``). A close-position order is closed (``POSITION_CLOSED``) when its
position goes to zero.

The engine is a ``ConditionalOrders``: the attributes declared here are the engine's, and
``_reject``, ``_refuse`` and ``_capacity`` are its own (declared here, defined there).
"""

from __future__ import annotations

from typing import Any, Final

from exchange.markets import Market
from exchange.triggers import (
    CALLBACK_STEP_PPM,
    MAX_CALLBACK_PPM,
    MIN_CALLBACK_PPM,
    Conditional,
    TriggerBook,
)
from schemas.enums import (
    CloseReason,
    Condition,
    Liquidity,
    OrderType,
    RejectReason,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    Fill,
    MarkPrice,
    NewOrder,
    OrderAccepted,
    OrderClosed,
    OrderTriggered,
)
from schemas.keys import PositionKey

SELL: Final = Side.SELL
MARKET: Final = OrderType.MARKET
IOC: Final = TimeInForce.IOC
BOOK: Final = Liquidity.BOOK
MARK: Final = TriggerSource.MARK
LAST: Final = TriggerSource.LAST


class ConditionalOrders:
    """Conditional orders of one market, waiting in ``triggers``."""

    market: Market
    symbol: str
    producer: str
    seq: int
    priority: int
    trade_id: int
    last_price: int
    positions: dict[PositionKey, int]
    triggers: TriggerBook
    _flat: list[str]
    _traded: int

    def _reject(self, cmd: NewOrder, reason: RejectReason, detail: str, out: list) -> None:
        raise NotImplementedError

    def _refuse(self, cmd: Any, reason: RejectReason, detail: str, out: list, order_id: int = 0) -> None:
        raise NotImplementedError

    def _capacity(self, account: str, side: Side) -> int:
        raise NotImplementedError

    def position(self, account: str) -> int:
        raise NotImplementedError

    def _current(self, source: TriggerSource) -> int:
        return self.triggers.prices[MARK] if source is MARK else self.last_price

    def _new_conditional(self, cmd: NewOrder, out: list) -> None:
        market = self.market
        condition, side, source = cmd.condition, cmd.side, cmd.trigger_source
        fmt = market.format_price
        if condition is Condition.TRAILING_STOP:
            rate = cmd.callback_ppm
            if not MIN_CALLBACK_PPM <= rate <= MAX_CALLBACK_PPM or rate % CALLBACK_STEP_PPM:
                return self._reject(cmd, RejectReason.INVALID_TRIGGER,
                                    f"callback rate {rate / 10_000:g}% must be {MIN_CALLBACK_PPM / 10_000:g}% to "
                                    f"{MAX_CALLBACK_PPM / 10_000:g}% in steps of {CALLBACK_STEP_PPM / 10_000:g}%",
                                    out)
            if cmd.order_type is not MARKET:
                return self._reject(cmd, RejectReason.INVALID_TRIGGER, "a trailing stop becomes a market order", out)
            key = cmd.activation_price
            trigger = 0
        else:
            if cmd.trigger_price <= 0:
                return self._reject(cmd, RejectReason.INVALID_TRIGGER,
                                    f"a {condition.name.lower()} order needs a trigger price", out)
            key = trigger = cmd.trigger_price
        if cmd.order_type is MARKET:
            tif, price = IOC, 0
        else:
            tif, price = cmd.tif, cmd.price
            if price <= 0:
                return self._reject(cmd, RejectReason.INVALID_PRICE,
                                    f"a {condition.name.lower()}-limit order needs a price, got {price}", out)
        if cmd.close_position and cmd.order_type is not MARKET:
            return self._reject(cmd, RejectReason.INVALID_TRIGGER, "close-position orders become market orders", out)
        if (cmd.reduce_only or cmd.close_position) and self._capacity(cmd.account, side) == 0:
            return self._reject(cmd, RejectReason.REDUCE_ONLY_WOULD_INCREASE,
                                f"position is {market.format_size(self.position(cmd.account))}; "
                                f"a reduce-only {side.name} cannot reduce it", out)
        current = self._current(source)
        order = Conditional(cmd.order_id, cmd.account, side, condition, cmd.order_type, tif, price,
                            0 if cmd.close_position else cmd.size, cmd.reduce_only or cmd.close_position,
                            cmd.close_position, cmd.stp, cmd.client_order_id, trigger, source,
                            cmd.activation_price, cmd.callback_ppm)
        if current and key:
            rising = order.fires_rising()
            if (current >= key) if rising else (current <= key):
                what = "activation" if condition is Condition.TRAILING_STOP else "trigger"
                return self._reject(cmd, RejectReason.WOULD_TRIGGER_IMMEDIATELY,
                                    f"{what} price {fmt(key)} is already reached: the {source.name.lower()} "
                                    f"price is {fmt(current)}; a {side.name} {condition.name.lower()} needs it "
                                    f"{'above' if rising else 'below'}", out)
        self.seq += 1
        out.append(OrderAccepted(
            self.producer, self.seq, market.symbol, cmd.account, cmd.order_id, cmd.client_order_id, side,
            cmd.order_type, tif, price, order.size, order.reduce_only, cmd.ts, condition, trigger, source,
            cmd.close_position, cmd.activation_price, cmd.callback_ppm,
        ))
        self.priority += 1
        order.priority = self.priority
        self.triggers.prices[LAST] = self.last_price
        self.triggers.add(order)
        return None

    def _close_conditional(self, order: Conditional, reason: CloseReason, ts: int, out: list) -> None:
        self.seq += 1
        out.append(OrderClosed(self.producer, self.seq, self.symbol, order.account, order.order_id,
                               reason, 0, order.size, ts))

    def _mark(self, cmd: MarkPrice, out: list) -> None:
        if cmd.market != self.symbol:
            return self._refuse(cmd, RejectReason.UNKNOWN_MARKET,
                                f"this engine matches {self.symbol}, not {cmd.market}", out)
        if cmd.mark_price <= 0:
            return self._refuse(cmd, RejectReason.INVALID_PRICE, "a mark price must be positive", out)
        if not self.triggers.orders:
            self.triggers.prices[MARK] = cmd.mark_price
        return None  # _after fires what it reached

    def _after(self, command: Any, out: list) -> None:
        """What a command's prices reached: close-position orders of accounts it left flat,
        then the conditional orders its trades (and, for a mark, the mark) fired."""
        ts = command.ts
        if self._flat:
            for account in self._flat:
                if not self.position(account):
                    for waiting in self.triggers.of(account):
                        if waiting.close_position:
                            self._close_conditional(self.triggers.take(waiting.order_id),
                                                    CloseReason.POSITION_CLOSED, ts, out)
            self._flat.clear()
        if type(command) is MarkPrice:
            if command.market == self.symbol and command.mark_price > 0:
                self._fire(self.triggers.update(MARK, command.mark_price), command.mark_price, ts, out)
            return
        if self.trade_id == self._traded:
            return
        self._traded = self.trade_id  # the trades of this command are new
        first = last = 0
        for event in out:
            if type(event) is Fill and event.liquidity is BOOK:
                if not first:
                    first = event.price
                last = event.price
        if first:
            for price in (first, last) if first != last else (first,):
                self._fire(self.triggers.update(LAST, price), price, ts, out)

    def _fire(self, fired: list, price: int, ts: int, out: list) -> None:
        for trigger, order in fired:
            size = order.size
            if order.close_position:
                position = self.position(order.account)
                if not position or (position > 0) != (order.side is SELL):
                    self._close_conditional(order, CloseReason.POSITION_CLOSED, ts, out)
                    continue
                size = abs(position)
            self.seq += 1
            out.append(OrderTriggered(self.producer, self.seq, self.symbol, order.account, order.order_id,
                                      order.client_order_id, order.side, order.order_type, order.tif, order.price,
                                      size, order.reduce_only, order.stp, order.condition, trigger, price,
                                      order.source, ts))
        return None
