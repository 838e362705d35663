"""ccxt's ``hyperliquid`` (the pinned 4.5.90: async, sync and ccxt.pro) against the
Hyperliquid dialect, configured only by URL and its markets option: it signs as mainnet
(source "a") where the SDK signs as testnet; both are accepted."""

from __future__ import annotations

import asyncio
import json

import ccxt
import ccxt.async_support as accxt
import ccxt.pro as pccxt
import pytest
from eth_account import Account

from schemas.enums import Side
from tests.integration import test_hyperliquid_info
from tests.integration.test_gateway import settle

pytestmark = pytest.mark.integration
SOL = "SOL/USDC:USDC"


def configured(module, wallet, url: str):
    """ccxt's hyperliquid pointed at the local venue as the README says: its URLs only."""
    scope: dict = {}
    exec(readme_ccxt_snippet().split("exchange =", 1)[0].replace("import ccxt\n", ""), scope)  # LOCAL
    local = json.loads(json.dumps(scope["LOCAL"]).replace("127.0.0.1:8081", url.split("://", 1)[1]))
    return module.hyperliquid({"walletAddress": wallet.address, "privateKey": wallet.key.hex(), **local})


hyperliquid = test_hyperliquid_info.hyperliquid  # the venue with the dialect on its own port


async def funded(client, oracle, gateway, deposit: str = "2000"):
    wallet = Account.create()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(wallet.address.lower(), deposit)
    await client.place("maker", "SOL-PERP", Side.SELL, "10", "150.5")
    await settle(gateway, lambda: gateway.ledger.accounts.get(wallet.address.lower())
                 and gateway.ledger.accounts[wallet.address.lower()].snapshot
                 and gateway.projection.markets["SOL-PERP"].asks)
    return wallet


