"""The in-process bus: every topic partition is a list; consumers keep their own offsets.

Same ordering guarantees as Kafka per partition. A group's partitions are assigned to
its first consumer (one consumer per group, as a single process runs one of each
service).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from services.runtime.bus import BusError, Item, PartitionsCallback, Record


class MemoryBus:
    def __init__(self, topics: dict[str, int]):
        self._log: dict[str, list[list[Record]]] = {t: [[] for _ in range(n)] for t, n in topics.items()}
        # set, then replaced, on every send: it wakes every consumer waiting on it. (A Condition
        # with wait_for races under cancellation in Python 3.11: "Lock is not acquired".)
        self._changed = asyncio.Event()
        self._groups: dict[tuple[str, str], MemoryConsumer] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def partitions(self, topic: str) -> int:
        try:
            return len(self._log[topic])
        except KeyError:
            raise BusError(f"unknown topic {topic!r}") from None

    async def flush(self) -> None:
        return None

    async def send(self, items: Iterable[Item], wait: bool = True) -> None:
        for topic, partition, key, value, *headers in items:
            log = self._log[topic][partition]
            log.append(Record(topic, partition, len(log), key, value, headers[0] if headers else ()))
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def offsets(self, topic: str, partition: int) -> tuple[int, int]:
        return 0, len(self._partition(topic, partition))

    async def read(self, topic: str, partition: int, start: int, end: int | None = None) -> list[Record]:
        log = self._partition(topic, partition)
        return log[max(0, start):len(log) if end is None else max(0, end)]

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        consumer = self._groups.get((topic, group))
        done = consumer._committed if consumer is not None else {}
        return {p: done.get(p, 0) for p in range(self.partitions(topic))}

    def _partition(self, topic: str, partition: int) -> list[Record]:
        try:
            return self._log[topic][partition]
        except (KeyError, IndexError):
            raise BusError(f"unknown topic partition {topic}[{partition}]") from None

    def consumer(self, topic: str, group: str, on_assigned: PartitionsCallback | None = None,
                 on_revoked: PartitionsCallback | None = None) -> MemoryConsumer:
        if (topic, group) in self._groups:
            raise BusError(f"group {group!r} already reads {topic!r} in this process")
        consumer = MemoryConsumer(self, topic, on_assigned)
        self._groups[(topic, group)] = consumer
        return consumer


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, topic: str, on_assigned: PartitionsCallback | None):
        self.bus = bus
        self.topic = topic
        self._positions = {p: 0 for p in range(bus.partitions(topic))}
        self._on_assigned = on_assigned
        self._committed: dict[int, int] = {}

    async def _assign(self) -> None:
        if self._on_assigned is not None:
            callback, self._on_assigned = self._on_assigned, None
            await callback(set(self._positions))

    async def getmany(self, timeout_ms: int = 100, max_records: int = 1000) -> list[Record]:
        await self._assign()
        records = self._take(max_records)
        if records:
            return records
        try:
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a
            # cancellation that arrives as the wait ends, and a reader then never stops
            async with asyncio.timeout(timeout_ms / 1000):
                await self.bus._changed.wait()
        except TimeoutError:
            return []
        return self._take(max_records)

    def _take(self, limit: int) -> list[Record]:
        records: list[Record] = []
        logs = self.bus._log[self.topic]
        for partition, position in self._positions.items():
            batch = logs[partition][position:position + limit - len(records)]
            records.extend(batch)
            self._positions[partition] = position + len(batch)
            if len(records) >= limit:
                break
        return records

    def seek(self, partition: int, offset: int) -> None:
        self._positions[partition] = offset

    async def commit(self, offsets: dict[int, int]) -> None:
        self._committed.update(offsets)

    def assignment(self) -> set[int]:
        return set(self._positions)

    async def lag(self) -> int:
        logs = self.bus._log[self.topic]
        return sum(len(logs[p]) - position for p, position in self._positions.items())

    async def stop(self) -> None:
        return None
