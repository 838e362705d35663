"""The oracle: seeded paths, CSV replay, scripted shocks, mark fallbacks, funding."""

from __future__ import annotations

import csv
import math

import pytest

from exchange.core import CoreExchange
from exchange.mark import BinanceMarkCalculator, MarkCalculator
from exchange.markets import default_markets
from exchange.oracle import (
    SECOND,
    CsvReplay,
    FundingCalculator,
    Oracle,
    OracleError,
    RandomWalk,
    Shock,
    Shocked,
    sample_csv,
)
from exchange.venues import VENUES
from schemas.enums import MarginMode, Side, TimeInForce
from schemas.events import Funding, MarkPrice


def test_same_seed_gives_the_same_path_in_any_query_order():
    times = [t * SECOND for t in (0, 1, 5, 60, 3600, 7200)]
    first = RandomWalk(150, seed=7)
    forward = [first.price(t) for t in times]
    second = RandomWalk(150, seed=7)
    backward = [second.price(t) for t in reversed(times)][::-1]
    assert forward == backward
    assert forward != [RandomWalk(150, seed=8).price(t) for t in times]
    assert forward[0] == 150


def test_random_walk_volatility_is_roughly_what_was_asked():
    walk = RandomWalk(100, volatility=0.8, seed=1, jumps_per_day=0, step_s=60)
    logs = [math.log(walk.price(i * 60 * SECOND)) for i in range(20_001)]
    returns = [b - a for a, b in zip(logs, logs[1:], strict=False)]
    mean = sum(returns) / len(returns)
    annualised = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns) * 365 * 24 * 60)
    assert 0.7 < annualised < 0.9


def test_csv_replay_reproduces_the_file():
    replay = CsvReplay.from_file(sample_csv())
    rows = [row for row in csv.reader(sample_csv().read_text().splitlines()[2:])]
    assert len(rows) == 181
    for index, (_, price) in enumerate(rows):
        at = index * 10 * SECOND
        assert replay.price(at) == float(price)
        assert replay.price(at + 9 * SECOND) == float(price)  # a step until the next row
    assert replay.duration_ns == 1800 * SECOND


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("time,price\n0,100\n10,abc\n", "row 3: price 'abc'"),
        ("0,100\n10,-5\n", "price must be positive"),
        ("0,100\n0,101\n", "does not increase"),
        ("0,100\nyesterday,101\n", "neither seconds nor ISO 8601"),
        ("0\n", "expected time,price"),
    ],
)
def test_bad_price_files_are_named_with_their_row(tmp_path, content, message):
    path = tmp_path / "prices.csv"
    path.write_text(content)
    with pytest.raises(OracleError, match=message):
        CsvReplay.from_file(path)


def test_missing_price_file_is_an_oracle_error(tmp_path):
    with pytest.raises(OracleError, match="does not exist"):
        CsvReplay.from_file(tmp_path / "none.csv")


def test_shocks_land_where_scripted():
    class Flat:
        def price(self, ts: int) -> float:
            return 200.0

    shocked = Shocked(Flat(), [Shock.parse("-30% over 10s at 60s"), Shock.parse("+10% over 60s at 70s")])
    assert shocked.price(59 * SECOND) == 200
    assert shocked.price(65 * SECOND) == pytest.approx(200 * 0.85)
    assert shocked.price(70 * SECOND) == pytest.approx(200 * 0.70)
    assert shocked.price(100 * SECOND) == pytest.approx(200 * 0.70 * 1.05)
    assert shocked.price(500 * SECOND) == pytest.approx(200 * 0.70 * 1.10)


@pytest.mark.parametrize("text", ["-30", "-30% in 10s", "minus 30%", "-100%"])
def test_unreadable_or_impossible_shocks_are_refused(text):
    with pytest.raises(OracleError):
        Shock.parse(text)


def test_mark_falls_back_to_the_index_with_no_book():
    calculator = MarkCalculator()
    assert calculator.mark(15000.0, 0) == 15000.0


def test_mark_with_a_one_sided_book_is_the_mean_of_index_and_book():
    calculator = MarkCalculator()
    calculator.observe_book(14900, 0)  # bids only: no basis, book component = the bid
    assert calculator.mark(15000.0, 0) == 14950.0


def test_mark_is_the_median_of_basis_book_and_index():
    calculator = MarkCalculator(basis_tau_s=0)  # basis = current mid − index
    calculator.observe_book(15090, 15110)
    calculator.observe_trade(15300)
    # components: index 15000, index + basis = 15100, median(15090, 15110, 15300) = 15110
    assert calculator.mark(15000.0, SECOND) == 15100.0


