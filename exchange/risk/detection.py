"""Liquidation detection: which buckets fell under maintenance, and their states.

A mark update checks only the buckets that ``exchange.liquidation_index`` says it may have
put under maintenance (price keys for isolated and one-position cross buckets, movement
budgets for multi-market cross buckets). Any change to an account (fill, funding, margin,
settings) re-keys it (``after_change``). A bucket under maintenance is reported to the
liquidation engine as a ``LiquidationTrigger``, with the ADL candidates
(``exchange.risk.adl``) when settlement is near and the fund cannot cover it.
"""

from __future__ import annotations

from exchange.accounts import (
    CROSS,
    ISOLATED,
    Account,
    BucketId,
    bucket_from_wire,
    wire_market,
    Position,
    cross_totals,
    index_key,
    isolated_totals,
    position_state,
    position_thresholds,
)
from exchange.risk.adl import Deleveraging
from exchange.risk.partition import Partition
from schemas.enums import LiquidationStage, MarginMode
from schemas.events import (
    AdlCandidate,
    LiquidationOutcome,
    LiquidationTrigger,
    MarkPrice,
)

ENDED = (LiquidationStage.RECOVERED, LiquidationStage.FULL, LiquidationStage.BACKSTOP, LiquidationStage.ADL)


class Detection:
    """Which buckets fell under maintenance, and their states for the liquidation engine."""

    def __init__(self, p: Partition, deleveraging: Deleveraging) -> None:
        self.p = p
        self.deleveraging = deleveraging

    def mark(self, event: MarkPrice, out: list) -> None:
        market = self.p.listed(event.market)
        if event.mark_price <= 0:
            raise ValueError(f"a mark price must be positive, got {event.mark_price}")
        self.p.guard(market, event.mark_price)
        symbol = market.symbol
        mark = event.mark_price
        previous = self.p.marks.marks.get(symbol)
        self.p.marks.marks[symbol] = mark
        if event.index_price > 0:
            self.p.index[symbol] = event.index_price
        liquidating = sorted(self.p.in_liquidation & self.p.holders[symbol])  # before new triggers
        for account_id in dict.fromkeys(self.p.watch.crossed(symbol, mark, previous)):
            account = self.p.accounts[account_id]
            self.p.buckets_checked += 1
            self.check(account, event.ts, out)
            self.rekey_budget(account)
        for account_id in liquidating:
            self.report_liquidating(self.p.accounts[account_id], event.ts, out)
        return None

    def liquidation_outcome(self, event: LiquidationOutcome, out: list) -> None:
        account = self.p.accounts.get(event.account)
        if account is None:
            return None
        bucket = bucket_from_wire(account.account_id, event.market)
        if event.stage in ENDED and bucket in account.liquidating:
            account.liquidating.discard(bucket)
            self.p.adl_ranked.discard(bucket)
            if not account.liquidating:
                self.p.in_liquidation.discard(account.account_id)
            self.after_change(account, event.ts, out)
        return None

    def after_change(self, account: Account, ts: int, out: list) -> None:
        """Re-key the account's positions, check its buckets, report the state of buckets
        already in liquidation, and report its margin."""
        already = set(account.liquidating)
        totals = cross_totals(account, self.p.marks)
        for position in account.positions.values():
            self.reindex(account, position, totals)
        self.rekey_budget(account, totals)
        self.check(account, ts, out, totals)
        if already:
            self.report_liquidating(account, ts, out, only=already)
        if self.p.defer_snapshots:
            self.p.changed.add(account.account_id)
        else:
            out.append(self.p.snapshot_of(account, ts))

    def report_liquidating(self, account: Account, ts: int, out: list, only: set[BucketId] | None = None) -> None:
        buckets = account.liquidating if only is None else only & account.liquidating
        for bucket in sorted(buckets, key=wire_market):  # the cross bucket first, then by market
            out.append(self.bucket_state(account, bucket, ts, update=True))

    def bucket_state(self, account: Account, bucket: BucketId, ts: int, update: bool = False) -> LiquidationTrigger:
        """A bucket's state for the liquidation engine (``LiquidationTrigger``)."""
        held = bucket.position
        if held is not None:
            position = account.positions[held]
            positions = [position] if position.size else []
            if positions:
                equity, _, mm, _ = isolated_totals(position, self.p.marks)
            else:
                equity, mm = position.margin, 0
            mode = ISOLATED
            order_markets = sorted({o.market for o in account.orders.values() if o.market == held.market})
        else:
            positions = account.cross_positions()
            equity, _, mm, _ = cross_totals(account, self.p.marks)
            mode = CROSS
            order_markets = sorted({o.market for o in account.orders.values()
                                    if self.p.position(account, self.p.markets[o.market]).mode is CROSS})
        states = [position_state(account, p, self.p.marks) for p in positions]
        fund_known, fund_balance, adl = False, 0, []
        if positions and 3 * equity < 2 * mm:  # settlement is near: what liquidation needs to decide
            fund = self.p.accounts.get(self.p.insurance_account)
            fund_known, fund_balance = self.p.holds_fund, fund.balance if fund is not None else 0
            # ranking reads every holder of the market: only when ADL is what will happen, and
            # once per liquidation (the liquidation engine decides on the first such state)
            deleverage = fund_known and equity < 0 and fund_balance < -equity
            if deleverage:
                if bucket in self.p.adl_ranked:
                    deleverage = False
                else:
                    self.p.adl_ranked.add(bucket)
            for position in positions if deleverage else ():
                needed = abs(position.size)
                for candidate, size in self.deleveraging.candidates(position.market.symbol, -position.sign):
                    if needed <= 0:
                        break
                    adl.append(AdlCandidate(position.market.symbol, candidate, size))
                    needed -= size
        return LiquidationTrigger(self.p.producer, self.p.next_seq(), account.account_id, wire_market(bucket), mode,
                                  equity, mm, states, ts, order_markets, update, fund_known, fund_balance, adl)

    def rekey_budget(self, account: Account, totals: tuple | None = None) -> None:
        """(Re)place a multi-market cross bucket in the movement-budget indexes."""
        self.p.watch.unkey_budget(account.account_id)
        if account.cross in account.liquidating:
            return
        cross = account.cross_positions()
        if len(cross) < 2:
            return
        equity, _, mm, _ = totals or cross_totals(account, self.p.marks)
        slack = equity - mm - len(cross)
        if slack < 0:
            return  # _check triggers it, or it is within rounding of maintenance: keyed per fill
        self.p.watch.key_budget(account.account_id, cross, slack)

    def reindex(self, account: Account, position: Position, totals: tuple | None = None) -> None:
        self.p.watch.unkey_price(position)
        if not position.size or position.bucket() in account.liquidating:
            return
        if position.mode is CROSS and len(account.cross_positions()) > 1:
            return  # keyed by its movement budget instead
        key = index_key(position, position_thresholds(account, position, self.p.marks, totals))
        if key is not None:
            self.p.watch.key_price(position, key)

    def check(self, account: Account, ts: int, out: list, totals: tuple | None = None) -> None:
        """Trigger liquidation of every bucket of the account with ``equity < MM``."""
        if account.cross not in account.liquidating:
            equity, _, mm, _ = totals or cross_totals(account, self.p.marks)
            if mm and equity < mm:
                self.trigger(account, account.cross, CROSS, equity, mm, account.cross_positions(), ts, out)
        for position in list(account.positions.values()):
            if position.size and position.mode is ISOLATED:
                bucket = position.bucket()
                if bucket in account.liquidating:
                    continue
                equity, _, mm, _ = isolated_totals(position, self.p.marks)
                if equity < mm:
                    self.trigger(account, bucket, ISOLATED, equity, mm, [position], ts, out)

    def trigger(self, account: Account, bucket: BucketId, mode: MarginMode, equity: int, mm: int,
                 positions: list[Position], ts: int, out: list) -> None:
        account.liquidating.add(bucket)
        self.p.in_liquidation.add(account.account_id)
        for position in positions:
            self.reindex(account, position)  # leaves the index while liquidating
        if bucket.position is None:
            self.rekey_budget(account)
        out.append(self.bucket_state(account, bucket, ts))
