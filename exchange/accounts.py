"""Accounts, positions and buckets: every formula of MARGIN.md, in integer micro units.

Notation as in MARGIN.md: ``s`` signed size (lots), ``P`` mark price (ticks), ``v`` the
market's ``value_per_tick_lot`` (micro units per tick per lot).

- ``entry_value`` is ``|s| · entry · v``, the position's cost in micro units, kept exactly:
  it grows by ``price · qty · v`` on an increase and shrinks by its pro-rata share
  (rounded down) on a decrease, so realized PnL plus what remains always adds up.
- ``uPnL = s · P · v − sign(s) · entry_value``; ``notional = |s| · P · v``.
- ``IM = ceil(notional / L)`` with ``L = min(position leverage, tier max leverage)``;
  ``MM = ceil(notional · mmr(tier) − deduction(tier))`` (``Market.maintenance_margin``).
- Buckets: the cross bucket (``AV_c = B + Σ_cross uPnL``) and one per isolated position
  (``E_j = M_j + uPnL_j``).

Names (``schemas.keys``): a position is named by a ``PositionKey`` (account, market, side;
the side is ``BOTH`` in one-way mode, the only mode today), a bucket by a ``BucketId``
(an account's cross bucket, or the isolated bucket of one position). Risk's accounts,
matching's positions, the liquidation index and the snapshots are keyed by them. On the
wire a bucket is still (mode, market) with ``""`` for the cross bucket: ``wire_market``
and ``bucket_from_wire`` are the only places that convention is read or written.

Rounding: what a trader must put up is rounded up, what a trader is paid is rounded down,
PnL is exact.

Liquidation prices are exact: ``liquidation_threshold`` solves ``equity(P) = MM(P)`` over
every maintenance tier (``equity − MM`` is monotone in ``P``), so the price it returns is
where a strict ``equity < MM`` starts, also when that crosses a tier boundary. Inside the
position's current tier it is MARGIN.md's ``liq_i`` formula.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final

from exchange.markets import Market
from schemas.enums import MarginMode, PositionSide
from schemas.events import BucketState, PositionState
from schemas.keys import BucketId, PositionKey

PPM = 1_000_000
PPB = 1_000_000_000
CROSS = MarginMode.CROSS
ISOLATED = MarginMode.ISOLATED
BOTH: Final = PositionSide.BOTH


def ceil_div(numerator: int, denominator: int) -> int:
    return -((-numerator) // denominator)


def wire_market(bucket: BucketId) -> str:
    """The bucket's ``market`` field on the wire: ``""`` for the cross bucket."""
    return "" if bucket.position is None else bucket.position.market


def bucket_from_wire(account: str, market: str) -> BucketId:
    """The bucket a wire message names by (account, market): ``""`` is the cross bucket."""
    return BucketId(account, PositionKey(account, market) if market else None)


DEFAULT_LEVERAGE = 20  # an account's leverage in a market until it sets one (at most the market's)


def default_leverage(market: Market) -> int:
    return min(DEFAULT_LEVERAGE, market.max_leverage)


class Position:
    """One market's position of an account, with that market's settings (mode, leverage).

    It exists, with size 0, as soon as the account sets a mode or leverage or trades.
    ``margin`` is the isolated margin ``M_j`` (0 in cross mode).
    """

    __slots__ = ("key", "market", "mode", "leverage", "size", "entry_value", "margin", "index_entry")

    def __init__(self, key: PositionKey, market: Market, mode: MarginMode = CROSS, leverage: int | None = None):
        if key.market != market.symbol:
            raise ValueError(f"position {key} is not in {market.symbol}")
        self.key = key
        self.market = market
        self.mode = mode
        self.leverage = leverage if leverage is not None else default_leverage(market)
        self.size = 0
        self.entry_value = 0
        self.margin = 0
        self.index_entry: tuple | None = None  # (index list, key) while in a liquidation index

    @property
    def sign(self) -> int:
        return (self.size > 0) - (self.size < 0)

    def notional(self, price: int) -> int:
        return abs(self.size) * price * self.market.value_per_tick_lot

    def unrealized_pnl(self, price: int) -> int:
        return self.size * price * self.market.value_per_tick_lot - self.sign * self.entry_value

    def effective_leverage(self, notional: int) -> int:
        return min(self.leverage, self.market.tier(notional).max_leverage)

    def initial_margin(self, price: int) -> int:
        notional = self.notional(price)
        return ceil_div(notional, self.effective_leverage(notional))

    def maintenance_margin(self, price: int) -> int:
        return self.market.maintenance_margin(self.notional(price))

    def bucket(self) -> BucketId:
        """The bucket holding this position: its own when isolated, else the cross bucket."""
        return BucketId(self.key.account, self.key) if self.mode is ISOLATED else BucketId(self.key.account)

    def entry_price(self) -> Fraction | None:
        if not self.size:
            return None
        return Fraction(self.entry_value, abs(self.size) * self.market.value_per_tick_lot)

    def __repr__(self) -> str:
        return (f"Position({self.key.account}, {self.market.symbol}, {self.mode.name}, {self.leverage}x, "
                f"size={self.size}, "
                f"entry_value={self.entry_value}, margin={self.margin})")