async def test_async_ccxt_hyperliquid_loads_trades_and_manages_its_position(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = await funded(client, oracle, gateway)
    exchange = configured(accxt, wallet, url)
    try:
        markets = await exchange.load_markets()
        assert sorted(markets) == ["BTC/USDC:USDC", "ETH/USDC:USDC", SOL]
        assert markets[SOL]["limits"]["leverage"]["max"] == 20
        assert (await exchange.fetch_balance())["USDC"]["total"] == 2000.0
        await exchange.set_margin_mode("isolated", SOL, {"leverage": 5})
        await exchange.set_leverage(5, SOL, {"marginMode": "isolated"})
        bought = await exchange.create_order(SOL, "market", "buy", 2, 150.5)
        assert (bought["filled"], bought["average"]) == (2.0, 150.5)
        resting = await exchange.create_order(SOL, "limit", "sell", 1, 155, {"reduceOnly": True})
        [listed] = await exchange.fetch_open_orders(SOL)
        assert (listed["id"], listed["price"], listed["amount"], listed["side"]) == (resting["id"], 155.0, 1.0, "sell")
        await exchange.cancel_order(resting["id"], SOL)
        assert await exchange.fetch_open_orders(SOL) == []
        await exchange.add_margin(SOL, 10)
        await settle(gateway, lambda: gateway.ledger.snapshot(wallet.address.lower()).positions
                     and gateway.ledger.snapshot(wallet.address.lower()).positions[0].isolated_margin == 70_200_000)
        [position] = await exchange.fetch_positions([SOL])
        assert (position["side"], position["contracts"], position["entryPrice"], position["marginMode"]) == \
            ("long", 2.0, 150.5, "isolated")
        assert position["collateral"] == pytest.approx(70.2 - 1.0)  # 301/5 + 10 of margin, less the 1.0 unrealized
        trades = await exchange.fetch_my_trades(SOL)
        assert [(t["side"], t["price"], t["amount"]) for t in trades] == [("buy", 150.5, 2.0)]
    finally:
        await exchange.close()


async def test_sync_ccxt_hyperliquid_places_and_cancels(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = await funded(client, oracle, gateway)
    exchange = configured(ccxt, wallet, url)

    def work():
        exchange.load_markets()
        order = exchange.create_order(SOL, "limit", "buy", 1, 148)
        opened = exchange.fetch_open_orders(SOL)
        exchange.cancel_order(order["id"], SOL)
        return order, opened, exchange.fetch_open_orders(SOL)

    order, opened, after = await asyncio.to_thread(work)
    assert [o["id"] for o in opened] == [order["id"]] and after == []


def readme_ccxt_snippet() -> str:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- hyperliquid-ccxt -->", 1)[1]
    return block.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_readmes_ccxt_hyperliquid_lines_trade_on_the_venue(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = await funded(client, oracle, gateway)
    code = readme_ccxt_snippet().replace("http://127.0.0.1:8081", url)
    scope = {"ADDRESS": wallet.address, "PRIVATE_KEY": wallet.key.hex()}
    await asyncio.to_thread(exec, code, scope)  # the README's lines as a user runs them: sync ccxt
    await settle(gateway, lambda: gateway.ledger.snapshot(wallet.address.lower()).positions)
    [position] = gateway.ledger.snapshot(wallet.address.lower()).positions
    assert position.signed_size == 100  # the 1 SOL the README buys


async def test_ccxt_pro_watches_the_book_ticker_candles_orders_fills_balance_and_positions(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = await funded(client, oracle, gateway)
    address = wallet.address.lower()
    exchange = configured(pccxt, wallet, url)
    try:
        await exchange.load_markets()
        book = await exchange.watch_order_book(SOL)
        assert (book["asks"][0][0], book["asks"][0][1], book["bids"]) == (150.5, 10.0, [])
        ticker = await exchange.watch_ticker(SOL)  # activeAssetCtx
        assert ticker["symbol"] == SOL and ticker["info"]["markPx"] == "150.0"
        balance = await exchange.watch_balance()  # clearinghouseState
        assert balance["USDC"]["total"] == 2000.0
        orders = asyncio.ensure_future(exchange.watch_orders(SOL))
        trades = asyncio.ensure_future(exchange.watch_my_trades(SOL))
        await asyncio.sleep(0.3)  # both subscribed before the order goes in
        placed = await exchange.create_order_ws(SOL, "limit", "buy", 2, 150.5, {"timeInForce": "Ioc"})
        assert (placed["filled"], placed["average"], placed["info"]["filled"]["totalSz"]) == (2.0, 150.5, "2.0")
        async with asyncio.timeout(10):
            watched = await orders
            while watched[-1]["status"] != "closed":
                watched = await exchange.watch_orders(SOL)
            mine = await trades
        assert (watched[-1]["id"], watched[-1]["side"]) == (placed["id"], "buy")
        assert [(t["side"], t["price"], t["amount"]) for t in mine] == [("buy", 150.5, 2.0)]
        candles = await exchange.watch_ohlcv(SOL, "1m")  # the current candle, with the trade in it
        assert candles[-1][1:] == [150.5, 150.5, 150.5, 150.5, 2.0]
        positions = asyncio.ensure_future(exchange.watch_positions([SOL]))
        await asyncio.sleep(0.3)
        await oracle.mark("SOL-PERP", "151")  # a new mark revalues the position: pushed
        async with asyncio.timeout(10):
            positions = await positions
            while not positions:
                positions = await exchange.watch_positions([SOL])
        assert [(p["symbol"], p["side"], p["contracts"], p["entryPrice"], p["unrealizedPnl"]) for p in positions] == \
            [(SOL, "long", 2.0, 150.5, 1.0)]  # 2 × (151 - 150.5)
        resting = await exchange.create_order_ws(SOL, "limit", "sell", 1, 155, {"reduceOnly": True})
        assert resting["info"] == {"resting": {"oid": int(resting["id"])}}
        await exchange.cancel_order_ws(resting["id"], SOL)
        await settle(gateway, lambda: not gateway.ledger.open_orders(address))
        assert await exchange.fetch_open_orders(SOL) == []
    finally:
        await exchange.close()


async def test_ccxt_approves_its_builder_fee_once_and_sets_its_referrer(hyperliquid):
    """ccxt approves its builder fee (a user-signed action) and sets its referrer before its
    first order. Both were refused, so it asked again before every order (60 extra signed
    requests in one session) and never attached its builder."""
    client, oracle, gateway, url = hyperliquid
    wallet = await funded(client, oracle, gateway)
    exchange = configured(accxt, wallet, url)
    sent: list[str] = []
    post = exchange.privatePostExchange

    async def counted(request, *args):
        sent.append(request["action"]["type"])
        return await post(request, *args)

    exchange.privatePostExchange = counted
    try:
        await exchange.load_markets()
        for _ in range(3):
            await exchange.create_order(SOL, "limit", "buy", 0.1, 145)
        assert sent.count("approveBuilderFee") == 1 and sent.count("setReferrer") == 1
        assert exchange.options["approvedBuilderFee"] is True and exchange.options["builderFee"] is True
        assert len(await exchange.fetch_open_orders(SOL)) == 3
    finally:
        await exchange.close()
