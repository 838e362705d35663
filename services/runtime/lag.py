"""How far each service is behind its input: the records of its input topic that its
consumer group has not committed yet (what `/metrics`, the dashboard and the end of a live
run read)."""

from __future__ import annotations

from schemas import LIQUIDATION_IN, MATCH_IN, RISK_IN
from services.runtime.bus import Bus

SERVICE_INPUTS = (("risk", RISK_IN), ("matching", MATCH_IN), ("liquidation", LIQUIDATION_IN))


async def input_lag(bus: Bus) -> dict[str, tuple[int, int]]:
    """Per service: (records committed, records behind), over its input's partitions."""
    out: dict[str, tuple[int, int]] = {}
    for service, topic in SERVICE_INPUTS:
        done = await bus.committed(f"perpsim-{service}", topic)
        ends = [(await bus.offsets(topic, partition))[1] for partition in range(bus.partitions(topic))]
        committed = sum(done.get(partition, 0) for partition in range(len(ends)))
        out[service] = (committed, sum(max(0, end - done.get(partition, 0)) for partition, end in enumerate(ends)))
    return out
