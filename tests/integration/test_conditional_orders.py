"""Conditional orders through the services over the real broker: a stop fires on a
scripted oracle shock before the liquidation price is reached, and a kill -9 of matching
(which holds them) between placement and trigger loses none and fires none twice."""

from __future__ import annotations

import asyncio

import pytest

from exchange.markets import default_markets
from schemas.enums import Condition, MarginMode, Side
from schemas.events import Fill, LiquidationOutcome, MarginSnapshot, OrderTriggered
from services.client import Client
from tests.integration.conftest import Oracle, kafka_bus

pytestmark = pytest.mark.integration

SOL = "SOL-PERP"


def fee(price: str, size: str, ppm: int) -> int:
    """A taker fee in micro units, rounded up, from decimal strings."""
    value = round(float(price) * 1_000_000) * round(float(size) * 100) // 100
    return -(-value * ppm // 1_000_000)


async def test_a_stop_fires_on_an_oracle_shock_before_the_liquidation_price(stack_factory):
    stack = stack_factory(partitions=1)
    stack.start("matching", "risk", "liquidation")
    markets = default_markets()
    bus = await kafka_bus(stack.bootstrap, 1)
    oracle = Oracle(bus)
    try:
        async with Client(bus, markets, producer="stops", timeout_s=60) as client:
            await client.deposit("maker", "1000000")
            await client.deposit("trader", "1000")
            await oracle.mark(SOL, "100")
            await client.set_margin_mode("trader", SOL, MarginMode.ISOLATED)
            await client.set_leverage("trader", SOL, 10)
            await client.place("maker", SOL, Side.SELL, "50", "100.10")
            opened = await client.place("trader", SOL, Side.BUY, "50", None)
            assert opened.filled == 5000  # 50 SOL at 100.10: 500.50 of isolated margin at 10x
            snapshot = await client.wait_for(lambda m: isinstance(m, MarginSnapshot) and m.account == "trader"
                                             and m.positions, after=opened.since)
            [position] = snapshot.positions
            assert 85_00 < position.liquidation_price < 95_00  # between the stop and where the shock ends
            stop = await client.place_conditional("trader", SOL, Side.SELL, "50", Condition.STOP, trigger="95",
                                                  reduce_only=True)
            await oracle.mark(SOL, "97")
            await client.place("maker", SOL, Side.BUY, "100", "94.90")  # inside the band around 97
            await oracle.mark(SOL, "95")  # the shock reaches the stop ...
            fired = await client.triggered(stop)
            assert (fired.fired_at, fired.trigger_price) == (95_00, 95_00)
            await client.wait_for(lambda m: isinstance(m, Fill) and m.taker_order_id == stop.order_id
                                  and m.taker_account == "trader")
            await oracle.mark(SOL, "85")  # ... and goes on far below the liquidation price
            await asyncio.sleep(2)  # a liquidation, if there were one, would have shown by now
            final = await client.snapshot("trader")
            assert not final.positions
            spec = markets[SOL]
            loss = (100_10 - 94_90) * 5000 * spec.value_per_tick_lot + fee("100.10", "50", spec.taker_fee_ppm) \
                + fee("94.90", "50", spec.taker_fee_ppm)
            assert final.balance == 1000_000_000 - loss  # 264.875: the stop's exit, far less than the margin
            assert loss < 500_500_000
            assert not [m for m in client.events if isinstance(m, LiquidationOutcome) and m.account == "trader"]
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


async def test_kill_9_of_matching_between_placement_and_trigger_loses_no_stop_and_fires_none_twice(stack_factory):
    stack = stack_factory(partitions=1)
    stack.start("matching", "risk", "liquidation")
    markets = default_markets()
    bus = await kafka_bus(stack.bootstrap, 1)
    oracle = Oracle(bus)
    triggers = ["99", "98", "97", "96", "95"]
    try:
        async with Client(bus, markets, producer="stops-kill", timeout_s=60) as client:
            await client.deposit("maker", "1000000")
            await client.deposit("trader", "100000")
            await oracle.mark(SOL, "100")
            await client.place("maker", SOL, Side.SELL, "50", "100.10")
            await client.place("trader", SOL, Side.BUY, "50", None)
            stops = [await client.place_conditional("trader", SOL, Side.SELL, "10", Condition.STOP, trigger=price,
                                                    reduce_only=True) for price in triggers]
            await client.place("maker", SOL, Side.BUY, "100", "95.50")
            await asyncio.sleep(1.5)  # a snapshot of matching has been written (every 0.5 s)
            stack.kill("matching")
            stack.start("matching")
            for step, price in enumerate(["99", "98", "97", "96", "95"]):
                await oracle.mark(SOL, price)
                await client.triggered(stops[step])
                if step == 1:  # and once more after two of them fired
                    stack.kill("matching")
                    stack.start("matching")
            for stop in stops:
                await client.wait_for(lambda m, o=stop.order_id: isinstance(m, Fill) and m.taker_order_id == o)
            await asyncio.sleep(3)  # anything doubled would show by now
            for stop in stops:
                fired = {(m.producer, m.seq) for m in client.events
                         if isinstance(m, OrderTriggered) and m.order_id == stop.order_id}
                assert len(fired) == 1, stop.order_id
                fills = {(m.trade_id, m.size) for m in client.events
                         if isinstance(m, Fill) and m.taker_order_id == stop.order_id}
                assert sum(size for _, size in fills) == 1000, stop.order_id  # 10 SOL, once
            final = await client.snapshot("trader")
            assert not final.positions
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
