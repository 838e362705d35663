"""Simulated market participants.

An agent decides; it does not send. Each tick it gets a ``View`` (marks, the top of the
book, its accounts' positions and open orders) and returns intents (``Configure``,
``Place``, ``Cancel``) that a driver carries out: the in-process simulation against the
core engines, or a live client against the running exchange. Each agent has its own
``random.Random`` seeded from the scenario's seed, so the same seed gives the same market.

Prices are ticks, sizes lots (the market's units); amounts are decimal strings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from schemas.enums import Condition, MarginMode, Side, TimeInForce


@dataclass(frozen=True)
class Configure:
    account: str
    market: str
    mode: MarginMode
    leverage: int


@dataclass(frozen=True)
class Place:
    account: str
    market: str
    side: Side
    size: int
    price: int = 0  # 0: a market order
    tif: TimeInForce = TimeInForce.GTC
    reduce_only: bool = False
    condition: Condition = Condition.NONE  # a conditional order: fires at ``trigger`` (ticks) on the mark
    trigger: int = 0
    close_position: bool = False  # size 0: closes the whole position when it fires


@dataclass(frozen=True)
class Cancel:
    account: str
    market: str
    order_id: int


Intent = Configure | Place | Cancel


class View(Protocol):
    """What an agent can see at a tick."""

    ts: int

    def mark(self, market: str) -> int: ...

    def index(self, market: str) -> int:
        """The oracle's index price (0 before the first)."""

    def top(self, market: str) -> tuple[int, int]:
        """(best bid, best ask) in ticks; 0 for an empty side."""

    def position(self, account: str, market: str) -> int: ...

    def open_orders(self, account: str, market: str) -> list[int]:
        """Ids of the account's live orders in the market, less those it has already asked
        to cancel (a cancel on its way is not sent again)."""

    def lots_for(self, market: str, usd: float) -> int:
        """How many lots ``usd`` of notional is at the mark."""


class Agent:
    """Base: its accounts, what each deposits, and its random generator."""

    kind = "agent"

    def __init__(self, name: str, seed: int, deposit: str):
        self.name = name
        self.rng = random.Random(seed)
        self.deposit = deposit
        self.accounts: list[str] = [name]

    def setup(self) -> list[Intent]:
        return []

    def on_tick(self, view: View) -> list[Intent]:
        return []


