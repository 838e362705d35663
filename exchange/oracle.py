"""The price oracle: index price sources, mark price, funding rate. Deterministic under a
seed and an injected clock (every method takes ``ts``, nanoseconds of simulation time).

Index sources (``IndexSource``: ``price(ts) -> float``, in quote units)
- ``RandomWalk``: geometric random walk with Poisson jumps on a fixed step grid, seeded;
  the same seed gives the same path whatever the order of queries.
- ``CsvReplay``: a CSV of ``time,price`` rows (time in seconds, or ISO 8601), replayed from
  its first row; the price at a row's time is that row's price (a step function).
- ``Shocked``: any source times scripted shocks, e.g. ``"-30% over 10s at 60s"`` then
  ``"+10% over 60s at 70s"``; each shock ramps linearly from 1 to ``1 + change`` over its
  duration and stays there; shocks multiply.

Mark price: by the venue's rule (``exchange.mark``; Hyperliquid's by default).

Funding (``FundingCalculator``, by the venue's ``exchange.venues.FundingRule``): every
interval, the period's rate ``premium + clamp(interest − premium, ±clamp)`` times the
share of the period one payment pays (Hyperliquid: 1/8 every hour), capped, where
``premium`` is the average of ``(mark − index) / index`` sampled at every tick of the
interval (Binance weights later samples more). It is handed to risk as a ``Funding``
event; risk pays ``−side · |s| · index · rate`` per position.
"""

from __future__ import annotations

import csv
import math
import random
import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from exchange.mark import BinanceMarkCalculator, HyperliquidMark, MarkRule
from exchange.markets import Market
from exchange.venues import DEFAULT_VENUE, VENUES, FundingRule
from schemas.events import BBO, Fill, Funding, MarkPrice, Message, Trade

SECOND = 1_000_000_000
YEAR_SECONDS = 365 * 24 * 3600


class OracleError(ValueError):
    """A price source or shock is invalid; the message says where and why."""


class IndexSource(Protocol):
    def price(self, ts: int) -> float:
        """The index price at ``ts`` (nanoseconds since the start of the simulation)."""


class Flat:
    """A constant index price (useful under shocks)."""

    def __init__(self, price: float):
        if price <= 0:
            raise OracleError(f"a price must be positive, got {price}")
        self.value = price

    def price(self, ts: int) -> float:
        return self.value


class RandomWalk:
    """Seeded geometric random walk with jumps: per step of ``step_s`` seconds,
    ``log P += (−σ²/2)·dt + σ·√dt·Z`` plus, with probability ``jump_rate·dt``, a jump of
    ``N(jump_mean, jump_std)`` in log price. ``volatility`` is annualised."""

    def __init__(self, start: float, volatility: float = 0.8, seed: int = 0, jumps_per_day: float = 2.0,
                 jump_mean: float = 0.0, jump_std: float = 0.02, step_s: float = 1.0):
        if start <= 0 or volatility < 0 or step_s <= 0 or jumps_per_day < 0 or jump_std < 0:
            raise OracleError("a random walk needs start > 0, step_s > 0 and non-negative volatility and jumps")
        self.step_ns = int(step_s * SECOND)
        dt = step_s / YEAR_SECONDS
        self._drift = -0.5 * volatility**2 * dt
        self._diffusion = volatility * math.sqrt(dt)
        self._jump_probability = jumps_per_day * step_s / 86_400
        self._jump_mean, self._jump_std = jump_mean, jump_std
        self._rng = random.Random(seed)
        self._start = start
        self._log_prices = [0.0]  # log(P / start) per step

    def price(self, ts: int) -> float:
        step = max(0, ts) // self.step_ns
        path, rng = self._log_prices, self._rng
        while len(path) <= step:
            # four draws per step, whatever happens, so the path depends on the seed alone
            z, jump_roll, jump = rng.gauss(0.0, 1.0), rng.random(), rng.gauss(self._jump_mean, self._jump_std)
            move = self._drift + self._diffusion * z
            if jump_roll < self._jump_probability:
                move += jump
            path.append(path[-1] + move)
        return self._start * math.exp(path[step])


