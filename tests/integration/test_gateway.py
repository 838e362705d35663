"""The Binance-compatible gateway, driven by real ccxt configured only by URL."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import ccxt as sync_ccxt
import ccxt.async_support as ccxt
import ccxt.pro as ccxtpro
import pytest

from exchange.markets import default_markets
from schemas import topic_partitions
from schemas.enums import LiquidationStage, Side, TimeInForce
from schemas.events import LiquidationOutcome
from services.client import Client
from services.gateway.binance import Binance
from services.gateway.binance.limits import BINANCE, RateLimits
from services.gateway.host import GatewayHost, GatewaySettings
from services.gateway.keys import KeyStore, publish_key
from services.gateway.ledger import OrderStatus
from services.gateway.registry import serving
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.risk import spec as risk_spec
from services.runtime.broker import free_port
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner
from tests.integration.conftest import ROOT, Oracle, kafka_bus

pytestmark = pytest.mark.integration


def point_at_gateway(exchange, base: str) -> None:
    """Every URL in ``urls['api']`` (REST and WebSocket, nested ones too) rewritten to the
    gateway at ``base`` (``http://host:port``), as the README tells a user to."""
    host = urlparse(base).netloc

    def rewrite(urls: dict) -> None:
        for key, url in urls.items():
            if isinstance(url, dict):
                rewrite(url)
            else:
                parts = urlparse(url)
                scheme = "ws" if parts.scheme in ("ws", "wss") else "http"
                urls[key] = f"{scheme}://{host}{parts.path}"

    rewrite(exchange.urls["api"])
    exchange.has["fetchCurrencies"] = False
    # ccxt picks its USD-M error table by Binance's hostnames; on any other host it falls
    # back to a generic one, so the README has a bot merge it in to get Binance's classes
    exchange.exceptions["exact"].update(exchange.exceptions["linear"]["exact"])


def loopback(url: str) -> None:
    host = urlparse(url).hostname
    assert host in ("127.0.0.1", "localhost"), f"ccxt tried to reach {url}"


def ccxt_for(base: str, key: str | None = None, secret: str | None = None, module=ccxt):
    """ccxt binanceusdm (async, or ccxt.pro's with ``module``) pointed at the gateway only
    by URL; any request or connection off the loopback fails the test."""
    exchange = module.binanceusdm({"enableRateLimit": False, "apiKey": key, "secret": secret})
    point_at_gateway(exchange, base)
    original_fetch = exchange.fetch

    async def fetch_loopback_only(url, method="GET", headers=None, body=None):
        loopback(url)
        return await original_fetch(url, method, headers, body)

    exchange.fetch = fetch_loopback_only
    if hasattr(exchange, "client"):  # ccxt.pro: WebSocket connections
        original_client = exchange.client

        def client_loopback_only(url):
            if "://" in url:  # ccxt also keys internal helpers by name ("authenticationFlights")
                loopback(url)
            return original_client(url)

        exchange.client = client_loopback_only
    return exchange


def sync_ccxt_for(base: str, key: str, secret: str):
    """Plain (synchronous) ccxt binanceusdm pointed at the gateway, loopback only."""
    bot = sync_ccxt.binanceusdm({"enableRateLimit": False, "apiKey": key, "secret": secret})
    point_at_gateway(bot, base)
    original = bot.fetch

    def fetch_loopback_only(url, method="GET", headers=None, body=None):
        loopback(url)
        return original(url, method, headers, body)

    bot.fetch = fetch_loopback_only
    return bot


@contextlib.asynccontextmanager
async def running_venue(markets, limits: RateLimits | None = BINANCE):
    """The services on the in-memory bus, the gateway on a loopback port, a native client
    and ccxt; yields (ccxt, client, oracle, gateway)."""
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ServiceRunner(spec, bus).run(stop))
             for spec in (matching_spec(markets), risk_spec(markets, partitions=2), liquidation_spec(markets))]
    keys = KeyStore(bus)
    await keys.start()
    gateway = GatewayHost(bus, markets, keys, GatewaySettings(rate_limits=limits is not None))
    await gateway.start()
    try:
        async with serving(gateway, "127.0.0.1", {}, dialects=(Binance(limits),)) as ports:
            client = Client(bus, markets)
            await client.start()
            gateway.base = f"http://127.0.0.1:{ports['binance']}"
            exchange = ccxt_for(gateway.base)
            try:
                yield exchange, client, Oracle(bus, wall_clock=True), gateway
            finally:
                await exchange.close()
                await client.stop()
    finally:
        await gateway.stop()
        await keys.stop()
        stop.set()
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def scenario_venue(name: str):
    """``running_venue`` with the oracle service following scenario ``name``'s prices (what
    `perpsim up` runs): yields (client, gateway, scenario)."""
    from services.oracle import OracleService
    from services.sim.simulation import load_scenario, sources

    markets = default_markets()
    scenario = load_scenario(name)
    async with running_venue(markets) as (_, client, _, gateway):
        stop = asyncio.Event()
        oracle = OracleService(gateway.bus, markets, sources(scenario, markets, scenario.seed), tick_s=0.25)
        ticking = asyncio.create_task(oracle.run(stop))
        try:
            yield client, gateway, scenario
        finally:
            stop.set()
            await ticking


@pytest.fixture
async def venue(tmp_path):
    async with running_venue(default_markets()) as parts:
        yield parts


async def api_key(gateway: GatewayHost, account: str) -> tuple[str, str]:
    """A key published on the bus, as `perpsim accounts create` does, once the gateway knows it."""
    key, secret = await publish_key(gateway.bus, account)
    await gateway.keys.known(key)
    return key, secret


@contextlib.asynccontextmanager
async def signed(gateway: GatewayHost, account: str, module=ccxt):
    """ccxt with a fresh API key of ``account``, closed afterwards."""
    key, secret = await api_key(gateway, account)
    bot = ccxt_for(gateway.base, key, secret, module)
    try:
        yield bot
    finally:
        await bot.close()


async def opening(client: Client, oracle: Oracle, account: str, deposit: str) -> None:
    """SOL marked at 150, ``account`` funded with ``deposit``, a maker with a million."""
    await oracle.mark("SOL-PERP", "150")
    await client.deposit(account, deposit)
    await client.deposit("maker", "1000000")


