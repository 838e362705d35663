"""The trigger book (exchange.triggers) against a plain model written from Binance's
rules: on random price paths with random stop, take-profit and trailing orders placed
and cancelled along the way, every update fires exactly the orders the model says, at
the prices it says, in the order the move reached them."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import pytest

from exchange.triggers import Conditional, TriggerBook
from schemas.enums import (
    Condition,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)

BUY, SELL = Side.BUY, Side.SELL
STOP, TP, TRAIL = Condition.STOP, Condition.TAKE_PROFIT, Condition.TRAILING_STOP
MARK, LAST = TriggerSource.MARK, TriggerSource.LAST


class Model:
    """One order as Binance's documentation describes it, checked one by one."""

    def __init__(self, order_id, condition, side, source, trigger, activation, callback_ppm, current):
        self.order_id, self.condition, self.side, self.source = order_id, condition, side, source
        self.trigger, self.activation, self.rate = trigger, activation, Fraction(callback_ppm, 1_000_000)
        self.extreme = None
        if condition is TRAIL and not activation and current:
            self.extreme = current  # activated at once, at the latest price

    def see(self, price):
        """The price it fires at, or None."""
        if self.condition is STOP:  # BUY: price rises to the stop; SELL: falls to it
            reached = price >= self.trigger if self.side is BUY else price <= self.trigger
            return self.trigger if reached else None
        if self.condition is TP:  # BUY: price falls to the target; SELL: rises to it
            reached = price <= self.trigger if self.side is BUY else price >= self.trigger
            return self.trigger if reached else None
        if self.extreme is None:  # a trailing stop waiting for its activation price
            if not self.activation or (price >= self.activation if self.side is SELL else price <= self.activation):
                self.extreme = price
            return None
        if self.side is SELL:  # from the highest since activation
            self.extreme = max(self.extreme, price)
            level = math.floor(self.extreme * (1 - self.rate))
            return level if price <= level else None
        self.extreme = min(self.extreme, price)
        level = math.ceil(self.extreme * (1 + self.rate))
        return level if price >= level else None


def conditional(order_id, condition, side, source, trigger, activation, callback_ppm, priority):
    return Conditional(order_id, "acct", side, condition, OrderType.MARKET, TimeInForce.IOC, 0, 1, False, False,
                       SelfTradePrevention.NONE, f"c{order_id}", trigger, source, activation, callback_ppm, priority)


@pytest.mark.parametrize("seed", range(12))
def test_the_trigger_book_fires_what_the_rules_say(seed):
    rng = random.Random(seed)
    book = TriggerBook()
    models: dict[int, Model] = {}
    prices = {MARK: 0, LAST: 0}
    next_id = 0
    fired_total = 0
    for step in range(1500):
        roll = rng.random()
        source = rng.choice((MARK, LAST))
        current = prices[source] or 10_000
        if roll < 0.35:
            next_id += 1
            condition = rng.choice((STOP, TP, TRAIL))
            side = rng.choice((BUY, SELL))
            trigger = activation = rate = 0
            if condition is TRAIL:
                rate = rng.choice((1_000, 5_000, 20_000, 100_000))
                if rng.random() < 0.5:  # an activation price not reached yet
                    activation = current + rng.randint(1, 300) * (1 if side is SELL else -1)
            else:
                rising = (condition is STOP) == (side is BUY)
                trigger = current + rng.randint(1, 300) * (1 if rising else -1)
            order = conditional(next_id, condition, side, source, trigger, activation, rate, next_id)
            book.add(order)
            models[next_id] = Model(next_id, condition, side, source, trigger, activation, rate, prices[source])
        elif roll < 0.45 and models:
            order_id = rng.choice(sorted(models))
            assert book.remove(order_id).order_id == order_id
            del models[order_id]
        else:
            price = max(1, current + rng.randint(-250, 250))
            previous = prices[source]
            prices[source] = price
            fired = book.update(source, price)
            expected = {}
            for order_id, model in list(models.items()):
                if model.source is source:
                    at = model.see(price)
                    if at is not None:
                        expected[order_id] = at
                        del models[order_id]
            assert {order.order_id: at for at, order in fired} == expected, (seed, step)
            direction = (price > previous) - (price < previous)
            keys = [(direction * at, order.priority) for at, order in fired]
            assert keys == sorted(keys), (seed, step)
            fired_total += len(fired)
        assert sorted(book.orders) == sorted(models), (seed, step)
        for order_id, model in models.items():  # the trailing state is the model's
            if model.condition is TRAIL:
                assert book.get(order_id).extreme == (model.extreme or 0), (seed, step, order_id)
    assert fired_total > 100  # the paths really reach the orders


def test_a_trailing_stop_follows_the_high_and_fires_on_the_way_back():
    book = TriggerBook()
    book.update(MARK, 50_000)
    book.add(conditional(1, TRAIL, SELL, MARK, 0, 0, 10_000, 1))  # 1%, activated at once at 50,000
    for price in (50_500, 51_000, 50_600, 50_491):  # 51,000 · 0.99 = 50,490
        assert book.update(MARK, price) == []
    assert book.get(1).extreme == 51_000
    [(at, order)] = book.update(MARK, 50_490)
    assert (at, order.order_id) == (50_490, 1) and not book


def test_an_activation_price_starts_the_trailing():
    book = TriggerBook()
    book.update(LAST, 50_000)
    book.add(conditional(1, TRAIL, BUY, LAST, 0, 49_000, 20_000, 1))  # 2% once the price is at 49,000
    assert book.update(LAST, 49_500) == [] and book.get(1).extreme == 0  # not activated
    assert book.update(LAST, 49_000) == [] and book.get(1).extreme == 49_000
    assert book.update(LAST, 48_000) == [] and book.get(1).extreme == 48_000
    assert book.update(LAST, 48_959) == []  # 48,000 · 1.02 = 48,960
    [(at, _)] = book.update(LAST, 48_960)
    assert at == 48_960
