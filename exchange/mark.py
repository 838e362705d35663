"""Mark price rules: how a venue forms its mark from the index, its book and its trades.

A rule is a policy object the venue profile chooses (``exchange.venues``); the oracle asks
it for one calculator per market (``MarkRule.calculator``). Prices are in (fractional)
ticks; every rule clamps the mark to ``MARK_BAND`` around the index, so no book, however
thin or forged, moves it further than that.

- ``HyperliquidMark`` (``MarkCalculator``): the median of (index + EMA of the book-mid −
  index basis), (median of best bid, best ask, last trade) and the index. A component that
  cannot be formed is left out (no two-sided book yet: no basis; no book and no trade: no
  book component); with two components the mark is their mean; with only the index, the
  index.
- ``BinanceMark`` (``BinanceMarkCalculator``): Binance's "Mark Price and Price Index".
"""

from __future__ import annotations

import math
from collections import deque

SECOND = 1_000_000_000


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


# How far from the index book and trade prices may pull the mark (venues bound their mark
# to the index in the same spirit: a thin or manipulated book cannot drag it away).
MARK_BAND = 0.10


class MarkCalculator:
    """Mark price of one market from its index and its book (prices in ticks)."""

    def __init__(self, basis_tau_s: float = 150.0, band: float = MARK_BAND):
        self.tau_ns = basis_tau_s * SECOND
        self.band = band
        self.bid = 0
        self.ask = 0
        self.last = 0
        self.basis: float | None = None  # EMA of mid − index, ticks
        self._basis_ts: int | None = None

    def observe_book(self, bid: int, ask: int) -> None:
        self.bid, self.ask = bid, ask

    def observe_trade(self, price: int) -> None:
        self.last = price

    def mark(self, index: float, ts: int) -> float:
        """The mark in (fractional) ticks given the index in ticks; updates the basis EMA.
        The mark stays within ``band`` of the index (clamped to it), so no book, however
        thin or forged, moves it further from the index than that."""
        if self.bid and self.ask:
            sample = (self.bid + self.ask) / 2 - index
            if self.basis is None:
                self.basis = sample
            else:
                elapsed = max(0, ts - (self._basis_ts or ts))
                alpha = 1 - math.exp(-elapsed / self.tau_ns) if self.tau_ns else 1.0
                self.basis += alpha * (sample - self.basis)
            self._basis_ts = ts
        components = [index]
        if self.basis is not None:
            components.append(index + self.basis)
        book = [price for price in (self.bid, self.ask, self.last) if price]
        if book:
            components.append(_median(book))
        return min(index * (1 + self.band), max(index * (1 - self.band), _median(components)))


class BinanceMarkCalculator(MarkCalculator):
    """Binance's mark price ("Mark Price and Price Index"): the median of
    Price 1 = index · (1 + last funding rate · time to the next funding / funding interval),
    Price 2 = index + the 5-minute moving average of (mid − index), and the last trade
    price; clamped to the band around the index like Hyperliquid's."""

    def __init__(self, window_s: float = 300.0, band: float = MARK_BAND):
        super().__init__(0.0, band)
        self.window_ns = int(window_s * SECOND)
        self._samples: deque[tuple[int, float]] = deque()
        self._sum = 0.0
        self.funding_rate = 0.0  # the last funding rate paid, per interval
        self.until_funding = 0.0  # the part of the interval left until the next payment

    def mark(self, index: float, ts: int) -> float:
        samples = self._samples
        if self.bid and self.ask:
            sample = (self.bid + self.ask) / 2 - index
            samples.append((ts, sample))
            self._sum += sample
        while samples and samples[0][0] <= ts - self.window_ns:
            self._sum -= samples.popleft()[1]
        components = [index * (1 + self.funding_rate * self.until_funding)]
        if samples:
            components.append(index + self._sum / len(samples))
        if self.last:
            components.append(self.last)
        return min(index * (1 + self.band), max(index * (1 - self.band), _median(components)))




class MarkRule:
    """A venue's mark price rule: makes the calculator of one market."""

    name = ""

    def calculator(self, basis_tau_s: float = 150.0) -> MarkCalculator:
        """``basis_tau_s``: the basis EMA's time constant, for rules that have one."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HyperliquidMark(MarkRule):
    name = "hyperliquid"

    def calculator(self, basis_tau_s: float = 150.0) -> MarkCalculator:
        return MarkCalculator(basis_tau_s)


class BinanceMark(MarkRule):
    name = "binance"

    def calculator(self, basis_tau_s: float = 150.0) -> MarkCalculator:
        return BinanceMarkCalculator()