def test_hyperliquid_pays_an_eighth_of_the_8_hour_rate_every_hour():
    # Hyperliquid docs, "Trading / Funding": F = P + clamp(0.01% − P, ±0.05%) for 8 hours,
    # one eighth paid each hour. Premium 1%: F = 0.95%, 0.11875% an hour; on 10 BTC at
    # 10,000 (100,000 of notional) a payment of 118.75 (the figure).
    funding = FundingCalculator(VENUES["hyperliquid"].funding, default_markets()["BTC-PERP"])
    assert funding.sample(10_100.0, 10_000.0, 0) is None
    assert funding.sample(10_100.0, 10_000.0, 1800 * SECOND) is None
    rate = funding.sample(10_100.0, 10_000.0, 3600 * SECOND)  # closes the first hour
    assert rate == pytest.approx(0.0011875) and round(rate * 100_000, 6) == 118.75


def test_binance_pays_the_8_hour_rate_every_8_hours_capped_at_three_quarters_of_the_mmr():
    # Binance, "Introduction to Binance Futures Funding Rates": the same formula, paid in
    # full every 8 hours, capped at 0.75 × maintenance margin rate (0.4% for BTCUSDT: 0.3%)
    btc = VENUES["binance"].markets()["BTC-PERP"]
    funding = FundingCalculator(VENUES["binance"].funding, btc)
    funding.sample(10_100.0, 10_000.0, 0)
    assert funding.sample(10_100.0, 10_000.0, 4 * 3600 * SECOND) is None  # 8-hourly
    assert funding.sample(10_100.0, 10_000.0, 8 * 3600 * SECOND) == pytest.approx(0.003)
    funding = FundingCalculator(VENUES["binance"].funding, btc)
    funding.sample(10_002.0, 10_000.0, 0)  # premium 0.02%: F = 0.02% + clamp(−0.01%) = 0.01%
    assert funding.sample(10_002.0, 10_000.0, 8 * 3600 * SECOND) == pytest.approx(0.0001)


def test_binance_weights_later_premium_samples_more():
    # (1·P1 + 2·P2 + 3·P3) / 6 with premiums 0, 0.15%, 0.3%: 0.2%; + clamp(0.01% − 0.2%) = 0.15%
    funding = FundingCalculator(VENUES["binance"].funding, VENUES["binance"].markets()["BTC-PERP"])
    for step, mark in enumerate((10_000.0, 10_015.0, 10_030.0)):
        funding.sample(mark, 10_000.0, step * 3600 * SECOND)
    assert funding.sample(10_000.0, 10_000.0, 8 * 3600 * SECOND) == pytest.approx(0.0015)
    plain = FundingCalculator(VENUES["hyperliquid"].funding, default_markets()["BTC-PERP"])
    for step, mark in enumerate((10_000.0, 10_015.0, 10_030.0)):
        plain.sample(mark, 10_000.0, step * 1200 * SECOND)
    # Hyperliquid's plain mean, 0.15%: 0.15% − 0.05% = 0.1% for 8 hours, an eighth an hour
    assert plain.sample(10_000.0, 10_000.0, 3600 * SECOND) == pytest.approx(0.001 / 8)


def test_oracle_emits_marks_every_tick_and_funding_each_interval():
    markets = default_markets()
    oracle = Oracle(markets, {"SOL-PERP": RandomWalk(150, seed=3)}, funding_interval_s=60)
    events = [event for t in range(0, 181, 10) for event in oracle.tick(t * SECOND)]
    marks = [e for e in events if isinstance(e, MarkPrice)]
    funding = [e for e in events if isinstance(e, Funding)]
    assert len(marks) == 19 and len(funding) == 3
    assert marks[0].index_price == 15000 and marks[0].mark_price == 15000
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_unknown_market_source_is_refused():
    with pytest.raises(OracleError, match="DOGE-PERP"):
        Oracle(default_markets(), {"DOGE-PERP": RandomWalk(1)})


