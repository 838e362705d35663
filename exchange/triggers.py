"""Conditional orders waiting for their trigger: the trigger book of one market.

Pure data structure, used by ``exchange.matching`` (docs/matching.md, "Conditional
orders"). Each waiting order watches one price source (the mark or the last trade) and
is kept where a price update finds it without looking at the others:

- a stop or take-profit order, and a trailing stop not activated yet, under its trigger
  (or activation) price in one of two sorted lists per source: ``rising`` (fires when the
  price is at or above it: a BUY stop, a SELL take-profit, a SELL trailing stop's
  activation) and ``falling`` (at or below);
- an activated trailing stop in its class (source, side, callback rate), grouped in
  levels by the best price since activation. A new high (for a SELL) lifts every level
  below it to it: the levels are merged, the smaller into the larger, so an order moves
  O(log n) times in all. The highest levels fire first.

So placing or cancelling costs O(log n), and a price update O(log n) per order it fires
or activates plus one step per trailing class in use (at most 100 per side and source:
callback rates are whole tenths of a percent, as on Binance), never a pass over every
waiting order.
"""

from __future__ import annotations

from sortedcontainers import SortedDict, SortedList  # type: ignore[import-untyped]

from schemas.enums import (
    Condition,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)

PPM = 1_000_000
BUY, SELL = Side.BUY, Side.SELL
STOP, TAKE_PROFIT, TRAILING = Condition.STOP, Condition.TAKE_PROFIT, Condition.TRAILING_STOP
SOURCES = (TriggerSource.MARK, TriggerSource.LAST)
MIN_CALLBACK_PPM, MAX_CALLBACK_PPM, CALLBACK_STEP_PPM = 1_000, 100_000, 1_000  # 0.1% to 10%, by 0.1%


class Conditional:
    """A conditional order as matching keeps it."""

    __slots__ = ("order_id", "account", "side", "condition", "order_type", "tif", "price", "size", "reduce_only",
                 "close_position", "stp", "client_order_id", "trigger_price", "source", "activation_price",
                 "callback_ppm", "priority", "entry", "level")

    def __init__(self, order_id: int, account: str, side: Side, condition: Condition, order_type: OrderType,
                 tif: TimeInForce, price: int, size: int, reduce_only: bool, close_position: bool,
                 stp: SelfTradePrevention, client_order_id: str, trigger_price: int, source: TriggerSource,
                 activation_price: int, callback_ppm: int, priority: int = 0) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.condition = condition
        self.order_type = order_type
        self.tif = tif
        self.price = price
        self.size = size
        self.reduce_only = reduce_only
        self.close_position = close_position
        self.stp = stp
        self.client_order_id = client_order_id
        self.trigger_price = trigger_price
        self.source = source
        self.activation_price = activation_price
        self.callback_ppm = callback_ppm
        self.priority = priority
        self.entry: tuple | None = None  # its key in a rising or falling list
        self.level: _Level | None = None  # an activated trailing stop's level

    @property
    def extreme(self) -> int:
        """A trailing stop's best price since activation; 0 before."""
        return self.level.extreme if self.level is not None else 0

    def fires_rising(self) -> bool:
        """Whether it waits for the price to rise to its key (else to fall)."""
        if self.condition is TRAILING:
            return self.side is SELL or not self.activation_price
        return (self.condition is STOP) == (self.side is BUY)


