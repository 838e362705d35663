"""The service runner and the state store, on the in-process bus: snapshots on the bus
restore exactly, a snapshot of another log is refused, a message that fails changes
nothing, a half-written snapshot never hides the previous one."""

from __future__ import annotations

import msgspec
import pytest

from exchange.markets import default_markets
from schemas import DEADLETTER, RISK_IN, STATE, codec, topic_partitions
from schemas.enums import MarginMode, OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import Deposit, Fill, MarkPrice, PlaceOrder, SetMarginMode
from schemas.state import STATE_VERSION, OracleState, Snapshot, encode_snapshot
from services.risk import spec as risk_spec
from services.runtime.bus import BusError, Record
from services.runtime.memory import MemoryBus
from services.runtime.runner import ServiceRunner
from services.runtime.state import StateStore

MARKETS = default_markets()


def records(bus: MemoryBus, topic: str, partition: int = 0):
    return bus._log[topic][partition]


async def runner_with(bus: MemoryBus, messages) -> ServiceRunner:
    await bus.send([(RISK_IN, 0, None, codec(RISK_IN).encode(m)) for m in messages])
    runner = ServiceRunner(risk_spec(MARKETS, partitions=1), bus)
    runner.consumer = bus.consumer(RISK_IN, f"perpsim-risk-{id(runner)}", on_assigned=runner._assigned)
    runner.process(await runner.consumer.getmany(timeout_ms=10, max_records=10_000))
    return runner


def trading() -> list:
    """Two accounts with 1,000 SOL each way at 150 (a fill as matching would send it)."""
    return [Deposit("client-a", 1, "alice", 10**12), Deposit("client-a", 2, "bob", 10**12),
            MarkPrice("oracle", 1, "SOL-PERP", 15000, 15000),
            SetMarginMode("client-a", 3, "alice", "SOL-PERP", MarginMode.ISOLATED),
            Fill("match.SOL-PERP", 1, "SOL-PERP", 1, 15000, 100_000, Side.BUY, "alice", 0, "bob", 0)]


def state_bytes(runner: ServiceRunner) -> bytes:
    return msgspec.msgpack.encode(runner.states[0].processor.export())


async def test_a_snapshot_on_the_bus_restores_the_partition_exactly():
    bus = MemoryBus(topic_partitions(1))
    first = await runner_with(bus, trading())
    await first.snapshot(force=True)
    assert records(bus, STATE)  # written to the bus, nowhere else
    second = ServiceRunner(risk_spec(MARKETS, partitions=1), bus)
    restored = await second._restore(0)
    assert restored.offset == first.states[0].offset == len(trading())
    assert restored.last_seq == {"client-a": 3, "oracle": 1, "match.SOL-PERP": 1}
    assert msgspec.msgpack.encode(restored.processor.export()) == state_bytes(first)


async def test_a_snapshot_of_another_log_is_refused_and_the_partition_starts_from_its_log():
    old = MemoryBus(topic_partitions(1))
    first = await runner_with(old, trading())
    await first.snapshot(force=True)
    fresh = MemoryBus(topic_partitions(1))  # the same topics, recreated: other records
    await fresh.send([(RISK_IN, 0, None, codec(RISK_IN).encode(m)) for m in
                      [Deposit("client-b", i, "carol", 5) for i in range(1, 9)]])
    await fresh.send([(STATE, 0, r.key, r.value) for r in records(old, STATE)])
    restored = await ServiceRunner(risk_spec(MARKETS, partitions=1), fresh)._restore(0)
    assert restored.offset == 0 and restored.processor.accounts == {}


async def test_a_message_that_fails_changes_nothing_and_is_dead_lettered():
    bus = MemoryBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    before, seqs = state_bytes(runner), dict(runner.states[0].last_seq)
    # in range for the contract, but 2,000 SOL at 2**40 ticks is worth more than its figures carry
    runner.process([await_record(bus, MarkPrice("oracle", 2, "SOL-PERP", 2**40, 2**40))])
    assert state_bytes(runner) == before and runner.states[0].last_seq == seqs
    assert runner.rebuilds == 1 and runner.dead_letters == 1
    [letter] = [m for item in runner.outbox.drain() if item[0] == DEADLETTER for m in codec(DEADLETTER).decode(item[3])]
    assert "ValueTooLarge" in letter.reason and "nothing of it was kept" in letter.reason
    # and what comes next is applied as usual
    runner.process([await_record(bus, MarkPrice("oracle", 3, "SOL-PERP", 15100, 15100))])
    assert runner.states[0].processor.marks.marks["SOL-PERP"] == 15100 and runner.dead_letters == 1