async def settle(gateway: GatewayHost, condition, timeout: float = 5.0) -> None:
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
        await opening(client, oracle, "bot", "10000")
        await client.place("maker", "SOL-PERP", Side.SELL, "5", "150.5")
        await settle(gateway, lambda: gateway.ledger.account("bot").snapshot)
        balance = await bot.fetch_balance()
        assert balance["USDT"]["total"] == 10000.0 and balance["USDT"]["free"] == 10000.0
        resting = await bot.create_order("SOL/USDT:USDT", "limit", "buy", 2, 149)
        assert resting["status"] == "open" and resting["amount"] == 2.0 and resting["price"] == 149.0
        # the resting buy reserves its initial margin at 20x and its taker fee (0.05%):
        # 298 / 20 + 0.149 = 15.049, shown as Binance shows it, and not available any more
        account = await bot.fapiPrivateV2GetAccount()
        assert (account["totalOpenOrderInitialMargin"], account["availableBalance"]) == ("15.049000", "9984.951000")
        assert account["assets"][0]["openOrderInitialMargin"] == "15.049000"
        assert (account["feeTier"], account["canTrade"], account["canDeposit"], account["canWithdraw"]) == (
            0, True, True, True)  # what Binance's answer opens with (nautilus_trader's adapter needs them)
        taken = await bot.create_order("SOL/USDT:USDT", "market", "buy", 1.5)
        assert taken["status"] == "closed" and taken["filled"] == 1.5 and taken["average"] == 150.5
        with pytest.raises(ccxt.InsufficientFunds):
            await bot.create_order("SOL/USDT:USDT", "limit", "buy", 10000, 149)


async def test_bad_keys_signatures_and_timestamps_are_authentication_errors(venue):
    _, client, _, gateway = venue
    key, secret = await api_key(gateway, "bot")
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


THIRTY_NINES = "9" * 30
# (method, path, parameters, Binance codes it may answer): malformed or out-of-range numbers
BAD_NUMBERS = [
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "1e400", "price": "150"}, {-1100}),
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": THIRTY_NINES, "price": "150"}, {-1100}),
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "1", "price": "1e400"}, {-1100}),
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "1", "price": THIRTY_NINES}, {-1100}),
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "NaN", "price": "150"}, {-1100}),
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "MARKET", "quantity": "-1"}, {-1100}),
    # within Binance's digits, beyond what the contract carries: refused by size, 4xx
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "99999999999999999999",
                                "price": "150"}, {-1013, -4003, -1111}),
    *[("POST", "/fapi/v1/positionMargin", {"type": "1", "amount": amount}, {-1100})
      for amount in ("NaN", "inf", "1e30", "-1e30", "abc")],
    ("POST", "/fapi/v1/positionMargin", {"type": "1", "amount": "99999999999999999999"}, {-1013, -4051, -4052}),
    ("POST", "/fapi/v1/leverage", {"leverage": THIRTY_NINES}, {-1100}),
    ("POST", "/fapi/v1/leverage", {"leverage": "99999999999999999999"}, {-4028}),
    ("GET", "/fapi/v1/allOrders", {"limit": THIRTY_NINES}, {-1100}),
    ("GET", "/fapi/v2/balance", {"recvWindow": str(10**13)}, {-1131}),
    ("GET", "/fapi/v2/balance", {"recvWindow": "60001"}, {-1131}),
    # Binance's client ids are 1 to 36 of letters, digits and .:/_- (a bot sent 1,000 KiB, and it traded)
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "1", "price": "150",
                                "newClientOrderId": "x" * 37}, {-1100}),
    ("POST", "/fapi/v1/order", {"side": "BUY", "type": "LIMIT", "quantity": "1", "price": "150",
                                "newClientOrderId": "a b"}, {-1100}),
    ("POST", "/fapi/v1/algoOrder", {"side": "SELL", "type": "STOP_MARKET", "algoType": "CONDITIONAL",
                                    "quantity": "1", "triggerPrice": "140", "clientAlgoId": "y" * 37}, {-1100}),
]


async def test_every_bad_number_gets_a_binance_4xx_never_a_500(venue):
    _, client, oracle, gateway = venue
    await opening(client, oracle, "bot", "1000")
    key, secret = await api_key(gateway, "bot")
    async with aiohttp.ClientSession() as session:
        for method, path, params, codes in BAD_NUMBERS:
            now = int(time.time() * 1000)
            query = {"symbol": "SOLUSDT", **params, "timestamp": str(now)}
            if "recvWindow" in params:
                query["timestamp"] = str(now - 365 * 86_400_000)  # a year old
            signed_query = "&".join(f"{k}={v}" for k, v in query.items())
            signature = hmac.new(secret.encode(), signed_query.encode(), hashlib.sha256).hexdigest()
            async with session.request(method, f"{gateway.base}{path}?{signed_query}&signature={signature}",
                                       headers={"X-MBX-APIKEY": key}) as response:
                body = await response.json()
                assert 400 <= response.status < 500 and body.get("code") in codes, (path, params, response.status,
                                                                                     body)
        # a client order id of 1,000 KiB in the body (where ccxt puts a POST's parameters): refused, not traded
        body = f"symbol=SOLUSDT&side=BUY&type=LIMIT&quantity=1&price=150&newClientOrderId={'x' * 1_024_000}" \
               f"&timestamp={int(time.time() * 1000)}"
        signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        async with session.post(f"{gateway.base}/fapi/v1/order", data=f"{body}&signature={signature}",
                                headers={"X-MBX-APIKEY": key,
                                         "Content-Type": "application/x-www-form-urlencoded"}) as response:
            assert (response.status, (await response.json())["code"]) == (400, -1100)
    assert not gateway.ledger.open_orders("bot")


async def test_ccxt_sets_margin_mode_and_leverage_adds_margin_and_sees_liquidation_prices(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "2000")
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
        assert position["contracts"] == 10.0 and position["entryPrice"] == 150.0
        assert position["notional"] == 1500.0 and position["liquidationPrice"] == 123.08
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