def trailing_trigger(side: Side, extreme: int, callback_ppm: int) -> int:
    """The price at which a trailing stop fires: the SELL's highest less the callback rate
    (rounded down), the BUY's lowest plus it (rounded up)."""
    if side is SELL:
        return extreme * (PPM - callback_ppm) // PPM
    return -(-extreme * (PPM + callback_ppm) // PPM)


class _Level:
    __slots__ = ("extreme", "members")

    def __init__(self, extreme: int):
        self.extreme = extreme
        self.members: dict[int, Conditional] = {}


class _Trail:
    """Activated trailing stops of one source, side and callback rate.

    ``near`` and ``fire_at`` bound the prices that change nothing: for a SELL, a price at
    or below the lowest extreme (``near``) moves no level, and one above ``fire_at`` (the
    highest level's trigger) fires none; for a BUY the mirror. Most updates stop there."""

    __slots__ = ("sell", "callback_ppm", "levels", "near", "fire_at")

    def __init__(self, side: Side, callback_ppm: int):
        self.sell = side is SELL
        self.callback_ppm = callback_ppm
        self.levels: SortedDict = SortedDict()  # extreme -> _Level
        self.near = self.fire_at = 0

    def __len__(self) -> int:
        return len(self.levels)

    def _bounds(self) -> None:
        levels = self.levels
        if not levels:
            return
        low, high = levels.peekitem(0)[0], levels.peekitem(-1)[0]
        if self.sell:
            self.near, self.fire_at = low, trailing_trigger(SELL, high, self.callback_ppm)
        else:
            self.near, self.fire_at = high, trailing_trigger(BUY, low, self.callback_ppm)

    def idle(self, price: int) -> bool:
        """Whether ``price`` leaves every level as it is."""
        if self.sell:
            return self.fire_at < price <= self.near
        return self.near <= price < self.fire_at

    def add(self, order: Conditional, extreme: int) -> None:
        level = self.levels.get(extreme)
        if level is None:
            level = self.levels[extreme] = _Level(extreme)
        level.members[order.order_id] = order
        order.level = level
        self._bounds()

    def remove(self, order: Conditional) -> None:
        level = order.level
        assert level is not None, "a trailing order is in a level while it is watched"
        del level.members[order.order_id]
        order.level = None
        if not level.members:
            del self.levels[level.extreme]
            self._bounds()

    def update(self, price: int) -> list[tuple[int, Conditional]]:
        """The orders ``price`` fires, each with its trigger price."""
        levels = self.levels
        if not levels:
            return []
        # the levels the price went past take it as their extreme, merged into one
        index = 0 if self.sell else -1
        moved = []
        while levels:
            extreme = levels.peekitem(index)[0]
            if (extreme >= price) if self.sell else (extreme <= price):
                break
            moved.append(levels.popitem(index)[1])
        if moved:
            same = levels.pop(price, None)
            if same is not None:
                moved.append(same)
            survivor = max(moved, key=lambda level: len(level.members))
            for level in moved:
                if level is not survivor:
                    for order in level.members.values():
                        order.level = survivor
                    survivor.members.update(level.members)
            survivor.extreme = price
            levels[price] = survivor
        # the levels from which the price came back by the callback rate fire, farthest first
        fired: list[tuple[int, Conditional]] = []
        keep = PPM - self.callback_ppm if self.sell else PPM + self.callback_ppm
        index = -1 if self.sell else 0
        while levels:
            extreme = levels.peekitem(index)[0]
            if (price * PPM > extreme * keep) if self.sell else (price * PPM < extreme * keep):
                break
            level = levels.popitem(index)[1]
            trigger = trailing_trigger(SELL if self.sell else BUY, extreme, self.callback_ppm)
            for order in level.members.values():
                order.level = None
                fired.append((trigger, order))
        self._bounds()
        return fired


class TriggerBook:
    """The conditional orders of one market, by id, with the indexes price updates use."""

    def __init__(self) -> None:
        self.orders: dict[int, Conditional] = {}
        self.by_account: dict[str, dict[int, None]] = {}
        self.prices = {source: 0 for source in SOURCES}  # the last price seen of each source
        self._rising = {source: SortedList() for source in SOURCES}
        self._falling = {source: SortedList() for source in SOURCES}
        self._trails: dict[TriggerSource, dict[tuple[Side, int], _Trail]] = {source: {} for source in SOURCES}
        self._trail_list: dict[TriggerSource, tuple[_Trail, ...]] = {source: () for source in SOURCES}
        # per source, the prices (lo, hi, inclusive) at which an update changes nothing
        self._quiet = {source: (0, -1) for source in SOURCES}

    def _requiet(self, source: TriggerSource) -> None:
        lo, hi = -(1 << 62), 1 << 62
        rising, falling = self._rising[source], self._falling[source]
        if rising:
            hi = rising[0][0] - 1
        if falling:
            lo = falling[-1][0] + 1
        for trail in self._trail_list[source]:
            if trail.sell:
                lo, hi = max(lo, trail.fire_at + 1), min(hi, trail.near)
            else:
                lo, hi = max(lo, trail.near), min(hi, trail.fire_at - 1)
        self._quiet[source] = (lo, hi)

    def __len__(self) -> int:
        return len(self.orders)

    def get(self, order_id: int) -> Conditional | None:
        return self.orders.get(order_id)

    def of(self, account: str) -> list[Conditional]:
        """The account's conditional orders, in priority order."""
        return [self.orders[order_id] for order_id in self.by_account.get(account, ())]

    def add(self, order: Conditional, extreme: int = 0) -> None:
        """Start watching ``order``. A trailing stop without an activation price activates
        at once at the current price (at the next price if none is known yet); ``extreme``
        restores an activated one (``load``)."""
        self.orders[order.order_id] = order
        self.by_account.setdefault(order.account, {})[order.order_id] = None
        if order.condition is TRAILING:
            current = self.prices[order.source]
            if extreme or (not order.activation_price and current):
                self._activate(order, extreme or current)
                self._requiet(order.source)
                return
            key = order.activation_price  # 0: the first price activates it (rising from 0)
        else:
            key = order.trigger_price
        order.entry = (key, order.priority, order.order_id)
        (self._rising if order.fires_rising() else self._falling)[order.source].add(order.entry)
        self._requiet(order.source)

    def take(self, order_id: int) -> Conditional:
        """Stop watching an order known to be watched; it."""
        order = self.remove(order_id)
        assert order is not None, f"conditional order {order_id} is not watched"
        return order

    def remove(self, order_id: int) -> Conditional | None:
        order = self.orders.pop(order_id, None)
        if order is None:
            return None
        mine = self.by_account[order.account]
        del mine[order_id]
        if not mine:
            del self.by_account[order.account]
        if order.entry is not None:
            (self._rising if order.fires_rising() else self._falling)[order.source].remove(order.entry)
            order.entry = None
        elif order.level is not None:
            trails = self._trails[order.source]
            key = (order.side, order.callback_ppm)
            trail = trails[key]
            trail.remove(order)
            if not len(trail):
                del trails[key]
                self._trail_list[order.source] = tuple(trails.values())
        self._requiet(order.source)
        return order

    def _activate(self, order: Conditional, extreme: int) -> None:
        trails = self._trails[order.source]
        key = (order.side, order.callback_ppm)
        trail = trails.get(key)
        if trail is None:
            trail = trails[key] = _Trail(order.side, order.callback_ppm)
            self._trail_list[order.source] = tuple(trails.values())
        trail.add(order, extreme)

    def update(self, source: TriggerSource, price: int) -> list[tuple[int, Conditional]]:
        """A new price of ``source``: the orders it fires, with the price each fired at,
        removed from the book, in the order the move reached them (for a rise, the lowest
        trigger first; for a fall, the highest), ties by priority."""
        previous = self.prices[source]
        self.prices[source] = price
        lo, hi = self._quiet[source]
        if lo <= price <= hi:
            return []  # the usual case: nothing reached, no trailing level moves
        rising, falling = self._rising[source], self._falling[source]
        reached = []
        while rising and rising[0][0] <= price:
            reached.append(rising.pop(0))
        while falling and falling[-1][0] >= price:
            reached.append(falling.pop(-1))
        fired: list[tuple[int, Conditional]] = []
        for key, _, order_id in reached:
            order = self.orders[order_id]
            order.entry = None
            if order.condition is TRAILING:
                self._activate(order, price)
            else:
                fired.append((key, order))
        by_key = self._trails[source]
        for trail in self._trail_list[source]:
            if not trail.idle(price):
                fired.extend(trail.update(price))
                if not len(trail):
                    del by_key[(SELL if trail.sell else BUY, trail.callback_ppm)]
        self._trail_list[source] = tuple(by_key.values())
        self._requiet(source)
        for _, order in fired:
            del self.orders[order.order_id]
            mine = self.by_account[order.account]
            del mine[order.order_id]
            if not mine:
                del self.by_account[order.account]
        direction = 1 if price > previous else -1 if price < previous else 0
        fired.sort(key=lambda item: (direction * item[0], item[1].priority))
        return fired