async def test_a_forged_sequence_or_producer_is_refused_and_advances_nothing():
    bus = MemoryBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    seqs = dict(runner.states[0].last_seq)
    order = PlaceOrder("match.SOL-PERP", 5, "alice", "SOL-PERP", "c", Side.BUY, OrderType.LIMIT, TimeInForce.GTC,
                       15000, 1, False, SelfTradePrevention.NONE)
    runner.process([await_record(bus, Fill("match.SOL-PERP", 2**63 - 1, "SOL-PERP", 2, 15000, 1, Side.BUY, "alice",
                                           0, "bob", 0)),
                    await_record(bus, order)])
    assert runner.states[0].last_seq == seqs and runner.dead_letters == 2
    letters = [m for item in runner.outbox.drain() if item[0] == DEADLETTER for m in codec(DEADLETTER).decode(item[3])]
    assert "implausible" in letters[0].reason
    assert "PlaceOrder on risk.in may come only from clients, not from match" in letters[1].reason


def await_record(bus: MemoryBus, message):
    """``message`` sent to risk.in now, as the record the consumer would read."""
    log = records(bus, RISK_IN)
    payload = codec(RISK_IN).encode(message)
    record = Record(RISK_IN, 0, len(log), None, payload)
    log.append(record)
    return record


async def test_a_large_snapshot_is_chunked_and_a_half_written_one_leaves_the_previous():
    bus = MemoryBus(topic_partitions(1))
    store = StateStore(bus, "oracle", chunk_bytes=16)

    def snapshot(offset: int) -> bytes:
        return encode_snapshot(Snapshot(STATE_VERSION, "oracle", 0, offset, 0, {"p" * 40: 1}, OracleState(offset)))

    await store.save(0, 7, snapshot(7))
    assert len(records(bus, STATE)) > 3  # split into chunks
    assert (await StateStore(bus, "oracle").load(0)).state.epoch_ns == 7
    complete = len(records(bus, STATE))
    await store.save(0, 9, snapshot(9))
    del records(bus, STATE)[complete + 2:]  # the writer died after two chunks of the next one
    assert (await StateStore(bus, "oracle").load(0)).state.epoch_ns == 7
    assert await StateStore(bus, "risk").load(0) is None


def test_a_batch_whose_output_passes_a_record_size_is_sent_as_several_records_in_order():
    """One fetched batch can cause more output than the producer sends in one request
    (bench.scaling crashed matching with an 11 MB record): the outbox splits it."""
    from services.runtime.runner import MAX_RECORD_BYTES, Outbox

    outbox = Outbox(MemoryBus(topic_partitions(1)))
    sent = [Deposit("client-a", seq, f"account-{seq:06d}-{'x' * 200}", seq) for seq in range(1, 12_001)]
    for message in sent:
        outbox.to_partition(RISK_IN, 0, message)
    items = outbox.drain()
    assert sum(len(codec(RISK_IN).encode(m)) for m in sent) > 2 * MAX_RECORD_BYTES  # it had to split
    assert len(items) >= 3 and all((topic, partition) == (RISK_IN, 0) for topic, partition, *_ in items)
    assert all(len(value) <= MAX_RECORD_BYTES + 8 for _, _, _, value, *_ in items)
    received = [m for _, _, _, value, *_ in items for m in codec(RISK_IN).decode(value)]
    assert received == sent


class SlowBus(MemoryBus):
    """A broker that holds everything but answers reads late: ``slow_reads`` reads in a row
    time out, as aiokafka's do on a machine at load 20."""

    def __init__(self, topics: dict[str, int]):
        super().__init__(topics)
        self.slow_reads = 0

    async def read(self, topic: str, partition: int, start: int, end: int | None = None):
        if self.slow_reads:
            self.slow_reads -= 1
            raise BusError(f"reading {topic}[{partition}] from {start} to {end} timed out")
        return await super().read(topic, partition, start, end)


