"""The Binance dialect as a Binance bot checks it: the Binance profile's brackets through
ccxt, its liquidation price formula, modify losing queue priority, exact average prices,
a repeated leverage as a no-op, and a forced close a bot can find after the fact."""

from __future__ import annotations

import pytest

from exchange.venues import binance_markets
from schemas.enums import LiquidationStage, Side, TimeInForce
from schemas.events import LiquidationOutcome
from tests.integration import test_gateway
from tests.integration.test_gateway import (
    api_key,
    ccxt_for,
    opening,
    running_venue,
    settle,
    signed,
)

pytestmark = pytest.mark.integration

venue = test_gateway.venue
BTC, SOL = "BTC/USDT:USDT", "SOL/USDT:USDT"


@pytest.fixture
async def binance_venue():
    async with running_venue(binance_markets()) as parts:
        yield parts


async def test_ccxt_reads_the_binance_profiles_brackets_and_its_liquidation_price(binance_venue):
    _, client, oracle, gateway = binance_venue
    key, secret = await api_key(gateway, "bot")
    bot = ccxt_for(gateway.base, key, secret)
    try:
        tiers = await bot.fetch_leverage_tiers([BTC])
        # Binance's BTCUSDT brackets (as /fapi/v1/leverageBracket returned them; freqtrade 2026.9's copy)
        assert [(t["minNotional"], t["maxNotional"], t["maxLeverage"], t["maintenanceMarginRate"])
                for t in tiers[BTC][:4]] == [(0.0, 300_000.0, 150.0, 0.004), (300_000.0, 800_000.0, 100.0, 0.005),
                                             (800_000.0, 3_000_000.0, 75.0, 0.0065),
                                             (3_000_000.0, 12_000_000.0, 50.0, 0.01)]
        assert [t["info"]["cum"] for t in tiers[BTC][:3]] == [0.0, 300.0, 1500.0]  # numbers, as Binance sends them
        # Binance's FAQ example: a wallet of 500, a 1,000 USDT 20x cross long at 50,000:
        # liquidation price 25,100.40
        await oracle.mark("BTC-PERP", "50000")
        await client.deposit("maker", "1000000")
        await client.deposit("bot", "500.5")  # the taker fee of 0.5 leaves a wallet of 500
        await client.place("maker", "BTC-PERP", Side.SELL, "0.02", "50000")
        await bot.set_leverage(20, BTC)
        await bot.create_order(BTC, "market", "buy", 0.02)
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)
        [position] = await bot.fetch_positions([BTC])
        assert position["liquidationPrice"] == 25_100.4 and position["marginMode"] == "cross"
        assert position["maintenanceMargin"] == 4.0  # 1,000 × 0.4%, the first bracket
        assert (await bot.fetch_balance())["USDT"]["total"] == 500.0
    finally:
        await bot.close()


async def test_a_binance_modify_loses_queue_priority(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "first") as first:
        await opening(client, oracle, "first", "10000")
        await client.deposit("second", "10000")
        await client.deposit("taker", "10000")
        ahead = await first.create_order(SOL, "limit", "sell", 2, 151)
        behind = await client.place("second", "SOL-PERP", Side.SELL, "2", "151")
        # shrinking at the same price keeps priority natively; Binance's modify reorders it
        await first.edit_order(ahead["id"], SOL, "limit", "sell", 1, 151)
        taken = await client.place("taker", "SOL-PERP", Side.BUY, "2", "151", tif=TimeInForce.IOC)
        assert [fill.maker_order_id for fill in taken.fills] == [behind.order_id]
        # the native amend keeps it: a shrink leaves the order where it was
        again = await client.place("second", "SOL-PERP", Side.SELL, "2", "151")
        await client.amend("first", "SOL-PERP", int(ahead["id"]), "151", "0.5")
        taken = await client.place("taker", "SOL-PERP", Side.BUY, "0.5", "151", tif=TimeInForce.IOC)
        assert [fill.maker_order_id for fill in taken.fills] == [int(ahead["id"])]
        assert again.order_id


async def test_exact_average_price_and_a_repeated_leverage_is_a_no_op(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "10000")
        await client.place("maker", "SOL-PERP", Side.SELL, "1", "150.40")
        await client.place("maker", "SOL-PERP", Side.SELL, "2", "150.47")
        await bot.set_margin_mode("isolated", SOL)
        await bot.set_leverage(5, SOL)
        order = await bot.create_order(SOL, "market", "buy", 3)
        # (150.40 + 2 · 150.47) / 3 = 150.44666..., not rounded to the tick
        assert order["info"]["avgPrice"] == "150.44666667"
        await bot.set_leverage(5, SOL)  # the same again on an open isolated position: Binance says fine
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)
        [position] = await bot.fetch_positions([SOL])
        assert position["entryPrice"] == pytest.approx(150.44666667) and position["leverage"] == 5


