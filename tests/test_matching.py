"""Scenario tests of the matching engine: every order type, reject reason, amend rule,
self-trade mode and reduce-only case, with expectations worked out by hand."""

from __future__ import annotations

import pytest

from exchange.markets import Market, default_markets
from exchange.matching import MatchingEngine, UnknownCommand
from schemas.enums import (
    CloseReason,
    Liquidity,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    TimeInForce,
)
from schemas.events import (
    BBO,
    BookDelta,
    CommandRejected,
    Deposit,
    Fill,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
)
from tests.helpers import BUY, SELL, amend, cancel, cancel_all, of, one, order, transfer

STP = SelfTradePrevention


@pytest.fixture
def engine() -> MatchingEngine:
    return MatchingEngine(default_markets()["BTC-PERP"])


def fills(events: list) -> list[tuple]:
    return [(f.price, f.size, f.taker_account, f.maker_account) for f in of(events, Fill)]


def closes(events: list) -> list[tuple]:
    return [(c.order_id, c.reason, c.filled, c.remaining) for c in of(events, OrderClosed)]


def book(engine: MatchingEngine) -> tuple[list, list]:
    return engine.book.levels(BUY), engine.book.levels(SELL)


# ----------------------------------------------------------------- limit orders


def test_resting_limit_order_is_acked_and_shows_in_book_delta_and_bbo(engine):
    events = engine.apply(order(1, "alice", BUY, 5, 1000))
    assert [type(e) for e in events] == [OrderAccepted, BookDelta, BBO]
    assert one(events, BookDelta).bids == [(1000, 5)]
    bbo = one(events, BBO)
    assert (bbo.bid_price, bbo.bid_size, bbo.ask_price, bbo.ask_size) == (1000, 5, 0, 0)
    assert book(engine) == ([(1000, 5)], [])


def test_taker_fills_at_maker_prices_in_price_then_time_priority(engine):
    engine.apply(order(1, "m1", SELL, 2, 1002))
    engine.apply(order(2, "m2", SELL, 3, 1001))
    engine.apply(order(3, "m3", SELL, 4, 1001))  # same price as 2, later: behind it
    events = engine.apply(order(4, "taker", BUY, 6, 1002))
    assert fills(events) == [(1001, 3, "taker", "m2"), (1001, 3, "taker", "m3")]
    assert closes(events) == [(2, CloseReason.FILLED, 3, 0), (4, CloseReason.FILLED, 6, 0)]
    assert one(events, BookDelta).asks == [(1001, 1)]
    assert book(engine) == ([], [(1001, 1), (1002, 2)])


def test_gtc_remainder_rests_after_sweeping(engine):
    engine.apply(order(1, "m", SELL, 2, 1000))
    events = engine.apply(order(2, "t", BUY, 5, 1001))
    assert fills(events) == [(1000, 2, "t", "m")]
    assert book(engine) == ([(1001, 3)], [])
    assert one(events, BookDelta).asks == [(1000, 0)] and one(events, BookDelta).bids == [(1001, 3)]


def test_fill_updates_positions_of_both_sides(engine):
    engine.apply(order(1, "m", SELL, 4, 1000))
    engine.apply(order(2, "t", BUY, 3, 1000))
    assert engine.position("t") == 3 and engine.position("m") == -3


def test_ioc_remainder_expires(engine):
    engine.apply(order(1, "m", SELL, 2, 1000))
    events = engine.apply(order(2, "t", BUY, 5, 1000, tif=TimeInForce.IOC))
    assert fills(events) == [(1000, 2, "t", "m")]
    assert closes(events)[-1] == (2, CloseReason.EXPIRED, 2, 3)
    assert book(engine) == ([], [])


def test_fok_fills_completely_across_levels(engine):
    engine.apply(order(1, "m", SELL, 2, 1000))
    engine.apply(order(2, "m", SELL, 2, 1001))
    events = engine.apply(order(3, "t", BUY, 4, 1001, tif=TimeInForce.FOK))
    assert fills(events) == [(1000, 2, "t", "m"), (1001, 2, "t", "m")]
    assert closes(events)[-1] == (3, CloseReason.FILLED, 4, 0)


def test_fok_that_cannot_fill_is_rejected_and_changes_nothing(engine):
    engine.apply(order(1, "m", SELL, 2, 1000))
    engine.apply(order(2, "m", SELL, 2, 1005))  # beyond the FOK's limit
    before = engine.state_hash()
    events = engine.apply(order(3, "t", BUY, 4, 1001, tif=TimeInForce.FOK))
    assert one(events, OrderRejected).reason is RejectReason.FOK_NOT_FILLABLE
    assert len(events) == 1 and engine.state_hash() == before


