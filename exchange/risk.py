"""The risk engine of one partition of accounts: margin, positions, liquidation detection.

``RiskEngine.apply(event)`` takes one ``risk.in`` message (a client command, an order
outcome or fill from matching, a mark price, funding) and returns what it caused: orders
and cancels for matching, acks and rejections, margin snapshots, liquidation triggers.
Pure and deterministic: no clock, no I/O. Semantics are MARGIN.md's; the formulas live in
``exchange/accounts.py``.

Answers: a ``PlaceOrder`` is answered by a ``NewOrder`` for matching or an
``OrderRejected``; a ``CancelOrder``/``AmendOrder`` by the same command forwarded to
matching or a ``CommandRejected``; every other command by ``CommandAccepted`` or
``CommandRejected``. Each refusal names a ``RejectReason`` and says, in ``detail``, what
was expected and what was seen.

Margin for orders: an order reserves ``ceil(open notional / L) + ceil(open notional ·
taker fee)`` of the cross bucket's available margin when accepted, where the open
notional is the part of the order that would grow the position (a part that reduces it
needs nothing), valued at the limit price, or for a market order at the mark moved by the
price band against the trader. Reduce-only orders reserve nothing. The reservation is
released pro rata as the order fills and entirely when it ends.

Conditional orders (docs/matching.md, "Conditional orders") reserve nothing while they
wait: risk checks at placement what it can then (the account, the market, the size, a
position to reduce for reduce-only and close-position) and forwards them to matching,
which holds them. When matching reports one triggered (``OrderTriggered``), risk checks
its margin as for a new order, at the prices of then, and sends it back as a plain
``NewOrder`` with the same id, or refuses it (``OrderRejected`` with the reason).

Fees: charged on fill notional (taker or maker rate; a negative maker rate is a rebate,
rounded down). Opening fees come out of the cross balance ``B``, for isolated positions
too (the order's reservation covered them); closing fees come out of what the close
returns, as MARGIN.md says for isolated reductions.

Loss bound: an isolated position that closes with less than nothing left, or a cross
bucket left with no position and a negative balance, is bankrupt: the deficit is charged
to the insurance fund account (``bad_debt`` counts it) and the trader's bucket is set to 0.

Liquidation detection: a mark update checks only the buckets that
``exchange.liquidation_index`` says it may have put under maintenance (price keys for
isolated and one-position cross buckets, movement budgets for multi-market cross
buckets). Any change to an account (fill, funding, margin, settings) re-keys it.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any, Final

from exchange.accounts import (
    CROSS,
    ISOLATED,
    PPB,
    PPM,
    Account,
    Marks,
    OpenOrder,
    Position,
    available_to_trade,
    bucket_states,
    ceil_div,
    cross_totals,
    index_key,
    isolated_totals,
    position_state,
    position_thresholds,
    withdrawable,
)
from exchange.errors import Refused, UnknownMarket, ValueTooLarge
from exchange.liquidation_index import LiquidationIndex
from exchange.markets import Market, protection_price, trading_fee
from schemas.enums import (
    Condition,
    IncomeKind,
    LiquidationStage,
    Liquidity,
    MarginMode,
    OrderType,
    RejectReason,
    Side,
)
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    AdjustIsolatedMargin,
    AdlCandidate,
    AmendOrder,
    CancelOrder,
    CollateralTransfer,
    CommandAccepted,
    CommandRejected,
    Deposit,
    Fill,
    Funding,
    IncomeItem,
    LiquidationOutcome,
    LiquidationTrigger,
    MarginSnapshot,
    MarkPrice,
    Message,
    NewOrder,
    OrderAccepted,
    OrderAmended,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    Withdraw,
)
from schemas.state import AccountRow, BudgetRow, OpenOrderRow, PositionRow, RiskState

# what a client waits for an answer to, and then for a snapshot that reflects it
ANSWERED = frozenset({Deposit, Withdraw, SetMarginMode, SetLeverage, AdjustIsolatedMargin, OrderAccepted,
                      OrderRejected, OrderAmended, OrderClosed, OrderTriggered, Fill})
MATCHING: Final = "match."

ENDED = (LiquidationStage.RECOVERED, LiquidationStage.FULL, LiquidationStage.BACKSTOP, LiquidationStage.ADL)


MAX_BALANCE = 2**62  # micro units: what an account may hold, so its figures stay within int64
MAX_NOTIONAL = 2**61  # micro units: what a partition's positions in one market may be worth


class RiskEngine:
    """Accounts of one risk partition and everything that changes them."""

    def __init__(self, markets: dict[str, Market], producer: str = "risk.0", partition: int = 0,
                 insurance_account: str = "insurance", liquidation_fee_ppm: int = 0,
                 defer_snapshots: bool = False, holds_fund: bool = True, adl_ranking: str = "hyperliquid"):
        if not 0 <= partition < LIQUIDATION_ORDER_BIT:
            raise ValueError(f"partition must be 0 to {LIQUIDATION_ORDER_BIT - 1}, got {partition}")
        if adl_ranking not in ("hyperliquid", "binance"):
            raise ValueError(f"adl_ranking is hyperliquid or binance, got {adl_ranking!r}")
        self.adl_ranking = adl_ranking
        self.markets = markets
        self.producer = producer
        self.partition = partition
        self.insurance_account = insurance_account
        self.accounts: dict[str, Account] = {}
        self.marks = Marks()
        self.seq = 0
        self.order_counter = 0
        # money counters for the conservation check
        self.deposits = 0
        self.withdrawals = 0
        self.fees = 0
        self.funding_net = 0  # rounding of funding kept by the exchange (payers round up)
        self.bad_debt = 0
        self.buckets_checked = 0  # accounts a mark update had to look at (benchmarks read it)
        self.liquidation_fees = 0  # paid to the insurance fund (already in its balance)
        self.liquidation_fee_ppm = liquidation_fee_ppm
        self._in_liquidation: set[str] = set()  # accounts with a bucket in liquidation
        # With deferred snapshots (the service), a changed account is only marked, and
        # ``flush(offset)`` reports each once per batch, numbered by the input offset.
        self.defer_snapshots = defer_snapshots
        # whether the insurance fund's account belongs to this partition (it always does
        # in-process); only then can bucket states say what the fund holds
        self.holds_fund = holds_fund
        self._changed: set[str] = set()
        # the newest sequence number applied from each matching producer (``_answered``)
        self.applied: dict[str, int] = {}
        self.index: dict[str, int] = {}  # each market's last index price (from the marks)
        self._adl_ranked: set[tuple[str, str]] = set()  # buckets whose ADL candidates were sent
        self._pending: list[CollateralTransfer] = []  # fund movements for the fund's partition
        self._fund_changed = False
        self._watch = LiquidationIndex(markets)
        self._holders: dict[str, set[str]] = {symbol: set() for symbol in markets}
        self._exposure: dict[str, int] = {symbol: 0 for symbol in markets}  # Σ |size| of this partition's positions
        self._handlers: dict[type, Callable[[Any, list], None]] = {
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            PlaceOrder: self._place,
            CancelOrder: self._cancel,
            AmendOrder: self._amend,
            SetMarginMode: self._set_mode,
            SetLeverage: self._set_leverage,
            AdjustIsolatedMargin: self._adjust_margin,
            OrderAccepted: self._order_accepted,
            OrderRejected: self._order_ended,
            OrderAmended: self._order_amended,
            OrderClosed: self._order_ended,
            OrderTriggered: self._triggered,
            CommandRejected: self._matching_refused,
            Fill: self._fill,
            MarkPrice: self._mark,
            Funding: self._funding,
            LiquidationOutcome: self._liquidation_outcome,
            CollateralTransfer: self._collateral,
        }

    # ------------------------------------------------------------------ entry point

    def apply(self, event: Any) -> list[Message]:
        handler = self._handlers.get(type(event))
        if handler is None:
            raise TypeError(f"the risk engine takes {', '.join(t.__name__ for t in self._handlers)}; "
                            f"got {type(event).__name__}")
        out: list[Message] = []
        handler(event, out)
        if self.defer_snapshots and type(event) in ANSWERED:
            self._answered(event)
        if self._pending:
            out.extend(self._pending)
            self._pending.clear()
        if self._fund_changed:  # the fund moved without a change of its own: report it too
            self._fund_changed = False
            if self.defer_snapshots:
                self._changed.add(self.insurance_account)
            else:
                out.append(self._snapshot(self._fund(), getattr(event, "ts", 0)))
        return out

    def account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    def _answered(self, event: Any) -> None:
        """Read-your-writes (docs/gateway.md, "Consistency"): the answers a client waits for
        (matching's order outcomes and fills, risk's own acceptances) are followed by a
        snapshot of each account they concern, stamped with the newest sequence number
        applied from their producer, so a client can tell the snapshot that reflects them."""
        if type(event) is Fill:
            self.applied[event.producer] = event.seq
            for account_id in (event.taker_account, event.maker_account):
                if account_id in self.accounts:
                    self._changed.add(account_id)
        elif event.producer.startswith(MATCHING):
            self.applied[event.producer] = event.seq
            if event.account in self.accounts:
                self._changed.add(event.account)
        elif event.account in self.accounts:  # a client's command: risk's own answer is what is waited for
            self._changed.add(event.account)

    # ------------------------------------------------------------------ snapshots

    def export(self) -> RiskState:
        """Everything this engine folded, as data (``schemas.state``); ``load`` it into a
        new engine of the same configuration and it goes on exactly as this one would."""
        accounts = [AccountRow(a.account_id, a.balance, a.fees_paid, a.funding_paid, list(a.income),
                               [PositionRow(p.market.symbol, p.mode, p.leverage, p.size, p.entry_value, p.margin)
                                for p in a.positions.values()],
                               [OpenOrderRow(o.order_id, o.market, o.side, o.price, o.remaining, o.reserved,
                                             o.reduce_only, o.client_order_id, o.conditional)
                                for o in a.orders.values()],
                               a.reserved, sorted(a.liquidating))
                    for a in self.accounts.values()]
        travel, budgets = self._watch.export()
        return RiskState(self.producer, self.seq, self.order_counter, self.deposits, self.withdrawals, self.fees,
                         self.funding_net, self.bad_debt, self.liquidation_fees, accounts, dict(self.marks.marks),
                         dict(self.marks.last), sorted(self._in_liquidation), sorted(self._changed),
                         sorted(self._adl_ranked), list(self._pending), self._fund_changed, travel,
                         [BudgetRow(account, thresholds) for account, thresholds in budgets], dict(self.applied),
                         dict(self.index))

    def load(self, state: RiskState) -> None:
        """Take over ``state`` (from ``export``); this engine must be new."""
        if self.accounts or self.seq:
            raise ValueError("load() needs a new engine")
        self.producer = state.producer
        self.seq, self.order_counter = state.seq, state.order_counter
        self.deposits, self.withdrawals, self.fees = state.deposits, state.withdrawals, state.fees
        self.funding_net, self.bad_debt, self.liquidation_fees = state.funding_net, state.bad_debt, \
            state.liquidation_fees
        self.marks.marks.update(state.marks)
        self.marks.last.update(state.last_prices)
        for row in state.accounts:
            account = self.accounts[row.account_id] = Account(row.account_id)
            account.balance, account.fees_paid, account.funding_paid = row.balance, row.fees_paid, row.funding_paid
            account.income = list(row.income)
            account.reserved = row.reserved
            account.liquidating = set(row.liquidating)
            for p in row.positions:
                position = account.positions[p.market] = Position(self._listed(p.market), p.mode, p.leverage)
                position.size, position.entry_value, position.margin = p.size, p.entry_value, p.margin
                self._exposure[p.market] += abs(p.size)
                if position.size:
                    self._holders[p.market].add(account.account_id)
            for o in row.orders:
                account.orders[o.order_id] = OpenOrder(o.order_id, o.market, o.side, o.price, o.remaining,
                                                       o.reserved, o.reduce_only, o.client_order_id, o.conditional)
        self._in_liquidation = set(state.in_liquidation)
        self._changed = set(state.changed)
        self._adl_ranked = {(bucket[0], bucket[1]) for bucket in state.adl_ranked}
        self._pending = list(state.pending)
        self._fund_changed = state.fund_changed
        self.applied = dict(state.applied)
        self.index = dict(state.index)
        # price keys are a function of each account's state; budgets depend on when they were set
        for account in self.accounts.values():
            if any(position.size for position in account.positions.values()):
                totals = cross_totals(account, self.marks)
                for position in account.positions.values():
                    self._reindex(account, position, totals)
        self._watch.load(state.travel, [(row.account, row.thresholds) for row in state.budgets])

    def snapshot(self, account_id: str, ts: int = 0) -> MarginSnapshot:
        """The account's margin snapshot now (also emitted after every change)."""
        account = self.accounts[account_id]
        return self._snapshot(account, ts, stamp=False, report_income=False)

    # ---------------------------------------------------------------------- helpers

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _accept(self, cmd: Any, out: list) -> None:
        out.append(CommandAccepted(self.producer, self._next(), cmd.account, cmd.producer, cmd.seq,
                                   type(cmd).__name__, cmd.ts))

    def _refuse(self, cmd: Any, refused: Refused, out: list, order_id: int = 0) -> None:
        out.append(CommandRejected(self.producer, self._next(), cmd.account, cmd.producer, cmd.seq,
                                   type(cmd).__name__, refused.reason, refused.detail, order_id, cmd.ts))

    def _snapshot(self, account: Account, ts: int, stamp: bool = True, report_income: bool = True) -> MarginSnapshot:
        """The account's snapshot; an emitted one (``report_income``) carries, and clears,
        the wallet movements since the previous."""
        marks = self.marks
        totals = cross_totals(account, marks)
        positions = [position_state(account, p, marks, totals) for p in account.positions.values() if p.size]
        income = account.income
        if report_income and income:
            account.income = []
        else:
            income = []
        return MarginSnapshot(self.producer, self._next() if stamp else 0, account.account_id, account.balance,
                              available_to_trade(account, marks, totals), withdrawable(account, marks, totals),
                              bucket_states(account, marks, totals), positions, ts, income)

    def _get_account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise Refused(RejectReason.UNKNOWN_ACCOUNT, f"account {account_id!r} has never deposited")
        return account

    def _get_market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise Refused(RejectReason.UNKNOWN_MARKET,
                          f"unknown market {symbol!r}; markets: {', '.join(self.markets)}")
        return market

    def _position(self, account: Account, market: Market) -> Position:
        position = account.positions.get(market.symbol)
        if position is None:
            position = account.positions[market.symbol] = Position(market)
        return position

    def _money(self, amount: int) -> str:
        return f"{amount / 1_000_000:,.6f}"

    def _bucket(self, position: Position) -> str:
        return position.market.symbol if position.mode is ISOLATED else ""

    # -------------------------------------------------------------- money commands

    def _deposit(self, cmd: Deposit, out: list) -> None:
        if cmd.amount <= 0:
            return self._refuse(cmd, Refused(RejectReason.INVALID_AMOUNT,
                                             f"a deposit must be positive, got {self._money(cmd.amount)}"), out)
        account = self.accounts.get(cmd.account)
        if account is not None and account.balance + cmd.amount > MAX_BALANCE:
            return self._refuse(cmd, Refused(RejectReason.INVALID_AMOUNT,
                                             f"the balance would exceed {self._money(MAX_BALANCE)}, the most an "
                                             "account can hold"), out)
        if account is None:
            account = self.accounts[cmd.account] = Account(cmd.account)
        account.balance += cmd.amount
        account.income.append(IncomeItem("", IncomeKind.TRANSFER, cmd.amount, 0, cmd.ts))
        self.deposits += cmd.amount
        self._accept(cmd, out)
        self._after_change(account, cmd.ts, out)
        return None

    def _withdraw(self, cmd: Withdraw, out: list) -> None:
        try:
            account = self._get_account(cmd.account)
            if cmd.amount <= 0:
                raise Refused(RejectReason.INVALID_AMOUNT, f"a withdrawal must be positive, got {self._money(cmd.amount)}")
            allowed = withdrawable(account, self.marks)
            if cmd.amount > allowed:
                raise Refused(RejectReason.WITHDRAW_ABOVE_WITHDRAWABLE,
                              f"asked {self._money(cmd.amount)}, withdrawable {self._money(allowed)}")
        except Refused as refused:
            return self._refuse(cmd, refused, out)
        account.balance -= cmd.amount
        account.income.append(IncomeItem("", IncomeKind.TRANSFER, -cmd.amount, 0, cmd.ts))
        self.withdrawals += cmd.amount
        self._accept(cmd, out)
        self._after_change(account, cmd.ts, out)
        return None

    # ------------------------------------------------------------------- settings

    def _set_mode(self, cmd: SetMarginMode, out: list) -> None:
        try:
            account = self._get_account(cmd.account)
            market = self._get_market(cmd.market)
            position = self._position(account, market)
            if position.mode is cmd.mode:
                raise Refused(RejectReason.MARGIN_MODE_UNCHANGED, f"{market.symbol} is already {cmd.mode.name}")
            if position.size:
                raise Refused(RejectReason.MODE_CHANGE_WITH_POSITION,
                              f"close the {market.symbol} position ({market.format_size(position.size)}) first")
            if any(order.market == market.symbol for order in account.orders.values()):
                raise Refused(RejectReason.MODE_CHANGE_WITH_OPEN_ORDERS,
                              f"cancel the open {market.symbol} orders first")
        except Refused as refused:
            return self._refuse(cmd, refused, out)
        position.mode = cmd.mode
        self._accept(cmd, out)
        self._after_change(account, cmd.ts, out)
        return None

    def _set_leverage(self, cmd: SetLeverage, out: list) -> None:
        try:
            account = self._get_account(cmd.account)
            market = self._get_market(cmd.market)
            if not 1 <= cmd.leverage <= market.max_leverage:
                raise Refused(RejectReason.LEVERAGE_OUT_OF_RANGE,
                              f"leverage must be 1 to {market.max_leverage} on {market.symbol}, got {cmd.leverage}")
            position = self._position(account, market)
            if cmd.leverage == position.leverage:  # unchanged: a no-op, as on Binance
                self._accept(cmd, out)
                return None
            old = position.leverage
            position.leverage = cmd.leverage
            problem = self._leverage_problem(account, position)
            if problem:
                position.leverage = old
                raise Refused(RejectReason.LEVERAGE_BELOW_POSITION_MARGIN, problem)
        except Refused as refused:
            return self._refuse(cmd, refused, out)
        # open orders of this market reserve at the new leverage
        for order in account.orders.values():
            if order.market == market.symbol and not order.reduce_only and not order.conditional:
                new = self._reservation(position, Side(order.side), order.price, order.remaining)
                account.reserved += new - order.reserved
                order.reserved = new
        self._accept(cmd, out)
        self._after_change(account, cmd.ts, out)
        return None

    def _leverage_problem(self, account: Account, position: Position) -> str:
        """Why the position would be under its initial margin at its (new) leverage."""
        if not position.size:
            return ""
        if position.mode is ISOLATED:
            equity, im, _, _ = isolated_totals(position, self.marks)
            if equity < im:
                return (f"isolated equity {self._money(equity)} is below the initial margin "
                        f"{self._money(im)} at {position.leverage}x")
            return ""
        equity, im, _, _ = cross_totals(account, self.marks)
        if equity - im - account.reserved < 0:
            return (f"cross equity {self._money(equity)} would be below the initial margin "
                    f"{self._money(im)} plus open-order reservations {self._money(account.reserved)}")
        return ""

    def _adjust_margin(self, cmd: AdjustIsolatedMargin, out: list) -> None:
        try:
            account = self._get_account(cmd.account)
            market = self._get_market(cmd.market)
            position = account.positions.get(market.symbol)
            if position is None or position.mode is not ISOLATED:
                raise Refused(RejectReason.NOT_ISOLATED, f"{market.symbol} is not in isolated mode")
            if not position.size:
                raise Refused(RejectReason.NO_POSITION, f"there is no {market.symbol} position to margin")
            if cmd.amount == 0:
                raise Refused(RejectReason.INVALID_AMOUNT, "the amount must not be 0")
            if market.symbol in account.liquidating:
                raise Refused(RejectReason.ACCOUNT_IN_LIQUIDATION, f"the {market.symbol} position is being liquidated")
            if cmd.amount > 0:
                available = available_to_trade(account, self.marks)
                if cmd.amount > available:
                    raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                  f"adding {self._money(cmd.amount)} needs that much available; "
                                  f"available {self._money(available)}")
            else:
                if market.strict_isolated:
                    raise Refused(RejectReason.STRICT_ISOLATED, f"{market.symbol} does not allow removing margin")
                equity, im, _, notional = isolated_totals(position, self.marks)
                floor = max(im, ceil_div(notional, 10))
                if equity + cmd.amount < floor:
                    raise Refused(RejectReason.REMOVE_MARGIN_ABOVE_ALLOWED,
                                  f"at most {self._money(max(0, equity - floor))} can be removed "
                                  f"(equity {self._money(equity)} must stay ≥ {self._money(floor)})")
        except Refused as refused:
            return self._refuse(cmd, refused, out)
        position.margin += cmd.amount
        account.balance -= cmd.amount
        self._accept(cmd, out)
        self._after_change(account, cmd.ts, out)
        return None

    # ---------------------------------------------------------------------- orders

    def _reference_price(self, market: Market) -> int:
        return self.marks.marks.get(market.symbol) or self.marks.last.get(market.symbol, 0)

    def _reservation(self, position: Position, side: Side, price: int, size: int) -> int:
        """Margin an order must reserve: IM plus taker fee on the part that grows the position."""
        reducing = min(size, abs(position.size)) if position.size and position.sign != side else 0
        opening = size - reducing
        if not opening:
            return 0
        market = position.market
        notional = price * opening * market.value_per_tick_lot
        after = (abs(position.size) - reducing + opening) * price * market.value_per_tick_lot
        leverage = position.effective_leverage(after)
        return ceil_div(notional, leverage) + ceil_div(notional * market.taker_fee_ppm, PPM)

    def _protection(self, market: Market, side: Side) -> int:
        """The worst price a market order may trade at, as matching computes it
        (``exchange.markets.protection_price``)."""
        reference = self._reference_price(market)
        if not reference:
            raise Refused(RejectReason.NO_LIQUIDITY, f"no mark price for {market.symbol} yet")
        return protection_price(reference, self.index.get(market.symbol, 0), market.price_band_ppm,
                                side is Side.BUY)

    def _order_price(self, market: Market, cmd: PlaceOrder) -> int:
        if cmd.order_type is OrderType.MARKET:
            if cmd.price:
                raise Refused(RejectReason.INVALID_PRICE, "a market order takes no price")
            return self._protection(market, cmd.side)
        if cmd.price <= 0:
            raise Refused(RejectReason.INVALID_PRICE, f"price must be positive, got {cmd.price}")
        return cmd.price

    def _refuse_place(self, cmd: PlaceOrder, refused: Refused, out: list) -> None:
        out.append(OrderRejected(self.producer, self._next(), cmd.market, cmd.account, 0,
                                 cmd.client_order_id, refused.reason, refused.detail, cmd.ts))

    def _new_order_id(self) -> int:
        self.order_counter += 1
        return (self.order_counter << 16) | self.partition

    def _not_liquidating(self, account: Account, position: Position) -> None:
        if self._bucket(position) in account.liquidating:
            raise Refused(RejectReason.ACCOUNT_IN_LIQUIDATION, f"the {position.mode.name.lower()} bucket holding "
                                                               f"{position.market.symbol} is being liquidated")

    def _place(self, cmd: PlaceOrder, out: list) -> None:
        if cmd.condition is not Condition.NONE:
            return self._place_conditional(cmd, out)
        try:
            account = self._get_account(cmd.account)
            market = self._get_market(cmd.market)
            if cmd.size <= 0:
                raise Refused(RejectReason.INVALID_SIZE, f"size must be positive, got {cmd.size}")
            price = self._order_price(market, cmd)
            position = self._position(account, market)
            self._not_liquidating(account, position)
            if cmd.reduce_only:
                if not position.size or position.sign == cmd.side:
                    raise Refused(RejectReason.REDUCE_ONLY_WOULD_INCREASE,
                                  f"position is {market.format_size(position.size)}; a reduce-only "
                                  f"{cmd.side.name} cannot reduce it")
                reserve = 0
            else:
                reserve = self._reservation(position, cmd.side, price, cmd.size)
                if reserve:
                    available = available_to_trade(account, self.marks)
                    if reserve > available:
                        raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                      f"order needs {self._money(reserve)} of margin, "
                                      f"available {self._money(available)}")
        except Refused as refused:
            return self._refuse_place(cmd, refused, out)
        order_id = self._new_order_id()
        account.orders[order_id] = OpenOrder(order_id, market.symbol, int(cmd.side), price, cmd.size,
                                             reserve, cmd.reduce_only, cmd.client_order_id)
        account.reserved += reserve
        out.append(NewOrder(self.producer, self._next(), cmd.account, market.symbol, order_id,
                            cmd.client_order_id, cmd.side, cmd.order_type, cmd.tif, cmd.price, cmd.size,
                            cmd.reduce_only, cmd.stp, cmd.ts, self.marks.marks.get(market.symbol, 0),
                            index_price=self.index.get(market.symbol, 0)))
        return None

    def _place_conditional(self, cmd: PlaceOrder, out: list) -> None:
        """Check what can be checked now and forward it; its margin is checked when it fires."""
        try:
            account = self._get_account(cmd.account)
            market = self._get_market(cmd.market)
            if cmd.close_position:
                if cmd.size:
                    raise Refused(RejectReason.INVALID_SIZE, "a close-position order takes no size: it closes "
                                                             "the whole position when it fires")
            elif cmd.size <= 0:
                raise Refused(RejectReason.INVALID_SIZE, f"size must be positive, got {cmd.size}")
            if cmd.order_type is OrderType.MARKET and cmd.price:
                raise Refused(RejectReason.INVALID_PRICE, "a stop-market order takes no price")
            position = self._position(account, market)
            self._not_liquidating(account, position)
            if (cmd.reduce_only or cmd.close_position) and (not position.size or position.sign == cmd.side):
                raise Refused(RejectReason.REDUCE_ONLY_WOULD_INCREASE,
                              f"position is {market.format_size(position.size)}; a "
                              f"{'close-position' if cmd.close_position else 'reduce-only'} {cmd.side.name} "
                              f"cannot reduce it")
        except Refused as refused:
            return self._refuse_place(cmd, refused, out)
        order_id = self._new_order_id()
        reduce_only = cmd.reduce_only or cmd.close_position
        account.orders[order_id] = OpenOrder(order_id, market.symbol, int(cmd.side), cmd.price, cmd.size, 0,
                                             reduce_only, cmd.client_order_id, conditional=True)
        out.append(NewOrder(self.producer, self._next(), cmd.account, market.symbol, order_id,
                            cmd.client_order_id, cmd.side, cmd.order_type, cmd.tif, cmd.price, cmd.size,
                            reduce_only, cmd.stp, cmd.ts, self.marks.marks.get(market.symbol, 0), False,
                            cmd.condition, cmd.trigger_price, cmd.trigger_source, cmd.close_position,
                            cmd.activation_price, cmd.callback_ppm, self.index.get(market.symbol, 0)))
        return None

    def _triggered(self, event: OrderTriggered, out: list) -> None:
        """A conditional order fired: check its margin now, and send it to the book or refuse it."""
        account = self.accounts.get(event.account)
        order = account.orders.get(event.order_id) if account is not None else None
        if account is None or order is None:
            return None  # another partition's account
        market = self._listed(event.market)
        position = self._position(account, market)
        try:
            self._not_liquidating(account, position)
            price = self._protection(market, event.side) if event.order_type is OrderType.MARKET else event.price
            reserve = 0 if event.reduce_only else self._reservation(position, event.side, price, event.size)
            if reserve:
                available = available_to_trade(account, self.marks)
                if reserve > available:
                    raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                  f"the triggered order needs {self._money(reserve)} of margin, "
                                  f"available {self._money(available)}")
        except Refused as refused:
            self._release(account, event.order_id)
            out.append(OrderRejected(self.producer, self._next(), event.market, event.account, event.order_id,
                                     event.client_order_id, refused.reason, refused.detail, event.ts))
            return None
        order.conditional = False
        order.price, order.remaining, order.reserved = price, event.size, reserve
        account.reserved += reserve
        out.append(NewOrder(self.producer, self._next(), event.account, market.symbol, event.order_id,
                            event.client_order_id, event.side, event.order_type, event.tif, event.price,
                            event.size, event.reduce_only, event.stp, event.ts,
                            self.marks.marks.get(market.symbol, 0), index_price=self.index.get(market.symbol, 0)))
        return None

    def _cancel(self, cmd: CancelOrder, out: list) -> None:
        try:
            account = self._get_account(cmd.account)
            order = account.orders.get(cmd.order_id)
            if order is None or order.market != cmd.market:
                raise Refused(RejectReason.UNKNOWN_ORDER, f"order {cmd.order_id} is not open in {cmd.market}")
        except Refused as refused:
            return self._refuse(cmd, refused, out, cmd.order_id)
        out.append(CancelOrder(self.producer, self._next(), cmd.account, cmd.market, cmd.order_id, cmd.ts))
        return None

    def _amend(self, cmd: AmendOrder, out: list) -> None:
        try:
            account = self._get_account(cmd.account)
            order = account.orders.get(cmd.order_id)
            if order is None or order.market != cmd.market:
                raise Refused(RejectReason.UNKNOWN_ORDER, f"order {cmd.order_id} is not open in {cmd.market}")
            if order.conditional:
                raise Refused(RejectReason.NOT_AMENDABLE, "a conditional order is cancelled and placed again, "
                                                          "not amended")
            if cmd.price <= 0:
                raise Refused(RejectReason.INVALID_PRICE, f"price must be positive, got {cmd.price}")
            market = self.markets[order.market]
            position = self._position(account, market)
            new = 0
            if not order.reduce_only:
                new = self._reservation(position, Side(order.side), cmd.price, max(cmd.size, 0))
                extra = new - order.reserved
                if extra > 0:
                    available = available_to_trade(account, self.marks)
                    if extra > available:
                        raise Refused(RejectReason.INSUFFICIENT_MARGIN,
                                      f"amend needs {self._money(extra)} more margin, available {self._money(available)}")
        except Refused as refused:
            return self._refuse(cmd, refused, out, cmd.order_id)
        if new > order.reserved:  # hold the larger until matching confirms
            account.reserved += new - order.reserved
            order.reserved = new
        out.append(AmendOrder(self.producer, self._next(), cmd.account, cmd.market, cmd.order_id,
                              cmd.price, cmd.size, cmd.ts, self.marks.marks.get(cmd.market, 0), cmd.requeue,
                              self.index.get(cmd.market, 0)))
        return None

    # ------------------------------------------------------------- order outcomes

    def _release(self, account: Account, order_id: int) -> OpenOrder | None:
        order = account.orders.pop(order_id, None)
        if order is not None:
            account.reserved -= order.reserved
        return order

    def _order_accepted(self, event: OrderAccepted, out: list) -> None:
        account = self.accounts.get(event.account)
        order = account.orders.get(event.order_id) if account else None
        if order is not None and order.price != event.price:
            order.price = event.price  # a market order's protection price
        return None

    def _order_ended(self, event: OrderRejected | OrderClosed, out: list) -> None:
        """Matching refused or ended an order: release its reservation."""
        if event.order_id & LIQUIDATION_ORDER_BIT:
            out.append(event)  # forwarded to the liquidation engine
            return None
        account = self.accounts.get(event.account)
        if account is not None:
            self._release(account, event.order_id)
        return None

    def _order_amended(self, event: OrderAmended, out: list) -> None:
        account = self.accounts.get(event.account)
        order = account.orders.get(event.order_id) if account else None
        if account is None or order is None:
            return None
        order.price, order.remaining = event.price, event.remaining
        if not order.reduce_only:
            position = self._position(account, self.markets[order.market])
            new = self._reservation(position, Side(order.side), order.price, order.remaining)
            account.reserved += new - order.reserved
            order.reserved = new
        return None

    def _matching_refused(self, event: CommandRejected, out: list) -> None:
        """Matching refused a cancel or amend; an amend's larger reservation stays until
        the order ends (conservative)."""
        return None

    # ----------------------------------------------------------------------- fills

    def _listed(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise UnknownMarket(f"no market {symbol!r}; markets: {', '.join(self.markets)}")
        return market

    def _guard(self, market: Market, price: int, more: int = 0) -> None:
        """Refuse (``ValueTooLarge``, before any change) a price at which this partition's
        positions in ``market`` (with ``more`` lots added) would be worth more than the
        figures the contract carries can hold."""
        exposure = self._exposure[market.symbol] + more
        if exposure * price * market.value_per_tick_lot > MAX_NOTIONAL:
            raise ValueTooLarge(f"{market.symbol} at {market.format_price(price)}: {market.format_size(exposure)} "
                                f"held would be worth more than {self._money(MAX_NOTIONAL)}")

    def _fill(self, fill: Fill, out: list) -> None:
        market = self._listed(fill.market)
        self._guard(market, max(fill.price, self.marks.marks.get(market.symbol, 0)), 2 * fill.size)
        self.marks.last[market.symbol] = fill.price
        book = fill.liquidity is Liquidity.BOOK
        sides = ((fill.taker_account, int(fill.taker_side), fill.taker_order_id, market.taker_fee_ppm),
                 (fill.maker_account, -int(fill.taker_side), fill.maker_order_id, market.maker_fee_ppm))
        changed = []
        for account_id, side, order_id, fee_ppm in sides:
            account = self.accounts.get(account_id)
            if account is None:
                continue  # the other side belongs to another partition
            if not book:
                fee_ppm = 0  # backstop and ADL transfers are fee-free
            position = self._position(account, market)
            bucket = self._bucket(position)
            if book and order_id & LIQUIDATION_ORDER_BIT and self.liquidation_fee_ppm:
                self._liquidation_fee(account, position, fill.price, fill.size, fee_ppm, fill.ts)
            # the liquidated side of a backstop or ADL transfer hands its bucket to the fund
            settle = not book and bucket in account.liquidating and account_id != self.insurance_account
            moved = self._apply_fill(account, market, side, fill.price, fill.size, fee_ppm, settle,
                                     fill.trade_id, fill.ts)
            if moved is not None:
                stage = LiquidationStage.BACKSTOP if fill.liquidity is Liquidity.BACKSTOP else LiquidationStage.ADL
                out.append(CollateralTransfer(self.producer, self._next(), account_id, bucket,
                                              self.insurance_account, "", moved, stage, fill.ts))
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
            self._after_change(account, fill.ts, out)
        return None

    def _liquidation_fee(self, account: Account, position: Position, price: int, size: int, fee_ppm: int,
                         ts: int = 0) -> None:
        """The liquidation fee on a fill of a liquidation order, to the insurance fund,
        capped by what the bucket has left at the fill price after the trading fee."""
        value = price * size * position.market.value_per_tick_lot
        nominal = ceil_div(value * self.liquidation_fee_ppm, PPM)
        trading_fee = ceil_div(value * fee_ppm, PPM) if fee_ppm > 0 else 0
        if position.mode is ISOLATED:
            left = position.margin + position.unrealized_pnl(price)
        else:
            equity, _, _, _ = cross_totals(account, self.marks)
            left = equity - position.unrealized_pnl(self.marks.price(position)) + position.unrealized_pnl(price)
        fee = min(nominal, max(0, left - trading_fee))
        if fee <= 0:
            return
        if position.mode is ISOLATED:
            position.margin -= fee
        else:
            account.balance -= fee
        account.income.append(IncomeItem(position.market.symbol, IncomeKind.INSURANCE_CLEAR, -fee, 0, ts))
        self._to_fund(fee, account.account_id, position.market.symbol)
        self.liquidation_fees += fee

    def _apply_fill(self, account: Account, market: Market, side: int, price: int, quantity: int,
                    fee_ppm: int, settle: bool = False, trade_id: int = 0, ts: int = 0) -> int | None:
        """Apply one side of a fill. With ``settle`` (the liquidated side of a backstop or
        ADL transfer), once the bucket is flat its remaining collateral goes to the
        insurance fund; returns that amount (None when nothing was settled)."""
        position = self._position(account, market)
        v = market.value_per_tick_lot
        value = price * quantity * v
        fee = trading_fee(value, fee_ppm)
        self.fees += fee
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
            self._exposure[market.symbol] -= reduce
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
                        self._to_fund(leftover, account.account_id, market.symbol)
                    elif leftover >= 0:
                        account.balance += leftover
                    else:
                        income.append(IncomeItem(symbol, IncomeKind.INSURANCE_CLEAR, -leftover, 0, ts))
                        self._cover_deficit(-leftover, account.account_id, market.symbol)
            quantity -= reduce
            fee -= fee_reduce
        if quantity:
            position.entry_value += price * quantity * v
            position.size += side * quantity
            self._exposure[market.symbol] += quantity
            if position.mode is ISOLATED:
                notional = position.notional(price)
                margin_in = ceil_div(price * quantity * v, position.effective_leverage(notional))
                account.balance -= margin_in
                position.margin += margin_in
        account.balance -= fee
        if position.size and not was_open:
            self._holders[market.symbol].add(account.account_id)
        elif not position.size:
            self._holders[market.symbol].discard(account.account_id)
        if position.mode is CROSS and not account.cross_positions() and account.account_id != self.insurance_account:
            if settle:
                moved, account.balance = account.balance, 0
                income.append(IncomeItem("", IncomeKind.INSURANCE_CLEAR, -moved, 0, ts))
                self._to_fund(moved, account.account_id)
            elif account.balance < 0:
                deficit, account.balance = -account.balance, 0
                income.append(IncomeItem("", IncomeKind.INSURANCE_CLEAR, deficit, 0, ts))
                self._cover_deficit(deficit, account.account_id)
        return moved

    def _fund(self) -> Account:
        fund = self.accounts.get(self.insurance_account)
        if fund is None:
            fund = self.accounts[self.insurance_account] = Account(self.insurance_account)
        return fund

    def _to_fund(self, amount: int, account_id: str = "", market: str = "",
                 stage: LiquidationStage = LiquidationStage.BACKSTOP) -> None:
        """Money for the insurance fund (negative: a deficit it pays). Applied here when this
        partition holds the fund; otherwise sent, as a ``CollateralTransfer`` with
        ``settle``, to the partition that does."""
        if amount < 0:
            self.bad_debt -= amount
        if self.holds_fund:
            fund = self._fund()
            fund.balance += amount
            fund.income.append(IncomeItem(market, IncomeKind.INSURANCE_CLEAR, amount))
            self._fund_changed = True
        else:
            self._pending.append(CollateralTransfer(self.producer, self._next(), account_id, market,
                                                    self.insurance_account, "", amount, stage, 0, True))

    def _cover_deficit(self, deficit: int, account_id: str = "", market: str = "") -> None:
        """Bankrupt bucket: the insurance fund pays what the trader cannot."""
        self._to_fund(-deficit, account_id, market)

    def _collateral(self, event: CollateralTransfer, out: list) -> None:
        """A fund movement from another risk partition (``settle``) reaches the fund here."""
        if event.settle and event.to_account == self.insurance_account and self.holds_fund:
            fund = self._fund()
            fund.balance += event.amount
            fund.income.append(IncomeItem(event.from_market, IncomeKind.INSURANCE_CLEAR, event.amount, 0, event.ts))
            self._fund_changed = True
        return None

    # ------------------------------------------------------------------ views for liquidation

    def fund_balance(self) -> int:
        fund = self.accounts.get(self.insurance_account)
        return fund.balance if fund else 0

    def adl_candidates(self, market: str, side: int) -> list[tuple[str, int]]:
        """Positions on ``side`` (+1 long, −1 short) of ``market`` that ADL may close, best
        ranked first, then larger notional, then account id. Hyperliquid's ranking (the
        default): ``pnl_factor · notional / bucket equity`` (``P / entry`` for longs,
        ``entry / P`` for shorts); Binance's ("What is Auto-Deleveraging"): ``PnL% ·
        effective leverage`` in profit, ``PnL% / effective leverage`` in loss, with the
        effective leverage ``notional / bucket equity``. Buckets with no equity or in
        liquidation, and the insurance fund, are not candidates."""
        ranked = []
        for account_id in self._holders.get(market, ()):
            account = self.accounts[account_id]
            position = account.positions[market]
            if position.sign != side or account_id == self.insurance_account:
                continue
            if self._bucket(position) in account.liquidating:
                continue
            price = self.marks.price(position)
            if position.mode is ISOLATED:
                equity = position.margin + position.unrealized_pnl(price)
            else:
                equity = cross_totals(account, self.marks)[0]
            if equity <= 0 or price <= 0:
                continue
            notional = position.notional(price)
            entry_notional = position.entry_value
            leverage = Fraction(notional, equity)
            if self.adl_ranking == "binance":
                pnl = Fraction(side * (notional - entry_notional), entry_notional)
                score = pnl * leverage if pnl > 0 else pnl / leverage
            else:
                factor = Fraction(notional, entry_notional) if side > 0 else Fraction(entry_notional, notional)
                score = factor * leverage
            ranked.append((-score, -notional, account_id, abs(position.size)))
        ranked.sort()
        return [(account_id, size) for _, _, account_id, size in ranked]

    # ------------------------------------------------------------- marks and funding

    def _mark(self, event: MarkPrice, out: list) -> None:
        market = self._listed(event.market)
        if event.mark_price <= 0:
            raise ValueError(f"a mark price must be positive, got {event.mark_price}")
        self._guard(market, event.mark_price)
        symbol = market.symbol
        mark = event.mark_price
        previous = self.marks.marks.get(symbol)
        self.marks.marks[symbol] = mark
        if event.index_price > 0:
            self.index[symbol] = event.index_price
        liquidating = sorted(self._in_liquidation & self._holders[symbol])  # before new triggers
        for account_id in dict.fromkeys(self._watch.crossed(symbol, mark, previous)):
            account = self.accounts[account_id]
            self.buckets_checked += 1
            self._check(account, event.ts, out)
            self._rekey_budget(account)
        for account_id in liquidating:
            self._report_liquidating(self.accounts[account_id], event.ts, out)
        return None

    def _funding(self, event: Funding, out: list) -> None:
        market = self._listed(event.market)
        self._guard(market, event.index_price)
        changed = []
        for account_id in sorted(self._holders[market.symbol]):
            account = self.accounts[account_id]
            position = account.positions[market.symbol]
            exact = abs(position.size) * event.index_price * market.value_per_tick_lot * abs(event.rate_ppb)
            pays = (event.rate_ppb > 0) == (position.size > 0)
            amount = -ceil_div(exact, PPB) if pays else exact // PPB
            self.funding_net -= amount
            account.funding_paid -= amount
            account.income.append(IncomeItem(market.symbol, IncomeKind.FUNDING_FEE, amount, 0, event.ts))
            if position.mode is CROSS:
                account.balance += amount
            else:
                position.margin += amount
            changed.append(account)
        for account in changed:
            self._after_change(account, event.ts, out)
        return None

    def _liquidation_outcome(self, event: LiquidationOutcome, out: list) -> None:
        account = self.accounts.get(event.account)
        if account is None:
            return None
        if event.stage in ENDED and event.market in account.liquidating:
            account.liquidating.discard(event.market)
            self._adl_ranked.discard((account.account_id, event.market))
            if not account.liquidating:
                self._in_liquidation.discard(account.account_id)
            self._after_change(account, event.ts, out)
        return None

    # ------------------------------------------------------------------ detection

    def _after_change(self, account: Account, ts: int, out: list) -> None:
        """Re-key the account's positions, check its buckets, report the state of buckets
        already in liquidation, and report its margin."""
        already = set(account.liquidating)
        totals = cross_totals(account, self.marks)
        for position in account.positions.values():
            self._reindex(account, position, totals)
        self._rekey_budget(account, totals)
        self._check(account, ts, out, totals)
        if already:
            self._report_liquidating(account, ts, out, only=already)
        if self.defer_snapshots:
            self._changed.add(account.account_id)
        else:
            out.append(self._snapshot(account, ts))

    def flush(self, offset: int, ts: int = 0) -> list[MarginSnapshot]:
        """Snapshots of the accounts changed since the last flush (deferred mode), under the
        producer ``<producer>.margin`` with ``seq = offset``, the input offset they reflect:
        their content depends on the partition's records alone, and a higher ``seq`` is
        always a newer state."""
        snapshots = []
        applied = {**self.applied, self.producer: self.seq}  # what every snapshot of this flush reflects
        for account_id in sorted(self._changed):
            snapshot = self._snapshot(self.accounts[account_id], ts, stamp=False)
            snapshot.producer, snapshot.seq, snapshot.applied = f"{self.producer}.margin", offset, applied
            snapshots.append(snapshot)
        self._changed.clear()
        return snapshots

    def _report_liquidating(self, account: Account, ts: int, out: list, only: set[str] | None = None) -> None:
        for bucket in sorted(account.liquidating if only is None else only & account.liquidating):
            out.append(self._bucket_state(account, bucket, ts, update=True))

    def _bucket_state(self, account: Account, bucket: str, ts: int, update: bool = False) -> LiquidationTrigger:
        """A bucket's state for the liquidation engine (``LiquidationTrigger``)."""
        if bucket:
            position = account.positions[bucket]
            positions = [position] if position.size else []
            if positions:
                equity, _, mm, _ = isolated_totals(position, self.marks)
            else:
                equity, mm = position.margin, 0
            mode = ISOLATED
            order_markets = sorted({o.market for o in account.orders.values() if o.market == bucket})
        else:
            positions = account.cross_positions()
            equity, _, mm, _ = cross_totals(account, self.marks)
            mode = CROSS
            order_markets = sorted({o.market for o in account.orders.values()
                                    if self._position(account, self.markets[o.market]).mode is CROSS})
        states = [position_state(account, p, self.marks) for p in positions]
        fund_known, fund_balance, adl = False, 0, []
        if positions and 3 * equity < 2 * mm:  # settlement is near: what liquidation needs to decide
            fund = self.accounts.get(self.insurance_account)
            fund_known, fund_balance = self.holds_fund, fund.balance if fund is not None else 0
            # ranking reads every holder of the market: only when ADL is what will happen, and
            # once per liquidation (the liquidation engine decides on the first such state)
            deleverage = fund_known and equity < 0 and fund_balance < -equity
            if deleverage:
                if (account.account_id, bucket) in self._adl_ranked:
                    deleverage = False
                else:
                    self._adl_ranked.add((account.account_id, bucket))
            for position in positions if deleverage else ():
                needed = abs(position.size)
                for candidate, size in self.adl_candidates(position.market.symbol, -position.sign):
                    if needed <= 0:
                        break
                    adl.append(AdlCandidate(position.market.symbol, candidate, size))
                    needed -= size
        return LiquidationTrigger(self.producer, self._next(), account.account_id, bucket, mode, equity, mm,
                                  states, ts, order_markets, update, fund_known, fund_balance, adl)

    def _rekey_budget(self, account: Account, totals: tuple | None = None) -> None:
        """(Re)place a multi-market cross bucket in the movement-budget indexes."""
        self._watch.unkey_budget(account.account_id)
        if "" in account.liquidating:
            return
        cross = account.cross_positions()
        if len(cross) < 2:
            return
        equity, _, mm, _ = totals or cross_totals(account, self.marks)
        slack = equity - mm - len(cross)
        if slack < 0:
            return  # _check triggers it, or it is within rounding of maintenance: keyed per fill
        self._watch.key_budget(account.account_id, cross, slack)

    def _reindex(self, account: Account, position: Position, totals: tuple | None = None) -> None:
        self._watch.unkey_price(position)
        if not position.size or self._bucket(position) in account.liquidating:
            return
        if position.mode is CROSS and len(account.cross_positions()) > 1:
            return  # keyed by its movement budget instead
        key = index_key(position, position_thresholds(account, position, self.marks, totals))
        if key is not None:
            self._watch.key_price(account.account_id, position, key)

    def _check(self, account: Account, ts: int, out: list, totals: tuple | None = None) -> None:
        """Trigger liquidation of every bucket of the account with ``equity < MM``."""
        if "" not in account.liquidating:
            equity, _, mm, _ = totals or cross_totals(account, self.marks)
            if mm and equity < mm:
                self._trigger(account, "", CROSS, equity, mm, account.cross_positions(), ts, out)
        for position in list(account.positions.values()):
            if position.size and position.mode is ISOLATED and position.market.symbol not in account.liquidating:
                equity, _, mm, _ = isolated_totals(position, self.marks)
                if equity < mm:
                    self._trigger(account, position.market.symbol, ISOLATED, equity, mm, [position], ts, out)

    def _trigger(self, account: Account, bucket: str, mode: MarginMode, equity: int, mm: int,
                 positions: list[Position], ts: int, out: list) -> None:
        account.liquidating.add(bucket)
        self._in_liquidation.add(account.account_id)
        for position in positions:
            self._reindex(account, position)  # leaves the index while liquidating
        if not bucket:
            self._rekey_budget(account)
        out.append(self._bucket_state(account, bucket, ts))
