"""The bus's settings against the embedded broker: one hop's throughput and latency.

For each combination of the producer's ``linger_ms`` and the consumer's
``fetch_max_wait_ms`` (aiokafka's names), on one embedded broker, it measures

1. throughput: N one-message records (a PlaceOrder, as a client sends) sent as fast as
   they go, until the consumer has them all; records/s;
2. latency: records paced at a fixed rate (default 5,000/s), each holding its send time;
   p50 and p99 from send to receipt.

The services use linger 1 ms and fetch wait 5 ms (services/runtime/kafka.py); that row is
the baseline, and the last line is the best latency-p99 setting's throughput over it.

    python -m bench.bus [--records 20000] [--rate 5000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import RISK_IN, codec
from schemas.enums import OrderType, Side, TimeInForce
from schemas.events import PlaceOrder
from services.runtime.broker import EmbeddedBroker
from services.runtime.kafka import KafkaSettings, ensure_topics

SERVICES = (1, 5)  # (linger_ms, fetch_max_wait_ms) of the services
COMBINATIONS = [(0, 1), (0, 5), (1, 1), (1, 5), (5, 5), (1, 20), (1, 50), (1, 100)]


async def pair(bootstrap: str, topic: str, linger_ms: int, fetch_wait_ms: int):
    settings = KafkaSettings(bootstrap)
    await ensure_topics(settings, {topic: 1})
    producer = AIOKafkaProducer(linger_ms=linger_ms, max_batch_size=1 << 20, max_request_size=8 << 20,
                                **settings.client_options())
    consumer = AIOKafkaConsumer(topic, group_id=f"{topic}.reader", auto_offset_reset="earliest",
                                fetch_max_wait_ms=fetch_wait_ms, max_partition_fetch_bytes=16 << 20,
                                **settings.client_options())
    await producer.start()
    await consumer.start()
    await producer.send_and_wait(topic, b"probe", partition=0)
    while not await consumer.getmany(timeout_ms=200):  # joined, assigned, reading
        pass
    return producer, consumer


async def throughput(bootstrap: str, linger_ms: int, fetch_wait_ms: int, count: int) -> float:
    topic = f"bench.bus.{time.time_ns()}"
    producer, consumer = await pair(bootstrap, topic, linger_ms, fetch_wait_ms)
    payload = codec(RISK_IN).encode(PlaceOrder("bench", 1, "taker0", "SOL-PERP", "t", Side.BUY, OrderType.LIMIT,
                                               TimeInForce.IOC, 15_000, 1))
    received = 0

    async def consume() -> None:
        nonlocal received
        while received < count:
            for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                received += len(records)

    try:
        reader = asyncio.create_task(consume())
        started = time.perf_counter()
        for _ in range(count):
            await producer.send(topic, payload, partition=0)
        await asyncio.wait_for(reader, 300)
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()


async def latency(bootstrap: str, linger_ms: int, fetch_wait_ms: int, rate: int, seconds: float) -> list[float]:
    topic = f"bench.bus.{time.time_ns()}"
    producer, consumer = await pair(bootstrap, topic, linger_ms, fetch_wait_ms)
    count = int(rate * seconds)
    latencies: list[float] = []

    async def consume() -> None:
        while len(latencies) < count:
            for records in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                now = time.perf_counter()
                latencies.extend(now - float(record.value) for record in records)

    try:
        reader = asyncio.create_task(consume())
        started = time.perf_counter()
        for index in range(count):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await producer.send(topic, repr(time.perf_counter()).encode(), partition=0)
        await asyncio.wait_for(reader, 300)
        return sorted(latencies)
    finally:
        await consumer.stop()
        await producer.stop()


async def main_async(args: argparse.Namespace) -> None:
    broker = EmbeddedBroker()
    bootstrap = await broker.start()
    results = {}
    try:
        print(f"one hop on the embedded broker: {args.records} records as fast as they go, then "
              f"{args.rate}/s for {args.seconds:g} s", flush=True)
        for linger_ms, fetch_wait_ms in COMBINATIONS:
            rate = await throughput(bootstrap, linger_ms, fetch_wait_ms, args.records)
            hop = await latency(bootstrap, linger_ms, fetch_wait_ms, args.rate, args.seconds)
            p50, p99 = statistics.median(hop), hop[int(len(hop) * 0.99) - 1]
            results[(linger_ms, fetch_wait_ms)] = (rate, p50, p99)
            mark = "  (the services')" if (linger_ms, fetch_wait_ms) == SERVICES else ""
            print(f"linger {linger_ms:>2} ms, fetch wait {fetch_wait_ms:>2} ms: {rate:>8,.0f} records/s; "
                  f"latency p50 {p50 * 1000:5.1f} ms, p99 {p99 * 1000:6.1f} ms{mark}", flush=True)
    finally:
        broker.stop()
    best = min(results, key=lambda key: results[key][2])
    print(f"lowest p99: linger {best[0]} ms, fetch wait {best[1]} ms")
    print(f"ratio throughput lowest-p99 setting / the services': {results[best][0] / results[SERVICES][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="records for the throughput run (default 20000)")
    parser.add_argument("--rate", type=int, default=5_000, help="paced records/s for the latency run (default 5000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the latency run (default 3)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
