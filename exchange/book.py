"""The order book of one market: resting orders in price-time priority.

Two implementations share the ``OrderBook`` interface: ``Book`` (fast: a ``SortedDict``
of price levels, each level a FIFO deque with lazy removal, and a dict from order id to
order for O(1) cancel) and ``ReferenceBook`` (``exchange/reference_book.py``: one plain
list per side, obviously correct). The matching engine drives either one, and the
differential test compares them event by event and by ``state_hash``.

Ordering invariant: within a side, orders are ordered by price (best first) and then by
``priority`` (lower first); ``priority`` is assigned by the engine when an order is
placed on the book and again whenever it loses its place (amend).

The book stores orders; it does not decide anything. Matching rules live in
``exchange/matching.py``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

import msgspec
from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from schemas.enums import SelfTradePrevention, Side, TimeInForce

BUY: Final = Side.BUY  # Final: a C static when compiled, not a lookup by name


class Order:
    """A live order. ``remaining`` is what is still open; ``size`` the total ordered.

    A plain class with ``__slots__``: compiled (mypyc), it is a native class whose fields the
    book and the engine read at fixed offsets, which a msgspec Struct read from compiled
    code is not (measured: the compiled engine was slower than the interpreted one with a
    Struct here, and faster with this class; docs/matching.md, "Compiled core").

    ``level`` belongs to the fast ``Book``: the level the order rests in, None before it is
    added, ``REMOVED`` after. An order taken off the book is never added again: an order
    that loses its place is re-queued as a copy (``requeued``).
    """

    __slots__ = ("order_id", "account", "side", "price", "size", "remaining", "tif", "reduce_only", "stp",
                 "client_order_id", "priority", "level")

    def __init__(self, order_id: int, account: str, side: Side, price: int, size: int, remaining: int,
                 tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False,
                 stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER, client_order_id: str = "",
                 priority: int = 0) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price = price
        self.size = size
        self.remaining = remaining
        self.tif = tif
        self.reduce_only = reduce_only
        self.stp = stp
        self.client_order_id = client_order_id
        self.priority = priority
        self.level: Any = None

    def requeued(self) -> Order:
        """A copy to put on the book again, e.g. after an amend that lost priority."""
        return Order(self.order_id, self.account, self.side, self.price, self.size, self.remaining, self.tif,
                     self.reduce_only, self.stp, self.client_order_id, self.priority)

    @property
    def filled(self) -> int:
        return self.size - self.remaining

    def key(self) -> tuple:
        """Everything that identifies the order's state, for hashing and comparison."""
        return (
            self.order_id, self.account, int(self.side), self.price, self.size,
            self.remaining, int(self.tif), self.reduce_only, int(self.stp),
            self.client_order_id, self.priority,
        )

    def __repr__(self) -> str:
        return (
            f"Order({self.order_id}, {self.account}, {self.side.name}, {self.remaining}/"
            f"{self.size} @ {self.price})"
        )


class OrderBook:
    """What the matching engine needs from a book: the base of ``Book`` and ``ReferenceBook``.

    A base class rather than a Protocol so that the compiled engine calls a book's methods
    through the class's method table, not by name."""

    __slots__ = ()

    def add(self, order: Order) -> int:
        """Append ``order`` at the back of its price level; returns the level's new size."""
        raise NotImplementedError

    def remove(self, order: Order) -> int:
        """Take ``order`` off the book; returns its level's new size (0: level gone)."""
        raise NotImplementedError

    def reduce(self, order: Order, quantity: int) -> int:
        """Lower ``order.remaining`` by ``quantity`` in place (it keeps its priority);
        returns the level's new size. The caller removes it when nothing remains."""
        raise NotImplementedError

    def get(self, order_id: int) -> Order | None:
        raise NotImplementedError

    def best(self, side: Side) -> Order | None:
        """The first order in priority of ``side`` (resting orders of that side)."""
        raise NotImplementedError

    def best_level(self, side: Side) -> tuple[int, int]:
        """(price, total size) of the best level of ``side``; (0, 0) when empty."""
        raise NotImplementedError

    def iter_orders(self, side: Side) -> Iterator[Order]:
        """Orders of ``side`` in priority order (best price first, then time)."""
        raise NotImplementedError

    def top(self) -> tuple[int, int, int, int]:
        """(bid price, bid size, ask price, ask size) of the best levels; zeros when empty."""
        raise NotImplementedError

    def levels(self, side: Side, depth: int | None = None) -> list[tuple[int, int]]:
        """(price, total size) per level, best first, at most ``depth`` levels."""
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError


REMOVED: Final = object()  # Order.level of an order taken off the book