class CsvReplay:
    """Prices replayed from ``time,price`` rows; time 0 is the first row."""

    def __init__(self, rows: list[tuple[float, float]]):
        if not rows:
            raise OracleError("a replay needs at least one row")
        start = rows[0][0]
        self.times = [int(round((t - start) * SECOND)) for t, _ in rows]
        self.prices = [p for _, p in rows]

    @classmethod
    def from_file(cls, path: str | Path) -> CsvReplay:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise OracleError(f"price file {path} does not exist") from None
        rows: list[tuple[float, float]] = []
        reader = csv.reader(line for line in text.splitlines() if line.strip() and not line.startswith("#"))
        for number, row in enumerate(reader, 1):
            if number == 1 and row and not _is_number(row[-1]):
                continue  # header
            if len(row) < 2:
                raise OracleError(f"{path}, row {number}: expected time,price; got {row}")
            when, price = _parse_time(row[0], path, number), _parse_price(row[1], path, number)
            if rows and when <= rows[-1][0]:
                raise OracleError(f"{path}, row {number}: time {row[0]} does not increase")
            rows.append((when, price))
        return cls(rows)

    def price(self, ts: int) -> float:
        times = self.times
        low, high = 0, len(times) - 1
        if ts <= times[0]:
            return self.prices[0]
        while low < high:  # last row with time <= ts
            middle = (low + high + 1) // 2
            if times[middle] <= ts:
                low = middle
            else:
                high = middle - 1
        return self.prices[low]

    @property
    def duration_ns(self) -> int:
        return self.times[-1]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_time(text: str, path: Path, number: int) -> float:
    text = text.strip()
    if _is_number(text):
        return float(text)
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise OracleError(f"{path}, row {number}: time {text!r} is neither seconds nor ISO 8601") from None


def _parse_price(text: str, path: Path, number: int) -> float:
    try:
        price = float(text)
    except ValueError:
        raise OracleError(f"{path}, row {number}: price {text!r} is not a number") from None
    if not math.isfinite(price) or price <= 0:
        raise OracleError(f"{path}, row {number}: price must be positive, got {text}")
    return price


def sample_csv() -> Path:
    """The bundled sample: 30 minutes of SOL-USD every 10 seconds."""
    return Path(__file__).parent / "data" / "sol_usd_sample.csv"


class Shock:
    """A scripted move: from ``at_s`` seconds, the price ramps by ``change`` (−0.3 = −30%)
    over ``over_s`` seconds, then stays moved."""

    __slots__ = ("at_ns", "change", "over_ns")

    _PATTERN = re.compile(
        r"^\s*([+-]?\d+(?:\.\d+)?)\s*%\s*(?:over\s+(\d+(?:\.\d+)?)\s*s)?\s*(?:at\s+(\d+(?:\.\d+)?)\s*s)?\s*$")

    def __init__(self, at_s: float, change: float, over_s: float = 0.0):
        if change <= -1:
            raise OracleError(f"a shock of {change:.0%} would take the price to zero or below")
        if at_s < 0 or over_s < 0:
            raise OracleError("a shock's time and duration must not be negative")
        self.at_ns = int(at_s * SECOND)
        self.change = change
        self.over_ns = int(over_s * SECOND)

    @classmethod
    def parse(cls, text: str) -> Shock:
        """``"-30% over 10s at 60s"`` (``over`` defaults to 0, ``at`` to 0)."""
        match = cls._PATTERN.match(text)
        if not match:
            raise OracleError(f"cannot read shock {text!r}; write it like '-30% over 10s at 60s'")
        change, over, at = match.groups()
        return cls(float(at or 0), float(change) / 100, float(over or 0))

    def factor(self, ts: int) -> float:
        if ts < self.at_ns:
            return 1.0
        if self.over_ns and ts < self.at_ns + self.over_ns:
            return 1.0 + self.change * (ts - self.at_ns) / self.over_ns
        return 1.0 + self.change


class Shocked:
    """A source moved by shocks."""

    def __init__(self, source: IndexSource, shocks: list[Shock]):
        self.source = source
        self.shocks = list(shocks)

    def price(self, ts: int) -> float:
        price = self.source.price(ts)
        for shock in self.shocks:
            price *= shock.factor(ts)
        return price


# ------------------------------------------------------------------------ funding


