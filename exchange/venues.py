"""Venue profiles: the rules a run margins, funds and lists markets by, as each venue
publishes them (docs/margin.md, "Venue profiles"). ``hyperliquid`` is the default.

A profile chooses:
- the market table: tick, lot, fees and the maintenance tiers (Hyperliquid derives each
  tier's rate from its max leverage, ``1 / (2 · max leverage)``; Binance publishes its
  brackets with their own rates and maintenance amounts);
- the backstop: Hyperliquid's liquidator takes a bucket too far under maintenance at the
  mark (with its collateral); Binance's insurance fund takes it at the bankruptcy price;
- the mark price: Hyperliquid's median of the index, index + basis EMA and the book;
  Binance's median of the index moved by the last funding rate, index + 5-minute basis
  average, and the last trade;
- partial liquidation: Hyperliquid's 20% of a large position per round; Binance's step
  down from the position's bracket to the one below;
- the ADL ranking: Hyperliquid's (PnL factor × leverage) or Binance's (PnL% × effective
  leverage in profit, PnL% / effective leverage in loss);
- funding: how often it is paid, and the rate: ``premium + clamp(interest − premium,
  ±clamp)`` for an 8-hour period, of which each payment pays ``interval / 8 h``
  (Hyperliquid: one eighth every hour; Binance: all of it every 8 hours), with the
  premium averaged over the interval (Hyperliquid: a plain mean of its samples; Binance:
  weighted by time, later samples more) and capped per payment.

Sources: Hyperliquid's docs, "Trading / Funding" (8-hour rate, paid hourly at one eighth,
interest 0.01% per 8 hours, clamp ±0.05%, cap 4% per hour) and "Trading / Margining";
Binance's "Introduction to Binance Futures Funding Rates" (interest 0.03% a day, i.e.
0.01% per 8 hours, clamp ±0.05%, the time-weighted average premium index) and its
leverage and margin brackets, as Binance's ``/fapi/v1/leverageBracket`` returned them and
freqtrade 2026.9 ships them (``freqtrade/exchange/binance_leverage_tiers.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from exchange.liquidation import (
    BinanceLiquidation,
    HyperliquidLiquidation,
    LiquidationPolicy,
)
from exchange.mark import BinanceMark, HyperliquidMark, MarkRule
from exchange.markets import Market, default_markets
from exchange.risk.adl import AdlRanking, BinanceRanking, HyperliquidRanking

HOUR = 3600.0


@dataclass(frozen=True)
class FundingRule:
    """How a venue computes and pays funding."""

    interval_s: float  # how often funding is paid
    rate_period_s: float = 8 * HOUR  # the period the formula's rate is for
    interest: float = 0.0001  # per rate period: 0.01% per 8 hours
    clamp: float = 0.0005  # ± on (interest − premium)
    cap: float = 0.04  # the most one payment may be, as a fraction of the position's value
    cap_of_mmr: float = 0.0  # if set, the cap is this times the market's first maintenance rate (Binance: 0.75)
    time_weighted: bool = False  # premium samples weighted 1, 2, ..., n (Binance) or equally
    # what a payment is charged on: |size| · price · rate with the mark (Binance's funding FAQ)
    # or the index (Hyperliquid's oracle price)
    on_mark: bool = False

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.rate_period_s <= 0:
            raise ValueError("funding interval and rate period must be positive")

    @property
    def share(self) -> float:
        """The part of the period's rate one payment pays."""
        return self.interval_s / self.rate_period_s

    def payment_rate(self, premium: float, market: Market) -> float:
        """The rate one payment pays in ``market`` for an average ``premium`` over its interval."""
        rate = premium + min(self.clamp, max(-self.clamp, self.interest - premium))
        rate *= self.share
        cap = self.cap_of_mmr * float(market.mmr) if self.cap_of_mmr else self.cap
        return min(cap, max(-cap, rate))


