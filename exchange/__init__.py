"""The pure, deterministic domain core: no asyncio, no Kafka, no clock, no I/O."""
