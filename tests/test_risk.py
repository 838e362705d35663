"""Margin and risk: every MARGIN.md formula on worked numbers, computed here in closed
form (fractions of USD), never by calling the code under test. Risk and matching run
without the liquidation engine: triggered buckets are closed by hand, at chosen prices."""

from __future__ import annotations

import math
from fractions import Fraction as F

import msgspec
import pytest

from exchange.core import CoreExchange, money
from exchange.invariants import check
from exchange.markets import Market
from schemas.enums import Liquidity, MarginMode, RejectReason, Side, TimeInForce
from schemas.events import (
    CommandAccepted,
    CommandRejected,
    Fill,
    LiquidationTrigger,
    MarginSnapshot,
    NewOrder,
    OrderRejected,
)
from schemas.state import RiskState

ISOLATED, CROSS = MarginMode.ISOLATED, MarginMode.CROSS
BUY, SELL = Side.BUY, Side.SELL
USD = 1_000_000  # micro units


def markets(fees: bool = False) -> dict[str, Market]:
    maker, taker = (200, 500) if fees else (0, 0)
    return {
        "SOL-PERP": Market("SOL-PERP", "0.01", "0.01", 20, maker_fee_ppm=maker, taker_fee_ppm=taker),
        "ETH-PERP": Market("ETH-PERP", "0.01", "0.01", 25, maker_fee_ppm=maker, taker_fee_ppm=taker),
        "BTC-PERP": Market("BTC-PERP", "0.1", "0.001", 40, maker_fee_ppm=maker, taker_fee_ppm=taker),
    }


def ticks(price: F, tick: F = F(1, 100)) -> F:
    return price / tick


def open_position(ex: CoreExchange, account: str, market: str, side: Side, size: str, price: str,
                  counterparty: str = "mm") -> None:
    """``account`` takes ``size`` at ``price`` from a resting order of ``counterparty``."""
    ex.mark(market, price)
    ex.place(counterparty, market, side.opposite, size, price)
    events = ex.place(account, market, side, size, price, tif=TimeInForce.IOC)
    assert not [e for e in events if isinstance(e, OrderRejected)], events


def snapshot_position(ex: CoreExchange, account: str, market: str):
    return next(p for p in ex.snapshot(account).positions if p.market == market)


@pytest.fixture
def ex() -> CoreExchange:
    exchange = CoreExchange(markets(), liquidation=False)
    exchange.deposit("mm", "10000000")
    return exchange


# ---------------------------------------------------------------- the mission's cases


def test_isolated_sol_long_loses_at_most_its_300_and_the_other_1700_is_untouched(ex):
    ex.deposit("trader", "2000")
    ex.set_mode("trader", "SOL-PERP", ISOLATED)
    ex.set_leverage("trader", "SOL-PERP", 5)
    open_position(ex, "trader", "SOL-PERP", BUY, "10", "150")  # 1,500 of exposure
    snap = ex.snapshot("trader")
    assert snap.balance == 1700 * USD
    position = snapshot_position(ex, "trader", "SOL-PERP")
    assert position.isolated_margin == 300 * USD
    # liq = (entry − M/|s|) / (1 − mmr) = (150 − 30) / 0.975 ; bk = 150 − 30 = 120
    liq = (F(150) - F(300, 10)) / (1 - F(1, 40))
    assert position.liquidation_price == round(ticks(liq))
    assert position.bankruptcy_price == 12000
    # liquidated strictly below the liquidation price, not at it
    assert not [e for e in ex.mark("SOL-PERP", "123.08") if isinstance(e, LiquidationTrigger) and not e.update]
    trigger = [e for e in ex.mark("SOL-PERP", "123.07") if isinstance(e, LiquidationTrigger) and not e.update]
    assert [(t.account, t.market, t.mode) for t in trigger] == [("trader", "SOL-PERP", ISOLATED)]
    # the close goes through far below bankruptcy: the loss stops at the 300
    _close(ex, "trader", "SOL-PERP", SELL, "10", "90")
    snap = ex.snapshot("trader")
    assert snap.balance == 1700 * USD and snap.positions == []
    # the deficit, 10 · (120 − 90) = 300, is the insurance fund's
    assert ex.risk.accounts["insurance"].balance == -300 * USD and ex.risk.bad_debt == 300 * USD
    check(ex.risk, ex.matching.values())