async def test_ccxt_reads_candles_mark_candles_and_funding_history(venue):
    exchange, client, oracle, gateway = venue
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit("taker", "100000")
    await client.place("maker", "SOL-PERP", Side.SELL, "2", "150.5")
    await client.place("maker", "SOL-PERP", Side.SELL, "1", "151")
    await client.place("taker", "SOL-PERP", Side.BUY, "2", "150.5", tif=TimeInForce.IOC)
    await client.place("taker", "SOL-PERP", Side.BUY, "1", "151", tif=TimeInForce.IOC)
    await oracle.mark("SOL-PERP", "152")
    await oracle.funding("SOL-PERP", 100_000, "151")  # +0.01%: longs pay shorts
    await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].funding_history
                 and len(gateway.projection.markets["SOL-PERP"].trades) == 2)

    candles = await exchange.fetch_ohlcv("SOL/USDT:USDT", "1m")
    # trades 2 @ 150.5 then 1 @ 151: one candle, or two if a minute boundary fell between
    assert candles[0][1] == 150.5 and candles[-1][4] == 151.0
    assert max(c[2] for c in candles) == 151.0 and min(c[3] for c in candles) == 150.5
    assert sum(c[5] for c in candles) == 3.0
    hourly = await exchange.fetch_ohlcv("SOL/USDT:USDT", "1h")
    assert len(hourly) <= 2 and sum(c[5] for c in hourly) == 3.0
    marks = await exchange.fetch_ohlcv("SOL/USDT:USDT", "1m", params={"price": "mark"})
    assert marks[0][1] == 150.0 and marks[-1][4] == 152.0 and max(c[2] for c in marks) == 152.0
    with pytest.raises(ccxt.BadRequest):
        await exchange.fapiPublicGetKlines({"symbol": "SOLUSDT", "interval": "7m"})

    history = await exchange.fetch_funding_rate_history("SOL/USDT:USDT")
    assert [(h["symbol"], h["fundingRate"]) for h in history] == [("SOL/USDT:USDT", 0.0001)]


async def test_ccxt_reads_index_and_premium_candles_and_last_prices(venue):
    """fetchOHLCV with price "index" and "premiumIndex", and fetchLastPrices, which ccxt
    sends to /fapi/v1/indexPriceKlines, /premiumIndexKlines and /fapi/v2/ticker/price
    (answered -5000 before)."""
    exchange, client, oracle, gateway = venue
    await oracle.mark("SOL-PERP", "150", index="149")
    await oracle.mark("SOL-PERP", "151.5", index="150")
    await client.deposit("maker", "1000000")
    await client.deposit("taker", "100000")
    await client.place("maker", "SOL-PERP", Side.SELL, "1", "150.25")
    await client.place("taker", "SOL-PERP", Side.BUY, "1", "150.25", tif=TimeInForce.IOC)
    await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].trades
                 and len(gateway.projection.markets["SOL-PERP"].index_candles) > 0
                 and gateway.projection.markets["SOL-PERP"].index == 15000)
    index = await exchange.fetch_ohlcv("SOL/USDT:USDT", "1m", params={"price": "index"})
    assert index[0][1] == 149.0 and index[-1][4] == 150.0 and max(c[2] for c in index) == 150.0
    premium = await exchange.fetch_ohlcv("SOL/USDT:USDT", "1m", params={"price": "premiumIndex"})
    # (150 − 149) / 149 and (151.5 − 150) / 150, to 8 places
    assert premium[0][1] == round(1 / 149, 8) and premium[-1][4] == 0.01
    last = await exchange.fetch_last_prices(["SOL/USDT:USDT"])
    assert last["SOL/USDT:USDT"]["price"] == 150.25
    with pytest.raises(ccxt.BadRequest):
        await exchange.fapiPublicGetIndexPriceKlines({"interval": "1m"})  # no pair


async def test_ccxt_reads_margin_modes_and_leverages_where_it_holds_nothing(venue):
    """What a bot set in a market it is flat in reads back (fetchMarginModes and
    fetchLeverages ask /fapi/v1/symbolConfig, nautilus_trader's execution client too);
    markets it never touched show the defaults, cross at 20x (SOL's maximum is 20x)."""
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await client.deposit("bot", "1000")
        await bot.load_markets()
        await bot.set_margin_mode("isolated", "ETH/USDT:USDT")
        await bot.set_leverage(7, "ETH/USDT:USDT")
        modes = await bot.fetch_margin_modes(["ETH/USDT:USDT", "SOL/USDT:USDT"])
        assert (modes["ETH/USDT:USDT"]["marginMode"], modes["SOL/USDT:USDT"]["marginMode"]) == ("isolated", "cross")
        leverages = await bot.fetch_leverages(["ETH/USDT:USDT", "SOL/USDT:USDT", "BTC/USDT:USDT"])
        assert leverages["ETH/USDT:USDT"]["longLeverage"] == 7
        assert leverages["SOL/USDT:USDT"]["longLeverage"] == 20 and leverages["BTC/USDT:USDT"]["longLeverage"] == 20
        assert (await bot.fetch_margin_mode("ETH/USDT:USDT"))["marginMode"] == "isolated"
        config = await bot.fapiPrivateGetAccountConfig()
        assert (config["canTrade"], config["dualSidePosition"], config["multiAssetsMargin"]) == (True, False, False)
        # fetchTradingFees reads the fee tier (accountConfig) and takes the rates from ccxt's own
        # table; fetchTradingFee asks the venue (commissionRate): SOL's 0.02% and 0.05%
        assert "SOL/USDT:USDT" in await bot.fetch_trading_fees()
        fee = await bot.fetch_trading_fee("SOL/USDT:USDT")
        assert (fee["maker"], fee["taker"]) == (0.0002, 0.0005)


async def test_ccxt_sees_its_trades_fees_income_and_order_history(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "10000")
        await client.place("maker", "SOL-PERP", Side.SELL, "2", "150.5")
        bought = await bot.create_order("SOL/USDT:USDT", "market", "buy", 2)
        assert bought["filled"] == 2.0 and bought["average"] == 150.5
        await client.place("maker", "SOL-PERP", Side.BUY, "1", "151")
        sold = await bot.create_order("SOL/USDT:USDT", "limit", "sell", 1, 151, params={"timeInForce": "IOC"})
        assert sold["status"] == "closed" and sold["filled"] == 1.0
        await oracle.funding("SOL-PERP", 100_000, "150")
        await settle(gateway, lambda: any(i.kind.name == "FUNDING_FEE"
                                          for _, i in gateway.ledger.account("bot").income))

        trades = await bot.fetch_my_trades("SOL/USDT:USDT")
        assert [(t["side"], t["price"], t["amount"], t["takerOrMaker"]) for t in trades] == [
            ("buy", 150.5, 2.0, "taker"), ("sell", 151.0, 1.0, "taker")]
        # taker fee 0.05%: 301 × 0.0005 and 151 × 0.0005
        assert [t["fee"]["cost"] for t in trades] == [0.1505, 0.0755]
        assert [t["info"]["realizedPnl"] for t in trades] == ["0.000000", "0.500000"]  # (151 − 150.5) × 1

        funding = await bot.fetch_funding_history("SOL/USDT:USDT")
        # the long of 1 pays 1 × 150 × 0.0001 = 0.015
        assert [f["amount"] for f in funding] == [-0.015]
        income = await bot.fapiPrivateGetIncome({})
        assert [(i["incomeType"], i["income"]) for i in income] == [
            ("TRANSFER", "10000.000000"), ("COMMISSION", "-0.150500"), ("COMMISSION", "-0.075500"),
            ("REALIZED_PNL", "0.500000"), ("FUNDING_FEE", "-0.015000")]
        balance = await bot.fetch_balance()
        # the wallet is the sum of the income: 10000 − 0.1505 + 0.5 − 0.0755 − 0.015; ccxt's
        # total adds the open long's unrealized PnL at the mark: (150 − 150.5) × 1
        assert balance["info"]["totalWalletBalance"] == "10000.259000"
        assert balance["USDT"]["total"] == 9999.759

        orders = await bot.fetch_orders("SOL/USDT:USDT")
        assert [(o["id"], o["status"], o["filled"]) for o in orders] == [
            (bought["id"], "closed", 2.0), (sold["id"], "closed", 1.0)]


