"""Conditional orders through the Binance gateway as the pinned ccxt writes them: the Algo
Order API (create, list, fetch, cancel each type), the user stream's ALGO_UPDATE when one
fires, and the errors a bot catches."""

from __future__ import annotations

import asyncio

import ccxt.async_support as ccxt
import ccxt.pro as ccxtpro
import pytest

from schemas.enums import Side
from services.gateway.ledger import ConditionalStatus
from tests.integration import test_gateway
from tests.integration.test_gateway import (
    api_key,
    opening,
    settle,
    signed,
    sync_ccxt_for,
    until,
)

venue = test_gateway.venue  # the services, the gateway and ccxt in one event loop

pytestmark = pytest.mark.integration

SOL = "SOL/USDT:USDT"


async def long(client, oracle, gateway, bot, size: int = 5) -> None:
    """The bot long ``size`` SOL at 150.5 (the mark is 150)."""
    await opening(client, oracle, "bot", "10000")
    await client.place("maker", "SOL-PERP", Side.SELL, str(size), "150.5")
    await bot.create_order(SOL, "market", "buy", size)
    await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)


async def test_ccxt_creates_lists_fetches_and_cancels_each_conditional_type(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await long(client, oracle, gateway, bot)
        written = {  # as a bot writes each one with ccxt
            "STOP_MARKET": bot.create_order(SOL, "market", "sell", 1, None, {"stopLossPrice": 140,
                                                                              "reduceOnly": True}),
            "TAKE_PROFIT_MARKET": bot.create_order(SOL, "market", "sell", 1, None, {"takeProfitPrice": 160,
                                                                                     "reduceOnly": True}),
            "STOP": bot.create_order(SOL, "limit", "sell", 1, 139, {"stopPrice": 140}),
            "TAKE_PROFIT": bot.create_order(SOL, "limit", "sell", 1, 161, {"takeProfitPrice": 160}),
            "TRAILING_STOP_MARKET": bot.create_order(SOL, "market", "sell", 1, None, {
                "trailingPercent": 1.5, "trailingTriggerPrice": 155, "reduceOnly": True}),
        }
        created = {kind: await call for kind, call in written.items()}
        closing = await bot.create_order(SOL, "market", "sell", None, None, {
            "triggerPrice": 130, "closePosition": True, "workingType": "MARK_PRICE"})
        for kind, order in created.items():
            info = order["info"]
            assert (info["orderType"], info["algoType"], info["algoStatus"], order["status"]) == \
                (kind, "CONDITIONAL", "NEW", "open"), kind
            assert order["side"] == "sell" and order["amount"] == 1.0 and order["symbol"] == SOL
            assert info["workingType"] == "CONTRACT_PRICE"  # Binance's default
        assert created["STOP_MARKET"]["triggerPrice"] == 140.0 and created["STOP"]["price"] == 139.0
        assert created["TAKE_PROFIT"]["takeProfitPrice"] == 160.0 and created["TAKE_PROFIT"]["price"] == 161.0
        trailing = created["TRAILING_STOP_MARKET"]["info"]
        assert (trailing["callbackRate"], trailing["activatePrice"]) == ("1.5", "155.00")
        assert (closing["info"]["closePosition"], closing["info"]["workingType"]) == (True, "MARK_PRICE")

        listed = await bot.fetch_open_orders(SOL, params={"trigger": True})
        assert {o["id"] for o in listed} == {o["id"] for o in [*created.values(), closing]}
        assert await bot.fetch_open_orders(SOL) == []  # none of them is on the book
        fetched = await bot.fetch_order(created["STOP"]["id"], SOL, {"trigger": True})
        assert (fetched["id"], fetched["triggerPrice"], fetched["status"]) == (created["STOP"]["id"], 140.0, "open")
        by_client_id = await bot.fetch_order(None, SOL, {"trigger": True,
                                                         "clientOrderId": created["STOP"]["clientOrderId"]})
        assert by_client_id["id"] == created["STOP"]["id"]

        cancelled = await bot.cancel_order(created["TAKE_PROFIT"]["id"], SOL, {"trigger": True})
        assert cancelled["id"] == created["TAKE_PROFIT"]["id"]
        assert (await bot.fetch_order(created["TAKE_PROFIT"]["id"], SOL, {"trigger": True}))["status"] == "canceled"
        with pytest.raises(ccxt.OrderNotFound):
            await bot.cancel_order(created["TAKE_PROFIT"]["id"], SOL, {"trigger": True})
        await bot.cancel_all_orders(SOL, {"trigger": True})
        assert await bot.fetch_open_orders(SOL, params={"trigger": True}) == []
        history = await bot.fetch_orders(SOL, params={"trigger": True})
        assert {o["status"] for o in history} == {"canceled"} and len(history) == 6


async def test_a_stop_fires_and_the_bot_sees_it_on_its_stream_and_its_order(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot", ccxtpro) as pro:
        await long(client, oracle, gateway, pro, size=2)
        stop = await pro.create_order(SOL, "market", "sell", 2, None, {"stopLossPrice": 145, "reduceOnly": True,
                                                                        "workingType": "MARK_PRICE"})
        fired = asyncio.create_task(until(lambda: pro.watch_orders(SOL),
                                          lambda os: any(o["id"] == stop["id"] and o["status"] == "closed"
                                                         for o in os)))
        await asyncio.sleep(0.5)  # the stream is connected
        await client.place("maker", "SOL-PERP", Side.BUY, "2", "144.9")
        await oracle.mark("SOL-PERP", "147")
        await oracle.mark("SOL-PERP", "145")  # reaches the stop
        orders = await fired
        [done] = [o for o in orders if o["id"] == stop["id"]]
        assert done["status"] == "closed" and done["info"]["X"] in ("TRIGGERED", "FINISHED")
        actual = done["info"]["ai"]  # the market order it became, filled on the stream too
        await until(lambda: pro.watch_orders(SOL), lambda os: any(o["id"] == actual and o["filled"] == 2.0
                                                                   for o in os), current=lambda: list(pro.orders or []))
        await settle(gateway, lambda: gateway.ledger.conditionals[int(actual)].status is ConditionalStatus.FINISHED)
        algo = await pro.fetch_order(stop["id"], SOL, {"trigger": True})
        assert (algo["info"]["algoStatus"], algo["info"]["actualOrderId"]) == ("FINISHED", actual)
        plain = await pro.fetch_order(actual, SOL)
        assert (plain["status"], plain["filled"], plain["average"], plain["reduceOnly"]) == \
            ("closed", 2.0, 144.9, True)
        await settle(gateway, lambda: not gateway.ledger.snapshot("bot").positions)
        assert await pro.fetch_positions([SOL]) == []


async def test_the_errors_a_bot_catches_for_conditional_orders(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "10000")
        await bot.load_markets()
        with pytest.raises(ccxt.InvalidOrder, match="-2022"):  # reduce-only with no position
            await bot.create_order(SOL, "market", "sell", 1, None, {"stopLossPrice": 140, "reduceOnly": True})
        await long(client, oracle, gateway, bot, size=1)
        with pytest.raises(ccxt.OrderImmediatelyFillable, match="-2021"):  # a sell stop above the price
            await bot.create_order(SOL, "market", "sell", 1, None, {"stopLossPrice": 152, "reduceOnly": True})
        with pytest.raises(ccxt.OrderImmediatelyFillable, match="-2021"):  # a sell take-profit below it
            await bot.create_order(SOL, "market", "sell", 1, None, {"takeProfitPrice": 149,
                                                                     "workingType": "MARK_PRICE"})
        with pytest.raises(ccxt.ExchangeError, match="-2007"):  # Binance takes 0.1% to 10%
            await bot.create_order(SOL, "market", "sell", 1, None, {"trailingPercent": 12})
        with pytest.raises(ccxt.ExchangeError, match="-4135"):  # a sell's activation below the price
            await bot.create_order(SOL, "market", "sell", 1, None, {"trailingPercent": 1,
                                                                     "trailingTriggerPrice": 140})
        with pytest.raises(ccxt.InvalidOrder, match="-4120"):  # the old endpoint refuses the type
            await bot.fapiPrivatePostOrder({"symbol": "SOLUSDT", "side": "SELL", "type": "STOP_MARKET",
                                            "quantity": "1", "stopPrice": "140"})
        with pytest.raises(ccxt.ExchangeError, match="-4137"):
            await bot.fapiPrivatePostAlgoOrder({"algoType": "CONDITIONAL", "symbol": "SOLUSDT", "side": "SELL",
                                                "type": "STOP_MARKET", "triggerPrice": "140", "quantity": "1",
                                                "closePosition": "true"})
        with pytest.raises(ccxt.OrderNotFound):
            await bot.fetch_order("999999", SOL, {"trigger": True})
        assert await bot.fetch_open_orders(SOL, params={"trigger": True}) == []  # nothing half-placed


async def test_sync_ccxt_places_fetches_and_cancels_a_stop(venue):
    _, client, oracle, gateway = venue
    key, secret = await api_key(gateway, "bot")
    async with signed(gateway, "bot") as bot:
        await long(client, oracle, gateway, bot, size=1)
    sync = sync_ccxt_for(gateway.base, key, secret)

    def work():
        sync.load_markets()
        stop = sync.create_order(SOL, "market", "sell", 1, None, {"stopLossPrice": 140, "reduceOnly": True})
        listed = sync.fetch_open_orders(SOL, params={"stop": True})
        sync.cancel_order(stop["id"], SOL, {"stop": True})
        return stop, listed, sync.fetch_order(stop["id"], SOL, {"stop": True})

    stop, listed, after = await asyncio.to_thread(work)
    assert [o["id"] for o in listed] == [stop["id"]] and stop["triggerPrice"] == 140.0
    assert after["status"] == "canceled"
