"""Conditional orders through the real engines (risk, matching, liquidation in-process):
the trigger rule of every type on both price sources, trailing stops on a scripted path,
close-position orders, margin checked at the trigger, cancels, and a liquidation
cancelling them. Expectations are Binance's rules, written out as tables."""

from __future__ import annotations

import pytest

from exchange.core import CoreExchange
from exchange.invariants import check
from exchange.markets import Market
from schemas.enums import (
    CloseReason,
    Condition,
    MarginMode,
    RejectReason,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    AmendOrder,
    CommandRejected,
    Fill,
    NewOrder,
    OrderAccepted,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
)

BUY, SELL = Side.BUY, Side.SELL
STOP, TP, TRAIL = Condition.STOP, Condition.TAKE_PROFIT, Condition.TRAILING_STOP
MARK, LAST = TriggerSource.MARK, TriggerSource.LAST
M = "BTC-PERP"


def exchange() -> CoreExchange:
    ex = CoreExchange({M: Market(M, "1", "0.001", 20, maker_fee_ppm=0, taker_fee_ppm=0)})
    ex.deposit("insurance", "1000000")
    for account in ("maker", "x", "y"):
        ex.deposit(account, "10000000")
    ex.deposit("trader", "10000")
    ex.mark(M, "50000")
    return ex


def quote(ex: CoreExchange, around: int) -> None:
    """The market maker's two quotes, 10 either side of ``around``, 10 BTC each."""
    for order in [o for o in ex.risk.accounts["maker"].orders.values()]:
        ex.cancel("maker", M, order.order_id)
    ex.place("maker", M, BUY, "10", str(around - 10))
    ex.place("maker", M, SELL, "10", str(around + 10))


def move(ex: CoreExchange, source: TriggerSource, price: int) -> list:
    """Move one price source to ``price``: the mark, or the last price by a trade between
    x and y (the mark stays; the band allows 5% around it)."""
    if source is MARK:
        return ex.mark(M, str(price))
    return ex.place("x", M, SELL, "0.001", str(price), tif=TimeInForce.GTC) + \
        ex.place("y", M, BUY, "0.001", str(price), tif=TimeInForce.IOC)


def of(events, kind, **fields):
    return [e for e in events if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())]


def placed(events) -> int:
    [accepted] = [e for e in events if isinstance(e, OrderAccepted) and e.condition is not Condition.NONE]
    return accepted.order_id


# Binance USD-M, "New Order": STOP/STOP_MARKET BUY fires when the price >= stopPrice, SELL
# when <= stopPrice; TAKE_PROFIT/TAKE_PROFIT_MARKET BUY when <= stopPrice, SELL when >=.
# (condition, side, trigger, a price short of it, the trigger price reached)
RULES = [
    (STOP, BUY, 50_500, 50_499, 50_500),
    (STOP, SELL, 49_500, 49_501, 49_500),
    (TP, BUY, 49_500, 49_501, 49_500),
    (TP, SELL, 50_500, 50_499, 50_500),
]


@pytest.mark.parametrize("source", [MARK, LAST])
@pytest.mark.parametrize("condition,side,trigger,short,reached", RULES)
def test_each_type_fires_where_binance_says_on_both_price_sources(source, condition, side, trigger, short, reached):
    ex = exchange()
    move(ex, LAST, 50_000)
    order_id = placed(ex.place("trader", M, side, "0.01", None, condition=condition, trigger=str(trigger),
                               source=source))
    other = LAST if source is MARK else MARK
    assert not of(move(ex, other, reached), OrderTriggered)  # the other price does not count
    move(ex, other, 50_000)
    assert not of(move(ex, source, short), OrderTriggered)
    quote(ex, reached)
    events = move(ex, source, reached)
    [fired] = of(events, OrderTriggered, order_id=order_id)
    assert (fired.trigger_price, fired.fired_at, fired.size, fired.side) == (trigger, reached, 10, side)
    # risk forwards it with the same id, and it trades against the maker's quote
    assert of(events, NewOrder, order_id=order_id, producer="risk.0")
    [fill] = of(events, Fill, taker_order_id=order_id)
    assert fill.price == reached + 10 * side
    assert ex.risk.accounts["trader"].position(M).size == 10 * side
    check(ex.risk, ex.matching.values())


def test_a_stop_limit_becomes_a_resting_limit_order():
    ex = exchange()
    order_id = placed(ex.place("trader", M, SELL, "0.01", "49400", condition=STOP, trigger="49500"))
    events = ex.mark(M, "49500")
    [new] = of(events, NewOrder, order_id=order_id, producer="risk.0")
    assert (new.price, new.condition) == (49_400, Condition.NONE)
    assert ex.matching[M].book.get(order_id).price == 49_400  # resting: nothing to trade against
    check(ex.risk, ex.matching.values())


def test_a_trailing_stop_tracks_the_mark_and_fires_on_the_way_back():
    ex = exchange()
    quote(ex, 50_000)
    ex.place("trader", M, BUY, "0.1", None)
    order_id = placed(ex.place("trader", M, SELL, "0.1", None, condition=TRAIL, callback_pct="1",
                               reduce_only=True))
    for price in (50_500, 51_000, 50_600, 50_491):  # highest 51,000; 1% back is 50,490
        assert not of(ex.mark(M, str(price)), OrderTriggered)
    quote(ex, 50_490)
    [fired] = of(ex.mark(M, "50490"), OrderTriggered)
    assert (fired.order_id, fired.trigger_price, fired.fired_at) == (order_id, 50_490, 50_490)
    assert ex.risk.accounts["trader"].position(M).size == 0
    check(ex.risk, ex.matching.values())


