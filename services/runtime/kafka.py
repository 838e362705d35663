"""The Kafka bus, on aiokafka.

Producing: items are grouped by partition and sent with an explicit partition; callers
already pack many messages into one record (the codec's batches), so per-record cost
stays small. No idempotent producer (Tansu does not implement it): duplicates after a
retry or a crash are dropped by consumers, by producer id and sequence number.

Consuming: ``getmany`` with ``fetch_max_wait_ms`` of 5 ms while caught up (DESIGN.md: less
stalls the consumer against the embedded broker) and more while behind (``FetchWait``),
manual commits, and a rebalance
listener that lets the service snapshot partitions it loses and restore partitions it
gains before reading them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
)

from schemas.topics import COMPACTED_TOPICS
from services.runtime.bus import BusError, Item, PartitionsCallback, Record

log = logging.getLogger(__name__)
UNDELIVERED_LOG_S = 10.0

# A member killed without a goodbye holds its partitions until its session times out; the
# survivors notice the rebalance at their next heartbeat. Both as short as the embedded
# broker allows (docs/services.md, "Scale-out": measured takeover times).
SESSION_TIMEOUT_MS = 3000
HEARTBEAT_MS = 300
FETCH_WAIT_MS = 5  # a fetch's wait at the broker while caught up (FetchWait)
FETCH_WAIT_MAX_MS = 200  # at most, while behind and starved
READ_WAIT_MS = 100  # the bus's reads (log checks, restores): never latency-bound, often far behind


@dataclass
class KafkaSettings:
    """Where the cluster is and how to talk to it (SASL/TLS passed to aiokafka as is)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    connect_timeout_s: float = 15.0
    extra: dict = field(default_factory=dict)

    def client_options(self) -> dict:
        options: dict = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                           sasl_plain_password=self.sasl_password)
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = ssl.create_default_context(cafile=self.ssl_cafile)
        options.update(self.extra)
        return options


class FetchWait:
    """How long a fetch may wait at the broker (``fetch_max_wait_ms``), adapted to what the
    fetches bring. Caught up, ``FETCH_WAIT_MS``: the lowest latency on the embedded broker
    (``python -m bench.bus``: 5 ms gives p50 3.8 ms, p99 11.6 ms a hop; 50 ms gives 8 and 37).
    Behind and brought nothing, it doubles, up to ``FETCH_WAIT_MAX_MS``: Tansu answers a
    fetch empty when it cannot gather it within the wait, and on a loaded machine a fetch
    from far behind the end of a long partition takes longer than 5 ms, every time. Risk
    fell behind so in a CI run and never caught up (4 records/s against a lag of 12,000; a
    fetch at its offset: 0 records in 15 s at 5 ms, 11,777 in 0.34 s at 20 ms). Back to the
    start once caught up."""

    def __init__(self) -> None:
        self.ms = FETCH_WAIT_MS

    def after(self, brought: bool, behind: bool) -> None:
        if behind and not brought:
            self.ms = min(FETCH_WAIT_MAX_MS, self.ms * 2)
        elif not behind:
            self.ms = FETCH_WAIT_MS


