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

The engine is a ``Partition`` (the state) with its parts around it, each in its module:
account commands (``commands``), order admission and reservations (``orders``), settlement
of fills, funding and the fund (``settlement``), liquidation detection (``detection``) and
the ADL ranking (``adl``). It keeps the handler table, ``apply``, snapshots
(``export``/``load``, ``flush``) and the counters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from exchange.accounts import Account, OpenOrder, Position, cross_totals, wire_market
from exchange.markets import Market
from exchange.risk.adl import AdlRanking, Deleveraging, HyperliquidRanking
from exchange.risk.commands import AccountCommands
from exchange.risk.detection import Detection
from exchange.risk.orders import OrderAdmission
from exchange.risk.partition import Partition
from exchange.risk.settlement import Settlement
from schemas.events import (
    AdjustIsolatedMargin,
    AmendOrder,
    CancelOrder,
    CollateralTransfer,
    CommandRejected,
    Deposit,
    Fill,
    Funding,
    LiquidationOutcome,
    MarginSnapshot,
    MarkPrice,
    Message,
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
from schemas.keys import BucketId
from schemas.state import AccountRow, BudgetRow, OpenOrderRow, PositionRow, RiskState

# what a client waits for an answer to, and then for a snapshot that reflects it
ANSWERED = frozenset({Deposit, Withdraw, SetMarginMode, SetLeverage, AdjustIsolatedMargin, OrderAccepted,
                      OrderRejected, OrderAmended, OrderClosed, OrderTriggered, Fill})
MATCHING: Final = "match."


class RiskEngine(Partition):
    """Accounts of one risk partition and everything that changes them."""

    def __init__(self, markets: dict[str, Market], producer: str = "risk.0", partition: int = 0,
                 insurance_account: str = "insurance", liquidation_fee_ppm: int = 0,
                 defer_snapshots: bool = False, holds_fund: bool = True, adl_ranking: AdlRanking | None = None):
        """``adl_ranking``: the venue's (``exchange.venues``); Hyperliquid's by default."""
        super().__init__(markets, producer, partition, insurance_account, liquidation_fee_ppm, defer_snapshots,
                         holds_fund)
        self.deleveraging = Deleveraging(self, adl_ranking or HyperliquidRanking())
        self.detection = Detection(self, self.deleveraging)
        self.admission = OrderAdmission(self)
        self.settlement = Settlement(self, self.detection)
        self.commands = AccountCommands(self, self.admission, self.detection)
        self._handlers: dict[type, Callable[[Any, list], None]] = {
            Deposit: self.commands.deposit,
            Withdraw: self.commands.withdraw,
            PlaceOrder: self.admission.place,
            CancelOrder: self.admission.cancel,
            AmendOrder: self.admission.amend,
            SetMarginMode: self.commands.set_mode,
            SetLeverage: self.commands.set_leverage,
            AdjustIsolatedMargin: self.commands.adjust_margin,
            OrderAccepted: self.admission.order_accepted,
            OrderRejected: self.admission.order_ended,
            OrderAmended: self.admission.order_amended,
            OrderClosed: self.admission.order_ended,
            OrderTriggered: self.admission.triggered,
            CommandRejected: self.admission.matching_refused,
            Fill: self.settlement.fill,
            MarkPrice: self.detection.mark,
            Funding: self.settlement.funding,
            LiquidationOutcome: self.detection.liquidation_outcome,
            CollateralTransfer: self.settlement.collateral,
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
        if self.pending:
            out.extend(self.pending)
            self.pending.clear()
        if self.fund_changed:  # the fund moved without a change of its own: report it too
            self.fund_changed = False
            if self.defer_snapshots:
                self.changed.add(self.insurance_account)
            else:
                out.append(self.snapshot_of(self.fund(), getattr(event, "ts", 0)))
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
                    self.changed.add(account_id)
        elif event.producer.startswith(MATCHING):
            self.applied[event.producer] = event.seq
            if event.account in self.accounts:
                self.changed.add(event.account)
        elif event.account in self.accounts:  # a client's command: risk's own answer is what is waited for
            self.changed.add(event.account)

    def export(self) -> RiskState:
        """Everything this engine folded, as data (``schemas.state``); ``load`` it into a
        new engine of the same configuration and it goes on exactly as this one would."""
        accounts = [AccountRow(a.account_id, a.balance, a.fees_paid, a.funding_paid, list(a.income),
                               [PositionRow(p.key, p.mode, p.leverage, p.size, p.entry_value, p.margin)
                                for p in a.positions.values()],
                               [OpenOrderRow(o.order_id, o.market, o.side, o.price, o.remaining, o.reserved,
                                             o.reduce_only, o.client_order_id, o.conditional)
                                for o in a.orders.values()],
                               a.reserved, sorted(a.liquidating, key=wire_market))
                    for a in self.accounts.values()]
        travel, budgets = self.watch.export()
        return RiskState(self.producer, self.seq, self.order_counter, self.deposits, self.withdrawals, self.fees,
                         self.funding_net, self.bad_debt, self.liquidation_fees, accounts, dict(self.marks.marks),
                         dict(self.marks.last), sorted(self.in_liquidation), sorted(self.changed),
                         sorted(self.adl_ranked, key=_order), list(self.pending), self.fund_changed, travel,
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
                key = p.key
                position = account.positions[key] = Position(key, self.listed(key.market), p.mode, p.leverage)
                position.size, position.entry_value, position.margin = p.size, p.entry_value, p.margin
                self.exposure[key.market] += abs(p.size)
                if position.size:
                    self.holders[key.market].add(account.account_id)
            for o in row.orders:
                account.orders[o.order_id] = OpenOrder(o.order_id, o.market, o.side, o.price, o.remaining,
                                                       o.reserved, o.reduce_only, o.client_order_id, o.conditional)
        self.in_liquidation = set(state.in_liquidation)
        self.changed = set(state.changed)
        self.adl_ranked = set(state.adl_ranked)
        self.pending = list(state.pending)
        self.fund_changed = state.fund_changed
        self.applied = dict(state.applied)
        self.index = dict(state.index)
        # price keys are a function of each account's state; budgets depend on when they were set
        for account in self.accounts.values():
            if any(position.size for position in account.positions.values()):
                totals = cross_totals(account, self.marks)
                for position in account.positions.values():
                    self.detection.reindex(account, position, totals)
        self.watch.load(state.travel, [(row.account, row.thresholds) for row in state.budgets])

    def snapshot(self, account_id: str, ts: int = 0) -> MarginSnapshot:
        """The account's margin snapshot now (also emitted after every change)."""
        account = self.accounts[account_id]
        return self.snapshot_of(account, ts, stamp=False, report_income=False)

    def fund_balance(self) -> int:
        fund = self.accounts.get(self.insurance_account)
        return fund.balance if fund else 0

    def adl_candidates(self, market: str, side: int) -> list[tuple[str, int]]:
        """Positions on ``side`` of ``market`` that ADL may close, best ranked first
        (``exchange.risk.adl``, by this venue's ranking)."""
        return self.deleveraging.candidates(market, side)

    def flush(self, offset: int, ts: int = 0) -> list[MarginSnapshot]:
        """Snapshots of the accounts changed since the last flush (deferred mode), under the
        producer ``<producer>.margin`` with ``seq = offset``, the input offset they reflect:
        their content depends on the partition's records alone, and a higher ``seq`` is
        always a newer state."""
        snapshots = []
        applied = {**self.applied, self.producer: self.seq}  # what every snapshot of this flush reflects
        for account_id in sorted(self.changed):
            snapshot = self.snapshot_of(self.accounts[account_id], ts, stamp=False)
            snapshot.producer, snapshot.seq, snapshot.applied = f"{self.producer}.margin", offset, applied
            snapshots.append(snapshot)
        self.changed.clear()
        return snapshots


def _order(bucket: BucketId) -> tuple[str, str]:
    """Buckets in a stable order: by account, the cross bucket first, then by market."""
    return bucket.account, wire_market(bucket)