def test_cross_account_with_three_positions_is_backed_by_the_whole_balance(ex):
    ex.deposit("trader", "2000")
    for market in ("SOL-PERP", "ETH-PERP", "BTC-PERP"):
        ex.set_leverage("trader", market, 5)
    open_position(ex, "trader", "SOL-PERP", BUY, "10", "150")     # 1,500 notional
    open_position(ex, "trader", "ETH-PERP", BUY, "0.5", "3000")   # 1,500 notional
    open_position(ex, "trader", "BTC-PERP", SELL, "0.02", "60000")  # 1,200 notional
    position = snapshot_position(ex, "trader", "SOL-PERP")
    # cross: equity = 2000 + 10(P − 150); MM = 10·P·2.5% + 1500·2% + 1200·1.25% (others at mark)
    # → P = (1500 + 45 − 2000) / (10 · 0.975)   (negative: SOL alone cannot liquidate it)
    other_mm = F(1500) * F(1, 50) + F(1200) * F(1, 80)
    cross_liq = (other_mm + 1500 - 2000) / (10 * (1 - F(1, 40)))
    assert cross_liq < 0 and position.liquidation_price == 0
    isolated_liq = (F(150) - F(300, 10)) / (1 - F(1, 40))  # the same position isolated at 5x
    assert isolated_liq > 0  # isolated it would have a liquidation price; cross, none
    # ETH's liquidation price with SOL and BTC held at their marks
    eth = snapshot_position(ex, "trader", "ETH-PERP")
    other_mm = F(1500) * F(1, 40) + F(1200) * F(1, 80)
    eth_liq = (other_mm + F(1500) - 2000) / (F(1, 2) * (1 - F(1, 50)))
    assert eth.liquidation_price == 0 and eth_liq < 0
    # a large BTC rally drains the whole cross balance: BTC from 60,000 to 200,000
    # equity = 2000 − 0.02 · (P − 60000) < MM  → triggered
    events = ex.mark("BTC-PERP", "200000")
    assert [e.market for e in events if isinstance(e, LiquidationTrigger) and not e.update] == [""]
    for market, side, size, price in (("SOL-PERP", SELL, "10", "150"), ("ETH-PERP", SELL, "0.5", "3000"),
                                      ("BTC-PERP", BUY, "0.02", "200000")):
        _close(ex, "trader", market, side, size, price)
    snap = ex.snapshot("trader")
    # loss on BTC: 0.02 · 140,000 = 2,800 > 2,000: the balance goes to 0, never below
    assert snap.balance == 0 and snap.positions == []
    assert ex.risk.accounts["insurance"].balance == -800 * USD
    check(ex.risk, ex.matching.values())


def test_cross_liquidation_price_is_further_away_than_isolated(ex):
    for account, mode in (("iso", ISOLATED), ("cross", CROSS)):
        ex.deposit(account, "2000")
        ex.set_mode(account, "SOL-PERP", mode) if mode is ISOLATED else None
        ex.set_leverage(account, "SOL-PERP", 10)
        open_position(ex, account, "SOL-PERP", BUY, "10", "150")
    iso = snapshot_position(ex, "iso", "SOL-PERP").liquidation_price
    cross = snapshot_position(ex, "cross", "SOL-PERP").liquidation_price
    # isolated: M = 150: (150 − 15)/0.975 ; cross: B = 2000: (1500 − 2000)/(10·0.975) < 0 → none
    assert iso == round(ticks((F(150) - 15) / (1 - F(1, 40))))
    assert cross == 0