class FundingCalculator:
    """Funding rate of one market by a venue's rule: premium averaged over the interval
    plus clamped interest, the payment's share of the period's rate, capped."""

    def __init__(self, rule: FundingRule, market: Market):
        self.rule, self.market = rule, market
        self.interval_ns = int(rule.interval_s * SECOND)
        self._premiums: list[float] = []
        self._period: int | None = None

    def premium(self) -> float:
        samples = self._premiums
        if self.rule.time_weighted:  # 1·P1 + 2·P2 + ... + n·Pn over 1 + 2 + ... + n
            return sum(weight * p for weight, p in enumerate(samples, 1)) / (len(samples) * (len(samples) + 1) / 2)
        return sum(samples) / len(samples)

    def sample(self, mark: float, index: float, ts: int) -> float | None:
        """Record one premium sample; returns the rate when ``ts`` closes an interval."""
        period = ts // self.interval_ns
        rate = None
        if self._period is not None and period > self._period and self._premiums:
            rate = self.rule.payment_rate(self.premium(), self.market)
            self._premiums = []
        self._period = period
        self._premiums.append((mark - index) / index)
        return rate


class Oracle:
    """Index, mark and funding for a set of markets; ``tick(ts)`` returns the events."""

    def __init__(self, markets: dict[str, Market], sources: dict[str, IndexSource], producer: str = "oracle",
                 funding_interval_s: float | None = None, basis_tau_s: float = 150.0,
                 funding: FundingRule | None = None, mark_rule: MarkRule | None = None):
        """``funding``: the venue's rule (Hyperliquid's by default); ``funding_interval_s``
        (a scenario's) pays more often, each payment the same share of the period's rate;
        ``mark_rule``: the venue's (``exchange.mark``), Hyperliquid's by default."""
        unknown = set(sources) - set(markets)
        if unknown:
            raise OracleError(f"price sources for unknown markets: {', '.join(sorted(unknown))}")
        self.markets = markets
        self.sources = sources
        self.producer = producer
        self.seq = 0
        rule = mark_rule or HyperliquidMark()
        self.marks = {symbol: rule.calculator(basis_tau_s) for symbol in sources}
        rule = funding or VENUES[DEFAULT_VENUE].funding
        if funding_interval_s is not None:
            if funding_interval_s <= 0:
                raise OracleError("the funding interval must be positive")
            rule = replace(rule, interval_s=funding_interval_s, rate_period_s=funding_interval_s / rule.share)
        self.funding_rule = rule
        self.funding = {symbol: FundingCalculator(rule, markets[symbol]) for symbol in sources}

    def observe(self, event: Message) -> None:
        """Book and trade events of ``market.data`` (a ``Fill`` counts as its trade)."""
        calculator = self.marks.get(getattr(event, "market", ""))
        if calculator is None:
            return
        if isinstance(event, BBO):
            calculator.observe_book(event.bid_price, event.ask_price)
        elif isinstance(event, (Trade, Fill)):
            calculator.observe_trade(event.price)

    def index_ticks(self, symbol: str, ts: int) -> float:
        return self.sources[symbol].price(ts) / float(self.markets[symbol].tick_size)

    def tick(self, ts: int) -> list[Message]:
        out: list[Message] = []
        for symbol in sorted(self.sources):
            index = self.index_ticks(symbol, ts)
            calculator = self.marks[symbol]
            if isinstance(calculator, BinanceMarkCalculator):
                funding = self.funding[symbol]
                calculator.until_funding = 1 - (ts % funding.interval_ns) / funding.interval_ns
            mark = calculator.mark(index, ts)
            index_ticks, mark_ticks = max(1, round(index)), max(1, round(mark))
            self.seq += 1
            out.append(MarkPrice(self.producer, self.seq, symbol, index_ticks, mark_ticks, ts))
            rate = self.funding[symbol].sample(mark, index, ts)
            if rate is not None and isinstance(calculator, BinanceMarkCalculator):
                calculator.funding_rate = rate
            if rate is not None:
                self.seq += 1
                charged_on = mark_ticks if self.funding_rule.on_mark else index_ticks
                out.append(Funding(self.producer, self.seq, symbol, round(rate * 1e9), charged_on, ts))
        return out