def test_fok_counts_only_what_reduce_only_makers_can_fill(engine):
    # m is long 3 (bought from x); its resting reduce-only sell of 5 can fill only 3
    engine.apply(order(1, "x", SELL, 3, 1000))
    engine.apply(order(2, "m", BUY, 3, 1000))
    engine.apply(order(3, "m", SELL, 5, 1010, reduce_only=True))
    events = engine.apply(order(4, "t", BUY, 4, 1010, tif=TimeInForce.FOK))
    assert one(events, OrderRejected).reason is RejectReason.FOK_NOT_FILLABLE
    events = engine.apply(order(5, "t", BUY, 3, 1010, tif=TimeInForce.FOK))
    assert fills(events) == [(1010, 3, "t", "m")]


def test_post_only_rests_when_it_does_not_cross(engine):
    engine.apply(order(1, "m", SELL, 2, 1000))
    events = engine.apply(order(2, "t", BUY, 2, 999, tif=TimeInForce.POST_ONLY))
    assert one(events, OrderAccepted).tif is TimeInForce.POST_ONLY
    assert book(engine) == ([(999, 2)], [(1000, 2)])


def test_post_only_that_would_cross_is_rejected(engine):
    engine.apply(order(1, "m", SELL, 2, 1000))
    events = engine.apply(order(2, "t", BUY, 2, 1000, tif=TimeInForce.POST_ONLY))
    assert one(events, OrderRejected).reason is RejectReason.WOULD_CROSS
    assert book(engine) == ([], [(1000, 2)])


# ---------------------------------------------------------------- market orders


def test_market_order_sweeps_within_band_of_best_price_and_expires_the_rest(engine):
    # no reference price: the band (5%) is taken around the best ask, 10000
    engine.apply(order(1, "m", SELL, 1, 10000))
    engine.apply(order(2, "m", SELL, 1, 10500))  # exactly +5%: inside
    engine.apply(order(3, "m", SELL, 1, 10501))  # beyond
    events = engine.apply(order(4, "t", BUY, 5))
    accepted = one(events, OrderAccepted)
    assert accepted.order_type is OrderType.MARKET and accepted.price == 10500
    assert fills(events) == [(10000, 1, "t", "m"), (10500, 1, "t", "m")]
    assert closes(events)[-1] == (4, CloseReason.EXPIRED, 2, 3)


def test_market_sell_band_uses_reference_price_when_given(engine):
    engine.apply(order(1, "m", BUY, 1, 9600))
    engine.apply(order(2, "m", BUY, 1, 9400))
    # reference 10000: a sell may go down to 10000 - 500 = 9500
    events = engine.apply(order(3, "t", SELL, 2, reference_price=10000))
    assert one(events, OrderAccepted).price == 9500
    assert fills(events) == [(9600, 1, "t", "m")]


def test_market_order_with_no_liquidity_and_no_reference_is_rejected(engine):
    events = engine.apply(order(1, "t", BUY, 1))
    assert one(events, OrderRejected).reason is RejectReason.NO_LIQUIDITY


def test_limit_outside_price_band_of_reference_is_rejected_but_liquidation_is_exempt():
    from exchange.venues import binance_markets

    engine = MatchingEngine(binance_markets()["BTC-PERP"])  # Binance's PERCENT_PRICE: 5% either way
    events = engine.apply(order(1, "t", BUY, 1, 10501, reference_price=10000))
    assert one(events, OrderRejected).reason is RejectReason.OUTSIDE_PRICE_BAND
    events = engine.apply(order(2, "t", SELL, 1, 9499, reference_price=10000))
    assert one(events, OrderRejected).reason is RejectReason.OUTSIDE_PRICE_BAND
    events = engine.apply(order(3, "t", BUY, 1, 10500, reference_price=10000))
    assert of(events, OrderAccepted)
    events = engine.apply(order(4, "t", SELL, 1, 5000, reference_price=10000, liquidation=True,
                                tif=TimeInForce.IOC))
    assert of(events, OrderAccepted)


# ------------------------------------------------------------------ validation


