"""Snapshots on the bus: the ``state`` topic (compacted), so that the log is the one source
of truth. Any instance on any machine restores a partition from here, and a fresh broker
means fresh state.

A snapshot (``schemas.state.Snapshot``) is encoded with msgpack and split into chunks of
at most ``CHUNK_BYTES`` (a record must stay under the broker's message limit: Kafka's
default is 1 MiB). Its records are keyed ``<service>/<partition>/<slot>/<chunk>`` and sit
in the state partition of ``<service>/<partition>``. Consecutive snapshots of a partition
alternate between two slots, so compaction, which keeps the newest record per key, never
removes a chunk of the newest complete snapshot for one of a snapshot still being
written (a writer killed halfway leaves the previous one whole).

Reading the newest snapshot looks backwards from the end of the state partition, in
windows that grow fourfold, for the newest generation (the snapshot's input offset) all
of whose chunks are present; so a restore costs about one snapshot's records, not the
whole topic, also where the broker does not compact (the embedded Tansu: see
docs/services.md, "State").
"""

from __future__ import annotations

import logging
import time
import zlib

from schemas.state import (
    STATE_VERSION,
    Snapshot,
    SnapshotChunk,
    StateError,
    decode_chunk,
    decode_snapshot,
    encode_chunk,
)
from schemas.topics import STATE
from services.runtime.bus import Bus, partition_for

log = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024


def fingerprint(value: bytes) -> int:
    """What identifies an input record: a snapshot names the last one it applied."""
    return zlib.crc32(value) | (len(value) << 32)


class StateStore:
    """The snapshots of one service's partitions."""

    def __init__(self, bus: Bus, service: str, chunk_bytes: int = CHUNK_BYTES):
        self.bus = bus
        self.service = service
        self.chunk_bytes = chunk_bytes
        self._slots: dict[int, int] = {}  # partition -> slot of its newest snapshot known

    def _state_partition(self, partition: int) -> int:
        return partition_for(f"{self.service}/{partition}", self.bus.partitions(STATE))

    async def save(self, partition: int, offset: int, data: bytes) -> None:
        """Write the encoded snapshot ``data`` of ``partition`` at input ``offset`` (queued:
        the caller flushes the bus)."""
        slot = 1 - self._slots.get(partition, 1)
        self._slots[partition] = slot
        pieces = [data[i:i + self.chunk_bytes] for i in range(0, len(data), self.chunk_bytes)] or [b""]
        prefix = f"{self.service}/{partition}/{slot}/"
        await self.bus.send([(STATE, self._state_partition(partition), (prefix + str(index)).encode(),
                              encode_chunk(SnapshotChunk(STATE_VERSION, self.service, partition, offset, index,
                                                         len(pieces), piece)))
                             for index, piece in enumerate(pieces)], wait=False)

    async def load(self, partition: int) -> Snapshot | None:
        """The newest complete snapshot of ``partition``, or None if there is none."""
        started = time.monotonic()
        target = self._state_partition(partition)
        begin, end = await self.bus.offsets(STATE, target)
        window, read, records = 64, None, []  # the first window reads to the very end (see Bus.offsets)
        while read is None or read > begin:
            start = max(begin, end - window)
            records = await self.bus.read(STATE, target, start, read) + records
            read = start
            found = self._newest(records, partition)
            if found is not None:
                generation, slot, data = found
                try:
                    snapshot = decode_snapshot(data)
                except StateError as exc:
                    log.warning("service=%s partition=%d snapshot at input offset %d is unreadable (%s); "
                                "looking further back", self.service, partition, generation, exc)
                    records = [r for r in records if not _is_generation(r, self.service, partition, generation)]
                    continue
                self._slots[partition] = slot
                log.info("service=%s partition=%d snapshot found: input offset %d, %d bytes, %.3f s",
                         self.service, partition, snapshot.offset, len(data), time.monotonic() - started)
                return snapshot
            window *= 4
        return None

    def _newest(self, records, partition: int) -> tuple[int, int, bytes] | None:
        chunks: dict[tuple[int, int], dict[int, SnapshotChunk]] = {}
        counts: dict[tuple[int, int], int] = {}
        for record in records:
            try:
                chunk = decode_chunk(record.value)
            except StateError as exc:
                log.warning("service=%s state record at offset %d skipped: %s", self.service, record.offset, exc)
                continue
            if chunk.service != self.service or chunk.partition != partition or record.key is None:
                continue
            slot = int(record.key.decode().split("/")[2])
            key = (chunk.generation, slot)
            chunks.setdefault(key, {})[chunk.index] = chunk
            counts[key] = chunk.count
        for key in sorted(chunks, reverse=True):
            parts = chunks[key]
            if len(parts) == counts[key] and all(i in parts for i in range(counts[key])):
                return key[0], key[1], b"".join(parts[i].data for i in range(counts[key]))
        return None


def _is_generation(record, service: str, partition: int, generation: int) -> bool:
    try:
        chunk = decode_chunk(record.value)
    except StateError:
        return False
    return (chunk.service, chunk.partition, chunk.generation) == (service, partition, generation)