async def test_a_log_check_that_times_out_is_not_taken_for_a_lost_broker():
    bus = SlowBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    bus.slow_reads = 10
    for _ in range(10):  # ten status checks in a row that cannot read: slow, not lost
        await runner._check_log()
    bus.slow_reads = 0
    await runner._check_log()
    assert runner.states[0].offset == len(trading())


async def test_a_record_that_differs_from_the_one_applied_stops_the_service_at_once():
    bus = MemoryBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    log = records(bus, RISK_IN)
    last = log[-1]
    log[-1] = Record(RISK_IN, 0, last.offset, None, codec(RISK_IN).encode(Deposit("client-z", 1, "zed", 5)))
    with pytest.raises(BusError, match=r"the broker lost its data: risk.in\[0\].*record at 4 is another one"):
        await runner._check_log()


async def test_a_log_that_ended_before_what_was_applied_stops_the_service_on_the_third_check():
    bus = MemoryBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    del records(bus, RISK_IN)[:]  # an empty broker on the same port: the topic is there, its records are not
    await runner._check_log()
    await runner._check_log()  # one or two such answers may be a slow broker reporting a short end
    with pytest.raises(BusError, match=r"the log ends at 0 .* 3 checks in a row"):
        await runner._check_log()


async def test_a_restore_whose_log_check_times_out_waits_and_keeps_the_snapshot():
    """Before, a read that timed out refused the snapshot and the partition started from the
    log: a busy broker made risk forget every account."""
    bus = SlowBus(topic_partitions(1))
    first = await runner_with(bus, trading())
    await first.snapshot(force=True)
    bus.slow_reads = 2
    second = ServiceRunner(risk_spec(MARKETS, partitions=1), bus)
    second.consumer = bus.consumer(RISK_IN, "perpsim-risk-second")
    await second._assigned({0})  # retries until the log can be checked
    assert second.states[0].offset == len(trading())
    assert msgspec.msgpack.encode(second.states[0].processor.export()) == state_bytes(first)


async def test_a_record_past_a_gap_is_not_applied_the_consumer_reads_again_and_a_hole_stops_the_service():
    """A restored instance's fetch position can run ahead of its snapshot's offset: a record
    above the partition's offset is never applied over the gap."""
    bus = MemoryBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    state = runner.states[0]
    applied, due = runner.applied, state.offset
    first = await_record(bus, Deposit("client-a", 10, "carol", 5))
    second = await_record(bus, Deposit("client-a", 11, "dave", 7))
    runner.process([second])  # the first was skipped by the consumer
    assert (runner.applied, state.offset, runner.gaps) == (applied, due, 1)
    assert "carol" not in state.processor.accounts and "dave" not in state.processor.accounts
    assert [r.offset for r in await runner.consumer.getmany(timeout_ms=10)] == [first.offset, second.offset]
    runner.process([first, second])  # read again from where it was due
    assert runner.applied == applied + 2 and {"carol", "dave"} <= set(state.processor.accounts)
    third = Record(RISK_IN, 0, state.offset + 5, None, codec(RISK_IN).encode(Deposit("client-a", 12, "erin", 1)))
    runner.process([third])
    with pytest.raises(BusError, match="has no record at offset"):
        runner.process([third])  # the same hole after seeking back: a log that lost a record


async def test_a_plausible_looking_jump_under_a_services_name_is_refused_and_cuts_nobody_off():
    """A Fill under matching's name with seq 2**50 (below the old bound of 2**52) was applied,
    and every real one after it dropped as a redelivery: risk was cut off from matching."""
    bus = MemoryBus(topic_partitions(1))
    runner = await runner_with(bus, trading())
    forged = Fill("match.SOL-PERP", 2**50, "SOL-PERP", 9, 15000, 1, Side.BUY, "alice", 0, "bob", 0)
    first = Fill("match.p7", 2**50, "SOL-PERP", 10, 15000, 1, Side.BUY, "alice", 0, "bob", 0)  # a name never seen
    runner.process([await_record(bus, forged), await_record(bus, first)])
    assert runner.dead_letters == 2 and runner.states[0].last_seq["match.SOL-PERP"] == 1
    assert "match.p7" not in runner.states[0].last_seq
    real = Fill("match.SOL-PERP", 2, "SOL-PERP", 11, 15000, 100, Side.BUY, "alice", 0, "bob", 0)
    runner.process([await_record(bus, real)])  # the real next fill is applied
    assert runner.states[0].last_seq["match.SOL-PERP"] == 2 and runner.dead_letters == 2


