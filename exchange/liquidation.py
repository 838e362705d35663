"""The liquidation engine: MARGIN.md's state machine, one instance per bucket in trouble.

Pure and deterministic. Driven by ``liquidation.in``: ``LiquidationTrigger`` (risk's state
of the bucket: when it falls below maintenance, then after every fill, mark update or
funding payment while it is being liquidated) and the outcomes of its own orders
(``OrderClosed``/``OrderRejected``, forwarded by risk). It returns commands for matching
(``CancelAllOrders``, reduce-only IOC ``NewOrder``s, ``PositionTransfer``s) and
``LiquidationOutcome``s for risk and the account.

The state machine of a bucket, evaluated whenever none of its orders is outstanding:
1. flat                         -> done (FULL; what is left stays with the trader)
2. ``equity ≥ MM``              -> done (RECOVERED; the rest of the position stays)
3. ``equity < 2/3 · MM``        -> backstop: the insurance fund takes the positions at the
                                   mark and the collateral (Hyperliquid's liquidator), or at
                                   the bankruptcy price (Binance's insurance fund; the venue's
                                   ``LiquidationPolicy``); or, when the bucket's deficit
                                   exceeds the fund, ADL against the best-ranked opposite
                                   positions at the bankruptcy price
4. otherwise                    -> a round of reduce-only IOC orders, one per position, at
                                   most at the bankruptcy price (never worse), sized by the
                                   venue's ``LiquidationPolicy``: 20% of the position when
                                   its notional is above 100,000 and the account had no
                                   partial in the last 30 s, else all of it (Hyperliquid); or
                                   (Binance) what takes a position
                                   from its tier to the one below, for tiers above the
                                   second, else all of it. A round that
                                   filled nothing (no liquidity) waits for the next state.
On the first trigger the bucket's resting orders are cancelled first. A backstop or ADL
ends (its outcome is sent) only when risk reports the bucket flat, so that the outcome,
which ends the liquidation in risk, never overtakes the transfers' fills.

ADL ranking and the fund's balance come from a ``RiskView``: the risk engine in-process,
or (``risk=None``, the service) what risk sends with the bucket's state (``StateView``).
"""

from __future__ import annotations

from typing import Protocol

from exchange.markets import MICRO, PPM, Market
from schemas.enums import (
    CloseReason,
    LiquidationStage,
    Liquidity,
    OrderType,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    CancelAllOrders,
    LiquidationOutcome,
    LiquidationTrigger,
    Message,
    NewOrder,
    OrderClosed,
    OrderRejected,
    PositionState,
    PositionTransfer,
)
from schemas.state import BucketRow, LiquidationState


