"""Under overload the venue pushes back instead of going silent: once the oldest order has
waited longer than the gateway's bound for its answer, new orders are refused at once in
each venue's words (Binance -1008 with HTTP 503, Hyperliquid HTTP 429), cancels and reads
still served. The venue here is risk alone: it forwards orders to a matching engine that
does not run, so no order is ever answered (as when matching is far behind)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import aiohttp
from eth_account import Account
from hyperliquid.utils.signing import sign_l1_action

from exchange.markets import default_markets
from schemas import topic_partitions
from services.client import Client
from services.gateway.host import GatewayHost, GatewaySettings
from services.gateway.keys import KeyStore, publish_key
from services.gateway.registry import serving
from services.risk import spec as risk_spec
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner
from tests.integration.conftest import Oracle


async def test_new_orders_are_refused_in_each_venues_words_once_the_venue_cannot_answer_in_time():
    markets = default_markets()
    bus = MemoryBus(topic_partitions(1))
    stop = asyncio.Event()
    risk = asyncio.create_task(ServiceRunner(risk_spec(markets, partitions=1), bus).run(stop))
    keys = KeyStore(bus)
    await keys.start()
    host = GatewayHost(bus, markets, keys, GatewaySettings(order_timeout_s=5, overload_wait_s=0.5))
    await host.start()
    wallet = Account.create()
    try:
        async with Client(bus, markets) as client, serving(host, "127.0.0.1", {}) as ports, \
                aiohttp.ClientSession() as session:
            await Oracle(bus).mark("SOL-PERP", "150")
            await client.deposit("bot", "10000")
            await client.deposit(wallet.address.lower(), "10000")
            key, secret = await publish_key(bus, "bot")
            await keys.known(key)
            binance = f"http://127.0.0.1:{ports['binance']}"

            async def binance_order() -> tuple[int, dict]:
                query = f"symbol=SOLUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=149" \
                        f"&timestamp={int(time.time() * 1000)}"
                signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
                async with session.post(f"{binance}/fapi/v1/order?{query}&signature={signature}",
                                        headers={"X-MBX-APIKEY": key}) as answer:
                    return answer.status, await answer.json()

            first = asyncio.create_task(binance_order())  # never answered: matching does not run
            await asyncio.sleep(0.8)
            started = time.monotonic()
            status, body = await binance_order()
            assert (status, body["code"]) == (503, -1008), body
            assert time.monotonic() - started < 1  # at once, not after the order timeout
            async with session.get(f"{binance}/fapi/v1/ticker/price?symbol=SOLUSDT") as answer:
                assert answer.status == 200  # reads are served

            action = {"type": "order", "orders": [{"a": 2, "b": True, "p": "149", "s": "1", "r": False,
                                                   "t": {"limit": {"tif": "Gtc"}}}], "grouping": "na"}
            nonce = int(time.time() * 1000)
            body = {"action": action, "nonce": nonce, "vaultAddress": None, "expiresAfter": None,
                    "signature": sign_l1_action(wallet, action, None, nonce, None, False)}
            async with session.post(f"http://127.0.0.1:{ports['hyperliquid']}/exchange", json=body) as answer:
                assert answer.status == 429
                assert (await answer.json())["status"] == "err"
            status, body = await first  # the first order's own answer: Binance's timeout, saying where to look
            assert (status, body["code"]) == (408, -1007) and "origClientOrderId=" in body["msg"]
    finally:
        await host.stop()
        await keys.stop()
        stop.set()
        await risk
