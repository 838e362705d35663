"""The liquidation-detection index on its own: which accounts a mark move must look at."""

from __future__ import annotations

from exchange.accounts import CROSS, ISOLATED, Position
from exchange.liquidation_index import LiquidationIndex
from exchange.markets import default_markets
from schemas.keys import PositionKey

MARKETS = default_markets()
SOL, ETH = MARKETS["SOL-PERP"], MARKETS["ETH-PERP"]


def position(market, size: int, mode=ISOLATED, account: str = "a") -> Position:
    held = Position(PositionKey(account, market.symbol), market, mode, 10)
    held.size = size
    return held


def test_a_long_is_a_candidate_only_once_the_mark_is_below_its_key_and_a_short_above():
    index = LiquidationIndex(MARKETS)
    index.key_price(position(SOL, 10, account="long"), 14_000)
    index.key_price(position(SOL, -10, account="short"), 16_000)
    assert index.crossed("SOL-PERP", 14_000, None) == []  # at the key: not below it
    assert index.crossed("SOL-PERP", 13_999, 14_000) == ["long"]
    assert index.crossed("SOL-PERP", 16_000, 13_999) == []
    assert index.crossed("SOL-PERP", 16_001, 16_000) == ["short"]
    assert index.crossed("ETH-PERP", 1, None) == []  # another market's keys are not read


def test_an_unkeyed_position_is_no_candidate_and_cross_keys_come_before_isolated():
    index = LiquidationIndex(MARKETS)
    isolated, cross = position(SOL, 10, account="isolated"), position(SOL, 10, CROSS, account="cross")
    index.key_price(isolated, 15_000)
    index.key_price(cross, 15_000)
    assert index.crossed("SOL-PERP", 100, None) == ["cross", "isolated"]
    index.unkey_price(isolated)
    assert isolated.index_entry is None
    assert index.crossed("SOL-PERP", 100, 100) == ["cross"]


def test_a_movement_budget_is_exhausted_by_the_travel_of_either_market():
    index = LiquidationIndex(MARKETS)
    held = [position(SOL, 100, CROSS), position(ETH, 100, CROSS)]
    # per tick of adverse move: |s| · v · (1 + 1/20) = 100 · 100 · 21/20 = 10,500 in each market
    index.key_budget("bucket", held, 10_500 * 2 * 5)  # budget: 5 ticks
    assert index.crossed("SOL-PERP", 15_000, None) == []  # the first mark travels nothing
    assert index.crossed("SOL-PERP", 15_003, 15_000) == []  # 3 ticks
    assert index.crossed("SOL-PERP", 15_001, 15_003) == []  # 5 ticks: the budget, not beyond it
    assert index.crossed("SOL-PERP", 15_002, 15_001) == ["bucket"]  # 6 ticks, although nearer the start
    assert index.crossed("ETH-PERP", 2_000, None) == []
    index.unkey_budget("bucket")
    assert index.crossed("SOL-PERP", 10_000, 15_002) == []