def test_a_trailing_stop_with_an_activation_price_waits_for_it():
    ex = exchange()
    order_id = placed(ex.place("trader", M, BUY, "0.01", None, condition=TRAIL, callback_pct="2",
                               activation="49000"))
    for price in (49_500, 48_000, 48_500, 48_959):  # not active above 49,000; then from 48,000: 48,960
        assert not of(ex.mark(M, str(price)), OrderTriggered)
    [fired] = of(ex.mark(M, "48960"), OrderTriggered)
    assert (fired.order_id, fired.trigger_price) == (order_id, 48_960)


def test_close_position_closes_the_position_as_it_is_when_it_fires():
    ex = exchange()
    quote(ex, 50_000)
    ex.place("trader", M, BUY, "0.05", None)
    order_id = placed(ex.place("trader", M, SELL, "0", None, condition=STOP, trigger="49000", close_position=True))
    ex.place("trader", M, BUY, "0.1", None)  # the position grows to 0.15 after placement
    quote(ex, 49_000)
    [fired] = of(ex.mark(M, "49000"), OrderTriggered)
    assert (fired.order_id, fired.size, fired.reduce_only) == (order_id, 150, True)
    assert ex.risk.accounts["trader"].position(M).size == 0
    check(ex.risk, ex.matching.values())


def test_close_position_is_cancelled_when_the_position_is_gone():
    ex = exchange()
    quote(ex, 50_000)
    ex.place("trader", M, BUY, "0.05", None)
    order_id = placed(ex.place("trader", M, SELL, "0", None, condition=STOP, trigger="49000", close_position=True))
    events = ex.place("trader", M, SELL, "0.05", None)  # closed by hand
    [closed] = of(events, OrderClosed, order_id=order_id)
    assert closed.reason is CloseReason.POSITION_CLOSED
    assert order_id not in ex.matching[M].triggers.orders and order_id not in ex.risk.accounts["trader"].orders
    assert not of(ex.mark(M, "49000"), OrderTriggered)


def test_margin_is_checked_when_it_fires_and_a_refusal_names_the_reason():
    ex = exchange()
    # 1 BTC at 50,500 needs 2,525 at 20x; the trader has 10,000 and reserves nothing while it waits
    order_id = placed(ex.place("trader", M, BUY, "1", None, condition=STOP, trigger="50500"))
    assert ex.risk.accounts["trader"].reserved == 0
    assert ex.withdraw("trader", "9000")  # possible: the waiting stop holds no margin
    events = ex.mark(M, "50500")
    assert of(events, OrderTriggered, order_id=order_id)
    [refused] = of(events, OrderRejected, order_id=order_id)
    assert refused.reason is RejectReason.INSUFFICIENT_MARGIN and "triggered order needs" in refused.detail
    assert order_id not in ex.risk.accounts["trader"].orders
    check(ex.risk, ex.matching.values())


@pytest.mark.parametrize("condition,side,trigger", [(STOP, BUY, "50000"), (STOP, SELL, "50100"),
                                                    (TP, BUY, "50100"), (TP, SELL, "49900")])
def test_a_trigger_already_reached_is_refused(condition, side, trigger):
    ex = exchange()
    [refused] = of(ex.place("trader", M, side, "0.01", None, condition=condition, trigger=trigger), OrderRejected)
    assert refused.reason is RejectReason.WOULD_TRIGGER_IMMEDIATELY


@pytest.mark.parametrize("kwargs,reason", [
    (dict(condition=TRAIL, callback_pct="0.05"), RejectReason.INVALID_TRIGGER),
    (dict(condition=TRAIL, callback_pct="10.1"), RejectReason.INVALID_TRIGGER),
    (dict(condition=TRAIL, callback_pct="1.25"), RejectReason.INVALID_TRIGGER),
    (dict(condition=STOP, trigger=None), RejectReason.INVALID_TRIGGER),
    (dict(condition=STOP, trigger="49000", reduce_only=True), RejectReason.REDUCE_ONLY_WOULD_INCREASE),
])
def test_bad_conditional_orders_are_refused_by_name(kwargs, reason):
    ex = exchange()
    [refused] = of(ex.place("trader", M, SELL, "0.01", None, **kwargs), OrderRejected)
    assert refused.reason is reason, refused.detail
    assert not ex.risk.accounts["trader"].orders


def test_cancel_takes_a_conditional_order_off_and_amend_is_refused():
    ex = exchange()
    order_id = placed(ex.place("trader", M, BUY, "0.01", None, condition=STOP, trigger="51000"))
    [refused] = of(ex.submit(AmendOrder("t", 1, "trader", M, order_id, 51_000, 20)), CommandRejected)
    assert refused.reason is RejectReason.NOT_AMENDABLE
    [closed] = of(ex.cancel("trader", M, order_id), OrderClosed, order_id=order_id)
    assert closed.reason is CloseReason.CANCELED
    assert not of(ex.mark(M, "51000"), OrderTriggered)
    check(ex.risk, ex.matching.values())


def test_a_liquidation_cancels_the_accounts_conditional_orders():
    ex = exchange()
    quote(ex, 50_000)
    ex.set_mode("trader", M, MarginMode.ISOLATED)
    ex.set_leverage("trader", M, 20)
    ex.place("trader", M, BUY, "1", None)  # 50,010 at 20x: 2,500 margin
    # a take-profit far above, which the crash never reaches
    order_id = placed(ex.place("trader", M, SELL, "1", None, condition=TP, trigger="60000", reduce_only=True))
    quote(ex, 47_000)
    events = ex.mark(M, "47000")  # below the liquidation price
    [closed] = of(events, OrderClosed, order_id=order_id)
    assert closed.reason is CloseReason.LIQUIDATION
    assert not ex.matching[M].triggers.orders
    check(ex.risk, ex.matching.values())
