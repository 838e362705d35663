"""The message bus: one small interface, two implementations (Kafka, in-process).

A ``Bus`` sends batches of payloads to topic partitions and makes ``Consumer``s that read
records in partition order. Partitioning is perpsim's own (``partition_for``), so every
producer, in any process, puts a key on the same partition.
"""

from services.bus.base import Bus, BusError, Consumer, Record, partition_for

__all__ = ["Bus", "BusError", "Consumer", "Record", "partition_for"]
