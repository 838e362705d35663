"""Market specs: defaults, unit conversions, tiers, and validation errors."""

from __future__ import annotations

from fractions import Fraction

import pytest

from exchange.markets import (
    Market,
    MarketError,
    UnitError,
    default_markets,
    load_markets,
    markets_from_config,
)
from schemas.enums import RejectReason


def test_default_markets_are_btc_eth_sol_with_mmr_half_of_initial_at_max_leverage():
    markets = default_markets()
    assert list(markets) == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]
    # MARGIN.md: mmr = 1 / (2 * max_leverage): 40x -> 1.25%, 25x -> 2%, 20x -> 2.5%
    assert markets["BTC-PERP"].mmr == Fraction(125, 10_000)
    assert markets["ETH-PERP"].mmr == Fraction(2, 100)
    assert markets["SOL-PERP"].mmr == Fraction(25, 1000)


def test_prices_and_sizes_convert_exactly_between_decimals_and_units():
    btc = default_markets()["BTC-PERP"]  # tick 0.1, lot 0.001
    assert btc.price_to_ticks("65000.1") == 650001
    assert btc.size_to_lots("0.25") == 250
    assert btc.format_price(650001) == "65000.1"
    assert btc.format_size(250) == "0.250"
    # 0.25 BTC at 65000.1 = 16250.025 USD = 16,250,025,000 micro
    assert btc.notional(650001, 250) == 16_250_025_000


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda m: m.price_to_ticks("65000.05"), RejectReason.OFF_TICK_PRICE),
        (lambda m: m.size_to_lots("0.0005"), RejectReason.SIZE_NOT_LOT_MULTIPLE),
        (lambda m: m.price_to_ticks("abc"), RejectReason.INVALID_PRICE),
        (lambda m: m.size_to_lots("NaN"), RejectReason.INVALID_SIZE),
    ],
)
def test_off_unit_values_raise_unit_error_with_the_reject_reason(call, reason):
    with pytest.raises(UnitError) as caught:
        call(default_markets()["BTC-PERP"])
    assert caught.value.reason is reason
    assert "BTC-PERP" in str(caught.value)


def test_tiered_maintenance_margin_is_continuous_with_deduction():
    market = Market("X-PERP", "1", "1", 50, tiers=[(0, 50), (1_000, 20), (5_000, 10)])
    micro = 1_000_000
    # mmr: 1%, 2.5%, 5%; deduction(1) = 1000 * (2.5% - 1%) = 15; deduction(2) = 15 + 5000 * 2.5% = 140
    assert market.maintenance_margin(999 * micro) == 9_990_000
    assert market.maintenance_margin(1_000 * micro) == 10 * micro  # 25 - 15, continuous at the floor
    assert market.maintenance_margin(2_000 * micro) == 35 * micro  # 50 - 15
    assert market.maintenance_margin(5_000 * micro) == 110 * micro  # 250 - 140 = 125 - 15
    assert market.maintenance_margin(10_000 * micro) == 360 * micro  # 500 - 140
    below = market.maintenance_margin(5_000 * micro - 1)
    assert 0 <= 110 * micro - below <= 1


def test_maintenance_margin_rounds_up():
    market = Market("X-PERP", "1", "1", 40)  # mmr 1/80
    assert market.maintenance_margin(1) == 1
    assert market.maintenance_margin(80) == 1
    assert market.maintenance_margin(81) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(symbol="BTC PERP"), "symbol"),
        (dict(tick_size="0"), "tick_size must be positive"),
        (dict(tick_size="x"), "tick_size must be a decimal"),
        (dict(tick_size="0.0001", lot_size="0.0001"), "whole number of micro units"),
        (dict(max_leverage=0), "max_leverage must be at least 1"),
        (dict(max_leverage=2.5), "max_leverage must be an integer"),
        (dict(min_size=0), "min_size must be at least 1"),
        (dict(taker_fee_ppm=-1), "taker_fee_ppm must be at least 0"),
        (dict(maker_fee_ppm=-600, taker_fee_ppm=500), "maker rebate"),
        (dict(price_band_ppm=0), "price_band_ppm"),
        (dict(tiers=[(10, 40)]), "first tier must start at notional 0"),
        (dict(tiers=[(0, 20)]), "must equal the market's max_leverage"),
        (dict(tiers=[(0, 40), (100, 50)]), "must decrease"),
        (dict(tiers=[(0, 40), (0, 20)]), "floors must increase"),
        (dict(tiers=[(0,)]), "must be [floor, max_leverage]"),
    ],
)
def test_invalid_specs_raise_market_error_naming_the_field(kwargs, message):
    spec = dict(symbol="BTC-PERP", tick_size="0.1", lot_size="0.001", max_leverage=40) | kwargs
    symbol = spec.pop("symbol")
    with pytest.raises(MarketError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Market(symbol, spec.pop("tick_size"), spec.pop("lot_size"), spec.pop("max_leverage"), **spec)


def test_markets_load_from_toml(tmp_path):
    path = tmp_path / "markets.toml"
    path.write_text(
        '[DOGE-PERP]\ntick_size = "0.00001"\nlot_size = "1"\nmax_leverage = 10\n'
        'tiers = [[0, 10], [1000000, 5]]\ntaker_fee_ppm = 400\n'
    )
    markets = load_markets(path)
    doge = markets["DOGE-PERP"]
    assert doge.value_per_tick_lot == 10 and doge.taker_fee_ppm == 400
    assert [tier.max_leverage for tier in doge.tiers] == [10, 5]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "non-empty"),
        ({"A-PERP": 5}, "expected a table"),
        ({"A-PERP": {"tick_size": "1", "lot_size": "1"}}, "missing field.*max_leverage"),
        ({"A-PERP": {"tick_size": "1", "lot_size": "1", "max_leverage": 5, "leverage": 3}}, "unknown field.*leverage"),
    ],
)
def test_bad_market_config_is_named(config, message):
    with pytest.raises(MarketError, match=message):
        markets_from_config(config)


def test_missing_or_broken_market_file_is_a_market_error(tmp_path):
    with pytest.raises(MarketError, match="does not exist"):
        load_markets(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[A-PERP\n")
    with pytest.raises(MarketError, match="not valid TOML"):
        load_markets(broken)
