"""The oracle service: publishes index/mark prices and funding on a timer.

It is a source, not a fold: every tick (default 250 ms) it asks ``exchange.oracle.Oracle``
for marks and funding at the simulation time (wall time since its epoch, kept in the
state directory so that a restart continues the same price path) and publishes them to
every ``risk.in`` partition and to ``market.data``. It reads ``market.data`` (its one
input topic) only to follow the book and trades for the mark price.

Its producer id is ``oracle`` and its sequence numbers start from the wall clock in
nanoseconds, so they keep increasing across restarts without any stored counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

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
from schemas import MARKET_DATA, RISK_IN, SchemaError, codec
from services.runtime.bus import Bus
from services.runtime.runner import Outbox

log = logging.getLogger(__name__)

START_PRICES = {"BTC": 65_000.0, "ETH": 3_500.0, "SOL": 150.0}


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
    moves: dict[str, list[Shock]] = {}
    for spec in shocks:
        market, text = split(spec, ":", "shock")
        moves.setdefault(market, []).append(Shock.parse(text))
    for market, listed in moves.items():
        sources[market] = Shocked(sources[market], listed)
    return sources


class OracleService:
    def __init__(self, bus: Bus, markets: dict[str, Market], sources: dict[str, IndexSource],
                 state_dir: str | Path | None = None, tick_s: float = 0.25, funding_interval_s: float = 3600.0):
        self.bus = bus
        self.oracle = Oracle(markets, sources, producer="oracle", funding_interval_s=funding_interval_s)
        self.oracle.seq = time.time_ns()
        self.tick_s = tick_s
        self.epoch = self._epoch(Path(state_dir) / "oracle" if state_dir else None)
        self.ticks = 0

    @staticmethod
    def _epoch(directory: Path | None) -> int:
        now = time.time_ns()
        if directory is None:
            return now
        path = directory / "epoch"
        if path.exists():
            return int(path.read_text())
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(str(now))
        return now

    async def run(self, stop: asyncio.Event) -> None:
        consumer = self.bus.consumer(MARKET_DATA, "perpsim-oracle")
        market_codec = codec(MARKET_DATA)
        next_tick = time.monotonic()
        last_status = time.monotonic()
        try:
            while not stop.is_set():
                timeout = max(0.0, next_tick - time.monotonic())
                for record in await consumer.getmany(timeout_ms=int(timeout * 1000), max_records=5000):
                    try:
                        for message in market_codec.decode(record.value):
                            self.oracle.observe(message)
                    except SchemaError as exc:
                        log.warning("service=oracle skipped undecodable market data: %s", exc)
                if time.monotonic() < next_tick:
                    continue
                next_tick += self.tick_s
                now = time.time_ns()
                outbox = Outbox(self.bus)
                for event in self.oracle.tick(now - self.epoch):
                    event.ts = now
                    outbox.to_all(RISK_IN, event)
                    outbox.to(MARKET_DATA, event.market, event)
                await self.bus.send(outbox.drain())
                self.ticks += 1
                if time.monotonic() - last_status >= 10:
                    marks = ", ".join(f"{symbol} {calc.last or '-'}" for symbol, calc in self.oracle.marks.items())
                    log.info("service=oracle status ticks=%d seq=%d last_trades=[%s] sim_time=%.1fs", self.ticks,
                             self.oracle.seq, marks, (now - self.epoch) / SECOND)
                    last_status = time.monotonic()
        finally:
            await consumer.stop()
