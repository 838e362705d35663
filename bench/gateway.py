"""The gateway's cost: orders through its REST API against the native client, same run.

Matching, risk and liquidation run in this process on the in-process bus (so the broker
is not what is measured), with the gateway on 127.0.0.1. Each run places IOC buy orders
that cross a deep resting offer, each waiting for its answer (the fill), from ``--bots``
concurrent traders:

1. native: ``Client.place`` straight onto the bus;
2. gateway: signed ``POST /fapi/v1/order`` (HMAC-SHA256, as ccxt sends it) over HTTP
   keep-alive, answered FILLED with the average price.

Prints orders/s and latency p50/p99 of both; the last line is gateway / native throughput.

    python -m bench.gateway [--orders 2000] [--bots 8]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import statistics
import time
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from exchange.markets import default_markets
from schemas import topic_partitions
from schemas.enums import Side, TimeInForce
from services.client import Client
from services.gateway.binance.app import Gateway
from services.gateway.keys import KeyStore, publish_key
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.risk import spec as risk_spec
from services.runtime.broker import free_port
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner


def summary(name: str, latencies: list[float], elapsed: float) -> float:
    latencies.sort()
    rate = len(latencies) / elapsed
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    print(f"{name:<8} {rate:8,.0f} orders/s   p50 {statistics.median(latencies) * 1000:6.2f} ms   "
          f"p99 {p99 * 1000:6.2f} ms   ({len(latencies)} IOC orders)", flush=True)
    return rate


async def native(client: Client, bots: list[str], orders: int) -> float:
    latencies: list[float] = []

    async def trade(account: str, count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            result = await client.place(account, "SOL-PERP", Side.BUY, "0.01", "150.5", tif=TimeInForce.IOC)
            assert result.filled, "the offer ran out"
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(trade(bot, orders // len(bots)) for bot in bots))
    return summary("native", latencies, time.perf_counter() - start)


async def through_gateway(base: str, keys: list[tuple[str, str]], orders: int) -> float:
    latencies: list[float] = []

    async def trade(session: aiohttp.ClientSession, key: str, secret: str, count: int) -> None:
        for _ in range(count):
            query = urlencode({"symbol": "SOLUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC",
                               "quantity": "0.01", "price": "150.5", "timestamp": int(time.time() * 1000),
                               "recvWindow": 10000})
            signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
            start = time.perf_counter()
            async with session.post(f"{base}/fapi/v1/order", data=f"{query}&signature={signature}",
                                    headers={"X-MBX-APIKEY": key,
                                             "Content-Type": "application/x-www-form-urlencoded"}) as reply:
                answer = await reply.json()
            assert answer.get("status") == "FILLED", answer
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        await asyncio.gather(*(trade(session, key, secret, orders // len(keys)) for key, secret in keys))
        return summary("gateway", latencies, time.perf_counter() - start)


async def main_async(args: argparse.Namespace) -> None:
    markets = default_markets()
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ServiceRunner(spec, bus).run(stop))
             for spec in (matching_spec(markets), risk_spec(markets, partitions=2), liquidation_spec(markets))]
    store = KeyStore(bus)
    await store.start()
    gateway = Gateway(bus, markets, store)
    await gateway.start()
    runner = web.AppRunner(gateway.application(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = Client(bus, markets, timeout_s=60)
    await client.start()
    try:
        await mark(bus, "150")
        await client.deposit("maker", "100000000")
        size = str(args.orders * 0.01 * 2 + 10)
        await client.place("maker", "SOL-PERP", Side.SELL, size, "150.5")
        bots = [f"native-{i}" for i in range(args.bots)]
        keyed = [f"gateway-{i}" for i in range(args.bots)]
        for account in bots + keyed:
            await client.deposit(account, "1000000")
        keys = [await publish_key(bus, account) for account in keyed]
        for key, _ in keys:
            await store.known(key)
        print(f"gateway on 127.0.0.1:{port}; {args.bots} concurrent bots", flush=True)
        native_rate = await native(client, bots, args.orders)
        gateway_rate = await through_gateway(f"http://127.0.0.1:{port}", keys, args.orders)
        print(f"ratio gateway/native: {gateway_rate / native_rate:.2f}")
    finally:
        await client.stop()
        await runner.cleanup()
        await gateway.stop()
        stop.set()
        await asyncio.gather(*tasks)


async def mark(bus: MemoryBus, price: str) -> None:
    """A mark for every risk partition, as the oracle publishes it."""
    from schemas import RISK_IN, codec
    from schemas.events import MarkPrice

    ticks = default_markets()["SOL-PERP"].price_to_ticks(price)
    event = MarkPrice("bench-oracle", 1, "SOL-PERP", ticks, ticks, time.time_ns())
    await bus.send([(RISK_IN, p, None, codec(RISK_IN).encode(event)) for p in range(bus.partitions(RISK_IN))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000, help="orders per run")
    parser.add_argument("--bots", type=int, default=8, help="concurrent traders per run")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