def set_fetch_wait(consumer: AIOKafkaConsumer, ms: int) -> None:
    """aiokafka reads its fetch wait from the fetcher at every fetch request it builds; it
    has no setter (aiokafka==0.14.0 is pinned: tests/integration/test_kafka_fetch.py checks that this
    still takes effect)."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is not None and getattr(fetcher, "_fetch_max_wait_ms", None) != ms:
        fetcher._fetch_max_wait_ms = ms


async def _started(client, settings: KafkaSettings, what: str):
    try:
        await asyncio.wait_for(client.start(), settings.connect_timeout_s)
    except (TimeoutError, KafkaConnectionError, OSError) as exc:
        try:
            await client.close() if hasattr(client, "close") else await client.stop()
        except (KafkaError, OSError, RuntimeError):
            pass
        raise BusError(f"cannot reach the Kafka broker at {settings.bootstrap} within "
                       f"{settings.connect_timeout_s:g} s ({what}): {exc or type(exc).__name__}") from None
    return client


async def ensure_topics(settings: KafkaSettings, topics: dict[str, int]) -> dict[str, int]:
    """Create missing topics with their partition counts; returns the counts in force."""
    admin = await _started(AIOKafkaAdminClient(**settings.client_options()), settings, "admin")
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, num_partitions=count, replication_factor=1,
                            topic_configs={"cleanup.policy": "compact"} if name in COMPACTED_TOPICS else {})
                   for name, count in topics.items() if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
        counts = {}
        for description in await admin.describe_topics(list(topics)):
            counts[description["topic"]] = len(description["partitions"])
        return counts
    finally:
        await admin.close()


async def _closed(client) -> None:
    """Stop an aiokafka client. With the broker gone, aiokafka's fetcher lets the
    ``CancelledError`` of its own cancelled fetch task out of ``stop()``: that one is not
    ours (this task is not being cancelled) and the client is closed all the same."""
    try:
        await client.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("%s stopped; its fetcher's own cancellation was swallowed", type(client).__name__)


class KafkaBus:
    def __init__(self, settings: KafkaSettings, topics: dict[str, int]):
        self.settings = settings
        self.topics = dict(topics)
        self._producer: AIOKafkaProducer | None = None
        self._consumers: list[KafkaConsumer] = []
        self._reader: AIOKafkaConsumer | None = None  # for read() and offsets(), in no group
        self._reader_lock = asyncio.Lock()
        self._watchers: dict[str, AIOKafkaConsumer] = {}  # group -> a consumer reading its commits
        self.undelivered = 0  # records sent without waiting that the broker did not take
        self._undelivered_logged = -UNDELIVERED_LOG_S

    async def start(self) -> None:
        self.topics = await ensure_topics(self.settings, self.topics)
        producer = AIOKafkaProducer(linger_ms=1, max_batch_size=1 << 20, max_request_size=8 << 20,
                                    **self.settings.client_options())
        self._producer = await _started(producer, self.settings, "producer")

    async def stop(self) -> None:
        for consumer in self._consumers:
            await consumer.stop()
        watchers, self._watchers = list(self._watchers.values()), {}
        for watcher in watchers:
            await _closed(watcher)
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await _closed(reader)
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await _closed(producer)

    async def _read_client(self) -> AIOKafkaConsumer:
        if self._reader is None:
            reader = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                                      fetch_max_wait_ms=READ_WAIT_MS, max_partition_fetch_bytes=16 << 20,
                                      **self.settings.client_options())
            self._reader = await _started(reader, self.settings, "reader")
        return self._reader

    async def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        async with self._reader_lock:
            reader = await self._read_client()
            tp = TopicPartition(topic, partition)
            try:
                begin = (await asyncio.wait_for(reader.beginning_offsets([tp]), self.settings.connect_timeout_s))[tp]
                end = (await asyncio.wait_for(reader.end_offsets([tp]), self.settings.connect_timeout_s))[tp]
            except (TimeoutError, KafkaError) as exc:
                raise BusError(f"cannot read the offsets of {topic}[{partition}]: {exc or type(exc).__name__}") \
                    from None
            return begin, end

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        # a consumer of the group that only assigns (never joins, so no rebalance) reads its
        # commits; the admin client's OffsetFetch is not understood by Tansu
        watcher = self._watchers.get(group)
        if watcher is None:
            watcher = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **self.settings.client_options())
            self._watchers[group] = watcher = await _started(watcher, self.settings, f"offsets of {group}")
        partitions = [TopicPartition(topic, p) for p in range(self.partitions(topic))]
        watcher.assign(partitions)
        try:
            return {tp.partition: await asyncio.wait_for(watcher.committed(tp), self.settings.connect_timeout_s) or 0
                    for tp in partitions}
        except (TimeoutError, KafkaError) as exc:
            raise BusError(f"cannot read the offsets of group {group}: {exc or type(exc).__name__}") from None

    async def read(self, topic: str, partition: int, start: int, end: int | None = None) -> list[Record]:
        if end is not None and end <= start:
            return []
        async with self._reader_lock:
            reader = await self._read_client()
            tp = TopicPartition(topic, partition)
            reader.assign([tp])
            reader.seek(tp, start)
            records: list[Record] = []
            at = start
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.settings.connect_timeout_s
            try:
                # the lock is never held past the deadline: aiokafka's position() can wait without
                # end for a partition whose leader it cannot find (a broker restarted empty)
                async with asyncio.timeout_at(deadline + 1.0):
                    while end is None or (at := await reader.position(tp)) < end:
                        batch = (await reader.getmany(tp, timeout_ms=300, max_records=10_000)).get(tp, [])
                        records.extend(Record(topic, partition, m.offset, m.key, m.value, _headers(m))
                                       for m in batch if end is None or m.offset < end)
                        if not batch:
                            if end is None:
                                break  # as far as there is
                            if loop.time() > deadline:
                                raise BusError(f"reading {topic}[{partition}] from {start} to {end} timed out at {at}")
            except TimeoutError:
                raise BusError(f"reading {topic}[{partition}] from {start} to {end} timed out at {at}") from None
            except KafkaError as exc:
                raise BusError(f"cannot read {topic}[{partition}]: {exc}") from None
            finally:
                # an assigned partition is fetched for in the background (every few ms) until it is
                # unassigned: a reader used now and then must not keep the broker busy meanwhile
                reader.assign([])
            return records

    def partitions(self, topic: str) -> int:
        try:
            return self.topics[topic]
        except KeyError:
            raise BusError(f"unknown topic {topic!r}") from None

    async def send(self, items: Iterable[Item], wait: bool = True) -> None:
        producer = self._producer
        if producer is None:
            raise BusError("the bus is not started")
        futures = [await producer.send(topic, value, key=key, partition=partition,
                                       headers=list(headers[0]) if headers and headers[0] else None)
                   for topic, partition, key, value, *headers in items]
        if futures and wait:
            await asyncio.gather(*futures)
        elif futures:
            for future in futures:
                future.add_done_callback(self._unwaited_done)

    def _unwaited_done(self, future: asyncio.Future) -> None:
        """A record sent without waiting (``wait=False``) has its outcome: a failure is
        counted and logged, at most every ``UNDELIVERED_LOG_S`` (it was a line per record, and
        a broker that stopped answering printed hundreds of "Future exception was never
        retrieved")."""
        if future.cancelled() or future.exception() is None:
            return
        self.undelivered += 1
        now = time.monotonic()
        if now - self._undelivered_logged >= UNDELIVERED_LOG_S:
            self._undelivered_logged = now
            log.warning("%d record(s) sent without waiting were not delivered so far; the last: %r",
                        self.undelivered, future.exception())

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    def consumer(self, topic: str, group: str, on_assigned: PartitionsCallback | None = None,
                 on_revoked: PartitionsCallback | None = None) -> KafkaConsumer:
        consumer = KafkaConsumer(self.settings, topic, group, on_assigned, on_revoked)
        self._consumers.append(consumer)
        return consumer


class _Listener(ConsumerRebalanceListener):
    def __init__(self, consumer: KafkaConsumer):
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked):
        if self.consumer.on_revoked and revoked:
            await self.consumer.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned):
        if self.consumer.on_assigned and assigned:
            await self.consumer.on_assigned({tp.partition for tp in assigned})