def test_hyperliquids_limit_prices_may_rest_up_to_80_percent_from_the_mark_and_market_orders_stay_within_5(engine):
    """A resting GTC 5.5% from the mark was refused OUTSIDE_PRICE_BAND; Hyperliquid refuses a
    limit price only beyond 80% of its reference price. A market order's protection stays 5%."""
    assert not of(engine.apply(order(1, "t", BUY, 1, 9450, reference_price=10000)), OrderRejected)  # −5.5%
    assert not of(engine.apply(order(2, "t", SELL, 1, 17999, reference_price=10000)), OrderRejected)  # +79.99%
    refused = one(engine.apply(order(3, "t", SELL, 1, 18001, reference_price=10000)), OrderRejected)
    assert refused.reason is RejectReason.OUTSIDE_PRICE_BAND and "80%" in refused.detail
    assert one(engine.apply(order(4, "t", BUY, 1, 1999, reference_price=10000)), OrderRejected).reason is \
        RejectReason.OUTSIDE_PRICE_BAND
    engine.apply(order(5, "m", SELL, 5, 10400))  # asks at +4% and +6%
    engine.apply(order(6, "m", SELL, 5, 10600))
    taken = engine.apply(order(7, "t", BUY, 10, reference_price=10000))  # a market order: up to +5%
    assert sum(f.size for f in of(taken, Fill)) == 5 and all(f.price == 10400 for f in of(taken, Fill))


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (order(1, "a", BUY, 1, 100, market="ETH-PERP"), RejectReason.UNKNOWN_MARKET),
        (order(1, "a", BUY, 0, 100), RejectReason.INVALID_SIZE),
        (order(1, "a", BUY, -3, 100), RejectReason.INVALID_SIZE),
        (order(1, "a", BUY, 1, -5), RejectReason.INVALID_PRICE),
    ],
)
def test_invalid_orders_are_rejected_with_their_reason(engine, command, reason):
    events = engine.apply(command)
    rejected = one(events, OrderRejected)
    assert rejected.reason is reason and rejected.order_id == 1 and rejected.detail
    assert len(engine.book) == 0


def test_below_min_size_is_rejected():
    engine = MatchingEngine(Market("ETH-PERP", "0.01", "0.01", 25, min_size=5))
    events = engine.apply(order(1, "a", BUY, 4, 100, market="ETH-PERP"))
    assert one(events, OrderRejected).reason is RejectReason.BELOW_MIN_SIZE


def test_duplicate_live_order_id_is_rejected(engine):
    engine.apply(order(7, "a", BUY, 1, 100))
    events = engine.apply(order(7, "b", SELL, 1, 200))
    assert one(events, OrderRejected).reason is RejectReason.DUPLICATE_ORDER_ID
    assert book(engine) == ([(100, 1)], [])


def test_unknown_command_type_raises_a_named_error(engine):
    with pytest.raises(UnknownCommand, match="Deposit"):
        engine.apply(Deposit("p", 1, "a", 5))


# -------------------------------------------------------------- cancel and amend


def test_cancel_removes_the_order_and_reports_it(engine):
    engine.apply(order(1, "a", BUY, 3, 100))
    events = engine.apply(cancel(1, "a"))
    assert closes(events) == [(1, CloseReason.CANCELED, 0, 3)]
    assert one(events, BookDelta).bids == [(100, 0)]
    assert book(engine) == ([], [])


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (cancel(99, "a"), RejectReason.UNKNOWN_ORDER),
        (cancel(1, "mallory"), RejectReason.NOT_ORDER_OWNER),
        (cancel(1, "a", market="SOL-PERP"), RejectReason.UNKNOWN_MARKET),
        (amend(99, "a", 100, 5), RejectReason.UNKNOWN_ORDER),
        (amend(1, "mallory", 100, 5), RejectReason.NOT_ORDER_OWNER),
        (amend(1, "a", 0, 5), RejectReason.INVALID_PRICE),
        (amend(1, "a", 100, 0), RejectReason.INVALID_SIZE),
        (amend(1, "a", 200, 3, reference_price=100), RejectReason.OUTSIDE_PRICE_BAND),
    ],
)
def test_bad_cancel_or_amend_is_refused_and_changes_nothing(engine, command, reason):
    engine.apply(order(1, "a", BUY, 3, 100))
    before = engine.state_hash()
    events = engine.apply(command)
    refused = one(events, CommandRejected)
    assert refused.reason is reason and refused.command == type(command).__name__
    assert refused.ref_seq == command.seq and refused.detail
    assert engine.state_hash() == before


def test_amend_size_down_keeps_priority(engine):
    engine.apply(order(1, "a", SELL, 5, 100))
    engine.apply(order(2, "b", SELL, 5, 100))
    events = engine.apply(amend(1, "a", 100, 2))
    amended = one(events, OrderAmended)
    assert amended.priority_kept and amended.remaining == 2
    assert one(events, BookDelta).asks == [(100, 7)]
    events = engine.apply(order(3, "t", BUY, 2, 100))
    assert fills(events) == [(100, 2, "t", "a")]


