"""Recovery at scale: a risk partition of 100,000 accounts (a fifth of them with a position),
its snapshot written to the bus (the state topic of the embedded broker) and restored by a
new connection, as an instance taking over after a kill -9 does, against writing and
reading the same snapshot as a local file (fsync'd) in the same run.

    python -m bench.recovery [--accounts 100000]

Prints the times of each step and, last, the ratio bus / local file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from exchange.markets import default_markets
from exchange.risk import RiskEngine
from schemas import topic_partitions
from schemas.enums import Side
from schemas.events import Deposit, Fill, MarkPrice
from schemas.state import STATE_VERSION, Snapshot, decode_snapshot, encode_snapshot
from services.runtime.broker import EmbeddedBroker
from services.runtime.kafka import KafkaBus, KafkaSettings
from services.runtime.state import StateStore


def engine(accounts: int) -> RiskEngine:
    risk = RiskEngine(default_markets(), producer="risk.p0")
    risk.apply(MarkPrice("oracle", 1, "SOL-PERP", 15000, 15000))
    for index in range(accounts):
        risk.apply(Deposit("bench", index + 1, f"acct-{index}", 10_000_000_000))
    for index in range(0, accounts // 5, 2):  # pairs trade: one long, one short
        risk.apply(Fill("match.SOL-PERP", index + 1, "SOL-PERP", index + 1, 15000, 100, Side.BUY,
                        f"acct-{index}", 0, f"acct-{index + 1}", 0))
    return risk


def timed(label: str, action):
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed:8.3f} s", flush=True)
    return result, elapsed


async def timed_async(label: str, action):
    started = time.perf_counter()
    result = await action()
    elapsed = time.perf_counter() - started
    print(f"{label:<44} {elapsed:8.3f} s", flush=True)
    return result, elapsed


async def main_async(args: argparse.Namespace) -> None:
    risk, _ = timed(f"build a risk partition of {args.accounts:,} accounts", lambda: engine(args.accounts))
    state, export_s = timed("export and encode the snapshot", lambda: encode_snapshot(
        Snapshot(STATE_VERSION, "risk", 0, args.accounts, 0, {}, risk.export())))
    print(f"snapshot size: {len(state) / 1e6:.1f} MB")

    def restore(data: bytes) -> RiskEngine:
        fresh = RiskEngine(default_markets(), producer="risk.p0")
        fresh.load(decode_snapshot(data).state)
        return fresh

    # local file
    path = Path(tempfile.mkdtemp(prefix="perpsim-bench-")) / "p0.snapshot"

    def write_file() -> None:
        with path.open("wb") as handle:
            handle.write(state)
            handle.flush()
            os.fsync(handle.fileno())

    _, file_write_s = timed("local file: write (fsync)", write_file)
    restored, file_read_s = timed("local file: read, decode, load", lambda: restore(path.read_bytes()))
    assert len(restored.accounts) == args.accounts

    broker = EmbeddedBroker()
    bootstrap = await broker.start()
    try:
        bus = KafkaBus(KafkaSettings(bootstrap), topic_partitions(1))
        await bus.start()

        async def write_bus() -> None:
            await StateStore(bus, "risk").save(0, args.accounts, state)
            await bus.flush()

        _, bus_write_s = await timed_async("bus: write (chunks stored by the broker)", write_bus)
        await bus.stop()
        fresh_bus = KafkaBus(KafkaSettings(bootstrap), topic_partitions(1))  # a new instance, another process

        async def read_bus() -> RiskEngine:
            await fresh_bus.start()
            snapshot = await StateStore(fresh_bus, "risk").load(0)
            fresh = RiskEngine(default_markets(), producer="risk.p0")
            fresh.load(snapshot.state)
            return fresh

        restored, bus_read_s = await timed_async("bus: connect, find, read, decode, load", read_bus)
        assert len(restored.accounts) == args.accounts
        await fresh_bus.stop()
    finally:
        broker.stop()
    path.unlink()
    print(f"snapshot (export + write): bus {export_s + bus_write_s:.3f} s, local file {export_s + file_write_s:.3f} s")
    print(f"restore after kill -9:     bus {bus_read_s:.3f} s, local file {file_read_s:.3f} s")
    print(f"ratio bus / local file: write {(export_s + bus_write_s) / (export_s + file_write_s):.2f}, "
          f"restore {bus_read_s / file_read_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