async def test_ccxt_places_a_batch_and_cancels_all(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "10000")
        await client.place("maker", "SOL-PERP", Side.SELL, "1", "150.5")
        placed = await bot.create_orders([
            {"symbol": "SOL/USDT:USDT", "type": "limit", "side": "buy", "amount": 1, "price": 148},
            {"symbol": "SOL/USDT:USDT", "type": "limit", "side": "buy", "amount": 2, "price": 149},
            # post-only at the ask would take: Binance's -5022, this entry only
            {"symbol": "SOL/USDT:USDT", "type": "limit", "side": "buy", "amount": 1, "price": 150.5,
             "params": {"timeInForce": "GTX"}},
        ])
        # ccxt sorts a batch's answers by time; the rejected entry (no time) comes first
        rejected = [o for o in placed if o["status"] == "rejected"]
        opened = [o for o in placed if o["status"] == "open"]
        assert [o["info"]["code"] for o in rejected] == [-5022]
        assert sorted((o["price"], o["amount"]) for o in opened) == [(148.0, 1.0), (149.0, 2.0)]
        assert sorted(o["price"] for o in await bot.fetch_open_orders("SOL/USDT:USDT")) == [148.0, 149.0]
        await bot.cancel_all_orders("SOL/USDT:USDT")
        assert await bot.fetch_open_orders("SOL/USDT:USDT") == []
        statuses = {o["id"]: o["status"] for o in await bot.fetch_orders("SOL/USDT:USDT")}
        assert statuses == {o["id"]: "canceled" for o in opened}


async def test_one_way_single_asset_modes_as_freqtrade_checks_them(venue):
    _, client, _, gateway = venue
    async with signed(gateway, "bot") as bot:
        assert (await bot.fapiPrivateGetPositionSideDual())["dualSidePosition"] is False
        assert (await bot.fapiPrivateGetMultiAssetsMargin())["multiAssetsMargin"] is False
        with pytest.raises(ccxt.ExchangeError, match="one-way"):
            await bot.set_position_mode(True)
        with pytest.raises(ccxt.ExchangeError, match="single-asset"):
            await bot.fapiPrivatePostMultiAssetsMargin({"multiAssetsMargin": "true"})


async def positions_closed(gateway: GatewayHost, account: str) -> None:
    await settle(gateway, lambda: gateway.ledger.account(account).snapshot is not None
                 and not gateway.ledger.snapshot(account).positions
                 and any(i.kind.name == "INSURANCE_CLEAR" for _, i in gateway.ledger.account(account).income),
                 timeout=15)


async def next_event(stream, kind: str, timeout: float = 10.0) -> dict:
    """The next user data stream event of ``kind`` (others are skipped)."""
    async def read():
        while True:
            event = await stream.receive_json()
            if event.get("e") == kind:
                return event
    return await asyncio.wait_for(read(), timeout)


async def test_mission_isolated_case_through_ccxt_loses_its_300_and_not_a_cent_more(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "trader") as bot:
        await opening(client, oracle, "trader", "2000")
        await client.deposit("insurance", "1000000")
        await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
        await bot.set_margin_mode("isolated", "SOL/USDT:USDT")
        await bot.set_leverage(5, "SOL/USDT:USDT")
        await bot.create_order("SOL/USDT:USDT", "market", "buy", 10)
        await settle(gateway, lambda: gateway.ledger.snapshot("trader").positions)
        [position] = await bot.fetch_positions(["SOL/USDT:USDT"])
        assert position["liquidationPrice"] == 123.08 and position["collateral"] == 300.0

        # a mark move alone (no trade, so no new snapshot from risk) shows at once
        await oracle.mark("SOL-PERP", "140")
        await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].mark == 14000)
        [position] = await bot.fetch_positions(["SOL/USDT:USDT"])
        assert (position["markPrice"], position["unrealizedPnl"]) == (140.0, -100.0)  # (140 − 150) × 10
        assert position["liquidationPrice"] == 123.08  # isolated: its margin alone decides
        assert (await bot.fetch_balance())["USDT"]["total"] == 1899.25  # 2,000 − 0.75 fee − 100

        listen_key = (await bot.fapiPrivatePostListenKey())["listenKey"]
        async with aiohttp.ClientSession() as session, \
                session.ws_connect(f"{gateway.base.replace('http', 'ws')}/ws/{listen_key}") as stream:
            # at 123.50: equity 300 − 265 = 35, maintenance 2.5% of 1,235 = 30.875 (88%): a
            # margin call, not yet a liquidation (that is at 123.08)
            await oracle.mark("SOL-PERP", "123.5")
            call = await next_event(stream, "MARGIN_CALL")
            assert call["p"] == [{"s": "SOLUSDT", "ps": "BOTH", "pa": "10.00", "mt": "ISOLATED",
                                  "iw": "300.000000", "mp": "123.50", "up": "-265.000000", "mm": "30.875000"}]
            await oracle.mark("SOL-PERP", "105")  # a 30% gap: far through the bankruptcy price of 120
            forced = await next_event(stream, "ORDER_TRADE_UPDATE")
            # a LIMIT IOC order named autoclose-..., as Binance streams a liquidation
            assert (forced["o"]["o"], forced["o"]["f"], forced["o"]["ot"], forced["o"]["S"]) == ("LIMIT", "IOC", "LIMIT",
                                                                                                 "SELL")
            assert forced["o"]["c"].startswith("autoclose-")
            assert forced["o"]["z"] == "10.00"
            while True:
                update = await next_event(stream, "ACCOUNT_UPDATE")
                if not update["a"]["P"]:
                    break
            assert update["a"]["B"][0]["wb"] == "1699.250000"
        await positions_closed(gateway, "trader")

        assert await bot.fetch_positions(["SOL/USDT:USDT"]) == []
        balance = await bot.fetch_balance()
        # the other 1,700 untouched: 2,000 − the 300 of margin − the 0.75 opening fee (0.05% of 1,500)
        assert balance["USDT"]["total"] == 1699.25 and balance["USDT"]["free"] == 1699.25
        income = await bot.fapiPrivateGetIncome({"limit": 1000})
        assert sum(Decimal(i["income"]) for i in income) == Decimal("1699.25")  # the history explains the wallet
        assert {"TRANSFER", "COMMISSION", "INSURANCE_CLEAR"} <= {i["incomeType"] for i in income}


