"""Venue profiles against the venues' own published numbers. Each expectation is a figure
the venue printed, with its source; none is recomputed by the code under test."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from exchange.accounts import ISOLATED, Account, Marks, Position, position_state
from exchange.core import CoreExchange
from exchange.invariants import check
from exchange.markets import Market, MarketError
from exchange.oracle import FundingCalculator
from exchange.venues import VENUES, binance_markets, venue
from schemas.enums import MarginMode, Side, TimeInForce

SECOND = 1_000_000_000

# Binance, "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts" (support FAQ
# b3c689c1f50a44cabb3a84e663b81d93): BTCUSDT's brackets as that page printed them, as
# [floor of notional, max leverage, maintenance margin rate, maintenance amount].
FAQ_BTCUSDT = [(0, 125, "0.004", 0), (50_000, 100, "0.005", 50), (250_000, 50, "0.01", 1_300),
               (1_000_000, 20, "0.025", 16_300), (10_000_000, 10, "0.05", 266_300),
               (20_000_000, 5, "0.1", 1_266_300), (50_000_000, 4, "0.125", 2_516_300),
               (100_000_000, 3, "0.15", 5_016_300), (200_000_000, 2, "0.25", 25_016_300),
               (300_000_000, 1, "0.5", 100_016_300)]


FAQ_ETHUSDT = [(0, 100, "0.005", 0), (10_000, 75, "0.0065", 15), (100_000, 50, "0.01", 365),
               (500_000, 25, "0.02", 5_365), (1_000_000, 10, "0.05", 35_365), (2_000_000, 5, "0.1", 135_365),
               (5_000_000, 4, "0.125", 260_365), (10_000_000, 3, "0.15", 510_365), (20_000_000, 2, "0.25", 2_510_365)]


def test_binance_faq_two_position_cross_example_maintenance_margins():
    # The FAQ's two-position cross example: "Maintenance Margin of ETHUSDT = 356,512.508
    # (4918775.081 * 10.00% - 135365)" and "Maintenance Margin of BTCUSDT = 71200.81144
    # (3500032.458 * 2.50% - 16300)", with the brackets of that page
    eth = Market("ETH-PERP", "0.01", "0.001", 100, tiers=FAQ_ETHUSDT)
    btc = Market("BTC-PERP", "0.1", "0.001", 125, tiers=FAQ_BTCUSDT)
    assert eth.maintenance_margin(4_918_775_081_000) == 356_512_508_100  # 356,512.508 to its 3 places
    # 71,200.81145 exactly; the FAQ prints 71200.81144 (its 5th place, a float's): equal to 4 places
    assert btc.maintenance_margin(3_500_032_458_000) == 71_200_811_450


def test_binance_faq_brackets_load_and_give_the_faqs_rate_and_amount():
    btc = Market("BTC-PERP", "0.1", "0.001", 125, tiers=FAQ_BTCUSDT)
    # "if the position size ... is 264,000 USDT, then the maintenance margin rate would be 1%"
    assert btc.tier(264_000 * 1_000_000).mmr == Fraction(1, 100)
    # "if the position size ... is 500,000 USDT, then the maintenance amount would be 1,300 USDT"
    assert btc.tier(500_000 * 1_000_000).deduction == 1_300 * 1_000_000
    # "Maintenance Amount on Level 3 = 250,000 * (1% - 0.5%) + 50 USDT = 1,300 USDT": a table
    # that breaks this is refused, naming the amount that would be continuous
    wrong = list(FAQ_BTCUSDT)
    wrong[2] = (250_000, 50, "0.01", 1_200)
    with pytest.raises(MarketError, match="must be 1300"):
        Market("BTC-PERP", "0.1", "0.001", 125, tiers=wrong)


def test_binance_brackets_as_its_api_publishes_them_are_continuous():
    # /fapi/v1/leverageBracket as shipped in freqtrade 2026.9 (binance_leverage_tiers.json);
    # the constructor refuses any bracket whose maintenance amount is not continuous
    markets = binance_markets()
    assert [(t.floor // 1_000_000, t.max_leverage, float(t.mmr), t.deduction // 1_000_000)
            for t in markets["BTC-PERP"].tiers[:3]] == [(0, 150, 0.004, 0), (300_000, 100, 0.005, 300),
                                                      (800_000, 75, 0.0065, 1_500)]
    assert markets["SOL-PERP"].tiers[-1].deduction == 66_731_475 * 1_000_000


def test_binance_faq_liquidation_price_of_a_cross_long():
    # The FAQ's example: a wallet of 500 USDT, a 1,000 USDT (0.02 BTC) 20x long at 50,000,
    # cross margin: liquidation price 25,100.40.
    ex = CoreExchange(binance_markets())
    ex.deposit("maker", "1000000")
    ex.deposit("trader", "500.5")  # the 0.5 taker fee of the opening trade leaves a wallet of 500
    ex.mark("BTC-PERP", "50000")
    ex.set_leverage("trader", "BTC-PERP", 20)
    ex.place("maker", "BTC-PERP", Side.SELL, "0.02", "50000")
    ex.place("trader", "BTC-PERP", Side.BUY, "0.02", None, tif=TimeInForce.IOC)
    snapshot = ex.snapshot("trader")
    assert snapshot.balance == 500_000_000
    [position] = snapshot.positions
    assert position.mode is MarginMode.CROSS
    assert ex.markets["BTC-PERP"].format_price(position.liquidation_price) == "25100.4"  # printed 25,100.40
    check(ex.risk, ex.matching.values())


def test_hyperliquid_clearinghouse_state_example_liquidation_price():
    # Hyperliquid docs, "Info endpoint / Perpetuals / Retrieve a user's perpetuals account
    # summary": ETH isolated at 20x (max leverage 50), szi 0.0335, entryPx 2986.3,
    # positionValue 100.02765 (so a mark of 2985.9), marginUsed 4.967826, unrealizedPnl
    # -0.0134: liquidationPx 2866.26936529. Hyperliquid's maintenance rate is 1/(2 · 50).
    eth = Market("ETH-PERP", "0.01", "0.0001", 50, maker_fee_ppm=0, taker_fee_ppm=0)
    account = Account("0xuser")
    key = account.key("ETH-PERP")
    position = account.positions[key] = Position(key, eth, ISOLATED, 20)
    position.size = eth.size_to_lots("0.0335")
    position.entry_value = eth.price_to_ticks("2986.3") * position.size * eth.value_per_tick_lot
    position.margin = 4_981_226  # marginUsed 4.967826 less the unrealized PnL of -0.0134
    marks = Marks()
    marks.marks["ETH-PERP"] = eth.price_to_ticks("2985.9")
    state = position_state(account, position, marks)
    assert state.unrealized_pnl == -13_400 and state.isolated_margin + state.unrealized_pnl == 4_967_826
    assert state.mark_price * position.size * eth.value_per_tick_lot == 100_027_650  # positionValue
    assert eth.format_price(state.liquidation_price) == "2866.27"  # printed 2866.26936529


def fund_a_day(profile: str, premium) -> tuple[CoreExchange, list[float]]:
    """A day of 5-second premium samples through the profile's funding, paid by risk to
    a long of 3 BTC and shorts of 1 and 2 BTC at an index of 10,000."""
    rule = VENUES[profile].funding
    markets = venue(profile).markets()
    ex = CoreExchange(markets)
    for account in ("maker", "long", "short1", "short2"):
        ex.deposit(account, "100000")
    ex.mark("BTC-PERP", "10000")
    for account, side, size in (("long", Side.BUY, "3"), ("short1", Side.SELL, "1"), ("short2", Side.SELL, "2")):
        ex.place("maker", "BTC-PERP", side.opposite, size, "10000")
        ex.place(account, "BTC-PERP", side, size, "10000", tif=TimeInForce.IOC)
    calculator = FundingCalculator(rule, markets["BTC-PERP"])
    rates = []
    for step in range(0, 24 * 3600 // 5 + 1):
        ts = step * 5 * SECOND
        rate = calculator.sample(10_000 * (1 + premium(ts / SECOND)), 10_000.0, ts)
        if rate is not None:
            rates.append(rate)
            ex.funding("BTC-PERP", round(rate * 1e9), "10000")
    return ex, rates


@pytest.mark.parametrize("profile,payments", [("hyperliquid", 24), ("binance", 3)])
def test_a_day_of_funding_is_the_venues_formula_and_zero_sum(profile, payments):
    def premium(t: float) -> float:  # 0.02% to 0.22%, rising through the day
        return 0.0002 + 0.002 * t / 86_400

    ex, rates = fund_a_day(profile, premium)
    assert len(rates) == payments
    # the venue's formula, by hand: each interval's samples (every 5 s; the last one of an
    # interval is the first of the next), averaged plainly (Hyperliquid) or weighted 1..n
    # (Binance); F = P + clamp(0.01% − P, ±0.05%) for 8 hours; Hyperliquid pays 1/8 of it
    # hourly, capped at 4%; Binance all of it 8-hourly, capped at 0.75 · 0.4% = 0.3%
    interval = 3600 if profile == "hyperliquid" else 8 * 3600
    expected = []
    for k in range(payments):
        samples = [premium(t) for t in range(k * interval, (k + 1) * interval, 5)]
        if profile == "binance":
            average = sum(i * p for i, p in enumerate(samples, 1)) / (len(samples) * (len(samples) + 1) / 2)
        else:
            average = sum(samples) / len(samples)
        rate = average + min(0.0005, max(-0.0005, 0.0001 - average))
        rate = min(0.04, rate / 8) if profile == "hyperliquid" else min(0.003, rate)
        expected.append(rate)
    assert rates == pytest.approx(expected, rel=1e-9)
    # the long pays 3 BTC · 10,000 · rate each time, rounded up; the shorts receive, rounded down
    paid = {name: ex.risk.accounts[name].funding_paid for name in ("long", "short1", "short2")}
    assert paid["long"] == sum(math.ceil(30_000 * 1_000_000 * round(r * 1e9) / 1e9) for r in rates)
    assert paid["short1"] == -sum(math.floor(10_000 * 1_000_000 * round(r * 1e9) / 1e9) for r in rates)
    assert sum(paid.values()) == ex.risk.funding_net  # what nobody received is the rounding kept
    assert 0 <= ex.risk.funding_net <= 3 * payments
    check(ex.risk, ex.matching.values())


def test_hyperliquid_funding_payment_of_a_known_premium_through_risk():
    # Hyperliquid docs, "Trading / Funding", with the figures: premium 1% through
    # the hour, the 8-hour rate 1% − 0.05% = 0.95%, one eighth paid: a long of 10 BTC at an
    # index of 10,000 pays 118.75 (the whole 8-hour rate, as perpsim paid before, was 950)
    ex = CoreExchange(venue("hyperliquid").markets())
    for account in ("maker", "long"):
        ex.deposit(account, "100000")
    ex.mark("BTC-PERP", "10000")
    ex.place("maker", "BTC-PERP", Side.SELL, "10", "10000")
    ex.place("long", "BTC-PERP", Side.BUY, "10", "10000", tif=TimeInForce.IOC)
    calculator = FundingCalculator(VENUES["hyperliquid"].funding, ex.markets["BTC-PERP"])
    calculator.sample(10_100.0, 10_000.0, 0)
    rate = calculator.sample(10_100.0, 10_000.0, 3600 * SECOND)
    events = ex.funding("BTC-PERP", round(rate * 1e9), "10000")
    [payment] = [item for e in events if type(e).__name__ == "MarginSnapshot" and e.account == "long"
                 for item in e.income if item.kind.name == "FUNDING_FEE"]
    assert payment.amount == -118_750_000


def test_binance_charges_funding_on_the_mark_and_hyperliquid_on_the_index():
    # Binance, "Introduction to Binance Futures Funding Rates": "Funding Amount = Nominal
    # Value of Positions × Funding Rate", the nominal value at the mark price: with a mark of
    # 50,100 and a rate of 0.15%, 1 BTC long pays 75.15 (on the index of 50,000 it was 75.00).
    # Hyperliquid, "Trading / Funding": size × oracle price × rate, the oracle being the index.
    from exchange.mark import BinanceMark
    from exchange.oracle import Oracle, RandomWalk
    from schemas.events import BBO, Funding, MarkPrice, Trade

    for profile, charged_on in (("binance", "mark_price"), ("hyperliquid", "index_price")):
        rules = venue(profile)
        mark_rule = BinanceMark() if profile == "binance" else None
        oracle = Oracle(rules.markets(), {"BTC-PERP": RandomWalk(50_000, seed=1, volatility=2.0)},
                        funding=rules.funding, funding_interval_s=60, mark_rule=mark_rule)
        events = []
        for t in range(0, 241, 5):  # the book and the trades 0.4% above the index: the mark is above it
            index = oracle.index_ticks("BTC-PERP", t * SECOND)
            oracle.observe(BBO("book", t + 1, "BTC-PERP", round(index * 1.003), 1, round(index * 1.005), 1))
            oracle.observe(Trade("book", t + 1, "BTC-PERP", t + 1, round(index * 1.004), 1, 1, t * SECOND))
            events += oracle.tick(t * SECOND)
        paid = [(e, previous) for previous, e in zip(events, events[1:]) if isinstance(e, Funding)]
        assert paid and all(isinstance(mark, MarkPrice) for _, mark in paid)
        assert any(mark.mark_price != mark.index_price for _, mark in paid)  # else the test shows nothing
        assert [e.price for e, _ in paid] == [getattr(mark, charged_on) for _, mark in paid], profile

    rules = venue("binance")
    ex = CoreExchange(rules.markets(), venue=rules)
    for account in ("maker", "long"):
        ex.deposit(account, "100000")
    ex.mark("BTC-PERP", "50100", index="50000")
    ex.place("maker", "BTC-PERP", Side.SELL, "1", "50100")
    ex.place("long", "BTC-PERP", Side.BUY, "1", "50100", tif=TimeInForce.IOC)
    events = ex.funding("BTC-PERP", 1_500_000, "50100")  # 0.15%, on the mark the oracle sent
    [payment] = [item for e in events if type(e).__name__ == "MarginSnapshot" and e.account == "long"
                 for item in e.income if item.kind.name == "FUNDING_FEE"]
    assert payment.amount == -75_150_000


@pytest.mark.parametrize("profile", ["hyperliquid", "binance"])
def test_the_backstop_takes_a_position_at_the_mark_or_at_the_bankruptcy_price(profile):
    # Hyperliquid's liquidator takes a bucket too far under maintenance at the mark, with its
    # collateral ("Trading / Liquidations"); Binance's insurance fund takes it at the
    # bankruptcy price ("Liquidation Protocols"). Either way the trader loses its margin, no more.
    rules = venue(profile)
    ex = CoreExchange(rules.markets(), venue=rules)
    ex.deposit("insurance", "1000000")
    ex.deposit("maker", "1000000")
    ex.deposit("trader", "1000.75")  # the 0.75 opening fee leaves 1,000
    ex.mark("SOL-PERP", "150")
    ex.set_mode("trader", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("trader", "SOL-PERP", 5)
    ex.place("maker", "SOL-PERP", Side.SELL, "10", "150")
    ex.place("trader", "SOL-PERP", Side.BUY, "10", None, tif=TimeInForce.IOC)  # 300 of margin
    events = ex.mark("SOL-PERP", "110")  # a gap past the bankruptcy price, 150 − 300/10 = 120
    [backstop] = [e for e in events if type(e).__name__ == "Fill" and e.liquidity.name == "BACKSTOP"]
    assert backstop.price == (11_000 if profile == "hyperliquid" else 12_000)
    assert ex.risk.accounts["trader"].balance == 700_000_000  # 1,000 − the 300 of margin
    check(ex.risk, ex.matching.values())


@pytest.mark.parametrize("profile,first", [("hyperliquid", "steady"), ("binance", "doubled")])
def test_adl_ranks_by_the_venues_formula(profile, first):
    # "doubled": long 1 from 55 at 1x; at 110 its PnL is 100% at an effective leverage of 1
    # (notional 110 over equity 55 + 55). "steady": long 1 from 100 at 10x; at 110, 10% at
    # 110 / (10 + 10) = 5.5. Hyperliquid ranks by (P / entry) · leverage: 2 against 6.05,
    # the steady one first; Binance by PnL% · effective leverage ("What is Auto-Deleveraging
    # (ADL)?"): 1.0 against 0.55, the doubled one first.
    market = Market("X-PERP", "1", "1", 20, maker_fee_ppm=0, taker_fee_ppm=0)
    ex = CoreExchange({"X-PERP": market}, venue=venue(profile))
    for account, amount in (("maker", "100000"), ("doubled", "1000"), ("steady", "1000")):
        ex.deposit(account, amount)
    for account, price, leverage in (("doubled", "55", 1), ("steady", "100", 10)):
        ex.mark("X-PERP", price)
        ex.set_mode(account, "X-PERP", MarginMode.ISOLATED)
        ex.set_leverage(account, "X-PERP", leverage)
        ex.place("maker", "X-PERP", Side.SELL, "1", price)
        ex.place(account, "X-PERP", Side.BUY, "1", price, tif=TimeInForce.IOC)
    ex.mark("X-PERP", "110")
    assert [account for account, _ in ex.risk.adl_candidates("X-PERP", 1)][0] == first


def test_binance_liquidates_a_large_position_a_bracket_at_a_time():
    # Binance, "Liquidation Protocols": a position in a higher bracket is first reduced to
    # the bracket below. 20 BTC long at 50,000 (1,000,000: the 800,000 to 3,000,000
    # bracket, 0.65% less 1,500), a wallet of 20,000 at 50x, cross; at a mark of 49,200
    # equity 4,000 is under MM 4,896 but above 2/3 of it: a liquidation order, not the backstop.
    rules = venue("binance")
    ex = CoreExchange(rules.markets(), venue=rules)
    ex.deposit("insurance", "1000000")
    ex.deposit("maker", "100000000")
    ex.deposit("whale", "20500")  # 500 of taker fee on 1,000,000 leaves 20,000
    ex.mark("BTC-PERP", "50000")
    ex.set_leverage("whale", "BTC-PERP", 50)
    ex.place("maker", "BTC-PERP", Side.SELL, "20", "50000")
    ex.place("whale", "BTC-PERP", Side.BUY, "20", "50000", tif=TimeInForce.IOC)
    ex.mark("BTC-PERP", "49300")
    ex.place("maker", "BTC-PERP", Side.BUY, "30", "49150")
    events = ex.mark("BTC-PERP", "49200")
    orders = [e for e in events if type(e).__name__ == "NewOrder" and e.producer.startswith("liquidation")]
    # just under the bracket's floor of 800,000 at 49,200: 16.260 BTC (799,992) stay
    kept = (800_000 * 1_000_000 - 1) // (49_200 * 1_000_000 // 1_000)
    assert kept == 16_260 and orders[0].size == 20_000 - kept
    stages = [e.stage.name for e in events if type(e).__name__ == "LiquidationOutcome"]
    assert stages[:2] == ["TRIGGERED", "PARTIAL"]
    position = ex.risk.accounts["whale"].position("BTC-PERP")
    assert position.size == kept  # in the lower bracket, healthy again at 0.5% less 300
    assert "RECOVERED" in stages
    check(ex.risk, ex.matching.values())