class MarketMaker(Agent):
    """Quotes a ladder around the index every tick (as a maker hedging on spot would; quoting
    around the mark would chase its own book through the mark's basis), replacing its
    quotes; the ladder's centre moves against its inventory (``skew_ppm`` of the mark per lot held, at most
    ``max_skew_ppm``) to lay it off. The cap is 0.1% by default: a maker that hedges its
    inventory elsewhere needs little skew, and the book, hence the mark, stays within a
    fraction of a percent of the index, the basis a venue shows (it was 1.5%, and the mark
    ran 1.5% above the index whenever the leveraged traders' longs had filled the maker short)."""

    kind = "market_maker"

    def __init__(self, name: str, seed: int, market: str, deposit: str = "50000000", levels: int = 6,
                 spacing_ppm: int = 1_000, lots: int = 500, skew_ppm: int = 2, max_skew_ppm: int = 1_000):
        super().__init__(name, seed, deposit)
        self.market, self.levels, self.spacing_ppm, self.lots, self.skew_ppm = market, levels, spacing_ppm, lots, skew_ppm
        self.max_skew_ppm = max_skew_ppm

    def on_tick(self, view: View) -> list[Intent]:
        mark = view.index(self.market) or view.mark(self.market)
        if not mark:
            return []
        intents: list[Intent] = [Cancel(self.name, self.market, order_id)
                                 for order_id in view.open_orders(self.name, self.market)]
        inventory = view.position(self.name, self.market)
        skew = max(-self.max_skew_ppm, min(self.max_skew_ppm, self.skew_ppm * inventory))
        centre = mark - mark * skew // 1_000_000
        for level in range(1, self.levels + 1):
            offset = max(1, mark * self.spacing_ppm * level // 1_000_000)
            size = self.lots * (1 + level // 2)
            intents.append(Place(self.name, self.market, Side.BUY, size, max(1, centre - offset)))
            intents.append(Place(self.name, self.market, Side.SELL, size, centre + offset))
        return intents


class Taker(Agent):
    """Sends market orders at ``rate`` per second on average, following the last mark move
    with probability ``momentum`` (else at random)."""

    kind = "taker"

    def __init__(self, name: str, seed: int, market: str, deposit: str = "200000", rate: float = 2.0,
                 lots: int = 100, momentum: float = 0.6, tick_s: float = 0.25):
        super().__init__(name, seed, deposit)
        self.market, self.rate, self.lots, self.momentum, self.tick_s = market, rate, lots, momentum, tick_s
        self.last_mark = 0

    def on_tick(self, view: View) -> list[Intent]:
        mark = view.mark(self.market)
        move, self.last_mark = mark - self.last_mark if self.last_mark else 0, mark
        if not mark or self.rng.random() >= self.rate * self.tick_s:
            return []
        if move and self.rng.random() < self.momentum:
            side = Side.BUY if move > 0 else Side.SELL
        else:
            side = self.rng.choice((Side.BUY, Side.SELL))
        position = view.position(self.name, self.market)
        if abs(position) > 20 * self.lots and (position > 0) == (side is Side.BUY):
            side = side.opposite  # keep its own book in check
        return [Place(self.name, self.market, side, self.rng.randint(1, self.lots), 0, TimeInForce.IOC)]


class Noise(Agent):
    """Rests limit orders up to ``width_ppm`` from the mark and cancels some at random."""

    kind = "noise"

    def __init__(self, name: str, seed: int, market: str, deposit: str = "200000", rate: float = 4.0,
                 lots: int = 50, width_ppm: int = 5_000, tick_s: float = 0.25):
        super().__init__(name, seed, deposit)
        self.market, self.rate, self.lots, self.width_ppm, self.tick_s = market, rate, lots, width_ppm, tick_s

    def on_tick(self, view: View) -> list[Intent]:
        mark = view.mark(self.market)
        if not mark:
            return []
        intents: list[Intent] = []
        orders = view.open_orders(self.name, self.market)
        if orders and self.rng.random() < 0.3:
            intents.append(Cancel(self.name, self.market, self.rng.choice(orders)))
        if self.rng.random() < self.rate * self.tick_s:
            side = self.rng.choice((Side.BUY, Side.SELL))
            offset = mark * self.rng.randint(1, self.width_ppm) // 1_000_000
            price = mark - offset if side is Side.BUY else mark + offset
            intents.append(Place(self.name, self.market, side, self.rng.randint(1, self.lots), max(1, price)))
        return intents


class Leveraged(Agent):
    """``count`` leveraged traders, each with its own account, mode and leverage: each opens a
    position worth ``deposit · leverage · utilisation`` (longs with probability
    ``long_bias``) and holds it; once flat again (liquidated), it reopens with probability
    ``reopen`` per tick. With mode "mixed", accounts alternate isolated and cross. With
    ``stop_pct``, each puts a close-position stop on the mark that far from where it opened
    (below a long, above a short) as soon as it sees its position."""

    kind = "leveraged"

    def __init__(self, name: str, seed: int, market: str, count: int = 20, mode: str = "mixed",
                 leverage: tuple[int, int] = (5, 20), deposit: str = "2000",
                 utilisation: tuple[float, float] = (0.5, 0.9), long_bias: float = 0.7, reopen: float = 0.02,
                 stop_pct: float = 0.0):
        super().__init__(name, seed, deposit)
        self.market, self.utilisation = market, utilisation
        self.long_bias, self.reopen = long_bias, reopen
        if not 0 <= stop_pct < 100:
            raise TypeError(f"stop_pct must be 0 (no stops) to below 100, got {stop_pct!r}")
        self.stop_ppm = int(stop_pct * 10_000)
        self.stopped: set[str] = set()  # accounts whose current position has its stop
        self.accounts = [f"{name}-{index:03d}" for index in range(count)]
        if mode not in ("isolated", "cross", "mixed"):
            raise TypeError(f"mode must be isolated, cross or mixed, got {mode!r}")
        modes = {"isolated": [MarginMode.ISOLATED], "cross": [MarginMode.CROSS],
                 "mixed": [MarginMode.ISOLATED, MarginMode.CROSS]}[mode]
        self.modes = {account: modes[index % len(modes)] for index, account in enumerate(self.accounts)}
        self.leverages = {account: self.rng.randint(*leverage) for account in self.accounts}
        self.opened: set[str] = set()

    def setup(self) -> list[Intent]:
        return [Configure(account, self.market, self.modes[account], self.leverages[account])
                for account in self.accounts]

    def on_tick(self, view: View) -> list[Intent]:
        intents: list[Intent] = []
        if not view.mark(self.market):
            return intents
        mark = view.mark(self.market)
        for account in self.accounts:
            position = view.position(account, self.market)
            if position:
                if self.stop_ppm and account not in self.stopped:
                    self.stopped.add(account)
                    side = Side.SELL if position > 0 else Side.BUY
                    distance = mark * self.stop_ppm // 1_000_000
                    trigger = mark - distance if position > 0 else mark + distance
                    intents.append(Place(account, self.market, side, 0, 0, TimeInForce.GTC, False, Condition.STOP,
                                         max(1, trigger), True))
                continue
            self.stopped.discard(account)
            if account in self.opened and self.rng.random() >= self.reopen:
                continue
            self.opened.add(account)
            side = Side.BUY if self.rng.random() < self.long_bias else Side.SELL
            usd = float(self.deposit) * self.leverages[account] * self.rng.uniform(*self.utilisation)
            lots = view.lots_for(self.market, usd)
            if lots > 0:
                intents.append(Place(account, self.market, side, lots, 0, TimeInForce.IOC))
        return intents


KINDS = {cls.kind: cls for cls in (MarketMaker, Taker, Noise, Leveraged)}
