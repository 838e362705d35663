"""The fast book against the reference book on random command streams.

Both engines get the same commands; after every step their events (types, fields and
sequence numbers) and their state hashes must be equal. Prices sit in a narrow band so
that orders cross, rest, partially fill and self-trade often.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exchange.book import Book, state_hash
from exchange.markets import default_markets
from exchange.matching import MatchingEngine
from exchange.reference_book import ReferenceBook
from schemas.enums import CloseReason, Liquidity, SelfTradePrevention, TimeInForce
from schemas.events import BBO, BookDelta
from tests.helpers import BUY, SELL, amend, cancel, cancel_all, order, transfer

ACCOUNTS = ["a", "b", "c", "d"]


def random_command(rng: random.Random, next_id: int):
    roll = rng.random()
    account = rng.choice(ACCOUNTS)
    if roll < 0.55:
        market_order = rng.random() < 0.12
        return order(
            next_id if rng.random() > 0.02 else max(1, next_id - 1),
            account,
            rng.choice((BUY, SELL)),
            rng.randint(1, 8) if rng.random() > 0.02 else rng.choice((0, -1)),
            0 if market_order else rng.randint(95, 105),
            tif=rng.choice(list(TimeInForce)),
            reduce_only=rng.random() < 0.2,
            stp=rng.choice(list(SelfTradePrevention)),
            reference_price=rng.choice((0, 0, 100)),
        )
    target = rng.randint(1, max(1, next_id))
    if roll < 0.75:
        return cancel(target, account)
    if roll < 0.92:
        return amend(target, account, rng.randint(95, 105), rng.randint(1, 10),
                     reference_price=rng.choice((0, 100)))
    if roll < 0.96:
        return cancel_all(account, reason=rng.choice((CloseReason.CANCELED, CloseReason.LIQUIDATION)))
    buyer, seller = rng.sample(ACCOUNTS, 2)
    return transfer(buyer, seller, rng.randint(95, 105), rng.randint(1, 5),
                    rng.choice((Liquidity.BACKSTOP, Liquidity.ADL)))


def run_both(seed: int, steps: int) -> None:
    market = default_markets()["BTC-PERP"]
    fast = MatchingEngine(market, Book())
    reference = MatchingEngine(market, ReferenceBook())
    rng = random.Random(seed)
    next_id = 1
    for step in range(steps):
        command = random_command(rng, next_id)
        if type(command).__name__ == "NewOrder":
            next_id += 1
        fast_events = fast.apply(command)
        reference_events = reference.apply(command)
        assert fast_events == reference_events, f"seed {seed}, step {step}: {command}"
        assert fast.state_hash() == reference.state_hash(), f"seed {seed}, step {step}: {command}"
        assert state_hash(fast.book) == state_hash(reference.book)
        assert fast.book.levels(BUY) == reference.book.levels(BUY)
        assert fast.book.levels(SELL) == reference.book.levels(SELL)
        assert sum(fast.positions.values()) == 0  # every fill has two sides


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_fast_and_reference_books_agree_on_random_streams(seed):
    run_both(seed, steps=150)  # 40 examples x 150 steps = 6,000 random steps


def test_fast_and_reference_books_agree_on_one_long_stream():
    run_both(seed=20261124, steps=4000)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), batch=st.integers(min_value=1, max_value=40))
def test_a_coalesced_book_feed_tells_what_the_per_command_feed_does_per_batch(seed, batch):
    """The service's engine publishes the book once per batch (``coalesce``). Per batch its
    one BookDelta holds every level the commands changed at the size the per-command
    deltas left it at, its BBO is the per-command feed's last one if the top moved, and
    every other event is the same, in the same order, numbered without gaps."""
    market = default_markets()["BTC-PERP"]
    plain = MatchingEngine(market)
    coalesced = MatchingEngine(market)
    coalesced.coalesce = True
    rng = random.Random(seed)
    next_id = 1
    top = (0, 0, 0, 0)  # the per-command feed's top so far
    numbers = []
    for start in range(0, 240, batch):
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        top_before = top
        others_plain, others_coalesced = [], []
        for _ in range(batch):
            command = random_command(rng, next_id)
            if type(command).__name__ == "NewOrder":
                next_id += 1
            for event in plain.apply(command):
                if isinstance(event, BookDelta):
                    bids.update(event.bids)
                    asks.update(event.asks)
                elif isinstance(event, BBO):
                    top = (event.bid_price, event.bid_size, event.ask_price, event.ask_size)
                else:
                    others_plain.append(event)
            others_coalesced += coalesced.apply(command)
        book = coalesced.publish_book(start + batch)
        assert [without_seq(e) for e in others_coalesced] == [without_seq(e) for e in others_plain]
        numbers += [e.seq for e in others_coalesced]
        deltas = [e for e in book if isinstance(e, BookDelta)]
        tops = [e for e in book if isinstance(e, BBO)]
        if bids or asks:
            [delta] = deltas
            assert (dict(delta.bids), dict(delta.asks)) == (bids, asks)
            assert (delta.producer, delta.seq) == (f"{coalesced.producer}.book", start + batch)
        else:
            assert not deltas
        if top != top_before:
            [published] = tops
            assert (published.bid_price, published.bid_size, published.ask_price, published.ask_size) == top
            assert (published.producer, published.seq) == (f"{coalesced.producer}.bbo", start + batch)
        else:
            assert not tops
        assert coalesced.state_hash() == plain.state_hash()
    assert numbers == list(range(1, len(numbers) + 1))


def without_seq(event) -> tuple:
    return (type(event).__name__, *[getattr(event, f) for f in event.__struct_fields__ if f != "seq"])
