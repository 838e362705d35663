"""No record can stop or poison the services: undecodable bytes, out-of-range numbers,
forged producers and sequence numbers, numbers the outputs cannot carry, garbage on the
topics the clients and the gateway read. Each is dead-lettered (or, by a client, skipped
and counted) with its reason, the services stay up, nothing of it is kept, and normal
trading goes on with the figures worked out by hand."""

from __future__ import annotations

import asyncio
import time

import pytest

from exchange.markets import default_markets
from schemas import (
    ACCOUNT_EVENTS,
    DEADLETTER,
    LIQUIDATION_IN,
    MARKET_DATA,
    MATCH_IN,
    RISK_IN,
    codec,
)
from schemas.enums import CloseReason, MarginMode, OrderType, Side, TimeInForce
from schemas.events import (
    BBO,
    DeadLetter,
    Deposit,
    Fill,
    Funding,
    LiquidationTrigger,
    MarginSnapshot,
    MarkPrice,
    NewOrder,
    OrderClosed,
    PositionState,
    Trade,
)
from services.client import Client, Rejected
from services.runtime.bus import partition_for
from tests.integration.conftest import Oracle, kafka_bus

pytestmark = pytest.mark.integration

SOL = default_markets()["SOL-PERP"]


async def dead_letters(bus, count: int, timeout_s: float = 30) -> list[DeadLetter]:
    letters: list[DeadLetter] = []
    consumer = bus.consumer(DEADLETTER, f"test-deadletter-{time.time_ns()}")
    deadline = time.monotonic() + timeout_s
    while len(letters) < count and time.monotonic() < deadline:
        for record in await consumer.getmany(timeout_ms=200):
            letters.extend(codec(DEADLETTER).decode(record.value))
    await consumer.stop()
    return letters