async def test_mission_cross_case_through_ccxt_drains_the_cross_balance(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "trader") as bot:
        await opening(client, oracle, "trader", "2000")
        await client.deposit("insurance", "1000000")
        await client.place("maker", "SOL-PERP", Side.SELL, "100", "150")
        with pytest.raises(ccxt.MarginModeAlreadySet):  # cross is the default, as on Binance
            await bot.set_margin_mode("cross", "SOL/USDT:USDT")
        await bot.set_leverage(10, "SOL/USDT:USDT")
        await bot.create_order("SOL/USDT:USDT", "market", "buy", 100)
        await settle(gateway, lambda: gateway.ledger.snapshot("trader").positions)
        [position] = await bot.fetch_positions(["SOL/USDT:USDT"])
        # the whole balance backs it: 2,000 − 7.5 fee + 100 (P − 150) = 2.5% · 100 P
        expected = (Decimal(15000) - Decimal("1992.5")) / Decimal("97.5")
        assert position["marginMode"] == "cross" and abs(Decimal(str(position["liquidationPrice"])) - expected) \
            <= Decimal("0.01")

        await oracle.mark("SOL-PERP", "105")
        await positions_closed(gateway, "trader")

        assert await bot.fetch_positions(["SOL/USDT:USDT"]) == []
        balance = await bot.fetch_balance()
        assert balance["USDT"]["total"] == 0.0  # drained to zero, and not below
        income = await bot.fapiPrivateGetIncome({"limit": 1000})
        assert sum(Decimal(i["income"]) for i in income) == 0


async def until(watch, condition, timeout: float = 10.0, current=None):
    """Call a ccxt.pro ``watch`` until what it returns satisfies ``condition`` (or, first,
    what ``current()`` says ccxt already holds: an update may have come in meanwhile)."""
    async def loop():
        if current is not None and current() is not None and condition(current()):
            return current()
        while True:
            value = await watch()
            if condition(value):
                return value
    return await asyncio.wait_for(loop(), timeout)


async def test_ccxt_pro_watches_the_order_book_trades_and_mark(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "watcher", ccxtpro) as pro:
        await oracle.mark("SOL-PERP", "150")
        await client.deposit("maker", "1000000")
        await client.deposit("taker", "100000")
        await client.place("maker", "SOL-PERP", Side.BUY, "3", "149.5")
        await client.place("maker", "SOL-PERP", Side.SELL, "4", "150.5")
        await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].asks)
        book = await pro.watch_order_book("SOL/USDT:USDT")  # the REST snapshot, then the diff stream
        assert book["bids"][0] == [149.5, 3.0] and book["asks"][0] == [150.5, 4.0]

        await client.place("maker", "SOL-PERP", Side.BUY, "2", "149.9")
        book = await until(lambda: pro.watch_order_book("SOL/USDT:USDT"), lambda b: b["bids"][0][0] == 149.9)
        assert book["bids"][:2] == [[149.9, 2.0], [149.5, 3.0]]

        watching = asyncio.create_task(pro.watch_trades("SOL/USDT:USDT"))
        await asyncio.sleep(0.3)  # subscribed before the trade
        await client.place("taker", "SOL-PERP", Side.BUY, "1.5", "150.5", tif=TimeInForce.IOC)
        trades = await asyncio.wait_for(watching, 10)
        assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(150.5, 1.5, "buy")]
        book = await until(lambda: pro.watch_order_book("SOL/USDT:USDT"), lambda b: b["asks"][0][1] == 2.5,
                           current=lambda: pro.orderbooks.get("SOL/USDT:USDT"))
        assert book["asks"][0] == [150.5, 2.5]  # what the book lost, as the REST depth shows it too
        rest = await pro.fetch_order_book("SOL/USDT:USDT")
        assert rest["asks"][0] == [150.5, 2.5] and rest["bids"][0] == [149.9, 2.0]

        candles = asyncio.create_task(until(lambda: pro.watch_ohlcv("SOL/USDT:USDT", "1m"),
                                            lambda cs: bool(cs)))  # the first update: the coming trade
        await asyncio.sleep(0.3)
        await client.place("taker", "SOL-PERP", Side.BUY, "1", "150.5", tif=TimeInForce.IOC)
        *_, candle = await candles
        # this minute's candle: the 1.5 and the 1 at 150.5 (or only the 1, if a minute began between)
        assert candle[1:5] == [150.5, 150.5, 150.5, 150.5] and candle[5] in (2.5, 1.0)

        marking = asyncio.create_task(until(lambda: pro.watch_mark_price("SOL/USDT:USDT"),
                                            lambda t: t["markPrice"] == 151.25))
        await asyncio.sleep(0.3)
        await oracle.mark("SOL-PERP", "151.25")
        ticker = await marking
        assert ticker["indexPrice"] == 151.25


