"""`perpsim loadtest`: find the order rate the running exchange sustains.

Takers send IOC buys against a deep resting offer (each one fills) at a fixed rate for a
step, then at ``factor`` times that rate, and so on. Each step reports the rate asked,
the rate achieved (acceptances per second), and submit→acceptance latency percentiles.
The ramp stops when p99 passes the limit or the exchange falls behind (under 90% of the
rate asked); the sustainable rate is the last step that did neither.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from exchange.markets import default_markets
from schemas import RISK_IN, codec, topic_partitions
from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import OrderAccepted, PlaceOrder
from services.client import Client
from services.runtime.bus import partition_for
from services.runtime.kafka import KafkaBus, KafkaSettings

MARKET = "SOL-PERP"
TAKERS = 16


@dataclass
class Step:
    asked: float
    achieved: float
    p50_ms: float
    p99_ms: float
    sent: int
    accepted: int


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("inf")


async def _step(bus, client: Client, rate: float, seconds: float, sent_at: dict, latencies: list) -> Step:
    latencies.clear()
    partitions = bus.partitions(RISK_IN)
    total = int(rate * seconds)
    started = time.perf_counter()
    for index in range(total):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        account = f"load{index % TAKERS}"
        stamp = client.stamp()
        order_id = f"l{stamp[1]}"
        sent_at[order_id] = time.perf_counter()
        command = PlaceOrder(*stamp, account, MARKET, order_id, Side.BUY, OrderType.LIMIT, TimeInForce.IOC, 15_000,
                             1, False, SelfTradePrevention.NONE, time.time_ns())
        await bus.send([(RISK_IN, partition_for(account, partitions), None, codec(RISK_IN).encode(command))],
                       wait=False)
    sending = time.perf_counter() - started
    deadline = time.perf_counter() + max(5.0, seconds)
    while len(latencies) < total and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    accepted = len(latencies)
    return Step(rate, accepted / max(sending, time.perf_counter() - started - 0.0), _percentile(latencies, 0.5) * 1e3,
                _percentile(latencies, 0.99) * 1e3, total, accepted)


async def run_loadtest(options, settings: KafkaSettings, stop: asyncio.Event, load) -> int:
    bus = KafkaBus(settings, topic_partitions(options.partitions))
    await bus.start()
    sent_at: dict[str, float] = {}
    latencies: list[float] = []

    def on_event(message) -> None:
        if isinstance(message, OrderAccepted):
            sent = sent_at.pop(message.client_order_id, None)
            if sent is not None:
                latencies.append(time.perf_counter() - sent)

    try:
        async with Client(bus, default_markets(), producer="loadtest", timeout_s=60) as client:
            client.listen(on_event)
            await client.deposit("maker", "1000000000")
            for index in range(TAKERS):
                await client.deposit(f"load{index}", "100000000")
            await client.place("maker", MARKET, Side.SELL, "1000000", "150")
            await _step(bus, client, min(200.0, load.rate), 1.0, sent_at, latencies)  # warm-up, not reported
            await asyncio.sleep(1.0)
            print(f"{'asked/s':>9} {'achieved/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'accepted':>9}", flush=True)
            rate, sustainable, broke = load.rate, None, None
            while rate <= load.max_rate and not stop.is_set():
                step = await _step(bus, client, rate, load.step_s, sent_at, latencies)
                print(f"{step.asked:>9,.0f} {step.achieved:>11,.0f} {step.p50_ms:>8.1f} {step.p99_ms:>8.1f} "
                      f"{step.accepted:>6}/{step.sent}", flush=True)
                if step.p99_ms > load.p99_limit_ms or step.accepted < 0.9 * step.sent:
                    broke = step
                    break
                sustainable = step
                rate *= load.factor
                await asyncio.sleep(1.0)  # let the exchange drain between steps
            if sustainable:
                print(f"sustainable: {sustainable.asked:,.0f} orders/s (p99 {sustainable.p99_ms:.1f} ms)")
            else:
                print(f"not even {load.rate:,.0f} orders/s stays under p99 {load.p99_limit_ms:g} ms")
            if broke:
                why = (f"p99 {broke.p99_ms:.1f} ms > {load.p99_limit_ms:g} ms" if broke.p99_ms > load.p99_limit_ms
                       else f"only {broke.accepted} of {broke.sent} accepted in time")
                print(f"latency breaks at {broke.asked:,.0f} orders/s: {why}")
            return 0
    finally:
        await bus.stop()
