"""Scaling with processes: one instance of risk and of matching against two, in the same run.

Starts the embedded broker with 4 partitions per topic and the services as processes, then
sends N taker orders (IOC, each crossing a deep resting offer) spread over the three
bundled markets and many accounts, as fast as the native client can, until every one has
come back closed; orders/s. Twice, each on a broker of its own:

1. one instance of each service (matching, risk, liquidation, oracle);
2. two instances of matching and of risk (each group splits the 4 partitions), one of
   liquidation and of the oracle.

During each throughput run it reads every process's CPU time (``/proc/<pid>/stat``), which
gives the CPU each service spends per order. From those it projects how throughput grows
with machines and partitions (docs/services.md, "Scaling"): risk is per account and
matching per market, so each scales with partitions up to the cores it gets (matching also
up to the number of markets traded); the client, the oracle and the liquidation engine are
one process each here; the broker (here the embedded one, on the same two cores) is a
cluster of its own machines in such a deployment, its CPU shown but not projected. The last line is the ratio two instances / one instance in orders/s.

    python -m bench.scaling [--orders 20000] [--partitions 4] [--takers 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import e2e
from exchange.markets import default_markets
from schemas import topic_partitions
from schemas.enums import OrderType, SelfTradePrevention, Side, TimeInForce
from schemas.events import PlaceOrder
from services.client import Client
from services.runtime.broker import EmbeddedBroker
from services.runtime.kafka import KafkaBus, KafkaSettings

ROOT = Path(__file__).resolve().parent.parent
OFFERS = {"SOL-PERP": "150", "ETH-PERP": "3500", "BTC-PERP": "65000"}  # a deep offer at the flat oracle's mark
TICK_HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK_HZ  # utime + stime


async def prepare(client: Client, takers: int) -> list[tuple[str, str]]:
    """Makers with a deep offer per market; takers, each trading one market."""
    for market, price in OFFERS.items():
        await client.deposit(f"maker-{market}", "1000000000")
        await client.place(f"maker-{market}", market, Side.SELL, "1000000" if market == "SOL-PERP" else "10000",
                           price)
    pairs = []
    markets = list(OFFERS)
    for index in range(takers):
        account = f"taker{index}"
        await client.deposit(account, "100000000")
        pairs.append((account, markets[index % len(markets)]))
    return pairs


async def burst(client: Client, bus: KafkaBus, pairs: list[tuple[str, str]], count: int, label: str) -> float:
    """``count`` IOC orders as fast as they go; seconds until the last one closed."""
    markets = default_markets()
    limits = {market: markets[market].price_to_ticks(price) for market, price in OFFERS.items()}

    def make(index: int) -> tuple[str, PlaceOrder]:
        account, market = pairs[index % len(pairs)]
        return account, PlaceOrder(*client.stamp(), account, market, f"{label}{index}", Side.BUY, OrderType.LIMIT,
                                   TimeInForce.IOC, limits[market], 1, False, SelfTradePrevention.NONE, time.time_ns())

    return await e2e.burst(client, bus, count, make)


async def deployment(args: argparse.Namespace, names: list[str]) -> tuple[float, dict[str, float]]:
    """(orders/s, CPU seconds per order of each service, instances summed; "client" too)."""
    broker = EmbeddedBroker()
    bootstrap = await broker.start()
    state = Path(tempfile.mkdtemp(prefix="perpsim-scaling-"))
    processes = {name: subprocess.Popen(
        [sys.executable, "-m", "services.cli", name.split("#")[0], "--bootstrap", bootstrap,
         "--partitions", str(args.partitions), "--state-dir", str(state), "--log-level", "WARNING",
         *(["--flat"] if name == "oracle" else [])], cwd=ROOT) for name in names}
    bus = KafkaBus(KafkaSettings(bootstrap), topic_partitions(args.partitions))
    try:
        await bus.start()
        async with Client(bus, default_markets(), timeout_s=60) as client:
            pairs = await prepare(client, args.takers)
            await asyncio.sleep(5)  # every instance has joined its group and been assigned
            await burst(client, bus, pairs, 2_000, "w")  # warm-up: caches, connections
            before = {name: cpu_seconds(process.pid) for name, process in processes.items()}
            assert broker.process is not None
            broker_before = cpu_seconds(broker.process.pid)
            client_before = time.process_time()
            elapsed = await burst(client, bus, pairs, args.orders, "t")
            cpu: dict[str, float] = {}
            for name, process in processes.items():
                service = name.split("#")[0]
                cpu[service] = cpu.get(service, 0.0) + (cpu_seconds(process.pid) - before[name]) / args.orders
            cpu["client"] = (time.process_time() - client_before) / args.orders
            broker_cpu = (cpu_seconds(broker.process.pid) - broker_before) / args.orders
        rate = args.orders / elapsed
        print(f"  {' + '.join(names)}: {rate:,.0f} orders/s; CPU per order: "
              + ", ".join(f"{service} {seconds * 1e6:,.0f} µs" for service, seconds in cpu.items())
              + f"; the broker {broker_cpu * 1e6:,.0f} µs", flush=True)
        return rate, cpu
    finally:
        await bus.stop()
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(20)
        broker.stop()


def projection(cpu: dict[str, float], cores_per_machine: int, markets: int | None) -> list[str]:
    """Orders/s a deployment could reach if each service got the cores it can use: risk up
    to one core per partition, matching up to one per partition and per market traded
    (``markets``; None: a market per partition), the oracle and liquidation one each, all
    of them within the machines' cores. The load (the client) and the broker run on
    machines of their own and are not counted."""
    services = {name: seconds for name, seconds in cpu.items() if name != "client"}
    lines = ["machines  cores  partitions  risk bound  matching bound  all-cores bound  projected"]
    for machines in (1, 2, 4, 8, 16):
        cores = machines * cores_per_machine
        partitions = max(4, cores)
        risk = min(partitions, cores) / cpu["risk"]
        matching = min(partitions, markets or partitions, cores) / cpu["matching"]
        total = cores / sum(services.values())
        projected = min(risk, matching, total)
        lines.append(f"{machines:>8}  {cores:>5}  {partitions:>10}  {risk:>10,.0f}  {matching:>14,.0f}  "
                     f"{total:>15,.0f}  {projected:>9,.0f}")
    return lines


async def main_async(args: argparse.Namespace) -> None:
    print(f"{args.orders} IOC orders over {len(OFFERS)} markets from {args.takers} takers, "
          f"{args.partitions} partitions per topic, {os.cpu_count()} cores", flush=True)
    single, cpu = await deployment(args, ["matching", "risk", "liquidation", "oracle"])
    double, _ = await deployment(args, ["matching", "matching#2", "risk", "risk#2", "liquidation", "oracle"])
    print(f"projection from one instance's CPU per order, 2 cores per machine, {len(OFFERS)} markets "
          f"(one load process does {1 / cpu['client']:,.0f} orders/s):")
    for line in projection(cpu, 2, len(OFFERS)):
        print("  " + line)
    print("  with a market per partition:")
    for line in projection(cpu, 2, None)[1:]:
        print("  " + line)
    print(f"ratio two instances/one instance: {double / single:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20_000, help="orders per throughput run (default 20000)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions per topic (default 4)")
    parser.add_argument("--takers", type=int, default=32, help="taker accounts (default 32)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
