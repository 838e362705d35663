"""Liquidation end to end in the core: matching + risk + liquidation (+ oracle), no Kafka."""

from __future__ import annotations

from fractions import Fraction as F

import pytest

from exchange.core import CoreExchange, money
from exchange.invariants import check
from exchange.markets import Market
from exchange.oracle import SECOND
from exchange.scenarios import crash, cross_case, isolated_case
from schemas.enums import (
    IncomeKind,
    LiquidationStage,
    Liquidity,
    MarginMode,
    Side,
    TimeInForce,
)
from schemas.events import (
    CollateralTransfer,
    Fill,
    LiquidationOutcome,
    MarginSnapshot,
    NewOrder,
    PositionTransfer,
)

USD = 1_000_000
BUY, SELL = Side.BUY, Side.SELL


def zero_fee_markets() -> dict[str, Market]:
    return {"SOL-PERP": Market("SOL-PERP", "0.01", "0.01", 20, maker_fee_ppm=0, taker_fee_ppm=0)}


def stages(events, account: str) -> list[LiquidationStage]:
    return [e.stage for e in events if isinstance(e, LiquidationOutcome) and e.account == account]


def open_long(ex: CoreExchange, account: str, size: str, price: str = "150", counterparty: str = "maker") -> None:
    ex.place(counterparty, "SOL-PERP", SELL, size, price)
    ex.place(account, "SOL-PERP", BUY, size, price, tif=TimeInForce.IOC)