def test_amend_size_up_loses_priority(engine):
    engine.apply(order(1, "a", SELL, 5, 100))
    engine.apply(order(2, "b", SELL, 5, 100))
    events = engine.apply(amend(1, "a", 100, 6))
    assert not one(events, OrderAmended).priority_kept
    events = engine.apply(order(3, "t", BUY, 5, 100))
    assert fills(events) == [(100, 5, "t", "b")]


def test_amend_price_loses_priority_and_can_trade(engine):
    engine.apply(order(1, "a", BUY, 5, 99))
    engine.apply(order(2, "m", SELL, 2, 101))
    events = engine.apply(amend(1, "a", 101, 5))
    assert not one(events, OrderAmended).priority_kept
    assert fills(events) == [(101, 2, "a", "m")]
    assert book(engine) == ([(101, 3)], [])


def test_amend_after_partial_fill_counts_the_filled_part(engine):
    engine.apply(order(1, "a", SELL, 5, 100))
    engine.apply(order(2, "t", BUY, 2, 100))
    events = engine.apply(amend(1, "a", 100, 4))  # 2 filled, 2 remain
    assert one(events, OrderAmended).remaining == 2
    assert book(engine) == ([], [(100, 2)])
    events = engine.apply(amend(1, "a", 100, 2))  # nothing would remain
    assert one(events, CommandRejected).reason is RejectReason.INVALID_SIZE


def test_post_only_amended_to_a_crossing_price_is_refused(engine):
    engine.apply(order(1, "a", BUY, 1, 99, tif=TimeInForce.POST_ONLY))
    engine.apply(order(2, "m", SELL, 1, 101))
    events = engine.apply(amend(1, "a", 101, 1))
    assert one(events, CommandRejected).reason is RejectReason.WOULD_CROSS
    assert book(engine) == ([(99, 1)], [(101, 1)])


def test_cancel_all_closes_only_that_accounts_orders(engine):
    engine.apply(order(1, "a", BUY, 1, 99))
    engine.apply(order(2, "b", BUY, 1, 99))
    engine.apply(order(3, "a", SELL, 2, 105))
    events = engine.apply(cancel_all("a", reason=CloseReason.LIQUIDATION))
    assert closes(events) == [(1, CloseReason.LIQUIDATION, 0, 1), (3, CloseReason.LIQUIDATION, 0, 2)]
    assert book(engine) == ([(99, 1)], [])


# ---------------------------------------------------------- self-trade prevention


def test_self_trade_cancel_taker(engine):
    engine.apply(order(1, "a", SELL, 2, 100))
    events = engine.apply(order(2, "a", BUY, 2, 100, stp=STP.CANCEL_TAKER))
    assert fills(events) == [] and closes(events) == [(2, CloseReason.SELF_TRADE, 0, 2)]
    assert book(engine) == ([], [(100, 2)])


def test_self_trade_cancel_maker_then_keeps_matching(engine):
    engine.apply(order(1, "a", SELL, 2, 100))
    engine.apply(order(2, "b", SELL, 2, 100))
    events = engine.apply(order(3, "a", BUY, 2, 100, stp=STP.CANCEL_MAKER))
    assert closes(events)[0] == (1, CloseReason.SELF_TRADE, 0, 2)
    assert fills(events) == [(100, 2, "a", "b")]
    assert book(engine) == ([], [])


def test_self_trade_cancel_both(engine):
    engine.apply(order(1, "a", SELL, 2, 100))
    engine.apply(order(2, "b", SELL, 2, 101))
    events = engine.apply(order(3, "a", BUY, 4, 101, stp=STP.CANCEL_BOTH))
    assert closes(events) == [(1, CloseReason.SELF_TRADE, 0, 2), (3, CloseReason.SELF_TRADE, 0, 4)]
    assert fills(events) == [] and book(engine) == ([], [(101, 2)])


def test_self_trade_none_lets_the_account_trade_with_itself(engine):
    engine.apply(order(1, "a", SELL, 2, 100))
    events = engine.apply(order(2, "a", BUY, 2, 100, stp=STP.NONE))
    assert fills(events) == [(100, 2, "a", "a")]
    assert engine.position("a") == 0


# ------------------------------------------------------------------ reduce-only


def test_reduce_only_without_position_is_rejected(engine):
    engine.apply(order(1, "m", SELL, 5, 100))
    events = engine.apply(order(2, "a", BUY, 1, 100, reduce_only=True))
    assert one(events, OrderRejected).reason is RejectReason.REDUCE_ONLY_WOULD_INCREASE


