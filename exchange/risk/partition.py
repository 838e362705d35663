"""The state of one risk partition, shared by the risk engine's parts.

``Partition`` holds what every part reads and changes: the accounts, the marks and index
prices, the sequence and order counters, the money counters of the conservation check
(``exchange.invariants``), the liquidation index and the per-market holders; and the
lookups, refusals and snapshots all of them use. ``RiskEngine`` is a ``Partition`` and
composes the parts (``exchange/risk/__init__.py`` lists them) around it.
"""

from __future__ import annotations

from typing import Any

from exchange.accounts import (
    Account,
    BucketId,
    Marks,
    Position,
    PositionKey,
    available_to_trade,
    bucket_states,
    cross_totals,
    position_state,
    withdrawable,
)
from exchange.errors import Refused, UnknownMarket, ValueTooLarge
from exchange.liquidation_index import LiquidationIndex
from exchange.markets import Market
from schemas.enums import RejectReason
from schemas.events import (
    LIQUIDATION_ORDER_BIT,
    CollateralTransfer,
    CommandAccepted,
    CommandRejected,
    MarginSnapshot,
    MarketSetting,
)

MAX_BALANCE = 2**62  # micro units: what an account may hold, so its figures stay within int64
MAX_NOTIONAL = 2**61  # micro units: what a partition's positions in one market may be worth


class Partition:
    """Accounts of one risk partition, and the figures kept about them."""

    def __init__(self, markets: dict[str, Market], producer: str, partition: int, insurance_account: str,
                 liquidation_fee_ppm: int, defer_snapshots: bool, holds_fund: bool):
        if not 0 <= partition < LIQUIDATION_ORDER_BIT:
            raise ValueError(f"partition must be 0 to {LIQUIDATION_ORDER_BIT - 1}, got {partition}")
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
        self.in_liquidation: set[str] = set()  # accounts with a bucket in liquidation
        # With deferred snapshots (the service), a changed account is only marked, and
        # ``flush(offset)`` reports each once per batch, numbered by the input offset.
        self.defer_snapshots = defer_snapshots
        # whether the insurance fund's account belongs to this partition (it always does
        # in-process); only then can bucket states say what the fund holds
        self.holds_fund = holds_fund
        self.changed: set[str] = set()
        # the newest sequence number applied from each matching producer (``RiskEngine._answered``)
        self.applied: dict[str, int] = {}
        self.index: dict[str, int] = {}  # each market's last index price (from the marks)
        self.adl_ranked: set[BucketId] = set()  # buckets whose ADL candidates were sent
        self.pending: list[CollateralTransfer] = []  # fund movements for the fund's partition
        self.fund_changed = False
        self.watch = LiquidationIndex(markets)
        self.holders: dict[str, set[str]] = {symbol: set() for symbol in markets}
        self.exposure: dict[str, int] = {symbol: 0 for symbol in markets}  # Σ |size| of this partition's positions

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def accept(self, cmd: Any, out: list) -> None:
        out.append(CommandAccepted(self.producer, self.next_seq(), cmd.account, cmd.producer, cmd.seq,
                                   type(cmd).__name__, cmd.ts))

    def refuse(self, cmd: Any, refused: Refused, out: list, order_id: int = 0) -> None:
        out.append(CommandRejected(self.producer, self.next_seq(), cmd.account, cmd.producer, cmd.seq,
                                   type(cmd).__name__, refused.reason, refused.detail, order_id, cmd.ts))

    def snapshot_of(self, account: Account, ts: int, stamp: bool = True, report_income: bool = True) -> MarginSnapshot:
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
        settings = [MarketSetting(p.market.symbol, p.mode, p.leverage) for p in account.positions.values()
                    if not p.size]
        return MarginSnapshot(self.producer, self.next_seq() if stamp else 0, account.account_id, account.balance,
                              available_to_trade(account, marks, totals), withdrawable(account, marks, totals),
                              bucket_states(account, marks, totals), positions, ts, income, {}, settings)

    def get_account(self, account_id: str) -> Account:
        account = self.accounts.get(account_id)
        if account is None:
            raise Refused(RejectReason.UNKNOWN_ACCOUNT, f"account {account_id!r} has never deposited")
        return account

    def get_market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise Refused(RejectReason.UNKNOWN_MARKET,
                          f"unknown market {symbol!r}; markets: {', '.join(self.markets)}")
        return market

    def position(self, account: Account, market: Market) -> Position:
        """The account's position in ``market``, made (flat, with the defaults) if it has none."""
        key = PositionKey(account.account_id, market.symbol)
        position = account.positions.get(key)
        if position is None:
            position = account.positions[key] = Position(key, market)
        return position

    def money(self, amount: int) -> str:
        return f"{amount / 1_000_000:,.6f}"

    def listed(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise UnknownMarket(f"no market {symbol!r}; markets: {', '.join(self.markets)}")
        return market

    def guard(self, market: Market, price: int, more: int = 0) -> None:
        """Refuse (``ValueTooLarge``, before any change) a price at which this partition's
        positions in ``market`` (with ``more`` lots added) would be worth more than the
        figures the contract carries can hold."""
        exposure = self.exposure[market.symbol] + more
        if exposure * price * market.value_per_tick_lot > MAX_NOTIONAL:
            raise ValueTooLarge(f"{market.symbol} at {market.format_price(price)}: {market.format_size(exposure)} "
                                f"held would be worth more than {self.money(MAX_NOTIONAL)}")

    def fund(self) -> Account:
        fund = self.accounts.get(self.insurance_account)
        if fund is None:
            fund = self.accounts[self.insurance_account] = Account(self.insurance_account)
        return fund
