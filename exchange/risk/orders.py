"""Orders from placement to their end: admission, reservations and their release.

Margin for orders: an order reserves ``ceil(open notional / L) + ceil(open notional ·
taker fee)`` of the cross bucket's available margin when accepted, where the open
notional is the part of the order that would grow the position (a part that reduces it
needs nothing), valued at the limit price, or for a market order at the mark moved by the
price band against the trader. Reduce-only orders reserve nothing. The reservation is
released pro rata as the order fills (``exchange.risk.settlement``) and entirely when it
ends.

Conditional orders (docs/matching.md, "Conditional orders") reserve nothing while they
wait: risk checks at placement what it can then (the account, the market, the size, a
position to reduce for reduce-only and close-position) and forwards them to matching,
which holds them. When matching reports one triggered (``OrderTriggered``), risk checks
its margin as for a new order, at the prices of then, and sends it back as a plain
``NewOrder`` with the same id, or refuses it (``OrderRejected`` with the reason).
"""

from __future__ import annotations

from exchange.accounts import (
    PPM,
    Account,
    OpenOrder,
    Position,
    available_to_trade,
    ceil_div,
)
from exchange.errors import Refused
from exchange.markets import Market, protection_price
from exchange.risk.partition import Partition
from schemas.enums import (
    Condition,
    OrderType,
    RejectReason,
    Side,
)
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    AmendOrder,
    CancelOrder,
    CommandRejected,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
    PlaceOrder,
)


