"""The bus interface and what both implementations share."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from schemas import SchemaError, codec
from schemas.topics import refusal
from services.runtime.fence import Fence, stamps

log = logging.getLogger(__name__)


class BusError(RuntimeError):
    """The bus cannot do what was asked (broker unreachable, unknown topic...)."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()  # the writer's epochs (services.runtime.claims)


def partition_for(key: str, partitions: int) -> int:
    """The partition of a key: CRC-32 of its UTF-8 bytes, modulo the partition count."""
    return zlib.crc32(key.encode()) % partitions


# (topic, partition, key, value) or (topic, partition, key, value, headers)
Item = tuple[str, int, bytes | None, bytes] | tuple[str, int, bytes | None, bytes, tuple[tuple[str, bytes], ...]]

# called with the partitions a consumer gained (assigned) or is about to lose (revoked)
PartitionsCallback = Callable[[set[int]], Awaitable[None]]


class Consumer(Protocol):
    topic: str

    async def getmany(self, timeout_ms: int = 100, max_records: int = 1000) -> list[Record]:
        """Records of the assigned partitions, each partition in offset order."""

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""

    async def commit(self, offsets: dict[int, int]) -> None:
        """Record the next offset to read per partition (for lag and monitoring)."""

    def assignment(self) -> set[int]: ...

    async def lag(self) -> int:
        """Records not yet read in the assigned partitions."""

    async def stop(self) -> None: ...


class Bus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def partitions(self, topic: str) -> int: ...

    async def send(self, items: Iterable[Item], wait: bool = True) -> None:
        """Send ``(topic, partition, key, value)`` items, or ``(topic, partition, key, value,
        headers)``, in order per partition. With
        ``wait`` (the default) it returns once all are stored; without, once they are
        queued (``flush`` waits for everything queued)."""

    async def flush(self) -> None: ...

    async def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        """The first offset still held and the next offset to be written. (Tansu 0.6
        reports the end as one past the first record of the last batch, so it can be
        short by the rest of that batch: code that must see everything reads with
        ``end=None``.)"""

    async def read(self, topic: str, partition: int, start: int, end: int | None = None) -> list[Record]:
        """The records of a partition with ``start <= offset < end`` (with ``end=None``:
        to the last one there is) that exist (a compacted topic has gaps), outside any
        consumer group."""

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        """The offsets consumer group ``group`` has committed on ``topic``, per partition
        (0 where it never committed)."""

    def consumer(self, topic: str, group: str, on_assigned: PartitionsCallback | None = None,
                 on_revoked: PartitionsCallback | None = None) -> Consumer:
        """A consumer of ``topic`` in consumer group ``group``; partitions are shared
        among the group's consumers and reading starts at offset 0 unless ``seek`` says
        otherwise."""


class TolerantReader:
    """Decodes a topic's records for a reader that is not a service (the native client,
    the gateway, the live participants): what does not decode, or comes from a producer
    that may not send it (``schemas.topics.SENDERS``), or from a stale instance of a
    service (``services.runtime.fence``), is skipped and counted, and logged (the first ten,
    then every thousandth); everything else is returned in order."""

    def __init__(self, topic: str, who: str):
        self.topic = topic
        self.who = who
        self.codec = codec(topic)
        self.skipped = 0
        self.fence = Fence()

    def messages(self, record: Record) -> list:
        try:
            decoded = self.codec.decode(record.value)
        except SchemaError as exc:
            self._skip(record, str(exc))
            return []
        kept = []
        epochs = stamps(record.headers) if record.headers else {}
        for message in decoded:
            reason = refusal(self.topic, message) or self.fence.fenced(message.producer, epochs.get(message.producer))
            if reason is None:
                kept.append(message)
            else:
                self._skip(record, reason)
        return kept

    def _skip(self, record: Record, reason: str) -> None:
        self.skipped += 1
        if self.skipped <= 10 or self.skipped % 1000 == 0:
            log.warning("%s skipped a record of %s (%d so far) at partition %d offset %d: %s", self.who, self.topic,
                        self.skipped, record.partition, record.offset, reason)