def _close(ex: CoreExchange, account: str, market: str, side: Side, size: str, price: str):
    """A forced close at any price, as a liquidation fill can be: a transfer with the mm."""
    buyer, seller = (account, "mm") if side is BUY else ("mm", account)
    return ex.transfer(market, buyer, seller, price, size, Liquidity.BACKSTOP)


# ------------------------------------------------------------- isolated formulas


@pytest.mark.parametrize("leverage", [2, 5, 10, 20])
@pytest.mark.parametrize("side", [BUY, SELL])
def test_isolated_liquidation_and_bankruptcy_prices_at_open(ex, leverage, side):
    ex.deposit("t", "5000")
    ex.set_mode("t", "SOL-PERP", ISOLATED)
    ex.set_leverage("t", "SOL-PERP", leverage)
    open_position(ex, "t", "SOL-PERP", side, "10", "150")
    margin = F(1500, leverage)
    mmr = F(1, 40)
    if side is BUY:
        liq, bk = (150 - margin / 10) / (1 - mmr), 150 - margin / 10
    else:
        liq, bk = (150 + margin / 10) / (1 + mmr), 150 + margin / 10
    position = snapshot_position(ex, "t", "SOL-PERP")
    assert position.isolated_margin == margin * USD
    assert position.liquidation_price == round(ticks(liq))
    assert position.bankruptcy_price == round(ticks(bk))
    # the trigger: first whole tick strictly beyond the liquidation price
    beyond = math.ceil(ticks(liq)) - 1 if side is BUY else math.floor(ticks(liq)) + 1
    at = beyond + (1 if side is BUY else -1)
    assert not [e for e in ex.mark("SOL-PERP", str(F(at, 100).__float__())) if isinstance(e, LiquidationTrigger) and not e.update]
    assert [e for e in ex.mark("SOL-PERP", f"{F(beyond, 100).__float__():.2f}") if isinstance(e, LiquidationTrigger) and not e.update]


def test_partial_close_of_isolated_position_keeps_its_liquidation_price(ex):
    ex.deposit("t", "2000")
    ex.set_mode("t", "SOL-PERP", ISOLATED)
    ex.set_leverage("t", "SOL-PERP", 5)
    open_position(ex, "t", "SOL-PERP", BUY, "10", "150")
    before = snapshot_position(ex, "t", "SOL-PERP")
    open_position(ex, "t", "SOL-PERP", SELL, "4", "160")  # close 40% at a profit
    after = snapshot_position(ex, "t", "SOL-PERP")
    assert after.liquidation_price == before.liquidation_price
    assert after.isolated_margin == 180 * USD  # 60% of 300 stays
    # 40% of the margin (120) plus the profit 4 · 10 = 40 went back to the balance
    assert ex.snapshot("t").balance == (1700 + 120 + 40) * USD


def test_add_and_remove_isolated_margin_limits(ex):
    ex.deposit("t", "2000")
    ex.set_mode("t", "SOL-PERP", ISOLATED)
    ex.set_leverage("t", "SOL-PERP", 5)
    open_position(ex, "t", "SOL-PERP", BUY, "10", "150")
    # available to trade = B − 0 (no cross positions) = 1700
    refused = _one(ex.adjust_margin("t", "SOL-PERP", "1700.000001"), CommandRejected)
    assert refused.reason is RejectReason.INSUFFICIENT_MARGIN
    assert _one(ex.adjust_margin("t", "SOL-PERP", "200"), CommandAccepted)
    assert snapshot_position(ex, "t", "SOL-PERP").isolated_margin == 500 * USD
    # remove: E − Δ ≥ max(IM, 10% notional) = max(300, 150) = 300 → at most 200
    refused = _one(ex.adjust_margin("t", "SOL-PERP", "-200.000001"), CommandRejected)
    assert refused.reason is RejectReason.REMOVE_MARGIN_ABOVE_ALLOWED
    assert _one(ex.adjust_margin("t", "SOL-PERP", "-200"), CommandAccepted)
    assert ex.snapshot("t").balance == 1700 * USD
    # adding margin moves the liquidation price away: M = 300 again
    liq = (F(150) - F(300, 10)) / (1 - F(1, 40))
    assert snapshot_position(ex, "t", "SOL-PERP").liquidation_price == round(ticks(liq))