def isolated_long_at_5x(**settings) -> CoreExchange:
    """A zero-fee SOL market, a maker, a fund of 5,000, and "trader" (2,000 deposited)
    long 10 SOL @ 150 isolated at 5x: M = 300, liquidation price 123.08, bankruptcy 120."""
    ex = CoreExchange(zero_fee_markets(), **settings)
    ex.deposit("maker", "100000")
    ex.deposit("insurance", "5000")
    ex.deposit("trader", "2000")
    ex.set_mode("trader", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("trader", "SOL-PERP", 5)
    ex.mark("SOL-PERP", "150")
    open_long(ex, "trader", "10")
    return ex


# ------------------------------------------------------------------ the mission's cases


def test_isolated_case_is_liquidated_through_the_book_before_losing_300():
    result = isolated_case()
    assert result.liquidation_price == "123.08"
    assert result.liquidations == [("trader", "SOL-PERP", "ISOLATED", "FULL")]
    opening_fee = money("0.75")  # 0.05% of 1,500
    assert result.final_balance >= money("1700") - opening_fee  # the other 1,700 untouched
    assert result.loss - opening_fee < money("300")  # liquidated before the loss reached 300


def test_isolated_case_through_a_gap_loses_exactly_its_margin():
    result = isolated_case("-30% at 10s")  # SOL gaps from 150 to 105: the position is bankrupt
    opening_fee = money("0.75")
    assert result.final_balance == money("1700") - opening_fee
    assert result.loss == money("300") + opening_fee
    assert result.liquidations == [("trader", "SOL-PERP", "ISOLATED", "BACKSTOP")]
    # the fund took the bucket's deficit: 10 · (105.07 − 120) = −149.30
    assert result.insurance_fund == money("1000000") - money("149.30")


def test_cross_case_liquidation_price_is_further_away_than_isolated():
    cross = cross_case()
    isolated = isolated_case()
    assert F(cross.liquidation_price) > 0 and F(isolated.liquidation_price) > 0
    # cross: SOL 100 long backed by the whole 2,000 and ETH/BTC at their marks;
    # the same SOL long isolated at 10x would liquidate at (150 − 15) / 0.975 = 138.46
    assert F(cross.liquidation_price) < F("138.46")
    assert 0 <= cross.final_balance < cross.deposit
    assert ("trader", "cross", "CROSS", "FULL") in cross.liquidations


def test_cross_case_through_a_gap_drains_the_whole_balance_and_no_more():
    result = cross_case("-30% at 10s")
    assert result.final_balance == 0
    assert result.loss == money("2000")
    ex = result.exchange
    assert ex.snapshot("trader").positions == []
    check(ex.risk, ex.matching.values())


# ------------------------------------------------------------------------- cascade


def test_a_crash_cascade_keeps_every_invariant_and_bounds_every_loss():
    # the scenario checks money conservation, Σ long = Σ short and risk/matching agreement
    # after every oracle tick; here: who lost what, and what ADL touched
    result = crash(accounts=200, shock="-30% at 10s", seconds=20)
    ex = result.exchange
    assert len(result.liquidations) > 50
    assert {mode for _, _, mode, _ in result.liquidations} == {"ISOLATED", "CROSS"}
    stages_seen = {stage for _, _, _, stage in result.liquidations}
    assert {"BACKSTOP", "ADL"} <= stages_seen  # the gap exhausts the fund, then ADL
    for account, after_opening in result.opened.items():
        balance = ex.risk.accounts[account].balance
        index = int(account[1:])
        if index % 2:  # isolated: its bucket never takes from the cross balance
            assert balance >= after_opening, account
        else:  # cross: loses at most the whole balance
            assert balance >= 0, account
    # ADL only ever reduces positions, on both sides: nobody without one is touched
    positions: dict[tuple[str, str], int] = {}
    adl = 0
    for event in ex.log:
        if isinstance(event, Fill):
            buyer = event.taker_account if event.taker_side is BUY else event.maker_account
            seller = event.maker_account if event.taker_side is BUY else event.taker_account
            if event.liquidity is Liquidity.ADL:
                adl += 1
                assert positions.get((event.market, buyer), 0) <= -event.size, "ADL must close a short"
                assert positions.get((event.market, seller), 0) >= event.size, "ADL must close a long"
            positions[(event.market, buyer)] = positions.get((event.market, buyer), 0) + event.size
            positions[(event.market, seller)] = positions.get((event.market, seller), 0) - event.size
    assert adl > 0
    # a bucket closed by ADL at its bankruptcy price ends at zero, up to the tick rounding
    # in its favour; nothing of it is left for the fund to cover
    for event in ex.log:
        if isinstance(event, CollateralTransfer) and event.stage is LiquidationStage.ADL:
            assert event.amount >= 0
    check(ex.risk, ex.matching.values())
    # the income the snapshots reported (fees, PnL, liquidation charges, bad debt covered)
    # adds up to every wallet, the fund's included
    income: dict[str, int] = {}
    for event in ex.log:
        if isinstance(event, MarginSnapshot):
            for item in event.income:
                income[event.account] = income.get(event.account, 0) + item.amount
    kinds = {item.kind for e in ex.log if isinstance(e, MarginSnapshot) for item in e.income}
    assert IncomeKind.INSURANCE_CLEAR in kinds and IncomeKind.REALIZED_PNL in kinds
    for account in ex.risk.accounts.values():
        wallet = account.balance + sum(p.margin for p in account.positions.values())
        assert income.get(account.account_id, 0) == wallet, account.account_id


# ------------------------------------------------------------------ state machine


def test_large_position_is_liquidated_20_percent_first_then_fully_within_the_cooldown():
    ex = CoreExchange(zero_fee_markets())
    ex.deposit("maker", "10000000")
    ex.deposit("insurance", "1000000")
    ex.deposit("whale", "20000")
    ex.set_mode("whale", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("whale", "SOL-PERP", 10)
    ex.mark("SOL-PERP", "150")
    open_long(ex, "whale", "1000")  # 150,000 notional > 100,000; M = 15,000
    ex.mark("SOL-PERP", "140")  # above its liquidation price (138.46); bids within the price band
    ex.place("maker", "SOL-PERP", BUY, "100", "138")  # only 100 SOL above bankruptcy (135)
    events = ex.mark("SOL-PERP", "138.30")  # equity 3,300 < MM 3,457.50, above 2/3 MM
    orders = [e for e in events if isinstance(e, NewOrder) and e.liquidation]
    # first round: 20% = 200 SOL at the bankruptcy price 135; 100 fill at 138, the rest expires;
    # still under maintenance within 30 s: the next round is the full remaining 900
    assert [(o.size, o.price, o.side) for o in orders] == [(20_000, 13_500, SELL), (90_000, 13_500, SELL)]
    assert stages(events, "whale") == [LiquidationStage.TRIGGERED, LiquidationStage.PARTIAL]
    # after the cooldown, a large position gets a partial round again
    ex.ts = 31 * SECOND
    ex.place("maker", "SOL-PERP", BUY, "1000", "137")
    events = ex.mark("SOL-PERP", "138.30")
    orders = [e for e in events if isinstance(e, NewOrder) and e.liquidation]
    assert orders[0].size == 18_000  # 20% of the 900 left
    check(ex.risk, ex.matching.values())


def test_backstop_below_two_thirds_of_maintenance_takes_position_and_collateral():
    ex = isolated_long_at_5x()
    events = ex.mark("SOL-PERP", "121")  # equity 10 < 2/3 · MM (2/3 · 30.25)
    transfers = [e for e in events if isinstance(e, PositionTransfer)]
    assert [(t.buyer, t.seller, t.price, t.size, t.liquidity) for t in transfers] == [
        ("insurance", "trader", 12100, 1000, Liquidity.BACKSTOP)]
    moved = [e for e in events if isinstance(e, CollateralTransfer)]
    assert [(m.from_account, m.to_account, m.amount) for m in moved] == [("trader", "insurance", 10 * USD)]
    assert stages(events, "trader") == [LiquidationStage.TRIGGERED, LiquidationStage.BACKSTOP]
    assert ex.snapshot("trader").balance == 1700 * USD  # the other bucket untouched
    fund = ex.snapshot("insurance")
    assert fund.balance == 5010 * USD
    assert [(p.market, p.signed_size, p.entry_value) for p in fund.positions] == [("SOL-PERP", 1000, 1210 * USD)]
    check(ex.risk, ex.matching.values())


def test_adl_closes_the_best_ranked_opposite_positions_at_the_bankruptcy_price():
    ex = CoreExchange(zero_fee_markets())  # no insurance fund: it cannot cover anything
    for account, amount in (("maker", "100000"), ("m2", "10000000"), ("s1", "1000"), ("s2", "1000"),
                            ("s3", "5000"), ("trader", "1000"), ("idle", "500")):
        ex.deposit(account, amount)
    ex.set_mode("s2", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("s2", "SOL-PERP", 10)
    ex.set_mode("trader", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("trader", "SOL-PERP", 10)
    ex.mark("SOL-PERP", "150")
    for short, size, price in (("s1", "5", "150"), ("s2", "5", "150"), ("s3", "10", "145")):
        ex.place("maker", "SOL-PERP", BUY, size, price)
        ex.place(short, "SOL-PERP", SELL, size, price, tif=TimeInForce.IOC)
    ex.place("m2", "SOL-PERP", SELL, "12", "150")
    ex.place("trader", "SOL-PERP", BUY, "12", "150", tif=TimeInForce.IOC)  # M = 180
    events = ex.mark("SOL-PERP", "100")  # trader equity 180 − 600 = −420: bankrupt, no fund
    # ranking of the shorts at 100: score = (entry / P) · notional / bucket equity
    score = {
        "s1": F(150, 100) * 500 / (1000 + 5 * 50),  # 0.6
        "s2": F(150, 100) * 500 / (75 + 5 * 50),    # 2.31 (isolated, 10x: M = 75)
        "s3": F(145, 100) * 1000 / (5000 + 10 * 45),  # 0.27
        "m2": F(150, 100) * 1200 / (10_000_000 + 12 * 50),
    }
    expected_order = sorted(score, key=lambda a: -score[a])
    assert expected_order[:3] == ["s2", "s1", "s3"]
    transfers = [(e.buyer, e.seller, e.price, e.size) for e in events
                 if isinstance(e, PositionTransfer) and e.liquidity is Liquidity.ADL]
    bankruptcy = 150 - F(180, 12)  # at open: entry − M/|s| = 135
    assert transfers == [("s2", "trader", int(bankruptcy * 100), 500), ("s1", "trader", int(bankruptcy * 100), 500),
                         ("s3", "trader", int(bankruptcy * 100), 200)]
    assert stages(events, "trader")[-1] is LiquidationStage.ADL
    assert ex.snapshot("trader").balance == 820 * USD and ex.snapshot("trader").positions == []
    assert ex.snapshot("idle").balance == 500 * USD  # no position, never touched
    check(ex.risk, ex.matching.values())


@pytest.mark.parametrize(("fee_ppm", "fee"), [(100_000, money("30")), (10_000, money("12.30"))])
def test_liquidation_fee_goes_to_the_fund_capped_by_what_the_bucket_has_left(fee_ppm, fee):
    ex = isolated_long_at_5x(liquidation_fee_ppm=fee_ppm)
    ex.mark("SOL-PERP", "124")  # above the liquidation price, 123.08
    ex.place("maker", "SOL-PERP", BUY, "10", "123")
    events = ex.mark("SOL-PERP", "123.04")
    assert stages(events, "trader") == [LiquidationStage.TRIGGERED, LiquidationStage.FULL]
    # sold 10 @ 123: value 1,230; nominal fee 10% = 123 or 1% = 12.30;
    # the bucket has 300 + 10 · (123 − 150) = 30 left: the fee is at most that
    assert ex.risk.liquidation_fees == fee
    assert ex.snapshot("insurance").balance == 5000 * USD + fee
    assert ex.snapshot("trader").balance == 1700 * USD + money("30") - fee
    check(ex.risk, ex.matching.values())


def test_liquidation_waits_for_liquidity_instead_of_looping():
    ex = isolated_long_at_5x()
    events = ex.mark("SOL-PERP", "123.04")  # no bids at all above bankruptcy
    assert len([e for e in events if isinstance(e, NewOrder) and e.liquidation]) == 1
    assert ("trader", "SOL-PERP") in ex.liquidation.active
    ex.place("maker", "SOL-PERP", BUY, "10", "123")  # within the band of 123.04
    events = ex.mark("SOL-PERP", "123.03")  # the next state retries, and it fills
    assert stages(events, "trader") == [LiquidationStage.FULL]
    assert ex.liquidation.active == {}
