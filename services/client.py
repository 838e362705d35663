"""The native async Python client: deposit, trade, set margin, and await the answers.

It writes commands to ``risk.in`` (keyed by account) and reads ``account.events``; every
call returns once the exchange has answered:

    async with Client(bus, markets) as client:
        await client.deposit("alice", "2000")
        order = await client.place("alice", "SOL-PERP", Side.BUY, "10", "150", tif=TimeInForce.IOC)
        order.fills, order.closed.reason

Sizes, prices and amounts are decimal strings, as a user types them. A refusal raises
``Rejected`` with the exchange's named reason, also for a number outside what the
contract carries (checked here, before sending). Every call, sending included, ends
within ``timeout_s``: ``TimeoutError`` if the bus or the exchange does not answer. Its
producer id is unique per client (and may not be a service's) and its sequence numbers
start from the wall clock, so commands are never mistaken for redeliveries of an
earlier session's.

What the client cannot read on ``account.events`` (a record that does not decode, or a
message from a producer that may not send it) it skips and counts (``skipped``), and
reads on.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from exchange.core import money
from exchange.markets import Market, UnitError
from schemas import ACCOUNT_EVENTS, RISK_IN, SchemaError, codec
from schemas.enums import (
    Condition,
    MarginMode,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TriggerSource,
)
from schemas.events import (
    MAX_AMOUNT,
    AdjustIsolatedMargin,
    AmendOrder,
    CancelOrder,
    CommandAccepted,
    CommandRejected,
    Deposit,
    Fill,
    MarginSnapshot,
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
from schemas.topics import CLIENT, SERVICE_SEQ_STEP, SERVICES_COUNTING, producer_kind
from services.runtime.bus import Bus, TolerantReader, partition_for

log = logging.getLogger(__name__)

# the field a refused number is in -> the reason the exchange would give for it
_FIELD_REASONS = {"price": RejectReason.INVALID_PRICE, "size": RejectReason.INVALID_SIZE,
                  "leverage": RejectReason.LEVERAGE_OUT_OF_RANGE,
                  "client_order_id": RejectReason.INVALID_CLIENT_ORDER_ID}


def _amount(text: str) -> int:
    """Micro units of a decimal amount; ``Rejected(INVALID_AMOUNT)`` for what is not one."""
    try:
        value = money(text)
    except (ValueError, ArithmeticError, TypeError):
        raise Rejected(RejectReason.INVALID_AMOUNT, f"amount {text!r} is not a decimal number with at most 6 "
                                                    "decimals") from None
    if abs(value) > MAX_AMOUNT:
        raise Rejected(RejectReason.INVALID_AMOUNT, f"amount {text} is beyond what one command may move "
                                                    f"({MAX_AMOUNT // 1_000_000:,} of quote)")
    return value


def _callback(text: str) -> int:
    """A callback rate in percent ("1.5") as ppm (15000)."""
    try:
        ppm = Decimal(text) * 10_000
    except InvalidOperation:
        raise Rejected(RejectReason.INVALID_TRIGGER, f"callback rate must be a percentage, got {text!r}") from None
    if ppm != ppm.to_integral_value() or not 0 < ppm <= 1_000_000:
        raise Rejected(RejectReason.INVALID_TRIGGER, f"callback rate {text}% is not a whole ppm in (0, 100]")
    return int(ppm)


class Rejected(Exception):
    """The exchange refused a command; ``reason`` is its ``RejectReason`` (``order_id``:
    the id risk had given a refused order, 0 if none)."""

    def __init__(self, reason: RejectReason, detail: str, order_id: int = 0):
        super().__init__(f"{reason.name}: {detail}")
        self.reason = reason
        self.detail = detail
        self.order_id = order_id


@dataclass
class OrderResult:
    accepted: OrderAccepted
    fills: list[Fill] = field(default_factory=list)
    closed: OrderClosed | None = None
    since: int = 0  # the client's event count when the order was sent: its events come after

    @property
    def order_id(self) -> int:
        return self.accepted.order_id

    @property
    def filled(self) -> int:
        return sum(fill.size for fill in self.fills)


class Client:
    def __init__(self, bus: Bus, markets: dict[str, Market], producer: str | None = None,
                 timeout_s: float = 15.0, keep: int | None = None):
        """``keep``: remember only about the last ``keep`` events (a long-running client
        such as the gateway); ``received`` counts them all, and ``wait_for(after=)``
        takes such a count."""
        self.bus = bus
        self.markets = markets
        self.producer = producer or f"client-{uuid.uuid4().hex[:12]}"
        if producer_kind(self.producer) != CLIENT:
            raise ValueError(f"producer id {self.producer!r} is a service's name; a client's may not start with "
                             "'match.', 'risk.', 'liquidation.' or be 'oracle'")
        self._inbox = TolerantReader(ACCOUNT_EVENTS, f"client {self.producer}")
        self.seq = time.time_ns()
        self.timeout_s = timeout_s
        self.events: list[Message] = []
        self.keep = keep
        self._trimmed = 0  # events dropped from the front of ``events``
        self._waiters: list[tuple[Callable[[Message], bool], asyncio.Future]] = []
        self._listeners: list[Callable[[Message], None]] = []
        self._reader: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._consumer = None
        self.reflect_timeout_s = timeout_s / 2  # how long an answer waits for the snapshot that reflects it
        self.unreflected = 0  # answers no snapshot reflected in time
        self._service_seq: dict[str, int] = {}  # a service producer -> the highest sequence number read
        self.implausible = 0  # services' messages skipped for an implausible sequence number
        self._asking: dict[int, float] = {}  # id of a command sent -> when (loop time), until answered

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._consumer = self.bus.consumer(ACCOUNT_EVENTS, self.producer, on_assigned=self._assigned)
        self._reader = asyncio.create_task(self._read())
        await asyncio.wait_for(self._ready.wait(), self.timeout_s)

    async def _assigned(self, partitions: set[int]) -> None:
        self._ready.set()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()

    async def _read(self) -> None:
        seen: set[tuple[str, int]] = set()
        older: set[tuple[str, int]] = set()  # the generation before, so the memory stays bounded
        while True:
            for record in await self._consumer.getmany(timeout_ms=50):
                for message in self._inbox.messages(record):
                    if not self._plausible(message):
                        continue
                    if not isinstance(message, MarginSnapshot):  # states: the newest (highest seq) counts
                        identity = (message.producer, message.seq)
                        if identity in seen or identity in older:
                            continue  # a fill reaches the partitions of both its accounts
                        seen.add(identity)
                        if len(seen) > 200_000:
                            older, seen = seen, set()
                    self.events.append(message)
                    if self.keep is not None and len(self.events) > 2 * self.keep:
                        self._trimmed += len(self.events) - self.keep
                        del self.events[:-self.keep]
                    for listener in self._listeners:
                        listener(message)
                    for predicate, future in list(self._waiters):
                        if not future.done() and predicate(message):
                            future.set_result(message)

    def _plausible(self, message: Message) -> bool:
        """A service's message whose sequence number jumps more than ``SERVICE_SEQ_STEP`` past
        its producer's last (or past 0) is skipped and counted: it would hide every real one
        after it (the newest snapshot wins)."""
        if producer_kind(message.producer) not in SERVICES_COUNTING:
            return True
        last = self._service_seq.get(message.producer, 0)
        if message.seq > last + SERVICE_SEQ_STEP:
            self.implausible += 1
            log.warning("client %s skipped %s from %r with sequence number %d, more than %d past its last (%d)",
                        self.producer, type(message).__name__, message.producer, message.seq, SERVICE_SEQ_STEP, last)
            return False
        if message.seq > last:
            self._service_seq[message.producer] = message.seq
        return True

    @property
    def skipped(self) -> int:
        """Account events not read: undecodable, or from a producer that may not send them."""
        return self._inbox.skipped

    def listen(self, callback: Callable[[Message], None]) -> None:
        """Call ``callback`` with every account event from now on, as it arrives."""
        self._listeners.append(callback)

    async def wait_for(self, predicate: Callable[[Message], bool], timeout_s: float | None = None,
                       after: int = 0) -> Message:
        """The first account event (already received, from the ``after``-th on, or
        coming) that matches."""
        for message in self.events[max(0, after - self._trimmed):]:
            if predicate(message):
                return message
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout_s or self.timeout_s)
        finally:
            self._waiters.remove(entry)

    # ------------------------------------------------------------------ commands

    @property
    def received(self) -> int:
        """How many events have arrived so far (``wait_for(after=received)``: only newer ones)."""
        return self._trimmed + len(self.events)

    def stamp(self) -> tuple[str, int]:
        self.seq += 1
        return self.producer, self.seq

    async def send(self, command: Message, deadline: float | None = None) -> None:
        """Check ``command`` against the contract and send it, within ``timeout_s`` (or by
        the event loop time ``deadline``)."""
        topic = RISK_IN
        try:
            codec(topic).check(command)
        except SchemaError as exc:
            field = exc.problem.rpartition(".")[2].rstrip(")") if exc.problem.endswith(")") else ""
            reason = _FIELD_REASONS.get(field, RejectReason.INVALID_AMOUNT if field == "amount" else
                                        RejectReason.INVALID_SIZE)
            raise Rejected(reason, f"{type(command).__name__} not sent: {exc.problem}") from None
        partition = partition_for(command.account, self.bus.partitions(topic))
        loop = asyncio.get_running_loop()
        timeout = self.timeout_s if deadline is None else max(0.001, deadline - loop.time())
        try:
            await asyncio.wait_for(self.bus.send([(topic, partition, None, codec(topic).encode(command))]), timeout)
        except TimeoutError:
            raise TimeoutError(f"{type(command).__name__} could not be sent within {self.timeout_s:g} s "
                               "(is the broker reachable?)") from None

    async def _ask(self, command: Message, predicate: Callable[[Message], bool]) -> Message:
        """Send ``command`` and wait for the first event after it that ``predicate``
        accepts; both within ``timeout_s``."""
        mark = self.received  # an older event (a replayed history) is not the answer
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout_s
        self._asking[id(command)] = started
        try:
            await self.send(command, deadline)
            return await self.wait_for(predicate, max(0.001, deadline - loop.time()), after=mark)
        finally:
            del self._asking[id(command)]

    def waiting(self) -> tuple[int, float]:
        """How many commands wait for their answer, and for how long the oldest has (s)."""
        if not self._asking:
            return 0, 0.0
        return len(self._asking), asyncio.get_running_loop().time() - min(self._asking.values())

    async def _command(self, command: Any) -> CommandAccepted:
        mark = self.received
        answer = await self._ask(command, lambda m: isinstance(m, (CommandAccepted, CommandRejected))
                                 and m.ref_producer == command.producer and m.ref_seq == command.seq)
        if isinstance(answer, CommandRejected):
            raise Rejected(answer.reason, answer.detail)
        await self.reflected(command.account, [answer], mark)
        return answer

    async def reflected(self, account: str, answers: list[Message], after: int = 0,
                        timeout_s: float | None = None) -> MarginSnapshot | None:
        """Wait until a margin snapshot of ``account`` reflects ``answers`` (risk stamps each
        snapshot with the newest sequence number it applied per producer), so that every
        read after an answer shows it (read-your-writes, docs/gateway.md "Consistency").
        None, and counted in ``unreflected``, if none comes in time (a risk service that is
        down or far behind); the answer itself stands."""
        needed: dict[str, int] = {}
        for answer in answers:
            needed[answer.producer] = max(needed.get(answer.producer, 0), answer.seq)

        def reflects(message: Message) -> bool:
            return (isinstance(message, MarginSnapshot) and message.account == account
                    and all(message.applied.get(producer, -1) >= seq for producer, seq in needed.items()))

        try:
            return await self.wait_for(reflects, timeout_s or self.reflect_timeout_s, after=after)
        except TimeoutError:
            self.unreflected += 1
            log.warning("client %s: no margin snapshot of %s reflected %s within %.1f s", self.producer, account,
                        ", ".join(f"{p}#{s}" for p, s in needed.items()), timeout_s or self.reflect_timeout_s)
            return None

    async def deposit(self, account: str, amount: str) -> CommandAccepted:
        return await self._command(Deposit(*self.stamp(), account, _amount(amount), time.time_ns()))

    async def withdraw(self, account: str, amount: str) -> CommandAccepted:
        return await self._command(Withdraw(*self.stamp(), account, _amount(amount), time.time_ns()))

    async def set_margin_mode(self, account: str, market: str, mode: MarginMode) -> CommandAccepted:
        return await self._command(SetMarginMode(*self.stamp(), account, market, mode, time.time_ns()))

    async def set_leverage(self, account: str, market: str, leverage: int) -> CommandAccepted:
        return await self._command(SetLeverage(*self.stamp(), account, market, leverage, time.time_ns()))

    async def adjust_margin(self, account: str, market: str, amount: str) -> CommandAccepted:
        return await self._command(AdjustIsolatedMargin(*self.stamp(), account, market, _amount(amount),
                                                         time.time_ns()))

    async def place(self, account: str, market: str, side: Side, size: str, price: str | None = None, *,
                    tif: TimeInForce = TimeInForce.GTC, reduce_only: bool = False,
                    stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
                    client_order_id: str | None = None, wait_closed: bool | None = None) -> OrderResult:
        """Place an order; returns once it is accepted (and, for IOC, FOK and market orders,
        or with ``wait_closed=True``, once it has ended), with its fills."""
        spec = self._market(market)
        kind = OrderType.MARKET if price is None else OrderType.LIMIT
        try:
            ticks = 0 if price is None else spec.price_to_ticks(price)
            lots = spec.size_to_lots(size)
        except UnitError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        client_order_id = client_order_id or uuid.uuid4().hex[:16]
        command = PlaceOrder(*self.stamp(), account, market, client_order_id, side, kind, tif, ticks,
                             lots, reduce_only, stp, time.time_ns())
        mark = self.received
        answer = await self._ask(command, lambda m: isinstance(m, (OrderAccepted, OrderRejected))
                                 and m.account == account and m.client_order_id == client_order_id)
        if isinstance(answer, OrderRejected):
            raise Rejected(answer.reason, answer.detail, answer.order_id)
        result = OrderResult(answer, since=mark)
        if wait_closed is None:
            wait_closed = kind is OrderType.MARKET or tif in (TimeInForce.IOC, TimeInForce.FOK)
        if wait_closed:
            await self.closed(result)
        await self.reflected(account, [answer, *result.fills, *([result.closed] if result.closed else [])], mark)
        return result

    async def place_conditional(self, account: str, market: str, side: Side, size: str, condition: Condition, *,
                                trigger: str | None = None, price: str | None = None,
                                source: TriggerSource = TriggerSource.MARK, reduce_only: bool = False,
                                close_position: bool = False, activation: str | None = None,
                                callback_pct: str | None = None, tif: TimeInForce = TimeInForce.GTC,
                                stp: SelfTradePrevention = SelfTradePrevention.CANCEL_TAKER,
                                client_order_id: str | None = None) -> OrderResult:
        """Place a conditional order (docs/matching.md, "Conditional orders"): a stop or
        take-profit at ``trigger``, or a trailing stop with ``callback_pct`` (0.1 to 10, by
        0.1) and an optional ``activation`` price; with ``price`` it becomes a limit order
        when it fires, else a market order. ``close_position`` closes the whole position
        (``size`` "0"). Returns once it waits for its trigger; ``triggered`` waits for that."""
        spec = self._market(market)
        try:
            ticks = 0 if price is None else spec.price_to_ticks(price)
            lots = spec.size_to_lots(size)
            trigger_ticks = 0 if trigger is None else spec.price_to_ticks(trigger)
            activation_ticks = 0 if activation is None else spec.price_to_ticks(activation)
            callback = 0 if callback_pct is None else _callback(callback_pct)
        except UnitError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        client_order_id = client_order_id or uuid.uuid4().hex[:16]
        command = PlaceOrder(*self.stamp(), account, market, client_order_id, side,
                             OrderType.MARKET if price is None else OrderType.LIMIT, tif, ticks, lots, reduce_only,
                             stp, time.time_ns(), condition, trigger_ticks, source, close_position, activation_ticks,
                             callback)
        mark = self.received
        answer = await self._ask(command, lambda m: isinstance(m, (OrderAccepted, OrderRejected))
                                 and m.account == account and m.client_order_id == client_order_id)
        if isinstance(answer, OrderRejected):
            raise Rejected(answer.reason, answer.detail, answer.order_id)
        await self.reflected(account, [answer], mark)
        return OrderResult(answer, since=mark)

    async def triggered(self, result: OrderResult, timeout_s: float | None = None) -> OrderTriggered:
        """Wait until a conditional order fires; ``Rejected`` if it ends first (cancelled,
        its position gone, a liquidation) or is refused when it fires (margin)."""
        order_id = result.order_id
        answer = await self.wait_for(lambda m: isinstance(m, (OrderTriggered, OrderClosed)) and m.order_id == order_id,
                                     timeout_s, after=result.since)
        if isinstance(answer, OrderClosed):
            raise Rejected(RejectReason.UNKNOWN_ORDER, f"conditional order {order_id} ended before its trigger: "
                                                       f"{answer.reason.name}", order_id)
        return answer

    def conditional_orders(self, account: str) -> list[OrderAccepted]:
        """The account's conditional orders still waiting, as far as the events this client
        has read show (placed through this client or seen on its partitions)."""
        waiting: dict[int, OrderAccepted] = {}
        for m in self.events:
            if getattr(m, "account", None) != account:
                continue
            if isinstance(m, OrderAccepted) and m.condition is not Condition.NONE:
                waiting[m.order_id] = m
            elif isinstance(m, (OrderTriggered, OrderClosed, OrderRejected)):
                waiting.pop(m.order_id, None)
        return list(waiting.values())

    async def closed(self, result: OrderResult) -> OrderResult:
        """Wait until the order has ended; fills and the close are filled in."""
        order_id = result.order_id
        result.closed = await self.wait_for(lambda m: isinstance(m, OrderClosed) and m.order_id == order_id,
                                            after=result.since)
        result.fills = [m for m in self.events[max(0, result.since - self._trimmed):] if isinstance(m, Fill)
                        and order_id in (m.taker_order_id, m.maker_order_id)]
        return result

    async def cancel(self, account: str, market: str, order_id: int) -> OrderClosed:
        command = CancelOrder(*self.stamp(), account, market, order_id, time.time_ns())
        mark = self.received
        answer = await self._ask(command, lambda m: (isinstance(m, OrderClosed) and m.order_id == order_id)
                                 or (isinstance(m, CommandRejected) and m.order_id == order_id
                                     and m.account == account))  # risk's or matching's refusal
        if isinstance(answer, CommandRejected):
            raise Rejected(answer.reason, answer.detail)
        await self.reflected(account, [answer], mark)
        return answer

    async def amend(self, account: str, market: str, order_id: int, price: str, size: str,
                    requeue: bool = False) -> OrderAmended:
        """Change a resting order's price and total size; returns the ``OrderAmended``
        (``Rejected`` with the reason if it cannot be). A size decrease at the same price
        keeps time priority unless ``requeue``."""
        spec = self._market(market)
        try:
            ticks, lots = spec.price_to_ticks(price), spec.size_to_lots(size)
        except UnitError as exc:
            raise Rejected(exc.reason, str(exc)) from None
        mark = self.received
        answer = await self._ask(AmendOrder(*self.stamp(), account, market, order_id, ticks, lots, time.time_ns(),
                                            requeue=requeue),
                                 lambda m: (isinstance(m, OrderAmended) and m.order_id == order_id)
                                 or (isinstance(m, CommandRejected) and m.order_id == order_id
                                     and m.account == account))
        if isinstance(answer, CommandRejected):
            raise Rejected(answer.reason, answer.detail, order_id)
        await self.reflected(account, [answer], mark)
        return answer

    def _market(self, market: str) -> Market:
        spec = self.markets.get(market)
        if spec is None:
            raise Rejected(RejectReason.UNKNOWN_MARKET, f"unknown market {market!r}; markets: {', '.join(self.markets)}")
        return spec

    async def snapshot(self, account: str) -> MarginSnapshot:
        """The newest margin snapshot of the account (the highest ``seq``; waiting for one
        if none yet). After a service restart an older one can arrive late; it is ignored."""
        snapshots = [m for m in self.events if isinstance(m, MarginSnapshot) and m.account == account]
        if snapshots:
            return max(snapshots, key=lambda m: m.seq)
        return await self.wait_for(lambda m: isinstance(m, MarginSnapshot) and m.account == account)
