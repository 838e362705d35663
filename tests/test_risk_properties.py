"""Property tests of risk + matching: random command sequences never break the invariants,
every command is answered exactly once, and an isolated bucket never costs its account
more than the margin put into it."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.accounts import cross_totals, isolated_totals
from exchange.core import CoreExchange
from exchange.invariants import check
from exchange.markets import Market
from schemas.enums import (
    Condition,
    Liquidity,
    MarginMode,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    AdjustIsolatedMargin,
    CancelOrder,
    CommandAccepted,
    CommandRejected,
    Deposit,
    MarginSnapshot,
    NewOrder,
    OrderRejected,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    Withdraw,
)

ACCOUNTS = ["a", "b", "c", "d", "e"]
MARKETS = ["SOL-PERP", "ETH-PERP"]
MID = {"SOL-PERP": 15000, "ETH-PERP": 300000}


def markets() -> dict[str, Market]:
    return {
        "SOL-PERP": Market("SOL-PERP", "0.01", "0.01", 20, tiers=[(0, 20), (50_000, 10)]),
        "ETH-PERP": Market("ETH-PERP", "0.01", "0.01", 25, maker_fee_ppm=-100),
    }


def answers(command, events) -> int:
    """How many events answer ``command`` (a risk.in client command)."""
    if isinstance(command, PlaceOrder):
        return sum(1 for e in events if e.producer == "risk.0" and isinstance(e, (NewOrder, OrderRejected))
                   and e.client_order_id == command.client_order_id)
    forwarded = CancelOrder if isinstance(command, CancelOrder) else None
    return sum(1 for e in events if (isinstance(e, (CommandAccepted, CommandRejected)) and e.ref_seq == command.seq
                                     and e.ref_producer == command.producer)
               or (forwarded and isinstance(e, forwarded) and e.producer == "risk.0"
                   and e.order_id == command.order_id))


def random_step(rng: random.Random, ex: CoreExchange, step: int):
    """One random client command, mark move, funding, or forced close."""
    account = rng.choice(ACCOUNTS)
    market = rng.choice(MARKETS)
    mark = ex.risk.marks.marks.get(market, MID[market])
    roll = rng.random()
    seq = 10_000 + step
    if roll < 0.40:
        side = rng.choice((Side.BUY, Side.SELL))
        market_order = rng.random() < 0.15
        price = 0 if market_order else max(1, mark + rng.randint(-300, 300))
        return PlaceOrder("prop", seq, account, market, f"p{step}", side,
                          OrderType.MARKET if market_order else OrderType.LIMIT,
                          rng.choice((TimeInForce.GTC, TimeInForce.IOC, TimeInForce.GTC)),
                          price, rng.randint(1, 400), rng.random() < 0.15,
                          rng.choice(list(SelfTradePrevention)), step)
    if roll < 0.47:  # a conditional order
        side = rng.choice((Side.BUY, Side.SELL))
        condition = rng.choice((Condition.STOP, Condition.TAKE_PROFIT, Condition.TRAILING_STOP))
        source = rng.choice(list(TriggerSource))
        close = condition is not Condition.TRAILING_STOP and rng.random() < 0.15
        limit = condition is not Condition.TRAILING_STOP and not close and rng.random() < 0.3
        trigger = max(1, mark + rng.randint(-mark // 10, mark // 10))
        return PlaceOrder("prop", seq, account, market, f"p{step}", side,
                          OrderType.LIMIT if limit else OrderType.MARKET, TimeInForce.GTC,
                          max(1, trigger + rng.randint(-200, 200)) if limit else 0,
                          0 if close else rng.randint(1, 300), rng.random() < 0.2, SelfTradePrevention.CANCEL_TAKER,
                          step, condition, 0 if condition is Condition.TRAILING_STOP else trigger, source, close,
                          trigger if condition is Condition.TRAILING_STOP and rng.random() < 0.4 else 0,
                          rng.choice((1_000, 10_000, 30_000)) if condition is Condition.TRAILING_STOP else 0)
    if roll < 0.52:
        orders = sorted(ex.risk.accounts[account].orders) if account in ex.risk.accounts else []
        order_id = rng.choice(orders) if orders and rng.random() < 0.9 else 999_999
        return CancelOrder("prop", seq, account, market, order_id, step)
    if roll < 0.66:
        new = max(1, mark + rng.randint(-mark // 12, mark // 12))
        return ("mark", market, new)
    if roll < 0.70:
        return ("funding", market, rng.randint(-300_000, 300_000))
    if roll < 0.76:
        return AdjustIsolatedMargin("prop", seq, account, market, rng.randint(-50, 50) * 1_000_000, step)
    if roll < 0.81:
        return SetLeverage("prop", seq, account, market, rng.randint(0, 26), step)
    if roll < 0.85:
        return SetMarginMode("prop", seq, account, market, rng.choice(list(MarginMode)), step)
    if roll < 0.90:
        return Withdraw("prop", seq, account, rng.randint(1, 500) * 1_000_000, step)
    if roll < 0.94:
        return Deposit("prop", seq, account, rng.randint(1, 2000) * 1_000_000, step)
    holders = sorted(a for a in ex.risk.holders[market])
    if len(holders) >= 2:
        buyer, seller = rng.sample(holders, 2)
        return ("transfer", market, buyer, seller, max(1, mark + rng.randint(-2000, 2000)), rng.randint(1, 50))
    return ("mark", market, mark)


def act(ex: CoreExchange, action) -> list:
    """Carry out one ``random_step`` action; returns the events it caused."""
    before = len(ex.log)
    if isinstance(action, tuple):
        kind = action[0]
        if kind == "mark":
            ex.submit(_mark(ex, action[1], action[2]))
        elif kind == "funding":
            ex.funding(action[1], action[2], ex.markets[action[1]].format_price(
                ex.risk.marks.marks.get(action[1], MID[action[1]])))
        else:
            _, market, buyer, seller, price, size = action
            spec = ex.markets[market]
            ex.transfer(market, buyer, seller, spec.format_price(price), spec.format_size(size), Liquidity.BACKSTOP)
    else:
        ex.submit(action)
    return ex.log[before:]


def run_sequence(seed: int, steps: int) -> CoreExchange:
    rng = random.Random(seed)
    ex = CoreExchange(markets())
    ex.deposit("insurance", "100000")
    for account in ACCOUNTS:
        ex.deposit(account, str(rng.randint(100, 5000)))
    for market in MARKETS:
        ex.submit(_mark(ex, market, MID[market]))
    income = Income()
    for step in range(steps):
        action = random_step(rng, ex, step)
        events = act(ex, action)
        if not isinstance(action, tuple):
            assert answers(action, events) == 1, (seed, step, action, events)
        check(ex.risk, ex.matching.values())
        assert_no_missed_liquidation(ex, seed, step)
        income.assert_adds_up(ex, seed, step)
    return ex


class Income:
    """The income items the margin snapshots report, summed per account: they must add up
    to each account's wallet (cross balance plus isolated margins), so a client that sums
    its income history sees exactly its wallet."""

    def __init__(self):
        self.seen = 0
        self.totals: dict[str, int] = {}

    def assert_adds_up(self, ex: CoreExchange, seed: int, step: int) -> None:
        for event in ex.log[self.seen:]:
            if isinstance(event, MarginSnapshot):
                for item in event.income:
                    self.totals[event.account] = self.totals.get(event.account, 0) + item.amount
        self.seen = len(ex.log)
        for account in ex.risk.accounts.values():
            wallet = account.balance + sum(p.margin for p in account.positions.values())
            assert self.totals.get(account.account_id, 0) == wallet, (seed, step, account.account_id)


def assert_no_missed_liquidation(ex: CoreExchange, seed: int, step: int) -> None:
    """Detection is complete: every bucket under maintenance has been triggered."""
    for account in ex.risk.accounts.values():
        if account.cross not in account.liquidating:
            equity, _, mm, _ = cross_totals(account, ex.risk.marks)
            assert not (mm and equity < mm), (seed, step, account.account_id, "cross", equity, mm)
        for position in account.positions.values():
            if position.size and position.mode is MarginMode.ISOLATED and position.bucket() not in account.liquidating:
                equity, _, mm, _ = isolated_totals(position, ex.risk.marks)
                assert equity >= mm, (seed, step, account.account_id, position.market.symbol, equity, mm)


def _mark(ex: CoreExchange, market: str, price: int):
    from schemas.events import MarkPrice

    stamp = ex.stamp()
    return MarkPrice(*stamp, market, price, price, ex.ts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_random_sequences_keep_every_invariant_and_answer_every_command_once(seed):
    run_sequence(seed, steps=120)


def test_one_long_random_sequence():
    ex = run_sequence(seed=424242, steps=1500)
    fills = sum(1 for e in ex.log if type(e).__name__ == "Fill")
    assert fills > 100  # the sequence really trades
    assert sum(1 for e in ex.log if type(e).__name__ == "OrderTriggered") > 10  # and conditional orders fire


@settings(max_examples=60, deadline=None)
@given(
    leverage=st.integers(min_value=1, max_value=20),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    path=st.lists(
        st.tuples(st.integers(min_value=1, max_value=40_000),  # a price, ticks
                  st.sampled_from(["mark", "close", "funding", "add"]),
                  st.integers(min_value=1, max_value=100)),
        min_size=1, max_size=25,
    ),
)
def test_an_isolated_bucket_never_costs_more_than_its_margin(leverage, side, path):
    ex = CoreExchange(markets())
    ex.deposit("mm", "10000000")
    ex.deposit("insurance", "1000000")
    ex.deposit("t", "2000")
    ex.set_mode("t", "SOL-PERP", MarginMode.ISOLATED)
    ex.set_leverage("t", "SOL-PERP", leverage)
    ex.submit(_mark(ex, "SOL-PERP", 15000))
    ex.place("mm", "SOL-PERP", side.opposite, "10", "150")
    ex.place("t", "SOL-PERP", side, "10", "150", tif=TimeInForce.IOC)
    account = ex.risk.accounts["t"]
    put_in = 2000 * 1_000_000 - account.balance  # margin plus the opening fee
    assert put_in > 0
    for price, action, amount in path:
        position = account.position("SOL-PERP")
        before = account.balance
        if action == "mark":
            ex.submit(_mark(ex, "SOL-PERP", price))
        elif action == "funding":
            ex.funding("SOL-PERP", (amount - 50) * 100_000, "150")
        elif action == "add" and position.size:
            added = ex.adjust_margin("t", "SOL-PERP", str(amount))
            if any(isinstance(e, CommandAccepted) for e in added):
                put_in += amount * 1_000_000
        elif action == "close" and position.size:
            lots = max(1, abs(position.size) * amount // 100)
            buyer, seller = ("mm", "t") if position.size > 0 else ("t", "mm")
            ex.transfer("SOL-PERP", buyer, seller, f"{price / 100:.2f}", f"{lots / 100:.2f}", Liquidity.BACKSTOP)
            # a close only ever returns money to the cross balance
            assert account.balance >= before
        if action != "add":
            assert account.balance >= before  # nothing else ever takes from B
        check(ex.risk, ex.matching.values())
    # whatever happened, the account has at least what it did not put in
    assert account.balance >= 2000 * 1_000_000 - put_in