def test_remove_margin_is_refused_on_a_strict_isolated_market():
    specs = markets()
    specs["SOL-PERP"] = Market("SOL-PERP", "0.01", "0.01", 20, maker_fee_ppm=0, taker_fee_ppm=0,
                               strict_isolated=True)
    ex = CoreExchange(specs, liquidation=False)
    ex.deposit("mm", "100000")
    ex.deposit("t", "2000")
    ex.set_mode("t", "SOL-PERP", ISOLATED)
    open_position(ex, "t", "SOL-PERP", BUY, "1", "150")
    assert _one(ex.adjust_margin("t", "SOL-PERP", "-1"), CommandRejected).reason is RejectReason.STRICT_ISOLATED


# ------------------------------------------------------------------ cross formulas


def test_cross_hedged_long_and_short_liquidation_prices(ex):
    ex.deposit("t", "1000")
    ex.set_leverage("t", "SOL-PERP", 10)
    ex.set_leverage("t", "ETH-PERP", 10)
    open_position(ex, "t", "SOL-PERP", BUY, "20", "150")  # long 3,000
    open_position(ex, "t", "ETH-PERP", SELL, "1", "3000")  # short 3,000
    sol = snapshot_position(ex, "t", "SOL-PERP")
    eth = snapshot_position(ex, "t", "ETH-PERP")
    # SOL with ETH fixed: 1000 + 20(P − 150) = 20·P/40 + 3000/50 → P = (3000 + 60 − 1000)/(20·0.975)
    sol_liq = (F(3000) + 60 - 1000) / (20 * (1 - F(1, 40)))
    # ETH with SOL fixed: 1000 − (P − 3000) = P/50 + 3000/40 → P = (1000 + 3000 − 75)/(1 + 1/50)
    eth_liq = (F(1000) + 3000 - 75) / (1 + F(1, 50))
    assert sol.liquidation_price == round(ticks(sol_liq))
    assert eth.liquidation_price == round(ticks(eth_liq))
    # MARGIN.md's bankruptcy price: the bucket's equity reaches 0 with the other positions at
    # their marks, bk = P − side·equity/|s|: 150 − 1000/20 = 100
    assert sol.bankruptcy_price == ticks(100)
    # ADL's price for one position of the bucket: bk_i = P_i − side·equity·(MM_i/MM_c)/|s_i|
    mm_sol, mm_eth = F(3000, 40), F(3000, 50)
    share = mm_sol / (mm_sol + mm_eth)
    # reported on the trader's safe side: a long's rounded up
    assert sol.adl_price == math.ceil(ticks(150 - 1000 * share / 20))
    # the hedge: ETH rises, SOL unchanged: liquidated only past ETH's price
    assert not [e for e in ex.mark("ETH-PERP", f"{math.floor(eth_liq * 100) / 100:.2f}")
                if isinstance(e, LiquidationTrigger) and not e.update]
    assert [e for e in ex.mark("ETH-PERP", f"{math.floor(eth_liq * 100 + 1) / 100:.2f}")
            if isinstance(e, LiquidationTrigger) and not e.update]


def test_margin_ratio_available_and_withdrawable(ex):
    ex.deposit("t", "1000")
    ex.set_leverage("t", "SOL-PERP", 4)
    open_position(ex, "t", "SOL-PERP", BUY, "20", "150")  # notional 3000, IM 750, MM 75
    ex.mark("SOL-PERP", "140")  # uPnL −200, notional 2800, IM 700, MM 70
    snap = ex.snapshot("t")
    cross = snap.buckets[0]
    assert (cross.equity, cross.initial_margin, cross.maintenance_margin) == (800 * USD, 700 * USD, 70 * USD)
    assert cross.margin_ratio_ppb == math.ceil(F(70, 800) * 10**9)
    assert snap.available_to_trade == 100 * USD
    assert snap.withdrawable == 100 * USD  # 800 − max(700, 280)
    assert _one(ex.withdraw("t", "100.000001"), CommandRejected).reason is RejectReason.WITHDRAW_ABOVE_WITHDRAWABLE
    assert _one(ex.withdraw("t", "100"), CommandAccepted)