class KafkaConsumer:
    def __init__(self, settings: KafkaSettings, topic: str, group: str, on_assigned: PartitionsCallback | None,
                 on_revoked: PartitionsCallback | None):
        self.settings = settings
        self.topic = topic
        self.group = group
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self._consumer: AIOKafkaConsumer | None = None
        self.fetch_wait = FetchWait()

    async def _ensure(self) -> AIOKafkaConsumer:
        while self._consumer is None:
            try:
                return await self._start()
            except BusError as exc:  # the broker answered the bus's start: paused or slow, not gone
                log.warning("%s; retrying", exc)
                await asyncio.sleep(1.0)
        return self._consumer

    async def _start(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            # a killed member holds its partitions until its session times out: keep that short
            consumer = AIOKafkaConsumer(group_id=self.group, enable_auto_commit=False, auto_offset_reset="earliest",
                                        fetch_max_wait_ms=FETCH_WAIT_MS, max_partition_fetch_bytes=8 << 20,
                                        session_timeout_ms=SESSION_TIMEOUT_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                                        **self.settings.client_options())
            consumer.subscribe([self.topic], listener=_Listener(self))
            # set before start(): the first assignment may run inside it, and its callback
            # seeks through self._consumer (to the restored snapshot's offset)
            self._consumer = consumer
            try:
                await _started(consumer, self.settings, f"consumer of {self.topic}")
            except BusError:
                self._consumer = None
                raise
        return self._consumer

    async def getmany(self, timeout_ms: int = 100, max_records: int = 1000) -> list[Record]:
        consumer = await self._ensure()
        batches = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        records: list[Record] = []
        for tp, messages in batches.items():
            records.extend(Record(tp.topic, tp.partition, m.offset, m.key, m.value, _headers(m)) for m in messages)
        if not records or self.fetch_wait.ms != FETCH_WAIT_MS:  # (records at the usual wait: nothing to decide)
            self.fetch_wait.after(bool(records), await self._behind(consumer))
            set_fetch_wait(consumer, self.fetch_wait.ms)
        return records

    async def _behind(self, consumer: AIOKafkaConsumer) -> bool:
        """Whether an assigned partition's end, as the last fetches reported it, is past
        this consumer's position in it."""
        return await _lag(consumer, 0.05) > 0

    def seek(self, partition: int, offset: int) -> None:
        if self._consumer is not None:
            self._consumer.seek(TopicPartition(self.topic, partition), offset)

    async def commit(self, offsets: dict[int, int]) -> None:
        if self._consumer is not None and offsets:
            mine = self.assignment()
            try:
                await self._consumer.commit({TopicPartition(self.topic, p): o for p, o in offsets.items()
                                             if p in mine})
            except (CommitFailedError, IllegalStateError, KafkaError) as exc:
                # a rebalance under way (after a broker pause, a member gone): the commit is for
                # lag only, the next one after the group settles says the same
                log.warning("commit of %s for group %s skipped: %s", self.topic, self.group, exc)

    def assignment(self) -> set[int]:
        if self._consumer is None:
            return set()
        return {tp.partition for tp in self._consumer.assignment()}

    async def lag(self) -> int:
        return await _lag(self._consumer, 0.5) if self._consumer is not None else 0

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await _closed(consumer)


async def _lag(consumer: AIOKafkaConsumer, position_timeout_s: float) -> int:
    """Records between the consumer's positions and its partitions' ends as the last fetches
    brought them: no request to the broker (on a loaded one an offsets request takes seconds,
    and both the status line and the fetch wait ask this from a service's loop)."""
    total = 0
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), position_timeout_s)
        except (TimeoutError, KafkaError):
            continue
        total += max(0, end - position)
    return total


def _headers(message) -> tuple[tuple[str, bytes], ...]:
    """A consumed record's headers as the bus gives them (aiokafka: a sequence of pairs, or None)."""
    headers = message.headers
    return tuple((key, bytes(value)) for key, value in headers) if headers else ()
