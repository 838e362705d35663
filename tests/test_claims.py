"""One writer per producer name (services.runtime.claims): an instance takes its name at the
next epoch, its records say the epoch, every reader refuses what a stale instance still
sends once it has seen the successor, and the stale instance finds out. On the in-process
bus; tests/integration/test_outages.py pauses real processes on a real broker."""

from __future__ import annotations

from exchange.markets import default_markets
from schemas import DEADLETTER, RISK_IN, codec, topic_partitions
from schemas.enums import Side
from schemas.events import Deposit, Fill, MarkPrice
from services.risk import spec as risk_spec
from services.runtime.bus import Record, TolerantReader
from services.runtime.claims import ClaimWatch, take
from services.runtime.fence import stamp_header
from services.runtime.memory import MemoryBus
from services.runtime.runner import Outbox, ServiceRunner

MARKETS = default_markets()


def stamped(bus: MemoryBus, message, epoch: int | None) -> Record:
    """``message`` appended to risk.in as one record, stamped with its producer's ``epoch``."""
    log = bus._log[RISK_IN][0]
    headers = stamp_header({message.producer: epoch}) if epoch is not None else ()
    record = Record(RISK_IN, 0, len(log), None, codec(RISK_IN).encode(message), headers)
    log.append(record)
    return record


async def risk_runner(bus: MemoryBus) -> ServiceRunner:
    runner = ServiceRunner(risk_spec(MARKETS, partitions=1), bus)
    runner.consumer = bus.consumer(RISK_IN, "perpsim-risk-test", on_assigned=runner._assigned)
    await runner.consumer.getmany(timeout_ms=10)  # assigned: the claim is taken, the partition restored
    return runner


def letters(runner: ServiceRunner) -> list:
    return [m for item in runner.outbox.drain() if item[0] == DEADLETTER for m in codec(DEADLETTER).decode(item[3])]


def fill(seq: int, size: int) -> Fill:
    return Fill("match.SOL-PERP", seq, "SOL-PERP", seq, 15000, size, Side.BUY, "alice", 0, "bob", 0)


async def test_a_name_taken_again_goes_to_the_next_epoch_and_the_first_holder_finds_out():
    bus = MemoryBus(topic_partitions(1))
    first = await take(bus, "match.in[0]", "matching-a")
    second = await take(bus, "match.in[0]", "matching-b")
    assert (first.epoch, second.epoch) == (1, 2)
    a, b = ClaimWatch(bus, "matching-a"), ClaimWatch(bus, "matching-b")
    a.hold(first)
    b.hold(second)
    [fenced] = await a.taken()
    assert fenced.name == "match.in[0]" and "matching-b took over match.in[0] at epoch 2" in str(fenced)
    assert await b.taken() == [] and a.held == {}  # the successor holds it; the first no longer


async def test_a_stale_instance_is_refused_once_its_successor_was_seen_and_nothing_is_lost():
    bus = MemoryBus(topic_partitions(1))
    runner = await risk_runner(bus)
    assert runner.epochs == {0: 1}  # it took risk.in[0] before serving it
    for seq, account in ((1, "alice"), (2, "bob")):
        runner.process([stamped(bus, Deposit("client-a", seq, account, 10**12), None)])
    runner.process([stamped(bus, MarkPrice("oracle", 1, "SOL-PERP", 15000, 15000), 1)])
    runner.process([stamped(bus, fill(1, 100), 1)])  # matching at epoch 1
    runner.process([stamped(bus, fill(1, 100), 2)])  # its successor replays fill 1: a duplicate, and its epoch counts
    runner.process([stamped(bus, fill(2, 999), 1)])  # the stale one goes on under epoch 1: refused
    runner.process([stamped(bus, fill(2, 100), 2)])  # the successor's fill 2 is applied
    risk = runner.states[0].processor
    assert risk.account("alice").position("SOL-PERP").size == 200  # 100 + 100, never the 999
    assert runner.fenced == 1 and runner.duplicates == 1
    [letter] = letters(runner)
    assert "'match.SOL-PERP' wrote under epoch 1, but another instance took its name at epoch 2" in letter.reason
    assert runner.states[0].epochs["match.SOL-PERP"] == 2  # and it is kept in the snapshot
    assert runner._snapshot(runner.states[0]).epochs["match.SOL-PERP"] == 2


async def test_an_oracle_under_a_new_epoch_starts_its_sequence_again():
    # the oracle numbers its marks from its clock: a successor on a machine whose clock is
    # behind must not have its marks dropped as old, nor a stray's numbers outlive the stray
    bus = MemoryBus(topic_partitions(1))
    runner = await risk_runner(bus)
    runner.process([stamped(bus, MarkPrice("oracle", 9_000, "SOL-PERP", 15000, 15000), 1)])
    runner.process([stamped(bus, MarkPrice("oracle", 5_000, "SOL-PERP", 15100, 15100), 2)])
    runner.process([stamped(bus, MarkPrice("oracle", 9_500, "SOL-PERP", 14000, 14000), 1)])  # the old one: refused
    assert runner.states[0].processor.marks.marks["SOL-PERP"] == 15100
    assert runner.fenced == 1 and runner.states[0].last_seq["oracle"] == 5_000


async def test_outputs_carry_their_writers_epoch_and_a_client_skips_a_stale_ones():
    bus = MemoryBus(topic_partitions(1))
    outbox = Outbox(bus)
    outbox.stamp("match.", 3)
    outbox.to_partition(RISK_IN, 0, fill(7, 1))
    outbox.to_partition(RISK_IN, 0, Deposit("client-a", 1, "alice", 5))  # not matching's: not stamped
    await bus.send(outbox.drain())
    outbox.stamp("match.", 2)
    outbox.to_partition(RISK_IN, 0, fill(8, 1))
    await bus.send(outbox.drain())
    first, second = bus._log[RISK_IN][0]
    reader = TolerantReader(RISK_IN, "a test client")
    assert [type(m).__name__ for m in reader.messages(first)] == ["Fill", "Deposit"]
    assert reader.messages(second) == [] and reader.skipped == 1