def test_reduce_only_in_the_direction_of_the_position_is_rejected(engine):
    engine.apply(order(1, "m", SELL, 5, 100))
    engine.apply(order(2, "a", BUY, 2, 100))  # a is long 2
    events = engine.apply(order(3, "a", BUY, 1, 100, reduce_only=True))
    assert one(events, OrderRejected).reason is RejectReason.REDUCE_ONLY_WOULD_INCREASE


def test_reduce_only_fills_at_most_the_position(engine):
    engine.apply(order(1, "m", SELL, 2, 100))
    engine.apply(order(2, "a", BUY, 2, 100))  # a long 2, m short 2
    engine.apply(order(3, "b", BUY, 10, 99))
    events = engine.apply(order(4, "a", SELL, 5, 99, reduce_only=True))
    assert fills(events) == [(99, 2, "a", "b")]
    assert closes(events)[-1] == (4, CloseReason.REDUCE_ONLY, 2, 3)
    assert engine.position("a") == 0


def test_resting_reduce_only_whose_position_is_gone_is_closed_when_reached(engine):
    engine.apply(order(1, "m", SELL, 2, 100))
    engine.apply(order(2, "a", BUY, 2, 100))  # a long 2
    engine.apply(order(3, "a", SELL, 2, 110, reduce_only=True))  # rests
    engine.apply(order(4, "b", BUY, 2, 105))
    engine.apply(order(5, "a", SELL, 2, 105))  # a is flat now
    engine.apply(order(6, "c", SELL, 1, 111))
    events = engine.apply(order(7, "t", BUY, 1, 111))
    assert closes(events)[0] == (3, CloseReason.REDUCE_ONLY, 0, 2)
    assert fills(events) == [(111, 1, "t", "c")]


# -------------------------------------------------------------------- transfers


def test_position_transfer_emits_a_fill_and_moves_the_position(engine):
    events = engine.apply(transfer("fund", "trader", 950, 4, Liquidity.BACKSTOP))
    fill = one(events, Fill)
    assert (fill.taker_account, fill.maker_account, fill.price, fill.size) == ("fund", "trader", 950, 4)
    assert fill.liquidity is Liquidity.BACKSTOP
    assert engine.position("fund") == 4 and engine.position("trader") == -4


def test_invalid_transfer_is_refused(engine):
    events = engine.apply(transfer("a", "a", 950, 4, Liquidity.ADL))
    assert one(events, CommandRejected).reason is RejectReason.INVALID_SIZE
    assert engine.positions == {}


# --------------------------------------------------------------- events and state


def test_sequence_numbers_are_consecutive_and_stamped_with_the_engine(engine):
    seen = []
    seen += engine.apply(order(1, "m", SELL, 2, 100))
    seen += engine.apply(order(2, "t", BUY, 3, 100))
    seen += engine.apply(cancel(2, "t"))
    assert [event.seq for event in seen] == list(range(1, len(seen) + 1))
    assert {event.producer for event in seen} == {"match.BTC-PERP"}


def test_bbo_is_emitted_only_when_the_top_changes(engine):
    engine.apply(order(1, "a", BUY, 2, 100))
    events = engine.apply(order(2, "b", BUY, 2, 90))  # behind the best bid
    assert of(events, BBO) == [] and one(events, BookDelta).bids == [(90, 2)]
    events = engine.apply(order(3, "c", BUY, 1, 100))  # adds size to the best level
    assert (one(events, BBO).bid_price, one(events, BBO).bid_size) == (100, 3)


def test_snapshot_lists_levels_best_first(engine):
    for oid, (side, price) in enumerate([(BUY, 98), (BUY, 99), (SELL, 102), (SELL, 101)], 1):
        engine.apply(order(oid, "a", side, 1, price, stp=STP.NONE))
    snapshot = engine.snapshot(depth=1)
    assert snapshot.bids == [(99, 1)] and snapshot.asks == [(101, 1)]


def test_state_hash_is_equal_for_equal_histories_and_differs_otherwise():
    commands = [order(1, "a", BUY, 2, 100), order(2, "b", SELL, 1, 100), order(3, "c", SELL, 4, 105)]
    first, second = (MatchingEngine(default_markets()["BTC-PERP"]) for _ in range(2))
    for command in commands:
        first.apply(command)
        second.apply(command)
    assert first.state_hash() == second.state_hash()
    second.apply(cancel(3, "c"))
    assert first.state_hash() != second.state_hash()