async def test_a_forged_snapshot_far_ahead_is_skipped_and_the_real_balance_shows():
    """A MarginSnapshot under risk's name with seq 2**62 showed 1,000,000,000 USDT to the
    gateway and every client for good, even after a real deposit (the newest snapshot wins)."""
    import asyncio

    from schemas import ACCOUNT_EVENTS
    from schemas.events import MarginSnapshot
    from services.client import Client

    bus = MemoryBus(topic_partitions(1))
    stop = asyncio.Event()
    risk = asyncio.create_task(ServiceRunner(risk_spec(MARKETS, partitions=1), bus).run(stop))
    try:
        async with Client(bus, MARKETS) as client:
            await client.deposit("alice", "100")
            forged = MarginSnapshot("risk.p0.margin", 2**62, "alice", 10**15, 10**15, 10**15, [], [])
            await bus.send([(ACCOUNT_EVENTS, 0, None, codec(ACCOUNT_EVENTS).encode(forged))])
            await client.deposit("alice", "50")
            assert (await client.snapshot("alice")).balance == 150_000_000
            assert client.implausible == 1
    finally:
        stop.set()
        await risk


class HangingBus(MemoryBus):
    """A broker whose reads do not come back until ``release`` is set: a check of the log on
    a broker at load 20 takes seconds."""

    def __init__(self, topics: dict[str, int]):
        super().__init__(topics)
        import asyncio

        self.release = asyncio.Event()
        self.reads = 0

    async def read(self, topic: str, partition: int, start: int, end: int | None = None):
        if topic == RISK_IN:
            self.reads += 1
            await self.release.wait()
        return await super().read(topic, partition, start, end)


async def running(bus: MemoryBus, messages: list):
    """A risk runner's loop on ``bus`` (log checks every 50 ms), once it has applied ``messages``."""
    import asyncio

    stop = asyncio.Event()
    runner = ServiceRunner(risk_spec(MARKETS, partitions=1), bus, status_interval_s=0.05)
    task = asyncio.create_task(runner.run(stop))
    await bus.send([(RISK_IN, 0, None, codec(RISK_IN).encode(m)) for m in messages])
    await applied(runner, len(messages))
    return runner, task, stop


async def applied(runner: ServiceRunner, count: int) -> None:
    import asyncio

    async with asyncio.timeout(10):
        while runner.states.get(0) is None or runner.states[0].offset < count:
            await asyncio.sleep(0.01)


async def test_the_service_goes_on_applying_while_a_check_of_its_log_hangs():
    """Risk fell to 4 records/s with a lag of 21,000 on a loaded machine: the log check ran
    in its loop and each read took seconds. The check runs beside the loop now."""
    import asyncio

    bus = HangingBus(topic_partitions(1))
    runner, task, stop = await running(bus, trading())
    try:
        async with asyncio.timeout(10):
            while bus.reads == 0:  # a check has started and hangs
                await asyncio.sleep(0.01)
        more = [Deposit("client-b", seq, f"carol{seq}", 10**9) for seq in range(1, 201)]
        await bus.send([(RISK_IN, 0, None, codec(RISK_IN).encode(m)) for m in more])
        await applied(runner, len(trading()) + len(more))
        assert bus.reads == 1  # still the one hanging check: everything above was applied meanwhile
        assert runner.states[0].processor.accounts["carol200"].balance == 10**9
        bus.release.set()
        await asyncio.sleep(0.2)
        assert not task.done() and runner.lost is None  # the log held what was applied
    finally:
        stop.set()
        bus.release.set()
        await task


async def test_a_log_watch_that_finds_the_log_lost_stops_the_loop_with_the_reason():
    import asyncio

    bus = MemoryBus(topic_partitions(1))
    runner, task, stop = await running(bus, trading())
    try:
        log = records(bus, RISK_IN)
        last = log[-1]
        log[-1] = Record(RISK_IN, 0, last.offset, None, codec(RISK_IN).encode(Deposit("client-z", 1, "zed", 5)))
        with pytest.raises(BusError, match=r"the broker lost its data: risk.in\[0\]"):
            await asyncio.wait_for(task, 10)
    finally:
        stop.set()