@dataclass(frozen=True)
class Venue:
    name: str
    description: str
    funding: FundingRule
    markets: Callable[[], dict[str, Market]]
    # the rules as policy objects, each process building the engines from them
    liquidation: LiquidationPolicy = field(default_factory=HyperliquidLiquidation)  # exchange.liquidation
    mark: MarkRule = field(default_factory=HyperliquidMark)  # the oracle's (exchange.mark)
    adl: AdlRanking = field(default_factory=HyperliquidRanking)  # risk's (exchange.risk.adl)


def binance_markets() -> dict[str, Market]:
    """BTC, ETH and SOL perpetuals with Binance's USDⓈ-M brackets (floor of notional in
    USDT, max leverage, maintenance margin rate, maintenance amount) and its regular
    fees (0.02% maker, 0.05% taker)."""
    btc = [(0, 150, "0.004", 0), (300_000, 100, "0.005", 300), (800_000, 75, "0.0065", 1_500),
           (3_000_000, 50, "0.01", 12_000), (12_000_000, 25, "0.02", 132_000), (70_000_000, 20, "0.025", 482_000),
           (100_000_000, 10, "0.05", 2_982_000), (230_000_000, 5, "0.1", 14_482_000),
           (480_000_000, 4, "0.125", 26_482_000), (600_000_000, 3, "0.15", 41_482_000),
           (800_000_000, 2, "0.25", 121_482_000), (1_200_000_000, 1, "0.5", 421_482_000)]
    eth = [(0, 150, "0.004", 0), (300_000, 100, "0.005", 300), (800_000, 75, "0.0065", 1_500),
           (3_000_000, 50, "0.01", 12_000), (12_000_000, 25, "0.02", 132_000), (50_000_000, 20, "0.025", 382_000),
           (65_000_000, 10, "0.05", 2_007_000), (150_000_000, 5, "0.1", 9_507_000),
           (320_000_000, 4, "0.125", 17_507_000), (400_000_000, 3, "0.15", 27_507_000),
           (530_000_000, 2, "0.25", 80_507_000), (800_000_000, 1, "0.5", 280_507_000)]
    sol = [(0, 100, "0.005", 0), (50_000, 75, "0.0065", 75), (400_000, 50, "0.01", 1_475),
           (1_000_000, 25, "0.02", 11_475), (4_000_000, 20, "0.025", 31_475), (8_000_000, 10, "0.05", 231_475),
           (40_000_000, 5, "0.1", 2_231_475), (80_000_000, 4, "0.125", 4_231_475),
           (100_000_000, 2, "0.25", 16_731_475), (200_000_000, 1, "0.5", 66_731_475)]
    markets = [
        Market("BTC-PERP", "0.1", "0.001", 150, tiers=btc),
        Market("ETH-PERP", "0.01", "0.001", 150, tiers=eth),
        Market("SOL-PERP", "0.01", "0.01", 100, tiers=sol),
    ]
    return {market.symbol: market for market in markets}


VENUES = {
    "hyperliquid": Venue("hyperliquid", "Hyperliquid: tiers from max leverage, funding hourly at 1/8 of the 8-hour "
                                        "rate, capped at 4% an hour",
                         FundingRule(HOUR), default_markets),
    "binance": Venue("binance", "Binance USDⓈ-M: published brackets, funding every 8 hours from the time-weighted "
                                "premium, capped at 0.75 × the first bracket's maintenance rate",
                     FundingRule(8 * HOUR, time_weighted=True, cap_of_mmr=0.75, on_mark=True), binance_markets,
                     # "the insurance fund takes over the position at the bankruptcy price"
                     liquidation=BinanceLiquidation(), mark=BinanceMark(), adl=BinanceRanking()),
}
DEFAULT_VENUE = "hyperliquid"


def venue(name: str) -> Venue:
    """The profile called ``name``; ``ValueError`` naming the profiles otherwise."""
    found = VENUES.get(name)
    if found is None:
        raise ValueError(f"unknown venue {name!r}; venues: {', '.join(VENUES)}")
    return found
