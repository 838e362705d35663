"""The Binance-compatible gateway, driven by real ccxt configured only by URL."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlparse

import ccxt.async_support as ccxt
import pytest
from aiohttp import web

from exchange.markets import default_markets
from services.app import topic_partitions
from services.broker import free_port
from services.bus.memory import MemoryBus
from services.client import Client
from services.gateway.app import Gateway
from services.gateway.keys import KeyStore
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.risk import spec as risk_spec
from services.runtime import ServiceRunner
from schemas.enums import Side, TimeInForce
from tests.integration.conftest import Oracle

pytestmark = pytest.mark.integration


def ccxt_for(base: str, key: str | None = None, secret: str | None = None) -> ccxt.binanceusdm:
    """ccxt binanceusdm with every API URL pointed at the gateway, as a user would set it."""
    exchange = ccxt.binanceusdm({"enableRateLimit": False, "apiKey": key, "secret": secret})
    for key, url in list(exchange.urls["api"].items()):
        path = urlparse(url).path
        exchange.urls["api"][key] = f"{base}{path}"
    exchange.has["fetchCurrencies"] = False
    original = exchange.fetch

    async def loopback_only(url, method="GET", headers=None, body=None):
        host = urlparse(url).hostname
        assert host in ("127.0.0.1", "localhost"), f"ccxt tried to reach {url}"
        return await original(url, method, headers, body)

    exchange.fetch = loopback_only
    return exchange


@pytest.fixture
async def venue(tmp_path):
    markets = default_markets()
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ServiceRunner(spec, bus, None).run(stop))
             for spec in (matching_spec(markets), risk_spec(markets, partitions=2), liquidation_spec(markets))]
    keys = KeyStore(tmp_path / "keys.json")
    gateway = Gateway(bus, markets, keys)
    await gateway.start()
    runner = web.AppRunner(gateway.application())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    client = Client(bus, markets)
    await client.start()
    exchange = ccxt_for(f"http://127.0.0.1:{port}")
    gateway.base = f"http://127.0.0.1:{port}"
    gateway.test_keys = keys
    try:
        yield exchange, client, Oracle(bus, wall_clock=True), gateway
    finally:
        await exchange.close()
        await client.stop()
        await runner.cleanup()
        await gateway.stop()
        stop.set()
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def signed(gateway: Gateway, account: str):
    """ccxt with a fresh API key of ``account``, closed afterwards."""
    key, secret = gateway.test_keys.create(account)
    bot = ccxt_for(gateway.base, key, secret)
    try:
        yield bot
    finally:
        await bot.close()


async def settle(gateway: Gateway, condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


async def test_ccxt_loads_markets_and_reads_time_book_ticker_trades_and_funding(venue):
    exchange, client, oracle, gateway = venue
    markets = await exchange.load_markets()
    sol = markets["SOL/USDT:USDT"]
    assert sol["id"] == "SOLUSDT" and sol["linear"] and sol["swap"] and sol["settle"] == "USDT"
    assert sol["precision"]["price"] == 0.01 and sol["precision"]["amount"] == 0.01
    assert {"BTC/USDT:USDT", "ETH/USDT:USDT"} <= set(markets)
    now = await exchange.fetch_time()
    assert abs(now - asyncio.get_running_loop().time()) >= 0 and now > 1_600_000_000_000

    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit("taker", "100000")
    await client.place("maker", "SOL-PERP", Side.BUY, "3", "149.5")
    await client.place("maker", "SOL-PERP", Side.BUY, "2", "149")
    await client.place("maker", "SOL-PERP", Side.SELL, "4", "150.5")
    await client.place("taker", "SOL-PERP", Side.BUY, "1.5", "150.5", tif=TimeInForce.IOC)
    await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].trades)

    book = await exchange.fetch_order_book("SOL/USDT:USDT")
    assert book["bids"] == [[149.5, 3.0], [149.0, 2.0]] and book["asks"] == [[150.5, 2.5]]
    ticker = await exchange.fetch_ticker("SOL/USDT:USDT")
    assert ticker["last"] == 150.5 and ticker["baseVolume"] == 1.5
    trades = await exchange.fetch_trades("SOL/USDT:USDT")
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(150.5, 1.5, "buy")]
    rate = await exchange.fetch_funding_rate("SOL/USDT:USDT")
    assert rate["markPrice"] == 150.0 and rate["indexPrice"] == 150.0


async def test_unknown_symbols_and_paths_get_binance_errors(venue):
    exchange, *_ = venue
    await exchange.load_markets()
    with pytest.raises(ccxt.BadSymbol):
        await exchange.fetch_order_book("DOGE/USDT:USDT")
    with pytest.raises(ccxt.BadRequest, match="-1121"):
        await exchange.fapiPublicGetDepth({"symbol": "DOGEUSDT"})


async def test_ccxt_trades_with_a_signed_account(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await oracle.mark("SOL-PERP", "150")
        await client.deposit("bot", "10000")
        await client.deposit("maker", "1000000")
        await client.place("maker", "SOL-PERP", Side.SELL, "5", "150.5")
        await settle(gateway, lambda: gateway.ledger.account("bot").snapshot)
        balance = await bot.fetch_balance()
        assert balance["USDT"]["total"] == 10000.0 and balance["USDT"]["free"] == 10000.0
        resting = await bot.create_order("SOL/USDT:USDT", "limit", "buy", 2, 149)
        assert resting["status"] == "open" and resting["amount"] == 2.0 and resting["price"] == 149.0
        taken = await bot.create_order("SOL/USDT:USDT", "market", "buy", 1.5)
        assert taken["status"] == "closed" and taken["filled"] == 1.5 and taken["average"] == 150.5
        with pytest.raises(ccxt.InsufficientFunds):
            await bot.create_order("SOL/USDT:USDT", "limit", "buy", 10000, 149)


async def test_bad_keys_signatures_and_timestamps_are_authentication_errors(venue):
    _, client, _, gateway = venue
    key, secret = gateway.test_keys.create("bot")
    for bad_key, bad_secret in ((key, "0" * 64), ("no-such-key", secret)):
        bot = ccxt_for(gateway.base, bad_key, bad_secret)
        try:
            with pytest.raises(ccxt.AuthenticationError):
                await bot.fetch_balance()
        finally:
            await bot.close()
    bot = ccxt_for(gateway.base, key, secret)
    bot.options["recvWindow"] = 5000
    bot.milliseconds = lambda: 1_000_000_000_000  # a clock stuck in 2001: outside any recvWindow
    try:
        with pytest.raises(ccxt.InvalidNonce):
            await bot.fetch_balance()
    finally:
        await bot.close()


async def test_ccxt_sets_margin_mode_and_leverage_adds_margin_and_sees_liquidation_prices(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await oracle.mark("SOL-PERP", "150")
        await client.deposit("bot", "2000")
        await client.deposit("maker", "1000000")
        await bot.load_markets()
        await bot.set_margin_mode("isolated", "SOL/USDT:USDT")
        with pytest.raises(ccxt.MarginModeAlreadySet):
            await bot.set_margin_mode("isolated", "SOL/USDT:USDT")
        with pytest.raises(ccxt.BadRequest):
            await bot.set_leverage(50, "SOL/USDT:USDT")  # SOL allows 20x
        await bot.set_leverage(5, "SOL/USDT:USDT")
        await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
        order = await bot.create_order("SOL/USDT:USDT", "market", "buy", 10)
        assert order["filled"] == 10.0
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)
        [position] = await bot.fetch_positions(["SOL/USDT:USDT"])
        # the mission's isolated SOL long: 300 of margin at 5x, liquidation at (150 − 30) / 0.975 = 123.08
        assert position["marginMode"] == "isolated" and position["leverage"] == 5
        assert position["contracts"] == 10.0 and position["liquidationPrice"] == 123.08
        assert position["collateral"] == 300.0
        with pytest.raises(ccxt.ExchangeError, match="-4048"):
            await bot.set_margin_mode("cross", "SOL/USDT:USDT")
        added = await bot.add_margin("SOL/USDT:USDT", 100)
        assert added["amount"] == 100.0
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions[0].isolated_margin == 400 * 1_000_000)
        [position] = await bot.fetch_positions(["SOL/USDT:USDT"])
        assert position["collateral"] == 400.0 and position["liquidationPrice"] < 123.08


async def test_ccxt_fetches_and_cancels_its_orders_and_never_anothers(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot, signed(gateway, "other") as other:
        await oracle.mark("SOL-PERP", "150")
        await client.deposit("bot", "10000")
        await client.deposit("other", "10000")
        first = await bot.create_order("SOL/USDT:USDT", "limit", "buy", 1, 148)
        second = await bot.create_order("SOL/USDT:USDT", "limit", "sell", 2, 152)
        await settle(gateway, lambda: len(gateway.ledger.orders) >= 2)
        open_ids = sorted(o["id"] for o in await bot.fetch_open_orders("SOL/USDT:USDT"))
        assert open_ids == sorted([first["id"], second["id"]])
        fetched = await bot.fetch_order(first["id"], "SOL/USDT:USDT")
        assert fetched["status"] == "open" and fetched["price"] == 148.0 and fetched["side"] == "buy"
        with pytest.raises(ccxt.OrderNotFound):
            await other.cancel_order(first["id"], "SOL/USDT:USDT")  # not its order
        with pytest.raises(ccxt.OrderNotFound):
            await other.fetch_order(first["id"], "SOL/USDT:USDT")
        cancelled = await bot.cancel_order(first["id"], "SOL/USDT:USDT")
        assert cancelled["status"] == "canceled"
        assert [o["id"] for o in await bot.fetch_open_orders("SOL/USDT:USDT")] == [second["id"]]
        with pytest.raises(ccxt.OrderNotFound):
            await bot.cancel_order(first["id"], "SOL/USDT:USDT")  # already gone
