"""Money that moves: fills, fees, funding, and what reaches or leaves the insurance fund.

Fees: charged on fill notional (taker or maker rate; a negative maker rate is a rebate,
rounded down). Opening fees come out of the cross balance ``B``, for isolated positions
too (the order's reservation covered them); closing fees come out of what the close
returns, as MARGIN.md says for isolated reductions.

Loss bound: an isolated position that closes with less than nothing left, or a cross
bucket left with no position and a negative balance, is bankrupt: the deficit is charged
to the insurance fund account (``bad_debt`` counts it) and the trader's bucket is set to 0.
The fund lives in one partition; the others send it ``CollateralTransfer``s with ``settle``.
"""

from __future__ import annotations

from exchange.accounts import (
    CROSS,
    ISOLATED,
    PPB,
    PPM,
    Account,
    Position,
    PositionKey,
    ceil_div,
    cross_totals,
    wire_market,
)
from exchange.markets import Market, trading_fee
from exchange.risk.detection import Detection
from exchange.risk.partition import Partition
from schemas.enums import (
    IncomeKind,
    LiquidationStage,
    Liquidity,
)
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    CollateralTransfer,
    Fill,
    Funding,
    IncomeItem,
)


class Settlement:
    """Money that moves: fills, fees, funding, and what reaches or leaves the insurance fund."""

    def __init__(self, p: Partition, detection: Detection) -> None:
        self.p = p
        self.detection = detection

    def fill(self, fill: Fill, out: list) -> None:
        market = self.p.listed(fill.market)
        self.p.guard(market, max(fill.price, self.p.marks.marks.get(market.symbol, 0)), 2 * fill.size)
        self.p.marks.last[market.symbol] = fill.price
        book = fill.liquidity is Liquidity.BOOK
        sides = ((fill.taker_account, int(fill.taker_side), fill.taker_order_id, market.taker_fee_ppm),
                 (fill.maker_account, -int(fill.taker_side), fill.maker_order_id, market.maker_fee_ppm))
        changed = []
        for account_id, side, order_id, fee_ppm in sides:
            account = self.p.accounts.get(account_id)
            if account is None:
                continue  # the other side belongs to another partition
            if not book:
                fee_ppm = 0  # backstop and ADL transfers are fee-free
            position = self.p.position(account, market)
            bucket = position.bucket()
            if book and order_id & LIQUIDATION_ORDER_BIT and self.p.liquidation_fee_ppm:
                self.liquidation_fee(account, position, fill.price, fill.size, fee_ppm, fill.ts)
            # the liquidated side of a backstop or ADL transfer hands its bucket to the fund
            settle = not book and bucket in account.liquidating and account_id != self.p.insurance_account
            moved = self.apply_fill(account, market, side, fill.price, fill.size, fee_ppm, settle,
                                     fill.trade_id, fill.ts)
            if moved is not None:
                stage = LiquidationStage.BACKSTOP if fill.liquidity is Liquidity.BACKSTOP else LiquidationStage.ADL
                out.append(CollateralTransfer(self.p.producer, self.p.next_seq(), account_id, wire_market(bucket),
                                              self.p.insurance_account, "", moved, stage, fill.ts))
            order = account.orders.get(order_id)
            if order is not None:
                if fill.size >= order.remaining:
                    released = order.reserved
                else:
                    released = order.reserved * fill.size // order.remaining
                order.remaining -= fill.size
                order.reserved -= released
                account.reserved -= released
            if account not in changed:
                changed.append(account)
        for account in changed:
            self.detection.after_change(account, fill.ts, out)
        return None

    def liquidation_fee(self, account: Account, position: Position, price: int, size: int, fee_ppm: int,
                         ts: int = 0) -> None:
        """The liquidation fee on a fill of a liquidation order, to the insurance fund,
        capped by what the bucket has left at the fill price after the trading fee."""
        value = price * size * position.market.value_per_tick_lot
        nominal = ceil_div(value * self.p.liquidation_fee_ppm, PPM)
        trading_fee = ceil_div(value * fee_ppm, PPM) if fee_ppm > 0 else 0
        if position.mode is ISOLATED:
            left = position.margin + position.unrealized_pnl(price)
        else:
            equity, _, _, _ = cross_totals(account, self.p.marks)
            left = equity - position.unrealized_pnl(self.p.marks.price(position)) + position.unrealized_pnl(price)
        fee = min(nominal, max(0, left - trading_fee))
        if fee <= 0:
            return
        if position.mode is ISOLATED:
            position.margin -= fee
        else:
            account.balance -= fee
        account.income.append(IncomeItem(position.market.symbol, IncomeKind.INSURANCE_CLEAR, -fee, 0, ts))
        self.to_fund(fee, account.account_id, position.market.symbol)
        self.p.liquidation_fees += fee

    def apply_fill(self, account: Account, market: Market, side: int, price: int, quantity: int,
                    fee_ppm: int, settle: bool = False, trade_id: int = 0, ts: int = 0) -> int | None:
        """Apply one side of a fill. With ``settle`` (the liquidated side of a backstop or
        ADL transfer), once the bucket is flat its remaining collateral goes to the
        insurance fund; returns that amount (None when nothing was settled)."""
        position = self.p.position(account, market)
        v = market.value_per_tick_lot
        value = price * quantity * v
        fee = trading_fee(value, fee_ppm)
        self.p.fees += fee
        account.fees_paid += fee
        income = account.income
        symbol = market.symbol
        if fee:
            income.append(IncomeItem(symbol, IncomeKind.COMMISSION, -fee, trade_id, ts))
        was_open = position.size != 0
        moved = None
        if position.size and position.sign != side:
            reduce = min(quantity, abs(position.size))
            size = abs(position.size)
            removed = position.entry_value * reduce // size
            realized = position.sign * (price * reduce * v - removed)
            if realized:
                income.append(IncomeItem(symbol, IncomeKind.REALIZED_PNL, realized, trade_id, ts))
            fee_reduce = fee * reduce // quantity
            position.entry_value -= removed
            position.size += side * reduce
            self.p.exposure[market.symbol] -= reduce
            if position.mode is CROSS:
                account.balance += realized - fee_reduce
            else:
                if settle:
                    position.margin += realized - fee_reduce  # all of it stays for the fund
                else:
                    release = position.margin * reduce // size
                    position.margin -= release
                    back = release + realized - fee_reduce
                    if back >= 0:
                        account.balance += back
                    else:
                        position.margin += back  # the shortfall comes out of the remaining margin
                if not position.size:
                    leftover, position.margin = position.margin, 0
                    if settle:
                        moved = leftover
                        income.append(IncomeItem(symbol, IncomeKind.INSURANCE_CLEAR, -leftover, 0, ts))
                        self.to_fund(leftover, account.account_id, market.symbol)
                    elif leftover >= 0:
                        account.balance += leftover
                    else:
                        income.append(IncomeItem(symbol, IncomeKind.INSURANCE_CLEAR, -leftover, 0, ts))
                        self.cover_deficit(-leftover, account.account_id, market.symbol)
            quantity -= reduce
            fee -= fee_reduce
        if quantity:
            position.entry_value += price * quantity * v
            position.size += side * quantity
            self.p.exposure[market.symbol] += quantity
            if position.mode is ISOLATED:
                notional = position.notional(price)
                margin_in = ceil_div(price * quantity * v, position.effective_leverage(notional))
                account.balance -= margin_in
                position.margin += margin_in
        account.balance -= fee
        if position.size and not was_open:
            self.p.holders[market.symbol].add(account.account_id)
        elif not position.size:
            self.p.holders[market.symbol].discard(account.account_id)
        if position.mode is CROSS and not account.cross_positions() and account.account_id != self.p.insurance_account:
            if settle:
                moved, account.balance = account.balance, 0
                income.append(IncomeItem("", IncomeKind.INSURANCE_CLEAR, -moved, 0, ts))
                self.to_fund(moved, account.account_id)
            elif account.balance < 0:
                deficit, account.balance = -account.balance, 0
                income.append(IncomeItem("", IncomeKind.INSURANCE_CLEAR, deficit, 0, ts))
                self.cover_deficit(deficit, account.account_id)
        return moved

    def to_fund(self, amount: int, account_id: str = "", market: str = "",
                 stage: LiquidationStage = LiquidationStage.BACKSTOP) -> None:
        """Money for the insurance fund (negative: a deficit it pays). Applied here when this
        partition holds the fund; otherwise sent, as a ``CollateralTransfer`` with
        ``settle``, to the partition that does."""
        if amount < 0:
            self.p.bad_debt -= amount
        if self.p.holds_fund:
            fund = self.p.fund()
            fund.balance += amount
            fund.income.append(IncomeItem(market, IncomeKind.INSURANCE_CLEAR, amount))
            self.p.fund_changed = True
        else:
            self.p.pending.append(CollateralTransfer(self.p.producer, self.p.next_seq(), account_id, market,
                                                    self.p.insurance_account, "", amount, stage, 0, True))

    def cover_deficit(self, deficit: int, account_id: str = "", market: str = "") -> None:
        """Bankrupt bucket: the insurance fund pays what the trader cannot."""
        self.to_fund(-deficit, account_id, market)

    def collateral(self, event: CollateralTransfer, out: list) -> None:
        """A fund movement from another risk partition (``settle``) reaches the fund here."""
        if event.settle and event.to_account == self.p.insurance_account and self.p.holds_fund:
            fund = self.p.fund()
            fund.balance += event.amount
            fund.income.append(IncomeItem(event.from_market, IncomeKind.INSURANCE_CLEAR, event.amount, 0, event.ts))
            self.p.fund_changed = True
        return None

    def funding(self, event: Funding, out: list) -> None:
        market = self.p.listed(event.market)
        self.p.guard(market, event.price)
        changed = []
        for account_id in sorted(self.p.holders[market.symbol]):
            account = self.p.accounts[account_id]
            position = account.positions[PositionKey(account_id, market.symbol)]
            exact = abs(position.size) * event.price * market.value_per_tick_lot * abs(event.rate_ppb)
            pays = (event.rate_ppb > 0) == (position.size > 0)
            amount = -ceil_div(exact, PPB) if pays else exact // PPB
            self.p.funding_net -= amount
            account.funding_paid -= amount
            account.income.append(IncomeItem(market.symbol, IncomeKind.FUNDING_FEE, amount, 0, event.ts))
            if position.mode is CROSS:
                account.balance += amount
            else:
                position.margin += amount
            changed.append(account)
        for account in changed:
            self.detection.after_change(account, event.ts, out)
        return None
