"""Hyperliquid's API (``POST /info``, ``POST /exchange``) driven by the official
hyperliquid-python-sdk's ``Info`` and ``Exchange``, unmodified, pointed at a gateway the
test starts. Expectations are computed by
hand from the orders the test places."""

from __future__ import annotations

import asyncio
import sys
import time
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from eth_account import Account
from hyperliquid.exchange import Exchange
from hyperliquid.info import Info
from hyperliquid.utils.signing import sign_l1_action

from exchange.markets import default_markets
from schemas.enums import MarginMode, Side
from services.client import Client
from services.gateway.hyperliquid import Hyperliquid
from services.runtime.broker import free_port
from tests.integration.conftest import ROOT, Oracle, kafka_bus
from tests.integration.test_gateway import running_venue, settle

pytestmark = pytest.mark.integration

USER = "0x5e9ee1089755c3435139848e47e6635505d5a13a"


@pytest.fixture
async def hyperliquid():
    async with running_venue(default_markets()) as (_, client, oracle, gateway):
        runner = web.AppRunner(Hyperliquid().application(gateway))
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
        # "user" and "market" are the dialect's own helpers' names, not request types
        for body in ('{"type": "noSuchThing"}', "not json", '{"type": "l2Book", "coin": "DOGE"}', "[]",
                     f'{{"type": "user", "user": "{USER}"}}', '{"type": "market", "coin": "SOL"}',
                     # a user that is not an address (20 bytes in hex): answered 200 and empty before
                     '{"type": "clearinghouseState", "user": "0x12"}',
                     f'{{"type": "clearinghouseState", "user": "{USER}00"}}',
                     '{"type": "openOrders", "user": "alice"}'):
            async with session.post(f"{url}/info", data=body, headers={"Content-Type": "application/json"}) as answer:
                assert answer.status == 422, body
                assert await answer.text() == "Failed to deserialize the JSON body into the target type"
        async with session.post(f"{url}/exchange", data="[1]", headers={"Content-Type": "application/json"}) as answer:
            assert (answer.status, await answer.json()) == \
                (200, {"status": "err", "response": "Failed to deserialize the JSON body into the target type"})


async def test_the_websocket_answers_posted_requests_and_refuses_what_it_cannot_read(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.place("maker", "SOL-PERP", Side.SELL, "3", "151")
    await settle(gateway, lambda: gateway.projection.markets["SOL-PERP"].asks)
    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http", "ws") + "/ws") as ws:
        async def ask(request: dict) -> dict:
            await ws.send_json(request)
            return await ws.receive_json(timeout=5)

        answer = await ask({"method": "post", "id": 7, "request": {"type": "info",
                                                                   "payload": {"type": "l2Book", "coin": "SOL"}}})
        assert answer["channel"] == "post" and answer["data"]["id"] == 7
        assert answer["data"]["response"]["type"] == "info"
        assert answer["data"]["response"]["payload"]["type"] == "l2Book"
        assert answer["data"]["response"]["payload"]["data"]["levels"][1] == [{"px": "151.0", "sz": "3.0", "n": 1}]
        assert await ask({"method": "post", "id": 8, "request": {"type": "info", "payload": {"type": "nope"}}}) == \
            {"channel": "post", "data": {"id": 8, "response": {
                "type": "error", "payload": "Failed to deserialize the JSON body into the target type"}}}
        unsigned = await ask({"method": "post", "id": 9, "request": {"type": "action", "payload": {"action": {}}}})
        assert unsigned["data"] == {"id": 9, "response": {"type": "action", "payload": {
            "status": "err", "response": "Failed to deserialize the JSON body into the target type"}}}
        subscription = {"type": "activeAssetCtx", "coin": "SOL"}
        assert (await ask({"method": "subscribe", "subscription": subscription}))["channel"] == "subscriptionResponse"
        context = await ws.receive_json(timeout=5)
        assert context["channel"] == "activeAssetCtx" and context["data"]["ctx"]["markPx"] == "150.0"
        again = await ask({"method": "subscribe", "subscription": subscription})
        assert again["channel"] == "error" and again["data"].startswith("Already subscribed")
        for bad in ({"method": "subscribe", "subscription": {"type": "candle", "coin": "SOL", "interval": "7m"}},
                    {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "DOGE"}},
                    {"method": "dance"}):
            refused = await ask(bad)
            assert refused["channel"] == "error" and "Error parsing JSON" in refused["data"], bad
        await ws.send_str("not json")
        assert (await ws.receive_json(timeout=5))["channel"] == "error"
        assert (await ask({"method": "ping"})) == {"channel": "pong", "data": None}