class OpenOrder:
    """An order risk accepted and matching has not ended yet, with its margin reservation."""

    __slots__ = ("order_id", "market", "side", "price", "remaining", "reserved", "reduce_only",
                 "client_order_id", "conditional")

    def __init__(self, order_id: int, market: str, side: int, price: int, remaining: int,
                 reserved: int, reduce_only: bool, client_order_id: str, conditional: bool = False):
        self.order_id = order_id
        self.market = market
        self.side = side
        self.price = price
        self.remaining = remaining
        self.reserved = reserved
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.conditional = conditional  # waiting for its trigger in matching: reserves nothing yet


class Account:
    """An account: cross balance ``B``, positions by market, open orders by id."""

    __slots__ = ("account_id", "balance", "positions", "orders", "reserved", "liquidating", "cross", "fees_paid",
                 "funding_paid", "income")

    def __init__(self, account_id: str):
        self.account_id = account_id
        self.balance = 0
        self.fees_paid = 0  # cumulative trading fees (negative: rebates earned), for reports
        self.funding_paid = 0  # cumulative funding paid (negative: received), for reports
        self.income: list = []  # IncomeItems not yet reported in a margin snapshot
        self.positions: dict[PositionKey, Position] = {}
        self.orders: dict[int, OpenOrder] = {}
        self.reserved = 0  # Σ reservations of open orders
        self.liquidating: set[BucketId] = set()  # buckets in liquidation
        self.cross = BucketId(account_id)  # its cross bucket

    def key(self, market: str, side: PositionSide = BOTH) -> PositionKey:
        return PositionKey(self.account_id, market, side)

    def position(self, market: str, side: PositionSide = BOTH) -> Position | None:
        """Its position in ``market`` (None: it never traded or set anything there)."""
        return self.positions.get(PositionKey(self.account_id, market, side))

    def cross_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.size and p.mode is CROSS]


# --------------------------------------------------------------------------- buckets


class Marks:
    """The price each market is valued at: the mark, else the last fill, else entry."""

    __slots__ = ("marks", "last")

    def __init__(self) -> None:
        self.marks: dict[str, int] = {}
        self.last: dict[str, int] = {}

    def price(self, position: Position) -> int:
        symbol = position.market.symbol
        price = self.marks.get(symbol) or self.last.get(symbol)
        if price:
            return price
        entry = position.entry_price()
        return math.floor(entry) if entry else 0


def cross_totals(account: Account, marks: Marks) -> tuple[int, int, int, int]:
    """(AV_c, IM_c, MM_c, Σ cross notional) of the account's cross bucket."""
    equity, im, mm, notional = account.balance, 0, 0, 0
    for position in account.positions.values():
        if position.size and position.mode is CROSS:
            price = marks.price(position)
            equity += position.unrealized_pnl(price)
            im += position.initial_margin(price)
            mm += position.maintenance_margin(price)
            notional += position.notional(price)
    return equity, im, mm, notional


def isolated_totals(position: Position, marks: Marks) -> tuple[int, int, int, int]:
    """(E_j, IM_j, MM_j, notional_j) of an isolated position's bucket."""
    price = marks.price(position)
    return (position.margin + position.unrealized_pnl(price), position.initial_margin(price),
            position.maintenance_margin(price), position.notional(price))


def available_to_trade(account: Account, marks: Marks, totals: Totals | None = None) -> int:
    equity, im, _, _ = totals or cross_totals(account, marks)
    return max(0, equity - im - account.reserved)


def withdrawable(account: Account, marks: Marks, totals: Totals | None = None) -> int:
    """``max(0, AV_c − max(IM_c, 0.1 · Σ cross notional))``, less open-order reservations."""
    equity, im, _, notional = totals or cross_totals(account, marks)
    return max(0, equity - max(im, ceil_div(notional, 10)) - account.reserved)


def margin_ratio_ppb(maintenance: int, equity: int) -> int:
    """MM / equity in parts per billion; −1 for infinite (equity ≤ 0 < MM)."""
    if equity <= 0:
        return -1 if maintenance > 0 else 0
    return ceil_div(maintenance * PPB, equity)


# ------------------------------------------------------------- liquidation and bankruptcy


