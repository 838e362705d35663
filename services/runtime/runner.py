"""Running a stateful service over the bus: the loop every service shares.

The unit of state is one input partition (DESIGN.md: "the state is a deterministic fold
over the partition"). For each partition it owns, a service keeps a ``PartitionState``:
the engine(s) for that partition, the next offset to read, and the last sequence number
applied per producer. Its engines are named per partition (``risk.p3``) or per market
(``match.SOL-PERP``), so what a partition emits, and how it is numbered, depends on that
partition's records alone, whatever the interleaving with other partitions.

Effectively-once:
- a message whose ``seq`` is not above the last one applied from its producer (in that
  partition) is a redelivery and is dropped;
- outputs are queued to the producer as each batch is done, and the producer is flushed
  (every queued output stored) before a snapshot records progress past them; a crash in
  between loses only outputs the replay from the last snapshot regenerates;
- a snapshot (pickled ``PartitionState``, written to a temp file and renamed) is taken
  every ``snapshot_interval_s`` and on a clean stop, after the outputs are sent; then the
  offsets are committed to Kafka (for lag and monitoring; the snapshot is what counts);
- on start, or when a partition is assigned, its snapshot is loaded and reading resumes at
  its offset; the records after it are applied again and re-emit the same messages with
  the same sequence numbers, which consumers drop. A crash at any point ends in the state
  of no crash.

Bad input never stops a service: a record that does not decode, or a message its engine
cannot apply, goes to ``deadletter`` with the reason and the original bytes; the dead
letter's producer is ``<service>.p<partition>.dlq`` and its sequence number the input
offset, so a replay re-emits it identically.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas import DEADLETTER, SchemaError, codec
from schemas.events import DeadLetter, Message
from services.runtime.bus import Bus, Consumer, Record, partition_for

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """Everything that belongs to one input partition; pickled as its snapshot."""

    partition: int
    processor: Any
    offset: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)


class Outbox:
    """Outputs of a batch, one record per (topic, partition), each message once."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self._records: dict[tuple[str, int], list[Message]] = {}
        self._seen: set[tuple[str, int, int]] = set()

    def to(self, topic: str, key: str, message: Message) -> None:
        self.to_partition(topic, partition_for(key, self.bus.partitions(topic)), message)

    def to_partition(self, topic: str, partition: int, message: Message) -> None:
        marker = (topic, partition, id(message))
        if marker in self._seen:
            return
        self._seen.add(marker)
        self._records.setdefault((topic, partition), []).append(message)

    def to_all(self, topic: str, message: Message) -> None:
        for partition in range(self.bus.partitions(topic)):
            self.to_partition(topic, partition, message)

    def __len__(self) -> int:
        return sum(len(messages) for messages in self._records.values())

    def drain(self) -> list[tuple[str, int, bytes | None, bytes]]:
        items = [(topic, partition, None, codec(topic).encode_many(messages))
                 for (topic, partition), messages in self._records.items()]
        self._records = {}
        self._seen = set()
        return items


@dataclass
class ServiceSpec:
    """What makes a service: its name, input topic, engines, and where outputs go."""

    name: str
    input_topic: str
    make_processor: Callable[[int], Any]  # partition -> object with apply(message) -> list
    route: Callable[[list[Message], Outbox], None]