async def test_ccxt_pro_watches_its_orders_and_positions_on_the_user_data_stream(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot", ccxtpro) as pro:
        await opening(client, oracle, "bot", "10000")
        await client.deposit("other", "1000000")
        orders = asyncio.create_task(until(lambda: pro.watch_orders("SOL/USDT:USDT"),
                                           lambda os: any(o["status"] == "open" for o in os)))
        await asyncio.sleep(0.5)  # the listen key is taken and the stream connected
        resting = await pro.create_order("SOL/USDT:USDT", "limit", "buy", 2, 149)
        [seen] = [o for o in await orders if o["status"] == "open"]
        assert (seen["id"], seen["price"], seen["amount"], seen["filled"]) == (resting["id"], 149.0, 2.0, 0.0)

        closing = asyncio.create_task(until(lambda: pro.watch_orders("SOL/USDT:USDT"),
                                            lambda os: any(o["status"] == "closed" for o in os)))
        positions = asyncio.create_task(until(lambda: pro.watch_positions(["SOL/USDT:USDT"]),
                                              lambda ps: any(p["contracts"] for p in ps)))
        await asyncio.sleep(0.3)
        await client.place("maker", "SOL-PERP", Side.SELL, "2", "149", tif=TimeInForce.IOC)  # fills the bot's bid
        [filled] = [o for o in await closing if o["status"] == "closed"]
        assert filled["id"] == resting["id"] and filled["filled"] == 2.0 and filled["average"] == 149.0
        [position] = [p for p in await positions if p["contracts"]]
        assert (position["side"], position["contracts"], position["entryPrice"]) == ("long", 2.0, 149.0)

        # another account's activity never reaches this stream
        await client.place("other", "SOL-PERP", Side.BUY, "1", "145")
        await asyncio.sleep(0.5)
        assert {o["id"] for o in pro.orders} == {resting["id"]}  # every order ccxt.pro has received


async def test_ccxt_order_types_and_the_errors_a_bot_catches(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "10000")
        await client.place("maker", "SOL-PERP", Side.SELL, "1", "150.5")
        symbol = "SOL/USDT:USDT"

        maker_only = await bot.create_order(symbol, "limit", "buy", 1, 150, params={"postOnly": True})
        assert maker_only["status"] == "open" and maker_only["postOnly"] is True
        with pytest.raises(ccxt.OperationRejected, match="-4047"):  # the post-only bid is open
            await bot.set_margin_mode("isolated", symbol)
        with pytest.raises(ccxt.OrderNotFillable, match="-5022"):  # it would take the 150.5 ask
            await bot.create_order(symbol, "limit", "buy", 1, 150.5, params={"postOnly": True})

        ioc = await bot.create_order(symbol, "limit", "buy", 2, 150.5, params={"timeInForce": "IOC"})
        assert (ioc["status"], ioc["filled"], ioc["remaining"], ioc["average"]) == ("expired", 1.0, 1.0, 150.5)
        await client.place("maker", "SOL-PERP", Side.SELL, "1", "150.5")
        fok = await bot.create_order(symbol, "limit", "buy", 5, 150.5, params={"timeInForce": "FOK"})
        assert (fok["status"], fok["filled"]) == ("expired", 0.0)  # 1 available of 5: nothing, all or none
        assert (await bot.fetch_order(fok["id"], symbol))["status"] == "expired"
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # a reduce-only buy would add to the long of 1
            await bot.create_order(symbol, "limit", "buy", 1, 149, params={"reduceOnly": True})
        with pytest.raises(ccxt.BadRequest, match="-1111"):  # 0.001 is below SOL's lot of 0.01
            await bot.fapiPrivatePostOrder({"symbol": "SOLUSDT", "side": "BUY", "type": "LIMIT", "quantity": "1.001",
                                            "price": "149", "timeInForce": "GTC"})
        await bot.cancel_order(maker_only["id"], symbol)
        with pytest.raises(ccxt.OperationRejected, match="-4048"):  # the long of 1 is open
            await bot.set_margin_mode("isolated", symbol)

        await client.place("maker", "SOL-PERP", Side.BUY, "1", "150")
        closed = await bot.create_order(symbol, "market", "sell", 1, params={"reduceOnly": True})
        assert closed["status"] == "closed" and closed["reduceOnly"] is True and closed["average"] == 150.0
        await settle(gateway, lambda: not gateway.ledger.snapshot("bot").positions)
        assert await bot.fetch_positions([symbol]) == []

        # margin can be removed again from an isolated position
        await bot.set_margin_mode("isolated", symbol)
        await bot.set_leverage(5, symbol)
        await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
        await bot.create_order(symbol, "market", "buy", 10)
        await bot.add_margin(symbol, 100)
        reduced = await bot.reduce_margin(symbol, 50)
        assert reduced["amount"] == 50.0 and reduced["type"] == "reduce"
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions
                     and gateway.ledger.snapshot("bot").positions[0].isolated_margin == 350 * 1_000_000)
        [position] = await bot.fetch_positions([symbol])
        assert position["collateral"] == 350.0
        with pytest.raises(ccxt.ExchangeError, match="-4051"):  # more than the position can spare
            await bot.reduce_margin(symbol, 300)

        fee = await bot.fetch_trading_fee(symbol)
        assert (fee["maker"], fee["taker"]) == (0.0002, 0.0005)  # SOL-PERP's 2 and 5 basis points
        rates = await bot.fetch_funding_rates()
        assert {"BTC/USDT:USDT", "ETH/USDT:USDT", "SOL/USDT:USDT"} <= set(rates)
        assert rates["SOL/USDT:USDT"]["markPrice"] == 150.0


async def test_sync_ccxt_trades_through_the_gateway(venue):
    """Plain (synchronous) ccxt, as most bots use it: its calls block, so they run in a
    thread while the venue runs in this event loop."""
    _, client, oracle, gateway = venue
    await opening(client, oracle, "bot", "10000")
    await client.place("maker", "SOL-PERP", Side.SELL, "3", "150.5")
    await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].asks)
    key, secret = await api_key(gateway, "bot")
    bot = sync_ccxt_for(gateway.base, key, secret)

    def trade() -> tuple:
        bot.load_markets()
        book = bot.fetch_order_book("SOL/USDT:USDT")
        resting = bot.create_order("SOL/USDT:USDT", "limit", "buy", 1, 149)
        taken = bot.create_order("SOL/USDT:USDT", "market", "buy", 2)
        open_orders = bot.fetch_open_orders("SOL/USDT:USDT")
        bot.cancel_order(resting["id"], "SOL/USDT:USDT")
        return book, resting, taken, open_orders, bot.fetch_open_orders("SOL/USDT:USDT")

    book, resting, taken, open_orders, after = await asyncio.to_thread(trade)
    assert book["asks"] == [[150.5, 3.0]]
    assert resting["status"] == "open" and taken["filled"] == 2.0 and taken["average"] == 150.5
    assert [o["id"] for o in open_orders] == [resting["id"]] and after == []
    await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)
    positions = await asyncio.to_thread(bot.fetch_positions, ["SOL/USDT:USDT"])
    assert [(p["side"], p["contracts"], p["entryPrice"]) for p in positions] == [("long", 2.0, 150.5)]
    with pytest.raises(sync_ccxt.InsufficientFunds):
        await asyncio.to_thread(bot.create_order, "SOL/USDT:USDT", "limit", "buy", 10000, 149)