async def test_a_bot_finds_its_liquidation_in_its_orders_and_trades_and_the_pnl_adds_up(venue):
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "1000")
        await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
        await bot.set_margin_mode("isolated", SOL)
        await bot.set_leverage(5, SOL)
        await bot.create_order(SOL, "market", "buy", 10)  # 1,500 at 5x: 300 of isolated margin
        await settle(gateway, lambda: gateway.ledger.snapshot("bot").positions)
        before = (await bot.fetch_balance())["USDT"]["total"]  # at the mark of 150: no unrealized PnL
        assert before == 999.25  # 1,000 less the 0.75 opening fee
        # the liquidation price is 123.08 (300 + 10(P − 150) = 2.5% of 10·P), the bankruptcy
        # price 120: a gap to 123 (equity 30 against MM 30.75: a liquidation order, not yet
        # the backstop), and bids at 121 for the liquidation order to sell into
        await oracle.mark("SOL-PERP", "126")  # still above it; the bids must be inside the band
        await client.place("maker", "SOL-PERP", Side.BUY, "10", "121")
        await oracle.mark("SOL-PERP", "123")
        await client.wait_for(lambda m: isinstance(m, LiquidationOutcome) and m.account == "bot"
                              and m.stage is not LiquidationStage.TRIGGERED, timeout_s=20)
        await settle(gateway, lambda: not gateway.ledger.snapshot("bot").positions)
        orders = await bot.fetch_orders(SOL)
        [forced] = [o for o in orders if o["clientOrderId"].startswith("autoclose-")]
        assert (forced["side"], forced["filled"], forced["average"], forced["status"]) == ("sell", 10.0, 121.0,
                                                                                         "closed")
        closes = [t for t in await bot.fetch_my_trades(SOL) if t["order"] == forced["id"]]
        assert sum(t["amount"] for t in closes) == 10.0 and {t["price"] for t in closes} == {121.0}
        forced_list = await bot.fapiPrivateGetForceOrders({"symbol": "SOLUSDT", "autoCloseType": "LIQUIDATION"})
        assert [str(o["orderId"]) for o in forced_list] == [forced["id"]]
        # what Freqtrade's recovery computes from them (the close against the entry, less the
        # close's fees) is the wallet's change: 1,210 − 1,500 − 0.605
        entries = [t for t in await bot.fetch_my_trades(SOL) if t["side"] == "buy"]
        pnl = sum(t["cost"] for t in closes) - sum(t["cost"] for t in entries) - sum(t["fee"]["cost"] for t in closes)
        assert pnl == pytest.approx(-290.605)
        after = (await bot.fetch_balance())["USDT"]["total"]
        assert after - before == pytest.approx(pnl, abs=1e-6)


async def test_a_backstop_is_shown_as_a_forced_order_too(venue):
    """A gap past the bankruptcy price: no liquidation order, the position goes to the
    backstop (Hyperliquid's liquidator at the mark); the bot still sees an order and a trade."""
    _, client, oracle, gateway = venue
    async with signed(gateway, "bot") as bot:
        await opening(client, oracle, "bot", "1000")
        await client.place("maker", "SOL-PERP", Side.SELL, "10", "150")
        await bot.set_margin_mode("isolated", SOL)
        await bot.set_leverage(5, SOL)
        await bot.create_order(SOL, "market", "buy", 10)
        await oracle.mark("SOL-PERP", "110")  # far through the bankruptcy price of 120
        await client.wait_for(lambda m: isinstance(m, LiquidationOutcome) and m.account == "bot"
                              and m.stage is LiquidationStage.BACKSTOP, timeout_s=20)
        await settle(gateway, lambda: gateway.ledger.forced_orders("bot"))
        [forced] = [o for o in await bot.fetch_orders(SOL) if o["clientOrderId"].startswith("autoclose-")]
        assert (forced["side"], forced["filled"], forced["average"]) == ("sell", 10.0, 110.0)  # at the mark
        [trade] = [t for t in await bot.fetch_my_trades(SOL) if t["order"] == forced["id"]]
        assert (trade["amount"], trade["price"], trade["fee"]["cost"]) == (10.0, 110.0, 0.0)
        assert [str(o["orderId"]) for o in await bot.fapiPrivateGetForceOrders({"symbol": "SOLUSDT"})] == \
            [forced["id"]]
        assert (await bot.fetch_balance())["USDT"]["total"] == pytest.approx(999.25 - 300)  # never more than the 300