def liquidation_threshold(position: Position, other_equity: int, other_mm: int) -> Fraction | None:
    """The price (ticks, exact) at which ``equity = MM`` for this position's bucket.

    ``other_equity`` is the part of the bucket's equity that does not move with this
    position's price (``M_j`` for isolated; ``B`` plus the other positions' uPnL for
    cross), ``other_mm`` the other positions' MM. A long is liquidated strictly below
    the threshold, a short strictly above. None: a long that no positive price
    liquidates. A short's threshold may be ≤ 0: it is liquidatable at every price.
    """
    size = abs(position.size)
    if not size:
        return None
    sign = position.sign
    market = position.market
    # With n the position's notional: equity(n) = other_equity + sign·(n − entry_value) and
    # MM(n) = other_mm + n·mmr_t − d_t in tier t. MM is continuous and convex in n, so
    # equity − MM is strictly increasing in n for a long (slope 1 − mmr_t > 0) and strictly
    # decreasing for a short: it crosses zero at most once.
    at_zero = other_equity - sign * position.entry_value - other_mm
    if sign > 0 and at_zero >= 0:
        return None  # healthy at every positive price
    if sign < 0 and at_zero <= 0:
        return Fraction(0)  # liquidatable at every positive price
    tiers = market.tiers
    base = other_mm - other_equity + sign * position.entry_value
    for index, tier in enumerate(tiers):
        # n = (base − d_t) / (sign − mmr_t), over the tier's integer denominator:
        # n = (base · scale − minus) / (sign · scale − rate), kept as numerator/denominator
        numerator = base * tier._scale - tier._minus
        denominator = sign * tier._scale - tier._rate
        if denominator < 0:
            numerator, denominator = -numerator, -denominator
        if numerator < tier.floor * denominator:
            continue
        if index + 1 < len(tiers) and numerator >= tiers[index + 1].floor * denominator:
            continue
        return Fraction(numerator, denominator * size * market.value_per_tick_lot)
    raise AssertionError(f"no maintenance tier holds the liquidation point of {position}")


def bankruptcy_price(position: Position, price: int, equity: int, share: Fraction = Fraction(1)) -> Fraction | None:
    """``bk = P − side · equity · share / |s|`` in ticks; ``share`` = MM_i / MM_c for one
    position of a multi-position cross bucket (MARGIN.md, ADL)."""
    size = abs(position.size)
    if not size:
        return None
    return price - position.sign * Fraction(equity) * share / (size * position.market.value_per_tick_lot)


def index_key(position: Position, threshold: Fraction | None) -> int | None:
    """Integer key so that, for an integer mark P, liquidation ⇔ P < key (long) or
    P > key (short)."""
    if threshold is None:
        return None
    if position.size > 0:
        return math.ceil(threshold)
    return math.floor(threshold) if threshold > 0 else -1


Totals = tuple[int, int, int, int]


def position_thresholds(account: Account, position: Position, marks: Marks,
                        totals: Totals | None = None) -> Fraction | None:
    """The liquidation threshold of ``position`` with every other position at its mark.
    ``totals``: the account's ``cross_totals``, when the caller has them already."""
    if position.mode is ISOLATED:
        return liquidation_threshold(position, position.margin, 0)
    equity, _, mm, _ = totals or cross_totals(account, marks)
    price = marks.price(position)
    other_equity = equity - position.unrealized_pnl(price)
    other_mm = mm - position.maintenance_margin(price)
    return liquidation_threshold(position, other_equity, other_mm)


def round_price(price: Fraction | None) -> int:
    """A reported price: rounded to the nearest tick, 0 for none."""
    if price is None or price <= 0:
        return 0
    return math.floor(price + Fraction(1, 2))


def position_state(account: Account, position: Position, marks: Marks,
                   totals: Totals | None = None) -> PositionState:
    price = marks.price(position)
    if position.mode is ISOLATED:
        equity = position.margin + position.unrealized_pnl(price)
        share = Fraction(1)
    else:
        totals = totals or cross_totals(account, marks)
        equity, _, mm_c, _ = totals
        mm_i = position.maintenance_margin(price)
        share = Fraction(mm_i, mm_c) if mm_c else Fraction(1)
    threshold = position_thresholds(account, position, marks, totals)
    return PositionState(
        position.market.symbol, position.mode, position.leverage, position.size,
        position.entry_value, position.margin, price, position.unrealized_pnl(price),
        position.initial_margin(price), position.maintenance_margin(price),
        round_price(threshold), _safe_bankruptcy(position, bankruptcy_price(position, price, equity)),
        _safe_bankruptcy(position, bankruptcy_price(position, price, equity, share)),
    )


def _safe_bankruptcy(position: Position, price: Fraction | None) -> int:
    """The bankruptcy price in whole ticks on the trader's safe side (a long's rounded up,
    a short's down), so an order limited at it never fills worse than bankruptcy; 0 for
    none."""
    if price is None or price <= 0:
        return 0
    return math.ceil(price) if position.size > 0 else math.floor(price)


def bucket_states(account: Account, marks: Marks, totals: Totals | None = None) -> list[BucketState]:
    equity, im, mm, _ = totals or cross_totals(account, marks)
    states = [BucketState("", CROSS, equity, im, mm, margin_ratio_ppb(mm, equity))]
    for position in account.positions.values():
        if position.size and position.mode is ISOLATED:
            equity, im, mm, _ = isolated_totals(position, marks)
            states.append(BucketState(position.market.symbol, ISOLATED, equity, im, mm,
                                      margin_ratio_ppb(mm, equity)))
    return states