def test_funding_through_risk_is_zero_sum_up_to_rounding():
    markets = default_markets()
    oracle = Oracle(markets, {"SOL-PERP": Shocked(RandomWalk(150, seed=5), [Shock(0, 0.02)])},
                    funding_interval_s=60)
    ex = CoreExchange(markets, oracle=oracle)
    for account in ("mm", "a", "b", "c"):
        ex.deposit(account, "100000")
    ex.set_mode("b", "SOL-PERP", MarginMode.ISOLATED)
    ex.advance(0)
    for account, side, size in (("a", Side.BUY, "13"), ("b", Side.BUY, "7.5"), ("c", Side.SELL, "4")):
        ex.place("mm", "SOL-PERP", side.opposite, size, "153")
        ex.place(account, "SOL-PERP", side, size, "153", tif=TimeInForce.IOC)
    before = ex.risk.funding_net
    events = ex.advance(61 * SECOND)
    funding = [e for e in events if isinstance(e, Funding)]
    assert len(funding) == 1 and funding[0].rate_ppb != 0
    kept = ex.risk.funding_net - before
    assert 0 <= kept <= 4  # the exchange keeps at most one micro unit per position


def test_binance_mark_is_the_median_of_funding_basis_moving_basis_and_last():
    # Binance, "Mark Price and Price Index": median(index · (1 + last funding rate · time to
    # the next funding / interval), index + 5-minute average of (mid − index), last price)
    calculator = BinanceMarkCalculator()
    calculator.funding_rate, calculator.until_funding = 0.0001, 0.5  # Price 1 = 10,000 · 1.00005 = 10,000.5
    calculator.observe_book(10_010, 10_030)  # mid − index = 20
    calculator.observe_trade(10_012)
    assert calculator.mark(10_000.0, 0) == 10_012  # median(10,000.5, 10,020, 10,012)
    calculator.observe_book(9_990, 10_010)  # mid − index = 0 now; the 5-minute average moves slowly
    assert calculator.mark(10_000.0, 60 * SECOND) == 10_010  # median(10,000.5, 10,010, 10,012)
    calculator.observe_trade(10_050)
    assert calculator.mark(10_000.0, 400 * SECOND) == pytest.approx(10_000.5)  # the old samples left: 10,000
    calculator.observe_trade(10_050)
    calculator.funding_rate = 0.01
    assert calculator.mark(10_000.0, 401 * SECOND) == pytest.approx(10_050)  # median(10,050, 10,000, 10,050)


def test_a_mark_that_sits_at_its_clamp_for_five_seconds_is_logged_once_as_a_fault(caplog):
    import logging

    from schemas import topic_partitions
    from services.oracle import OracleService
    from services.runtime.memory import MemoryBus

    service = OracleService(MemoryBus(topic_partitions(1)), default_markets(), {})
    clamped = MarkPrice("oracle", 1, "SOL-PERP", 15000, 13500)  # index − 10%: at the clamp
    with caplog.at_level(logging.INFO, logger="services.oracle"):
        for second in range(0, 12):
            service._watch_clamp(clamped, float(second))
        service._watch_clamp(MarkPrice("oracle", 2, "SOL-PERP", 15000, 14900), 12.0)  # back near the index
    faults = [r.getMessage() for r in caplog.records if "fault" in r.getMessage()]
    assert len(faults) == 1 and "SOL-PERP mark has sat at its clamp, 10% from the index, for 5 s" in faults[0]
    assert "left its clamp" in caplog.records[-1].getMessage()


async def test_a_second_oracle_refuses_to_start_while_another_publishes_and_starts_once_it_is_silent():
    import asyncio
    import time

    from schemas import MARKET_DATA, codec, topic_partitions
    from services.oracle import OracleService
    from services.runtime.bus import partition_for
    from services.runtime.memory import MemoryBus

    bus = MemoryBus(topic_partitions(2))
    partition = partition_for("SOL-PERP", 2)

    async def publish(ts: int) -> None:
        mark = MarkPrice("oracle", ts, "SOL-PERP", 15000, 15000, ts)
        await bus.send([(MARKET_DATA, partition, None, codec(MARKET_DATA).encode(mark))])

    second = OracleService(bus, default_markets(), {})
    stop = asyncio.Event()
    await publish(time.time_ns())
    alive = asyncio.create_task(second.wait_for_the_name(stop, silent_s=0.5, patience_s=1.0))
    for _ in range(12):  # the first oracle keeps publishing
        await asyncio.sleep(0.1)
        await publish(time.time_ns())
    with pytest.raises(OracleError, match="another oracle is publishing marks on this venue"):
        await alive
    await asyncio.sleep(0.6)  # the first oracle stopped: silent for longer than silent_s
    await asyncio.wait_for(second.wait_for_the_name(stop, silent_s=0.5, patience_s=1.0), 2)
