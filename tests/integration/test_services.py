"""The services end to end: every service its own process on a real broker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from exchange.markets import default_markets
from exchange.scenarios import cross_case, isolated_case
from schemas import (
    DEADLETTER,
    LIQUIDATION_IN,
    MARKET_DATA,
    MATCH_IN,
    RISK_IN,
    codec,
    topic_partitions,
)
from schemas.enums import (
    LiquidationStage,
    Liquidity,
    MarginMode,
    OrderType,
    Side,
    TimeInForce,
)
from schemas.events import (
    CancelAllOrders,
    DeadLetter,
    Deposit,
    Fill,
    LiquidationOutcome,
    LiquidationTrigger,
    MarginSnapshot,
    MarkPrice,
    NewOrder,
    PositionState,
)
from services.client import Client, Rejected
from services.liquidation import spec as liquidation_spec
from services.matching import spec as matching_spec
from services.risk import spec as risk_spec
from services.runtime.bus import partition_for
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner
from tests.integration.conftest import ROOT, Oracle, kafka_bus

pytestmark = pytest.mark.integration

BUY, SELL = Side.BUY, Side.SELL
USD = 1_000_000


async def mission(client: Client, oracle: Oracle) -> dict:
    """The isolated and the cross case of MARGIN.md through the client, then a SOL gap."""
    await client.deposit("insurance", "1000000")
    await client.deposit("maker", "100000000")
    for market, price in (("SOL-PERP", "150"), ("ETH-PERP", "3000"), ("BTC-PERP", "60000")):
        await oracle.mark(market, price)
    await client.deposit("iso", "2000")
    await client.set_margin_mode("iso", "SOL-PERP", MarginMode.ISOLATED)
    await client.set_leverage("iso", "SOL-PERP", 5)
    await client.place("maker", "SOL-PERP", SELL, "10", "150")
    opened = await client.place("iso", "SOL-PERP", BUY, "10", "150", tif=TimeInForce.IOC)
    assert opened.filled == 1000
    await client.deposit("cross", "2000")
    for market, side, size, price in (("SOL-PERP", BUY, "100", "150"), ("ETH-PERP", BUY, "0.5", "3000"),
                                      ("BTC-PERP", SELL, "0.02", "60000")):
        await client.set_leverage("cross", market, 10)
        await client.place("maker", market, side.opposite, size, price)
        assert (await client.place("cross", market, side, size, price, tif=TimeInForce.IOC)).filled
    iso = await client.wait_for(lambda m: isinstance(m, MarginSnapshot) and m.account == "iso" and m.positions)
    cross = await client.wait_for(lambda m: isinstance(m, MarginSnapshot) and m.account == "cross"
                                  and len(m.positions) == 3)
    before = len(client.events)
    await oracle.mark("SOL-PERP", "105")  # the gap: −30% at once
    results = {"iso_liquidation_price": iso.positions[0].liquidation_price,
               "cross_liquidation_price": next(p for p in cross.positions if p.market == "SOL-PERP").liquidation_price}
    for account in ("iso", "cross"):
        outcome = await client.wait_for(lambda m, a=account: isinstance(m, LiquidationOutcome) and m.account == a
                                        and m.stage is LiquidationStage.BACKSTOP, after=before, timeout_s=30)
        index = client.events.index(outcome)
        final = await client.wait_for(lambda m, a=account: isinstance(m, MarginSnapshot) and m.account == a
                                      and not m.positions, after=index, timeout_s=30)
        results[f"{account}_balance"] = final.balance
    return results


def core_expectations() -> dict:
    """The same cases on the in-process core (exchange.scenarios), independently of the services."""
    iso, cross = isolated_case("-30% at 10s"), cross_case("-30% at 10s")
    sol = default_markets()["SOL-PERP"]
    return {"iso_liquidation_price": sol.price_to_ticks(iso.liquidation_price),
            "cross_liquidation_price": sol.price_to_ticks(cross.liquidation_price),
            "iso_balance": iso.final_balance, "cross_balance": cross.final_balance}


async def test_mission_cases_through_services_as_processes(stack_factory):
    stack = stack_factory(partitions=2)
    stack.start("matching", "risk", "liquidation")
    bus = await kafka_bus(stack.bootstrap, 2)
    try:
        async with Client(bus, default_markets(), timeout_s=30) as client:
            results = await mission(client, Oracle(bus))
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
    expected = core_expectations()
    assert results == expected
    assert results["iso_balance"] == 1699_250_000  # 2,000 − 300 margin − 0.75 fee: the loss stops at 300
    assert results["cross_balance"] == 0  # drained, and no more


async def test_in_process_bus_gives_the_same_result_as_kafka():
    markets = default_markets()
    bus = MemoryBus(topic_partitions(2))
    stop = asyncio.Event()
    runners = [ServiceRunner(spec, bus) for spec in (matching_spec(markets), risk_spec(markets, partitions=2),
                                                            liquidation_spec(markets))]
    tasks = [asyncio.create_task(runner.run(stop)) for runner in runners]
    try:
        async with Client(bus, markets) as client:
            results = await mission(client, Oracle(bus))
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert results == core_expectations()


async def test_bad_input_goes_to_deadletter_and_services_keep_serving(stack_factory):
    stack = stack_factory(partitions=1)
    stack.start("matching", "risk", "liquidation")
    bus = await kafka_bus(stack.bootstrap, 1)
    nonsense = NewOrder("fuzz", 1, "a", "DOGE-PERP", 1, "x", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 1, 1)
    garbage = [b"", b"\x01\xff\xfe", b"\x07not even the right version", b"\x01" + b"\x91\x92\xa3Bad\x01"]
    try:
        for topic in (RISK_IN, MATCH_IN, LIQUIDATION_IN):
            await bus.send([(topic, 0, None, payload) for payload in garbage])
        # schema-valid, but naming nothing that exists / of the wrong kind for the service
        await bus.send([(LIQUIDATION_IN, 0, None, codec(LIQUIDATION_IN).encode_many([]) + b""),
                        (RISK_IN, 0, None, codec(RISK_IN).encode(Deposit("fuzz", 1, "a", -5)))])
        # schema-valid nonsense no user can be told about, and messages a client may not
        # send (an order straight to matching, a mark): dead letters
        doge = PositionState("DOGE-PERP", MarginMode.CROSS, 5, 1, 1, 0, 1, 0, 1, 1, 0, 0)
        nonsense_letters = [
            (MATCH_IN, codec(MATCH_IN).encode(nonsense)),
            (RISK_IN, codec(RISK_IN).encode(MarkPrice("fuzz", 2, "DOGE-PERP", 1, 1))),
            (MATCH_IN, codec(MATCH_IN).encode(CancelAllOrders("fuzz", 2, "a", "DOGE-PERP"))),
            (LIQUIDATION_IN, codec(LIQUIDATION_IN).encode(LiquidationTrigger(
                "fuzz", 2, "a", "", MarginMode.CROSS, -1, 1, [doge]))),
        ]
        await bus.send([(topic, 0, None, payload) for topic, payload in nonsense_letters])
        letters: list[DeadLetter] = []
        consumer = bus.consumer(DEADLETTER, "test-deadletter")
        deadline = time.monotonic() + 30
        while len(letters) < 16 and time.monotonic() < deadline:
            for record in await consumer.getmany(timeout_ms=200):
                letters.extend(codec(DEADLETTER).decode(record.value))
        topics = sorted({(letter.topic, bytes(letter.payload)) for letter in letters})
        for topic in (RISK_IN, MATCH_IN, LIQUIDATION_IN):
            for payload in garbage:
                assert (topic, payload) in topics, (topic, payload, letters)
        for topic, payload in nonsense_letters:
            assert (topic, payload) in topics, (topic, letters)
        assert len(letters) == 16 and all(letter.reason for letter in letters)
        async with Client(bus, default_markets(), timeout_s=30) as client:
            # the services still serve, and user mistakes come back to the user, not to deadletter
            answer = await client.deposit("alice", "100")
            assert answer.command == "Deposit"
            with pytest.raises(Rejected, match="UNKNOWN_MARKET"):
                await client.place("alice", "DOGE-PERP", BUY, "1", "1")
            with pytest.raises(Rejected, match="OFF_TICK_PRICE"):
                await client.place("alice", "SOL-PERP", BUY, "1", "150.001")
            rejected = await client.wait_for(lambda m: getattr(m, "ref_producer", "") == "fuzz")
            assert rejected.reason.name == "INVALID_AMOUNT"
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


def test_broker_down_at_start_is_a_clear_error_within_the_timeout():
    from services.runtime.broker import free_port

    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "services.cli", "risk", "--bootstrap",
                             f"127.0.0.1:{free_port()}", "--connect-timeout", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "cannot reach the Kafka broker" in result.stderr and "within 2 s" in result.stderr
    assert time.monotonic() - started < 30


async def test_oracle_service_publishes_scripted_marks_to_market_data_and_every_risk_partition(stack_factory):
    stack = stack_factory(partitions=3, extra=["--flat", "--price", "SOL-PERP=150", "--shock",
                                               "SOL-PERP:-30% at 4s"])
    stack.start("oracle")
    bus = await kafka_bus(stack.bootstrap, 3)
    try:
        seen: dict[tuple[str, int], list[int]] = {}
        deadline = time.monotonic() + 40
        market_data = bus.consumer(MARKET_DATA, "test-market-data")
        risk_in = bus.consumer(RISK_IN, "test-risk-in")
        while time.monotonic() < deadline:
            for consumer, topic in ((market_data, MARKET_DATA), (risk_in, RISK_IN)):
                for record in await consumer.getmany(timeout_ms=100):
                    for message in codec(topic).decode(record.value):
                        if isinstance(message, MarkPrice) and message.market == "SOL-PERP":
                            seen.setdefault((topic, record.partition), []).append(message.mark_price)
            sol = seen.get((MARKET_DATA, partition_for("SOL-PERP", 3)), [])
            if 10500 in sol and all(seen.get((RISK_IN, p)) and 10500 in seen[(RISK_IN, p)] for p in range(3)):
                break
        sol = seen[(MARKET_DATA, partition_for("SOL-PERP", 3))]
        assert sol[0] == 15000 and sol[-1] == 10500  # 150.00, then the scripted −30%
        assert set(sol) == {15000, 10500}
        for partition in range(3):
            assert 10500 in seen[(RISK_IN, partition)], partition
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()


async def test_services_deleverage_the_best_ranked_positions_when_there_is_no_fund():
    # the core's ADL case (tests/test_liquidation.py), through the services on one partition
    markets = default_markets()
    bus = MemoryBus(topic_partitions(1))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ServiceRunner(spec, bus).run(stop))
             for spec in (matching_spec(markets), risk_spec(markets), liquidation_spec(markets))]
    try:
        async with Client(bus, markets) as client:
            oracle = Oracle(bus)
            for account, amount in (("maker", "100000"), ("m2", "10000000"), ("s1", "1000"), ("s2", "1000"),
                                    ("s3", "5000"), ("trader", "1000"), ("idle", "500")):
                await client.deposit(account, amount)
            for account in ("s2", "trader"):
                await client.set_margin_mode(account, "SOL-PERP", MarginMode.ISOLATED)
                await client.set_leverage(account, "SOL-PERP", 10)
            await oracle.mark("SOL-PERP", "150")
            for short, size, price in (("s1", "5", "150"), ("s2", "5", "150"), ("s3", "10", "145")):
                await client.place("maker", "SOL-PERP", BUY, size, price)
                await client.place(short, "SOL-PERP", SELL, size, price, tif=TimeInForce.IOC)
            await client.place("m2", "SOL-PERP", SELL, "12", "150")
            await client.place("trader", "SOL-PERP", BUY, "12", "150", tif=TimeInForce.IOC)
            before = len(client.events)
            await oracle.mark("SOL-PERP", "100")  # the trader is bankrupt; nobody funded the fund
            await client.wait_for(lambda m: isinstance(m, LiquidationOutcome) and m.account == "trader"
                                  and m.stage is LiquidationStage.ADL, after=before)
            adl = [(f.taker_account, f.maker_account, f.price, f.size) for f in client.events[before:]
                   if isinstance(f, Fill) and f.liquidity is Liquidity.ADL]
            # at the bankruptcy price 150 − M/|s| = 150 − 180/12 = 135 (the opening fee came
            # out of the cross balance, not the margin)
            assert [(buyer, size) for buyer, _, _, size in adl] == [("s2", 500), ("s1", 500), ("s3", 200)]
            assert {price for _, _, price, _ in adl} == {13500}
            assert all(seller == "trader" for _, seller, _, _ in adl)
            assert (await client.snapshot("idle")).balance == 500 * USD
    finally:
        stop.set()
        await asyncio.gather(*tasks)