async def test_stream_requests_bad_streams_and_listen_keys_get_binance_answers(venue):
    _, client, oracle, gateway = venue
    base = gateway.base.replace("http://", "ws://")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{base}/ws") as ws:
            await ws.send_json({"method": "SUBSCRIBE", "params": ["solusdt@depth@100ms", "ethusdt@aggTrade"], "id": 1})
            assert await ws.receive_json(timeout=5) == {"result": None, "id": 1}
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 2})
            assert await ws.receive_json(timeout=5) == {"result": ["ethusdt@aggTrade", "solusdt@depth@100ms"], "id": 2}
            await ws.send_json({"method": "SUBSCRIBE", "params": ["dogeusdt@depth"], "id": 3})
            answer = await ws.receive_json(timeout=5)
            assert answer["id"] == 3 and answer["error"]["code"] == 2 and "dogeusdt@depth" in answer["error"]["msg"]
            await ws.send_str("not json")
            assert (await ws.receive_json(timeout=5))["error"]["code"] == 3
            await ws.send_json({"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 4})
            assert await ws.receive_json(timeout=5) == {"result": None, "id": 4}
            await oracle.mark("SOL-PERP", "150")
            await client.deposit("maker", "1000000")
            await client.place("maker", "SOL-PERP", Side.SELL, "1", "150.5")
            update = await ws.receive_json(timeout=5)
            assert update["e"] == "depthUpdate" and update["s"] == "SOLUSDT" and update["a"] == [["150.50", "1.00"]]
            assert update["pu"] == update["u"] - 1
        async with session.ws_connect(f"{base}/stream?streams=solusdt@bookTicker") as ws:  # combined: wrapped
            await client.place("maker", "SOL-PERP", Side.SELL, "2", "150.4")
            update = await ws.receive_json(timeout=5)
            assert update["stream"] == "solusdt@bookTicker" and update["data"]["a"] == "150.40"
        async with session.ws_connect(f"{base}/ws/no-such-listen-key?listenKey=nope") as ws:
            answer = await ws.receive_json(timeout=5)
            assert answer["error"]["code"] == -1125
            assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        async with session.post(f"{gateway.base}/fapi/v1/listenKey", headers={"X-MBX-APIKEY": "unknown"}) as reply:
            assert reply.status == 401 and (await reply.json())["code"] == -2015


def readme_freqtrade_snippet() -> str:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- freqtrade-config -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged


async def test_the_readme_freqtrade_config_drives_ccxt_binance_as_freqtrade_does(venue, tmp_path):
    _, client, oracle, gateway = venue
    key, secret = await api_key(gateway, "freqtrade")
    snippet = readme_freqtrade_snippet().replace("127.0.0.1:8080", urlparse(gateway.base).netloc)
    script = tmp_path / "perpsim_exchange.py"
    script.write_text(snippet)
    printed = await asyncio.create_subprocess_exec(sys.executable, str(script), key, secret,
                                                   stdout=asyncio.subprocess.PIPE)
    out, _ = await printed.communicate()
    section = json.loads(out)
    assert (section["name"], section["key"], section["secret"]) == ("binance", key, secret)

    # Freqtrade: ccxt.binance(apiKey, secret, its futures options, merged with ccxt_async_config)
    settings = deep_merge({"apiKey": key, "secret": secret, "enableRateLimit": False,
                           "options": {"defaultType": "swap"}}, section["ccxt_async_config"])
    exchange = ccxt.binance(settings)
    original = exchange.fetch

    async def fetch_loopback_only(url, method="GET", headers=None, body=None):
        loopback(url)
        return await original(url, method, headers, body)

    exchange.fetch = fetch_loopback_only
    try:
        await opening(client, oracle, "freqtrade", "5000")
        await client.place("maker", "SOL-PERP", Side.SELL, "4", "150.5")
        markets = await exchange.load_markets()
        assert markets["SOL/USDT:USDT"]["linear"] and not any(m["spot"] for m in markets.values())
        # Freqtrade's startup checks on Binance futures
        assert (await exchange.fapiPrivateGetPositionSideDual())["dualSidePosition"] is False
        assert (await exchange.fapiPrivateGetMultiAssetsMargin())["multiAssetsMargin"] is False
        tiers = await exchange.fetch_leverage_tiers(["SOL/USDT:USDT"])
        assert [t["maxLeverage"] for t in tiers["SOL/USDT:USDT"]] == [20, 10]
        await exchange.set_margin_mode("isolated", "SOL/USDT:USDT")
        await exchange.set_leverage(3, "SOL/USDT:USDT")
        order = await exchange.create_order("SOL/USDT:USDT", "market", "buy", 3)
        assert order["filled"] == 3.0 and order["average"] == 150.5
        await settle(gateway, lambda: gateway.ledger.snapshot("freqtrade").positions)
        [position] = await exchange.fetch_positions(["SOL/USDT:USDT"])
        assert position["marginMode"] == "isolated" and position["collateral"] == 150.5  # 451.5 / 3
        # 5,000 − the taker fee 451.5 × 0.0005 + the long's PnL at the mark, (150 − 150.5) × 3
        assert (await exchange.fetch_balance())["USDT"]["total"] == 4998.27425
    finally:
        await exchange.close()


async def test_a_ccxt_bot_on_the_full_stack_over_kafka_is_liquidated_as_on_the_venue(stack_factory):
    """The services and the gateway as processes on the embedded broker; the account made
    with `perpsim accounts create`, as a user does; the bot is ccxt configured by URL."""
    port = free_port()
    stack = stack_factory(partitions=2, extra=["--gateway-port", str(port), "--hyperliquid-port", str(free_port())])
    stack.start("matching", "risk", "liquidation", "gateway")
    created = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "accounts", "create", "--bootstrap", stack.bootstrap,
        "--partitions", "2", "--state-dir", str(stack.state_dir / "state"), "--deposit", "2000",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(created.communicate(), 60)
    assert created.returncode == 0, out.decode()
    printed = dict(line.split(":", 1) for line in out.decode().splitlines() if ":" in line)
    account, key, secret = (printed[name].strip() for name in ("account", "api key", "secret"))
    bus = await kafka_bus(stack.bootstrap, 2)
    bot = ccxt_for(f"http://127.0.0.1:{port}", key, secret)
    try:
        async with Client(bus, default_markets(), timeout_s=30) as client:
            oracle = Oracle(bus, wall_clock=True)
            await opening(client, oracle, "insurance", "1000000")
            await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the gateway is up and has seen the deposit
                try:
                    if (await bot.fetch_balance())["USDT"]["total"] == 2000.0:
                        break
                except (ccxt.NetworkError, ccxt.ExchangeError):
                    pass
                assert asyncio.get_running_loop().time() < deadline, "the gateway never showed the deposit"
                await asyncio.sleep(0.3)
            await bot.set_margin_mode("isolated", "SOL/USDT:USDT")
            await bot.set_leverage(5, "SOL/USDT:USDT")
            order = await bot.create_order("SOL/USDT:USDT", "market", "buy", 10)
            assert order["status"] == "closed" and order["filled"] == 10.0 and order["average"] == 150.0
            positions = []
            deadline = asyncio.get_running_loop().time() + 30
            while not positions:
                assert asyncio.get_running_loop().time() < deadline, "the position never showed"
                positions = await bot.fetch_positions(["SOL/USDT:USDT"])
            assert positions[0]["liquidationPrice"] == 123.08 and positions[0]["collateral"] == 300.0

            await oracle.mark("SOL-PERP", "105")
            await client.wait_for(lambda m: isinstance(m, LiquidationOutcome) and m.account == account
                                  and m.stage is LiquidationStage.BACKSTOP, timeout_s=30)
            deadline = asyncio.get_running_loop().time() + 30
            while (await bot.fetch_balance())["USDT"]["total"] != 1699.25:
                assert asyncio.get_running_loop().time() < deadline, await bot.fetch_balance()
                await asyncio.sleep(0.2)
            assert await bot.fetch_positions(["SOL/USDT:USDT"]) == []
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bot.close()
        await bus.stop()


async def test_ccxt_edits_a_resting_order(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "10000")
        await client.place("maker", "SOL-PERP", Side.SELL, "5", "150.5")
        order = await bot.create_order("SOL/USDT:USDT", "limit", "buy", 2, 148)
        edited = await bot.edit_order(order["id"], "SOL/USDT:USDT", "limit", "buy", 3, 149)
        assert (edited["id"], edited["price"], edited["amount"], edited["status"]) == (order["id"], 149.0, 3.0, "open")
        [book_bid] = (await bot.fetch_order_book("SOL/USDT:USDT"))["bids"]
        assert book_bid == [149.0, 3.0]
        with pytest.raises(ccxt.InvalidOrder, match="-4000"):  # the side cannot change
            await bot.edit_order(order["id"], "SOL/USDT:USDT", "limit", "sell", 3, 149)
        crossing = await bot.edit_order(order["id"], "SOL/USDT:USDT", "limit", "buy", 3, 150.5)
        assert crossing["id"] == order["id"]  # moved onto the ask: it trades as a taker
        await settle(gateway, lambda: gateway.ledger.orders[int(order["id"])].status is OrderStatus.FILLED)
        assert (await bot.fetch_order(order["id"], "SOL/USDT:USDT"))["filled"] == 3.0


async def test_the_metrics_endpoint_counts_orders_fills_refusals_and_reads_fund_interest_and_lag(venue):
    from prometheus_client.parser import text_string_to_metric_families

    from services.client import Rejected

    exchange, client, oracle, gateway = venue
    await oracle.mark("SOL-PERP", "150")
    for account, amount in (("maker", "100000"), ("taker", "1000"), ("insurance", "2500")):
        await client.deposit(account, amount)
    await client.place("maker", "SOL-PERP", Side.SELL, "5", "150.5")
    await client.place("taker", "SOL-PERP", Side.BUY, "2", "150.5", tif=TimeInForce.IOC)
    with pytest.raises(Rejected):
        await client.place("taker", "SOL-PERP", Side.BUY, "500", "150.5")  # far more than 1,000 can margin
    await settle(gateway, lambda: gateway.ledger.snapshot("taker").positions)

    async def scrape() -> dict:
        async with aiohttp.ClientSession() as session, session.get(f"{gateway.base}/metrics") as answer:
            assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
            text = await answer.text()
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(text) for sample in family.samples}

    await asyncio.sleep(0.2)
    metrics = await scrape()
    assert metrics[("perpsim_orders_total", (("conditional", "false"), ("market", "SOL-PERP")))] == 2
    assert metrics[("perpsim_fills_total", (("liquidity", "book"), ("market", "SOL-PERP")))] == 1
    assert metrics[("perpsim_rejects_total", (("reason", "INSUFFICIENT_MARGIN"),))] == 1
    assert metrics[("perpsim_insurance_fund_usdc", ())] == 2500
    assert metrics[("perpsim_open_interest", (("market", "SOL-PERP"),))] == 2.0
    assert metrics[("perpsim_mark_price", (("market", "SOL-PERP"),))] == 150.0
    for service in ("risk", "matching", "liquidation"):
        assert metrics[("perpsim_service_lag_records", (("service", service),))] >= 0


async def test_binance_rate_limits_answer_429_with_binances_codes_and_headers():
    """With small limits (the same code as Binance's published ones): each answer carries
    the used weight and order counts; past them a bot's ccxt raises DDoSProtection, as it
    does for Binance's 429 (Freqtrade backs off on it)."""
    limits = RateLimits(weight_per_minute=30, orders_per_10s=3, orders_per_minute=5)
    async with running_venue(default_markets(), limits=limits) as (_, client, oracle, gateway):
        await oracle.mark("SOL-PERP", "150")
        await client.deposit("bot", "10000")
        async with signed(gateway, "bot") as bot:
            await bot.load_markets()
            while time.time() % 10 > 6 or time.time() % 60 > 45:  # four orders inside one 10 s window
                await asyncio.sleep(0.2)
            for count in (1, 2, 3):
                await bot.create_order("SOL/USDT:USDT", "limit", "buy", 1, 149)
                headers = {k.upper(): v for k, v in bot.last_response_headers.items()}
                assert (headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1M"]) == (str(count), str(count))
            with pytest.raises(ccxt.DDoSProtection, match="-1015"):  # ccxt's class for Binance's 429 (bots back off)
                await bot.create_order("SOL/USDT:USDT", "limit", "buy", 1, 149)
            assert len(gateway.ledger.open_orders("bot")) == 3  # the fourth was not placed
        async with aiohttp.ClientSession() as session:
            used = []
            for _ in range(8):  # depth of 100 levels weighs 5: six fit in 30
                async with session.get(f"{gateway.base}/fapi/v1/depth?symbol=SOLUSDT&limit=100") as answer:
                    used.append((answer.status, answer.headers.get("X-MBX-USED-WEIGHT-1M")))
                    body = await answer.json()
            weight = int(used[0][1])
            assert [u for u in used if u[0] == 200] == [(200, str(weight + 5 * i)) for i in range(len(
                [u for u in used if u[0] == 200]))]
            assert used[-1][0] == 429 and body["code"] == -1003 and "current limit of IP" in body["msg"]
