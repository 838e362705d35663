"""Account commands: deposits, withdrawals, margin mode, leverage and isolated margin.

Each is answered by ``CommandAccepted`` or ``CommandRejected`` naming a ``RejectReason``;
an accepted one re-keys the account and reports its margin (``Detection.after_change``).
"""

from __future__ import annotations

from exchange.accounts import (
    ISOLATED,
    Account,
    Position,
    available_to_trade,
    ceil_div,
    cross_totals,
    isolated_totals,
    withdrawable,
)
from exchange.errors import Refused
from exchange.risk.detection import Detection
from exchange.risk.orders import OrderAdmission
from exchange.risk.partition import MAX_BALANCE, Partition
from schemas.enums import (
    IncomeKind,
    RejectReason,
    Side,
)
from schemas.events import (
    AdjustIsolatedMargin,
    Deposit,
    IncomeItem,
    SetLeverage,
    SetMarginMode,
    Withdraw,
)


class AccountCommands:
    """The account commands: deposits, withdrawals, margin mode, leverage and isolated margin."""

    def __init__(self, p: Partition, admission: OrderAdmission, detection: Detection) -> None:
        self.p = p
        self.admission = admission
        self.detection = detection

    def deposit(self, cmd: Deposit, out: list) -> None:
        if cmd.amount <= 0:
            return self.p.refuse(cmd, Refused(RejectReason.INVALID_AMOUNT,
                                             f"a deposit must be positive, got {self.p.money(cmd.amount)}"), out)
        account = self.p.accounts.get(cmd.account)
        if account is not None and account.balance + cmd.amount > MAX_BALANCE:
            return self.p.refuse(cmd, Refused(RejectReason.INVALID_AMOUNT,
                                             f"the balance would exceed {self.p.money(MAX_BALANCE)}, the most an "
                                             "account can hold"), out)
        if account is None:
            account = self.p.accounts[cmd.account] = Account(cmd.account)
        account.balance += cmd.amount
        account.income.append(IncomeItem("", IncomeKind.TRANSFER, cmd.amount, 0, cmd.ts))
        self.p.deposits += cmd.amount
        self.p.accept(cmd, out)
        self.detection.after_change(account, cmd.ts, out)
        return None

    def withdraw(self, cmd: Withdraw, out: list) -> None:
        try:
            account = self.p.get_account(cmd.account)
            if cmd.amount <= 0:
                raise Refused(RejectReason.INVALID_AMOUNT,
                              f"a withdrawal must be positive, got {self.p.money(cmd.amount)}")
            allowed = withdrawable(account, self.p.marks)
            if cmd.amount > allowed:
                raise Refused(RejectReason.WITHDRAW_ABOVE_WITHDRAWABLE,
                              f"asked {self.p.money(cmd.amount)}, withdrawable {self.p.money(allowed)}")
        except Refused as refused:
            return self.p.refuse(cmd, refused, out)
        account.balance -= cmd.amount
        account.income.append(IncomeItem("", IncomeKind.TRANSFER, -cmd.amount, 0, cmd.ts))
        self.p.withdrawals += cmd.amount
        self.p.accept(cmd, out)
        self.detection.after_change(account, cmd.ts, out)
        return None

    def set_mode(self, cmd: SetMarginMode, out: list) -> None:
        try:
            account = self.p.get_account(cmd.account)
            market = self.p.get_market(cmd.market)
            position = self.p.position(account, market)
            if position.mode is cmd.mode:
                raise Refused(RejectReason.MARGIN_MODE_UNCHANGED, f"{market.symbol} is already {cmd.mode.name}")
            if position.size:
                raise Refused(RejectReason.MODE_CHANGE_WITH_POSITION,
                              f"close the {market.symbol} position ({market.format_size(position.size)}) first")
            if any(order.market == market.symbol for order in account.orders.values()):
                raise Refused(RejectReason.MODE_CHANGE_WITH_OPEN_ORDERS,
                              f"cancel the open {market.symbol} orders first")
        except Refused as refused:
            return self.p.refuse(cmd, refused, out)
        position.mode = cmd.mode
        self.p.accept(cmd, out)
        self.detection.after_change(account, cmd.ts, out)
        return None

    def set_leverage(self, cmd: SetLeverage, out: list) -> None:
        try:
            account = self.p.get_account(cmd.account)
            market = self.p.get_market(cmd.market)
            if not 1 <= cmd.leverage <= market.max_leverage:
                raise Refused(RejectReason.LEVERAGE_OUT_OF_RANGE,
                              f"leverage must be 1 to {market.max_leverage} on {market.symbol}, got {cmd.leverage}")
            position = self.p.position(account, market)
            if cmd.leverage == position.leverage:  # unchanged: a no-op, as on Binance
                self.p.accept(cmd, out)
                return None
            old = position.leverage
            position.leverage = cmd.leverage
            problem = self.leverage_problem(account, position)
            if problem:
                position.leverage = old
                raise Refused(RejectReason.LEVERAGE_BELOW_POSITION_MARGIN, problem)
        except Refused as refused:
            return self.p.refuse(cmd, refused, out)
        # open orders of this market reserve at the new leverage
        for order in account.orders.values():
            if order.market == market.symbol and not order.reduce_only and not order.conditional:
                new = self.admission.reservation(position, Side(order.side), order.price, order.remaining)
                account.reserved += new - order.reserved
                order.reserved = new
        self.p.accept(cmd, out)
        self.detection.after_change(account, cmd.ts, out)
        return None

    def leverage_problem(self, account: Account, position: Position) -> str:
        """Why the position would be under its initial margin at its (new) leverage."""
        if not position.size:
            return ""
        if position.mode is ISOLATED:
            equity, im, _, _ = isolated_totals(position, self.p.marks)
            if equity < im:
                return (f"isolated equity {self.p.money(equity)} is below the initial margin "
                        f"{self.p.money(im)} at {position.leverage}x")
            return ""
        equity, im, _, _ = cross_totals(account, self.p.marks)
        if equity - im - account.reserved < 0:
            return (f"cross equity {self.p.money(equity)} would be below the initial margin "
                    f"{self.p.money(im)} plus open-order reservations {self.p.money(account.reserved)}")
        return ""

    def adjust_margin(self, cmd: AdjustIsolatedMargin, out: list) -> None:
        try:
            account = self.p.get_account(cmd.account)
            market = self.p.get_market(cmd.market)
            position = account.position(market.symbol)
            if position is None or position.mode is not ISOLATED:
                raise Refused(RejectReason.NOT_ISOLATED, f"{market.symbol} is not in isolated mode")
            if not position.size:
                raise Refused(RejectReason.NO_POSITION, f"there is no {market.symbol} position to margin")
            if cmd.amount == 0:
                raise Refused(RejectReason.INVALID_AMOUNT, "the amount must not be 0")
            if position.bucket() in account.liquidating:
                raise Refused(RejectReason.ACCOUNT_IN_LIQUIDATION, f"the {market.symbol} position is being liquidated")
            if cmd.amount > 0:
                available = available_to_trade(account, self.p.marks)
                if cmd.amount > available:
                    raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                  f"adding {self.p.money(cmd.amount)} needs that much available; "
                                  f"available {self.p.money(available)}")
            else:
                if market.strict_isolated:
                    raise Refused(RejectReason.STRICT_ISOLATED, f"{market.symbol} does not allow removing margin")
                equity, im, _, notional = isolated_totals(position, self.p.marks)
                floor = max(im, ceil_div(notional, 10))
                if equity + cmd.amount < floor:
                    raise Refused(RejectReason.REMOVE_MARGIN_ABOVE_ALLOWED,
                                  f"at most {self.p.money(max(0, equity - floor))} can be removed "
                                  f"(equity {self.p.money(equity)} must stay ≥ {self.p.money(floor)})")
        except Refused as refused:
            return self.p.refuse(cmd, refused, out)
        position.margin += cmd.amount
        account.balance -= cmd.amount
        self.p.accept(cmd, out)
        self.detection.after_change(account, cmd.ts, out)
        return None
