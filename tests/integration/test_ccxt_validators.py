"""ccxt's own response validators (the structure checks shipped in the pinned ccxt 4.5.90,
``ccxt.test.exchange``: what ccxt's CI holds every exchange to) over every method the
README claims, on both dialects, after a little trading, so that each answer has
something in it. A method the README claims that fails its validator fails here."""

from __future__ import annotations

import importlib

import pytest

from schemas.enums import Side, TimeInForce
from tests.integration import test_hyperliquid_info
from tests.integration.test_gateway import settle, signed, venue  # noqa: F401 - venue is a fixture
from tests.integration.test_hyperliquid_ccxt import configured, funded

pytestmark = pytest.mark.integration
hyperliquid = test_hyperliquid_info.hyperliquid


def validator(name: str):
    """ccxt's validator of a method: ``ccxt.test.exchange.async.test_<name>``."""
    module = importlib.import_module(f"ccxt.test.exchange.async.test_{name}")
    return getattr(module, f"test_{name}")


# what the README claims for each dialect, by ccxt's validator names. Two of the shipped
# validators cannot pass for any exchange in Python and are left out: fetch_markets wants a
# dict where fetch_markets returns a list (load_markets checks every market instead), and
# fetch_margin_modes wants its answer to be a dict and an array at once.
BINANCE = ["load_markets", "fetch_ticker", "fetch_tickers", "fetch_order_book", "fetch_trades", "fetch_ohlcv",
           "fetch_funding_rate_history", "fetch_balance", "fetch_positions", "fetch_leverage_tiers",
           "fetch_market_leverage_tiers", "fetch_trading_fee", "fetch_open_orders", "fetch_orders",
           "fetch_closed_orders", "fetch_my_trades", "fetch_last_prices", "fetch_margin_mode"]
HYPERLIQUID = ["load_markets", "fetch_ticker", "fetch_tickers", "fetch_order_book", "fetch_trades", "fetch_ohlcv",
               "fetch_funding_rate_history", "fetch_balance", "fetch_positions", "fetch_open_orders", "fetch_orders",
               "fetch_closed_orders", "fetch_my_trades"]


async def traded_everywhere(client, oracle) -> None:
    """A mark and a trade in every market (a last price, candles, a funding payment)."""
    await client.deposit("maker", "10000000")
    await client.deposit("taker", "10000000")
    for market, price in (("SOL-PERP", "150"), ("ETH-PERP", "3000"), ("BTC-PERP", "60000")):
        await oracle.mark(market, price)
        await client.place("maker", market, Side.SELL, "1", price)
        await client.place("taker", market, Side.BUY, "1", price, tif=TimeInForce.IOC)
        await oracle.funding(market, 100_000, price)
    await client.place("maker", "SOL-PERP", Side.SELL, "20", "150.5")
    await client.place("maker", "SOL-PERP", Side.BUY, "20", "149.5")


# properties of a validator skipped for a dialect (ccxt's runner takes the same from its
# skip-tests.json), each for a reason that holds on the venue itself
SKIPPED = {
    # ccxt's hyperliquid takes its currencies from spotMeta's tokens; perpsim serves no spot
    # market, so spotMeta lists USDC alone and the perpetuals' coins are no currencies there
    ("hyperliquid", "load_markets"): {"currencyIdAndCode": True},
    # ccxt's hyperliquid sets a position's timestamp to None whatever the venue answers
    # (clearinghouseState has one time for the account, not one per position)
    ("hyperliquid", "fetch_positions"): {"timestamp": True, "datetime": True},
}


async def run_validators(exchange, names: list[str], symbol: str) -> dict[str, str]:
    failures = {}
    for name in names:
        check = validator(name)
        arguments = (symbol,) if check.__code__.co_argcount == 3 else ()
        try:
            await check(exchange, SKIPPED.get((exchange.id, name), {}), *arguments)
        except Exception as error:  # noqa: BLE001 - every failure is collected and reported
            failures[name] = f"{type(error).__name__}: {str(error)[:400]}"
    return failures


async def test_every_binance_method_the_readme_claims_passes_ccxts_validator(venue):  # noqa: F811
    _, client, oracle, gateway = venue
    symbol = "SOL/USDT:USDT"
    await traded_everywhere(client, oracle)
    await client.deposit("bot", "300")
    async with signed(gateway, "bot") as bot:
        await bot.load_markets()
        bot.has["future"] = False  # perpsim lists perpetuals only, no delivery futures (docs/gateway.md)
        await bot.create_order(symbol, "market", "buy", 10)  # 1,505 at 20x on 300: a liquidation price
        await bot.create_order(symbol, "limit", "buy", 1, 148)
        await bot.create_order(symbol, "limit", "sell", 1, 152)
        cancelled = await bot.create_order(symbol, "limit", "sell", 1, 153)
        await bot.cancel_order(cancelled["id"], symbol)
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)
        failures = await run_validators(bot, BINANCE, symbol)
    assert failures == {}, "\n".join(f"{name}: {why}" for name, why in failures.items())


async def test_every_hyperliquid_method_the_readme_claims_passes_ccxts_validator(hyperliquid):
    import ccxt.async_support as accxt

    client, oracle, gateway, url = hyperliquid
    await traded_everywhere(client, oracle)
    wallet = await funded(client, oracle, gateway)
    symbol = "SOL/USDC:USDC"
    exchange = configured(accxt, wallet, url)
    try:
        await exchange.load_markets()
        exchange.has["spot"] = False  # perpsim serves perpetuals only, no spot markets (docs/gateway.md)
        await exchange.create_order(symbol, "market", "buy", 2, 150.5)
        await exchange.create_order(symbol, "limit", "buy", 1, 148)
        cancelled = await exchange.create_order(symbol, "limit", "sell", 1, 153)
        await exchange.cancel_order(cancelled["id"], symbol)
        await settle(gateway, lambda: gateway.ledger.snapshot(wallet.address.lower()).positions)
        failures = await run_validators(exchange, HYPERLIQUID, symbol)
    finally:
        await exchange.close()
    assert failures == {}, "\n".join(f"{name}: {why}" for name, why in failures.items())