async def test_bad_and_forged_records_are_dead_lettered_and_change_nothing(stack_factory):
    stack = stack_factory(partitions=1)
    stack.start("matching", "risk", "liquidation")
    bus = await kafka_bus(stack.bootstrap, 1)
    try:
        async with Client(bus, default_markets(), timeout_s=30) as client:
            oracle = Oracle(bus)
            await oracle.mark("SOL-PERP", "150")
            await client.deposit("alice", "1000000")
            await client.deposit("maker", "1000000")
            await client.place("maker", "SOL-PERP", Side.SELL, "1000", "150")
            await client.place("alice", "SOL-PERP", Side.BUY, "1000", "150", tif=TimeInForce.IOC)
            before = await client.wait_for(lambda m: isinstance(m, MarginSnapshot) and m.account == "alice"
                                           and any(p.signed_size for p in m.positions))

            def on(topic: str, message) -> tuple[str, bytes]:
                return topic, codec(topic).encode(message)

            position = PositionState("SOL-PERP", MarginMode.CROSS, 5, 1, 1, 0, 1, 0, 1, 1, 0, 0)
            bad = [
                (RISK_IN, b"\x01\xc1"),  # not msgpack
                (RISK_IN, b"\x02\x90"),  # another schema version
                on(RISK_IN, Deposit("evil", 1, "alice", 2**64 - 1)),  # beyond what an amount may be
                on(RISK_IN, Funding("oracle", oracle.seq + 1, "SOL-PERP", 2**63 - 1, 15000)),  # rate out of range
                on(RISK_IN, MarkPrice("oracle", oracle.seq + 2, "SOL-PERP", 2**62, 2**62)),  # price out of range
                on(RISK_IN, Fill("evil-9", 1, "SOL-PERP", 99, 15000, 1_000_000, Side.BUY, "alice", 1, "maker", 2)),
                on(RISK_IN, OrderClosed("match.SOL-PERP", 2**63 - 1, "SOL-PERP", "alice", 1, CloseReason.FILLED, 0,
                                        0)),  # a forged sequence number
                on(RISK_IN, MarkPrice("client-x", 1, "SOL-PERP", 1, 1)),  # a client posing as the oracle
                # in range, but the margin snapshot it causes cannot be encoded (1,000 SOL valued
                # at 2**40 ticks): applied, found unencodable, rolled back
                on(RISK_IN, MarkPrice("oracle", oracle.seq + 3, "SOL-PERP", 2**40, 2**40)),
                (MATCH_IN, b"\x01\xc1"),
                on(MATCH_IN, NewOrder("evil", 1, "alice", "SOL-PERP", 7, "x", Side.BUY, OrderType.LIMIT,
                                      TimeInForce.GTC, 15000, 1)),  # a client straight to matching
                (LIQUIDATION_IN, b"\x01\xc1"),
                on(LIQUIDATION_IN, LiquidationTrigger("evil", 1, "alice", "", MarginMode.CROSS, -1, 1, [position])),
            ]
            oracle.seq += 3
            await bus.send([(topic, 0, None, payload) for topic, payload in bad])
            # garbage where the clients read: they skip it and keep answering
            await bus.send([(ACCOUNT_EVENTS, 0, None, b"\x01\xc1"),
                            (ACCOUNT_EVENTS, 0, None, codec(ACCOUNT_EVENTS).encode(
                                Fill("evil", 1, "SOL-PERP", 1, 1, 1, Side.BUY, "alice", 1, "maker", 2)))])

            letters = await dead_letters(bus, len(bad))
            assert sorted((letter.topic, bytes(letter.payload)) for letter in letters) == sorted(bad)
            reasons = {bytes(letter.payload): letter.reason for letter in letters}
            assert "not msgpack" in reasons[b"\x01\xc1"]
            assert "schema version 2" in reasons[b"\x02\x90"]
            assert "(Deposit.amount)" in reasons[bad[2][1]] and "(Funding.rate_ppb)" in reasons[bad[3][1]]
            assert "(MarkPrice.index_price)" in reasons[bad[4][1]]  # the first field out of range
            assert "may come only from match, not from a client" in reasons[bad[5][1]]
            assert "implausible" in reasons[bad[6][1]]
            assert "may come only from oracle" in reasons[bad[7][1]]
            assert "could not be applied" in reasons[bad[8][1]] and "nothing of it was kept" in reasons[bad[8][1]]
            assert "may come only from risk or liquidation" in reasons[bad[10][1]]

            # nothing of it was kept: alice's account is as before, valued at 150 again
            await oracle.mark("SOL-PERP", "150")
            await client.deposit("alice", "1")  # a fresh snapshot
            after = await client.snapshot("alice")
            assert after.balance == before.balance + 1_000_000
            assert [(p.signed_size, p.entry_value, p.mark_price) for p in after.positions] == \
                   [(100_000, 150 * 1000 * 1_000_000, 15000)]
            # matching's real outputs still count (the forged seq cut nothing off): alice sells
            # 400 SOL at 151 to a new bid; realized PnL 400 * 1 = 400, taker fee 400*151*0.00045
            await client.place("maker", "SOL-PERP", Side.BUY, "400", "151")
            order = await client.place("alice", "SOL-PERP", Side.SELL, "400", "151", tif=TimeInForce.IOC)
            assert sum(fill.size for fill in order.fills) == 40_000
            await client.deposit("alice", "1")
            final = await client.snapshot("alice")
            fee = -(-400 * 151 * 1_000_000 * SOL.taker_fee_ppm // 1_000_000)
            assert final.balance == after.balance + 400_000_000 - fee + 1_000_000
            assert [p.signed_size for p in final.positions] == [60_000]
            # a later client reads past the garbage, and counts what it skipped
            async with Client(bus, default_markets(), timeout_s=30) as late:
                assert (await late.deposit("bob", "5")).command == "Deposit"
                assert late.skipped >= 2
            assert client.skipped == 2
            with pytest.raises(Rejected, match="INVALID_AMOUNT"):  # refused by the client, named
                await client.deposit("alice", "18446744073709551615")
    except BaseException:
        print(stack.log_text())
        raise
    finally:
        await bus.stop()
    for name in ("matching", "risk", "liquidation"):
        assert stack.processes[name].poll() is None, f"{name} died"


async def test_forged_market_data_cannot_drag_the_mark_away_from_the_index(stack_factory):
    stack = stack_factory(partitions=1, extra=["--flat", "--price", "SOL-PERP=150"])
    stack.start("oracle")
    bus = await kafka_bus(stack.bootstrap, 1)
    try:
        forged = [codec(MARKET_DATA).encode_many([BBO("match.SOL-PERP", 10**6 + i, "SOL-PERP", 1, 1, 1, 1),
                                                 Trade("match.SOL-PERP", 10**6 + i, "SOL-PERP", i, 1, 1, Side.SELL)])
                  for i in range(40)]
        partition = partition_for("SOL-PERP", bus.partitions(MARKET_DATA))
        for payload in forged:
            await bus.send([(MARKET_DATA, partition, None, payload), (MARKET_DATA, partition, None, b"\x01\xc1")])
            await asyncio.sleep(0.1)
        marks = []
        consumer = bus.consumer(MARKET_DATA, "test-marks")
        deadline = time.monotonic() + 20
        while len(marks) < 10 and time.monotonic() < deadline:
            for record in await consumer.getmany(timeout_ms=200):
                for message in codec(MARKET_DATA).decode(record.value) if record.value != b"\x01\xc1" else ():
                    if isinstance(message, MarkPrice) and message.market == "SOL-PERP":
                        marks.append(message)
        recent = marks[-5:]
        assert recent and all(m.index_price == 15000 for m in recent)
        assert all(m.mark_price >= 13500 for m in recent), [m.mark_price for m in recent]  # within 10% of it
        letters = await dead_letters(bus, len(forged))
        assert len(letters) >= len(forged) and all("not msgpack" in letter.reason for letter in letters)
    finally:
        await bus.stop()
    assert stack.processes["oracle"].poll() is None
