"""A deliberately naive order book: one list per side, re-sorted after every change.

It exists to be obviously correct, so that the fast ``exchange.book.Book`` can be compared
with it on random command streams. Never use it where speed matters.
"""

from __future__ import annotations

from collections.abc import Iterator

from exchange.book import Order, OrderBook
from schemas.enums import Side


def _priority(order: Order) -> tuple[int, int]:
    # best price first (highest bid, lowest ask), then earliest priority
    return (-order.price if order.side is Side.BUY else order.price, order.priority)


class ReferenceBook(OrderBook):
    """Same interface as ``Book``; every operation is a plain list operation."""

    __slots__ = ("_sides",)

    def __init__(self) -> None:
        self._sides: dict[Side, list[Order]] = {Side.BUY: [], Side.SELL: []}

    def _level_size(self, side: Side, price: int) -> int:
        return sum(order.remaining for order in self._sides[side] if order.price == price)

    def add(self, order: Order) -> int:
        orders = self._sides[order.side]
        orders.append(order)
        orders.sort(key=_priority)
        return self._level_size(order.side, order.price)

    def remove(self, order: Order) -> int:
        self._sides[order.side].remove(order)
        return self._level_size(order.side, order.price)

    def reduce(self, order: Order, quantity: int) -> int:
        order.remaining -= quantity
        return self._level_size(order.side, order.price)

    def get(self, order_id: int) -> Order | None:
        for orders in self._sides.values():
            for order in orders:
                if order.order_id == order_id:
                    return order
        return None

    def best(self, side: Side) -> Order | None:
        orders = self._sides[side]
        return orders[0] if orders else None

    def best_level(self, side: Side) -> tuple[int, int]:
        levels = self.levels(side, 1)
        return levels[0] if levels else (0, 0)

    def top(self) -> tuple[int, int, int, int]:
        return self.best_level(Side.BUY) + self.best_level(Side.SELL)

    def iter_orders(self, side: Side) -> Iterator[Order]:
        return iter(list(self._sides[side]))

    def levels(self, side: Side, depth: int | None = None) -> list[tuple[int, int]]:
        prices: list[int] = []
        for order in self._sides[side]:
            if order.price not in prices:
                prices.append(order.price)
        if depth is not None:
            prices = prices[:depth]
        return [(price, self._level_size(side, price)) for price in prices]

    def __len__(self) -> int:
        return sum(len(orders) for orders in self._sides.values())
