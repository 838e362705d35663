"""The gateway's cost: orders through its REST API against the native client, same run.

Matching, risk and liquidation run in this process on the in-process bus (so the broker
is not what is measured), with the gateway on 127.0.0.1. Each run places IOC buy orders
that cross a deep resting offer, each waiting for its answer (the fill), from ``--bots``
concurrent traders:

1. native: ``Client.place`` straight onto the bus;
2. gateway: signed ``POST /fapi/v1/order`` (HMAC-SHA256, as ccxt sends it) over HTTP
   keep-alive, answered FILLED with the average price;
3. hyperliquid: ``POST /exchange`` order actions, each signed beforehand by its bot's
   wallet (EIP-712, as the SDK signs; the bot's signing is not the venue's cost), answered
   ``filled``; the venue recovers every signature.

Prints orders/s and latency p50/p99 of each, and what one signature recovery costs; the
last lines are each dialect's throughput over the native client's. ``--breakdown`` profiles
one more REST run first and prints where its CPU goes: the bots' HTTP client (they run in
this process), the gateway's HTTP server, signing, JSON, the gateway's own code, the bus.

    python -m bench.gateway [--orders 2000] [--bots 8] [--breakdown]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import hmac
import pstats
import statistics
import time
from urllib.parse import urlencode

import aiohttp

from exchange.markets import default_markets
from schemas import topic_partitions
from schemas.enums import Side, TimeInForce
from services.client import Client
from services.gateway.host import GatewayHost, GatewaySettings
from services.gateway.keys import KeyStore, publish_key
from services.gateway.registry import serving
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.risk import spec as risk_spec
from services.runtime.loop import loop_name, run
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


async def through_gateway(base: str, keys: list[tuple[str, str]], orders: int, label: str = "gateway") -> float:
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
        return summary(label, latencies, time.perf_counter() - start)


async def through_hyperliquid(base: str, wallets: list, orders: int) -> float:
    from hyperliquid.utils.signing import sign_l1_action

    latencies: list[float] = []
    action = {"type": "order", "orders": [{"a": 2, "b": True, "p": "150.5", "s": "0.01", "r": False,
                                           "t": {"limit": {"tif": "Ioc"}}}], "grouping": "na"}
    base_nonce = int(time.time() * 1000)
    signed = {wallet.address: [{"action": action, "nonce": base_nonce + i, "vaultAddress": None,
                                "signature": sign_l1_action(wallet, action, None, base_nonce + i, None, False)}
                               for i in range(orders // len(wallets))] for wallet in wallets}

    async def trade(session: aiohttp.ClientSession, bodies: list) -> None:
        for body in bodies:
            start = time.perf_counter()
            async with session.post(f"{base}/exchange", json=body) as reply:
                answer = await reply.json()
            assert "filled" in answer["response"]["data"]["statuses"][0], answer
            latencies.append(time.perf_counter() - start)

    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        await asyncio.gather(*(trade(session, bodies) for bodies in signed.values()))
        return summary("hyperliq", latencies, time.perf_counter() - start)


CATEGORIES = (  # (where the function is, what it is), first match wins
    ("aiohttp/client", "HTTP client: the bots, in this process"), ("aiohttp/connector", "HTTP client: the bots, in this process"),
    ("yarl", "HTTP client: the bots, in this process"), ("bench/gateway", "HTTP client: the bots, in this process"),
    ("urllib/parse", "query strings: the bots' and the gateway's"),
    ("aiohttp/", "HTTP server: parsing, routing, responses (aiohttp)"), ("multidict", "HTTP server: parsing, routing, responses (aiohttp)"),
    ("hmac", "signing: HMAC-SHA256 of every request"), ("json", "JSON"),
    ("services/gateway", "the gateway's own code: checks, projection, streams, metrics"),
    ("services/client", "the native client (both paths)"),
    ("services/runtime", "bus and codec"), ("schemas", "bus and codec"), ("msgspec", "bus and codec"),
    ("exchange/", "risk and matching"), ("services/", "risk and matching"), ("Engine", "risk and matching"),
    ("fractions", "risk and matching"),
    ("asyncio", "event loop and sockets"), ("uvloop", "event loop and sockets"), ("socket", "event loop and sockets"),
    ("select", "event loop and sockets"),
)


def category(key: tuple) -> str | None:
    path, _, name = key
    where = name if path == "~" else path
    for needle, label in CATEGORIES:
        if needle in where:
            return label
    return None if path == "~" else "other"


def print_breakdown(profile: cProfile.Profile, orders: int) -> None:
    """CPU per order of the profiled run, by what it was spent on (a builtin's time goes to
    its callers'). cProfile slows everything about 2x; the shares are what counts."""
    spent: dict[str, float] = {}
    for key, (_, _, own, _, callers) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        label = category(key)
        if label is not None:
            spent[label] = spent.get(label, 0.0) + own
            continue
        for caller, timing in callers.items():
            label = category(caller) or "other"
            spent[label] = spent.get(label, 0.0) + timing[2]
    total = sum(spent.values())
    print(f"where the profiled run's CPU went ({total / orders * 1e6:,.0f} µs per order under cProfile):")
    for label, seconds in sorted(spent.items(), key=lambda item: -item[1]):
        print(f"  {seconds / total:5.1%}  {seconds / orders * 1e6:6.0f} µs  {label}")


def recovery_cost(count: int = 300) -> float:
    """Seconds the venue spends recovering one L1 signature (both sources, as it does)."""
    from eth_account import Account
    from hyperliquid.utils.signing import sign_l1_action

    from services.gateway.hyperliquid.exchange import signers

    wallet = Account.create()
    action = {"type": "cancel", "cancels": [{"a": 2, "o": 1}]}
    bodies = [(i, sign_l1_action(wallet, action, None, i, None, False)) for i in range(1, count + 1)]
    start = time.perf_counter()
    for nonce, signature in bodies:
        list(signers(action, signature, None, nonce, None))
    return (time.perf_counter() - start) / count


async def main_async(args: argparse.Namespace) -> None:
    markets = default_markets()
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ServiceRunner(spec, bus).run(stop))
             for spec in (matching_spec(markets), risk_spec(markets, partitions=2), liquidation_spec(markets))]
    store = KeyStore(bus)
    await store.start()
    # the gateway's own cost, not the venues' rate limits
    gateway = GatewayHost(bus, markets, store, GatewaySettings(rate_limits=False))
    await gateway.start()
    servers = contextlib.AsyncExitStack()
    ports = await servers.enter_async_context(serving(gateway, "127.0.0.1", {}))  # every dialect, each on a free port
    port, hl_port = ports["binance"], ports["hyperliquid"]
    client = Client(bus, markets, timeout_s=60)
    await client.start()
    try:
        await mark(bus, "150")
        await client.deposit("maker", "100000000")
        size = str(args.orders * 0.01 * (4 if args.breakdown else 3) + 10)  # each run takes 0.01 per order
        await client.place("maker", "SOL-PERP", Side.SELL, size, "150.5")
        from eth_account import Account

        bots = [f"native-{i}" for i in range(args.bots)]
        keyed = [f"gateway-{i}" for i in range(args.bots)]
        wallets = [Account.create() for _ in range(args.bots)]
        for account in bots + keyed + [w.address.lower() for w in wallets]:
            await client.deposit(account, "1000000")
        while not all(gateway.ledger.accounts.get(w.address.lower()) and gateway.ledger.accounts[w.address.lower()]
                      .snapshot for w in wallets):
            await asyncio.sleep(0.05)
        keys = [await publish_key(bus, account) for account in keyed]
        for key, _ in keys:
            await store.known(key)
        print(f"gateway on 127.0.0.1:{port}; {args.bots} concurrent bots", flush=True)
        native_rate = await native(client, bots, args.orders)
        if args.breakdown:  # the gateway's run once more, profiled
            profile = cProfile.Profile()
            profile.enable()
            await through_gateway(f"http://127.0.0.1:{port}", keys, args.orders, label="profiled")
            profile.disable()
            print_breakdown(profile, args.orders)
        gateway_rate = await through_gateway(f"http://127.0.0.1:{port}", keys, args.orders)
        hyperliquid_rate = await through_hyperliquid(f"http://127.0.0.1:{hl_port}", wallets, args.orders)
        print(f"signature recovery: {recovery_cost() * 1e6:,.0f} µs each (both sources)")
        print(f"ratio gateway/native: {gateway_rate / native_rate:.2f}")
        print(f"ratio hyperliquid/native: {hyperliquid_rate / native_rate:.2f}")
    finally:
        await client.stop()
        await servers.aclose()
        await gateway.stop()
        stop.set()
        await asyncio.gather(*tasks)


async def mark(bus: MemoryBus, price: str) -> None:
    """A mark for every risk partition, as the oracle publishes it."""
    from schemas import RISK_IN, codec
    from schemas.events import MarkPrice

    ticks = default_markets()["SOL-PERP"].price_to_ticks(price)
    from schemas import MARKET_DATA

    event = MarkPrice("oracle", time.time_ns(), "SOL-PERP", ticks, ticks, time.time_ns())  # only the oracle may
    await bus.send([(RISK_IN, p, None, codec(RISK_IN).encode(event)) for p in range(bus.partitions(RISK_IN))]
                   + [(MARKET_DATA, 0, None, codec(MARKET_DATA).encode(event))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=2000, help="orders per run")
    parser.add_argument("--bots", type=int, default=8, help="concurrent traders per run")
    parser.add_argument("--breakdown", action="store_true",
                        help="profile one more gateway run and print where its CPU goes (HTTP, signing, JSON, ...)")
    args = parser.parse_args()
    print(f"event loop: {loop_name()} (as the gateway runs; PERPSIM_LOOP=asyncio for asyncio's)")
    run(main_async(args))


if __name__ == "__main__":
    main()
