"""A scenario's participants trading on the running exchange, in real time.

``LiveMarket`` drives the same agents as the in-process simulation, but as clients of the
services: it reads ``market.data`` (marks, book) and ``account.events`` (orders, fills,
margin) into a ``LiveView``, asks every agent for its intents each tick of wall time, and
sends them to ``risk.in``. It measures what a user of the exchange sees: orders and fills
per second, submit→acceptance latency, marks, open interest, liquidations by mode, and the
insurance fund.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from exchange.core import money, usdc
from exchange.markets import Market, trading_fee
from schemas import MARKET_DATA, RISK_IN, codec
from schemas.enums import (
    IncomeKind,
    LiquidationStage,
    Liquidity,
    OrderType,
    SelfTradePrevention,
)
from schemas.events import (
    BBO,
    CancelOrder,
    CommandRejected,
    Deposit,
    Fill,
    Funding,
    LiquidationOutcome,
    MarginSnapshot,
    MarkPrice,
    OrderAccepted,
    OrderClosed,
    OrderRejected,
    OrderTriggered,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
)
from services.client import Client
from services.runtime.bus import Bus, BusError, TolerantReader, partition_for
from services.runtime.lag import SERVICE_INPUTS, input_lag
from services.sim.participants import Agent, Cancel, Configure, Place
from services.sim.simulation import Scenario, agents


class LiveView:
    """What the participants see of the running exchange, from its event streams."""

    def __init__(self, markets: dict[str, Market]):
        self.markets = markets
        self.ts = 0
        self.marks: dict[str, int] = {}
        self.indexes: dict[str, int] = {}
        self.tops: dict[str, tuple[int, int]] = {}
        self.funding: dict[str, tuple[int, int]] = {}  # market -> (last rate ppb, payments)
        self.snapshots: dict[str, MarginSnapshot] = {}
        self.orders: dict[str, dict[int, str]] = {}  # account -> order id -> market
        # orders a cancel was sent for, until they close: a maker that requotes every tick
        # while the venue takes longer than a tick to answer must not cancel them again
        # (it did: each order was cancelled once per tick of latency, so the cancels grew with
        # the latency and the latency with the cancels, 600 orders/s became 9,000 commands/s
        # within two minutes and a bot's orders took seconds)
        self.cancelling: set[int] = set()
        self.fills: dict[tuple[str, str], int] = {}  # positions from fills, before snapshots catch up
        # money moved in and out of every account (deposits less withdrawals), from the
        # TRANSFER income of each snapshot, counted once per (account, seq)
        self.transfers = 0
        self.funding_paid = 0  # what the paying side paid, micro units (the receivers got it less rounding)
        self.funding_payments = 0
        self._counted: set[tuple[str, int]] = set()

    def mark(self, market: str) -> int:
        return self.marks.get(market, 0)

    def index(self, market: str) -> int:
        return self.indexes.get(market, 0)

    def top(self, market: str) -> tuple[int, int]:
        return self.tops.get(market, (0, 0))

    def position(self, account: str, market: str) -> int:
        return self.fills.get((account, market), 0)

    def open_orders(self, account: str, market: str) -> list[int]:
        cancelling = self.cancelling
        return [order_id for order_id, m in self.orders.get(account, {}).items()
                if m == market and order_id not in cancelling]

    def cancel_sent(self, account: str, order_id: int) -> None:
        """A cancel of ``order_id`` was sent: it is no longer listed as open (nor cancelled
        again) while it waits for its outcome."""
        if order_id in self.orders.get(account, ()):
            self.cancelling.add(order_id)

    def lots_for(self, market: str, usd: float) -> int:
        mark = self.mark(market)
        return int(usd * 1_000_000 // (mark * self.markets[market].value_per_tick_lot)) if mark else 0

    def observe(self, message) -> None:
        if isinstance(message, MarkPrice):
            self.marks[message.market] = message.mark_price
            self.indexes[message.market] = message.index_price
        elif isinstance(message, BBO):
            self.tops[message.market] = (message.bid_price, message.ask_price)
        elif isinstance(message, Funding):
            self.funding[message.market] = (message.rate_ppb, self.funding.get(message.market, (0, 0))[1] + 1)
        elif isinstance(message, OrderAccepted):
            self.orders.setdefault(message.account, {})[message.order_id] = message.market
        elif isinstance(message, (OrderClosed, OrderRejected)):
            self.orders.get(message.account, {}).pop(message.order_id, None)
            self.cancelling.discard(message.order_id)
        elif isinstance(message, CommandRejected) and message.command == "CancelOrder":
            self.cancelling.discard(message.order_id)  # refused: listed (and cancelled) again if still open
        elif isinstance(message, Fill):
            buyer = message.taker_account if message.taker_side > 0 else message.maker_account
            seller = message.maker_account if message.taker_side > 0 else message.taker_account
            for account, moved in ((buyer, message.size), (seller, -message.size)):
                key = (account, message.market)
                self.fills[key] = self.fills.get(key, 0) + moved
        elif isinstance(message, MarginSnapshot):
            if (message.account, message.seq) not in self._counted:
                self._counted.add((message.account, message.seq))
                for item in message.income:
                    if item.kind is IncomeKind.TRANSFER:
                        self.transfers += item.amount
                    elif item.kind is IncomeKind.FUNDING_FEE:
                        self.funding_payments += 1
                        self.funding_paid += max(0, -item.amount)
            known = self.snapshots.get(message.account)
            if known is None or message.seq >= known.seq:
                self.snapshots[message.account] = message


log = logging.getLogger(__name__)


SETTLE_LIMIT_S = 60.0
MARKS_LIMIT_S = 60.0  # the oracle's first marks, which its process start delays
INTERRUPTED_SETTLE_LIMIT_S = 8.0  # after Ctrl-C: a partial report soon, checked if the services keep up
SETTLE_REQUESTS_S = 15.0  # beyond the settling's limit, for its last requests to the broker to time out
STOP_GRACE_S = 1.0  # after a stop, how long a tick may still wait on the broker before it is given up
MAX_OUTSTANDING_S = 2.0  # the participants wait while more than this many seconds' orders are unanswered
LAG_EVERY_S = 5.0
CLIENT_KEEP = 10_000  # events the participants' client remembers (Client(keep=)); it counts them all


@dataclass
class LiveStats:
    started: float = field(default_factory=time.monotonic)
    orders: int = 0
    fills: int = 0
    rejected: int = 0
    latencies: list[float] = field(default_factory=list)
    liquidations: list[tuple[float, str, str, str, int]] = field(default_factory=list)  # s, account, mode, market, mark
    outcomes: dict[str, int] = field(default_factory=dict)
    stops_fired: int = 0  # conditional orders that reached their trigger
    # each second: (s, marks, insurance fund, open interest, indexes, PnL by participant kind)
    series: list[tuple[float, dict[str, int], int, dict[str, int], dict[str, int], dict[str, int]]] = \
        field(default_factory=list)
    fees: int = 0  # trading fees of every fill seen, micro units
    problems: list[str] = field(default_factory=list)  # invariants that did not hold at the end
    unchecked: str = ""  # why the invariants could not be checked at the end (the services had not caught up)
    held_ticks: int = 0  # ticks the participants waited for the venue to catch up (backpressure)
    lag: dict[str, int] = field(default_factory=dict)  # each service's records behind, every LAG_EVERY_S
    interrupted: bool = False  # stopped (Ctrl-C, SIGTERM) before its duration: a partial run


class LiveMarket:
    def __init__(self, bus: Bus, markets: dict[str, Market], scenario: Scenario, seed: int | None = None,
                 rate: float = 1.0):
        self.bus = bus
        self.markets = markets
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.tick_s = scenario.tick_ms / 1000 / max(rate, 0.01)  # --rate speeds the participants up
        self.agents: list[Agent] = agents(scenario, self.seed, self.tick_s)
        self.view = LiveView(markets)
        self.stats = LiveStats()
        # the view is built by a listener; the client keeps only the latest events (it kept
        # every one: a run at six times the rate held a gigabyte within minutes)
        self.client = Client(bus, markets, producer=f"agents-{self.seed}", keep=CLIENT_KEEP)
        self._sent: dict[str, float] = {}
        self.market_data = TolerantReader(MARKET_DATA, "participants")

    async def _watch_market(self, stop: asyncio.Event) -> None:
        consumer = self.bus.consumer(MARKET_DATA, f"{self.client.producer}-market")
        try:
            while not stop.is_set():
                for record in await consumer.getmany(timeout_ms=50):
                    for message in self.market_data.messages(record):
                        self.view.observe(message)
        finally:
            await consumer.stop()

    def _on_event(self, message) -> None:
        self.view.observe(message)
        now = time.monotonic()
        if isinstance(message, OrderAccepted):
            sent = self._sent.pop(message.client_order_id, None)
            if sent is not None:
                self.stats.latencies.append(now - sent)
        elif isinstance(message, OrderRejected):
            self._sent.pop(message.client_order_id, None)
            self.stats.rejected += 1
        elif isinstance(message, Fill):
            self.stats.fills += 1
            if message.liquidity is Liquidity.BOOK:  # transfers are fee-free
                spec = self.markets[message.market]
                value = message.price * message.size * spec.value_per_tick_lot
                self.stats.fees += trading_fee(value, spec.taker_fee_ppm) + trading_fee(value, spec.maker_fee_ppm)
        elif isinstance(message, OrderTriggered):
            self.stats.stops_fired += 1
        elif isinstance(message, LiquidationOutcome):
            if message.stage is LiquidationStage.TRIGGERED:
                market = message.market or next((p.market for p in getattr(
                    self.view.snapshots.get(message.account), "positions", [])), "")
                self.stats.liquidations.append((now - self.stats.started, message.account, message.mode.name,
                                                market, self.view.mark(market)))
            else:
                key = f"{message.mode.name.lower()} {message.stage.name.lower()}"
                self.stats.outcomes[key] = self.stats.outcomes.get(key, 0) + 1

    async def _send(self, command) -> None:
        partition = partition_for(command.account, self.bus.partitions(RISK_IN))
        await self.bus.send([(RISK_IN, partition, None, codec(RISK_IN).encode(command))], wait=False)

    async def _execute(self, intent) -> None:
        client = self.client
        now = time.time_ns()
        if isinstance(intent, Configure):
            await self._send(SetMarginMode(*client.stamp(), intent.account, intent.market, intent.mode, now))
            await self._send(SetLeverage(*client.stamp(), intent.account, intent.market, intent.leverage, now))
        elif isinstance(intent, Place):
            stamp = client.stamp()
            order_id = f"a{stamp[1]}"
            kind = OrderType.MARKET if intent.price == 0 else OrderType.LIMIT
            self._sent[order_id] = time.monotonic()
            self.stats.orders += 1
            await self._send(PlaceOrder(*stamp, intent.account, intent.market, order_id, intent.side, kind, intent.tif,
                                        intent.price, intent.size, intent.reduce_only,
                                        SelfTradePrevention.CANCEL_TAKER, now, intent.condition, intent.trigger,
                                        close_position=intent.close_position))
        elif isinstance(intent, Cancel):
            self.view.cancel_sent(intent.account, intent.order_id)
            await self._send(CancelOrder(*client.stamp(), intent.account, intent.market, intent.order_id, now))

    async def run(self, duration_s: float, stop: asyncio.Event | None = None, on_second=None,
                  on_ready=None) -> LiveStats:
        """Deposit and configure every participant, call ``on_ready()`` (``up`` starts the
        oracle then, so that the scenario's clock starts with the market), wait for the
        first marks, then trade for ``duration_s``: the run's clock (the report's time
        axis) starts at that first mark."""
        stop = stop or asyncio.Event()
        self.client.listen(self._on_event)  # before it reads: the view sees the account events from the first
        async with self.client:
            watcher = asyncio.create_task(self._watch_market(stop))
            lagging = asyncio.create_task(self._watch_lag(stop))
            try:
                await self._run(duration_s, stop, on_second, on_ready)
            finally:
                stop.set()
                await watcher
                lagging.cancel()
        return self.stats

    async def _run(self, duration_s: float, stop: asyncio.Event, on_second, on_ready) -> None:
        trading = asyncio.create_task(self._trade(duration_s, stop, on_second, on_ready), name="trading")
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({trading, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not trading.done():
                # stopped: the loop ends at its next tick, unless a send waits on a broker that
                # does not take it (the client library waits up to 40 s per record): then the
                # tick is given up, and the settling below counts what did go out
                done, _ = await asyncio.wait({trading}, timeout=STOP_GRACE_S)
                if not done:
                    log.warning("a tick still waited on the broker %g s after the stop; given up", STOP_GRACE_S)
                    trading.cancel()
                    await asyncio.gather(trading, return_exceptions=True)
            if not trading.cancelled():
                trading.result()  # what it raised
        finally:
            stopped.cancel()
            trading.cancel()
        self._sample(time.monotonic())
        self.stats.interrupted = stop.is_set()
        limit_s = INTERRUPTED_SETTLE_LIMIT_S if self.stats.interrupted else SETTLE_LIMIT_S
        try:  # each of its requests has its own timeout; the whole is bounded too
            behind = await asyncio.wait_for(self.settle(limit_s), limit_s + SETTLE_REQUESTS_S)
        except (TimeoutError, BusError) as exc:
            self.stats.unchecked = (f"the services' progress could not be read within {limit_s + SETTLE_REQUESTS_S:g} s "
                                    f"({exc or 'timed out'})")
            return
        if behind:
            self.stats.unchecked = f"the services had {behind:,} records still to apply {limit_s:g} s after the stop"
        else:
            self.stats.problems = self.violations()

    async def _trade(self, duration_s: float, stop: asyncio.Event, on_second, on_ready) -> None:
        """Deposits and settings, ``on_ready``, the first marks, then a tick every
        ``tick_s`` until ``duration_s`` has passed or ``stop`` is set."""
        await self.client.deposit("insurance", self.scenario.insurance_fund)
        for agent in self.agents:
            for account in agent.accounts:
                await self._send_deposit(account, agent.deposit)
            for intent in agent.setup():
                await self._execute(intent)
        await self.bus.flush()
        if on_ready is not None:
            on_ready()
        await self._first_marks(stop)
        self.stats = LiveStats()
        deadline = time.monotonic() + duration_s
        next_tick, next_second = time.monotonic(), time.monotonic() + 1
        while not stop.is_set() and time.monotonic() < deadline:
            if self._behind():  # backpressure: a venue that lags gets no new orders until it answers
                self.stats.held_ticks += 1
            else:
                for agent in self.agents:
                    for intent in agent.on_tick(self.view):
                        await self._execute(intent)
            await self.bus.flush()
            next_tick += self.tick_s
            now = time.monotonic()
            if now >= next_second:
                self._sample(now)
                if on_second is not None:
                    on_second(self)
                next_second += 1
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))

    def _behind(self) -> bool:
        """Whether more orders are unanswered than the participants send in
        ``MAX_OUTSTANDING_S`` (at least 200): then they wait, as a bot backs off a venue that
        lags, instead of queueing without bound. Orders unanswered for a minute are given up."""
        now = time.monotonic()
        if len(self._sent) > 1000:
            for order_id, sent in list(self._sent.items()):
                if now - sent > 60:
                    del self._sent[order_id]
        elapsed = max(1.0, now - self.stats.started)
        allowed = max(200, int(self.stats.orders / elapsed * MAX_OUTSTANDING_S))
        return len(self._sent) > allowed

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.stats.lag = {service: behind for service, (_, behind) in (await input_lag(self.bus)).items()}
            except BusError as exc:
                log.warning("cannot read the services' lag: %s", exc)
            await asyncio.sleep(LAG_EVERY_S)

    async def _first_marks(self, stop: asyncio.Event, limit_s: float = MARKS_LIMIT_S) -> None:
        """Until every market of the scenario has a mark (the oracle's first tick)."""
        deadline = time.monotonic() + limit_s
        wanted = [m for m in self.scenario.oracle if m in self.markets]
        while not stop.is_set() and not all(self.view.mark(m) for m in wanted):
            if time.monotonic() >= deadline:
                log.warning("no mark for %s after %g s; the participants start without it",
                            ", ".join(m for m in wanted if not self.view.mark(m)), limit_s)
                return
            await asyncio.sleep(0.05)

    async def settle(self, limit_s: float) -> int:
        """Wait until the services have applied everything sent: in rounds, until each
        service's consumer group has committed its input up to where it ended when the
        round began, and a whole round brought no new account event (what one hop sent
        the next has been applied too). Returns how many records were still unapplied
        after ``limit_s`` (0: settled)."""
        deadline = time.monotonic() + limit_s
        behind = 0
        while time.monotonic() < deadline:
            seen = self.client.received
            targets = {}
            for service, topic in SERVICE_INPUTS:
                for partition in range(self.bus.partitions(topic)):
                    targets[(service, topic, partition)] = (await self.bus.offsets(topic, partition))[1]
            while True:
                behind = 0
                for service, topic in SERVICE_INPUTS:
                    done = await self.bus.committed(f"perpsim-{service}", topic)
                    behind += sum(max(0, end - done.get(partition, 0))
                                  for (s, t, partition), end in targets.items() if (s, t) == (service, topic))
                if not behind or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(0.25)
            if not behind and self.client.received == seen:
                return 0
        return behind

    def violations(self) -> list[str]:
        """The invariants, as far as a client can check them: per market longs equal shorts
        (from the fills), and the money moved in (every account's deposits less its
        withdrawals: the participants', the fund's, and any other's, such as a bot's API-key
        account) equals balances + isolated margins + open positions' claims (newest
        snapshot of every account) + fees (from the fills)."""
        problems = []
        for market in self.markets:
            total = sum(size for (_, m), size in self.view.fills.items() if m == market)
            if total:
                spec = self.markets[market]
                problems.append(f"{market}: longs and shorts differ by {spec.format_size(abs(total))} "
                                f"{spec.base}")
        deposits = self.view.transfers
        held = self.stats.fees
        for snapshot in self.view.snapshots.values():
            held += snapshot.balance
            for position in snapshot.positions:
                sign = 1 if position.signed_size > 0 else -1
                held += position.isolated_margin - sign * position.entry_value
        if held != deposits:
            problems.append(f"money: deposited {usdc(deposits)}, held {usdc(held)} (fees included), "
                            f"difference {usdc(held - deposits)}")
        return problems

    async def _send_deposit(self, account: str, amount: str) -> None:
        await self._send(Deposit(*self.client.stamp(), account, money(amount), time.time_ns()))

    def _sample(self, now: float) -> None:
        fund = self.view.snapshots.get("insurance")
        interest = {m: sum(v for (a, mk), v in self.view.fills.items() if mk == m and v > 0) for m in self.markets
                    if m in self.scenario.oracle}
        self.stats.series.append((now - self.stats.started, dict(self.view.marks), fund.balance if fund else 0,
                                  interest, dict(self.view.indexes), self.pnl_by_kind()))

    def pnl_by_kind(self) -> dict[str, int]:
        """Per participant kind: equity (balance, isolated margins, unrealized PnL, from the
        newest snapshots) less deposits, micro units."""
        pnl: dict[str, int] = {}
        for agent in self.agents:
            total = 0
            for account in agent.accounts:
                snapshot = self.view.snapshots.get(account)
                if snapshot is None:
                    continue
                total += snapshot.balance - money(agent.deposit) + sum(
                    p.isolated_margin + p.unrealized_pnl for p in snapshot.positions)
            pnl[agent.kind] = pnl.get(agent.kind, 0) + total
        return pnl

