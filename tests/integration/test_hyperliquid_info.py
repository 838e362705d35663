"""Hyperliquid's read API (``POST /info``) driven by the official hyperliquid-python-sdk's
``Info``, unmodified, pointed at a gateway the test starts. Expectations are computed by
hand from the orders the test places."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from hyperliquid.info import Info

from exchange.markets import default_markets
from schemas.enums import MarginMode, Side
from services.gateway.hyperliquid.info import application
from services.runtime.broker import free_port
from tests.integration.test_gateway import running_venue, settle

pytestmark = pytest.mark.integration

USER = "0x5e9ee1089755c3435139848e47e6635505d5a13a"


@pytest.fixture
async def hyperliquid():
    async with running_venue(default_markets()) as (_, client, oracle, gateway):
        runner = web.AppRunner(application(gateway))
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield client, oracle, gateway, f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def test_the_sdks_info_reads_markets_books_and_an_isolated_position(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(USER, "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
    await client.place("maker", "SOL-PERP", Side.SELL, "5", "151")
    await client.place("maker", "SOL-PERP", Side.BUY, "7", "149")
    await client.set_margin_mode(USER, "SOL-PERP", MarginMode.ISOLATED)
    await client.set_leverage(USER, "SOL-PERP", 5)
    await client.place(USER, "SOL-PERP", Side.BUY, "10", "150")  # 1,500 at 5x: 300 of isolated margin
    await client.place(USER, "SOL-PERP", Side.BUY, "1", "145")  # a resting bid
    await settle(gateway, lambda: gateway.ledger.snapshot(USER).positions
                 and gateway.projection.markets["SOL-PERP"].asks)

    def read():  # the SDK is synchronous: it runs in a thread, the venue in this loop
        info = Info(url, skip_ws=True)
        return (info, info.meta(), info.all_mids(), info.l2_snapshot("SOL"), info.user_state(USER),
                info.open_orders(USER), info.frontend_open_orders(USER), info.user_fills(USER))

    info, meta, mids, book, state, orders, frontend, fills = await asyncio.to_thread(read)
    assert [(a["name"], a["szDecimals"], a["maxLeverage"]) for a in meta["universe"]] == \
        [("BTC", 3, 40), ("ETH", 2, 25), ("SOL", 2, 20)]
    assert info.name_to_coin["SOL"] == "SOL" and info.coin_to_asset["SOL"] == 2
    assert mids["SOL"] == "150.0"  # the mid of 149 and 151
    assert book["coin"] == "SOL" and [[(level["px"], level["sz"]) for level in side] for side in book["levels"]] == \
        [[("149.0", "7.0"), ("145.0", "1.0")], [("151.0", "5.0")]]
    [position] = state["assetPositions"]
    held = position["position"]
    assert (held["coin"], held["szi"], held["entryPx"], held["leverage"]["type"], held["leverage"]["value"]) == \
        ("SOL", "10.0", "150.0", "isolated", 5)
    assert held["marginUsed"] == "300.000000"  # the isolated margin, at a mark of 150: no unrealized PnL
    # liquidation: 300 + 10(P − 150) = 10·P/40 (SOL's 1/(2·20)) → P = 1200 / 9.75 = 123.08
    assert held["liquidationPx"] == "123.08"
    # the wallet: 2,000 − the 0.75 taker fee; the cross part is that less the 300 of isolated margin
    assert state["marginSummary"]["accountValue"] == "1999.250000"
    assert state["crossMarginSummary"]["accountValue"] == "1699.250000"
    assert [(o["coin"], o["side"], o["limitPx"], o["sz"]) for o in orders] == [("SOL", "B", "145.0", "1.0")]
    assert frontend[0]["tif"] == "Gtc" and frontend[0]["orderType"] == "Limit"
    assert [(f["coin"], f["px"], f["sz"], f["side"], f["fee"]) for f in fills] == \
        [("SOL", "150.0", "10.0", "B", "0.750000")]


async def test_an_unknown_or_malformed_request_gets_hyperliquids_answer(hyperliquid):
    _, _, _, url = hyperliquid
    async with aiohttp.ClientSession() as session:
        for body in ('{"type": "noSuchThing"}', "not json", '{"type": "l2Book", "coin": "DOGE"}', "[]"):
            async with session.post(f"{url}/info", data=body, headers={"Content-Type": "application/json"}) as answer:
                assert answer.status == 422, body
                assert await answer.text() == "Failed to deserialize the JSON body into the target type"
