"""A strategy class (``services.sim.strategy.Strategy``) against a running exchange, by the
native client: ``perpsim run --strategy FILE:Class --bootstrap HOST:PORT``.

The same callbacks as in-process (``on_start``, ``on_mark``, ``on_book``, ``on_trade``,
``on_fill``, ``on_order``, ``on_margin``, ``on_liquidation``), from the venue's
``market.data`` and the strategy account's own events, called one at a time in order of
arrival; the same context methods (``buy``, ``sell``, ``stop``, ``trailing_stop``,
``cancel``, ``set_margin_mode``, ``set_leverage``, ``position``, ``balance``,
``open_orders``, ``conditional_orders``), sent as commands to ``risk.in`` and answered by
the venue. ``ctx.now`` is seconds of wall time since the start. The account is deposited
``Strategy.deposit`` at the start; at the end its open orders are cancelled and a report
is written: its equity over time, fills, fees, funding, drawdown, Sharpe and Sortino.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from exchange.core import money
from exchange.markets import Market
from schemas import MARKET_DATA
from schemas.enums import (
    Condition,
    IncomeKind,
    MarginMode,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    BBO,
    Fill,
    LiquidationOutcome,
    MarginSnapshot,
    MarkPrice,
    OrderAccepted,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
    Trade,
)
from services.client import Client, Rejected
from services.runtime.bus import Bus, TolerantReader
from services.sim.strategy import Strategy, StrategyError, StrategyStats

log = logging.getLogger(__name__)
SAMPLE_EVERY_S = 1.0


@dataclass
class LiveStrategyResult:
    strategy: Strategy
    account: str
    markets: dict[str, Market]
    stats: StrategyStats
    seconds: float = 0.0
    equity: list[tuple[float, int]] = field(default_factory=list)  # (s, micro units)
    marks: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # market -> (s, ticks)
    fills: list[tuple[float, Fill]] = field(default_factory=list)
    fees: int = 0
    funding: int = 0
    interrupted: bool = False


class LiveContext:
    """The strategy's account on the running exchange (``Context``'s methods)."""

    def __init__(self, client: Client, markets: dict[str, Market], account: str, stats: StrategyStats):
        self.client, self.markets, self.account, self.stats = client, markets, account, stats
        self.started = time.monotonic()
        self.snapshot: MarginSnapshot | None = None
        self.positions: dict[str, int] = {}  # from its fills, ahead of the snapshots
        self.live: dict[int, str] = {}  # open order id -> market
        self.waiting: dict[int, str] = {}  # conditional order id -> market

    @property
    def now(self) -> float:
        return time.monotonic() - self.started

    def position(self, market: str) -> str:
        return self.markets[market].format_size(self.positions.get(market, 0))

    def balance(self) -> str:
        return f"{(self.snapshot.balance if self.snapshot else 0) / 1e6:.6f}"

    def open_orders(self, market: str) -> list[int]:
        return [o for o, m in {**self.live, **self.waiting}.items() if m == market]

    def conditional_orders(self, market: str) -> list[int]:
        return [o for o, m in self.waiting.items() if m == market]

    async def _count(self, call) -> int | None:
        self.stats.orders += 1
        started = time.perf_counter()
        try:
            result = await call
        except Rejected:
            self.stats.rejected += 1
            return None
        finally:
            self.stats.latencies.append(time.perf_counter() - started)
        return result.order_id

    async def buy(self, market: str, size: str, price: str | None = None,
                  tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False) -> int | None:
        return await self._count(self.client.place(self.account, market, Side.BUY, size, price,
                                                   tif=TimeInForce.IOC if price is None else tif,
                                                   reduce_only=reduce_only))

    async def sell(self, market: str, size: str, price: str | None = None,
                   tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False) -> int | None:
        return await self._count(self.client.place(self.account, market, Side.SELL, size, price,
                                                   tif=TimeInForce.IOC if price is None else tif,
                                                   reduce_only=reduce_only))

    async def stop(self, market: str, side: Side, size: str, trigger: str, *, price: str | None = None,
                   take_profit: bool = False, source: TriggerSource = TriggerSource.MARK, reduce_only: bool = True,
                   close_position: bool = False) -> int | None:
        return await self._count(self.client.place_conditional(
            self.account, market, side, size, Condition.TAKE_PROFIT if take_profit else Condition.STOP,
            trigger=trigger, price=price, source=source, reduce_only=reduce_only and not close_position,
            close_position=close_position))

    async def trailing_stop(self, market: str, side: Side, size: str, callback_pct: str, *,
                            activation: str | None = None, source: TriggerSource = TriggerSource.MARK,
                            reduce_only: bool = True) -> int | None:
        return await self._count(self.client.place_conditional(
            self.account, market, side, size, Condition.TRAILING_STOP, callback_pct=callback_pct,
            activation=activation, source=source, reduce_only=reduce_only))

    async def cancel(self, market: str, order_id: int) -> None:
        try:
            await self.client.cancel(self.account, market, order_id)
        except Rejected:  # filled or gone meanwhile, as in-process
            pass

    async def set_margin_mode(self, market: str, mode: MarginMode) -> None:
        try:
            await self.client.set_margin_mode(self.account, market, mode)
        except Rejected as exc:
            log.warning("strategy: margin mode of %s refused: %s", market, exc)

    async def set_leverage(self, market: str, leverage: int) -> None:
        try:
            await self.client.set_leverage(self.account, market, leverage)
        except Rejected as exc:
            log.warning("strategy: leverage of %s refused: %s", market, exc)


class LiveStrategyRunner:
    """Runs ``strategy`` from ``account`` on the exchange behind ``bus``."""

    def __init__(self, bus: Bus, markets: dict[str, Market], strategy: Strategy, account: str):
        unknown = [m for m in strategy.markets if m not in markets]
        if unknown:
            raise StrategyError(f"{type(strategy).__name__} trades {', '.join(unknown)}, not a market here; "
                                f"markets: {', '.join(markets)}")
        self.bus, self.markets, self.strategy, self.account = bus, markets, strategy, account
        self.stats = StrategyStats()
        self.client = Client(bus, markets, producer=f"strategy-{account}", keep=10_000)
        self.context = LiveContext(self.client, markets, account, self.stats)
        self.result = LiveStrategyResult(strategy, account, markets, self.stats)
        self.calls: asyncio.Queue = asyncio.Queue()
        self.watched = set(strategy.markets)
        self.reader = TolerantReader(MARKET_DATA, "strategy")
        self._from = None  # the client's event count at the start: older events are history

    # ------------------------------------------------------------ callbacks

    def _call(self, name: str, *args: Any) -> None:
        self.calls.put_nowait((name, args))

    async def _callbacks(self) -> None:
        while True:
            name, args = await self.calls.get()
            try:
                await getattr(self.strategy, name)(self.context, *args)
            except Exception as exc:  # noqa: BLE001 - a failing strategy is reported, the run goes on
                self.stats.errors += 1
                if not self.stats.first_error:
                    self.stats.first_error = f"{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"

    def _account_event(self, message: Any) -> None:
        """The account's events keep the context's state; from the start on (not the
        replayed history of a reused account) they are the strategy's callbacks too."""
        ctx, live = self.context, self._from is not None
        if isinstance(message, Fill):
            if self.account not in (message.taker_account, message.maker_account):
                return
            buyer = message.taker_account if message.taker_side is Side.BUY else message.maker_account
            moved = message.size if buyer == self.account else -message.size
            ctx.positions[message.market] = ctx.positions.get(message.market, 0) + moved
            if live:
                self.stats.fills += 1
                self.result.fills.append((ctx.now, message))
                self._call("on_fill", message)
            return
        if getattr(message, "account", None) != self.account:
            return
        if isinstance(message, OrderAccepted):
            (ctx.waiting if message.condition is not Condition.NONE else ctx.live)[message.order_id] = message.market
        elif isinstance(message, OrderTriggered):
            ctx.waiting.pop(message.order_id, None)
        elif isinstance(message, (OrderClosed, OrderRejected)):
            ctx.live.pop(message.order_id, None)
            ctx.waiting.pop(message.order_id, None)
        elif isinstance(message, MarginSnapshot):
            if ctx.snapshot is None or message.seq >= ctx.snapshot.seq:
                ctx.snapshot = message
                ctx.positions = {p.market: p.signed_size for p in message.positions}
            for item in message.income if live else ():
                if item.kind is IncomeKind.COMMISSION:
                    self.result.fees -= item.amount
                elif item.kind is IncomeKind.FUNDING_FEE:
                    self.result.funding -= item.amount
        elif isinstance(message, LiquidationOutcome) and live:
            self.stats.liquidations += message.stage.name == "TRIGGERED"
        if not live:
            return
        if isinstance(message, (OrderAccepted, OrderTriggered, OrderClosed, OrderRejected)):
            self._call("on_order", message)
        elif isinstance(message, MarginSnapshot):
            self._call("on_margin", message)
        elif isinstance(message, LiquidationOutcome):
            self._call("on_liquidation", message)

    def _market_event(self, message: Any) -> None:
        market = getattr(message, "market", None)
        if market not in self.watched:
            return
        spec = self.markets[market]
        if isinstance(message, MarkPrice):
            self.result.marks.setdefault(market, []).append((self.context.now, message.mark_price))
            self._call("on_mark", market, spec.format_price(message.mark_price), spec.format_price(message.index_price))
        elif isinstance(message, BBO):
            self._call("on_book", market, spec.format_price(message.bid_price) if message.bid_price else None,
                       spec.format_price(message.ask_price) if message.ask_price else None)
        elif isinstance(message, Trade):
            self._call("on_trade", market, spec.format_price(message.price), spec.format_size(message.size),
                       message.taker_side)

    async def _watch_market(self, stop: asyncio.Event) -> None:
        async def from_the_end(partitions: set[int]) -> None:  # the venue's past is not news to it
            for partition in partitions:
                consumer.seek(partition, (await self.bus.offsets(MARKET_DATA, partition))[1])

        consumer = self.bus.consumer(MARKET_DATA, f"{self.client.producer}-market", on_assigned=from_the_end)
        try:
            while not stop.is_set():
                for record in await consumer.getmany(timeout_ms=50):
                    for message in self.reader.messages(record):
                        self._market_event(message)
        finally:
            await consumer.stop()

    # ------------------------------------------------------------------ run

    def _equity(self) -> int:
        snapshot = self.context.snapshot
        if snapshot is None:
            return 0
        return snapshot.balance + sum(p.isolated_margin + p.unrealized_pnl for p in snapshot.positions)

    async def run(self, duration_s: float | None, stop: asyncio.Event | None = None, on_second=None) -> LiveStrategyResult:
        stop = stop or asyncio.Event()
        self.client.listen(self._account_event)
        async with self.client:
            await self.client.deposit(self.account, self.strategy.deposit)
            self._from = self.client.received
            self.context.started = time.monotonic()
            worker = asyncio.create_task(self._callbacks())
            watcher = asyncio.create_task(self._watch_market(stop))
            self._call("on_start")
            deadline = None if duration_s is None else time.monotonic() + duration_s
            try:
                while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    self.result.equity.append((self.context.now, self._equity()))
                    if on_second is not None:
                        on_second(self)
                    try:
                        async with asyncio.timeout(SAMPLE_EVERY_S):
                            await stop.wait()
                    except TimeoutError:
                        pass
                self.result.interrupted = stop.is_set()
            finally:
                stop.set()
                await watcher
                await self._drain()
                worker.cancel()
                for market, order_id in [(m, o) for o, m in {**self.context.live, **self.context.waiting}.items()]:
                    await self.context.cancel(market, order_id)  # the strategy's orders end with it
                await asyncio.sleep(0.5)  # its last margin snapshot
                self.result.seconds = self.context.now
                self.result.equity.append((self.context.now, self._equity()))
        return self.result

    async def _drain(self, limit_s: float = 5.0) -> None:
        deadline = time.monotonic() + limit_s
        while not self.calls.empty() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def report(self) -> dict:
        deposit = money(self.strategy.deposit)
        equity = self.result.equity[-1][1] if self.result.equity else 0
        latencies = sorted(self.stats.latencies)
        pick = (lambda f: round(latencies[min(len(latencies) - 1, int(len(latencies) * f))] * 1e3, 2)) \
            if latencies else (lambda f: 0.0)
        return {"pnl": (equity - deposit) / 1e6, "orders": self.stats.orders, "rejected": self.stats.rejected,
                "fills": self.stats.fills, "fees_paid": self.result.fees / 1e6,
                "funding_paid": self.result.funding / 1e6, "liquidations": self.stats.liquidations,
                "latency_ms": {"p50": pick(0.5), "p99": pick(0.99)}, "errors": self.stats.errors,
                "first_error": self.stats.first_error.splitlines()[0] if self.stats.errors else ""}