class OrderAdmission:
    """Orders from placement to their end: admission, reservations and their release."""

    def __init__(self, p: Partition) -> None:
        self.p = p

    def reference_price(self, market: Market) -> int:
        return self.p.marks.marks.get(market.symbol) or self.p.marks.last.get(market.symbol, 0)

    def reservation(self, position: Position, side: Side, price: int, size: int) -> int:
        """Margin an order must reserve: IM plus taker fee on the part that grows the position."""
        reducing = min(size, abs(position.size)) if position.size and position.sign != side else 0
        opening = size - reducing
        if not opening:
            return 0
        market = position.market
        notional = price * opening * market.value_per_tick_lot
        after = (abs(position.size) - reducing + opening) * price * market.value_per_tick_lot
        leverage = position.effective_leverage(after)
        return ceil_div(notional, leverage) + ceil_div(notional * market.taker_fee_ppm, PPM)

    def protection(self, market: Market, side: Side) -> int:
        """The worst price a market order may trade at, as matching computes it
        (``exchange.markets.protection_price``)."""
        reference = self.reference_price(market)
        if not reference:
            raise Refused(RejectReason.NO_LIQUIDITY, f"no mark price for {market.symbol} yet")
        return protection_price(reference, self.p.index.get(market.symbol, 0), market.price_band_ppm,
                                side is Side.BUY)

    def order_price(self, market: Market, cmd: PlaceOrder) -> int:
        if cmd.order_type is OrderType.MARKET:
            if cmd.price:
                raise Refused(RejectReason.INVALID_PRICE, "a market order takes no price")
            return self.protection(market, cmd.side)
        if cmd.price <= 0:
            raise Refused(RejectReason.INVALID_PRICE, f"price must be positive, got {cmd.price}")
        return cmd.price

    def refuse_place(self, cmd: PlaceOrder, refused: Refused, out: list) -> None:
        out.append(OrderRejected(self.p.producer, self.p.next_seq(), cmd.market, cmd.account, 0,
                                 cmd.client_order_id, refused.reason, refused.detail, cmd.ts))

    def new_order_id(self) -> int:
        self.p.order_counter += 1
        return (self.p.order_counter << 16) | self.p.partition

    def not_liquidating(self, account: Account, position: Position) -> None:
        if position.bucket() in account.liquidating:
            raise Refused(RejectReason.ACCOUNT_IN_LIQUIDATION, f"the {position.mode.name.lower()} bucket holding "
                                                               f"{position.market.symbol} is being liquidated")

    def place(self, cmd: PlaceOrder, out: list) -> None:
        if cmd.condition is not Condition.NONE:
            return self.place_conditional(cmd, out)
        try:
            account = self.p.get_account(cmd.account)
            market = self.p.get_market(cmd.market)
            if cmd.size <= 0:
                raise Refused(RejectReason.INVALID_SIZE, f"size must be positive, got {cmd.size}")
            price = self.order_price(market, cmd)
            position = self.p.position(account, market)
            self.not_liquidating(account, position)
            if cmd.reduce_only:
                if not position.size or position.sign == cmd.side:
                    raise Refused(RejectReason.REDUCE_ONLY_WOULD_INCREASE,
                                  f"position is {market.format_size(position.size)}; a reduce-only "
                                  f"{cmd.side.name} cannot reduce it")
                reserve = 0
            else:
                reserve = self.reservation(position, cmd.side, price, cmd.size)
                if reserve:
                    available = available_to_trade(account, self.p.marks)
                    if reserve > available:
                        raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                      f"order needs {self.p.money(reserve)} of margin, "
                                      f"available {self.p.money(available)}")
        except Refused as refused:
            return self.refuse_place(cmd, refused, out)
        order_id = self.new_order_id()
        account.orders[order_id] = OpenOrder(order_id, market.symbol, int(cmd.side), price, cmd.size,
                                             reserve, cmd.reduce_only, cmd.client_order_id)
        account.reserved += reserve
        out.append(NewOrder(self.p.producer, self.p.next_seq(), cmd.account, market.symbol, order_id,
                            cmd.client_order_id, cmd.side, cmd.order_type, cmd.tif, cmd.price, cmd.size,
                            cmd.reduce_only, cmd.stp, cmd.ts, self.p.marks.marks.get(market.symbol, 0),
                            index_price=self.p.index.get(market.symbol, 0)))
        return None

    def place_conditional(self, cmd: PlaceOrder, out: list) -> None:
        """Check what can be checked now and forward it; its margin is checked when it fires."""
        try:
            account = self.p.get_account(cmd.account)
            market = self.p.get_market(cmd.market)
            if cmd.close_position:
                if cmd.size:
                    raise Refused(RejectReason.INVALID_SIZE, "a close-position order takes no size: it closes "
                                                             "the whole position when it fires")
            elif cmd.size <= 0:
                raise Refused(RejectReason.INVALID_SIZE, f"size must be positive, got {cmd.size}")
            if cmd.order_type is OrderType.MARKET and cmd.price:
                raise Refused(RejectReason.INVALID_PRICE, "a stop-market order takes no price")
            position = self.p.position(account, market)
            self.not_liquidating(account, position)
            if (cmd.reduce_only or cmd.close_position) and (not position.size or position.sign == cmd.side):
                raise Refused(RejectReason.REDUCE_ONLY_WOULD_INCREASE,
                              f"position is {market.format_size(position.size)}; a "
                              f"{'close-position' if cmd.close_position else 'reduce-only'} {cmd.side.name} "
                              f"cannot reduce it")
        except Refused as refused:
            return self.refuse_place(cmd, refused, out)
        order_id = self.new_order_id()
        reduce_only = cmd.reduce_only or cmd.close_position
        account.orders[order_id] = OpenOrder(order_id, market.symbol, int(cmd.side), cmd.price, cmd.size, 0,
                                             reduce_only, cmd.client_order_id, conditional=True)
        out.append(NewOrder(self.p.producer, self.p.next_seq(), cmd.account, market.symbol, order_id,
                            cmd.client_order_id, cmd.side, cmd.order_type, cmd.tif, cmd.price, cmd.size,
                            reduce_only, cmd.stp, cmd.ts, self.p.marks.marks.get(market.symbol, 0), False,
                            cmd.condition, cmd.trigger_price, cmd.trigger_source, cmd.close_position,
                            cmd.activation_price, cmd.callback_ppm, self.p.index.get(market.symbol, 0)))
        return None

    def triggered(self, event: OrderTriggered, out: list) -> None:
        """A conditional order fired: check its margin now, and send it to the book or refuse it."""
        account = self.p.accounts.get(event.account)
        order = account.orders.get(event.order_id) if account is not None else None
        if account is None or order is None:
            return None  # another partition's account
        market = self.p.listed(event.market)
        position = self.p.position(account, market)
        try:
            self.not_liquidating(account, position)
            price = self.protection(market, event.side) if event.order_type is OrderType.MARKET else event.price
            reserve = 0 if event.reduce_only else self.reservation(position, event.side, price, event.size)
            if reserve:
                available = available_to_trade(account, self.p.marks)
                if reserve > available:
                    raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                  f"the triggered order needs {self.p.money(reserve)} of margin, "
                                  f"available {self.p.money(available)}")
        except Refused as refused:
            self.release(account, event.order_id)
            out.append(OrderRejected(self.p.producer, self.p.next_seq(), event.market, event.account, event.order_id,
                                     event.client_order_id, refused.reason, refused.detail, event.ts))
            return None
        order.conditional = False
        order.price, order.remaining, order.reserved = price, event.size, reserve
        account.reserved += reserve
        out.append(NewOrder(self.p.producer, self.p.next_seq(), event.account, market.symbol, event.order_id,
                            event.client_order_id, event.side, event.order_type, event.tif, event.price,
                            event.size, event.reduce_only, event.stp, event.ts,
                            self.p.marks.marks.get(market.symbol, 0), index_price=self.p.index.get(market.symbol, 0)))
        return None

    def cancel(self, cmd: CancelOrder, out: list) -> None:
        try:
            account = self.p.get_account(cmd.account)
            order = account.orders.get(cmd.order_id)
            if order is None or order.market != cmd.market:
                raise Refused(RejectReason.UNKNOWN_ORDER, f"order {cmd.order_id} is not open in {cmd.market}")
        except Refused as refused:
            return self.p.refuse(cmd, refused, out, cmd.order_id)
        out.append(CancelOrder(self.p.producer, self.p.next_seq(), cmd.account, cmd.market, cmd.order_id, cmd.ts))
        return None

    def amend(self, cmd: AmendOrder, out: list) -> None:
        try:
            account = self.p.get_account(cmd.account)
            order = account.orders.get(cmd.order_id)
            if order is None or order.market != cmd.market:
                raise Refused(RejectReason.UNKNOWN_ORDER, f"order {cmd.order_id} is not open in {cmd.market}")
            if order.conditional:
                raise Refused(RejectReason.NOT_AMENDABLE, "a conditional order is cancelled and placed again, "
                                                          "not amended")
            if cmd.price <= 0:
                raise Refused(RejectReason.INVALID_PRICE, f"price must be positive, got {cmd.price}")
            market = self.p.markets[order.market]
            position = self.p.position(account, market)
            new = 0
            if not order.reduce_only:
                new = self.reservation(position, Side(order.side), cmd.price, max(cmd.size, 0))
                extra = new - order.reserved
                if extra > 0:
                    available = available_to_trade(account, self.p.marks)
                    if extra > available:
                        raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                      f"amend needs {self.p.money(extra)} more margin, "
                                      f"available {self.p.money(available)}")
        except Refused as refused:
            return self.p.refuse(cmd, refused, out, cmd.order_id)
        if new > order.reserved:  # hold the larger until matching confirms
            account.reserved += new - order.reserved
            order.reserved = new
        out.append(AmendOrder(self.p.producer, self.p.next_seq(), cmd.account, cmd.market, cmd.order_id,
                              cmd.price, cmd.size, cmd.ts, self.p.marks.marks.get(cmd.market, 0), cmd.requeue,
                              self.p.index.get(cmd.market, 0)))
        return None

    def release(self, account: Account, order_id: int) -> OpenOrder | None:
        order = account.orders.pop(order_id, None)
        if order is not None:
            account.reserved -= order.reserved
        return order

    def order_accepted(self, event: OrderAccepted, out: list) -> None:
        account = self.p.accounts.get(event.account)
        order = account.orders.get(event.order_id) if account else None
        if order is not None and order.price != event.price:
            order.price = event.price  # a market order's protection price
        return None

    def order_ended(self, event: OrderRejected | OrderClosed, out: list) -> None:
        """Matching refused or ended an order: release its reservation."""
        if event.order_id & LIQUIDATION_ORDER_BIT:
            out.append(event)  # forwarded to the liquidation engine
            return None
        account = self.p.accounts.get(event.account)
        if account is not None:
            self.release(account, event.order_id)
        return None

    def order_amended(self, event: OrderAmended, out: list) -> None:
        account = self.p.accounts.get(event.account)
        order = account.orders.get(event.order_id) if account else None
        if account is None or order is None:
            return None
        order.price, order.remaining = event.price, event.remaining
        if not order.reduce_only:
            position = self.p.position(account, self.p.markets[order.market])
            new = self.reservation(position, Side(order.side), order.price, order.remaining)
            account.reserved += new - order.reserved
            order.reserved = new
        return None

    def matching_refused(self, event: CommandRejected, out: list) -> None:
        """Matching refused a cancel or amend; an amend's larger reservation stays until
        the order ends (conservative)."""
        return None
