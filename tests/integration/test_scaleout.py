"""Scaling out is Kafka's own: two instances each of risk and matching share the
partitions of one consumer group. Kill -9 one under load and the other takes over its
partitions from their snapshots on the bus; an instance that joins late resumes exactly
at the snapshots' offsets. Either way the end equals an uninterrupted run."""

from __future__ import annotations

import asyncio
import time

import pytest

from exchange.markets import default_markets
from schemas.enums import OrderType, SelfTradePrevention
from schemas.events import Fill, OrderAccepted, OrderRejected, PlaceOrder
from services.client import Client
from tests.integration.conftest import kafka_bus
from tests.integration.test_faults import ACCOUNTS, DEPOSIT, load

pytestmark = pytest.mark.integration


async def run(stack, seed: int, first: tuple[str, ...], events: dict[int, tuple[str, str]]) -> dict:
    """The seeded load against ``first``; ``events``: at order n, ("kill" | "start", name)."""
    print(f"{time.strftime('%X')} starting {first} on {stack.bootstrap}")  # where the time went, if it fails
    stack.start(*first)
    bus = await kafka_bus(stack.bootstrap, stack.partitions)
    answered_at: list[float] = []
    try:
        async with Client(bus, default_markets(), producer=f"load-{len(events)}", timeout_s=60) as client:
            client.listen(lambda m: answered_at.append(time.monotonic())
                          if isinstance(m, (OrderAccepted, OrderRejected)) else None)
            for account in ACCOUNTS:
                await client.deposit(account, DEPOSIT)
            for index, (account, market, side, price, size, tif, order_id) in enumerate(load(seed)):
                if index in events:
                    action, name = events[index]
                    stack.kill(name) if action == "kill" else stack.start(name)
                await client.send(PlaceOrder(*client.stamp(), account, market, order_id, side, OrderType.LIMIT,
                                             tif, price, size, False, SelfTradePrevention.NONE, time.time_ns()))
                # answered before the next is sent: with two risk partitions feeding matching,
                # this keeps the order of the book the same in every run, so runs compare
                await client.wait_for(lambda m, o=order_id: isinstance(m, (OrderAccepted, OrderRejected))
                                      and m.client_order_id == o, timeout_s=90)
            print(f"{time.strftime('%X')} all {len(load(seed))} orders answered; waiting for the events to settle")
            seen = -1
            while seen != len(client.events):
                seen = len(client.events)
                await asyncio.sleep(3)
            print(f"{time.strftime('%X')} settled at {seen} events")
            finals = {}
            for account in ACCOUNTS:
                snapshot = await client.snapshot(account)
                finals[account] = (snapshot.balance, sorted(
                    (p.market, p.mode, p.leverage, p.signed_size, p.entry_value, p.isolated_margin)
                    for p in snapshot.positions))
            print(f"{time.strftime('%X')} each account's last snapshot read")  # two CI runs lost ~5 min after "settled"
            fills = sorted((m.market, m.trade_id, m.price, m.size, m.taker_account, m.maker_account)
                           for m in client.events if isinstance(m, Fill))
            gaps = [b - a for a, b in zip(answered_at, answered_at[1:], strict=False)]
            return {"finals": finals, "fills": fills, "longest_wait_s": max(gaps, default=0.0)}
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
        print(f"{time.strftime('%X')} the test's bus stopped")


async def test_two_instances_share_the_work_and_one_takes_over_from_a_killed_one(stack_factory):
    clean = await run(stack_factory(partitions=2), seed=7, first=("matching", "risk", "liquidation"), events={})
    stack = stack_factory(partitions=2)
    crashed = await run(stack, seed=7, first=("matching", "matching#2", "risk", "risk#2", "liquidation"),
                        events={100: ("kill", "risk#2"), 160: ("kill", "matching")})
    assert crashed["finals"] == clean["finals"]
    assert crashed["fills"] == clean["fills"] and len(clean["fills"]) > 50
    print(f"longest wait for an answer across the takeovers: {crashed['longest_wait_s']:.1f} s")
    log = (stack.logs / "risk.log").read_text()
    assert "assigned partitions=[0, 1]" in log  # the survivor took the killed one's partition


async def test_an_instance_that_joins_late_resumes_at_the_snapshots(stack_factory):
    clean = await run(stack_factory(partitions=2), seed=11, first=("matching", "risk", "liquidation"), events={})
    stack = stack_factory(partitions=2)
    joined = await run(stack, seed=11, first=("matching", "risk", "liquidation"),
                       events={120: ("start", "risk#2"), 180: ("start", "matching#2")})
    assert joined["finals"] == clean["finals"]
    assert joined["fills"] == clean["fills"]
    late = (stack.logs / "risk#2.log").read_text()
    assert "snapshot found" in late and "restored offset=0" not in late  # it did not start empty