async def test_the_sdks_exchange_places_fills_and_cancels_orders_signed_by_its_wallet(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    other = Account.create()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(address, "2000")
    await client.deposit(other.address.lower(), "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "5", "150.5")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot
                 and gateway.projection.markets["SOL-PERP"].asks)

    def trade():
        exchange = Exchange(wallet, url)  # signs as testnet (source "b"): any URL but mainnet's
        resting = exchange.order("SOL", True, 1.0, 149.0, {"limit": {"tif": "Gtc"}})
        taken = exchange.order("SOL", True, 2.0, 150.5, {"limit": {"tif": "Ioc"}})
        post_only = exchange.order("SOL", True, 1.0, 151.0, {"limit": {"tif": "Alo"}})  # would cross the ask
        oid = resting["response"]["data"]["statuses"][0]["resting"]["oid"]
        cancelled = exchange.cancel("SOL", oid)
        again = exchange.cancel("SOL", oid)
        return resting, taken, post_only, cancelled, again

    resting, taken, post_only, cancelled, again = await asyncio.to_thread(trade)
    assert resting["status"] == "ok" and "resting" in resting["response"]["data"]["statuses"][0]
    assert taken["response"]["data"]["statuses"] == [{"filled": {"totalSz": "2.0", "avgPx": "150.5",
                                                                 "oid": taken["response"]["data"]["statuses"][0]
                                                                 ["filled"]["oid"]}}]
    assert "error" in post_only["response"]["data"]["statuses"][0]
    assert cancelled["response"]["data"]["statuses"] == ["success"]
    assert "never placed, already canceled, or filled" in again["response"]["data"]["statuses"][0]["error"]
    await settle(gateway, lambda: gateway.ledger.snapshot(address).positions)
    [position] = gateway.ledger.snapshot(address).positions
    assert position.signed_size == 200  # 2 SOL, bought by the wallet's own account
    assert not gateway.ledger.snapshot(other.address.lower()).positions  # no other account moved


async def test_a_replayed_nonce_a_stranger_and_a_bad_signature_are_refused(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet, stranger = Account.create(), Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit(address, "2000")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot)
    action = {"type": "order", "orders": [{"a": 2, "b": True, "p": "145", "s": "1", "r": False,
                                           "t": {"limit": {"tif": "Gtc"}}}], "grouping": "na"}
    nonce = int(time.time() * 1000)
    body = {"action": action, "nonce": nonce, "signature": sign_l1_action(wallet, action, None, nonce, None, False),
            "vaultAddress": None, "expiresAfter": None}
    async with aiohttp.ClientSession() as session:
        async def post(payload) -> dict:
            async with session.post(f"{url}/exchange", json=payload) as answer:
                assert answer.status == 200
                return await answer.json()

        first = await post(body)
        assert first["status"] == "ok" and "resting" in first["response"]["data"]["statuses"][0]
        assert await post(body) == {"status": "err", "response": "Invalid nonce: duplicate nonce"}
        # an unfunded stranger's signature acts for no account, not for the funded one
        signed = {**body, "nonce": nonce + 1,
                  "signature": sign_l1_action(stranger, action, None, nonce + 1, None, False)}
        answer = await post(signed)
        assert answer["status"] == "err" and "does not exist" in answer["response"]
        assert (await post({**body, "nonce": nonce + 2, "signature": {"r": "0x1", "s": "0x2", "v": 27}}))["status"] \
            == "err"
        assert (await post({"action": "nonsense"}))["status"] == "err"
        # an internal helper's name is no action: only Hyperliquid's action types are served
        helper = {"type": "one_order", "a": 2, "b": True, "p": "145", "s": "1", "r": False,
                  "t": {"limit": {"tif": "Gtc"}}}
        answer = await post({"action": helper, "nonce": nonce + 3, "vaultAddress": None, "expiresAfter": None,
                             "signature": sign_l1_action(wallet, helper, None, nonce + 3, None, False)})
        assert answer == {"status": "err", "response": "Unknown action type 'one_order'"}
        # a cloid is 16 bytes in hex; anything else (here 1,000 KiB) is refused before any order is placed
        long_cloid = {**action, "orders": [{**action["orders"][0], "c": "0x" + "ab" * 512_000}]}
        answer = await post({"action": long_cloid, "nonce": nonce + 4, "vaultAddress": None, "expiresAfter": None,
                             "signature": sign_l1_action(wallet, long_cloid, None, nonce + 4, None, False)})
        assert answer == {"status": "err", "response": "Failed to deserialize the JSON body into the target type"}
        # for a vault (or subaccount) the signer neither leads nor is an agent of: refused as
        # Hyperliquid refuses it; before, the order was placed on the signer's own account
        vault = stranger.address.lower()
        answer = await post({"action": action, "nonce": nonce + 5, "vaultAddress": vault, "expiresAfter": None,
                             "signature": sign_l1_action(wallet, action, vault, nonce + 5, None, False)})
        assert answer == {"status": "err", "response": f"Vault not registered: {vault}"}
    assert len(gateway.ledger.open_orders(address)) == 1  # only the first, once


async def test_the_sdk_sets_leverage_and_margin_trades_at_market_modifies_and_survives_a_crash_isolated(hyperliquid):
    """The seed's isolated case through the SDK: SOL long with 300 at 5x; a crash through
    its liquidation price takes the 300 (and the fee) and not a unit more."""
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(address, "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
    await client.place("maker", "SOL-PERP", Side.BUY, "10", "149")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot
                 and gateway.projection.markets["SOL-PERP"].asks and gateway.projection.markets["SOL-PERP"].bids)

    def trade():
        exchange = Exchange(wallet, url)
        leverage = exchange.update_leverage(5, "SOL", is_cross=False)
        bought = exchange.market_open("SOL", True, 10)  # an IOC at the mid plus 5%
        rest = exchange.order("SOL", False, 1, 155, {"limit": {"tif": "Gtc"}}, reduce_only=True)
        oid = rest["response"]["data"]["statuses"][0]["resting"]["oid"]
        modified = exchange.modify_order(oid, "SOL", False, 2, 154, {"limit": {"tif": "Gtc"}}, reduce_only=True)
        margin = exchange.update_isolated_margin(50, "SOL")
        removed = exchange.update_isolated_margin(-50, "SOL")
        return leverage, bought, modified, margin, removed, Info(url, skip_ws=True).user_state(address)

    leverage, bought, modified, margin, removed, before = await asyncio.to_thread(trade)
    assert leverage == {"status": "ok", "response": {"type": "default"}}
    assert bought["response"]["data"]["statuses"][0]["filled"]["totalSz"] == "10.0"
    assert modified["response"]["data"]["statuses"][0] == {"resting": {"oid": modified["response"]["data"]
                                                                       ["statuses"][0]["resting"]["oid"]}}
    assert margin["status"] == removed["status"] == "ok"
    [position] = before["assetPositions"]
    assert position["position"]["leverage"] == {"type": "isolated", "value": 5, "rawUsd": "-1200.000000"}
    assert position["position"]["marginUsed"] == "300.000000" and position["position"]["liquidationPx"] == "123.08"
    [order] = gateway.ledger.open_orders(address)
    assert (order.price, order.size) == (154_00, 200)  # the modify's price and size
    # the crash: through the liquidation price, past the bankruptcy price of 120
    await oracle.mark("SOL-PERP", "110")
    await settle(gateway, lambda: not gateway.ledger.snapshot(address).positions, timeout=15)
    after = await asyncio.to_thread(lambda: Info(url, skip_ws=True).user_state(address))
    assert after["assetPositions"] == []
    assert after["marginSummary"]["accountValue"] == "1699.250000"  # 2,000 − 300 − the 0.75 taker fee
    fills = await asyncio.to_thread(lambda: Info(url, skip_ws=True).user_fills(address))
    closing = [f for f in fills if f["dir"] == "Close Long"]
    assert closing and all("liquidation" in f and f["liquidation"]["liquidatedUser"] == address for f in closing)
    assert sum(Decimal(f["sz"]) for f in closing) == 10  # the whole long, closed by the liquidation


async def test_a_wallet_made_by_perpsim_accounts_create_trades_through_the_sdk_on_the_full_stack(stack_factory):
    """The services and the gateway as processes on the embedded broker; the wallet made
    with `perpsim accounts create --wallet`; the SDK pointed at the Hyperliquid port."""
    port = free_port()
    stack = stack_factory(partitions=2, extra=["--gateway-port", str(free_port()), "--hyperliquid-port", str(port)])
    stack.start("matching", "risk", "liquidation", "gateway")
    created = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "accounts", "create", "--wallet", "--bootstrap", stack.bootstrap,
        "--partitions", "2", "--state-dir", str(stack.state_dir / "state"), "--deposit", "2000",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(created.communicate(), 60)
    assert created.returncode == 0, out.decode()
    printed = dict(line.split(":", 1) for line in out.decode().splitlines() if ":" in line)
    wallet = Account.from_key(printed["wallet private key"].split()[0])
    assert printed["account"].strip() == wallet.address.lower()
    url = f"http://127.0.0.1:{port}"
    bus = await kafka_bus(stack.bootstrap, 2)
    try:
        async with Client(bus, default_markets(), timeout_s=30) as client:
            oracle = Oracle(bus, wall_clock=True)
            await oracle.mark("SOL-PERP", "150")
            await client.deposit("maker", "1000000")
            await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")

            def trade():
                deadline = time.monotonic() + 30
                while True:  # the gateway is up and has seen the deposit
                    try:
                        state = Info(url, skip_ws=True).user_state(wallet.address)
                        if state["marginSummary"]["accountValue"] == "2000.000000":
                            break
                    except Exception:  # noqa: BLE001 - not listening yet
                        pass
                    assert time.monotonic() < deadline, "the gateway never showed the deposit"
                    time.sleep(0.3)
                exchange = Exchange(wallet, url)
                return exchange.order("SOL", True, 2.0, 150.0, {"limit": {"tif": "Ioc"}})

            answer = await asyncio.to_thread(trade)
            [status] = answer["response"]["data"]["statuses"]
            assert status["filled"]["totalSz"] == "2.0" and status["filled"]["avgPx"] == "150.0"
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


async def test_a_stop_loss_trigger_order_through_the_sdk_fires_on_the_mark(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(address, "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot
                 and gateway.projection.markets["SOL-PERP"].asks)

    def protect():
        exchange = Exchange(wallet, url)
        exchange.order("SOL", True, 10, 150, {"limit": {"tif": "Ioc"}})
        spare = exchange.order("SOL", False, 10, 130, {"trigger": {"triggerPx": 135, "isMarket": True, "tpsl": "sl"}},
                               reduce_only=True)
        spare_oid = spare["response"]["data"]["statuses"][0]["resting"]["oid"]
        exchange.cancel("SOL", spare_oid)
        stop = exchange.order("SOL", False, 10, 140, {"trigger": {"triggerPx": 145, "isMarket": True, "tpsl": "sl"}},
                              reduce_only=True)
        info = Info(url, skip_ws=True)
        oid = stop["response"]["data"]["statuses"][0]["resting"]["oid"]
        return oid, info.frontend_open_orders(address), info.query_order_by_oid(address, oid), \
            info.query_order_by_oid(address, spare_oid)

    oid, listed, resting, cancelled = await asyncio.to_thread(protect)
    # a trigger order is known by oid, resting or cancelled (Freqtrade's fetch_order placed a
    # fresh stop every 35 s when it answered unknownOid)
    assert (resting["status"], resting["order"]["status"], resting["order"]["order"]["isTrigger"]) == \
        ("order", "open", True)
    assert (cancelled["status"], cancelled["order"]["status"]) == ("order", "canceled")
    [shown] = listed
    assert (shown["oid"], shown["isTrigger"], shown["triggerPx"], shown["orderType"], shown["reduceOnly"]) == \
        (oid, True, "145.0", "Stop Market", True)
    assert shown["triggerCondition"] == "Price below 145.0"
    await oracle.mark("SOL-PERP", "147")
    await client.place("maker", "SOL-PERP", Side.BUY, "10", "144.5")
    await oracle.mark("SOL-PERP", "145")  # the mark reaches the trigger
    await settle(gateway, lambda: not gateway.ledger.snapshot(address).positions, timeout=15)
    fills = await asyncio.to_thread(lambda: Info(url, skip_ws=True).user_fills(address))
    assert [(f["side"], f["px"], f["sz"]) for f in fills] == [("A", "144.5", "10.0"), ("B", "150.0", "10.0")]
    # newest first: the stop closed the long the buy had opened
    assert [(f["dir"], f["startPosition"]) for f in fills] == [("Close Long", "10.0"), ("Open Long", "0.0")]
    fired = await asyncio.to_thread(lambda: Info(url, skip_ws=True).query_order_by_oid(address, oid))
    assert fired["order"]["status"] == "filled"  # answered as the order it became, under its oid


async def test_an_approved_agent_wallet_trades_for_its_master_and_no_one_else(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    master = Account.create()
    address = master.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit(address, "2000")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot)

    def delegate():
        approved, agent_key = Exchange(master, url).approve_agent("bot")
        agent = Account.from_key(agent_key)
        placed = Exchange(agent, url, account_address=master.address).order(
            "SOL", True, 1, 148, {"limit": {"tif": "Gtc"}})
        return approved, agent, placed

    approved, agent, placed = await asyncio.to_thread(delegate)
    assert approved == {"status": "ok", "response": {"type": "default"}}
    oid = placed["response"]["data"]["statuses"][0]["resting"]["oid"]
    [order] = gateway.ledger.open_orders(address)
    assert order.order_id == oid  # the master's order, placed by its agent
    assert not gateway.ledger.open_orders(agent.address.lower())


async def test_schedule_cancel_cancels_the_open_orders_when_its_time_comes(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit(address, "2000")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot)

    def arm():
        exchange = Exchange(wallet, url)
        exchange.order("SOL", True, 1, 148, {"limit": {"tif": "Gtc"}})
        too_early = exchange.schedule_cancel(int(time.time() * 1000) + 1_000)
        armed = exchange.schedule_cancel(int(time.time() * 1000) + 5_500)
        return too_early, armed

    too_early, armed = await asyncio.to_thread(arm)
    assert too_early["status"] == "err" and "at least 5 seconds" in too_early["response"]
    assert armed == {"status": "ok", "response": {"type": "default"}}
    assert len(gateway.ledger.open_orders(address)) == 1
    await settle(gateway, lambda: not gateway.ledger.open_orders(address), timeout=10)
    assert not gateway.ledger.open_orders(address)


async def test_the_sdks_websocket_streams_the_book_trades_and_the_wallets_orders_and_fills(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(address, "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "5", "150.5")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot
                 and gateway.projection.markets["SOL-PERP"].asks)
    seen: dict[str, list] = {"l2Book": [], "trades": [], "userFills": [], "orderUpdates": [], "user": []}
    info = await asyncio.to_thread(Info, url)  # with its WebSocket, as a bot starts it
    try:
        for subscription in ({"type": "l2Book", "coin": "SOL"}, {"type": "trades", "coin": "SOL"},
                             {"type": "userFills", "user": wallet.address}, {"type": "orderUpdates", "user": address},
                             {"type": "userEvents", "user": address}):
            await asyncio.to_thread(info.subscribe, subscription,
                                    lambda message: seen[message["channel"]].append(message["data"]))
        await settle(gateway, lambda: seen["l2Book"] and seen["userFills"], timeout=10)
        assert seen["l2Book"][0]["levels"][1] == [{"px": "150.5", "sz": "5.0", "n": 1}]  # the snapshot at once
        assert seen["userFills"][0] == {"isSnapshot": True, "user": address, "fills": []}
        await asyncio.to_thread(lambda: Exchange(wallet, url).order("SOL", True, 2, 150.5, {"limit": {"tif": "Ioc"}}))
        await settle(gateway, lambda: seen["trades"] and len(seen["userFills"]) > 1 and seen["orderUpdates"],
                     timeout=10)
        assert [(t["coin"], t["side"], t["px"], t["sz"]) for t in seen["trades"][0]] == [("SOL", "B", "150.5", "2.0")]
        assert [(f["px"], f["sz"], f["side"]) for f in seen["userFills"][1]["fills"]] == [("150.5", "2.0", "B")]
        assert seen["orderUpdates"][-1][0]["status"] == "filled"
        await settle(gateway, lambda: seen["user"], timeout=10)
        assert [(f["px"], f["sz"]) for f in seen["user"][0]["fills"]] == [("150.5", "2.0")]  # userEvents
        await settle(gateway, lambda: seen["l2Book"][-1]["levels"][1] == [{"px": "150.5", "sz": "3.0", "n": 1}],
                     timeout=10)
        assert seen["l2Book"][-1]["levels"][1] == [{"px": "150.5", "sz": "3.0", "n": 1}]  # 5 less the 2 taken
    finally:
        await asyncio.to_thread(info.disconnect_websocket)


async def test_the_seeds_cross_case_through_the_sdk_drains_the_cross_balance_and_not_a_unit_more(hyperliquid):
    """2,000 deposited; a cross SOL long of 100 at 10x through the SDK; a crash to 105 takes
    the whole cross balance, and not a unit more."""
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit("insurance", "1000000")
    await client.deposit(address, "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "100", "150")
    await settle(gateway, lambda: gateway.ledger.accounts.get(address) and gateway.ledger.accounts[address].snapshot
                 and gateway.projection.markets["SOL-PERP"].asks)

    def open_long():
        exchange = Exchange(wallet, url)
        exchange.update_leverage(10, "SOL", is_cross=True)
        return exchange.order("SOL", True, 100, 150, {"limit": {"tif": "Ioc"}})

    opened = await asyncio.to_thread(open_long)
    assert opened["response"]["data"]["statuses"][0]["filled"]["totalSz"] == "100.0"
    await settle(gateway, lambda: gateway.ledger.snapshot(address).positions)
    before = await asyncio.to_thread(lambda: Info(url, skip_ws=True).user_state(address))
    [position] = before["assetPositions"]
    assert position["position"]["leverage"] == {"type": "cross", "value": 10}
    # the whole balance backs it: 2,000 − the 7.5 fee + 100 (P − 150) = 2.5% · 100 P → P = 13,007.5 / 97.5
    assert position["position"]["liquidationPx"] == "133.41"
    await oracle.mark("SOL-PERP", "105")
    await settle(gateway, lambda: not gateway.ledger.snapshot(address).positions, timeout=15)
    after = await asyncio.to_thread(lambda: Info(url, skip_ws=True).user_state(address))
    assert after["assetPositions"] == [] and after["marginSummary"]["accountValue"] == "0.000000"


async def test_funding_payments_reach_user_fundings_and_user_events(hyperliquid):
    client, oracle, gateway, url = hyperliquid
    wallet = Account.create()
    address = wallet.address.lower()
    await oracle.mark("SOL-PERP", "150")
    await client.deposit("maker", "1000000")
    await client.deposit(address, "2000")
    await client.place("maker", "SOL-PERP", Side.SELL, "1", "150")
    await client.place(address, "SOL-PERP", Side.BUY, "1", "150")
    await settle(gateway, lambda: gateway.ledger.snapshot(address).positions)
    seen: dict[str, list] = {"userFundings": [], "user": []}
    info = await asyncio.to_thread(Info, url)
    try:
        for kind in ("userFundings", "userEvents"):
            await asyncio.to_thread(info.subscribe, {"type": kind, "user": address},
                                    lambda message: seen[message["channel"]].append(message["data"]))
        await asyncio.sleep(0.5)
        await oracle.funding("SOL-PERP", 1_000_000, "150")  # 0.1% on a long of 1 SOL at 150: it pays 0.15
        await settle(gateway, lambda: seen["userFundings"] and seen["user"], timeout=10)
        [funding] = seen["userFundings"][0]["fundings"]
        assert (funding["coin"], funding["usdc"], funding["szi"]) == ("SOL", "-0.150000", "1.0")
        assert seen["user"][0]["funding"]["usdc"] == "-0.150000"
    finally:
        await asyncio.to_thread(info.disconnect_websocket)
