"""The oracle service: publishes index/mark prices and funding on a timer.

It is a source, not a fold: every tick (default 250 ms) it asks ``exchange.oracle.Oracle``
for marks and funding at the simulation time (wall time since its epoch, kept on the bus
in the ``state`` topic, so that a restart continues the same price path, and a fresh
broker starts a fresh one) and publishes them to every ``risk.in`` partition and to
``market.data``. It reads ``market.data`` (its one input topic) only to follow the book
and trades for the mark price; what it cannot decode, or what a producer may not send
there, it dead-letters and reads on.

Its producer id is ``oracle`` and its sequence numbers start from the wall clock in
nanoseconds, so they keep increasing across restarts without any stored counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from exchange.mark import MARK_BAND, MarkRule
from exchange.markets import Market
from exchange.oracle import (
    SECOND,
    CsvReplay,
    Flat,
    IndexSource,
    Oracle,
    OracleError,
    RandomWalk,
    Shock,
    Shocked,
)
from exchange.venues import FundingRule
from schemas import DEADLETTER, MARKET_DATA, SchemaError, codec
from schemas.events import DeadLetter, MarkPrice
from schemas.state import STATE_VERSION, OracleState, Snapshot, encode_snapshot
from schemas.topics import ORACLE, ROUTES, refusal
from services.runtime.bus import Bus, partition_for
from services.runtime.claims import ClaimWatch, instance_id, take
from services.runtime.runner import Outbox
from services.runtime.state import StateStore

log = logging.getLogger(__name__)

START_PRICES = {"BTC": 65_000.0, "ETH": 3_500.0, "SOL": 150.0}
CLAMP_FAULT_S = 5.0
SILENT_S = 3.0  # an oracle publishes every 250 ms: this long without a mark, none is running
PATIENCE_S = 8.0  # marks that keep coming this long are another oracle's, alive
TAIL_RECORDS = 5000  # how far back in each market.data partition a start looks for the newest mark


def parse_sources(markets: dict[str, Market], prices: tuple[str, ...] = (), shocks: tuple[str, ...] = (),
                  replays: tuple[str, ...] = (), flat: bool = False, volatility: float = 0.6,
                  seed: int = 1) -> dict[str, IndexSource]:
    """Index sources from CLI-style specs: ``SOL-PERP=150`` start prices, ``SOL-PERP:-30%
    over 10s at 60s`` shocks, ``SOL-PERP=prices.csv`` replays; random walks otherwise."""

    def split(spec: str, separator: str, what: str) -> tuple[str, str]:
        if separator not in spec:
            raise OracleError(f"{what} {spec!r} must look like MARKET{separator}VALUE")
        market, value = (part.strip() for part in spec.split(separator, 1))
        if market not in markets:
            raise OracleError(f"{what} {spec!r} names unknown market {market!r}; markets: {', '.join(markets)}")
        return market, value

    start = {symbol: START_PRICES.get(market.base, 100.0) for symbol, market in markets.items()}
    for spec in prices:
        market, value = split(spec, "=", "price")
        try:
            start[market] = float(value)
        except ValueError:
            raise OracleError(f"price {spec!r}: {value!r} is not a number") from None
    sources: dict[str, IndexSource] = {}
    for index, (symbol, price) in enumerate(sorted(start.items())):
        sources[symbol] = Flat(price) if flat else RandomWalk(price, volatility=volatility, seed=seed + index)
    for spec in replays:
        market, path = split(spec, "=", "replay")
        sources[market] = CsvReplay.from_file(Path(path))
    for market, listed in parse_shocks(markets, shocks).items():
        sources[market] = Shocked(sources[market], listed)
    return sources


def parse_shocks(markets: dict[str, Market], shocks: tuple[str, ...] = ()) -> dict[str, list[Shock]]:
    """``SOL-PERP:-30% over 10s at 60s`` specs, by market."""
    moves: dict[str, list[Shock]] = {}
    for spec in shocks:
        if ":" not in spec:
            raise OracleError(f"shock {spec!r} must look like MARKET:MOVE")
        market, text = (part.strip() for part in spec.split(":", 1))
        if market not in markets:
            raise OracleError(f"shock {spec!r} names unknown market {market!r}; markets: {', '.join(markets)}")
        moves.setdefault(market, []).append(Shock.parse(text))
    return moves


class OracleService:
    def __init__(self, bus: Bus, markets: dict[str, Market], sources: dict[str, IndexSource],
                 tick_s: float = 0.25, funding_interval_s: float | None = None, funding: FundingRule | None = None,
                 mark_rule: MarkRule | None = None):
        """``funding``: the venue's rule (``exchange.venues``); ``funding_interval_s``: a
        scenario's shorter interval (each payment the same share of the period's rate)."""
        self.bus = bus
        self.oracle = Oracle(markets, sources, producer="oracle", funding_interval_s=funding_interval_s,
                             funding=funding, mark_rule=mark_rule)
        self.oracle.seq = time.time_ns()
        self.tick_s = tick_s
        self.epoch: int | None = None
        self.ticks = 0
        self.dead_letters = 0
        self._clamped: dict[str, float | None] = {}  # market -> since when its mark sits at the clamp

    async def _resumed_epoch(self) -> int | None:
        """The simulation clock's epoch on the bus (a restarted oracle goes on from it)."""
        snapshot = await StateStore(self.bus, "oracle").load(0)
        if snapshot is not None and isinstance(snapshot.state, OracleState):
            log.info("service=oracle resumes the simulation clock at %.1f s",
                     (time.time_ns() - snapshot.state.epoch_ns) / SECOND)
            return snapshot.state.epoch_ns
        return None

    async def _new_epoch(self, epoch: int) -> int:
        """A new clock, starting at the first tick (so a scenario's second 0 is the first
        mark anyone sees), written to the bus."""
        await StateStore(self.bus, "oracle").save(
            0, 0, encode_snapshot(Snapshot(STATE_VERSION, "oracle", 0, 0, 0, {}, OracleState(epoch), epoch)))
        await self.bus.flush()
        return epoch

    def _watch_clamp(self, mark: MarkPrice, now: float) -> None:
        """Log as a fault a mark that has sat at its clamp (``MARK_BAND`` from the index) for
        ``CLAMP_FAULT_S``: the book or the trades it follows are far from the index (a thin or
        forged print), and the mark no longer tells where the market is. Once per episode."""
        edge = abs(mark.mark_price - mark.index_price) >= mark.index_price * MARK_BAND - 1
        if not edge:
            if mark.market in self._clamped:
                log.info("service=oracle %s: the mark left its clamp", mark.market)
            self._clamped.pop(mark.market, None)
            return
        since = self._clamped.setdefault(mark.market, now)
        if since is not None and now - since >= CLAMP_FAULT_S:
            log.warning("service=oracle fault: the %s mark has sat at its clamp, %.0f%% from the index, for %.0f s "
                        "(mark %d, index %d ticks): the book or trades it follows are that far from the index",
                        mark.market, MARK_BAND * 100, now - since, mark.mark_price, mark.index_price)
            self._clamped[mark.market] = None  # said once

    def _dead_letter(self, outbox: Outbox, record, reason: str) -> None:
        self.dead_letters += 1
        log.warning("service=oracle market.data[%d] offset %d dead letter: %s", record.partition, record.offset,
                    reason)
        outbox.to_partition(DEADLETTER, 0, DeadLetter("oracle.dlq", time.time_ns(), record.topic, record.partition,
                                                      record.offset, reason, bytes(record.value), time.time_ns()))

    async def _newest_mark_ns(self) -> int | None:
        """When the newest mark under the oracle's name was stamped, from the tail of each
        market's ``market.data`` partition (None if none there)."""
        newest = None
        market_codec = codec(MARKET_DATA)
        partitions = {partition_for(symbol, self.bus.partitions(MARKET_DATA)) for symbol in self.oracle.markets}
        for partition in sorted(partitions):
            begin, end = await self.bus.offsets(MARKET_DATA, partition)
            # up to the end reported (not to the end there is: on a live partition that never comes)
            for record in await self.bus.read(MARKET_DATA, partition, max(begin, end - TAIL_RECORDS), end):
                try:
                    messages = market_codec.decode(record.value)
                except SchemaError:
                    continue
                for message in messages:
                    if type(message) is MarkPrice and message.producer == self.oracle.producer:
                        newest = max(newest or 0, message.ts)
        return newest

    async def wait_for_the_name(self, stop: asyncio.Event, silent_s: float = SILENT_S,
                                patience_s: float = PATIENCE_S) -> None:
        """One oracle per venue (DESIGN.md, "One writer per producer name"): before it
        publishes, an oracle waits until no mark under its name is younger than
        ``silent_s`` (a restarted oracle's predecessor is silent at once); if marks keep
        coming for ``patience_s``, another oracle is running and this one refuses to start
        (``OracleError``). Before, a second oracle started by mistake moved every mark, and
        the real one's were dropped for good once it stopped."""
        deadline = time.monotonic() + patience_s
        while not stop.is_set():
            newest = await self._newest_mark_ns()
            age_s = None if newest is None else (time.time_ns() - newest) / SECOND
            if age_s is None or age_s >= silent_s:
                return
            if time.monotonic() >= deadline:
                raise OracleError(f"another oracle is publishing marks on this venue (its newest {age_s:.1f} s ago); "
                                  "two would move every mark twice. Stop it first (one `perpsim oracle` per venue)")
            log.info("service=oracle another oracle published a mark %.1f s ago; waiting for it to stop", age_s)
            await asyncio.sleep(min(1.0, silent_s))

    async def run(self, stop: asyncio.Event) -> None:
        await self.wait_for_the_name(stop)
        # its name, at an epoch above any before (services.runtime.claims): an oracle that was
        # paused and comes back after this one took over finds it, and stops
        instance = instance_id("oracle")
        claim = await take(self.bus, ORACLE, instance)
        watch = ClaimWatch(self.bus, instance)
        watch.hold(claim)
        watching = asyncio.create_task(watch.run(), name="claims")
        self.epoch = await self._resumed_epoch()
        consumer = self.bus.consumer(MARKET_DATA, "perpsim-oracle")
        market_codec = codec(MARKET_DATA)
        next_tick = time.monotonic()
        last_status = time.monotonic()
        try:
            while not stop.is_set():
                timeout = max(0.0, next_tick - time.monotonic())
                for fenced in watch.pop_found():
                    raise fenced  # another oracle took the name: it goes on, this one stops
                outbox = Outbox(self.bus)
                outbox.stamp(ORACLE, claim.epoch)
                for record in await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=5000):
                    try:
                        messages = market_codec.decode(record.value)
                    except SchemaError as exc:
                        self._dead_letter(outbox, record, str(exc))
                        continue
                    for message in messages:
                        reason = refusal(MARKET_DATA, message)
                        if reason is None:
                            self.oracle.observe(message)
                        else:
                            self._dead_letter(outbox, record, reason)
                if time.monotonic() < next_tick:
                    if len(outbox):
                        await self.bus.send(outbox.drain())
                    continue
                next_tick += self.tick_s
                now = time.time_ns()
                if self.epoch is None:
                    self.epoch = await self._new_epoch(now)
                events = self.oracle.tick(now - self.epoch)
                for event in events:
                    event.ts = now
                    if type(event) is MarkPrice:
                        self._watch_clamp(event, time.monotonic())
                outbox.route(ROUTES[ORACLE], events)
                await self.bus.send(outbox.drain())
                self.ticks += 1
                if time.monotonic() - last_status >= 10:
                    marks = ", ".join(f"{symbol} {calc.last or '-'}" for symbol, calc in self.oracle.marks.items())
                    log.info("service=oracle status ticks=%d seq=%d last_trades=[%s] sim_time=%.1fs dead_letters=%d",
                             self.ticks, self.oracle.seq, marks, (now - self.epoch) / SECOND, self.dead_letters)
                    last_status = time.monotonic()
        finally:
            watching.cancel()
            await consumer.stop()
