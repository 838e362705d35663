"""Crash recovery: kill -9 each service in turn under load; the end state equals a run
without crashes, no fill is lost or doubled, and money is conserved."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from exchange.markets import default_markets
from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import Fill, OrderAccepted, OrderRejected, PlaceOrder
from services.client import Client
from tests.integration.conftest import kafka_bus

pytestmark = pytest.mark.integration

ACCOUNTS = ["a1", "a2", "a3", "a4", "a5", "a6"]
MARKETS = {"SOL-PERP": 10_000, "ETH-PERP": 300_000}  # mid prices in ticks
ORDERS = 240
DEPOSIT = "1000000"


def load(seed: int) -> list[tuple]:
    rng = random.Random(seed)
    orders = []
    for index in range(ORDERS):
        market = rng.choice(list(MARKETS))
        side = rng.choice((Side.BUY, Side.SELL))
        offset = rng.randint(-20, 20)
        tif = TimeInForce.IOC if rng.random() < 0.3 else TimeInForce.GTC
        orders.append((rng.choice(ACCOUNTS), market, side, MARKETS[market] + offset, rng.randint(1, 30) * 10, tif,
                       f"o{index}"))
    return orders


async def run(stack, seed: int, kills: dict[int, str]) -> dict:
    stack.start("matching", "risk", "liquidation")
    markets = default_markets()
    bus = await kafka_bus(stack.bootstrap, 1)
    try:
        async with Client(bus, markets, producer=f"load-{len(kills)}", timeout_s=60) as client:
            for account in ACCOUNTS:
                await client.deposit(account, DEPOSIT)
            for index, (account, market, side, price, size, tif, order_id) in enumerate(load(seed)):
                if index in kills:
                    name = kills[index]
                    stack.kill(name)
                    await asyncio.sleep(0.3)
                    stack.start(name)
                await client.send(PlaceOrder(*client.stamp(), account, market, order_id, side, OrderType.LIMIT,
                                             tif, price, size, False, SelfTradePrevention.NONE, time.time_ns()))
                await asyncio.sleep(0.005)
            for _, _, _, _, _, _, order_id in load(seed):
                await client.wait_for(lambda m, o=order_id: isinstance(m, (OrderAccepted, OrderRejected))
                                      and m.client_order_id == o, timeout_s=90)
            seen = -1
            while seen != len(client.events):  # quiet for 3 s: everything has settled
                seen = len(client.events)
                await asyncio.sleep(3)
            # the last snapshot of each account: what does not depend on when it was valued
            # (with no mark price, risk values positions at the last fill it has seen)
            finals = {}
            for account in ACCOUNTS:
                snapshot = await client.snapshot(account)  # the newest state
                finals[account] = (snapshot.balance, sorted(
                    (p.market, p.mode, p.leverage, p.signed_size, p.entry_value, p.isolated_margin)
                    for p in snapshot.positions))
            fills = [(m.market, m.trade_id, m.price, m.size, m.taker_account, m.maker_account)
                     for m in client.events if isinstance(m, Fill)]
            return {"finals": finals, "fills": sorted(fills)}
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


async def test_kill_9_each_service_under_load_ends_as_if_nothing_happened(stack_factory):
    clean = await run(stack_factory(partitions=1), seed=5, kills={})
    stack = stack_factory(partitions=1)
    kills = {40: "matching", 90: "risk", 140: "liquidation", 170: "matching", 200: "risk"}
    crashed = await run(stack, seed=5, kills=kills)
    assert crashed["finals"] == clean["finals"]
    assert crashed["fills"] == clean["fills"]
    # no fill lost or doubled: per market, trade ids 1..n once each
    for market in MARKETS:
        ids = [trade_id for m, trade_id, *_ in crashed["fills"] if m == market]
        assert ids == list(range(1, len(ids) + 1)), market
    assert len(crashed["fills"]) > 50
    # money is conserved (what a client can check): deposits = balances + fees + Σ open PnL claims
    markets = default_markets()
    fees = 0
    for market, _, price, size, _, _ in crashed["fills"]:
        value = price * size * markets[market].value_per_tick_lot
        fees += -(-value * markets[market].taker_fee_ppm // 1_000_000) - (-value * markets[market].maker_fee_ppm
                                                                            // 1_000_000)
    claims = 0
    sizes: dict[str, int] = {}
    for _balance, positions in crashed["finals"].values():
        for market, _, _, signed_size, entry_value, _ in positions:
            claims -= (1 if signed_size > 0 else -1) * entry_value
            sizes[market] = sizes.get(market, 0) + signed_size
    balances = sum(balance for balance, _ in crashed["finals"].values())
    assert balances + fees + claims == len(ACCOUNTS) * int(DEPOSIT) * 1_000_000
    assert all(total == 0 for total in sizes.values())