class Level:
    """One price level: a FIFO of orders, its total open size and live order count.

    Removal is lazy: a removed order stays in ``queue`` (its ``level`` is ``REMOVED``)
    until it reaches the front, or until the queue holds more than eight dead entries per
    live one and is compacted, which bounds its memory and costs about one entry visit per
    removal. A removal then touches only the order and its level, not its
    neighbours, which is what makes a cancel cheap on a large book.
    """

    __slots__ = ("price", "size", "count", "queue")

    def __init__(self, price: int):
        self.price = price
        self.size = 0
        self.count = 0
        self.queue: deque[Order] = deque()

    def head(self) -> Order:
        """The first live order; the caller knows the level has one."""
        queue = self.queue
        while queue[0].level is not self:
            queue.popleft()
        return queue[0]


class Book(OrderBook):
    """The fast book. Bids are keyed by −price so that index 0 is the best on both sides.

    The best level of each side is cached (``_best_bid``/``_best_ask``), so reading the
    top of the book costs an attribute access; a level is deleted from its
    ``SortedDict`` as soon as its last live order leaves.
    """

    __slots__ = ("_bids", "_asks", "_orders", "_best_bid", "_best_ask")

    def __init__(self) -> None:
        self._bids: SortedDict = SortedDict()
        self._asks: SortedDict = SortedDict()
        self._orders: dict[int, Order] = {}
        self._best_bid: Level | None = None
        self._best_ask: Level | None = None

    def add(self, order: Order) -> int:
        if order.level is not None:
            raise ValueError(f"order {order.order_id} was already on the book; add order.requeued()")
        price = order.price
        if order.side is BUY:
            level = self._bids.get(-price)
            if level is None:
                level = self._bids[-price] = Level(price)
                best = self._best_bid
                if best is None or price > best.price:
                    self._best_bid = level
        else:
            level = self._asks.get(price)
            if level is None:
                level = self._asks[price] = Level(price)
                best = self._best_ask
                if best is None or price < best.price:
                    self._best_ask = level
        level.queue.append(order)
        level.count += 1
        level.size += order.remaining
        order.level = level
        self._orders[order.order_id] = order
        return level.size

    def remove(self, order: Order) -> int:
        level = order.level
        order.level = REMOVED
        del self._orders[order.order_id]
        level.size -= order.remaining
        level.count -= 1
        if level.count == 0:
            if order.side is BUY:
                bids = self._bids
                del bids[-level.price]
                if level is self._best_bid:
                    self._best_bid = bids.peekitem(0)[1] if bids else None
            else:
                asks = self._asks
                del asks[level.price]
                if level is self._best_ask:
                    self._best_ask = asks.peekitem(0)[1] if asks else None
        elif len(level.queue) > 8 * level.count + 64:
            level.queue = deque([entry for entry in level.queue if entry.level is level])
        return level.size

    def reduce(self, order: Order, quantity: int) -> int:
        order.remaining -= quantity
        level = order.level
        level.size -= quantity
        return level.size

    def get(self, order_id: int) -> Order | None:
        return self._orders.get(order_id)

    def best(self, side: Side) -> Order | None:
        level = self._best_bid if side is BUY else self._best_ask
        if level is None:
            return None
        queue = level.queue
        head = queue[0]
        if head.level is level:
            return head
        return level.head()

    def best_level(self, side: Side) -> tuple[int, int]:
        level = self._best_bid if side is BUY else self._best_ask
        return (0, 0) if level is None else (level.price, level.size)

    def top(self) -> tuple[int, int, int, int]:
        """(bid price, bid size, ask price, ask size); zeros for an empty side."""
        bid, ask = self._best_bid, self._best_ask
        return (
            (0, 0) if bid is None else (bid.price, bid.size)
        ) + ((0, 0) if ask is None else (ask.price, ask.size))

    def iter_orders(self, side: Side) -> Iterator[Order]:
        levels = self._bids if side is BUY else self._asks
        for level in levels.values():
            for order in level.queue:
                if order.level is level:
                    yield order

    def levels(self, side: Side, depth: int | None = None) -> list[tuple[int, int]]:
        levels = self._bids if side is BUY else self._asks
        values = levels.values() if depth is None else levels.values()[:depth]
        return [(level.price, level.size) for level in values]

    def __len__(self) -> int:
        return len(self._orders)


def state_hash(book: OrderBook) -> str:
    """A hash of every resting order in priority order; equal books hash equal."""
    state = [[order.key() for order in book.iter_orders(side)] for side in (Side.BUY, Side.SELL)]
    return hashlib.blake2b(msgspec.msgpack.encode(state), digest_size=16).hexdigest()
