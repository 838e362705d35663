"""A scripted matching session: makers quote, takers trade, and the book is printed.

It drives the pure matching engine directly (no broker, no services) so that a new user
sees, in one command, what the engine does with each order type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from exchange.markets import Market
from exchange.matching import MatchingEngine
from schemas.enums import CloseReason, OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import (
    AmendOrder,
    CancelOrder,
    CommandRejected,
    Fill,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
)


class DemoSession:
    """Feeds commands written in decimal prices and sizes to one engine and narrates."""

    def __init__(self, market: Market, echo: Callable[[str], Any]):
        self.market = market
        self.engine = MatchingEngine(market)
        self.echo = echo
        self.seq = 0
        self.order_id = 0
        self.trades: list[Fill] = []

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def place(self, account: str, side: Side, size: str, price: str | None = None,
              tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False,
              stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER) -> int:
        self.order_id += 1
        market = self.market
        kind = OrderType.MARKET if price is None else OrderType.LIMIT
        ticks = 0 if price is None else market.price_to_ticks(price)
        what = "MARKET" if price is None else f"LIMIT {tif.name} @ {price}"
        self.echo(f"> {account}: {side.name} {size} {what}"
                  + (" reduce-only" if reduce_only else ""))
        self._run(NewOrder("demo", self._next(), account, market.symbol, self.order_id,
                           f"{account}-{self.order_id}", side, kind, tif, ticks,
                           market.size_to_lots(size), reduce_only, stp, self.seq))
        return self.order_id

    def cancel(self, account: str, order_id: int) -> None:
        self.echo(f"> {account}: cancel #{order_id}")
        self._run(CancelOrder("demo", self._next(), account, self.market.symbol, order_id, self.seq))

    def amend(self, account: str, order_id: int, price: str, size: str) -> None:
        self.echo(f"> {account}: amend #{order_id} to {size} @ {price}")
        self._run(AmendOrder("demo", self._next(), account, self.market.symbol, order_id,
                             self.market.price_to_ticks(price), self.market.size_to_lots(size), self.seq))

    def _run(self, command: Any) -> None:
        market = self.market
        for event in self.engine.apply(command):
            if isinstance(event, OrderAccepted):
                self.echo(f"    accepted #{event.order_id}")
            elif isinstance(event, OrderRejected):
                self.echo(f"    REJECTED #{event.order_id}: {event.reason.name} ({event.detail})")
            elif isinstance(event, CommandRejected):
                self.echo(f"    REFUSED {event.command} #{event.order_id}: {event.reason.name} ({event.detail})")
            elif isinstance(event, Fill):
                self.trades.append(event)
                self.echo(f"    fill: {event.taker_account} {event.taker_side.name} "
                          f"{market.format_size(event.size)} @ {market.format_price(event.price)} "
                          f"from {event.maker_account} (#{event.maker_order_id})")
            elif isinstance(event, OrderAmended):
                kept = "keeps" if event.priority_kept else "loses"
                self.echo(f"    amended #{event.order_id}: {market.format_size(event.remaining)} left, {kept} priority")
            elif isinstance(event, OrderClosed) and event.reason is not CloseReason.FILLED:
                self.echo(f"    closed #{event.order_id}: {event.reason.name}, "
                          f"{market.format_size(event.remaining)} unfilled")

    def print_trades(self) -> None:
        market = self.market
        self.echo("\nTrades")
        self.echo(f"  {'id':>3}  {'taker':<6} {'side':<4} {'size':>8} {'price':>10}  maker")
        for fill in self.trades:
            self.echo(f"  {fill.trade_id:>3}  {fill.taker_account:<6} {fill.taker_side.name:<4} "
                      f"{market.format_size(fill.size):>8} {market.format_price(fill.price):>10}  {fill.maker_account}")

    def print_book(self, depth: int = 5) -> None:
        market, book = self.market, self.engine.book
        self.echo(f"\nBook {market.symbol} (top {depth})")
        self.echo(f"  {'bid size':>10} {'bid':>10} | {'ask':<10} {'ask size':<10}")
        bids, asks = book.levels(Side.BUY, depth), book.levels(Side.SELL, depth)
        for row in range(max(len(bids), len(asks))):
            bid = bids[row] if row < len(bids) else None
            ask = asks[row] if row < len(asks) else None
            left = f"{market.format_size(bid[1]):>10} {market.format_price(bid[0]):>10}" if bid else " " * 21
            right = f"{market.format_price(ask[0]):<10} {market.format_size(ask[1]):<10}" if ask else ""
            self.echo(f"  {left} | {right}")
        self.echo("\nPositions: " + ", ".join(
            f"{key.account} {market.format_size(size)}" for key, size in sorted(self.engine.positions.items())))


def run_demo(market: Market, echo: Callable[[str], Any] = print) -> DemoSession:
    """The scripted session; returns it so that callers (and tests) can inspect it."""
    session = DemoSession(market, echo)
    mid = market.price_to_ticks(_mid_price(market))
    tick = market.tick_size

    def px(offset_ticks: int) -> str:
        return market.format_price(mid + offset_ticks)

    lot = market.lot_size
    size = lambda lots: market.format_size(lots)  # noqa: E731
    echo(f"perpsim matching demo on {market.symbol} (tick {tick}, lot {lot})\n")
    for level in range(1, 4):
        session.place("maker", Side.BUY, size(100 * level), px(-10 * level))
        session.place("maker", Side.SELL, size(100 * level), px(10 * level))
    session.place("alice", Side.BUY, size(250), px(20), tif=TimeInForce.IOC)
    session.place("bob", Side.SELL, size(150), tif=TimeInForce.IOC)
    session.place("carol", Side.BUY, size(50), px(30), tif=TimeInForce.POST_ONLY)
    resting = session.place("carol", Side.BUY, size(80), px(-5), tif=TimeInForce.POST_ONLY)
    session.amend("carol", resting, px(-5), size(40))
    session.place("dave", Side.SELL, size(1000), px(-40), tif=TimeInForce.FOK)
    session.place("alice", Side.BUY, size(300), reduce_only=True)
    session.place("alice", Side.SELL, size(300), px(-10), reduce_only=True)
    session.place("maker", Side.SELL, size(10), px(-20), stp=SelfTradePrevention.CANCEL_TAKER)
    session.cancel("maker", 5)
    session.cancel("carol", 999)
    session.print_trades()
    session.print_book()
    return session


def _mid_price(market: Market) -> str:
    return {"BTC": "65000", "ETH": "3500", "SOL": "150"}.get(market.base, "100")