class ServiceRunner:
    def __init__(self, spec: ServiceSpec, bus: Bus, state_dir: str | Path | None,
                 snapshot_interval_s: float = 5.0, status_interval_s: float = 10.0):
        self.spec = spec
        self.bus = bus
        self.state_dir = Path(state_dir) / spec.name if state_dir else None
        self.snapshot_interval_s = snapshot_interval_s
        self.status_interval_s = status_interval_s
        self.states: dict[int, PartitionState] = {}
        self.consumer: Consumer | None = None
        self.outbox = Outbox(bus)
        self.applied = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.records = 0

    # ------------------------------------------------------------------ snapshots

    def _path(self, partition: int) -> Path | None:
        return self.state_dir / f"p{partition}.snapshot" if self.state_dir else None

    def _load(self, partition: int) -> PartitionState:
        path = self._path(partition)
        if path is not None and path.exists():
            with path.open("rb") as handle:
                state = pickle.load(handle)
            log.info("service=%s partition=%d restored snapshot offset=%d", self.spec.name, partition, state.offset)
            return state
        return PartitionState(partition, self.spec.make_processor(partition))

    def _save(self, state: PartitionState) -> None:
        path = self._path(state.partition)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".tmp{os.getpid()}")
        with temporary.open("wb") as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    async def snapshot(self, partitions: set[int] | None = None) -> None:
        """Send pending outputs, write snapshots, then commit their offsets."""
        await self._flush()
        chosen = [s for p, s in self.states.items() if partitions is None or p in partitions]
        for state in chosen:
            self._save(state)
        if self.consumer is not None:
            await self.consumer.commit({s.partition: s.offset for s in chosen})

    async def _assigned(self, partitions: set[int]) -> None:
        for partition in sorted(partitions):
            state = self.states.get(partition) or self._load(partition)
            self.states[partition] = state
            self.consumer.seek(partition, state.offset)
        log.info("service=%s assigned partitions=%s", self.spec.name, sorted(partitions))

    async def _revoked(self, partitions: set[int]) -> None:
        await self.snapshot(partitions)
        for partition in partitions:
            self.states.pop(partition, None)
        log.info("service=%s revoked partitions=%s", self.spec.name, sorted(partitions))

    # ----------------------------------------------------------------------- loop

    async def _flush(self, wait: bool = True) -> None:
        """Queue the outbox; with ``wait``, until everything queued so far is stored."""
        if len(self.outbox):
            await self.bus.send(self.outbox.drain(), wait=False)
        if wait:
            await self.bus.flush()

    def _dead_letter(self, state: PartitionState, record: Record, reason: str) -> None:
        self.dead_letters += 1
        log.warning("service=%s partition=%d offset=%d dead letter: %s", self.spec.name, record.partition,
                    record.offset, reason)
        letter = DeadLetter(f"{self.spec.name}.p{state.partition}.dlq", record.offset, record.topic,
                            record.partition, record.offset, reason, bytes(record.value), time.time_ns())
        self.outbox.to_partition(DEADLETTER, 0, letter)

    def process(self, records: list[Record]) -> None:
        """Apply a batch of records; outputs go to the outbox."""
        topic_codec = codec(self.spec.input_topic)
        touched: set[int] = set()
        for record in records:
            state = self.states.get(record.partition)
            if state is None or record.offset < state.offset:
                continue  # not ours any more, or applied before the snapshot we restored
            self.records += 1
            try:
                messages = topic_codec.decode(record.value)
            except SchemaError as exc:
                self._dead_letter(state, record, str(exc))
                state.offset = record.offset + 1
                continue
            for message in messages:
                last = state.last_seq.get(message.producer)
                if last is not None and message.seq <= last:
                    self.duplicates += 1
                    continue
                state.last_seq[message.producer] = message.seq
                try:
                    events = state.processor.apply(message)
                except Exception as exc:  # noqa: BLE001 - any failure of one message is reported, not fatal
                    self._dead_letter(state, record, f"{type(message).__name__} could not be applied: "
                                                     f"{type(exc).__name__}: {exc}")
                    continue
                self.applied += 1
                self.spec.route(events, self.outbox)
            state.offset = record.offset + 1
            touched.add(record.partition)
        for partition in sorted(touched):  # processors that coalesce output per batch
            state = self.states[partition]
            flush = getattr(state.processor, "flush", None)
            if flush is not None:
                self.spec.route(flush(state.offset, time.time_ns()), self.outbox)

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = self.bus.consumer(self.spec.input_topic, f"perpsim-{self.spec.name}",
                                          on_assigned=self._assigned, on_revoked=self._revoked)
        last_snapshot = last_status = time.monotonic()
        applied_at_status = 0
        try:
            while not stop.is_set():
                records = await self.consumer.getmany(timeout_ms=50, max_records=2000)
                if records:
                    self.process(records)
                    await self._flush(wait=False)
                now = time.monotonic()
                if now - last_snapshot >= self.snapshot_interval_s:
                    await self.snapshot()
                    last_snapshot = now
                if now - last_status >= self.status_interval_s:
                    rate = (self.applied - applied_at_status) / (now - last_status)
                    log.info("service=%s status rate=%.0f/s lag=%d partitions=%s applied=%d duplicates=%d "
                             "dead_letters=%d", self.spec.name, rate, await self.consumer.lag(),
                             sorted(self.states), self.applied, self.duplicates, self.dead_letters)
                    applied_at_status, last_status = self.applied, now
            await self.snapshot()
        finally:
            await self.consumer.stop()
