"""End to end over Kafka: orders through all four services, against a single hop.

Starts the embedded broker and every service (matching, risk, liquidation, oracle) as its
own process, then measures, in the same run:

1. throughput: N taker orders (IOC, each crossing a deep resting offer) submitted by the
   native client as fast as it can, one record per order like a bot would, until every one
   has come back with its fill; orders/s;
2. latency: takers paced at a fixed rate (default 5,000/s) for a few seconds; submit→fill
   p50/p99, the fill as seen by the client on account.events;
3. the single-hop ceiling: one producer → broker → one consumer with the same message (a
   PlaceOrder in a one-message record), msgs/s; and one hop's latency at the paced rate,
   the floor under each of the three hops from an order to its fill.

Runs 1 and 2 twice, the services on asyncio's loop and on uvloop (services/runtime/loop.py),
each on a broker of its own. The last lines are uvloop / asyncio and e2e throughput (on
uvloop) / single-hop ceiling.

    python -m bench.e2e [--orders 20000] [--rate 5000] [--seconds 4] [--partitions 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from exchange.markets import default_markets
from schemas import RISK_IN, codec, topic_partitions
from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import Fill, OrderAccepted, OrderClosed, PlaceOrder
from services.client import Client
from services.runtime.broker import EmbeddedBroker
from services.runtime.bus import partition_for
from services.runtime.kafka import KafkaBus, KafkaSettings

ROOT = Path(__file__).resolve().parent.parent
MARKET = "SOL-PERP"


def order(client: Client, account: str, client_order_id: str) -> PlaceOrder:
    return PlaceOrder(*client.stamp(), account, MARKET, client_order_id, Side.BUY, OrderType.LIMIT,
                      TimeInForce.IOC, 15_000, 1, False, SelfTradePrevention.NONE, time.time_ns())


async def prepare(client: Client, takers: int) -> list[str]:
    await client.deposit("maker", "1000000000")
    accounts = [f"taker{i}" for i in range(takers)]
    for account in accounts:
        await client.deposit(account, "10000000")
    await client.place("maker", MARKET, Side.SELL, "1000000", "150")  # a deep offer at 150
    return accounts


async def burst(client: Client, bus: KafkaBus, count: int, make: Callable[[int], tuple[str, PlaceOrder]]) -> float:
    """Send ``count`` orders (``make(index)``: the account and its order) as fast as they go,
    one record each; seconds until every taker order has closed."""
    done = asyncio.Event()
    closed = 0

    def watch(message) -> bool:
        nonlocal closed
        if isinstance(message, OrderClosed) and message.account.startswith("taker"):
            closed += 1
            if closed >= count:
                done.set()
        return False

    waiter = asyncio.create_task(client.wait_for(watch, timeout_s=600, after=len(client.events)))
    partitions = bus.partitions(RISK_IN)
    encode = codec(RISK_IN).encode
    started = time.perf_counter()
    for index in range(count):
        account, command = make(index)
        await bus.send([(RISK_IN, partition_for(account, partitions), None, encode(command))], wait=False)
    await asyncio.wait_for(done.wait(), 600)
    elapsed = time.perf_counter() - started
    waiter.cancel()
    return elapsed


async def throughput(client: Client, bus: KafkaBus, accounts: list[str], count: int) -> float:
    def make(index: int) -> tuple[str, PlaceOrder]:
        account = accounts[index % len(accounts)]
        return account, order(client, account, f"t{index}")

    return count / await burst(client, bus, count, make)


async def latency(client: Client, bus: KafkaBus, accounts: list[str], rate: int, seconds: float) -> list[float]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    accepted: dict[int, str] = {}  # order id -> client order id
    filled: dict[int, float] = {}  # order id -> when its fill arrived

    # A fill reaches the partitions of both accounts, so it can arrive (through the maker's
    # partition) before the taker's acceptance: pair them in whichever order they come.
    def pair(order_id: int) -> None:
        if order_id in accepted and order_id in filled:
            key = accepted.pop(order_id)
            latencies.append(filled.pop(order_id) - sent.pop(key))

    def watch(message) -> bool:
        if isinstance(message, Fill) and message.taker_account.startswith("taker"):
            filled[message.taker_order_id] = time.perf_counter()
            pair(message.taker_order_id)
        elif isinstance(message, OrderAccepted) and message.client_order_id in sent:
            accepted[message.order_id] = message.client_order_id
            pair(message.order_id)
        return False

    waiter = asyncio.create_task(client.wait_for(watch, timeout_s=600, after=len(client.events)))
    partitions = bus.partitions(RISK_IN)
    total = int(rate * seconds)
    started = time.perf_counter()
    for index in range(total):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        account = accounts[index % len(accounts)]
        key = f"l{index}"
        command = order(client, account, key)
        sent[key] = time.perf_counter()
        await bus.send([(RISK_IN, partition_for(account, partitions), None, codec(RISK_IN).encode(command))],
                       wait=False)
    deadline = time.perf_counter() + 60
    while sent and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    waiter.cancel()
    return latencies


async def joined(bus: KafkaBus, consumer, topic: str, probe: bytes = b"") -> None:
    """Until ``consumer`` has joined its group and reads: a probe record comes back."""
    await bus.send([(topic, 0, None, probe)])
    deadline = time.perf_counter() + 60
    while not await consumer.getmany(timeout_ms=200):
        if time.perf_counter() > deadline:
            raise SystemExit(f"the bench's consumer of {topic} got nothing in 60 s")


async def single_hop(bootstrap: str, count: int) -> float:
    bus = KafkaBus(KafkaSettings(bootstrap), {"bench.hop": 1})
    await bus.start()
    consumer = bus.consumer("bench.hop", "bench-hop")
    payload = codec(RISK_IN).encode(PlaceOrder("bench", 1, "taker0", MARKET, "t", Side.BUY, OrderType.LIMIT,
                                               TimeInForce.IOC, 15_000, 1))
    await joined(bus, consumer, "bench.hop")
    received = 0
    started = time.perf_counter()

    async def consume() -> None:
        nonlocal received
        while received < count:
            received += len(await consumer.getmany(timeout_ms=200, max_records=5000))

    reader = asyncio.create_task(consume())
    for _ in range(count):
        await bus.send([("bench.hop", 0, None, payload)], wait=False)
    await asyncio.wait_for(reader, 300)
    elapsed = time.perf_counter() - started
    await bus.stop()
    return count / elapsed


async def hop_latency(bootstrap: str, rate: int, seconds: float) -> list[float]:
    """One hop's latency at ``rate`` records/s, each record holding its send time: the
    floor of every hop of the pipeline (the services' consumer and producer settings)."""
    topic = f"bench.hop.latency.{time.time_ns()}"  # nothing older in it
    bus = KafkaBus(KafkaSettings(bootstrap), {topic: 1})
    await bus.start()
    consumer = bus.consumer(topic, f"{topic}.reader")
    await joined(bus, consumer, topic, repr(time.perf_counter()).encode())
    count = int(rate * seconds)
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < count:
            for record in await consumer.getmany(timeout_ms=200, max_records=5000):
                latencies.append(time.perf_counter() - float(record.value))

    reader = asyncio.create_task(consume())
    started = time.perf_counter()
    for index in range(count):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        await bus.send([(topic, 0, None, repr(time.perf_counter()).encode())], wait=False)
    await asyncio.wait_for(reader, 300)
    await bus.stop()
    return sorted(latencies)


async def services_run(args: argparse.Namespace, loop: str) -> tuple[float, list[float]]:
    """The services on their own broker, on event loop ``loop``: (orders/s, latencies)."""
    import os

    broker = EmbeddedBroker()
    bootstrap = await broker.start()
    state = Path(tempfile.mkdtemp(prefix="perpsim-bench-"))
    processes = [subprocess.Popen([sys.executable, "-m", "services.cli", name, "--bootstrap", bootstrap,
                                   "--partitions", str(args.partitions), "--state-dir", str(state),
                                   "--log-level", "WARNING", *(["--flat"] if name == "oracle" else [])],
                                  cwd=ROOT, env={**os.environ, "PERPSIM_LOOP": loop})
                 for name in ("matching", "risk", "liquidation", "oracle")]
    bus = KafkaBus(KafkaSettings(bootstrap), topic_partitions(args.partitions))
    try:
        await bus.start()
        async with Client(bus, default_markets(), timeout_s=60) as client:
            accounts = await prepare(client, args.takers)
            print(f"services up on {bootstrap} ({loop} loop); {args.partitions} partitions per topic", flush=True)
            e2e = await throughput(client, bus, accounts, args.orders)
            print(f"  e2e throughput: {e2e:,.0f} orders/s ({args.orders} IOC orders, each acknowledged "
                  f"with its fill)", flush=True)
            await asyncio.sleep(3)  # let risk finish the fills of the throughput run
            latencies = sorted(await latency(client, bus, accounts, args.rate, args.seconds))
            if latencies:
                p50 = statistics.median(latencies) * 1000
                p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
                print(f"  latency submit->fill at {args.rate}/s for {args.seconds:g} s: p50 {p50:.1f} ms, "
                      f"p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms ({len(latencies)} fills)", flush=True)
        return e2e, latencies
    finally:
        await bus.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(20)
        broker.stop()


async def main_async(args: argparse.Namespace) -> None:
    from services.runtime.loop import loop_name

    loops = ["asyncio"] + (["uvloop"] if loop_name() == "uvloop" else [])  # asyncio's is the baseline
    results = {loop: await services_run(args, loop) for loop in loops}
    broker = EmbeddedBroker()
    bootstrap = await broker.start()
    try:
        ceiling = await single_hop(bootstrap, args.orders)
        hop = await hop_latency(bootstrap, args.rate, args.seconds)
    finally:
        broker.stop()
    print(f"single hop (producer -> broker -> consumer, same message): {ceiling:,.0f} msgs/s")
    print(f"single hop latency at {args.rate}/s: p50 {statistics.median(hop) * 1000:.1f} ms, "
          f"p99 {hop[int(len(hop) * 0.99) - 1] * 1000:.1f} ms (an order's fill is 3 hops away: client -> risk "
          "-> matching -> account.events -> client)")
    if "uvloop" in results:
        print(f"ratio uvloop/asyncio (services' loop): {results['uvloop'][0] / results['asyncio'][0]:.2f}")
    best = loops[-1]
    print(f"ratio e2e/single-hop ({best}): {results[best][0] / ceiling:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000, help="orders for throughput and the ceiling")
    parser.add_argument("--rate", type=int, default=5_000, help="paced orders/s for the latency run")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the latency run")
    parser.add_argument("--partitions", type=int, default=2, help="partitions per topic")
    parser.add_argument("--takers", type=int, default=16, help="taker accounts")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