def test_maintenance_tiers_with_deduction_set_the_liquidation_price():
    specs = {"X-PERP": Market("X-PERP", "1", "1", 50, tiers=[(0, 50), (1_000, 20), (5_000, 10)],
                              maker_fee_ppm=0, taker_fee_ppm=0)}
    ex = CoreExchange(specs, liquidation=False)
    ex.deposit("mm", "1000000")
    ex.deposit("t", "1000")
    ex.set_mode("t", "X-PERP", ISOLATED)
    ex.set_leverage("t", "X-PERP", 10)
    open_position(ex, "t", "X-PERP", SELL, "80", "100")  # short 8,000 notional: tier 3 (mmr 5%)
    position = snapshot_position(ex, "t", "X-PERP")
    # deductions: d1 = 1000·(2.5% − 1%) = 15, d2 = 15 + 5000·(5% − 2.5%) = 140
    assert position.maintenance_margin == (8000 * 5 // 100 - 140) * USD  # 260
    assert position.isolated_margin == 800 * USD  # 10x
    # short, tier 3: 800 + (8000 − n) = 0.05·n − 140 → n = 8940/1.05 (inside tier 3)
    n = F(800 + 8000 + 140) / (1 + F(1, 20))
    assert n >= 5000
    assert position.liquidation_price == round(n / 80)


def test_funding_goes_into_the_right_bucket_and_is_zero_sum_up_to_rounding(ex):
    ex.deposit("c", "1000")
    ex.deposit("i", "1000")
    ex.set_mode("i", "SOL-PERP", ISOLATED)
    open_position(ex, "c", "SOL-PERP", BUY, "10", "150", counterparty="i")  # c long cross, i short isolated
    before_c = ex.snapshot("c").balance
    before_i = snapshot_position(ex, "i", "SOL-PERP").isolated_margin
    before_i_balance = ex.snapshot("i").balance
    ex.funding("SOL-PERP", 100_000, "150")  # +0.01% per interval: longs pay shorts
    paid = F(10 * 150 * 100_000, 10**9) * USD  # 0.15 USD
    assert ex.snapshot("c").balance == before_c - math.ceil(paid)
    assert snapshot_position(ex, "i", "SOL-PERP").isolated_margin == before_i + math.floor(paid)
    assert ex.snapshot("i").balance == before_i_balance
    check(ex.risk, ex.matching.values())


# ------------------------------------------------------------ commands and rejects


def _one(events, kind):
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, events
    return found[0]


def test_every_command_is_answered_with_a_named_reason(ex):
    ex.deposit("t", "100")
    cases = [
        (lambda: ex.withdraw("nobody", "1"), CommandRejected, RejectReason.UNKNOWN_ACCOUNT),
        (lambda: ex.withdraw("t", "100.01"), CommandRejected, RejectReason.WITHDRAW_ABOVE_WITHDRAWABLE),
        (lambda: ex.withdraw("t", "0"), CommandRejected, RejectReason.INVALID_AMOUNT),
        (lambda: ex.set_leverage("t", "SOL-PERP", 21), CommandRejected, RejectReason.LEVERAGE_OUT_OF_RANGE),
        (lambda: ex.set_leverage("t", "SOL-PERP", 0), CommandRejected, RejectReason.LEVERAGE_OUT_OF_RANGE),
        (lambda: ex.set_leverage("t", "DOGE-PERP", 2), CommandRejected, RejectReason.UNKNOWN_MARKET),
        (lambda: ex.set_mode("t", "SOL-PERP", CROSS), CommandRejected, RejectReason.MARGIN_MODE_UNCHANGED),
        (lambda: ex.adjust_margin("t", "SOL-PERP", "1"), CommandRejected, RejectReason.NOT_ISOLATED),
        (lambda: ex.place("t", "SOL-PERP", BUY, "100", "150"), OrderRejected, RejectReason.INSUFFICIENT_MARGIN),
        (lambda: ex.place("t", "SOL-PERP", SELL, "1", "150", reduce_only=True), OrderRejected,
         RejectReason.REDUCE_ONLY_WOULD_INCREASE),
        (lambda: ex.place("nobody", "SOL-PERP", BUY, "1", "150"), OrderRejected, RejectReason.UNKNOWN_ACCOUNT),
        (lambda: ex.place("t", "SOL-PERP", BUY, "1"), OrderRejected, RejectReason.NO_LIQUIDITY),
        (lambda: ex.cancel("t", "SOL-PERP", 12345), CommandRejected, RejectReason.UNKNOWN_ORDER),
    ]
    for call, kind, reason in cases:
        events = call()
        answer = _one(events, kind)
        assert answer.reason is reason, (reason, answer)
        assert answer.detail
    check(ex.risk, ex.matching.values())


def test_mode_change_is_refused_with_a_position_or_open_orders(ex):
    ex.deposit("t", "1000")
    ex.place("t", "SOL-PERP", BUY, "1", "100")  # rests
    refused = _one(ex.set_mode("t", "SOL-PERP", ISOLATED), CommandRejected)
    assert refused.reason is RejectReason.MODE_CHANGE_WITH_OPEN_ORDERS
    open_position(ex, "t", "ETH-PERP", BUY, "0.1", "3000")
    refused = _one(ex.set_mode("t", "ETH-PERP", ISOLATED), CommandRejected)
    assert refused.reason is RejectReason.MODE_CHANGE_WITH_POSITION


def test_lowering_leverage_below_what_the_position_needs_is_refused(ex):
    ex.deposit("t", "400")
    ex.set_mode("t", "SOL-PERP", ISOLATED)
    ex.set_leverage("t", "SOL-PERP", 5)
    open_position(ex, "t", "SOL-PERP", BUY, "10", "150")  # M = 300
    refused = _one(ex.set_leverage("t", "SOL-PERP", 4), CommandRejected)  # would need IM 375
    assert refused.reason is RejectReason.LEVERAGE_BELOW_POSITION_MARGIN
    assert _one(ex.set_leverage("t", "SOL-PERP", 10), CommandAccepted)


def test_open_orders_reserve_margin_and_release_it_when_they_end():
    ex = CoreExchange(markets(fees=True), liquidation=False)
    ex.deposit("t", "1000")
    ex.set_leverage("t", "SOL-PERP", 10)
    events = ex.place("t", "SOL-PERP", BUY, "20", "100")  # notional 2,000: IM 200 + fee 1
    order_id = _one(events, NewOrder).order_id
    assert ex.snapshot("t").available_to_trade == (1000 - 201) * USD
    refused = _one(ex.place("t", "SOL-PERP", BUY, "80", "100"), OrderRejected)  # needs 804, 799 free
    assert refused.reason is RejectReason.INSUFFICIENT_MARGIN
    ex.cancel("t", "SOL-PERP", order_id)
    assert ex.snapshot("t").available_to_trade == 1000 * USD
    check(ex.risk, ex.matching.values())


def test_fees_are_charged_on_fill_notional(ex):
    fx = CoreExchange(markets(fees=True), liquidation=False)
    fx.deposit("mm", "100000")
    fx.deposit("t", "1000")
    open_position(fx, "t", "SOL-PERP", BUY, "10", "150")  # 1,500: taker 0.05% = 0.75, maker 0.02% = 0.30
    assert fx.snapshot("t").balance == money("999.25")
    assert fx.snapshot("mm").balance == money("99999.70")
    assert fx.risk.fees == money("1.05")
    check(fx.risk, fx.matching.values())


def test_reduce_only_orders_reserve_nothing(ex):
    ex.deposit("t", "200")
    ex.set_leverage("t", "SOL-PERP", 10)
    open_position(ex, "t", "SOL-PERP", BUY, "10", "150")
    available = ex.snapshot("t").available_to_trade
    events = ex.place("t", "SOL-PERP", SELL, "10", "200", reduce_only=True)
    assert _one(events, NewOrder).reduce_only
    assert ex.snapshot("t").available_to_trade == available


def test_a_deposit_is_followed_by_a_margin_snapshot_of_the_new_balance(ex):
    events = ex.deposit("t", "100")
    snap = _one(events, MarginSnapshot)
    assert snap.account == "t" and snap.balance == 100 * USD and snap.withdrawable == 100 * USD


def test_liquidation_is_strict_exactly_at_the_liquidation_price():
    # X: tick 1, lot 1, 50x max → mmr 1%. Long 1 @ 100 at 10x: M = 10, add 0.9 → M = 10.9.
    # liq = (100 − 10.9) / 0.99 = 90 exactly: at 90, equity 0.9 = MM 0.9 → healthy.
    ex = CoreExchange({"X-PERP": Market("X-PERP", "1", "1", 50, maker_fee_ppm=0, taker_fee_ppm=0)},
                      liquidation=False)
    ex.deposit("mm", "100000")
    ex.deposit("t", "100")
    ex.set_mode("t", "X-PERP", ISOLATED)
    ex.set_leverage("t", "X-PERP", 10)
    open_position(ex, "t", "X-PERP", BUY, "1", "100")
    ex.adjust_margin("t", "X-PERP", "0.9")
    assert snapshot_position(ex, "t", "X-PERP").liquidation_price == 90
    cross_bucket_untouched = ex.snapshot("t").balance
    assert not [e for e in ex.mark("X-PERP", "90") if isinstance(e, LiquidationTrigger) and not e.update]
    bucket = next(b for b in ex.snapshot("t").buckets if b.market == "X-PERP")
    assert bucket.equity == bucket.maintenance_margin == money("0.9")
    assert [e for e in ex.mark("X-PERP", "89") if isinstance(e, LiquidationTrigger) and not e.update]
    assert ex.snapshot("t").balance == cross_bucket_untouched


def test_a_deficit_in_a_partition_without_the_fund_is_paid_by_the_funds_partition():
    from exchange.risk import RiskEngine
    from schemas.events import (
        CollateralTransfer,
        Deposit,
        Fill,
        SetLeverage,
        SetMarginMode,
    )

    specs = markets()
    traders = RiskEngine(specs, producer="risk.p0", partition=0, holds_fund=False)
    fund = RiskEngine(specs, producer="risk.p1", partition=1, holds_fund=True)
    fund.apply(Deposit("c", 1, "insurance", 1000 * USD))
    for seq, (account, amount) in enumerate((("mm", 100000), ("t", 2000)), 2):
        traders.apply(Deposit("c", seq, account, amount * USD))
    traders.apply(SetMarginMode("c", 5, "t", "SOL-PERP", ISOLATED))
    traders.apply(SetLeverage("c", 6, "t", "SOL-PERP", 5))
    # t buys 10 SOL @ 150 (M = 300), then is closed @ 100: 10 · 50 = 500 lost, 200 beyond its margin
    traders.apply(Fill("m", 1, "SOL-PERP", 1, 15000, 1000, BUY, "t", 1, "mm", 2))
    out = traders.apply(Fill("m", 2, "SOL-PERP", 2, 10000, 1000, SELL, "t", 3, "mm", 4))
    transfers = [e for e in out if isinstance(e, CollateralTransfer) and e.settle]
    assert [(e.from_account, e.to_account, e.amount) for e in transfers] == [("t", "insurance", -200 * USD)]
    assert "insurance" not in traders.accounts  # no shadow fund in the traders' partition
    for transfer in transfers:
        fund.apply(transfer)
    assert fund.accounts["insurance"].balance == 800 * USD
    assert traders.accounts["t"].balance == 1700 * USD
    check([traders, fund])  # money is conserved across the two partitions


def test_a_mark_pinned_at_its_clamp_never_halts_trading_at_the_index(ex):
    """One forged trade print dragged the mark to index −10% (the oracle's clamp held), and
    from then on every order at the index was refused OUTSIDE_PRICE_BAND (5% from the
    mark). An order within the band around the index is accepted while the mark has strayed
    more than a band from it; one beyond both bands is still refused."""
    ex.deposit("trader", "100000")
    ex.mark("SOL-PERP", "135", index="150")  # the mark at index − 10%
    ex.place("mm", "SOL-PERP", SELL, "5", "150")  # a maker at the index
    at_index = ex.place("trader", "SOL-PERP", BUY, "1", "150")
    assert not [e for e in at_index if isinstance(e, OrderRejected)], at_index
    assert sum(e.size for e in at_index if isinstance(e, Fill)) == 100  # 1 SOL, at the index
    market = ex.place("trader", "SOL-PERP", BUY, "1")  # a market order reaches the index's asks too
    assert sum(e.size for e in market if isinstance(e, Fill)) == 100
    [beyond] = [e for e in ex.place("trader", "SOL-PERP", BUY, "1", "158") if isinstance(e, OrderRejected)]
    assert beyond.reason is RejectReason.OUTSIDE_PRICE_BAND  # 158 is past index + 5% = 157.50
    ex.mark("SOL-PERP", "150", index="150")  # back to normal: the band is the mark's alone, as before
    [refused] = [e for e in ex.place("trader", "SOL-PERP", BUY, "1", "157.51") if isinstance(e, OrderRejected)]
    assert refused.reason is RejectReason.OUTSIDE_PRICE_BAND


# ------------------------------------------------------------------ names of positions and buckets


def test_positions_and_buckets_are_named_by_key_and_the_wire_keeps_its_empty_cross_market(ex):
    # an isolated long and a cross short in one account, both pushed under maintenance:
    # risk names each position by (account, market, side BOTH) and each bucket by what it
    # holds, while the triggers on the wire say the isolated market and "" for cross
    from schemas.enums import PositionSide
    from schemas.keys import BucketId, PositionKey

    ex.deposit("t", "1000")
    ex.set_mode("t", "SOL-PERP", ISOLATED)
    ex.set_leverage("t", "SOL-PERP", 10)
    open_position(ex, "t", "SOL-PERP", BUY, "10", "100")  # isolated margin 100
    ex.set_leverage("t", "ETH-PERP", 20)
    open_position(ex, "t", "ETH-PERP", SELL, "10", "1000")  # cross, 10,000 short
    account = ex.risk.accounts["t"]
    sol, eth = PositionKey("t", "SOL-PERP", PositionSide.BOTH), PositionKey("t", "ETH-PERP")
    assert set(account.positions) == {sol, eth}
    assert account.position("SOL-PERP").size == 1000 and account.position("ETH-PERP").size == -1000
    events = ex.mark("SOL-PERP", "90") + ex.mark("ETH-PERP", "1100")  # each 100 down, under its MM
    triggers = {(e.market, e.mode) for e in events if isinstance(e, LiquidationTrigger)}
    assert triggers == {("SOL-PERP", ISOLATED), ("", CROSS)}
    assert account.liquidating == {BucketId("t", sol), BucketId("t")}
    copy = CoreExchange(markets(), liquidation=False)
    copy.risk.load(msgspec.msgpack.decode(msgspec.msgpack.encode(ex.risk.export()), type=RiskState))
    assert copy.risk.accounts["t"].liquidating == account.liquidating  # the keys survive a snapshot
    assert set(copy.risk.accounts["t"].positions) == {sol, eth}
