"""The strategy interface: write a class, run it against a simulated market.

    from services.sim.strategy import Strategy

    class MyStrategy(Strategy):
        markets = ["SOL-PERP"]
        deposit = "10000"

        async def on_mark(self, ctx, market, mark, index):
            if ctx.position(market) == 0:
                await ctx.buy(market, "1")        # a market order; price="150.5" for a limit

``perpsim run --strategy my.py:MyStrategy --scenario flash-crash`` runs it on the
in-process exchange, inside the scenario's market, and reports its PnL, fills, fees,
funding, liquidations and latency. Callbacks are ``async``; an exception in one is
counted and reported, and the run goes on.

Callbacks (all optional): ``on_start(ctx)``, ``on_mark(ctx, market, mark, index)``,
``on_book(ctx, market, bid, ask)``, ``on_trade(ctx, market, price, size, taker_side)``,
``on_fill(ctx, fill)``, ``on_order(ctx, event)`` (its own orders' ``OrderAccepted``,
``OrderRejected``, ``OrderClosed`` and, when a conditional order fires,
``OrderTriggered``), ``on_margin(ctx, snapshot)``, ``on_liquidation(ctx, outcome)``;
prices are decimal strings, as the context's order methods take them.

Protective orders: ``await ctx.stop(market, Side.SELL, "1", "140")`` (a reduce-only
stop-market on the mark; ``price=`` for a stop-limit, ``take_profit=True`` for a
take-profit, ``close_position=True`` with size "0" for the whole position),
``await ctx.trailing_stop(market, Side.SELL, "1", "1.5")``; ``ctx.conditional_orders``
lists those still waiting. docs/matching.md, "Conditional orders".
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.core import CoreExchange, money
from schemas.enums import (
    Condition,
    MarginMode,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    BBO,
    CancelOrder,
    Fill,
    LiquidationOutcome,
    MarginSnapshot,
    MarkPrice,
    OrderAccepted,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
)


class StrategyError(ValueError):
    """A strategy could not be loaded; the message says what was expected."""


class Strategy:
    """Base class; override the callbacks you need."""

    markets: list[str] = ["SOL-PERP"]
    deposit: str = "10000"

    async def on_start(self, ctx: Context) -> None: ...

    async def on_mark(self, ctx: Context, market: str, mark: str, index: str) -> None: ...

    async def on_book(self, ctx: Context, market: str, bid: str | None, ask: str | None) -> None: ...

    async def on_trade(self, ctx: Context, market: str, price: str, size: str, taker_side: Side) -> None: ...

    async def on_fill(self, ctx: Context, fill: Fill) -> None: ...

    async def on_order(self, ctx: Context, event: OrderAccepted | OrderRejected | OrderClosed | OrderTriggered) -> None:
        ...

    async def on_margin(self, ctx: Context, snapshot: MarginSnapshot) -> None: ...

    async def on_liquidation(self, ctx: Context, outcome: LiquidationOutcome) -> None: ...


@dataclass
class StrategyStats:
    orders: int = 0
    rejected: int = 0
    fills: int = 0
    liquidations: int = 0
    errors: int = 0
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)  # seconds from send to acceptance


class Context:
    """What a strategy trades through: orders and settings for its one account."""

    def __init__(self, ex: CoreExchange, account: str, stats: StrategyStats):
        self.ex = ex
        self.account = account
        self.stats = stats

    @property
    def now(self) -> float:
        """Simulated seconds since the start."""
        return self.ex.ts / 1e9

    def position(self, market: str) -> str:
        return self.ex.markets[market].format_size(self.ex.matching[market].position(self.account))

    def balance(self) -> str:
        account = self.ex.risk.accounts.get(self.account)
        return f"{(account.balance if account else 0) / 1e6:.6f}"

    def open_orders(self, market: str) -> list[int]:
        """Ids of its live orders in ``market``, conditional ones included."""
        account = self.ex.risk.accounts.get(self.account)
        return [o.order_id for o in account.orders.values() if o.market == market] if account else []

    def conditional_orders(self, market: str) -> list[int]:
        """Ids of its conditional orders in ``market`` still waiting for their trigger."""
        return [o.order_id for o in self.ex.matching[market].triggers.of(self.account)]

    async def stop(self, market: str, side: Side, size: str, trigger: str, *, price: str | None = None,
                   take_profit: bool = False, source: TriggerSource = TriggerSource.MARK, reduce_only: bool = True,
                   close_position: bool = False) -> int | None:
        """A stop (or, with ``take_profit``, a take-profit) at ``trigger``: a market order
        when it fires, a limit order at ``price`` if given. Returns its id, or None if refused."""
        spec = self.ex.markets[market]
        return await self._place(market, side, size, price, TimeInForce.GTC, reduce_only and not close_position,
                                 Condition.TAKE_PROFIT if take_profit else Condition.STOP,
                                 trigger=spec.price_to_ticks(trigger), source=source, close_position=close_position)

    async def trailing_stop(self, market: str, side: Side, size: str, callback_pct: str, *,
                            activation: str | None = None, source: TriggerSource = TriggerSource.MARK,
                            reduce_only: bool = True) -> int | None:
        """A trailing stop ``callback_pct`` (0.1 to 10) behind the best price since
        activation (at once, or when the price reaches ``activation``)."""
        spec = self.ex.markets[market]
        return await self._place(market, side, size, None, TimeInForce.GTC, reduce_only, Condition.TRAILING_STOP,
                                 source=source, activation=0 if activation is None else spec.price_to_ticks(activation),
                                 callback=int(float(callback_pct) * 10_000 + 0.5))

    async def buy(self, market: str, size: str, price: str | None = None,
                  tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False) -> int | None:
        """Place a buy; returns the order id, or None if it was refused."""
        return await self._place(market, Side.BUY, size, price, tif, reduce_only)

    async def sell(self, market: str, size: str, price: str | None = None,
                   tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False) -> int | None:
        return await self._place(market, Side.SELL, size, price, tif, reduce_only)

    async def cancel(self, market: str, order_id: int) -> None:
        stamp = self.ex.stamp()
        self.ex.submit(CancelOrder(*stamp, self.account, market, order_id, self.ex.ts))

    async def set_margin_mode(self, market: str, mode: MarginMode) -> None:
        self.ex.submit(SetMarginMode(*self.ex.stamp(), self.account, market, mode, self.ex.ts))

    async def set_leverage(self, market: str, leverage: int) -> None:
        self.ex.submit(SetLeverage(*self.ex.stamp(), self.account, market, leverage, self.ex.ts))

    async def _place(self, market: str, side: Side, size: str, price: str | None, tif: TimeInForce,
                     reduce_only: bool, condition: Condition = Condition.NONE, *, trigger: int = 0,
                     source: TriggerSource = TriggerSource.MARK, close_position: bool = False, activation: int = 0,
                     callback: int = 0) -> int | None:
        spec = self.ex.markets[market]
        kind = OrderType.MARKET if price is None else OrderType.LIMIT
        stamp = self.ex.stamp()
        command = PlaceOrder(*stamp, self.account, market, f"strategy-{stamp[1]}", side, kind,
                             TimeInForce.IOC if price is None else tif, 0 if price is None else spec.price_to_ticks(price),
                             spec.size_to_lots(size), reduce_only, SelfTradePrevention.CANCEL_TAKER, self.ex.ts,
                             condition, trigger, source, close_position, activation, callback)
        self.stats.orders += 1
        started = time.perf_counter()
        events = self.ex.submit(command)
        self.stats.latencies.append(time.perf_counter() - started)
        for event in events:
            if isinstance(event, OrderAccepted) and event.client_order_id == command.client_order_id:
                return event.order_id
            if isinstance(event, OrderRejected) and event.client_order_id == command.client_order_id:
                self.stats.rejected += 1
                return None
        return None


def load_strategy(spec: str) -> Strategy:
    """An instance of the class named by ``path/to/file.py:ClassName``."""
    path_text, _, class_name = spec.partition(":")
    if not class_name:
        raise StrategyError(f"expected path/to/file.py:ClassName, got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise StrategyError(f"strategy file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"perpsim_strategy_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's module: report whatever it raised
        raise StrategyError(f"{path} failed to import: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        found = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, Strategy) and v is not Strategy]
        raise StrategyError(f"{path} has no class {class_name!r}; strategies there: {', '.join(found) or 'none'}")
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise StrategyError(f"{class_name} must subclass services.sim.strategy.Strategy")
    try:
        return cls()
    except Exception as exc:  # noqa: BLE001
        raise StrategyError(f"{class_name}() failed: {type(exc).__name__}: {exc}") from None


class StrategyDriver:
    """Feeds a strategy the events of the in-process exchange after every tick."""

    def __init__(self, strategy: Strategy, ex: CoreExchange, account: str = "strategy"):
        self.strategy = strategy
        self.ex = ex
        self.account = account
        self.stats = StrategyStats()
        self.context = Context(ex, account, self.stats)
        self._seen = 0
        self.loop = asyncio.new_event_loop()  # one loop for the run: a strategy may keep tasks

    def close(self) -> None:
        self.loop.close()

    def _call(self, name: str, *args: Any) -> None:
        try:
            self.loop.run_until_complete(getattr(self.strategy, name)(self.context, *args))
        except Exception as exc:  # noqa: BLE001 - a failing strategy is reported, the market goes on
            self.stats.errors += 1
            if not self.stats.first_error:
                self.stats.first_error = f"{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}"

    def start(self) -> None:
        self.ex.deposit(self.account, self.strategy.deposit)
        self._seen = len(self.ex.log)
        self._call("on_start")

    def tick(self) -> None:
        events = self.ex.log[self._seen:]
        self._seen = len(self.ex.log)
        markets = set(self.strategy.markets)
        for event in events:
            market = getattr(event, "market", None)
            if isinstance(event, MarkPrice) and market in markets:
                spec = self.ex.markets[market]
                self._call("on_mark", market, spec.format_price(event.mark_price), spec.format_price(event.index_price))
            elif isinstance(event, BBO) and market in markets:
                spec = self.ex.markets[market]
                self._call("on_book", market, spec.format_price(event.bid_price) if event.bid_price else None,
                           spec.format_price(event.ask_price) if event.ask_price else None)
            elif isinstance(event, Fill) and market in markets:
                spec = self.ex.markets[market]
                self._call("on_trade", market, spec.format_price(event.price), spec.format_size(event.size),
                           event.taker_side)
                if self.account in (event.taker_account, event.maker_account):
                    self.stats.fills += 1
                    self._call("on_fill", event)
            elif isinstance(event, (OrderAccepted, OrderRejected, OrderClosed, OrderTriggered)) \
                    and event.account == self.account:
                self._call("on_order", event)
            elif isinstance(event, MarginSnapshot) and event.account == self.account:
                self._call("on_margin", event)
            elif isinstance(event, LiquidationOutcome) and event.account == self.account:
                self.stats.liquidations += event.stage.name == "TRIGGERED"
                self._call("on_liquidation", event)

    def report(self) -> dict:
        account = self.ex.risk.accounts[self.account]

        latencies = sorted(self.stats.latencies)
        pick = (lambda f: round(latencies[min(len(latencies) - 1, int(len(latencies) * f))] * 1e6, 1)) \
            if latencies else (lambda f: 0.0)
        return {
            "pnl": (self.ex.equity(self.account) - money(self.strategy.deposit)) / 1e6,
            "orders": self.stats.orders, "rejected": self.stats.rejected, "fills": self.stats.fills,
            "fees_paid": account.fees_paid / 1e6, "funding_paid": account.funding_paid / 1e6,
            "liquidations": self.stats.liquidations,
            "latency_us": {"p50": pick(0.5), "p99": pick(0.99)},
            "errors": self.stats.errors, "first_error": self.stats.first_error.splitlines()[0] if self.stats.errors else "",
        }
