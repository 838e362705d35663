"""Running a stateful service over the bus: the loop every service shares.

The unit of state is one input partition (DESIGN.md: "the state is a deterministic fold
over the partition"). For each partition it owns, a service keeps a ``PartitionState``:
the processor (the engines) of that partition, the next offset to read, the last
sequence number applied per producer, and the fingerprint of the last record applied.
Engines are named per partition (``risk.p3``) or per market (``match.SOL-PERP``), so what
a partition emits, and how it is numbered, depends on that partition's records alone.

Effectively-once:
- a message whose ``seq`` is not above the last one applied from its producer (in that
  partition) is a redelivery and is dropped;
- outputs are queued to the producer as each batch is done, and the producer is flushed
  (every queued output stored) before a snapshot records progress past them;
- snapshots go to the bus (``services.runtime.state``), so whichever instance is assigned
  a partition restores it from there and resumes at its offset; the records after it are
  applied again and re-emit the same messages with the same sequence numbers, which
  consumers drop. A snapshot that does not belong to the log it would resume (another
  broker, a recreated topic: its offset is past the end, or the record before it is not
  the one it applied) is refused with a log line, and the partition starts from the log.

Never fatal, never poisoned. Each message is, in order:
1. decoded (a record that does not decode is dead-lettered whole);
2. checked: may its producer send it on this topic (``schemas.topics.SENDERS``)? is it
   from the instance that holds its producer's name now, not a stale one (its record's
   epoch, ``services.runtime.claims``)? is its sequence number plausible (a service's not more than ``SERVICE_SEQ_STEP`` past its last,
   or past 0 for its first; anyone else's not more than ``MAX_SEQ_STEP`` past its last)?
3. applied, and its outputs encoded one by one. If the apply raises or an output cannot
   be encoded, the partition is rebuilt as it was before the message (its last snapshot,
   kept in memory, and the journal of what was applied since, replayed) and nothing of
   the message is kept: no state, no output, no sequence number;
4. only then is its producer's sequence number recorded.
Whatever is refused goes to ``deadletter`` with the reason and the original bytes; the
letter's producer is ``<service>.p<partition>.dlq`` and its sequence number is derived
from the input offset and the message's place in the record, so a replay re-emits it
identically.

When to snapshot: a partition is written when it has consumed, since its last snapshot,
at least as many input bytes as that snapshot had (checked every ``snapshot_interval_s``),
and on a clean stop or when the partition is revoked. So the state topic grows no faster
than the input topics, also on a broker that does not compact, and a restore replays at
most about one snapshot's worth of input.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas import DEADLETTER, SchemaError, codec
from schemas.events import DeadLetter, Message
from schemas.state import (
    STATE_VERSION,
    Snapshot,
    StateError,
    decode_snapshot,
    encode_snapshot,
)
from schemas.topics import SERVICE_SEQ_STEP, SERVICES_COUNTING, Route, Unroutable, producer_kind, refusal
from services.runtime.bus import Bus, BusError, Consumer, Item, Record, partition_for
from services.runtime.claims import ClaimWatch, Fenced, instance_id, partition_claim, take
from services.runtime.fence import Fence, stamp_header, stamps
from services.runtime.state import StateStore, fingerprint

log = logging.getLogger(__name__)

# A producer's sequence number may not jump further than this past the last one applied:
# the oracle's start from the wall clock in nanoseconds (2**52 ns is 52 days of downtime).
MAX_SEQ_STEP = 2**52
COMMIT_INTERVAL_S = 1.0
JOURNAL_LIMIT = 200_000  # entries since the last snapshot before one is taken regardless
# how many checks in a row must find the log ended before an applied record that cannot be read
# before it counts as lost (one such answer may be a slow broker's; DESIGN.md: "slow is not lost")
SUSPECT_LIMIT = 3


class LogVerdict(enum.Enum):
    """What a check of the input log found at the record a partition last applied."""

    HOLDS = "holds"      # it is there and it is the same record (or retention removed it)
    DIFFERS = "differs"  # positive evidence that the log is not the one applied
    UNKNOWN = "unknown"  # it could not be read now (slow, paused, unreachable): ask again later


@dataclass
class PartitionState:
    """Everything that belongs to one input partition."""

    partition: int
    processor: Any
    offset: int = 0
    last_seq: dict[str, int] = field(default_factory=dict)
    fingerprint: int = 0
    checkpoint: bytes | None = None  # the last snapshot (encoded), what a rebuild starts from
    journal: list = field(default_factory=list)  # applied since the checkpoint: messages and flushes
    consumed: int = 0  # input bytes since the checkpoint
    saved_offset: int = -1  # offset of the last snapshot written (or restored)
    epochs: dict[str, int] = field(default_factory=dict)  # the highest epoch seen per producer (claims.Fence)


MAX_RECORD_BYTES = 1 << 20  # an output record at most; the producer's requests go to 8 MiB (kafka.py)


class Outbox:
    """Outputs of a batch, one record per (topic, partition), each message once. Each
    message is encoded as it is added, so one that cannot be encoded raises there, and
    ``rollback`` takes back everything added since a ``mark``."""

    def __init__(self, bus: Bus):
        self.bus = bus
        self._records: dict[tuple[str, int], list[bytes]] = {}
        # the writer's epoch (services.runtime.claims) for its own producers ("risk." ...), set
        # per partition by ``stamp``, and what each record will carry in its header
        self._own = ""
        self._epoch = 0
        self._stamps: dict[tuple[str, int], dict[str, int]] = {}
        self._seen: set[tuple[str, int, int]] = set()
        self._added: list[tuple[tuple[str, int, int], Message]] = []
        # id(message) -> (the message, its encoding), this batch; the message is kept beside it so
        # that an id reused by another object after a rollback is not taken for it
        self._encoded: dict[int, tuple[Message, bytes]] = {}

    def to(self, topic: str, key: str, message: Message) -> None:
        self.to_partition(topic, partition_for(key, self.bus.partitions(topic)), message)

    def stamp(self, own: str, epoch: int) -> None:
        """Messages added from now on whose producer is of kind ``own`` (``producer_kind``)
        were written under ``epoch``; their records say so."""
        self._own, self._epoch = own, epoch

    def to_partition(self, topic: str, partition: int, message: Message) -> None:
        key = id(message)
        marker = (topic, partition, key)
        seen = self._seen
        if marker in seen:
            return
        topic_codec = codec(topic)
        known = self._encoded.get(key)  # a fill goes to two accounts' partitions and two topics
        if known is not None and known[0] is message:
            part = known[1]
            topic_codec.check_type(message)  # the bytes are the same on every topic; what it may carry is not
        else:
            part = topic_codec.encode_part(message)
            self._encoded[key] = (message, part)
        seen.add(marker)
        records = self._records.get(marker[:2])
        if records is None:
            records = self._records[marker[:2]] = []
        records.append(part)
        self._added.append((marker, message))  # the message is held so that its id stays its own
        if self._epoch and producer_kind(message.producer) == self._own:
            stamped = self._stamps.get(marker[:2])
            if stamped is None:
                stamped = self._stamps[marker[:2]] = {}
            stamped[message.producer] = self._epoch

    def to_all(self, topic: str, message: Message) -> None:
        for partition in range(self.bus.partitions(topic)):
            self.to_partition(topic, partition, message)

    def route(self, routes: dict[type, tuple[Route, ...]], events: list[Message]) -> None:
        """Add ``events`` where ``routes`` (one service's part of ``schemas.topics.ROUTES``)
        sends them; a type with no route raises ``Unroutable``."""
        for event in events:
            found = routes.get(type(event))
            if found is None:
                raise Unroutable(f"{type(event).__name__} has no route (schemas.topics.ROUTES)")
            for route in found:
                if route.when is not None and not route.when(event):
                    continue
                message = event if route.convert is None else route.convert(event)
                if route.keys is None:
                    self.to_all(route.topic, message)
                else:
                    for key in route.keys(event):
                        self.to(route.topic, key, message)

    def mark(self) -> int:
        return len(self._added)

    def rollback(self, mark: int) -> None:
        while len(self._added) > mark:
            marker, _ = self._added.pop()
            self._seen.discard(marker)
            self._records[marker[:2]].pop()

    def __len__(self) -> int:
        return len(self._added)

    def drain(self) -> list[Item]:
        """The records to send: one per (topic, partition), split where one would pass
        ``MAX_RECORD_BYTES`` (a large input batch can cause more output than the producer
        sends in one request), in order; each with the epochs of its writer's producers."""
        items: list[Item] = []
        for (topic, partition), parts in self._records.items():
            join = codec(topic).join
            headers = stamp_header(self._stamps.get((topic, partition), {}))
            chunk: list[bytes] = []
            size = 0
            for part in parts:
                if chunk and size + len(part) > MAX_RECORD_BYTES:
                    items.append((topic, partition, None, join(chunk), headers))
                    chunk, size = [], 0
                chunk.append(part)
                size += len(part)
            if chunk:
                items.append((topic, partition, None, join(chunk), headers))
        self._records, self._seen, self._added, self._encoded, self._stamps = {}, set(), [], {}, {}
        return items


@dataclass
class ServiceSpec:
    """What makes a service: its name, input topic, engines, and where outputs go (its
    part of ``schemas.topics.ROUTES``). ``make_processor(partition)`` gives an object with
    ``apply(message) -> list`` and ``export()`` / ``load(state)`` (``schemas.state``), and
    optionally ``flush(offset, ts) -> list`` for output coalesced per batch."""

    name: str
    input_topic: str
    make_processor: Callable[[int], Any]
    routes: dict[type, tuple[Route, ...]]
    producers: str = ""  # the kind its engines write under (``producer_kind``): its records carry their epoch


class ServiceRunner:
    def __init__(self, spec: ServiceSpec, bus: Bus, snapshot_interval_s: float = 5.0,
                 status_interval_s: float = 10.0):
        self.spec = spec
        self.bus = bus
        self.store = StateStore(bus, spec.name)
        self.snapshot_interval_s = snapshot_interval_s
        self.status_interval_s = status_interval_s
        self.states: dict[int, PartitionState] = {}
        self.consumer: Consumer | None = None
        self.outbox = Outbox(bus)
        self.applied = 0
        self.duplicates = 0
        self.dead_letters = 0
        self.records = 0
        self.rebuilds = 0
        self._suspect: dict[int, int] = {}  # partition -> checks in a row that found the log ended early
        self._gaps: dict[int, int] = {}  # partition -> the offset last sought back to
        self.gaps = 0
        self.stopping = False  # set as ``run`` ends: a rebalance callback under way gives up
        self.instance = instance_id(spec.name)  # who takes the claims (services.runtime.claims)
        self.claims = ClaimWatch(bus, self.instance)
        self.epochs: dict[int, int] = {}  # partition -> the epoch this instance holds it at
        self.fenced = 0  # messages refused as a stale instance's
        self._callback: asyncio.Future | None = None  # a rebalance callback's work under way
        self.lost: BusError | None = None  # what the log watch found: the loop stops with it

    # ------------------------------------------------------------------ snapshots

    def _snapshot(self, state: PartitionState) -> Snapshot:
        return Snapshot(STATE_VERSION, self.spec.name, state.partition, state.offset, state.fingerprint,
                        dict(state.last_seq), state.processor.export(), time.time_ns(), dict(state.epochs))

    def _checkpoint(self, state: PartitionState) -> bytes:
        """Make the present state the one a rebuild starts from; returns it encoded."""
        state.checkpoint = encode_snapshot(self._snapshot(state))
        state.journal.clear()
        state.consumed = 0
        return state.checkpoint

    def _fresh(self, partition: int, snapshot: Snapshot | None) -> PartitionState:
        processor = self.spec.make_processor(partition)
        if snapshot is None:
            return PartitionState(partition, processor)
        processor.load(snapshot.state)
        return PartitionState(partition, processor, snapshot.offset, dict(snapshot.last_seq), snapshot.fingerprint,
                              saved_offset=snapshot.offset, epochs=dict(snapshot.epochs))

    async def _restore(self, partition: int) -> PartitionState:
        started = time.monotonic()
        try:
            snapshot = await self.store.load(partition)
        except StateError as exc:
            log.warning("service=%s partition=%d no usable snapshot (%s): starting from the log", self.spec.name,
                        partition, exc)
            snapshot = None
        if snapshot is not None and not await self._belongs(snapshot):
            snapshot = None
        try:
            state = self._fresh(partition, snapshot)
        except (ValueError, KeyError, LookupError) as exc:  # a snapshot of other markets or settings
            log.warning("service=%s partition=%d snapshot at offset %d refused: %s; starting from the log",
                        self.spec.name, partition, snapshot.offset, exc)
            state = self._fresh(partition, None)
        if snapshot is None:
            begin, _ = await self.bus.offsets(self.spec.input_topic, partition)
            state.offset = begin
        self._checkpoint(state)
        log.info("service=%s partition=%d restored offset=%d in %.3f s", self.spec.name, partition, state.offset,
                 time.monotonic() - started)
        return state

    async def _belongs(self, snapshot: Snapshot) -> bool:
        """Whether ``snapshot`` resumes the input log as it is (not another broker's, nor a
        recreated topic's). Refused only on positive evidence (``_inspect``); a log that
        cannot be read yet raises ``BusError`` and the restore is tried again."""
        partition, offset = snapshot.partition, snapshot.offset
        if offset == 0:
            return True
        verdict, detail = await self._inspect(partition, offset, snapshot.fingerprint)
        if verdict is LogVerdict.UNKNOWN:
            raise BusError(f"cannot check the snapshot at offset {offset} against the log yet: {detail}")
        if verdict is LogVerdict.DIFFERS:
            log.warning("service=%s partition=%d snapshot refused: %s (another broker, or a recreated topic); "
                        "starting from the log", self.spec.name, partition, detail)
            return False
        if detail:
            log.info("service=%s partition=%d snapshot at offset %d: %s", self.spec.name, partition, offset, detail)
        return True

    async def snapshot(self, partitions: set[int] | None = None, force: bool = False) -> None:
        """Send pending outputs, then write the snapshots that are due (all that moved,
        with ``force``), then commit their offsets."""
        await self._flush()
        chosen = [s for p, s in self.states.items() if partitions is None or p in partitions]
        written = []
        for state in chosen:
            due = state.consumed >= len(state.checkpoint or b"") or len(state.journal) >= JOURNAL_LIMIT
            if state.offset != state.saved_offset and (force or due):
                await self.store.save(state.partition, state.offset, self._checkpoint(state))
                state.saved_offset = state.offset
                written.append(state)
        if written:
            await self.bus.flush()
        await self._commit(chosen)

    async def _commit(self, states: list[PartitionState] | None = None) -> None:
        """Commit how far the partitions have been applied, once their outputs are stored
        (so a committed offset means: applied, and what it caused is on the bus). For lag
        and for `up`'s end-of-run check; restores start from snapshots, not from here."""
        await self._flush()
        states = list(self.states.values()) if states is None else states
        if self.consumer is not None and states:
            await self.consumer.commit({s.partition: s.offset for s in states})

    # The rebalance callbacks run inside aiokafka's coordination task, which the consumer's
    # stop waits for: their work runs as a task of its own that a stopping service ends
    # (``_abortable``), so that a restore or snapshot waiting on a broker that will not
    # answer does not keep the process from stopping.

    async def _abortable(self, work) -> None:
        if self.stopping:
            work.close()
            return
        task = self._callback = asyncio.ensure_future(work)
        try:
            await task
        except asyncio.CancelledError:
            if not self.stopping:
                task.cancel()
                raise
        finally:
            self._callback = None

    async def _assigned(self, partitions: set[int]) -> None:
        await self._abortable(self._assign(partitions))

    async def _assign(self, partitions: set[int]) -> None:
        for partition in sorted(partitions):
            state = self.states.get(partition)
            while state is None:  # a partition is served from its state or not at all
                try:
                    if partition not in self.epochs:  # its name first: nothing is written for it before
                        claim = await take(self.bus, partition_claim(self.spec.input_topic, partition), self.instance)
                        self.claims.hold(claim)
                        self.epochs[partition] = claim.epoch
                    state = self.states[partition] = await self._restore(partition)
                except BusError as exc:  # the broker paused mid-restore: try again (if it is gone, the watchdog stops us)
                    log.warning("service=%s partition=%d restore failed (%s); retrying", self.spec.name, partition,
                                exc)
                    await asyncio.sleep(1.0)
            self.consumer.seek(partition, state.offset)
        log.info("service=%s assigned partitions=%s", self.spec.name, sorted(partitions))

    async def _revoked(self, partitions: set[int]) -> None:
        await self._abortable(self._revoke(partitions))

    async def _drop_taken(self, taken: list[Fenced]) -> None:
        """Stop serving the partitions another instance has claimed since (``ClaimWatch``):
        nothing more is applied, sent or saved for them by this one."""
        names = {partition_claim(self.spec.input_topic, p): p for p in self.epochs}
        for fenced in taken:
            partition = names.get(fenced.name)
            log.warning("service=%s fenced: %s", self.spec.name, fenced)
            if partition is not None:
                self.states.pop(partition, None)
                self.epochs.pop(partition, None)

    async def _revoke(self, partitions: set[int]) -> None:
        # a partition another instance took meanwhile is not saved: its state is the other's now
        await self._drop_taken(await self.claims.taken())
        partitions = {p for p in partitions if p in self.states}
        await self.snapshot(partitions, force=True)
        for partition in partitions:
            self.states.pop(partition, None)
            self.epochs.pop(partition, None)
            self.claims.release(partition_claim(self.spec.input_topic, partition))
        log.info("service=%s revoked partitions=%s", self.spec.name, sorted(partitions))

    async def _check_log(self) -> None:
        """Stop (``BusError``) if the broker no longer holds what this service has read: it
        restarted empty (the embedded broker keeps everything in memory) or the topic was
        recreated. Going on would apply new records on top of state from another log. Slow
        is not lost: a check that cannot read is tried again at the next status, and only
        positive evidence stops the service (``_inspect``)."""
        for partition, state in list(self.states.items()):
            if not state.offset:
                continue
            verdict, detail = await self._inspect(partition, state.offset, state.fingerprint)
            if verdict is LogVerdict.UNKNOWN:
                log.info("service=%s partition=%d the log could not be checked this time (%s); checking again "
                         "at the next status", self.spec.name, partition, detail)
            elif verdict is LogVerdict.DIFFERS:
                raise BusError(f"the broker lost its data: {self.spec.input_topic}[{partition}] no longer holds the "
                               f"record at offset {state.offset - 1} that {self.spec.name} applied ({detail}): a "
                               "broker restarted empty, or a recreated topic; stopping")

    async def _watch_log(self) -> None:
        """``_check_log`` every ``status_interval_s``, beside the loop, not in it: on a loaded
        broker a read takes seconds, and the loop must go on applying meanwhile (risk fell to
        4 records/s with a lag of 21,000 when the checks ran inline). What it finds is left in
        ``lost``, which the loop raises."""
        while self.lost is None:
            await asyncio.sleep(self.status_interval_s)
            try:
                await self._check_log()
            except BusError as exc:
                self.lost = exc

    async def _inspect(self, partition: int, offset: int, expected: int) -> tuple[LogVerdict, str]:
        """Whether the input record at ``offset - 1`` is still the one with fingerprint
        ``expected``, and why. DIFFERS only on positive evidence: the record there is another
        one, the log has a gap where it was, or the log has ended before it on
        ``SUSPECT_LIMIT`` checks in a row while it could not be read. A read or an offsets
        request that fails or times out is UNKNOWN: a busy broker is slow, not empty."""
        topic = self.spec.input_topic
        try:
            begin, end = await self.bus.offsets(topic, partition)
        except BusError as exc:
            return LogVerdict.UNKNOWN, str(exc)
        if offset - 1 < begin:
            self._suspect.pop(partition, None)
            return LogVerdict.HOLDS, f"the log starts at {begin}, so the record it applied cannot be checked"
        try:
            records = await self.bus.read(topic, partition, offset - 1, offset)
            problem = "" if records else "nothing came back"
        except BusError as exc:
            records, problem = [], str(exc)
        if not records:
            if end >= offset:
                return LogVerdict.UNKNOWN, f"the record at {topic}[{partition}] offset {offset - 1}: {problem}"
            # the log reports its end before the record (Tansu may report the end short by the rest
            # of its last batch, so one such answer is not proof): counted, decided when it persists
            seen = self._suspect[partition] = self._suspect.get(partition, 0) + 1
            detail = f"the log ends at {end} and the record at {offset - 1} could not be read ({problem})"
            if seen >= SUSPECT_LIMIT:
                return LogVerdict.DIFFERS, f"{detail}, {seen} checks in a row"
            return LogVerdict.UNKNOWN, f"{detail}; {seen} of {SUSPECT_LIMIT} checks"
        self._suspect.pop(partition, None)
        first = records[0]
        if first.offset != offset - 1:
            return LogVerdict.DIFFERS, f"the log has no record at {offset - 1} (the next is at {first.offset})"
        if fingerprint(first.value) != expected:
            return LogVerdict.DIFFERS, f"the record at {offset - 1} is another one than the one applied"
        return LogVerdict.HOLDS, ""

    # ----------------------------------------------------------------------- loop

    async def _flush(self, wait: bool = True) -> None:
        """Queue the outbox; with ``wait``, until everything queued so far is stored."""
        if len(self.outbox):
            await self.bus.send(self.outbox.drain(), wait=False)
        if wait:
            await self.bus.flush()

    def _dead_letter(self, state: PartitionState, record: Record, reason: str, index: int = 0) -> None:
        self.dead_letters += 1
        log.warning("service=%s partition=%d offset=%d dead letter: %s", self.spec.name, record.partition,
                    record.offset, reason)
        letter = DeadLetter(f"{self.spec.name}.p{state.partition}.dlq", (record.offset << 16) | min(index, 0xFFFF),
                            record.topic, record.partition, record.offset, reason, bytes(record.value),
                            time.time_ns())
        self.outbox.to_partition(DEADLETTER, 0, letter)

    def _untrusted(self, state: PartitionState, message: Message, last: int | None) -> str | None:
        reason = refusal(self.spec.input_topic, message)
        if reason:
            return reason
        if producer_kind(message.producer) in SERVICES_COUNTING:  # counters from 0, or input offsets
            step, last = SERVICE_SEQ_STEP, last or 0
        elif last is None:
            return None
        else:
            step = MAX_SEQ_STEP
        if message.seq > last + step:
            return (f"{type(message).__name__} from {message.producer!r} has sequence number {message.seq}, "
                    f"more than {step} past its last one ({last}): refused as implausible")
        return None

    def _rebuild(self, state: PartitionState, upto: int | None = None) -> None:
        """Put the partition's processor back as it was after the last message applied
        (or after the first ``upto`` journal entries): its checkpoint, and the journal
        replayed (outputs dropped: they were sent)."""
        snapshot = decode_snapshot(state.checkpoint)
        processor = self.spec.make_processor(state.partition)
        processor.load(snapshot.state)
        del state.journal[len(state.journal) if upto is None else upto:]
        for entry in state.journal:
            if isinstance(entry, tuple):
                processor.flush(*entry)
            else:
                processor.apply(entry)
        state.processor = processor
        self.rebuilds += 1

    def process(self, records: list[Record]) -> None:
        """Apply a batch of records; outputs go to the outbox."""
        topic_codec = codec(self.spec.input_topic)
        touched: dict[int, tuple[int, list]] = {}  # partition -> (journal length before the batch, its messages)
        behind: set[int] = set()  # partitions sought back in this batch: the rest of theirs comes again
        for record in records:
            state = self.states.get(record.partition)
            if state is None or record.offset < state.offset or record.partition in behind:
                continue  # not ours any more, or applied before the snapshot we restored
            if record.offset > state.offset:  # a gap: never applied over (DESIGN.md, "nothing is lost")
                self._gap(state, record.offset)
                behind.add(record.partition)
                continue
            self.records += 1
            self.outbox.stamp(self.spec.producers, self.epochs.get(record.partition, 0))
            try:
                messages = topic_codec.decode(record.value)
            except SchemaError as exc:
                messages = ()
                self._dead_letter(state, record, str(exc))
            epochs = stamps(record.headers) if record.headers else {}
            fence = Fence(state.epochs)
            for index, message in enumerate(messages):
                producer = message.producer
                epoch = epochs.get(producer)
                last = state.last_seq.get(producer)
                if fence.new_epoch(producer, epoch) and producer_kind(producer) not in SERVICES_COUNTING:
                    last = None  # a clock-numbered writer (the oracle) starts its sequence again under a new epoch
                # a successor's epoch counts from its first record, its replay of what was applied too
                stale = fence.fenced(producer, epoch)
                if last is not None and message.seq <= last:
                    self.duplicates += 1  # a successor's replay, or a stale instance's copy of what was applied
                    continue
                if stale is not None:
                    self.fenced += 1
                    self._dead_letter(state, record, stale, index)
                    continue
                reason = self._untrusted(state, message, last)
                batch = touched.setdefault(record.partition, (len(state.journal), []))[1]
                if reason is None:
                    reason = self._apply(state, message)
                if reason is not None:
                    self._dead_letter(state, record, reason, index)
                    continue
                batch.append((record, index, message, last))
                state.last_seq[message.producer] = message.seq
                state.journal.append(message)
                self.applied += 1
            touched.setdefault(record.partition, (len(state.journal), []))
            state.offset = record.offset + 1
            state.fingerprint = fingerprint(record.value)
            state.consumed += len(record.value)
        for partition in sorted(touched):  # processors that coalesce output per batch
            state = self.states[partition]
            if getattr(state.processor, "flush", None) is not None:
                self.outbox.stamp(self.spec.producers, self.epochs.get(partition, 0))
                self._flush_batch(state, *touched[partition])

    def _gap(self, state: PartitionState, found: int) -> None:
        """The consumer delivered ``found`` where ``state.offset`` was due (a fetch position
        ahead of a restored snapshot's offset): seek back, once per offset; the same gap
        again is a log with a hole where a record should be, and the service stops."""
        topic = self.spec.input_topic
        if self._gaps.get(state.partition) == state.offset:
            raise BusError(f"{topic}[{state.partition}] has no record at offset {state.offset} (the next is at "
                           f"{found}) after seeking back to it: {self.spec.name} cannot apply past a hole in its log; "
                           "stopping")
        self._gaps[state.partition] = state.offset
        self.gaps += 1
        log.warning("service=%s partition=%d gap: offset %d came where %d was due; reading again from %d",
                    self.spec.name, state.partition, found, state.offset, state.offset)
        if self.consumer is not None:
            self.consumer.seek(state.partition, state.offset)

    def _apply(self, state: PartitionState, message: Message) -> str | None:
        """Apply one message and queue its outputs; if that fails, nothing of it is kept
        and the reason is returned."""
        mark = self.outbox.mark()
        try:
            self.outbox.route(self.spec.routes, state.processor.apply(message))
        except Exception as exc:  # noqa: BLE001 - a message that fails is refused, never fatal
            self.outbox.rollback(mark)
            self._rebuild(state)
            return (f"{type(message).__name__} from {message.producer!r} could not be applied: "
                    f"{type(exc).__name__}: {exc}; nothing of it was kept")
        return None

    def _flush_batch(self, state: PartitionState, start: int, batch: list) -> None:
        """The processor's output for the batch (coalesced margin snapshots). Should it
        fail, the batch is applied again from before it, one message at a time with its
        own flush, so that only the message whose output cannot be made is refused."""
        mark = self.outbox.mark()
        entry = (state.offset, time.time_ns())
        try:
            self.outbox.route(self.spec.routes, state.processor.flush(*entry))
            state.journal.append(entry)
            return
        except Exception as exc:  # noqa: BLE001 - found and refused below, never fatal
            log.error("service=%s partition=%d the batch's output failed (%s: %s); applying it again message "
                      "by message", self.spec.name, state.partition, type(exc).__name__, exc)
            self.outbox.rollback(mark)
        self._rebuild(state, upto=start)
        before = {}  # producer -> its last sequence number before the batch
        for _, _, message, previous in batch:
            before.setdefault(message.producer, previous)
        kept: dict[str, int] = {}
        for record, index, message, _ in batch:
            mark = self.outbox.mark()
            reason = self._apply(state, message)
            if reason is None:
                entry = (record.offset + 1, time.time_ns())
                try:
                    self.outbox.route(self.spec.routes, state.processor.flush(*entry))
                except Exception as exc:  # noqa: BLE001
                    self.outbox.rollback(mark)
                    self._rebuild(state)
                    reason = (f"{type(message).__name__} from {message.producer!r}: its outputs cannot be made: "
                              f"{type(exc).__name__}: {exc}; nothing of it was kept")
                else:
                    state.journal.extend((message, entry))
                    kept[message.producer] = message.seq
                    continue
            self.applied -= 1
            self._dead_letter(state, record, reason, index)
        for producer, previous in before.items():  # as if the refused had never come
            last = kept.get(producer, previous)
            if last is None:
                state.last_seq.pop(producer, None)
            else:
                state.last_seq[producer] = last

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer = self.bus.consumer(self.spec.input_topic, f"perpsim-{self.spec.name}",
                                          on_assigned=self._assigned, on_revoked=self._revoked)
        last_snapshot = last_status = last_commit = time.monotonic()
        applied_at_status = 0
        watching = asyncio.create_task(self.claims.run(), name="claims")
        checking = asyncio.create_task(self._watch_log(), name="log check")
        try:
            while not stop.is_set():
                if self.lost is not None:
                    raise self.lost
                records = await self.consumer.getmany(timeout_ms=50, max_records=2000)
                if self.claims.found:  # another instance claimed a partition of ours meanwhile
                    await self._drop_taken(self.claims.pop_found())
                if records:
                    self.process(records)
                    await self._flush(wait=False)
                now = time.monotonic()
                if now - last_snapshot >= self.snapshot_interval_s:
                    await self.snapshot()
                    last_snapshot = last_commit = now
                elif now - last_commit >= COMMIT_INTERVAL_S:
                    await self._commit()
                    last_commit = now
                if now - last_status >= self.status_interval_s:
                    rate = (self.applied - applied_at_status) / (now - last_status)
                    log.info("service=%s status rate=%.0f/s lag=%d partitions=%s applied=%d duplicates=%d "
                             "dead_letters=%d fenced=%d rebuilds=%d gaps=%d", self.spec.name, rate,
                             await self.consumer.lag(), sorted(self.states), self.applied, self.duplicates,
                             self.dead_letters, self.fenced, self.rebuilds, self.gaps)
                    applied_at_status, last_status = self.applied, now
            await self.snapshot(force=True)
        finally:
            watching.cancel()
            checking.cancel()
            self.stopping = True
            if self._callback is not None:
                self._callback.cancel()
            await self.consumer.stop()