class LiquidationPolicy:
    """How a venue liquidates: the size of each round's order for one position, and the
    price at which the backstop takes a position. Chosen by the venue profile
    (``exchange.venues``), in the manner of nautilus_trader's fee and fill models."""

    name = ""

    def round_size(self, market: Market, size: int, mark_price: int,
                   since_partial_ns: int | None) -> tuple[int, bool]:
        """Lots of a position of ``size`` lots at ``mark_price`` this round closes, and
        whether the round is a partial one (it starts the account's cooldown);
        ``since_partial_ns``: since the account's last partial round (None: none yet)."""
        raise NotImplementedError

    def backstop_price(self, position: PositionState) -> int:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HyperliquidLiquidation(LiquidationPolicy):
    """Hyperliquid ("Trading / Liquidations"): 20% (``partial_ppm``) of a position whose
    notional is above ``partial_notional``, at most once per ``partial_cooldown_ns`` per
    account, else all of it; the liquidator takes a bucket at the mark, with its collateral."""

    name = "hyperliquid"

    def __init__(self, partial_notional: int = 100_000 * MICRO, partial_ppm: int = 200_000,
                 partial_cooldown_ns: int = 30 * 10**9) -> None:
        self.partial_notional = partial_notional
        self.partial_ppm = partial_ppm
        self.partial_cooldown_ns = partial_cooldown_ns

    def round_size(self, market: Market, size: int, mark_price: int,
                   since_partial_ns: int | None) -> tuple[int, bool]:
        notional = size * mark_price * market.value_per_tick_lot
        cooled = since_partial_ns is None or since_partial_ns >= self.partial_cooldown_ns
        if notional > self.partial_notional and cooled:
            return min(size, max(market.min_size, -(-size * self.partial_ppm // PPM))), True
        return size, False

    def backstop_price(self, position: PositionState) -> int:
        return position.mark_price


class BinanceLiquidation(LiquidationPolicy):
    """Binance ("Liquidation Protocols"): a position above its second bracket is reduced,
    a round at a time, to just below its bracket's floor, else closed at once; the
    insurance fund takes a bucket at the bankruptcy price."""

    name = "binance"

    def round_size(self, market: Market, size: int, mark_price: int,
                   since_partial_ns: int | None) -> tuple[int, bool]:
        tier = market.tier(size * mark_price * market.value_per_tick_lot)
        if market.tiers.index(tier) < 2:  # the first two brackets close at once
            return size, False
        keep = (tier.floor - 1) // (mark_price * market.value_per_tick_lot)
        quantity = min(size, max(market.min_size, size - keep))
        return quantity, quantity < size

    def backstop_price(self, position: PositionState) -> int:
        return position.adl_price or position.bankruptcy_price or position.mark_price


class RiskView(Protocol):
    """What liquidation reads from risk: the fund's balance and ADL candidates."""

    def fund_balance(self) -> int: ...

    def adl_candidates(self, market: str, side: int) -> list[tuple[str, int]]:
        """(account, size) on ``side`` of ``market``, best ranked first."""


class StateView:
    """A ``RiskView`` from what risk sends with a bucket state near settlement (the
    liquidation service cannot see risk): the fund's balance when risk's partition holds
    the fund, else the fund is taken as able to pay (backstop); the ADL candidates of that
    partition."""

    def __init__(self, state: LiquidationTrigger):
        self.state = state

    def fund_balance(self) -> int:
        return self.state.fund_balance if self.state.fund_known else 1 << 62

    def adl_candidates(self, market: str, side: int) -> list[tuple[str, int]]:
        return [(c.account, c.size) for c in self.state.adl if c.market == market]


class BucketLiquidation:
    """One bucket's liquidation in progress."""

    __slots__ = ("account", "bucket", "mode", "state", "outstanding", "round_filled", "waiting", "settling")

    def __init__(self, state: LiquidationTrigger):
        self.account = state.account
        self.bucket = state.market
        self.mode = state.mode
        self.state = state
        self.outstanding: set[int] = set()
        self.round_filled = 0
        self.waiting = False
        self.settling: LiquidationStage | None = None  # BACKSTOP or ADL once transfers are sent


class LiquidationEngine:
    """Liquidations of the buckets risk reports, as commands for matching."""

    def __init__(
        self,
        markets: dict[str, Market],
        risk: RiskView | None = None,
        producer: str = "liquidation.0",
        insurance_account: str = "insurance",
        partition: int = 0,
        policy: LiquidationPolicy | None = None,
    ):
        """``policy``: the venue's (``LiquidationPolicy``), Hyperliquid's by default."""
        self.markets = markets
        self.risk = risk
        self.producer = producer
        self.insurance_account = insurance_account
        self.policy = policy or HyperliquidLiquidation()
        if not 0 <= partition < LIQUIDATION_ORDER_BIT:
            raise ValueError(f"partition must be 0 to {LIQUIDATION_ORDER_BIT - 1}, got {partition}")
        self.partition = partition
        self.seq = 0
        self.order_counter = 0
        self.active: dict[tuple[str, str], BucketLiquidation] = {}
        self.last_partial: dict[str, int] = {}
        self._order_bucket: dict[int, tuple[str, str]] = {}

    def apply(self, event: LiquidationTrigger | OrderClosed | OrderRejected) -> list[Message]:
        out: list[Message] = []
        if isinstance(event, LiquidationTrigger):
            self._state(event, out)
        elif isinstance(event, (OrderClosed, OrderRejected)):
            self._order_ended(event, out)
        else:
            raise TypeError(f"the liquidation engine takes LiquidationTrigger, OrderClosed, OrderRejected; "
                            f"got {type(event).__name__}")
        return out

    # ------------------------------------------------------------------ snapshots

    def export(self) -> LiquidationState:
        active = [BucketRow(b.state, sorted(b.outstanding), b.round_filled, b.waiting, b.settling)
                  for b in self.active.values()]
        return LiquidationState(self.producer, self.seq, self.order_counter, active, dict(self.last_partial),
                                [(order_id, *bucket) for order_id, bucket in self._order_bucket.items()])

    def load(self, state: LiquidationState) -> None:
        """Take over ``state`` (from ``export``); the engine must be new."""
        if self.active or self.seq:
            raise ValueError("load() needs a new engine")
        self.producer, self.seq, self.order_counter = state.producer, state.seq, state.order_counter
        for row in state.active:
            bucket = self.active[(row.state.account, row.state.market)] = BucketLiquidation(row.state)
            bucket.outstanding = set(row.outstanding)
            bucket.round_filled, bucket.waiting, bucket.settling = row.round_filled, row.waiting, row.settling
        self.last_partial = dict(state.last_partial)
        self._order_bucket = {order_id: (account, market) for order_id, account, market in state.order_buckets}

    # ---------------------------------------------------------------------- inputs

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _state(self, state: LiquidationTrigger, out: list) -> None:
        unknown = {p.market for p in state.positions} - set(self.markets)
        if unknown:
            raise LookupError(f"bucket state names unknown market(s) {', '.join(sorted(unknown))}")
        key = (state.account, state.market)
        liquidation = self.active.get(key)
        if liquidation is None:
            if state.update:
                return  # a state sent before risk saw this bucket's liquidation end
            liquidation = self.active[key] = BucketLiquidation(state)
            out.append(self._outcome(liquidation, LiquidationStage.TRIGGERED, state.ts))
            for market in state.order_markets:
                out.append(CancelAllOrders(self.producer, self._next(), state.account, market,
                                           CloseReason.LIQUIDATION, state.ts))
        liquidation.state = state
        if liquidation.waiting:
            liquidation.waiting = False
            self._evaluate(liquidation, state.ts, out, after_round=False)
        elif not liquidation.outstanding:
            self._evaluate(liquidation, state.ts, out, after_round=False)

    def _order_ended(self, event: OrderClosed | OrderRejected, out: list) -> None:
        key = self._order_bucket.pop(event.order_id, None)
        liquidation = self.active.get(key) if key else None
        if liquidation is None:
            return
        liquidation.outstanding.discard(event.order_id)
        if isinstance(event, OrderClosed):
            liquidation.round_filled += event.filled
        if not liquidation.outstanding:
            self._evaluate(liquidation, event.ts, out, after_round=True)

    # ------------------------------------------------------------------- decisions

    def _evaluate(self, liquidation: BucketLiquidation, ts: int, out: list, after_round: bool) -> None:
        state = liquidation.state
        if liquidation.settling is not None:
            if not state.positions:
                self._finish(liquidation, liquidation.settling, ts, out)
            return
        if not state.positions:
            return self._finish(liquidation, LiquidationStage.FULL, ts, out)
        if state.equity >= state.maintenance_margin:
            return self._finish(liquidation, LiquidationStage.RECOVERED, ts, out)
        if 3 * state.equity < 2 * state.maintenance_margin:
            return self._settle(liquidation, ts, out)
        if after_round and liquidation.round_filled == 0:
            liquidation.waiting = True  # no liquidity within bankruptcy: try on the next state
            return None
        return self._round(liquidation, ts, out)

    def _round(self, liquidation: BucketLiquidation, ts: int, out: list) -> None:
        liquidation.round_filled = 0
        partial = False
        for position in liquidation.state.positions:
            size = abs(position.signed_size)
            last = self.last_partial.get(liquidation.account)
            quantity, partial_round = self.policy.round_size(self.markets[position.market], size,
                                                             position.mark_price, None if last is None else ts - last)
            partial = partial or partial_round
            long = position.signed_size > 0
            limit = position.adl_price or position.bankruptcy_price or (1 if long else 2 * position.mark_price)
            self.order_counter += 1
            order_id = (self.order_counter << 16) | LIQUIDATION_ORDER_BIT | self.partition
            liquidation.outstanding.add(order_id)
            self._order_bucket[order_id] = (liquidation.account, liquidation.bucket)
            out.append(NewOrder(self.producer, self._next(), liquidation.account, position.market, order_id,
                                f"liquidation-{self.order_counter}", Side.SELL if long else Side.BUY,
                                OrderType.LIMIT, TimeInForce.IOC, limit, quantity, True,
                                SelfTradePrevention.CANCEL_MAKER, ts, 0, True))
        if partial:
            self.last_partial[liquidation.account] = ts
            out.append(self._outcome(liquidation, LiquidationStage.PARTIAL, ts))
        return None

    def _settle(self, liquidation: BucketLiquidation, ts: int, out: list) -> None:
        """Backstop by the insurance fund, or ADL when the deficit exceeds the fund."""
        state = liquidation.state
        view = self.risk or StateView(state)
        deficit = max(0, -state.equity)
        if deficit and view.fund_balance() < deficit:
            liquidation.settling = LiquidationStage.ADL
            for position in state.positions:
                self._deleverage(liquidation, position, view, ts, out)
        else:
            liquidation.settling = LiquidationStage.BACKSTOP
            for position in state.positions:
                price = self.policy.backstop_price(position)
                self._transfer(liquidation.account, self.insurance_account, position, price,
                               abs(position.signed_size), Liquidity.BACKSTOP, ts, out)

    def _deleverage(self, liquidation: BucketLiquidation, position: PositionState, view: RiskView, ts: int,
                    out: list) -> None:
        side = 1 if position.signed_size > 0 else -1
        price = position.adl_price or position.bankruptcy_price or position.mark_price
        remaining = abs(position.signed_size)
        for account, size in view.adl_candidates(position.market, -side):
            if not remaining:
                break
            if account == liquidation.account:
                continue
            quantity = min(remaining, size)
            self._transfer(liquidation.account, account, position, price, quantity, Liquidity.ADL, ts, out)
            remaining -= quantity
        if remaining:  # not enough opposite positions outside liquidation: the fund takes the rest
            self._transfer(liquidation.account, self.insurance_account, position, price, remaining,
                           Liquidity.BACKSTOP, ts, out)

    def _transfer(self, trader: str, taker: str, position: PositionState, price: int, size: int,
                  liquidity: Liquidity, ts: int, out: list) -> None:
        """Move ``size`` of the trader's position to ``taker`` (the fund takes the same side;
        an ADL counterparty closes its opposite position)."""
        long = position.signed_size > 0
        buyer, seller = (taker, trader) if long else (trader, taker)
        out.append(PositionTransfer(self.producer, self._next(), position.market, buyer, seller, price, size,
                                    liquidity, ts))

    def _finish(self, liquidation: BucketLiquidation, stage: LiquidationStage, ts: int, out: list) -> None:
        del self.active[(liquidation.account, liquidation.bucket)]
        out.append(self._outcome(liquidation, stage, ts))

    def _outcome(self, liquidation: BucketLiquidation, stage: LiquidationStage, ts: int) -> LiquidationOutcome:
        return LiquidationOutcome(self.producer, self._next(), liquidation.account, liquidation.bucket,
                                  liquidation.mode, stage, liquidation.state.equity, "", ts)

